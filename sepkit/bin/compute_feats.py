"""Compute the feature dump of a data dir: magnitudes (T, F) of the mixture and of each source.

Usage::

    python -m sepkit.bin.compute_feats --feat-conf conf/feats.yaml [--utt-list FILE] [--device cpu]
        DATADIR OUTDIR                     # one process: the whole dump (skipped if already done)
    ... --ark-name feats.3 DATADIR OUTDIR  # one job of utils/compute_feats.sh: part files only
    ... --prepare DATADIR OUTDIR           # exit 0 if the dump is complete, 10 when it is to be made
    ... --merge feats.1,feats.2 DATADIR OUTDIR   # join the parts into the dump

Every signal is made mono (mean of channels), resampled to ``sample_rate`` and analysed with
:class:`sepkit.frontend.Frontend` (mixture and sources of an utterance in one batch); the magnitudes are mel
(``bins: mel``, F = n_mels) or linear STFT ones (``bins: linear``, F = n_fft / 2 + 1). With
``phase_sensitive: true`` each source also gets ``<source>.psa``: ``|S_c| cos(theta_c - theta_X)``
on the same bins (``Re(S_c conj(X)) / |X|``, 0 where ``X = 0``; through the mel filters for mel
bins), the target of the PSA objectives. It is asked for, not always written, because it adds C
matrices per utterance (about doubling the dump) that only the PSA objectives read. A job
writes ``mix.<name>.ark/scp``, ``<source>.<name>.ark/scp`` and ``utt2num_frames.<name>``, each
under a temporary name renamed at the end. Merging writes ``<source>.scp``, ``utt2num_frames``,
``sources``, ``feat_conf.yaml`` and then ``mix.scp``, whose presence marks a finished dump.

A dump dir is claimed before anything is written in it: ``OUTDIR/.sepkit_dump`` says that
sepkit made it and records what the features are computed from (the data dir and the
fingerprint of its scp files and the size and time of its audio, :mod:`sepkit.data.fingerprint`).
Only the files sepkit writes there (by their exact names) are ever removed or replaced; a folder
that holds other files and no such record is refused (``--overwrite`` moves it aside). A finished
dump of the same settings, utterances and inputs is kept ("already done"); one of the same data
dir whose audio changed since (e.g. a remix with another seed) is stale and recomputed in place;
any other (other settings, utterances or data dir, damaged, or without a record) is refused unless
``--overwrite``, which moves it aside to ``OUTDIR.old.<time>``; an unfinished one (a run that was
interrupted) is redone. A write that fails (a full disk) ends in one line, and the dump stays
unfinished. Layout and reading: :mod:`sepkit.data.dataset`.
"""
import argparse
import logging
import os
import re
import sys
from pathlib import Path

import numpy as np

from sepkit.data.datadir import LENGTH_TOLERANCE  # sources may differ from the mixture in length by this fraction
from sepkit.data.dataset import MIX, PSA, dump_streams, read_dump_scp

logger = logging.getLogger("sepkit.bin.compute_feats")

NOT_DONE = 10  # exit status of --prepare when there is work to do
RESIDUAL_WARN_DB = -20.0  # warn when |mix - sum(sources)|^2 / |mix|^2 is above this
_RESERVED = {MIX, "utt2num_frames", "feat_conf", "cmvn", "sources", "log"}
RECORD = ".sepkit_dump"  # claims a dump dir and records its inputs (see the module docstring)
_OWNER = "sepkit compute_feats dump"


def fail(message):
    raise SystemExit(f"compute_feats: {message}")


def load_feat_conf(path):
    """Read a YAML file of :class:`FeatureConfig` keys; unknown keys or wrong types -> error."""
    import yaml

    from sepkit.frontend import FeatureConfig

    try:
        d = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror or exc})")
    except yaml.YAMLError as exc:
        fail(f"{path}: invalid YAML ({str(exc).splitlines()[0]})")
    d = {} if d is None else d
    if not isinstance(d, dict):
        fail(f"{path}: expected a mapping of feature settings, got {type(d).__name__}")
    defaults = FeatureConfig().to_dict()
    unknown = sorted(set(d) - set(defaults))
    if unknown:
        fail(f"{path}: unknown feature setting(s) {', '.join(map(str, unknown))} (known: {', '.join(defaults)})")
    for key, value in d.items():
        want = type(defaults[key])
        if want is str:
            if not isinstance(value, str):
                fail(f"{path}: {key} must be a word, got {value!r}")
            continue
        ok = isinstance(value, bool) if want is bool else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (want is float or value == int(value)))
        if not ok:
            fail(f"{path}: {key} must be {want.__name__}, got {value!r}")
        d[key] = want(value)
    conf = FeatureConfig.from_dict(d)
    if conf.sample_rate <= 0 or conf.n_fft <= 0 or conf.hop_length <= 0 or conf.n_mels <= 0:
        fail(f"{path}: sample_rate, n_fft, hop_length and n_mels must be positive")
    if conf.check():
        fail(f"{path}: {conf.check()}")
    return conf


