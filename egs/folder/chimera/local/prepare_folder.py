#!/usr/bin/env python3
"""Data dirs from a corpus laid out as one folder per song (sepkit.data.corpora.folder).

    local/prepare_folder.py [--corpus_conf corpus.yaml] [--corpus_dir DIR] [--mixture mix.wav]
        [--sources "vocals=source-01.wav accompaniment=source-02.wav"] [...] OUTDIR

Writes OUTDIR/{train,valid,test} (the sets the description makes). Every option is a key of the
YAML description (--corpus_conf); an option given here wins over the file, an empty one ("") is
"not given". --dry_run checks every song and writes nothing; --fingerprint prints one line that
changes when the description or any file of a song folder changes (for the recipe's skip logic).
"""
import argparse
import hashlib
import json
import logging
import sys

from sepkit.data.corpora import CorpusError
from sepkit.data.corpora.folder import DEFAULTS, describe, prepare, song_folders

HELP = {
    "corpus_dir": "root of the corpus, one folder per song (the training songs unless --train_dir is given)",
    "train_dir": "folder of the training songs, relative to --corpus_dir",
    "valid_dir": "folder of the validation songs (else --valid_fraction of the training songs)",
    "test_dir": "folder of the test songs (else --test_fraction of the training songs)",
    "valid_fraction": "share of the training songs held out for validation",
    "test_fraction": "share of the training songs held out for testing",
    "seed": "seed of the held-out choice",
    "songs": "glob of the song folders inside a split folder",
    "mixture": "mixture file of a song (name or glob), or 'sum' = the sum of the sources",
    "sources": "files of each source: 'NAME=FILE[,FILE...] NAME=...' (names or globs)",
    "exclude": "globs of files never used, separated by spaces",
    "bad_songs": "a song with missing or unreadable files: fatal (stop, listing all) or skip",
    "length_policy": "files of a song that differ in length: error, trim (to the shortest), pad (to the longest)",
    "prefix": "data dir names are <prefix>train, <prefix>valid, <prefix>test",
}


def _default(key):
    value = DEFAULTS[key]
    if key == "sources":
        return " ".join(f"{name}={','.join(files)}" for name, files in value.items())
    return " ".join(value) if isinstance(value, list) else value


def get_parser():
    parser = argparse.ArgumentParser(prog="local/prepare_folder.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus_conf", "--corpus-conf", default=None, metavar="YAML",
                        help="YAML description of the corpus (keys: the options below)")
    for key in DEFAULTS:
        flags = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        parser.add_argument(*flags, dest=key, default=None, help=f"{HELP[key]} (default: {_default(key)})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing data dirs")
    parser.add_argument("--dry_run", "--dry-run", action="store_true", help="check every song, write nothing")
    parser.add_argument("--fingerprint", action="store_true",
                        help="print a fingerprint of the description and the song files, write nothing")
    parser.add_argument("outdir", help="where the data dirs are written (e.g. data)")
    return parser


def fingerprint(d):
    """sha1 of the description and of every file (path, size, mtime) of every song folder."""
    h = hashlib.sha1(json.dumps({k: v for k, v in d.items() if k != "_given"}, sort_keys=True).encode())
    for split, songs in song_folders(d).items():
        for song in songs:
            for path in sorted(p for p in song.rglob("*") if p.is_file()):
                st = path.stat()
                h.update(f"{split}\t{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = {key: getattr(args, key) for key in DEFAULTS}
    if keys["exclude"]:
        keys["exclude"] = keys["exclude"].split()
    try:
        if args.fingerprint:
            print(f"folder {fingerprint(describe(args.corpus_conf or None, **keys))}")
            return 0
        made = prepare(outdir=args.outdir, config=args.corpus_conf or None, overwrite=args.overwrite,
                       dry_run=args.dry_run, **{k: v for k, v in keys.items() if v is not None})
    except CorpusError as exc:
        print(f"prepare_folder: {exc}", file=sys.stderr)
        return 1
    for path in made.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
