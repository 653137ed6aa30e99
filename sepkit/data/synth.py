"""Synthetic songs for demos and tests: a ``vocals``, ``drums``, ``bass`` and ``other`` stem each.

A song is planned first (:func:`plan_song`: key, mode, tempo, chord progression, a sung melody in
phrases separated by rests, a drum style and the instrument timbres), then each stem is rendered
from the plan with numpy; Python loops run over notes and drum hits, never over samples.

* vocals (:func:`synth_vocals`): a band-limited glottal-pulse source (derivative of a Rosenberg
  flow pulse) on a melodic f0 contour (scale notes, portamento, scoops, 5-7 Hz vibrato that
  fades in, slow drift), with glottis-synchronous breath noise, shaped frame by frame in the STFT
  domain by a five-formant (parallel) filter that glides between the vowels a/e/i/o/u of successive
  syllables; syllable envelopes, consonant noise bursts, a short reverb, and exact digital
  silence between phrases.
* drums (:func:`synth_drums`): kick (pitch-dropping sine), snare (tone + band-passed noise),
  closed/open hi-hats (high-passed noise), toms and crash on a 16-step pattern with fills.
* bass (:func:`synth_bass`): chord roots, fifths and octaves in a plucked/synth/sub/finger timbre.
* other (:func:`synth_other`): one or two chord instruments (pad, organ, strings, strum,
  electric piano, arpeggio) with simple voice leading.

Every stem is a ``(channels, samples)`` float32 array; the mixture is their sum.
"""
import functools
import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import soxr
from scipy import signal

logger = logging.getLogger(__name__)

__all__ = ["STEMS", "SongPlan", "draw_singer", "plan_song", "synth_vocals", "synth_drums",
           "synth_bass", "synth_other", "make_song"]

STEMS = ("bass", "drums", "other", "vocals")
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
           "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10)}
_PROGRESSIONS = {  # 0-based scale degrees, one chord per harmonic step
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4), (1, 4, 0, 0), (3, 4, 0, 5)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4), (0, 3, 6, 2))}
# Formants F1..F5 (Hz) of sung vowels a, e, i, o, u for a male voice; female voices scale them.
_VOWELS = np.array([[730, 1090, 2440, 3400, 4200], [530, 1840, 2480, 3500, 4300],
                    [300, 2250, 3000, 3600, 4400], [570, 840, 2410, 3300, 4100],
                    [320, 870, 2240, 3300, 4100]], dtype=np.float64)
_BANDWIDTHS = np.array([80.0, 90.0, 120.0, 180.0, 250.0])
_FORMANT_AMPS = (1.0, 0.75, 0.45, 0.3, 0.25)
# 16th-note steps of kick, snare, closed hat, open hat; and the style's tempo range (BPM).
_DRUM_STYLES = {
    "rock": ((0, 8, 10), (4, 12), tuple(range(0, 16, 2)), (), (90, 140)),
    "pop": ((0, 6, 8), (4, 12), tuple(range(16)), (), (85, 125)),
    "disco": ((0, 4, 8, 12), (4, 12), (0, 4, 8, 12), (2, 6, 10, 14), (110, 128)),
    "halftime": ((0, 3, 10), (8,), tuple(range(0, 16, 2)), (14,), (120, 160)),
    "ballad": ((0, 10), (8,), (0, 4, 8, 12), (), (62, 88)),
    "funk": ((0, 3, 6, 10), (4, 12), tuple(range(16)), (7,), (92, 115))}
# Instrument layers: (harmonic slope, odd-harmonic weight, low-pass corner Hz, attack s,
# decay s (0 = sustained), level, detune cents of the unison voices).
_TIMBRES = {
    "pluck_bass": ((1.0, 1.0, 2500, 0.003, 0.15, 0.7, (0,)), (1.8, 1.0, 700, 0.005, 1.2, 1.0, (0,))),
    "saw_bass": ((1.0, 1.0, 900, 0.005, 0.6, 1.0, (-7, 7)),),
    "sub_bass": ((3.0, 1.0, 400, 0.01, 0, 1.0, (0,)), (1.2, 2.0, 1500, 0.004, 0.08, 0.2, (0,))),
    "finger_bass": ((1.8, 1.6, 1200, 0.008, 0.9, 1.0, (0,)), (1.0, 1.0, 3000, 0.002, 0.05, 0.4, (0,))),
    "pad": ((1.0, 1.0, 1800, 0.35, 0, 1.0, (-8, 8)),),
    "strings": ((1.0, 1.0, 3500, 0.2, 0, 1.0, (-5, 5)),),
    "organ": ((0.6, 1.0, 2500, 0.01, 0, 1.0, (0,)), (3.0, 1.0, 8000, 0.005, 0.15, 0.3, (1200,))),
    "strum": ((1.0, 1.0, 6000, 0.002, 0.25, 0.6, (0,)), (1.5, 1.0, 1500, 0.004, 1.5, 1.0, (0,))),
    "epiano": ((4.0, 1.0, 8000, 0.003, 1.8, 1.0, (0,)), (0.5, 1.0, 3000, 0.001, 0.08, 0.35, (0,))),
    "arp": ((1.0, 2.0, 3500, 0.003, 0.2, 1.0, (0,)),)}