def open_data_dir(path):
    from sepkit.data.datadir import DataDir, DataDirError

    try:
        data = DataDir(path)
    except DataDirError as exc:
        fail(str(exc))
    bad = sorted(set(data.sources) & _RESERVED)
    if bad:
        fail(f"{data.path / 'sources'}: source name {bad[0]!r} clashes with a dump file name")
    return data


def read_utt_list(path, data):
    """Utterance ids from the first field of each line of ``path`` (e.g. a split wav.scp)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror or exc})")
    utts = [line.split()[0] for line in lines if line.strip()]
    known = set(data.utts)
    for utt in utts:
        if utt not in known:
            fail(f"{path}: utterance {utt} is not in {data.path / 'wav.scp'}")
    if not utts:
        fail(f"{path}: no utterances")
    if len(set(utts)) != len(utts):
        fail(f"{path}: utterance {next(u for i, u in enumerate(utts) if u in utts[:i])} is listed twice")
    return utts


def load_utt(data, utt, sample_rate):
    """Mono signals at ``sample_rate``: ``(C + 1, N)`` float32, mixture first, sources in order."""
    from sepkit.audio import AudioError, resample, to_mono
    from sepkit.data.datadir import load_audio

    def get(spec):
        wav, sr = load_audio(spec)
        return resample(to_mono(wav), sr, sample_rate)[0]  # mono first: resampling 1 channel is cheaper

    try:
        mix = get(data.wav[utt])
        srcs = [get(data.source(name)[utt]) for name in data.sources]
    except AudioError as exc:
        fail(f"utterance {utt}: {exc}")
    n = mix.shape[0]
    out = np.zeros((1 + len(srcs), n), dtype=np.float32)
    out[0] = mix
    for c, (name, src) in enumerate(zip(data.sources, srcs)):
        if abs(src.shape[0] - n) > LENGTH_TOLERANCE * n:
            fail(f"{data.path / (name + '.scp')}: utterance {utt}: {data.source(name)[utt]} has {src.shape[0]} "
                 f"samples, the mixture {data.wav[utt]} {n} (at {sample_rate} Hz; they must agree within "
                 f"{LENGTH_TOLERANCE:.0%})")
        m = min(n, src.shape[0])
        out[1 + c, :m] = src[:m]  # trimmed or zero-padded to the mixture's length
    energy = float(np.square(mix, dtype=np.float64).sum())
    if energy > 0:
        resid = float(np.square(mix - out[1:].sum(0), dtype=np.float64).sum())
        ratio = 10 * np.log10(max(resid, 1e-30) / energy)
        if ratio > RESIDUAL_WARN_DB:
            logger.warning("utterance %s: mixture differs from the sum of the sources (residual %.1f dB "
                           "relative to the mixture)", utt, ratio)
    return out


def part_paths(outdir, prefix, name):
    return Path(outdir) / f"{prefix}.{name}.ark", Path(outdir) / f"{prefix}.{name}.scp"


def compute_part(data, outdir, name, utts, conf, device="cpu"):
    """Write the part files of ``utts`` (see the module docstring); all or nothing."""
    import kaldiio
    import torch
    from tqdm import tqdm

    from sepkit.frontend import Frontend

    outdir = Path(outdir).resolve()
    if outdir.is_dir() and read_record(outdir) is None and any(outdir.iterdir()):
        fail(f"{outdir}: holds files that sepkit did not make (no {RECORD}); give an empty or new dump dir")
    outdir.mkdir(parents=True, exist_ok=True)
    frontend = Frontend(conf).to(device)
    prefixes = dump_streams(data.sources, conf)
    temps, arks, entries, frames = [], [], {p: {} for p in prefixes}, {}
    try:
        for prefix in prefixes:
            tmp = outdir / f".{prefix}.{name}.ark.tmp"
            temps.append(tmp)
            arks.append(open(tmp, "wb"))
        for utt in tqdm(utts, desc=f"compute_feats {name}", unit="utt", mininterval=10):
            wav = torch.from_numpy(load_utt(data, utt, conf.sample_rate)).to(device)
            with torch.no_grad():
                spec = frontend.stft(wav)  # (C+1, T, K)
                mel = frontend.to_bins(spec.abs(), conf.bins)  # (C+1, T, F)
                if conf.phase_sensitive:  # |S_c| cos(theta_c - theta_X) = Re(S_c conj(X)) / |X|
                    x = spec[:1]
                    psa = (spec[1:] * x.conj()).real / x.abs().clamp_min(1e-30)
                    mel = torch.cat([mel, frontend.to_bins(psa, conf.bins)])
            mel = mel.float().cpu().numpy()
            frames[utt] = mel.shape[1]
            for prefix, f, m in zip(prefixes, arks, mel):
                pos = f.tell() + len((utt + " ").encode())
                kaldiio.save_ark(f, {utt: np.ascontiguousarray(m)})
                entries[prefix][utt] = pos
        for f in arks:
            f.close()
        from sepkit.data.datadir import write_scp

        for prefix, tmp in zip(prefixes, temps):
            ark, scp = part_paths(outdir, prefix, name)
            os.replace(tmp, ark)
            write_scp(scp, {u: f"{ark}:{pos}" for u, pos in entries[prefix].items()})
        write_scp(outdir / f"utt2num_frames.{name}", frames)
    except OSError as exc:  # a full disk: one line, and no part is left to be taken for done
        for path in [p for prefix in prefixes for p in part_paths(outdir, prefix, name)]:
            path.unlink(missing_ok=True)
        (outdir / f"utt2num_frames.{name}").unlink(missing_ok=True)
        fail(f"{exc.filename or outdir}: cannot write part {name} ({exc.strerror or exc})")
    finally:
        for f in arks:
            try:
                f.close()
            except OSError:  # its buffer could not be flushed (a full disk): the file is removed below
                pass
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()
    logger.info("%s: wrote %d utterances (%d frames) of part %s", outdir, len(frames), sum(frames.values()), name)


def _final_files(sources):
    return [f"{s}.scp" for s in sources] + [f"{s}{PSA}.scp" for s in sources] + ["utt2num_frames", "sources", "feat_conf.yaml", "cmvn.ark"]


def _own_names(prefixes):
    """A test of the top-level names that sepkit writes in a dump dir whose streams are ``prefixes``
    (mixture first): final and part files, their temporaries, ``split<N>/``, ``log/``, the record."""
    alt = "|".join(re.escape(p) for p in prefixes)
    final = "|".join(re.escape(f) for f in _final_files(prefixes[1:]) + ["mix.scp", RECORD])
    own = re.compile(rf"(?:{final}|log|split\d+|(?:{alt})\.feats(?:\.\d+)?\.(?:ark|scp)|utt2num_frames\.feats(?:\.\d+)?"
                     rf"|\.(?:{alt})\.feats(?:\.\d+)?\.ark\.tmp|\.(?:{final}|utt2num_frames\.feats(?:\.\d+)?)\..+\.tmp)")
    return lambda name: own.fullmatch(name) is not None


def read_record(outdir):
    """``{"data": path, "inputs": fingerprint}`` of ``OUTDIR/.sepkit_dump``, or None if it is not there
    or not sepkit's."""
    try:
        lines = (Path(outdir) / RECORD).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or lines[0] != _OWNER:
        return None
    return dict(line.split(" ", 1) for line in lines[1:] if " " in line)


