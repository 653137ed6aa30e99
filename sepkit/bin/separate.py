"""Separate audio files into the model's sources (one file each) with a trained or exported model.

Usage::

    sepkit-separate --model MODEL --outdir OUT [options] FILE [FILE ...]
    python -m sepkit.bin.separate --model exp/chimera --outdir sep --head dc song.flac

MODEL is an ``exp/<tag>`` directory or a file written by ``sepkit-export`` (or its ``.onnx`` export,
run by onnxruntime: ``--backend``, ``--onnx``, docs/onnx.md). Each FILE (wav, flac,
anything the installed libsndfile decodes; any sample rate, channel count and length) gives
``OUT/<FILE name without extension>/<source>.wav`` (``vocals.wav``, ``accompaniment.wav``; a 4-stem
model: ``vocals``, ``drums``, ``bass``, ``other``) at the input's sample rate, channel count and length
(stereo: masks estimated on the mono downmix, applied to each channel), 32-bit float WAV unless
``--subtype``. The masks are estimated at the model's rate (16 kHz); with ``--band full`` (the default)
they are applied to the input's own STFT at its rate, so the stems of a 44.1 kHz song keep its bandwidth
(:mod:`sepkit.fullband`: above the model's Nyquist frequency each source's mask is its mean over the
model's top octave); ``--band model`` is the paper's path (input resampled to the model's rate,
estimates back: nothing above 8 kHz). ``--residual`` makes the last source the mixture minus the others
(any number of sources; the outputs sum to the input).

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
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from sepkit.audio import AudioError, atomic_path, path_problem, umask_mkdtemp
from sepkit.names import check_names

PROG = "sepkit-separate"
logger = logging.getLogger("sepkit.bin.separate")


class FileError(Exception):
    """One input that failed; the message names the file and the problem."""


def get_parser():
    from sepkit.separate import DC_MEMORY_MB, DC_NAMINGS, DEFAULT_BATCH, DEFAULT_OVERLAP

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files to separate")
    p.add_argument("--model", required=True, help="exported model file, exp/<tag> or hub folder, or hub id "
                                                   "owner/name[@revision] (huggingface_hub; docs/hub.md)")
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
                   help="the last source = mixture minus the others, at the input's rate (any number of "
                        "sources): the outputs sum to the input")
    p.add_argument("--band", choices=["full", "model"], default="full",
                   help="full: masks applied to the input's own STFT at its rate, stems keep its bandwidth "
                        "(sepkit.fullband); model: masked at the model's rate and resampled back, nothing above "
                        "its Nyquist frequency (full)")
    p.add_argument("--misi", type=int, default=0, metavar="ITERS",
                   help="MISI phase reconstruction with this many iterations (not with --residual); 0 = the "
                        "mixture's phase, as the paper (0)")
    p.add_argument("--dc-time-constant", type=float, default=None, metavar="SECONDS",
                   help="causal models' DC head: time constant of the persistent cluster centres' moving average "
                        "(docs/online.md; default: sepkit.engine.DC_TIME_CONSTANT)")
    p.add_argument("--dc-naming", choices=list(DC_NAMINGS), default=None,
                   help="DC head: how k-means clusters are named: mi (the model's MI head, best overlap, one source "
                        "per cluster), centers (the model file's dc_centers, learnt at training), lowfreq (the "
                        "paper's < 200 Hz rule, vocals/accompaniment); default: mi when the model has an MI head, "
                        "else centers (else lowfreq without dc_centers)")
    p.add_argument("--subtype", default="FLOAT", help="soundfile subtype of the outputs: FLOAT, PCM_16, PCM_24 (FLOAT)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default=None,
                   help="what runs the network (everything else is the same): torch, or onnxruntime with an ONNX "
                        "file of sepkit-export --onnx (float32, CPU); default: onnxruntime when --model is a .onnx "
                        "file or --onnx is given, else torch (docs/onnx.md)")
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="ONNX file of --model's network for --backend onnxruntime; refused unless exported from "
                        "the model's settings")
    p.add_argument("--num-threads", type=int, default=0,
                   help="torch CPU threads (and onnxruntime intra-op threads); 0 = the library's default (0)")
    p.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=None,
                   help="read ahead and reconstruct + write behind in two worker threads while the network runs "
                        "(sepkit.pipeline: the same outputs, less wall time on a second idle core); --no-pipeline: "
                        "all in one thread; default: on while the torch threads leave a core free")
    p.add_argument("--overwrite", action="store_true", help="replace existing output directories")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first file that fails")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def error(msg):
    from sepkit.model_io import one_line

    print(f"{PROG}: error: {one_line(msg, limit=2000)}", file=sys.stderr, flush=True)


class Stopped(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so the temporary outputs of the file at hand are removed."""


