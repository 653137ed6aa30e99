"""Build the DSD100-remix sets (paper §3.1) from prepared data dirs.

Usage::

    # training + validation sets from DSD100 Dev: OUTDIR/train_remix, OUTDIR/valid_remix
    python -m sepkit.bin.remix --mode train [--hours 15] [--valid-hours 0.5] [--valid-fraction 0.1]
        [--segment-seconds 10] [--cross-song] [--train-name train_remix] [--valid-name valid_remix]
        [common options] data/dsd100_dev data

    # test set from DSD100 Test: OUTDIR/test_remix, one 30 s piece per song
    python -m sepkit.bin.remix --mode test [--test-seconds 30] [--test-name test_remix]
        [common options] data/dsd100_test data

    common options: [--sample-rate 16000] [--threshold-db -40] [--frame-ms 32] [--min-gap-ms 300]
        [--min-active-ms 100] [--seed 0] [--overwrite]

SRC is any data dir with ``vocals`` and ``accompaniment`` sources; OUTDIR is the parent folder of
the sets written (in both modes). Each set is a data dir with mono float32 wavs under
``OUTDIR/<set>/wav/`` (see :mod:`sepkit.data.remix`). The same seed gives identical output.
Options of the other mode are an error, not silently ignored. ``--valid-hours 0`` makes no
validation set.
"""
import argparse
import logging
import sys

from sepkit.data.remix import DETECTOR_DEFAULTS, RemixError, make_test, make_train_valid

logger = logging.getLogger("sepkit.bin.remix")

# dest -> (default, option string); defaults are applied here so that a mode's options given in
# the other mode can be detected.
_TRAIN = {"hours": (15.0, "--hours"), "valid_hours": (0.5, "--valid-hours"),
          "valid_fraction": (0.1, "--valid-fraction"), "segment_seconds": (10.0, "--segment-seconds"),
          "cross_song": (False, "--cross-song"), "train_name": ("train_remix", "--train-name"),
          "valid_name": ("valid_remix", "--valid-name")}
_TEST = {"test_seconds": (30.0, "--test-seconds"), "test_name": ("test_remix", "--test-name")}


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.remix", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", required=True, choices=["train", "test"],
                        help="train: training + validation sets; test: one piece per song")
    train = parser.add_argument_group("--mode train")
    train.add_argument("--hours", type=float, help="total duration of the training set in hours (15)")
    train.add_argument("--valid-hours", type=float, help="total duration of the validation set in hours (0.5)")
    train.add_argument("--valid-fraction", type=float,
                       help="fraction of the songs held out for validation, at least one song (0.1)")
    train.add_argument("--segment-seconds", type=float, help="length of each mixture in seconds (10)")
    train.add_argument("--cross-song", action="store_const", const=True,
                       help="take the accompaniment from a different song than the vocals (default: same song)")
    train.add_argument("--train-name", help="name of the training set under OUTDIR (train_remix)")
    train.add_argument("--valid-name", help="name of the validation set under OUTDIR (valid_remix)")
    test = parser.add_argument_group("--mode test")
    test.add_argument("--test-seconds", type=float, help="length of each song's piece in seconds (30)")
    test.add_argument("--test-name", help="name of the test set under OUTDIR (test_remix)")
    common = parser.add_argument_group("both modes")
    common.add_argument("--sample-rate", type=int, default=16000, help="output sample rate in Hz (16000)")
    common.add_argument("--threshold-db", type=float, default=DETECTOR_DEFAULTS["threshold_db"],
                        help="frames this many dB below the track's loudest frame are silent (-40)")
    common.add_argument("--frame-ms", type=float, default=DETECTOR_DEFAULTS["frame_ms"],
                        help="detector frame length in ms (32)")
    common.add_argument("--min-gap-ms", type=float, default=DETECTOR_DEFAULTS["min_gap_ms"],
                        help="silent gaps shorter than this inside active parts are kept (300)")
    common.add_argument("--min-active-ms", type=float, default=DETECTOR_DEFAULTS["min_active_ms"],
                        help="active bursts shorter than this are removed (100)")
    common.add_argument("--seed", type=int, default=0, help="random seed (0)")
    common.add_argument("--overwrite", action="store_true", help="replace existing output sets")
    parser.add_argument("src", help="source data dir (vocals and accompaniment sources)")
    parser.add_argument("outdir", help="parent folder of the output sets")
    return parser


def _mode_options(args, own, other):
    """Fill this mode's defaults; refuse the other mode's options."""
    for dest, (_, option) in other.items():
        if getattr(args, dest) is not None:
            raise RemixError(f"{option} does not apply to --mode {args.mode}")
    return {dest: default if getattr(args, dest) is None else getattr(args, dest)
            for dest, (default, _) in own.items()}


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    detector = {"threshold_db": args.threshold_db, "frame_ms": args.frame_ms,
                "min_gap_ms": args.min_gap_ms, "min_active_ms": args.min_active_ms}
    common = {"sample_rate": args.sample_rate, "seed": args.seed, "detector": detector,
              "overwrite": args.overwrite}
    try:
        if args.mode == "train":
            opts = _mode_options(args, _TRAIN, _TEST)
            made = make_train_valid(args.src, args.outdir, **opts, **common)
        else:
            opts = _mode_options(args, _TEST, _TRAIN)
            made = make_test(args.src, args.outdir, test_seconds=opts["test_seconds"], name=opts["test_name"],
                             **common)
    except RemixError as exc:
        print(f"remix: {exc}", file=sys.stderr)
        return 1
    logger.info("done: %s", ", ".join(str(p) for p in made.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
