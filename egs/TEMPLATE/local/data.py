#!/usr/bin/env python3
"""Data preparation of @CORPUS@: the corpus -> data dirs DATA/train, DATA/valid, DATA/test.

    python local/data.py [--overwrite] CORPUS_DIR DATA        (called by local/data.sh)

The songs come from find_songs() of local/songs.py (the part to write for the corpus); this
file checks them and writes the data dirs (wav.scp, <source>.scp, sources, utt2dur). Song names
become utterance ids as in every recipe: runs of whitespace -> '_' ("My Song" -> My_Song); two names
that give one id are an error.
"""
import argparse
import logging
import shutil
import sys
from pathlib import Path

import songs  # local/songs.py, beside this file
from sepkit.data.corpora import CorpusError, unique_utt_ids
from sepkit.data.datadir import DataDir, DataDirError

logger = logging.getLogger("local/data.py")

# source names, in the order of the network's outputs and of the scores; songs.py may set its own
SOURCES = list(getattr(songs, "SOURCES", ["vocals", "accompaniment"]))
SETS = ("train", "valid", "test")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="local/data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--overwrite", action="store_true", help="replace existing data dirs")
    parser.add_argument("corpus_dir", type=Path, help="the corpus")
    parser.add_argument("data", type=Path, help="where the data dirs are written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sets = songs.find_songs(args.corpus_dir)
    except NotImplementedError as exc:
        print(f"local/data.py: {exc}", file=sys.stderr)
        return 1
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        print(f"local/data.py: find_songs() gave set(s) {', '.join(unknown)}; the sets are {', '.join(SETS)}",
              file=sys.stderr)
        return 1
    for name in ("train", "valid"):
        if not sets.get(name):
            print(f"local/data.py: the {name} set is empty: find_songs() found no {name} songs in "
                  f"{args.corpus_dir}", file=sys.stderr)
            return 1
    for name, found in sets.items():
        for utt, song in found.items():
            missing = [key for key in ["mixture"] + SOURCES if key not in song]
            if missing:
                print(f"local/data.py: {name} song {utt}: find_songs() gave no {missing[0]!r} spec", file=sys.stderr)
                return 1
        try:  # song names -> ids without whitespace
            ids = unique_utt_ids([str(utt) for utt in found], f"the {name} songs of find_songs()")
        except CorpusError as exc:
            print(f"local/data.py: {exc}", file=sys.stderr)
            return 1
        sets[name] = {ids[str(utt)]: song for utt, song in found.items()}
    try:
        for name, found in sets.items():
            mixture = {utt: song["mixture"] for utt, song in found.items()}
            sources = {src: {utt: song[src] for utt, song in found.items()} for src in SOURCES}
            DataDir.create(args.data / name, mixture, sources, overwrite=args.overwrite)
            logger.info("wrote %s (%d songs)", args.data / name, len(found))
    except DataDirError as exc:
        print(f"local/data.py: {exc}", file=sys.stderr)
        return 1
    for name in SETS:  # a set an earlier run wrote and find_songs() no longer gives is stale
        if args.overwrite and name not in sets and (args.data / name / "wav.scp").is_file():
            logger.info("removing %s: find_songs() gives no %s set", args.data / name, name)
            shutil.rmtree(args.data / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
