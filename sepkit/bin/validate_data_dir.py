"""Check a Kaldi-style separation data dir (wav.scp, sources, <source>.scp, utt2dur).

Prints one line per problem on stderr and exits 1 if there is any; prints a one-line summary
and exits 0 when the dir is valid.

    python -m sepkit.bin.validate_data_dir [--check-audio] data/train
"""
import argparse
import logging
import sys

from sepkit.data.datadir import DataDir, DataDirError, validate_data_dir


def get_parser():
    parser = argparse.ArgumentParser(
        prog="validate_data_dir",
        description="Check a separation data dir: required files, C-sorted scp files, identical "
                    "utterance sets, valid audio specs whose files exist.")
    parser.add_argument("data_dir", help="data dir to check, e.g. data/train")
    parser.add_argument("--check-audio", action="store_true",
                        help="also decode every audio spec: mixture and sources must agree in sample "
                             "rate and length, and utt2dur must match the mixture")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    problems = validate_data_dir(args.data_dir, check_audio=args.check_audio)
    if problems:
        for problem in problems:
            print(f"validate_data_dir: {problem}", file=sys.stderr)
        print(f"validate_data_dir: {args.data_dir}: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    try:
        data = DataDir(args.data_dir)
        hours = sum(data.utt2dur.values()) / 3600
    except DataDirError as exc:  # validate_data_dir should have caught it; never crash here
        print(f"validate_data_dir: {exc}", file=sys.stderr)
        return 1
    checked = "audio checked" if args.check_audio else "audio not decoded"
    print(f"validate_data_dir: {args.data_dir}: OK ({len(data)} utterances, {hours:.2f} h, "
          f"sources: {' '.join(data.sources)}; {checked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
