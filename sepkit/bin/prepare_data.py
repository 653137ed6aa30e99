"""Prepare Kaldi-style data dirs from a corpus in its official layout.

Usage::

    python -m sepkit.bin.prepare_data --corpus dsd100  ROOT OUTDIR   # dsd100_dev, dsd100_test
    python -m sepkit.bin.prepare_data --corpus ikala   ROOT OUTDIR   # ikala
    python -m sepkit.bin.prepare_data --corpus mir1k [--train-singers abjones,amy]
        [--valid-fraction 0.1] [--seed 0] ROOT OUTDIR                # mir1k_{train,valid,test}
    python -m sepkit.bin.prepare_data --corpus musdb18 [--hq] [--valid-tracks NAME|@FILE]...
        [--valid-fraction 0.1] [--seed 0] [--mixture file|sum] [--stems 2|4] ROOT OUTDIR
                                       # musdb18_{train,valid,test}; --stems 4: musdb18_4stems_{...}

Every set gets ``wav.scp``, ``sources``, one ``<source>.scp`` per source and ``utt2dur`` (layouts and
specs: :mod:`sepkit.data.corpora`); the sources are ``vocals`` and ``accompaniment`` but for
``musdb18 --stems 4`` (``vocals``, ``drums``, ``bass``, ``other``) and ``folder`` (those described). Existing data dirs are never overwritten unless
``--overwrite``. An option that the chosen corpus does not use is an error, not silently ignored.
"""
import argparse
import inspect
import logging
import sys

from sepkit.data.corpora import CORPORA, CorpusError

logger = logging.getLogger("sepkit.bin.prepare_data")

# dest -> option string, for options that only some corpora take (their default is None here,
# so the corpus module's own default applies when an option is not given).
_CORPUS_OPTIONS = {"train_singers": "--train-singers", "valid_fraction": "--valid-fraction",
                   "valid_tracks": "--valid-tracks", "seed": "--seed", "hq": "--hq", "mixture": "--mixture",
                   "stems": "--stems"}


def get_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sepkit.bin.prepare_data", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--corpus", required=True, choices=sorted(CORPORA), help="corpus layout of ROOT")
    parser.add_argument("--overwrite", action="store_true", help="replace existing data dirs")
    group = parser.add_argument_group("corpus options (each applies to the corpora named)")
    group.add_argument("--train-singers", default=None,
                       help="mir1k: comma-separated training singers (default abjones,amy)")
    group.add_argument("--valid-fraction", type=float, default=None,
                       help="mir1k, musdb18: fraction of training songs/tracks held out for validation "
                            "(default 0.1)")
    group.add_argument("--valid-tracks", action="append", default=None, metavar="NAME|@FILE",
                       help="musdb18: a validation track by name (or utt id), or @FILE with one name per "
                            "line; repeat the option for more")
    group.add_argument("--seed", type=int, default=None, help="mir1k, musdb18: seed of the validation "
                                                              "choice (default 0)")
    group.add_argument("--hq", action="store_const", const=True, default=None,
                       help="musdb18: MUSDB18-HQ wav layout instead of .stem.mp4")
    group.add_argument("--mixture", choices=["file", "sum"], default=None,
                       help="musdb18: official mixture file or the sum of the stems (default file)")
    group.add_argument("--stems", type=int, default=None,
                       help="musdb18: 2 = vocals, accompaniment (default); 4 = vocals, drums, bass, other")
    parser.add_argument("root", help="corpus root in its official layout")
    parser.add_argument("outdir", help="where the data dirs are written")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepare = CORPORA[args.corpus]
    accepted = inspect.signature(prepare).parameters
    kwargs = {}
    for dest, option in _CORPUS_OPTIONS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if dest not in accepted:
            print(f"prepare_data: {option} does not apply to --corpus {args.corpus}", file=sys.stderr)
            return 2
        kwargs[dest] = value
    try:
        made = prepare(args.root, args.outdir, overwrite=args.overwrite, **kwargs)
    except CorpusError as exc:
        print(f"prepare_data: {exc}", file=sys.stderr)
        return 1
    logger.info("prepared %s", ", ".join(str(p) for p in made.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
