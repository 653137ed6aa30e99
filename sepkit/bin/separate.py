"""Separate audio files into vocals and accompaniment with a trained or exported model.

Usage::

    sepkit-separate --model MODEL --outdir OUT [options] FILE [FILE ...]
    python -m sepkit.bin.separate --model exp/chimera --outdir sep --head dc song.flac

MODEL is an ``exp/<tag>`` directory or a file written by ``sepkit-export``. Each FILE (wav, flac,
anything the installed libsndfile decodes; any sample rate, channel count and length) gives
``OUT/<FILE name without extension>/<source>.wav`` (``vocals.wav``, ``accompaniment.wav``) at the
input's sample rate, channel count and length (stereo: masks estimated on the mono downmix, applied
to each channel), 32-bit float WAV unless ``--subtype``. As in the paper, inputs are resampled to
the model's rate (16 kHz) and the estimates back, so they hold nothing above its Nyquist frequency;
``--residual`` makes the accompaniment the input minus the vocals instead (full band, and the two
outputs sum to the input).

Files are read, separated and written in blocks (``Separator.separate_file``, :mod:`sepkit.stream`):
memory does not grow with their length (bench/bench_memory.py: a 3-hour stereo file in under 1.5 GB).

A file that cannot be separated (missing, a symbolic link loop, empty, truncated, not audio,
NaN/inf samples, zero channels, output not writable, output exists without ``--overwrite``) gets
one line on stderr naming it and the problem and leaves no output; the other files are still
separated and the exit status is 1 at the end (at once with ``--fail-fast``). A model file that
cannot be used (unloadable, settings that cannot work, NaN/inf weights) is one line naming it and
the setting. Each output directory appears complete or not at all (both files are written into a
hidden temporary directory that is then renamed); OUT is made only when the first output is
written (no empty folder after an error), and outputs follow the umask. Outputs already there, of
an earlier run or of the user, are never replaced without ``--overwrite``.
"""
import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from sepkit.audio import AudioError, path_problem, umask_mkdtemp

PROG = "sepkit-separate"
logger = logging.getLogger("sepkit.bin.separate")


class FileError(Exception):
    """One input that failed; the message names the file and the problem."""


def get_parser():
    from sepkit.separate import DC_MEMORY_MB, DEFAULT_BATCH, DEFAULT_OVERLAP

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files to separate")
    p.add_argument("--model", required=True, help="exp/<tag> directory or exported model file")
    p.add_argument("--outdir", required=True, help="output directory (OUT/<name>/<source>.wav)")
    p.add_argument("--head", choices=["mi", "dc"], default=None,
                   help="mask-inference or deep-clustering (k-means) head (default: mi when the model has it)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (cpu)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="network precision; auto = bfloat16 on CUDA or CPUs with AMX/avx512_bf16 (auto)")
    p.add_argument("--segment", type=int, default=None, metavar="FRAMES",
                   help="frames per segment (default: the model's training segment length, else 100)")
    p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                   help=f"fraction of a segment shared by neighbours, in [0, 1) ({DEFAULT_OVERLAP})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=f"segments per network call ({DEFAULT_BATCH})")
    p.add_argument("--dc-memory-mb", type=float, default=DC_MEMORY_MB,
                   help=f"in-memory API only (Separator.separate); this tool streams and ignores it ({DC_MEMORY_MB})")
    p.add_argument("--residual", action="store_true",
                   help="accompaniment = input - vocals at the input's rate: keeps the band above the model's "
                        "Nyquist frequency (8 kHz) in the accompaniment; outputs sum to the input")
    p.add_argument("--misi", type=int, default=0, metavar="ITERS",
                   help="MISI phase reconstruction with this many iterations (not with --residual); 0 = the "
                        "mixture's phase, as the paper (0)")
    p.add_argument("--subtype", default="FLOAT", help="soundfile subtype of the outputs: FLOAT, PCM_16, PCM_24 (FLOAT)")
    p.add_argument("--num-threads", type=int, default=0, help="torch CPU threads; 0 = torch's default (0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output directories")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first file that fails")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def error(msg):
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)


def check_outdir(outdir):
    """One-line :class:`FileError` when ``outdir`` cannot be created or written; creates nothing.

    The directory itself is made only when the first output is written, so a run that fails on the
    model or on every input leaves no empty folder behind.
    """
    probe = outdir.absolute()
    while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
        probe = probe.parent  # the nearest existing ancestor (or outdir itself)
    why = path_problem(probe)
    if why is None and not probe.is_dir():
        why = f"{probe} is not a directory"
    elif why is None and not os.access(probe, os.W_OK | os.X_OK):
        why = f"{probe}: permission denied"
    elif why is not None:
        why = f"{probe}: {why}"
    if why is not None:
        raise FileError(f"{outdir}: output directory cannot be written ({why})")


