"""Accumulate CMVN statistics of the network input over a feature dump -> DUMPDIR/cmvn.ark.

Usage::

    python -m sepkit.bin.compute_cmvn [--overwrite] dump/<feat_tag>/train

The statistics (Kaldi layout, see :class:`sepkit.frontend.CMVN`) are those of
``Frontend.input_features(mix)`` (log-mel or log-magnitude, plus deltas when ``use_delta``) over every frame of
every utterance. A ``cmvn.ark`` newer than the dump's ``mix.scp`` is kept unless ``--overwrite``.
"""
import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("sepkit.bin.compute_cmvn")


def accumulate_dump(dump):
    """Float64 ``(2, D+1)`` CMVN stats of the network input over all utterances of ``dump``."""
    import torch
    from tqdm import tqdm

    from sepkit.data.dataset import get_frontend
    from sepkit.frontend import CMVN

    frontend = get_frontend(dump.feat_conf)
    stats = None
    for utt in tqdm(dump.utts, desc="compute_cmvn", unit="utt", mininterval=10):
        with torch.no_grad():
            feats = frontend.input_features(torch.from_numpy(dump.read(utt, 0))[None], dump.feat_conf.bins)[0]
        stats = CMVN.accumulate(stats, feats.double().numpy())
    return stats


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.compute_cmvn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--overwrite", action="store_true", help="recompute an up-to-date cmvn.ark")
    parser.add_argument("--out", help="output file (default DUMPDIR/cmvn.ark)")
    parser.add_argument("dumpdir", help="feature dump of the training set")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sepkit.data.dataset import DumpError, FeatureDump
    from sepkit.frontend import CMVN

    out = Path(args.out) if args.out else Path(args.dumpdir) / "cmvn.ark"
    mix_scp = Path(args.dumpdir) / "mix.scp"
    if (not args.overwrite and out.is_file() and mix_scp.is_file()
            and out.stat().st_mtime >= mix_scp.stat().st_mtime):
        logger.info("%s: up to date, skipping (--overwrite to recompute)", out)
        return 0
    try:
        dump = FeatureDump(args.dumpdir)
        stats = accumulate_dump(dump)
    except DumpError as exc:
        raise SystemExit(f"compute_cmvn: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    CMVN.save(out, stats)
    logger.info("%s: CMVN stats of %d frames x %d dims", out, int(stats[0, -1]), stats.shape[1] - 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