_BASS_PATTERNS = (((0, 4, 0),), ((0, 2, 0), (2, 2, 0)), tuple((b, 1, 0) for b in range(4)),
                  tuple((b / 2, 0.5, 0) for b in range(8)), ((0, 1.5, 0), (1.5, 0.5, 0), (2, 1, 7), (3, 1, 12)),
                  ((0, 0.75, 0), (0.75, 0.75, 0), (1.5, 1, 12), (2.5, 0.5, 7), (3, 1, 0)))
_TABLE = 2048  # wavetable length (samples per cycle)
_SHIFT = 32 - 11  # the top 11 bits of a 32-bit phase index a _TABLE-sample table
_CONTROL_RATE = 1000.0  # Hz, rate of the pitch, vowel and envelope contours


@dataclass
class SongPlan:
    """Everything a stem renderer needs; times in seconds, pitches in MIDI numbers."""
    sr: int
    n: int
    tempo: float
    key: int
    mode: str
    chords: list  # (start, end, pitch classes, root pitch class)
    notes: list  # (start, end, midi, vowel index, articulated)
    phrases: list  # (start, end) of each sung phrase
    singer: dict
    drums: dict
    bass: dict
    other: list
    mix: dict = field(default_factory=dict)

    @property
    def beat(self):
        return 60.0 / self.tempo


def _midi_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _phase(f0, sr, rng, length=None):
    """32-bit fixed-point phase (uint32, 2**32 = one cycle, wraps for free) from a random start,
    for a constant ``f0`` (Hz, with ``length``) or a per-sample ``f0`` array."""
    start = np.uint32(rng.integers(2 ** 32))
    if np.ndim(f0) == 0:
        return np.arange(length, dtype=np.uint32) * np.uint32(int(round(f0 / sr * 2.0 ** 32)) % 2 ** 32) + start
    return np.cumsum(np.round(f0 * (2.0 ** 32 / sr)).astype(np.uint32), dtype=np.uint32) + start


def _read(table, phase, row=None):
    """Linear-interpolated wavetable read. ``table``: (2, L+1) or a (B, 2, L+1) stack from
    :func:`_table`; ``phase``: (N,) uint32 from :func:`_phase`; ``row`` (N,): table of the stack
    to read per sample. Returns (N,) float32."""
    i = phase >> np.uint32(_SHIFT)
    frac = (phase & np.uint32((1 << _SHIFT) - 1)).astype(np.float32) * np.float32(2.0 ** -_SHIFT)
    if row is None:
        return np.take(table[0], i) + frac * np.take(table[1], i)
    j = row * (2 * (_TABLE + 1)) + i
    return np.take(table, j) + frac * np.take(table, j + _TABLE + 1)


def _osc(table, f0, length, sr, rng):
    """Constant-frequency wavetable oscillator: (length,) float32."""
    return _read(table, _phase(f0, sr, rng, length))


