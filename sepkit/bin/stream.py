"""Separate a stream live with a causal model: blocks in, separated blocks out, compute and latency reported.

Usage::

    sepkit-stream --model causal.pt --outdir OUT song.flac                  # a file, read as a stream
    arecord -f S16_LE -r 16000 -c 1 | sepkit-stream --model causal.pt --outdir OUT \\
        --raw-rate 16000 --raw-channels 1 --raw-format s16le -              # raw PCM on stdin

The input is read ``--block-ms`` at a time and each block goes through
:class:`sepkit.online.OnlineSeparator` (a model whose body is causal, ``body: lstm``; docs/online.md),
which returns as many samples per source as it was given, ``latency_samples`` late. The outputs are
written as they come, with that delay taken out, into ``OUT/<name>/<source>.wav`` (float WAV at the
input's rate and channels; ``<name>``: the input file's name without extension, ``--name`` for stdin,
default ``stdin``), or ``<source>.raw`` in the input's raw format with ``--raw-out``: the same samples as
``sepkit-separate`` gives with that model (to float rounding), written while the input still arrives.

At the end: blocks, audio seconds, compute per block (mean, max), the real-time factor (compute time
over audio time) and the algorithmic latency (docs/online.md), on stderr, or as JSON on stdout with
``--report json`` (with every block's compute time in milliseconds).

Output safety as ``sepkit-separate``: the folder is written under a hidden temporary name and renamed
when the stream ends (nothing is left if it fails or is interrupted); an existing folder is replaced
only with ``--overwrite`` and only when it is one of these tools' outputs. Errors are one line naming
the input (or the model) and the problem, exit status 1 (2 for bad options): a non-causal model,
NaN/inf samples, a truncated raw stream (bytes that are not whole sample frames), unreadable audio.
A live stream ends when its input does (the recorder stops, the pipe closes); Ctrl-C, SIGTERM or SIGHUP
stop the tool without output.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from sepkit.bin.separate import (FileError, _catch_stop_signals, check_outdir, existing_output_problem,
                                 remove_stale_temporaries, write_outputs)

PROG = "sepkit-stream"
logger = logging.getLogger("sepkit.bin.stream")
RAW_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("input", metavar="INPUT", help="audio file, or - for raw PCM on stdin (needs --raw-*)")
    p.add_argument("--model", required=True, help="a causal model: model file, exp/<tag> or hub folder, or hub id")
    p.add_argument("--outdir", required=True, help="output directory (OUT/<name>/<source>.wav)")
    p.add_argument("--name", default=None, help="output folder name (default: the input's name, stdin for -)")
    p.add_argument("--head", choices=["mi", "dc"], default=None, help="mask-inference or deep-clustering head "
                   "(persistent centres, docs/online.md); default: mi when the model has it")
    p.add_argument("--dc-time-constant", type=float, default=None, metavar="SECONDS",
                   help="DC head: time constant of the persistent cluster centres' moving average (docs/online.md; "
                        "default: sepkit.engine.DC_TIME_CONSTANT)")
    p.add_argument("--block-ms", type=float, default=20.0, help="milliseconds of input per block (20)")
    p.add_argument("--raw-rate", type=int, default=None, metavar="HZ", help="sample rate of raw PCM input")
    p.add_argument("--raw-channels", type=int, default=None, metavar="C", help="channels of raw PCM input")
    p.add_argument("--raw-format", choices=sorted(RAW_FORMATS), default=None,
                   help="raw PCM sample format: interleaved little-endian int16 or float32")
    p.add_argument("--raw-out", action="store_true",
                   help="write <source>.raw in the raw input's format (raw input only) instead of float WAV")
    p.add_argument("--residual", action="store_true", help="the last source is the input minus the others")
    p.add_argument("--device", default="cpu", help="torch device (cpu)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="float32",
                   help="network precision (float32: the outputs equal sepkit-separate's)")
    p.add_argument("--num-threads", type=int, default=1, help="torch CPU threads; 0 = torch's default (1: live "
                                                              "beside other work on one core)")
    p.add_argument("--report", choices=["text", "json"], default="text",
                   help="summary on stderr (text) or as JSON on stdout, with every block's compute time (text)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder of these tools")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def error(msg):
    from sepkit.model_io import one_line

    print(f"{PROG}: error: {one_line(str(msg), limit=2000)}", file=sys.stderr, flush=True)


def raw_blocks(fh, channels, dtype, frames, label):
    """Blocks ``(channels, n)`` float32 of interleaved raw PCM read from ``fh``, ``frames`` per block."""
    frame_bytes = channels * dtype.itemsize
    scale = 1.0 / 32768 if dtype.kind == "i" else 1.0
    while True:
        want, buf = frames * frame_bytes, b""
        while len(buf) < want:  # a pipe returns what is there: read until the block is full or the stream ends
            chunk = fh.read(want - len(buf))
            if not chunk:
                break
            buf += chunk
        if len(buf) % frame_bytes:
            raise FileError(f"{label}: the raw stream ends with {len(buf) % frame_bytes} bytes that are not a whole "
                            f"sample frame ({channels} channel(s) x {dtype.itemsize} bytes)")
        if buf:
            yield (np.frombuffer(buf, dtype).astype(np.float32) * scale).reshape(-1, channels).T
        if len(buf) < want:
            return


class _Writers:
    """One output per source in ``folder``, written block by block, with the first ``skip`` samples left out."""

    def __init__(self, folder, sources, rate, channels, skip, raw_dtype):
        import soundfile as sf

        self.skip, self.raw_dtype, self.files, self.names = skip, raw_dtype, [], []
        for s in sources:
            name = f"{s}.raw" if raw_dtype is not None else f"{s}.wav"
            self.names.append(name)
            self.files.append(open(folder / name, "wb") if raw_dtype is not None else
                              sf.SoundFile(folder / name, "w", rate, channels, subtype="FLOAT", format="WAV"))

    def write(self, out):
        n = next(iter(out.values())).shape[-1]
        cut = min(self.skip, n)
        self.skip -= cut
        for f, y in zip(self.files, out.values()):
            y = y[..., cut:]
            if self.raw_dtype is None:
                f.write(y.T)
            elif self.raw_dtype.kind == "i":
                f.write((np.clip(np.round(y.T * 32768), -32768, 32767)).astype(self.raw_dtype).tobytes())
            else:
                f.write(y.T.astype(self.raw_dtype).tobytes())

    def close(self):
        for f in self.files:
            f.close()


def stream(sep, blocks, rate, channels, folder, args, raw_dtype):
    """Every block through an online separator into the writers; returns the report's dict."""
    live = sep.online(rate, channels, args.head)
    writers = _Writers(folder, sep.sources, rate, channels, live.latency_samples, raw_dtype)
    t0 = time.perf_counter()
    try:
        for block in blocks:
            writers.write(live.process(block))
        writers.write(live.flush())
    finally:
        writers.close()
    wall = time.perf_counter() - t0
    ms = [1000 * t for t in live.block_seconds]
    report = {"input": args.input, "model": args.model, "head": live.head, "sample_rate": rate, "channels": channels,
              "samples": live.n_in, "seconds": live.n_in / rate, "block_ms": args.block_ms, "blocks": len(ms) - 1,
              "latency_samples": live.latency_samples, "latency_ms": 1000 * live.latency_seconds,
              "compute_s": sum(ms) / 1000, "rtf": live.rtf, "wall_s": wall,
              "block_compute_ms": {"mean": float(np.mean(ms)), "max": float(np.max(ms)),
                                   "p99": float(np.percentile(ms, 99))},
              "per_block_ms": [round(t, 4) for t in ms[:-1]], "flush_ms": round(ms[-1], 4),
              "outputs": writers.names}
    return report, writers.names


