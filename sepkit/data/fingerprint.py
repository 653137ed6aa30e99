"""Fingerprints of what a stage read (DESIGN.md section 6: a stage is done when its inputs are what
they were, not when its outputs exist).

A fingerprint is a SHA-1 over small text files (hashed by content) and the size and modification
time (ns) of the big files they name (audio, arks), so it changes when a data dir is remade with
other audio under the same names (a remix with another seed), when audio is rewritten in place,
or when a dump is recomputed, while it stays the same for a data dir prepared again from the same
files. It costs one ``stat`` per file, not a read.

Command line (for the stage scripts)::

    python -m sepkit.data.fingerprint data [--wav-only] DATADIR   # print the fingerprint of a data dir
    python -m sepkit.data.fingerprint dump DUMPDIR                # ... of a feature dump
    python -m sepkit.data.fingerprint train-inputs OUTDIR DUMP...  # utils/train.sh's check, below

``train-inputs`` keeps ``OUTDIR/train_inputs``, the fingerprints of the dumps a training run read.
A run that has started (checkpoints or model.pt in OUTDIR) and whose dumps are no longer those is
refused with one line (exit 1): resuming it, or taking its model for finished, would give a model
of other features. A fresh run records its dumps (exit 0).
"""
import hashlib
import os
import sys
from pathlib import Path

RECORD = "train_inputs"  # file of OUTDIR that utils/train.sh keeps


def _stat_line(path):
    try:
        st = os.stat(path)
    except OSError:
        return f"{path} missing\n"
    return f"{path} {st.st_size} {st.st_mtime_ns}\n"


def data_fingerprint(path, wav_only=False):
    """Fingerprint of a data dir: its ``wav.scp`` (and, unless ``wav_only``, ``sources`` and every
    ``<source>.scp``) line by line, with the size and time of each audio file they name.
    ``wav_only`` gives the value that utils/separate.sh has recorded since it began to."""
    from sepkit.data.audiospec import spec_files
    from sepkit.data.datadir import DataDir

    data, digest = DataDir(path), hashlib.sha1()
    tables = [data.wav] if wav_only else [data.wav] + [data.source(s) for s in data.sources]
    if not wav_only:
        digest.update(("sources " + " ".join(data.sources) + "\n").encode())
    for table in tables:
        files = {utt: spec_files(table[utt]) for utt in data.utts}  # a bad spec fails before any hashing
        for utt in data.utts:
            digest.update(f"{utt} {table[utt]}\n".encode())
            for file in files[utt]:
                digest.update(_stat_line(file).encode())
    return digest.hexdigest()


def dump_fingerprint(path):
    """Fingerprint of a feature dump: the contents of its top-level files but the logs (scp files,
    ``utt2num_frames``, ``sources``, ``feat_conf.yaml``, ``cmvn.ark``) and the size and time of the
    arks its scp files name."""
    from sepkit.data.dataset import DumpError, read_dump_scp

    path, digest = Path(path), hashlib.sha1()
    if not (path / "mix.scp").is_file():
        raise DumpError(f"{path}: not a feature dump (no mix.scp)")
    arks = set()
    for name in sorted(["utt2num_frames", "sources", "feat_conf.yaml", "cmvn.ark"]
                       + [p.name for p in path.glob("*.scp")]):
        file = path / name
        if not file.is_file():
            digest.update(f"{name} missing\n".encode())
            continue
        digest.update(f"{name} {hashlib.sha1(file.read_bytes()).hexdigest()}\n".encode())
        if name.endswith(".scp"):
            arks.update(ark for ark, _ in read_dump_scp(file).values())
    for ark in sorted(arks):
        digest.update(_stat_line(ark).encode())
    return digest.hexdigest()


def check_training_inputs(outdir, dumps):
    """``utils/train.sh``'s check (see the module docstring); returns a message or raises SystemExit."""
    outdir = Path(outdir)
    record = outdir / RECORD
    now = "".join(f"{Path(d).resolve()} {dump_fingerprint(d)}\n" for d in dumps)
    started = (outdir / "model.pt").exists() or any((outdir / "checkpoints").glob("*.pt"))
    old = record.read_text() if record.is_file() else None
    if old == now:
        return f"{outdir}: same features as before ({record})"
    if started and old is not None:
        changed = [line.split()[0] for line in now.splitlines() if line not in old.splitlines()]
        raise SystemExit(f"train.sh: ERROR: {outdir}: its checkpoints/model were trained on other features "
                         f"({', '.join(changed) or 'the dumps'} changed since, see {record}); retrain it with "
                         "--overwrite true or use another --outdir/--tag")
    from sepkit.audio import atomic_path

    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(record) as tmp:
        Path(tmp).write_text(now)
    if started:  # a run from before these records: what it read is unknown; from now on it is kept
        return f"{outdir}: no record of the features it was trained on (made before {RECORD} existed); recorded now"
    return f"{outdir}: recorded its features in {record}"


def main(argv=None):
    from sepkit.audio import AudioError
    from sepkit.data.datadir import DataDirError
    from sepkit.data.dataset import DumpError

    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m sepkit.data.fingerprint {data [--wav-only] DATADIR | dump DUMPDIR | train-inputs OUTDIR DUMP...}"
    if not args or args[0] not in ("data", "dump", "train-inputs"):
        raise SystemExit(usage)
    verb, rest = args[0], args[1:]
    try:
        if verb == "data":
            wav_only = "--wav-only" in rest
            rest = [a for a in rest if a != "--wav-only"]
            if len(rest) != 1:
                raise SystemExit(usage)
            print(data_fingerprint(rest[0], wav_only))
        elif verb == "dump":
            if len(rest) != 1:
                raise SystemExit(usage)
            print(dump_fingerprint(rest[0]))
        else:
            if len(rest) < 2:
                raise SystemExit(usage)
            print(check_training_inputs(rest[0], rest[1:]), file=sys.stderr)
    except (DataDirError, DumpError, AudioError) as exc:
        raise SystemExit(f"fingerprint: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"fingerprint: {exc.filename}: {exc.strerror}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