def write_record(outdir, data_path, inputs):
    from sepkit.audio import atomic_path

    with atomic_path(Path(outdir) / RECORD) as tmp:
        Path(tmp).write_text(f"{_OWNER}\ndata {Path(data_path).resolve()}\ninputs {inputs}\n", encoding="utf-8")


def inputs_of(data):
    """The fingerprint of what the features of ``data`` are computed from (:mod:`sepkit.data.fingerprint`)."""
    from sepkit.audio import AudioError
    from sepkit.data.datadir import DataDirError
    from sepkit.data.fingerprint import data_fingerprint

    try:
        return data_fingerprint(data.path)
    except (AudioError, DataDirError) as exc:
        fail(str(exc))


def dump_state(outdir, conf, sources, utts, data_path=None, inputs=None):
    """``(state, reason)``: ``new`` (no dir, or an empty one), ``foreign`` (files and no record of
    sepkit's: not ours), ``absent`` (ours, no ``mix.scp``: never finished, e.g. interrupted),
    ``done``, or, for a finished dump that is not this one, ``different`` (other feature settings),
    ``other`` (other utterances, sources or data dir), ``damaged`` (unreadable or missing files),
    ``unrecorded`` (a dump without a record of its inputs) or ``stale`` (of the data dir
    ``data_path`` as it was before: the fingerprint ``inputs`` differs)."""
    import yaml

    from sepkit.data.dataset import DumpError, read_dump_scp_values
    from sepkit.frontend import FeatureConfig

    outdir = Path(outdir)
    if not outdir.is_dir() or not any(outdir.iterdir()):
        return ("foreign", f"{outdir} is not a directory") if outdir.exists() else ("new", "")
    record = read_record(outdir)
    if record is None and not (outdir / "mix.scp").is_file():
        names = sorted(p.name for p in outdir.iterdir())
        return "foreign", (f"{outdir} holds files that sepkit did not make ({', '.join(names[:3])}"
                           f"{', ...' if len(names) > 3 else ''}; no {RECORD})")
    if not (outdir / "mix.scp").is_file():
        return "absent", f"no {outdir / 'mix.scp'}"
    try:
        old = FeatureConfig.from_dict(yaml.safe_load((outdir / "feat_conf.yaml").read_text()) or {}).to_dict()
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        return "damaged", f"{outdir / 'feat_conf.yaml'} is unreadable ({str(exc).splitlines()[0]})"
    new = conf.to_dict()
    if old != new:
        diff = ", ".join(f"{k}: {old[k]} -> {new[k]}" for k in new if old[k] != new[k])
        return "different", f"{outdir} holds features with other settings ({diff})"
    try:
        old_sources = [s for s in (outdir / "sources").read_text().split() if s]
        if old_sources != list(sources):
            return "other", f"{outdir} holds a dump of the sources {old_sources}, the data dir has {list(sources)}"
        tables = [read_dump_scp(outdir / f"{p}.scp") for p in dump_streams(sources, conf)]
        tables.append(read_dump_scp_values(outdir / "utt2num_frames"))
    except (OSError, DumpError) as exc:
        return "damaged", f"{outdir} is a damaged dump ({str(exc).splitlines()[0]})"
    have, want = set(tables[0]), set(utts)
    if any(set(table) != have for table in tables):
        return "damaged", f"{outdir} is a damaged dump (its scp files list different utterances)"
    if have != want:
        return "other", (f"{outdir} holds a finished dump of other utterances ({len(want - have)} of the "
                         f"{len(want)} here missing, {len(have - want)} not here)")
    arks = {ark for table in tables[:-1] for ark, _ in table.values()}
    missing = [a for a in arks if not Path(a).is_file()]
    if missing:
        return "damaged", f"{outdir} is a damaged dump (ark file {missing[0]} is missing)"
    if record is None or "inputs" not in record:
        return "unrecorded", f"{outdir} is a dump with no record of what it was computed from (no {RECORD})"
    if data_path is not None and record.get("data") != str(Path(data_path).resolve()):
        return "other", f"{outdir} holds the features of another data dir ({record.get('data')})"
    if inputs is not None and record["inputs"] != inputs:
        return "stale", (f"{outdir} holds the features of {data_path} as it was: its scp files or audio "
                         f"changed since (inputs in {outdir / RECORD})")
    return "done", ""