def _input(args):
    """``(blocks, rate, channels, label, raw dtype or None)``; raw needs all three --raw-* options."""
    raw = [args.raw_rate, args.raw_channels, args.raw_format]
    label = "stdin" if args.input == "-" else args.input
    if args.input == "-" or any(v is not None for v in raw):
        if any(v is None for v in raw):
            raise FileError(f"{label}: raw PCM needs --raw-rate, --raw-channels and --raw-format")
        if args.raw_rate <= 0 or args.raw_channels <= 0:
            raise FileError(f"{label}: --raw-rate and --raw-channels must be positive")
        dtype = RAW_FORMATS[args.raw_format]
        frames = max(1, int(round(args.block_ms * args.raw_rate / 1000)))
        fh = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
        return raw_blocks(fh, args.raw_channels, dtype, frames, label), args.raw_rate, args.raw_channels, label, dtype
    if args.raw_out:
        raise FileError(f"{label}: --raw-out writes the raw input's format; give --raw-* with raw input")
    from sepkit.blockwise import AudioReader

    reader = AudioReader(args.input)
    frames = max(1, int(round(args.block_ms * reader.sample_rate / 1000)))
    return reader.blocks(frames), reader.sample_rate, reader.channels, label, None


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format=f"{PROG}: %(message)s")
    if not args.block_ms > 0:
        error(f"--block-ms must be positive, got {args.block_ms}")
        return 2
    try:
        old = _catch_stop_signals()
    except ValueError:  # not the main thread
        old = {}
    try:
        return _run(args)
    except BaseException as exc:
        from sepkit.bin.separate import Stopped

        if isinstance(exc, (Stopped, KeyboardInterrupt)):  # write_outputs has removed the partial folder
            sig = exc.args[0] if isinstance(exc, Stopped) else 2
            error(f"{'stdin' if args.input == '-' else args.input}: stopped by signal {sig}; no output was left "
                  "(a live stream ends when its input ends: close the pipe, e.g. stop the recorder)")
            return 128 + sig
        raise
    finally:
        import signal

        for sig, handler in old.items():
            signal.signal(sig, handler)