def _stop(signum, frame):
    raise Stopped(signum)


def _catch_stop_signals():
    """Turn SIGTERM/SIGHUP into :class:`Stopped` (where they are not ignored, e.g. under nohup); returns the old handlers."""
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            old[sig] = signal.signal(sig, _stop)
    return old


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


MANIFEST = ".sepkit-separate.json"  # in every output folder: what this tool wrote there (and may replace)
_TEMP = re.compile(r"\.(?P<name>.+)\.sepkit-(?P<pid>\d+)\.(?:[^./]+\.tmp|old)\Z")  # our hidden work folders


def ownership_problem(dest):
    """Why ``--overwrite`` may not replace ``dest``, or ``None`` when it is an output folder of this tool.

    It is one when it is a real directory holding :data:`MANIFEST` and nothing but the files that
    the manifest lists: a folder of the user's (the input's own folder with ``--outdir .``), a
    file, a link, or an output folder where the user has put files of their own is never replaced.
    """
    if dest.is_symlink() or not dest.is_dir():
        return "is not a folder that sepkit-separate made (a file or a link)"
    try:
        listed = json.loads((dest / MANIFEST).read_text())["files"]
        check_names([Path(f).stem for f in listed], dest / MANIFEST, "output")
        if not all(isinstance(f, str) and f.endswith((".wav", ".raw")) for f in listed):  # .raw: sepkit-stream
            raise ValueError
    except FileNotFoundError:
        return f"was not made by sepkit-separate (no {MANIFEST} in it)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"has an unreadable {MANIFEST}"
    others = sorted(set(os.listdir(dest)) - set(listed) - {MANIFEST})
    if others:
        return f"holds files that sepkit-separate did not write ({', '.join(others[:3])}{', ...' if others[3:] else ''})"
    return None


def remove_stale_temporaries(outdir):
    """Remove the hidden work folders that killed runs left in ``outdir`` (their process no longer exists).

    A SIGKILL (or a power cut) cannot be caught: the next run in the same ``--outdir`` cleans up.
    Only folders named by this tool whose process is gone and that hold nothing but its outputs go.
    """
    try:
        entries = os.listdir(outdir)
    except OSError:
        return
    for entry in entries:
        m = _TEMP.match(entry)
        path = outdir / entry
        if m is None or path.is_symlink() or not path.is_dir() or _alive(int(m["pid"])):
            continue
        files = os.listdir(path)
        if all(f == MANIFEST or f.endswith((".wav", ".raw")) or f.startswith(".") and f.endswith(".tmp") for f in files):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed %s, left by an interrupted run (process %s)", path, m["pid"])


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plan_outputs(files, outdir, overwrite):
    """``[(input, output dir or FileError)]``; outputs named after the input without its extension."""
    seen, plan = {}, []
    for f in files:
        name = Path(f).stem or Path(f).name
        dest = outdir / name
        if name in (".", ".."):  # "..wav": the output folder would be OUT itself or its parent
            plan.append((f, FileError(f"{f}: its name without the extension is {name!r}, which cannot name an "
                                      "output folder; rename the file")))
            continue
        if name in seen:
            plan.append((f, FileError(f"{f}: output {dest} would also be written by {seen[name]}; rename one")))
            continue
        seen[name] = f
        problem = existing_output_problem(dest, overwrite)
        plan.append((f, FileError(f"{f}: output {problem}") if problem else dest))
    return plan


def existing_output_problem(dest, overwrite):
    """``None`` when ``dest`` may be written (absent, or ours with ``overwrite``), else why not (naming it)."""
    if not (dest.exists() or dest.is_symlink()):
        return None
    if not overwrite:
        return f"{dest} exists (use --overwrite to replace it)"
    problem = ownership_problem(dest)
    if problem is not None:
        return (f"{dest} {problem}; --overwrite replaces only sepkit-separate's own outputs, so nothing was "
                "changed (move it, or choose another --outdir)")
    return None


