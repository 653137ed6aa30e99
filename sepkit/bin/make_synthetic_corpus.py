"""Write a synthetic music corpus in an official layout, so that recipes, tests and the demo run
without downloading anything.

    python -m sepkit.bin.make_synthetic_corpus --layout dsd100|ikala|mir1k|musdb18hq|folder DIR
        [--num-songs N] [--num-test-songs N] [--duration SEC] [--sample-rate SR] [--seed S]
        [--channels 1|2] [--overwrite] [--summary FILE.json]

Layouts, defaults and the music itself: :mod:`sepkit.data.synth_layouts` and
:mod:`sepkit.data.synth`. The same ``--seed`` gives byte-identical files. A non-empty DIR is
refused unless ``--overwrite`` (which replaces only the files this command writes).
"""
import argparse
import json
import logging
import sys

from sepkit.audio import atomic_path
from sepkit.data.synth_layouts import LAYOUTS, SynthError, make_corpus

logger = logging.getLogger("sepkit.bin.make_synthetic_corpus")


def _defaults():
    rows = []
    for name, d in LAYOUTS.items():
        test = "" if d["num_test_songs"] is None else f" + {d['num_test_songs']} test"
        dur = "4-12 s clips" if d["duration"] is None else f"{d['duration']:g} s"
        rows.append(f"{name}: {d['num_songs']}{test} songs, {dur}, {d['sample_rate']} Hz")
    return "; ".join(rows)


def get_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sepkit.bin.make_synthetic_corpus",
        description="Write synthetic songs (vocals, drums, bass, other) in a corpus's official layout. "
                    f"Defaults: {_defaults()}.")
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS), help="corpus layout to write")
    parser.add_argument("root", metavar="DIR", help="corpus root to create")
    parser.add_argument("--num-songs", type=int, default=None,
                        help="songs in the training split (dsd100 Dev, musdb18hq train, mir1k clips by abjones "
                             "and amy), or all songs (ikala, folder)")
    parser.add_argument("--num-test-songs", type=int, default=None,
                        help="songs in the test split (dsd100 Test, musdb18hq test, mir1k clips by annar, "
                             "yifen and synth1); not for ikala or folder")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per song or clip (default per layout; mir1k: 4-12 s per clip)")
    parser.add_argument("--sample-rate", type=int, default=None, help="Hz (default: the layout's official rate)")
    parser.add_argument("--channels", type=int, choices=[1, 2], default=None,
                        help="folder layout only: mono or stereo files (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty DIR, replacing only the files this command writes")
    parser.add_argument("--summary", default=None, metavar="FILE",
                        help="also write the JSON summary (songs, files, tempi, keys, vocal rests) here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = make_corpus(args.layout, args.root, num_songs=args.num_songs, num_test_songs=args.num_test_songs,
                              duration=args.duration, sample_rate=args.sample_rate, seed=args.seed,
                              channels=args.channels, overwrite=args.overwrite, progress=not args.no_progress)
    except SynthError as exc:
        print(f"make_synthetic_corpus: {exc}", file=sys.stderr)
        return 1
    if args.summary:
        try:
            with atomic_path(args.summary) as tmp, open(tmp, "w") as f:
                json.dump(summary, f, indent=1)
        except OSError as exc:
            print(f"make_synthetic_corpus: {args.summary}: cannot write summary ({exc.strerror or exc})",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