def _run(args):
    import torch

    from sepkit.audio import AudioError
    from sepkit.bin.separate import load_separator
    from sepkit.errors import SeparationError

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    outdir = Path(args.outdir)
    label = "stdin" if args.input == "-" else args.input
    name = args.name or ("stdin" if args.input == "-" else Path(args.input).stem)
    try:
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise FileError(f"{label}: {name!r} cannot name an output folder (--name)")
        check_outdir(outdir)
        sep = load_separator(argparse.Namespace(
            model=args.model, device=args.device, dtype=args.dtype, segment=None, overlap=0.0, batch_size=1,
            dc_memory_mb=0, residual=args.residual, no_progress=True, misi=0, backend="torch", onnx=None,
            num_threads=args.num_threads, head=args.head, dc_time_constant=args.dc_time_constant,
            band="model"))  # online keeps the model-rate path (its latency); band is the offline option
        try:
            sep.online(sep.sample_rate, 1, args.head)  # refused now (a BLSTM, no DC centres), before any output
        except SeparationError as exc:
            raise FileError(f"{args.model}: {exc}") from None
        remove_stale_temporaries(outdir)
        dest = outdir / name
        problem = existing_output_problem(dest, args.overwrite)
        if problem:
            raise FileError(f"{label}: output {problem}")
        blocks, rate, channels, label, raw_dtype = _input(args)
        report = write_outputs(dest, lambda tmp: stream(sep, blocks, rate, channels, Path(tmp), args,
                                                           raw_dtype if args.raw_out else None), args.overwrite)
    except (FileError, AudioError) as exc:
        error(exc)
        return 1
    except SeparationError as exc:
        error(f"{label}: {exc}")
        return 1
    except OSError as exc:
        error(f"{label}: cannot write {outdir / name} ({exc.strerror or exc})")
        return 1
    report["outdir"] = str(dest)
    if args.report == "json":
        print(json.dumps(report, indent=1))
    else:
        logger.info("%s: %.2f s, %d ch, %d Hz, %d blocks of %g ms -> %s", label, report["seconds"], channels, rate,
                    report["blocks"], args.block_ms, dest)
        logger.info("compute per block: mean %.3f ms, max %.3f ms; real-time factor %.4f; algorithmic latency "
                    "%d samples = %.1f ms", report["block_compute_ms"]["mean"], report["block_compute_ms"]["max"],
                    report["rtf"], report["latency_samples"], report["latency_ms"])
    return 0


def console_main():
    sys.exit(main())


if __name__ == "__main__":
    console_main()