def write_outputs(dest, write, overwrite):
    """``write(tmp)`` writes the outputs into a temporary directory renamed onto ``dest``: complete or nothing.

    ``write`` returns ``(result, [file names written])``; the names go into :data:`MANIFEST`, which
    marks the folder as this tool's. ``dest`` (and the output directory, made here on the first
    output, removed again if that output fails) follow the umask. A ``dest`` already there is
    replaced only when ``overwrite`` and it is this tool's (:func:`ownership_problem`); what it held
    is removed file by file, never a whole tree. Returns what ``write`` returns first.
    """
    made = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = umask_mkdtemp(prefix=f".{dest.name}.sepkit-{os.getpid()}.", suffix=".tmp", dir=dest.parent)
    old = None
    try:
        try:
            result, names = write(tmp)
        except AudioError as exc:  # name the output, not the hidden temporary directory
            raise AudioError(str(exc).replace(str(tmp), str(dest))) from None
        with atomic_path(tmp / MANIFEST) as mtmp:
            Path(mtmp).write_text(json.dumps({"written_by": PROG, "files": sorted(names)}, indent=1) + "\n")
        problem = existing_output_problem(dest, overwrite)  # again: the folder may have changed meanwhile
        if problem is not None:
            raise FileError(problem)
        if dest.exists() or dest.is_symlink():
            old = dest.with_name(f".{dest.name}.sepkit-{os.getpid()}.old")
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
        remove_own_outputs(old)
    return result


def remove_own_outputs(folder):
    """Remove the files that :data:`MANIFEST` lists, the manifest, then the folder (if nothing else is left)."""
    listed = json.loads((folder / MANIFEST).read_text())["files"]
    for f in [*listed, MANIFEST]:
        try:
            (folder / f).unlink()
        except FileNotFoundError:
            pass
    try:
        folder.rmdir()
    except OSError:
        logger.warning("%s: left in place (it holds files this tool did not write)", folder)


def separate_file(sep, path, dest, args):
    from sepkit.separate import SeparationError

    def write(tmp):  # streamed, file to file: memory does not grow with the input's length
        outs = {name: tmp / f"{name}.wav" for name in sep.sources}
        return sep.separate_file(path, outs, head=args.head, subtype=args.subtype, pipeline=args.pipeline), \
            [p.name for p in outs.values()]

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

    from sepkit.onnx_backend import is_onnx_path

    onnx_model = is_onnx_path(args.model)
    backend = args.backend or ("onnxruntime" if onnx_model or args.onnx else "torch")
    if backend == "torch" and (onnx_model or args.onnx):
        raise FileError(f"{args.onnx or args.model}: an ONNX file runs with --backend onnxruntime, not torch")
    if onnx_model and args.onnx:
        raise FileError(f"{args.onnx}: --onnx goes with a model file or folder, and --model {args.model} is an "
                        "ONNX file already")
    backend_opts = {} if backend == "torch" else {"backend": backend, "onnx_path": args.onnx,
                                                   "num_threads": args.num_threads}
    if onnx_model:
        backend_opts.pop("onnx_path")
    try:
        sep = Separator.from_pretrained(args.model, device=args.device, dtype=args.dtype, segment_frames=args.segment,
                                        overlap=args.overlap, batch_size=args.batch_size,
                                        dc_memory_mb=args.dc_memory_mb, residual=args.residual, band=args.band,
                                        progress=not args.no_progress, misi_iters=args.misi, **backend_opts,
                                        dc_naming=getattr(args, "dc_naming", None),
                                        **({} if getattr(args, "dc_time_constant", None) is None
                                           else {"dc_time_constant": args.dc_time_constant}))
    except (ModelFileError, SeparationError) as exc:
        raise FileError(str(exc)) from None
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # weights that do not fit the settings, bad device
        raise FileError(f"{args.model}: cannot build the model ({str(exc).strip().splitlines()[0]})") from None
    if args.head is not None and args.head not in sep.heads:
        raise FileError(f"{args.model}: the model has no trained {args.head} head (heads: {' '.join(sep.heads)})")
    return sep


def main(argv=None):
    try:
        old = _catch_stop_signals()
    except ValueError:  # not the main thread: signals stay as they are
        old = {}
    try:
        return _main(argv)
    except Stopped as exc:
        sig = signal.Signals(exc.args[0])
        error(f"stopped by {sig.name}; the file being separated has no output, earlier files are complete")
        return 128 + sig.value
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _main(argv=None):
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
    remove_stale_temporaries(outdir)
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