def clear_parts(outdir, sources):
    """Remove what sepkit wrote in its own dump dir ``outdir`` (one with a record): ``mix.scp``
    first (the dump is unfinished from then on), then the final files, the part files of any run
    and their temporaries. Nothing else is touched (a user's ``notes.txt``, ``mix.backup.scp``)."""
    outdir = Path(outdir)
    if read_record(outdir) is None:
        raise RuntimeError(f"{outdir}: clear_parts on a directory that sepkit did not claim")
    (outdir / "mix.scp").unlink(missing_ok=True)
    old = (outdir / "sources").read_text().split() if (outdir / "sources").is_file() else []
    names = list(dict.fromkeys(list(sources) + [s for s in old if s not in _RESERVED and "/" not in s]))
    own = _own_names([MIX] + names + [s + PSA for s in names])
    for path in outdir.iterdir():
        if path.is_file() and path.name != RECORD and own(path.name):
            path.unlink()

def move_aside(path, repoint=True):
    """Rename ``path`` to a free ``<path>.old.<YYYYmmdd-HHMMSS>[.N]`` and return the new path. With
    ``repoint`` (a dump of sepkit's) the ark paths of its top-level scp files are made to point into
    the new place, so that the old dump goes on reading its own arks (not those of a new dump made
    at ``path``); a folder sepkit did not make is moved as it is."""
    import time

    from sepkit.audio import atomic_path

    path = Path(path).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    old, n = path.with_name(f"{path.name}.old.{stamp}"), 1
    while old.exists() or old.is_symlink():
        old, n = path.with_name(f"{path.name}.old.{stamp}.{n}"), n + 1
    os.rename(path, old)
    for scp in old.glob("*.scp") if repoint else []:
        try:
            text = scp.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        fixed = text.replace(f" {path}/", f" {old}/")  # "<utt> <ark>:<offset>" lines
        if fixed != text:
            with atomic_path(scp) as tmp:
                Path(tmp).write_text(fixed, encoding="utf-8")
    return old


