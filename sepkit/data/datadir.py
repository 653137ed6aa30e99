"""Kaldi-style data directories for source separation: read, write, validate, resolve audio specs.

A data dir ``data/<set>/`` holds (all sorted by utt id in C-locale byte order)::

    wav.scp        <utt> <audio-spec>      the mixture
    <source>.scp   <utt> <audio-spec>      one per line of ``sources``, same utt ids
    sources        one source name per line (e.g. ``vocals`` then ``accompaniment``)
    utt2dur        <utt> <seconds>         duration of the mixture

The value of an scp line is the rest of the line after the first run of whitespace, so paths
may contain spaces. An <audio-spec> is a plain path, or a one-line JSON object::

    {"path": "/x/clip.wav", "channel": 1}       one channel (0-based) of a file -> mono
    {"path": "/x/clip.wav", "channel": "sum"}   sum of the file's channels -> mono
    {"sum": ["/a/bass.wav", "/a/drums.wav"]}    sample-wise sum of files (items may be specs too)

Specs are resolved by :func:`load_audio` (implemented in :mod:`sepkit.data.audiospec`).
"""
import logging
import os
from pathlib import Path

import numpy as np

from sepkit.audio import AudioError, atomic_path
from sepkit.data.audiospec import load_audio, parse_spec, spec_duration, spec_files, spec_header
from sepkit.names import name_problem

logger = logging.getLogger(__name__)

__all__ = ["DataDirError", "DataDir", "read_scp", "write_scp", "read_source_list", "load_audio", "parse_spec",
           "spec_files", "spec_duration", "spec_header", "validate_data_dir", "header_problems", "sort_key",
           "LENGTH_TOLERANCE"]

# A source may differ from its mixture in length by this fraction (what the feature stage trims or pads).
LENGTH_TOLERANCE = 0.01
# Files of a data dir that are not ``<source>.scp``; a source may not take these names.
_RESERVED = {"wav", "utt2dur", "sources"}


class DataDirError(Exception):
    """A malformed or inconsistent data dir; the message names the file (and line) at fault."""


def sort_key(utt):
    """C-locale (byte-order) sort key, the order of Kaldi's ``LC_ALL=C sort``."""
    return utt.encode("utf-8")


# ---------------------------------------------------------------------------------------- scp files

def read_scp(path):
    """Read ``<key> <value>`` lines into a dict (insertion order = file order).

    Raises:
        DataDirError: missing/undecodable file, empty or malformed lines (no value), duplicate keys;
        the message names ``file:line``.
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataDirError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataDirError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataDirError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    out = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(None, 1)
        if not parts:
            raise DataDirError(f"{path}:{lineno}: empty line")
        if len(parts) == 1:
            raise DataDirError(f"{path}:{lineno}: malformed line (expected '<key> <value>'): {line.strip()!r}")
        key, value = parts[0], parts[1].strip()
        if key in out:
            raise DataDirError(f"{path}:{lineno}: duplicate key {key!r}")
        out[key] = value
    return out


def write_scp(path, mapping):
    """Write ``mapping`` as ``<key> <value>`` lines sorted by key (C order), atomically.

    Values are converted with ``str``; keys must be non-empty without whitespace and values
    non-empty without newlines.
    """
    lines = []
    for key in sorted(mapping, key=sort_key):
        key_s, value = str(key), str(mapping[key])
        if not key_s or any(c.isspace() for c in key_s):
            raise DataDirError(f"{path}: invalid key {key_s!r} (empty or contains whitespace)")
        if not value.strip() or "\n" in value or "\r" in value:
            raise DataDirError(f"{path}: invalid value for {key_s!r}: {value!r}")
        lines.append(f"{key_s} {value}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)


def _read_lines(path):
    try:
        return [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise DataDirError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataDirError(f"{path}: cannot read ({exc})") from None


def _read_utt2dur(path):
    out = {}
    for utt, value in read_scp(path).items():
        try:
            dur = float(value)
        except ValueError:
            dur = float("nan")
        if not np.isfinite(dur) or dur <= 0:
            raise DataDirError(f"{path}: utterance {utt!r} has an invalid duration {value!r} "
                               "(expected positive seconds)")
        out[utt] = dur
    return out


# ---------------------------------------------------------------------------------------- DataDir

def _check_source_names(names, where):
    seen = set()
    for name in names:
        why = name_problem(name)  # it names <source>.scp and every output file: one safe path component
        if why is not None:
            raise DataDirError(f"{where}: invalid source name {name!r} ({why})")
        if name in _RESERVED:
            raise DataDirError(f"{where}: source name {name!r} is reserved")
        if name in seen:
            raise DataDirError(f"{where}: duplicate source {name!r}")
        seen.add(name)
    if not names:
        raise DataDirError(f"{where}: no sources listed")


def read_source_list(path):
    """The source names of a ``sources`` file (one a line, blank lines ignored), checked like a data dir's."""
    names = [s for s in _read_lines(path) if s]
    _check_source_names(names, path)
    return names


