"""Separate every mixture of a data dir with a trained model (one job of ``utils/separate.sh``).

Usage::

    # separate (all of DATA's wav.scp, or the part of it in --scp), one wav per source and utt
    python -m sepkit.bin.separate_data --model exp/<tag> --head mi [--scp split/wav.3.scp]
        [--band full|model] [--device cpu] [--num-threads 0] [--overwrite] DATA OUTDIR
    # after all jobs: check every output exists and write OUTDIR's scp files
    python -m sepkit.bin.separate_data --finalize DATA OUTDIR
    # print the heads the model can separate with (e.g. "dc mi"); with DATA, first check that the model
    # separates every source of DATA/sources (else one line naming both, exit 1)
    python -m sepkit.bin.separate_data --print-heads --model exp/<tag> [DATA]

Writes ``OUTDIR/wav/<source>/<utt>.wav`` (float WAV at the mixture's rate and channel count, as
:class:`sepkit.Separator` returns it), each atomically; an utterance whose outputs all exist is
skipped unless ``--overwrite``, so an interrupted job resumes. ``--finalize`` turns OUTDIR into a data
dir of the estimates: ``wav.scp`` (the mixtures, copied from DATA), ``<source>.scp`` (estimates),
``sources`` and ``utt2dur``, which is what ``python -m sepkit.bin.score`` reads.
"""
import argparse
import logging
import sys
from pathlib import Path

from sepkit.audio import AudioError, write_audio
from sepkit.data.datadir import DataDir, DataDirError, load_audio, read_scp

logger = logging.getLogger("sepkit.bin.separate_data")


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.separate_data", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--finalize", action="store_true", help="write OUTDIR's scp files after all jobs")
    mode.add_argument("--print-heads", action="store_true", help="print the model's heads and exit")
    parser.add_argument("--model", help="exp dir or model file")
    parser.add_argument("--head", choices=["mi", "dc"], default="mi", help="head used for the masks (mi)")
    parser.add_argument("--scp", help="separate only these utts (a part of DATA/wav.scp, e.g. from split_scp.py)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--num-threads", type=int, default=0, help="torch CPU threads; 0 = torch's default (0)")
    parser.add_argument("--dtype", default=None,
                        help="float32, bfloat16 or auto (default: the Separator's, auto = bfloat16 where native)")
    parser.add_argument("--segment-frames", type=int, default=None,
                        help="frames per network segment (default: the model's training length)")
    parser.add_argument("--misi-iters", type=int, default=0,
                        help="MISI phase-reconstruction iterations (sepkit.phase); 0 = the mixture's phase (0)")
    parser.add_argument("--dc-time-constant", type=float, default=None,
                        help="causal models' DC head: time constant (s) of the persistent cluster centres' moving "
                             "average (sepkit.engine; default: DC_TIME_CONSTANT)")
    parser.add_argument("--band", choices=["full", "model"], default="full",
                        help="full: masks on the mixture's own STFT at its rate, estimates keep its bandwidth "
                             "(sepkit.fullband); model: at the model's rate, resampled back (full)")
    parser.add_argument("--dc-naming", choices=["mi", "centers", "lowfreq"], default=None,
                        help="DC head: how k-means clusters are named (mi: the model's MI head; centers: the model "
                             "file's dc_centers; lowfreq: < 200 Hz rule); default: mi when the model has an MI head, "
                             "else centers (sepkit.separate.Separator's dc_naming)")
    parser.add_argument("--overwrite", action="store_true", help="redo utts whose outputs exist")
    parser.add_argument("data", nargs="?", help="data dir (wav.scp = mixtures)")
    parser.add_argument("outdir", nargs="?", help="separation dir")
    return parser


def wav_path(outdir, source, utt):
    return Path(outdir) / "wav" / source / f"{utt}.wav"