def plan_outputs(files, outdir, overwrite):
    """``[(input, output dir or FileError)]``; outputs named after the input without its extension."""
    seen, plan = {}, []
    for f in files:
        name = Path(f).stem or Path(f).name
        dest = outdir / name
        if name in seen:
            plan.append((f, FileError(f"{f}: output {dest} would also be written by {seen[name]}; rename one")))
            continue
        seen[name] = f
        if (dest.exists() or dest.is_symlink()) and not overwrite:
            plan.append((f, FileError(f"{f}: output {dest} exists (use --overwrite to replace it)")))
            continue
        plan.append((f, dest))
    return plan


def write_outputs(dest, write, overwrite):
    """``write(tmp)`` writes the outputs into a temporary directory renamed onto ``dest``: complete or nothing.

    ``dest`` (and the output directory, made here on the first output, removed again if that output
    fails) follow the umask. Returns what ``write`` returns.
    """
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = umask_mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    old = None
    try:
        try:
            result = write(tmp)
        except AudioError as exc:  # name the output, not the hidden temporary directory
            raise AudioError(str(exc).replace(str(tmp), str(dest))) from None
        if dest.exists() or dest.is_symlink():
            if not overwrite:
                raise FileError(f"{dest}: exists (use --overwrite to replace it)")
            old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
    except BaseException:
        if old is not None and not dest.exists():
            os.rename(old, dest)  # put the previous outputs back
        shutil.rmtree(tmp, ignore_errors=True)
        for d in made:  # the input failed half-way (streamed): no empty output directory either
            try:
                d.rmdir()
            except OSError:
                break
        raise
    if old is not None:
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    return result


def separate_file(sep, path, dest, args):
    from sepkit.separate import SeparationError

    def write(tmp):  # streamed, file to file: memory does not grow with the input's length
        outs = {name: tmp / f"{name}.wav" for name in sep.sources}
        return sep.separate_file(path, outs, head=args.head, subtype=args.subtype)

    t0 = time.perf_counter()
    try:
        sr, channels, n = write_outputs(dest, write, args.overwrite)
    except SeparationError as exc:  # e.g. NaN or infinite samples out of the model
        raise FileError(f"{path}: {exc}") from None
    except OSError as exc:
        raise FileError(f"{path}: cannot write {dest} ({exc.strerror or exc})") from None
    el, dur = time.perf_counter() - t0, n / sr
    logger.info("%s: %.1f s, %d ch, %d Hz -> %s (%.1f s, real-time factor %.3f)", path, dur, channels, sr, dest,
                el, el / dur)


def load_separator(args):
    from sepkit import Separator
    from sepkit.model_io import ModelFileError
    from sepkit.separate import SeparationError

    try:
        sep = Separator.from_pretrained(args.model, device=args.device, dtype=args.dtype, segment_frames=args.segment,
                                        overlap=args.overlap, batch_size=args.batch_size,
                                        dc_memory_mb=args.dc_memory_mb, residual=args.residual,
                                        progress=not args.no_progress, misi_iters=args.misi)
    except (ModelFileError, SeparationError) as exc:
        raise FileError(str(exc)) from None
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # weights that do not fit the settings, bad device
        raise FileError(f"{args.model}: cannot build the model ({str(exc).strip().splitlines()[0]})") from None
    if args.head is not None and args.head not in sep.heads:
        raise FileError(f"{args.model}: the model has no trained {args.head} head (heads: {' '.join(sep.heads)})")
    return sep


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format=f"{PROG}: %(message)s")
    if args.segment is not None and args.segment < 1:
        error(f"--segment must be at least 1 frame, got {args.segment}")
        return 2
    import soundfile as sf
    import torch

    if not sf.check_format("WAV", args.subtype.upper()):
        error(f"--subtype {args.subtype} is not a WAV subtype (FLOAT, PCM_16, PCM_24, ...)")
        return 2

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    outdir = Path(args.outdir)
    try:
        check_outdir(outdir)
        sep = load_separator(args)
    except FileError as exc:
        error(exc)
        return 1
    failed = 0
    for path, dest in plan_outputs(args.files, outdir, args.overwrite):
        try:
            if isinstance(dest, FileError):
                raise dest
            separate_file(sep, path, dest, args)
        except (FileError, AudioError) as exc:
            error(exc)
        except Exception as exc:  # a bug or an exhausted device must not take the other files down
            first = (str(exc).strip().splitlines() or [""])[0]
            error(f"{path}: separation failed ({type(exc).__name__}{': ' + first if first else ''})")
        else:
            continue
        failed += 1
        if args.fail_fast:
            return 1
    if failed:
        logger.warning("%d of %d files failed", failed, len(args.files))
    return 1 if failed else 0


def console_main():
    sys.exit(main())


if __name__ == "__main__":
    console_main()