def _check_same_utts(reference, ref_name, other, other_name):
    if set(reference) == set(other):
        return None
    missing = sorted(set(reference) - set(other), key=sort_key)
    extra = sorted(set(other) - set(reference), key=sort_key)
    bits = []
    if missing:
        bits.append(f"{len(missing)} utterance(s) of {ref_name} missing (e.g. {missing[0]})")
    if extra:
        bits.append(f"{len(extra)} utterance(s) not in {ref_name} (e.g. {extra[0]})")
    return f"{other_name}: " + "; ".join(bits)


class DataDir:
    """A separation data dir: ``wav.scp``, ``sources``, ``<source>.scp``, ``utt2dur``.

    Attributes:
        path: the directory (``Path``).
        sources: source names in the order of the ``sources`` file.
        utts: utterance ids sorted in C order.
        wav: ``{utt: mixture audio-spec}``.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataDirError(f"{self.path}: not a directory")
        self.sources = read_source_list(self.path / "sources")
        self.wav = read_scp(self.path / "wav.scp")
        if not self.wav:
            raise DataDirError(f"{self.path / 'wav.scp'}: no utterances")
        self._sources = {}
        for name in self.sources:
            scp = read_scp(self.path / f"{name}.scp")
            problem = _check_same_utts(self.wav, "wav.scp", scp, self.path / f"{name}.scp")
            if problem:
                raise DataDirError(problem)
            self._sources[name] = scp
        self.utts = sorted(self.wav, key=sort_key)
        self._utt2dur = None

    def __len__(self):
        return len(self.utts)

    def __repr__(self):
        return f"DataDir({str(self.path)!r}, {len(self)} utts, sources={self.sources})"

    def source(self, name):
        """``{utt: audio-spec}`` of one source."""
        if name not in self._sources:
            raise DataDirError(f"{self.path}: no source {name!r} (sources: {' '.join(self.sources)})")
        return self._sources[name]

    @property
    def utt2dur(self):
        """``{utt: seconds}``; read from ``utt2dur``, or computed from file headers if it is absent."""
        if self._utt2dur is None:
            path = self.path / "utt2dur"
            if path.exists():
                durs = _read_utt2dur(path)
                problem = _check_same_utts(self.wav, "wav.scp", durs, path)
                if problem:
                    raise DataDirError(problem)
            else:
                logger.warning("%s: no utt2dur, reading durations from the audio headers", self.path)
                durs = _compute_utt2dur(self.wav)
            self._utt2dur = durs
        return self._utt2dur

    @classmethod
    def create(cls, path, wav, sources, utt2dur=None, overwrite=False):
        """Write a data dir and return it.

        Args:
            path: directory to create.
            wav: ``{utt: mixture audio-spec}``.
            sources: ``{source name: {utt: audio-spec}}``; the dict order is the ``sources`` order.
            utt2dur: ``{utt: seconds}``; computed from the mixture files' headers when None.
            overwrite: replace the files of an existing non-empty dir (otherwise an error).
        Everything is checked before any file is written; each file is written atomically.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise DataDirError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise DataDirError(f"{path}: directory exists and is not empty (pass overwrite=True)")
        if not wav:
            raise DataDirError(f"{path}: no utterances given")
        names = list(sources)
        _check_source_names(names, f"{path}/sources")
        for name in names:
            problem = _check_same_utts(wav, "wav.scp", sources[name], f"{path}/{name}.scp")
            if problem:
                raise DataDirError(problem)
        if utt2dur is None:
            utt2dur = _compute_utt2dur(wav)
        else:
            problem = _check_same_utts(wav, "wav.scp", utt2dur, f"{path}/utt2dur")
            if problem:
                raise DataDirError(problem)
            for utt, dur in utt2dur.items():
                if not np.isfinite(float(dur)) or float(dur) <= 0:
                    raise DataDirError(f"{path}/utt2dur: utterance {utt!r} has an invalid duration {dur!r}")
        old_sources = []
        if (path / "sources").is_file():
            old_sources = [s for s in _read_lines(path / "sources") if s and s not in names]
        path.mkdir(parents=True, exist_ok=True)
        write_scp(path / "wav.scp", wav)
        for name in names:
            write_scp(path / f"{name}.scp", sources[name])
        write_scp(path / "utt2dur", {u: _fmt_dur(float(d)) for u, d in utt2dur.items()})
        with atomic_path(path / "sources") as tmp:
            Path(tmp).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
        for stale in old_sources:  # an overwritten dir must not keep a dropped source's scp
            if "/" not in stale and (path / f"{stale}.scp").is_file():
                (path / f"{stale}.scp").unlink()
        return cls(path)

    def copy_to(self, path, overwrite=False):
        """Copy the dir's files to ``path`` (specs are copied as is, audio is not)."""
        return DataDir.create(path, self.wav, {n: self.source(n) for n in self.sources},
                              self.utt2dur, overwrite=overwrite)