def _table(coefs):
    """Single-cycle table from complex harmonic coefficients ``coefs[k-1]`` of harmonic k, as
    (2, L+1) float32: values and forward differences, wrapped by one sample."""
    spec = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    spec[1:len(coefs) + 1] = coefs[:_TABLE // 2 - 1]
    values = np.fft.irfft(spec, _TABLE) * (_TABLE / 2)
    values = np.append(values, values[:2])
    return np.stack([values[:-1], np.diff(values)]).astype(np.float32)


@functools.lru_cache(maxsize=1024)
def _harmonic_table(f0, sr, slope, odd, fc):
    """Band-limited table (harmonics below 0.47 sr), unit RMS: ``a_k = k^-slope / (1 + (k f0 / fc)^2)``,
    odd harmonics weighted by ``odd``."""
    k = np.arange(1, max(1, min(int(0.47 * sr / f0), _TABLE // 2 - 2)) + 1)
    amp = k ** -float(slope) * np.where(k % 2 == 1, odd, 1.0) / (1.0 + (k * f0 / fc) ** 2)
    return _table(-1j * amp) / np.float32(np.sqrt(0.5 * np.sum(amp ** 2)))


def _sweep_osc(phase, f0, coefs, sr):  # phase: uint32 from _phase
    """Band-limited oscillator for a time-varying f0 (Hz, per sample): half-octave mip-mapped tables
    (table b keeps the harmonics below 0.47 sr at its highest f0), cross-faded in log-frequency."""
    lo = max(float(f0.min()), 20.0)
    pos = 2.0 * np.log2(np.maximum(f0, lo) / lo)
    j = pos.astype(np.int64)
    w = pos - j
    tables = np.stack([_table(coefs[:max(1, int(0.47 * sr / (lo * 2 ** ((b + 1) / 2))))])
                       for b in range(int(pos.max()) + 2)])
    w = w.astype(np.float32)
    return (1 - w) * _read(tables, phase, j) + w * _read(tables, phase, j + 1)


def _glottal_coefs(open_quotient, n=4096):
    """Harmonic coefficients of the derivative of a Rosenberg glottal flow pulse (opening 60 %,
    closing 40 % of the open phase); a lower open quotient gives a brighter voice."""
    u = np.arange(n) / n
    tp, tn = 0.6 * open_quotient, 0.4 * open_quotient
    flow = np.where(u < tp, 0.5 * (1 - np.cos(np.pi * u / tp)),
                    np.where(u < tp + tn, np.cos(np.pi * np.clip(u - tp, 0, None) / (2 * tn)), 0.0))
    return np.fft.rfft(np.diff(np.append(flow, flow[0])))[1:]


def _stft(x, nfft):
    """(N,) -> (T, nfft/2+1) complex64 STFT with a sqrt-Hann window and hop nfft/2; frame k is
    centred on sample k * nfft/2 (T = ceil(N / hop) + 1)."""
    hop = nfft // 2
    frames = -(-len(x) // hop) + 1
    pad = np.zeros((frames + 1) * hop, dtype=np.float32)
    pad[hop:hop + len(x)] = x
    win = np.sqrt(np.hanning(nfft + 1)[:-1]).astype(np.float32)  # periodic Hann: COLA at hop nfft/2
    blocks = pad.reshape(-1, hop)
    return scipy.fft.rfft(np.concatenate([blocks[:-1], blocks[1:]], axis=1) * win, axis=1)


def _istft(spec, nfft, length):
    """Inverse of :func:`_stft` (windowed overlap-add, exact for an unmodified spectrum)."""
    hop = nfft // 2
    win = np.sqrt(np.hanning(nfft + 1)[:-1]).astype(np.float32)
    frames = scipy.fft.irfft(spec, n=nfft, axis=1).astype(np.float32) * win
    out = np.zeros((len(frames) + 1, hop), dtype=np.float32)
    out[:-1] += frames[:, :hop]
    out[1:] += frames[:, hop:]
    return out.ravel()[hop:hop + length]


def _smooth(x, width):
    """Moving Hann-window average over ``width`` samples along axis 0, edges held."""
    width = max(int(width), 1)
    if width < 3:
        return x
    win = np.hanning(width + 2)[1:-1]
    win /= win.sum()
    pad = np.concatenate([np.repeat(x[:1], width, 0), x, np.repeat(x[-1:], width, 0)])
    win = win if x.ndim == 1 else win[:, None]
    return signal.oaconvolve(pad, win, mode="same", axes=0)[width:-width]


def _pan(x, pan, channels):
    """Constant-power pan of a mono ``(N,)`` signal to ``(channels, N)``; pan in [-1, 1]."""
    if channels == 1:
        return x[None]
    a = (pan + 1) * np.pi / 4
    return np.stack([float(np.cos(a) * np.sqrt(2)) * x, float(np.sin(a) * np.sqrt(2)) * x])


def _reverb(x, sr, rng, rt60, wet):
    """Add a decaying-noise room (different noise per channel) to ``x`` (C, N); tail cut at N.
    The wet path runs at sr / (sr // 11025) (16x less convolution work at 44.1 kHz, and a darker
    tail, as air absorption gives real rooms)."""
    low = sr / max(1, sr // 11025)
    length = max(int(rt60 * low), 16)
    ir = rng.standard_normal((x.shape[0], length)) * np.exp(-6.9 * np.arange(length) / low / rt60)
    ir[:, : int(0.01 * low)] = 0.0  # pre-delay
    ir *= wet / np.sqrt(np.sum(ir ** 2, axis=1, keepdims=True))
    out = x.astype(np.float32)  # a copy
    for c in range(len(x)):  # 1-D soxr calls: 4x faster than one call on a transposed (N, C) array
        dry = out[c] if low == sr else soxr.resample(out[c], sr, low, quality="LQ")
        tail = signal.oaconvolve(dry, ir[c].astype(np.float32))[: len(dry)].astype(np.float32)
        tail = tail if low == sr else soxr.resample(tail, low, sr, quality="LQ")
        out[c, : len(tail)] += tail[: x.shape[1]]
    return out


def _noise(rng, length, order, cutoff, kind, sr):
    """Unit-RMS Butterworth-filtered white noise, ``(length,)``: a bank that hits slice from."""
    x = signal.sosfilt(signal.butter(order, cutoff, kind, fs=sr, output="sos"), rng.standard_normal(length))
    return (x / np.std(x)).astype(np.float32)


def _add(out, x, start):
    """Add ``x`` (C, L) into ``out`` (C, N) at sample ``start``, clipped at both ends."""
    a, b = max(start, 0), min(start + x.shape[1], out.shape[1])
    if b > a:
        out[:, a:b] += x[:, a - start:b - start]


def draw_singer(rng, gender=None):
    """A singer: range, formant scale, vibrato, glide, brightness, breathiness; ``gender`` in
    {"male", "female", None (random)}."""
    male = (rng.random() < 0.5) if gender is None else gender == "male"
    return dict(gender="male" if male else "female", low=int(rng.integers(43, 50) if male else rng.integers(55, 61)),
                span=int(rng.integers(12, 18)), formant_scale=rng.uniform(0.94, 1.06) * (1.0 if male else 1.17),
                vib_rate=rng.uniform(5.0, 7.0), vib_depth=rng.uniform(0.15, 0.7), vib_delay=rng.uniform(0.08, 0.3),
                glide=rng.uniform(0.03, 0.12), scoop=rng.uniform(0.0, 0.6), open_quotient=rng.uniform(0.35, 0.7),
                tilt=rng.uniform(-0.3, 0.6), ring=rng.uniform(0.0, 1.5), breath=rng.uniform(0.02, 0.15),
                consonants=rng.uniform(0.3, 0.8), coartic=rng.uniform(0.03, 0.08), presence=rng.uniform(0.0, 12.0))


def _plan_melody(rng, singer, beat, key, scale, chords, duration, tail):
    """Notes (start, end, midi, vowel, articulated) in phrases of 4-8 beats, with rests between that
    stay silent for >= 0.4 s after the reverb ``tail`` (s) and the next consonant."""
    pitches = [m for m in range(singer["low"], singer["low"] + singer["span"] + 1) if (m - key) % 12 in scale]
    idx, grid = len(pitches) // 2, beat / 2  # phrases start on the half-beat grid
    t = min(beat * rng.choice([0, 1, 2, 4]), np.floor(0.25 * duration / beat) * beat)
    notes, phrases, vowel = [], [], 0
    while t < duration - 1.0:
        end = min(t + beat * rng.choice([4, 6, 8]), t + max(1.5, 0.55 * duration), duration - 0.3)
        start = t
        while t < end - 0.1:
            d = beat * rng.choice([0.5, 1, 1, 1.5, 2], p=[0.3, 0.25, 0.2, 0.15, 0.1])
            step = rng.choice([-3, -2, -1, 0, 1, 2, 3], p=[0.05, 0.15, 0.25, 0.1, 0.25, 0.15, 0.05])
            idx = int(np.clip(idx + step if 0 < idx + step < len(pitches) - 1 else idx - step, 0, len(pitches) - 1))
            if abs(t / beat - round(t / beat)) < 1e-6 and round(t / beat) % 2 == 0:  # strong beat: chord tone
                pcs = next((c[2] for c in chords if c[0] <= t < c[1]), chords[-1][2])
                tones = [i for i, m in enumerate(pitches) if m % 12 in pcs]
                idx = min(tones, key=lambda i: abs(i - idx)) if tones else idx
            articulated = t == start or rng.random() > 0.15  # otherwise a melisma on the same vowel
            vowel = int(rng.integers(5)) if articulated else vowel
            e = min(t + d, end)
            notes.append((t, e, pitches[idx], vowel, articulated))
            t = e
        phrases.append((start, t))
        t = np.ceil((t + max(tail + 0.55, beat * rng.choice([1, 1.5, 2, 3, 4]))) / grid - 1e-6) * grid
    return notes, phrases


def plan_song(rng, duration, sr, singer=None):
    """Draw a song: key, mode, tempo, chords, melody, drum style, timbres. ``singer``: from
    :func:`draw_singer` (drawn here when None)."""
    singer = singer or draw_singer(rng)
    style = str(rng.choice(sorted(_DRUM_STYLES)))
    tempo = float(rng.uniform(*_DRUM_STYLES[style][4]))
    mode = str(rng.choice(sorted(_SCALES)))
    scale, key = _SCALES[mode], int(rng.integers(12))
    family = "minor" if mode in ("minor", "dorian") else "major"
    prog = _PROGRESSIONS[family][rng.integers(len(_PROGRESSIONS[family]))]
    bar = 4 * 60.0 / tempo
    chord_len = bar * (2 if tempo > 125 and rng.random() < 0.5 else 1)
    seventh = rng.random() < 0.3
    chords = []
    for i in range(int(np.ceil(duration / chord_len)) + 1):
        d = prog[i % len(prog)]
        pcs = tuple((key + scale[(d + s) % 7]) % 12 for s in ((0, 2, 4, 6) if seventh else (0, 2, 4)))
        chords.append((i * chord_len, (i + 1) * chord_len, pcs, pcs[0]))
    vox_room = (rng.uniform(0.2, 0.5), rng.uniform(0.1, 0.35))
    notes, phrases = _plan_melody(rng, singer, 60.0 / tempo, key, scale, chords, duration, vox_room[0] + 0.02)
    u = rng.uniform
    drums = dict(style=style, kick_f=u(42, 60), kick_sweep=u(50, 140), kick_tau=u(0.12, 0.4), snare_f=u(160, 260),
                 snare_tau=u(0.05, 0.15), snare_tone=u(0.2, 0.7),
                 snare_band=(u(700, 1500), min(u(4000, 8000), 0.45 * sr)), hat_hp=min(u(5000, 9000), 0.42 * sr),
                 hat_tau=u(0.02, 0.06), ohat_tau=u(0.15, 0.35), tom_f=u(90, 150),
                 swing=float(rng.choice([0, 0, 0.12, 0.22])), fills=rng.random() < 0.7, hat_pan=u(-0.5, 0.5),
                 room=(u(0.15, 0.4), u(0.05, 0.2)))
    bass = dict(timbre=str(rng.choice(["pluck_bass", "saw_bass", "sub_bass", "finger_bass"])),
                pattern=_BASS_PATTERNS[rng.integers(len(_BASS_PATTERNS))], legato=rng.uniform(0.6, 0.95))
    names = rng.choice(["pad", "organ", "strings", "strum", "epiano", "arp"], size=int(rng.integers(1, 3)),
                       replace=False)
    strums = ((0, 1, 2, 3), (0, 1.5, 2, 2.5, 3.5), (0, 2))  # onsets in beats of a bar
    other = [dict(name=str(nm), center=int(rng.integers(57, 68)), pan=u(-0.6, 0.6), level=u(0.6, 1.0),
                  step=float(rng.choice([0.5, 0.25])), strums=strums[rng.integers(3)]) for nm in names]
    mix = dict(drums=u(-3, 1), bass=u(-4, 0), other=u(-4, 0), vocals=u(-3, 4), peak=u(0.5, 0.89), vox_room=vox_room,
               other_room=(u(0.3, 0.8), u(0.1, 0.4)))
    return SongPlan(sr=int(sr), n=int(round(duration * sr)), tempo=tempo, key=key, mode=mode, chords=chords,
                    notes=notes, phrases=phrases, singer=singer, drums=drums, bass=bass, other=other, mix=mix)


def synth_vocals(plan, rng, channels=2):
    """Render the sung melody. Returns ``(vocals (C, N) float32, active (N,) bool)``; the vocals
    are exactly zero wherever ``active`` is False (the rests between phrases)."""
    s, sr, n = plan.singer, plan.sr, plan.n
    nc = int(np.ceil(n / sr * _CONTROL_RATE)) + 2
    tc = np.arange(nc) / _CONTROL_RATE
    midi, vowel = np.full(nc, np.nan), np.full(nc, -1)
    env, vib_gain, scoop = np.zeros(nc), np.zeros(nc), np.zeros(nc)
    for i, (a, b, m, v, art) in enumerate(plan.notes):
        ia, ib = int(round(a * _CONTROL_RATE)), int(round(b * _CONTROL_RATE))
        u = tc[ia:ib] - a
        midi[ia:ib], vowel[ia:ib] = m, v
        vib_gain[ia:ib] = np.clip((u - s["vib_delay"]) / 0.25, 0, 1) * (b - a > 0.3)
        nxt = plan.notes[i + 1] if i + 1 < len(plan.notes) and plan.notes[i + 1][0] <= b + 1e-6 else None
        prev_joined = i > 0 and plan.notes[i - 1][1] >= a - 1e-6
        floor = (0.35 if art else 1.0) if prev_joined else 0.0  # syllable dip, melisma, phrase start
        end = 0.0 if nxt is None else (0.35 if nxt[4] else 1.0)
        attack = floor + (1 - floor) * np.clip(u / rng.uniform(0.02, 0.05), 0, 1)
        release = end + (1 - end) * np.clip((b - a - u) / (0.12 if nxt is None else 0.03), 0, 1)
        env[ia:ib] = rng.uniform(0.7, 1.0) * attack * release * (1 + rng.uniform(-0.25, 0.2) * u / (b - a))
        if art and rng.random() < s["scoop"]:
            scoop[ia:ib] = -rng.uniform(0.3, 1.0) * np.exp(-u / 0.06)
    idx = np.arange(nc)
    held = np.where(np.isnan(midi), -1, idx)
    held = np.maximum.accumulate(held)  # rests hold the previous pitch/vowel (silent anyway)
    first = np.argmax(~np.isnan(midi)) if np.any(~np.isnan(midi)) else 0
    held[held < 0] = first
    midi = np.nan_to_num(midi[held], nan=float(s["low"]))
    vowel = np.maximum(vowel[held], 0)
    contour = _smooth(midi, s["glide"] * _CONTROL_RATE) + scoop
    drift = _smooth(rng.standard_normal(nc), 0.3 * _CONTROL_RATE) * 0.8
    rate = s["vib_rate"] * (1 + 0.05 * _smooth(rng.standard_normal(nc), 0.5 * _CONTROL_RATE) * 8)
    vib = s["vib_depth"] * rng.uniform(0.7, 1.0) * vib_gain * np.sin(2 * np.pi * np.cumsum(rate) / _CONTROL_RATE)
    f0c = _midi_hz(contour + vib + 0.1 * drift)
    t = np.arange(n) / sr
    f0 = np.interp(t, tc, f0c)
    phase = _phase(f0, sr, rng)
    src = _sweep_osc(phase, f0, _glottal_coefs(s["open_quotient"]), sr)
    src /= np.sqrt(np.mean(src ** 2)) + 1e-12
    open_phase = phase < np.uint32(s["open_quotient"] * 2 ** 32)  # aspiration peaks while the glottis is open
    src += s["breath"] * 3 * rng.standard_normal(n, dtype=np.float32) * (0.4 + 0.6 * open_phase)
    # Time-varying formant cascade in the STFT domain (window ~46 ms).
    nfft = 1 << int(round(np.log2(0.046 * sr)))
    spec = _stft(src, nfft)  # (T, nfft/2 + 1), frame k centred on sample k * nfft/2
    freqs, tf = np.fft.rfftfreq(nfft, 1 / sr), np.arange(len(spec)) * (nfft // 2) / sr
    formants = _smooth(_VOWELS[vowel] * s["formant_scale"], s["coartic"] * _CONTROL_RATE)
    fmt = np.stack([np.interp(tf, tc, formants[:, k]) for k in range(5)], 1)  # (T, 5)
    fmt[:, 0] = np.maximum(fmt[:, 0], 1.1 * np.interp(tf, tc, f0c))  # sopranos tune F1 above f0
    # Parallel formant filter (as in Klatt's parallel branch): a sum of resonance peaks with
    # amplitudes falling by formant, on a floor; a cascade would starve everything above F5.
    gain = np.full((len(tf), len(freqs)), 0.01, dtype=np.float32)
    fr = freqs.astype(np.float32)[None]
    for k, amp in enumerate(_FORMANT_AMPS):
        fm, half_bw = fmt[:, k:k + 1].astype(np.float32), np.float32(_BANDWIDTHS[k] * s["formant_scale"] / 2)
        gain += np.float32(amp) / np.sqrt(1 + ((fr - fm) / half_bw) ** 2)  # |H| of one resonance
    # Spectral tilt per singer, the singer's formant ("ring") near 2.9 kHz and the presence shelf
    # that produced vocals get.
    x2 = (freqs / 2500.0) ** 2
    gain *= ((1 + freqs / 1500.0) ** s["tilt"] * (1 + s["ring"] * np.exp(-((freqs - 2900) / 450) ** 2))
             * (1 + (10 ** (s["presence"] / 20) - 1) * x2 / (1 + x2))).astype(np.float32)
    env = _smooth(env, 0.008 * _CONTROL_RATE)  # no clicks where legato notes change level
    voiced = _istft(spec * gain, nfft, n) * np.interp(t, tc, env).astype(np.float32)
    # Consonants: sibilant and plosive noise bursts just before articulated syllables.
    cons = np.zeros((1, n), dtype=np.float32)
    banks = [_noise(rng, sr, 4, min(4500, 0.4 * sr), "highpass", sr),
             _noise(rng, sr, 2, [500, min(5000, 0.45 * sr)], "bandpass", sr)]
    for a, _, _, _, art in plan.notes:
        if art and rng.random() < s["consonants"]:
            kind = int(rng.random() < 0.5)
            length = int(sr * (rng.uniform(0.05, 0.1) if kind == 0 else rng.uniform(0.012, 0.03)))
            offset = int(rng.integers(len(banks[kind]) - length))
            _add(cons, (np.hanning(length) * rng.uniform(0.5, 1.0) * banks[kind][offset:offset + length])[None],
                 int((a + 0.01) * sr) - length)
    cons *= 0.6 * np.sqrt(np.mean(voiced ** 2))
    rt60, wet = plan.mix["vox_room"]
    out = _reverb(_pan(voiced + cons[0], 0.0, channels), sr, rng, rt60, wet)
    active = np.zeros(n, dtype=bool)
    for a, b in plan.phrases:
        active[max(int((a - 0.12) * sr), 0):int((b + rt60 + 0.02) * sr)] = True
    return (out * active).astype(np.float32), active


def _drum_hit(kind, kit, sr, rng, banks):
    """One hit as a mono array: a pitch-dropping sine (kick, toms), tone + noise (snare) or noise."""
    def noise(bank, length):
        start = int(rng.integers(len(banks[bank]) - length)) if len(banks[bank]) > length else 0
        return banks[bank][start:start + length]
    if kind in ("kick", "tom_lo", "tom_hi"):
        f_end = kit["kick_f"] if kind == "kick" else kit["tom_f"] * (1.5 if kind == "tom_hi" else 1.0)
        tau = kit["kick_tau"] if kind == "kick" else 0.25
        t = np.arange(int(4 * tau * sr)) / sr
        f = f_end + (kit["kick_sweep"] if kind == "kick" else 0.5 * f_end) * np.exp(-t / 0.03)
        y = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / tau)
        y[: int(0.003 * sr)] += 0.3 * noise("hat", int(0.003 * sr))  # beater click
        return y
    if kind == "snare":
        t = np.arange(int(5 * kit["snare_tau"] * sr)) / sr
        tone = np.sin(2 * np.pi * kit["snare_f"] * t) + 0.5 * np.sin(2 * np.pi * 1.47 * kit["snare_f"] * t)
        return kit["snare_tone"] * tone * np.exp(-t / 0.05) + noise("snare", len(t)) * np.exp(-t / kit["snare_tau"])
    tau = {"hat": kit["hat_tau"], "ohat": kit["ohat_tau"], "crash": 0.7}[kind]
    t = np.arange(int(5 * tau * sr)) / sr
    return noise("crash" if kind == "crash" else "hat", len(t)) * np.exp(-t / tau) * (0.6 if kind == "crash" else 1.0)


def synth_drums(plan, rng, channels=2):
    """Render the drum pattern of ``plan.drums`` (16 steps a bar, swing, fills, crashes): (C, N)."""
    kit, sr, n = plan.drums, plan.sr, plan.n
    banks = {"hat": _noise(rng, 2 * sr, 4, kit["hat_hp"], "highpass", sr),
             "snare": _noise(rng, 2 * sr, 2, kit["snare_band"], "bandpass", sr),
             "crash": _noise(rng, 7 * sr, 2, min(3000, 0.4 * sr), "highpass", sr)}
    kick, snare, hat, ohat, _ = _DRUM_STYLES[kit["style"]]
    step = plan.beat / 4
    pans = {"hat": kit["hat_pan"], "ohat": kit["hat_pan"], "tom_lo": -0.4, "tom_hi": 0.4, "crash": -kit["hat_pan"]}
    levels = {"kick": 1.0, "snare": 0.8, "hat": 0.15, "ohat": 0.15, "tom_lo": 0.7, "tom_hi": 0.7, "crash": 0.12}
    gains = {k: _pan(np.ones(1, dtype=np.float32), pans.get(k, 0.0), channels) for k in levels}  # (C, 1)
    out, cache = np.zeros((channels, n), dtype=np.float32), {}  # cache: two variants of each hit
    for b in range(int(np.ceil(n / sr / (16 * step)))):
        hits = [(s, "kick") for s in kick] + [(s, "snare") for s in snare] + [(s, "hat") for s in hat if s not in ohat]
        hits += [(s, "ohat") for s in ohat] + [(s, "kick") for s in (6, 14) if rng.random() < 0.15]
        hits += [(s, "snare") for s in (7, 15) if rng.random() < 0.12]  # ghost notes come softer below
        if kit["fills"] and b % 4 == 3:
            hits = [h for h in hits if h[0] < 12 or h[1] in ("hat",)] + [
                (s, str(rng.choice(["snare", "tom_hi", "tom_lo"]))) for s in range(12, 16)]
        if b % 4 == 0 and (b > 0 or rng.random() < 0.5):
            hits.append((0, "crash"))
        for s, kind in hits:
            if (kind, 0) not in cache:
                cache.update({(kind, v): _drum_hit(kind, kit, sr, rng, banks).astype(np.float32) for v in range(2)})
            t0 = b * 16 * step + s * step + (kit["swing"] * step if s % 2 else 0) + rng.normal(0, 0.004)
            vel = levels[kind] * rng.uniform(0.8, 1.0) * (0.35 if s in (7, 15) and kind == "snare" else 1.0)
            vel *= 1.0 if kind not in ("hat", "ohat") or s % 4 == 0 else 0.7
            _add(out, (vel * gains[kind]) * cache[kind, int(rng.integers(2))][None], int(t0 * sr))
    return _reverb(out, sr, rng, *kit["room"]).astype(np.float32)


def _note(f0, dur, sr, layers, rng, release=0.03):
    """One note (mono float32): a sum of wavetable layers, each with a linear attack, an exponential
    decay (a decayed layer stops at -61 dB) and a linear release after ``dur`` seconds."""
    length, rel = int((dur + release) * sr), max(int(release * sr), 1)
    out = np.zeros(length, dtype=np.float32)
    for slope, odd, fc, att, dec, level, detunes in layers:
        m = min(length, int(7 * dec * sr)) if dec else length
        freqs = [f0 * 2 ** (c / 1200) for c in detunes]
        layer = sum(_osc(_harmonic_table(f, sr, slope, odd, fc), f, m, sr, rng) for f in freqs)
        layer *= np.float32(level / len(detunes))
        if dec:
            layer *= np.exp(np.arange(m, dtype=np.float32) * np.float32(-1 / (dec * sr)))
        a = min(m, max(int(att * sr), 1))
        layer[:a] *= np.arange(a, dtype=np.float32) / np.float32(a)
        if length - rel < m:
            layer[length - rel:] *= np.linspace(1, 0, rel, dtype=np.float32)[: m - (length - rel)]
        out[:m] += layer
    return out


def _vary(layers, rng):
    """Per-song variation of a timbre: brightness, attack and decay scaled by random factors."""
    return [(sl, od, fc * rng.uniform(0.6, 1.6), at * rng.uniform(0.7, 1.5), de * rng.uniform(0.7, 1.4), lv, dt)
            for sl, od, fc, at, de, lv, dt in layers]


def synth_bass(plan, rng, channels=2):
    """Render the bass line: the pattern of ``plan.bass`` on each chord root (E1-D#2): (C, N)."""
    sr, n, beat = plan.sr, plan.n, plan.beat
    layers = _vary(_TIMBRES[plan.bass["timbre"]], rng)
    out = np.zeros((1, n))
    for a, b, _, root in plan.chords:
        m = 28 + (root - 4) % 12
        for bar_start in np.arange(a, b - 1e-6, 4 * beat):
            for on, dur, interval in plan.bass["pattern"]:
                t0 = bar_start + on * beat
                if t0 < n / sr:
                    note = _note(_midi_hz(m + interval), dur * beat * plan.bass["legato"], sr, layers, rng, 0.03)
                    _add(out, rng.uniform(0.8, 1.0) * note[None], int(t0 * sr))
    return np.repeat(out, channels, 0).astype(np.float32)


def _voicing(pcs, center):
    """Close voicing: each pitch class placed within [center - 6, center + 6)."""
    return sorted(center - 6 + (pc - (center - 6)) % 12 for pc in pcs)


def synth_other(plan, rng, channels=2):
    """Render the chord instruments of ``plan.other`` (sustained, strummed, comped or arpeggiated)."""
    sr, n, beat = plan.sr, plan.n, plan.beat
    out = np.zeros((channels, n))
    for inst in plan.other:
        layers, name = _vary(_TIMBRES[inst["name"]], rng), inst["name"]
        part = np.zeros((1, n))
        for a, b, pcs, root in plan.chords:
            if a >= n / sr:
                break
            notes = _voicing(pcs, inst["center"])
            events = []  # (onset s, duration s, midi, velocity)
            if name in ("pad", "organ", "strings"):
                events = [(a, b - a, m, 0.7) for m in notes]
            elif name in ("strum", "epiano"):
                times = inst["strums"] if name == "strum" else (0, 1.5, 2.5)
                for bar_start in np.arange(a, b - 1e-6, 4 * beat):
                    for i, on in enumerate(times):
                        dur = ((times[i + 1] if i + 1 < len(times) else 4) - on) * beat
                        up = name == "strum" and on % 1 > 0
                        order = notes[::-1] if up else [notes[0] - 12] + notes
                        gap = rng.uniform(0.008, 0.025) if name == "strum" else 0.0
                        events += [(bar_start + on * beat + j * gap, dur, m, 0.6 if up else 0.8)
                                   for j, m in enumerate(order)]
            else:  # arpeggio over the chord tones and their upper octave, up-down
                seq = notes + [notes[0] + 12] + notes[-1:0:-1]
                steps = int(round((b - a) / (inst["step"] * beat)))
                events = [(a + k * inst["step"] * beat, 1.2 * inst["step"] * beat, seq[k % len(seq)] + 12,
                           0.9 if k % 4 == 0 else 0.7) for k in range(steps)]
            for on, dur, m, vel in events:
                if on < n / sr:
                    note = _note(_midi_hz(m), dur, sr, layers, rng, 0.15 if name in ("pad", "strings") else 0.04)
                    _add(part, vel * rng.uniform(0.85, 1.0) / np.sqrt(len(notes)) * note[None], int(on * sr))
        out += inst["level"] * _pan(part[0], inst["pan"], channels)
    return _reverb(out, sr, rng, *plan.mix["other_room"]).astype(np.float32)


def make_song(rng, duration, sr, channels=2, singer=None):
    """Plan and render one song, balanced and peak-normalised.

    Args:
        rng: ``numpy.random.Generator``; the same generator state gives the same song.
        duration: seconds. sr: sample rate (Hz). channels: 1 or 2.
        singer: a :func:`draw_singer` dict (drawn from ``rng`` when None).
    Returns:
        (stems, info): stems maps each of :data:`STEMS` to ``(channels, round(duration*sr))``
        float32; the peaks of the mixture, the accompaniment (bass + drums + other) and every stem
        are at most ``info["peak"] <= 0.89``;
        info has tempo, key, mode, singer and ``vocal_rests``: ``[(start, end)]`` seconds where the
        vocals are exactly zero.
    """
    plan = plan_song(rng, duration, sr, singer)
    vocals, active = synth_vocals(plan, rng, channels)
    stems = {"bass": synth_bass(plan, rng, channels), "drums": synth_drums(plan, rng, channels),
             "other": synth_other(plan, rng, channels), "vocals": vocals}
    rms = {k: np.sqrt(np.mean(v[:, active] ** 2 if k == "vocals" and active.any() else v ** 2)) + 1e-9
           for k, v in stems.items()}
    for k in stems:
        stems[k] = stems[k] * (10 ** (plan.mix[k] / 20) / rms[k])
    accomp_rms = np.sqrt(np.mean(sum(stems[k] for k in ("bass", "drums", "other")) ** 2))
    stems["vocals"] *= accomp_rms  # the vocal-to-accompaniment ratio is plan.mix["vocals"] dB
    accomp = stems["bass"] + stems["drums"] + stems["other"]
    peaks = [np.abs(accomp + stems["vocals"]).max(), np.abs(accomp).max()] + [np.abs(v).max() for v in stems.values()]
    scale = plan.mix["peak"] / max(peaks)
    stems = {k: (v * scale).astype(np.float32) for k, v in stems.items()}
    edges = np.flatnonzero(np.diff(np.concatenate([[1], active.astype(np.int8), [1]])))
    rests = [(a / sr, b / sr) for a, b in zip(edges[::2], edges[1::2])]
    info = dict(tempo=plan.tempo, key=plan.key, mode=plan.mode, style=plan.drums["style"], singer=plan.singer,
                bass=plan.bass["timbre"], other=[o["name"] for o in plan.other], peak=plan.mix["peak"],
                vocal_rests=rests)
    return stems, info