def check_audio_files(data, utts):
    """Fail before any job starts (and before anything is written) if an audio spec is invalid or names a
    missing file, or if a source's sample rate or length (file headers) is not its mixture's."""
    from sepkit.audio import AudioError
    from sepkit.data.datadir import header_problems, spec_files

    for utt in utts:
        for name, table in [("wav.scp", data.wav)] + [(f"{s}.scp", data.source(s)) for s in data.sources]:
            try:
                missing = [f for f in spec_files(table[utt]) if not os.path.isfile(f)]
            except AudioError as exc:
                fail(f"{data.path / name}: utterance {utt}: {exc}")
            if missing:
                fail(f"{data.path / name}: utterance {utt}: audio file not found: {missing[0]}")
    problems = header_problems(data.path, data.wav, {s: data.source(s) for s in data.sources}, utts)
    if problems:
        fail(problems[0] + (f" (and {len(problems) - 1} more problem(s) of this kind)" if len(problems) > 1 else ""))


def prepare(data, outdir, conf, utts, overwrite=False):
    """True if the dump is complete and of the data dir as it is (nothing to do); else make
    ``outdir`` ready for computing it (claimed, with the record of its inputs) and return False.
    A stale dump of sepkit's (same data dir, settings and utterances; other audio) is recomputed in
    place; any other finished dump, or a folder sepkit did not make, is refused unless
    ``overwrite``, which moves it aside; of an unfinished one only sepkit's files are removed."""
    if (Path(outdir) / "wav.scp").exists():
        fail(f"{outdir}: has a wav.scp, it looks like a data dir; give a separate dump dir")
    inputs = inputs_of(data)
    state, reason = dump_state(outdir, conf, data.sources, utts, data.path, inputs)
    if state == "done" and not overwrite:
        return True
    if state not in ("done", "absent", "new", "stale") and not overwrite:
        fail(f"{reason}; not replacing it without --overwrite (which moves it aside to {outdir}.old.<time>), "
             "or use another dump dir")
    check_audio_files(data, utts)
    if state == "stale" and not overwrite:
        logger.warning("%s: recomputing them", reason)
        clear_parts(outdir, data.sources)
    elif state == "absent":
        clear_parts(outdir, data.sources)
    elif state != "new":
        old = move_aside(outdir, repoint=state != "foreign")
        logger.info("%s: --overwrite: moved %s aside to %s%s (remove it when no longer needed)", outdir,
                    "the folder" if state == "foreign" else "the dump there", old,
                    "" if state == "done" else f" ({reason})")
    Path(outdir).mkdir(parents=True, exist_ok=True)
    _write(write_record, outdir, data.path, inputs)
    return False


def _write(fn, *args):
    """``fn(*args)``, with a failed write (a full disk, no permission) as one line."""
    try:
        return fn(*args)
    except OSError as exc:
        fail(f"{exc.filename or args[0]}: cannot write ({exc.strerror or exc})")