def _fmt_dur(seconds):
    return f"{seconds:.4f}".rstrip("0").rstrip(".")


def _compute_utt2dur(wav):
    from tqdm import tqdm

    out = {}
    for utt, spec in tqdm(wav.items(), desc="utt2dur", unit="utt", disable=len(wav) < 500, leave=False):
        try:
            out[utt] = spec_duration(spec)
        except AudioError as exc:
            raise DataDirError(f"utterance {utt}: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------- validation

def _check_sorted(path, keys):
    keys = list(keys)
    for i in range(1, len(keys)):
        if sort_key(keys[i - 1]) > sort_key(keys[i]):
            return (f"{path}: not sorted (C locale) at line {i + 1}: {keys[i]!r} after {keys[i - 1]!r}; "
                    "fix with: LC_ALL=C sort -k1,1")
    return None


def validate_data_dir(path, check_audio=False):
    """Check a data dir; return a list of one-line problems (``[]`` when valid).

    Always checked: required files, parseable and C-sorted scp files, valid source names,
    identical utt sets, positive durations, valid audio specs whose files exist, and from the file
    headers (:func:`header_problems`) that every source has its mixture's sample rate and length
    (within :data:`LENGTH_TOLERANCE`).
    With ``check_audio``: every spec is decoded; the mixture and its sources must have the same
    sample rate and length, and ``utt2dur`` must match the mixture's duration (1% or 10 ms).
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path}: not a directory"]
    problems = []
    sources = []
    try:
        sources = [s for s in _read_lines(path / "sources") if s]
        _check_source_names(sources, path / "sources")
    except DataDirError as exc:
        problems.append(str(exc))
        sources = [s for s in sources if s and "/" not in s and s not in _RESERVED]
    tables = {}
    for name in ["wav"] + list(dict.fromkeys(sources)) + ["utt2dur"]:
        fname = path / ("utt2dur" if name == "utt2dur" else f"{name}.scp")
        if not fname.exists():
            problems.append(f"{fname}: missing" + ("" if name in ("wav", "utt2dur") else
                                                    f" (source {name!r} is listed in {path / 'sources'})"))
            continue
        try:
            table = read_scp(fname)
        except DataDirError as exc:
            problems.append(str(exc))
            continue
        if not table:
            problems.append(f"{fname}: empty")
        unsorted = _check_sorted(fname, table)
        if unsorted:
            problems.append(unsorted)
        tables[name] = table
    wav = tables.get("wav")
    if wav:
        for name, table in tables.items():
            if name != "wav":
                fname = path / ("utt2dur" if name == "utt2dur" else f"{name}.scp")
                problem = _check_same_utts(wav, "wav.scp", table, fname)
                if problem:
                    problems.append(problem)
    if "utt2dur" in tables:
        for utt, value in tables["utt2dur"].items():
            try:
                ok = float(value) > 0 and np.isfinite(float(value))
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{path / 'utt2dur'}: utterance {utt!r} has an invalid duration {value!r}")
                break
    for name, table in tables.items():
        if name == "utt2dur":
            continue
        fname = path / f"{name}.scp"
        for utt, spec in table.items():
            try:
                missing = [f for f in spec_files(spec) if not os.path.isfile(f)]
            except AudioError as exc:
                problems.append(f"{fname}: utterance {utt}: {exc}")
                continue
            if missing:
                problems.append(f"{fname}: utterance {utt}: audio file not found: {missing[0]}")
    if check_audio and wav and not problems:
        problems.extend(_check_audio(path, tables, sources))
    elif wav and not problems:
        problems.extend(header_problems(path, wav, {name: tables[name] for name in sources}))
    return problems


def header_problems(path, wav, sources, utts=None):
    """One-line problems of the sources that disagree with their mixture, read from file headers only.

    Args:
        path: the data dir (named in the messages). wav: ``{utt: mixture spec}``.
        sources: ``{source name: {utt: spec}}``. utts: the utterances to check (default: all of ``wav``).
    Returns:
        ``["<path>/<source>.scp: utterance <utt>: <spec> is R Hz / N samples, the mixture <spec> ..."]``:
        a sample rate other than the mixture's, or a length that differs from the mixture's by more than
        :data:`LENGTH_TOLERANCE`; unreadable files too. ``[]`` when they agree.
    """
    from sepkit.audio import AudioError

    path = Path(path)
    problems = []
    for utt in (utts if utts is not None else sorted(wav, key=sort_key)):
        try:
            rate, frames = spec_header(wav[utt])
        except AudioError as exc:
            problems.append(f"{path / 'wav.scp'}: utterance {utt}: {exc}")
            continue
        for name, table in sources.items():
            where = f"{path / (name + '.scp')}: utterance {utt}: {table[utt]}"
            try:
                s_rate, s_frames = spec_header(table[utt])
            except AudioError as exc:
                problems.append(f"{path / (name + '.scp')}: utterance {utt}: {exc}")
                continue
            if s_rate != rate:
                problems.append(f"{where} is {s_rate} Hz, the mixture {wav[utt]} {rate} Hz")
            elif abs(s_frames - frames) > LENGTH_TOLERANCE * frames:
                problems.append(f"{where} has {s_frames} samples, the mixture {wav[utt]} {frames} "
                                f"(at {rate} Hz; they must agree within {LENGTH_TOLERANCE:.0%})")
    return problems


def _check_audio(path, tables, sources):
    from tqdm import tqdm

    problems = []
    durs = tables.get("utt2dur", {})
    utts = sorted(tables["wav"], key=sort_key)
    for utt in tqdm(utts, desc="check audio", unit="utt", leave=False, disable=len(utts) < 100):
        try:
            mix, sr = load_audio(tables["wav"][utt])
        except AudioError as exc:
            problems.append(f"{path / 'wav.scp'}: utterance {utt}: {exc}")
            continue
        seconds = mix.shape[1] / sr
        if utt in durs:
            given = float(durs[utt])
            if abs(given - seconds) > max(0.01, 0.01 * seconds):
                problems.append(f"{path / 'utt2dur'}: utterance {utt}: says {given:g} s, "
                                f"the mixture lasts {seconds:g} s")
        for name in sources:
            try:
                src, src_sr = load_audio(tables[name][utt])
            except AudioError as exc:
                problems.append(f"{path / (name + '.scp')}: utterance {utt}: {exc}")
                continue
            if src_sr != sr:
                problems.append(f"{path / (name + '.scp')}: utterance {utt}: {src_sr} Hz, mixture is {sr} Hz")
            elif src.shape[1] != mix.shape[1]:
                problems.append(f"{path / (name + '.scp')}: utterance {utt}: {src.shape[1]} samples, "
                                f"mixture has {mix.shape[1]}")
    return problems