def _load_separator(model, device, dtype=None, segment_frames=None, misi_iters=0, dc_time_constant=None, band="full",
                    dc_naming=None):
    from sepkit import Separator
    from sepkit.model_io import ModelFileError

    try:
        extra = {} if dc_time_constant is None else {"dc_time_constant": dc_time_constant}
        extra.update({} if dc_naming is None else {"dc_naming": dc_naming})
        return Separator.from_pretrained(model, device=device, dtype=dtype, segment_frames=segment_frames,
                                         misi_iters=misi_iters, band=band, **extra)
    except (ModelFileError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"separate_data: {exc}") from None


def check_sources(sep, model, data):
    """Exit with one line when the data dir asks for a source that the model does not separate."""
    missing = [s for s in data.sources if s not in sep.sources]
    if missing:
        raise SystemExit(f"separate_data: {model}: the model separates {' '.join(sep.sources)}, "
                         f"but {data.path}/sources asks for {' '.join(missing)}")


def separate(args):
    import torch

    data = DataDir(args.data)
    utts = data.utts
    if args.scp:
        part = read_scp(args.scp)
        unknown = [u for u in part if u not in data.wav]
        if unknown:
            raise DataDirError(f"{args.scp}: utterance {unknown[0]!r} is not in {data.path}/wav.scp")
        utts = [u for u in utts if u in part]
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    todo = [u for u in utts if args.overwrite or not all(wav_path(args.outdir, s, u).is_file() for s in data.sources)]
    if len(todo) < len(utts):
        logger.info("%d of %d utterances already separated, skipping them", len(utts) - len(todo), len(utts))
    if not todo:
        return 0
    sep = _load_separator(args.model, args.device, args.dtype, args.segment_frames, args.misi_iters,
                          args.dc_time_constant, args.band,
                          dc_naming=args.dc_naming)
    if args.head not in sep.heads:
        raise SystemExit(f"separate_data: {args.model}: the model has no trained {args.head} head "
                         f"(heads: {' '.join(sep.heads)})")
    check_sources(sep, args.model, data)
    from tqdm import tqdm

    from sepkit.separate import SeparationError

    for utt in tqdm(todo, desc=f"separate ({args.head})", unit="utt", disable=None):
        try:
            wav, sr = load_audio(data.wav[utt])
        except AudioError as exc:
            raise SystemExit(f"separate_data: utterance {utt}: {exc}") from None
        try:
            est = sep.separate(wav, sr, head=args.head)
        except SeparationError as exc:
            raise SystemExit(f"separate_data: utterance {utt} ({data.wav[utt]}): {exc}") from None
        for s in data.sources:
            write_audio(wav_path(args.outdir, s, utt), est[s], sr, subtype="FLOAT")
        logger.info("%s: %.1f s separated", utt, wav.shape[-1] / sr)
    return 0


def finalize(args):
    data = DataDir(args.data)
    outdir = Path(args.outdir)
    sources = {}
    for s in data.sources:
        sources[s] = {}
        for u in data.utts:
            path = wav_path(outdir, s, u)
            if not path.is_file():
                raise DataDirError(f"{path}: missing (did every separation job finish? see {outdir}/log)")
            sources[s][u] = str(path)
    DataDir.create(outdir, dict(data.wav), sources, utt2dur=data.utt2dur, overwrite=True)
    logger.info("%s: %d utterances, sources %s", outdir, len(data.utts), " ".join(data.sources))
    return 0


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.print_heads:
        if not args.model:
            parser.error("--print-heads needs --model")
        sep = _load_separator(args.model, "cpu")
        if args.data:
            try:
                check_sources(sep, args.model, DataDir(args.data))
            except DataDirError as exc:
                print(f"separate_data: {exc}", file=sys.stderr)
                return 1
        print(" ".join(sep.heads))
        return 0
    if not args.data or not args.outdir:
        parser.error("DATA and OUTDIR are required")
    if not args.finalize and not args.model:
        parser.error("--model is required to separate")
    try:
        return finalize(args) if args.finalize else separate(args)
    except (DataDirError, AudioError) as exc:
        print(f"separate_data: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