def merge_parts(data, outdir, names, conf, utts):
    """Join the part files ``names`` into the dump's scp files, ``sources`` and ``feat_conf.yaml``."""
    import yaml

    from sepkit.audio import atomic_path
    from sepkit.data.dataset import DumpError, read_dump_scp_values
    from sepkit.data.datadir import write_scp

    outdir = Path(outdir)
    record = read_record(outdir)
    if record is None:
        fail(f"{outdir}: no {RECORD} (not prepared by --prepare, or not sepkit's); nothing merged")
    if record.get("inputs") != inputs_of(data):
        fail(f"{data.path}: its scp files or audio changed while the features were computed; run the stage again")
    merged = {}
    streams = dump_streams(data.sources, conf)
    for prefix in streams + ["utt2num_frames"]:
        table = {}
        for name in names:
            try:
                if prefix == "utt2num_frames":
                    part = read_dump_scp_values(outdir / f"utt2num_frames.{name}")
                else:
                    part = {u: f"{a}:{o}" for u, (a, o) in read_dump_scp(part_paths(outdir, prefix, name)[1]).items()}
            except DumpError as exc:
                fail(f"{exc} (did job {name} fail? see {outdir / 'log'})")
            dup = set(part) & set(table)
            if dup:
                fail(f"utterance {sorted(dup)[0]} is in more than one part ({', '.join(names)})")
            table.update(part)
        if set(table) != set(utts):
            missing = sorted(set(utts) - set(table))
            fail(f"{outdir}: parts {', '.join(names)} lack {len(missing)} utterance(s) of {prefix} "
                 f"(e.g. {(missing or sorted(set(table) - set(utts)))[0]})")
        merged[prefix] = table
    def write_text(path, text):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)

    for prefix in streams[1:]:
        _write(write_scp, outdir / f"{prefix}.scp", merged[prefix])
    _write(write_scp, outdir / "utt2num_frames", merged["utt2num_frames"])
    _write(write_text, outdir / "sources", "".join(f"{s}\n" for s in data.sources))
    _write(write_text, outdir / "feat_conf.yaml", yaml.safe_dump(conf.to_dict(), sort_keys=False))
    (outdir / "cmvn.ark").unlink(missing_ok=True)  # stats of older features would be wrong
    _write(write_scp, outdir / "mix.scp", merged[MIX])  # last: marks the dump as finished
    logger.info("%s: dump of %d utterances (%d frames)", outdir, len(utts), sum(merged["utt2num_frames"].values()))


def get_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sepkit.bin.compute_feats", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--feat-conf", required=True, help="YAML file of FeatureConfig keys")
    parser.add_argument("--utt-list", help="only these utterances (first field of each line)")
    parser.add_argument("--device", default="cpu", help="torch device of the analysis")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (one per job, Kaldi style)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--ark-name", help="job mode: write part files <prefix>.ARK_NAME.{ark,scp} only")
    mode.add_argument("--prepare", action="store_true",
                      help=f"exit 0 if OUTDIR is a complete dump of DATADIR, else make it ready and exit {NOT_DONE}")
    mode.add_argument("--merge", metavar="NAMES", help="comma-separated part names to join into the dump")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute a finished dump (of these or other settings or utterances): "
                             "the old one is moved aside to OUTDIR.old.<time>")
    parser.add_argument("datadir", help="data dir (wav.scp, sources, <source>.scp)")
    parser.add_argument("outdir", help="dump dir")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(max(1, args.num_threads))
    conf = load_feat_conf(args.feat_conf)
    data = open_data_dir(args.datadir)
    utts = read_utt_list(args.utt_list, data) if args.utt_list else data.utts
    if args.ark_name:
        if "/" in args.ark_name or args.ark_name.startswith("."):
            fail(f"--ark-name {args.ark_name!r}: a plain file name part is expected")
        compute_part(data, args.outdir, args.ark_name, utts, conf, args.device)
        return 0
    if args.merge:
        names = [n for n in args.merge.split(",") if n]
        merge_parts(data, args.outdir, names, conf, utts)
        return 0
    done = prepare(data, args.outdir, conf, utts, overwrite=args.overwrite)
    if args.prepare:
        if done:
            logger.info("%s: complete dump of %s, nothing to do", args.outdir, args.datadir)
        return 0 if done else NOT_DONE
    if done:
        logger.info("%s: already done, skipping (--overwrite to recompute)", args.outdir)
        return 0
    compute_part(data, args.outdir, "feats", utts, conf, args.device)
    merge_parts(data, args.outdir, ["feats"], conf, utts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
