#!/usr/bin/env python3
"""Split an scp file (or any file of '<utt> ...' lines) into N contiguous parts, like Kaldi's split_scp.pl.

Usage:
  utils/split_scp.py [--utt2dur FILE] in.scp out.1.scp ... out.N.scp

Lines keep their order; part k gets a contiguous run of lines. Without --utt2dur the parts have
nearly equal numbers of lines (the first len % N parts get one more); with --utt2dur they have
nearly equal total duration (every utt of in.scp must be in FILE). It is an error to ask for more
parts than there are lines. Outputs are written atomically (temporary file, then rename), all of
them only after the whole split has been computed. Standard library only.
"""
import argparse
import os
import sys
import tempfile


def split_by_count(n_items, n_parts):
    """Boundaries ``[0, b1, ..., n_items]`` of ``n_parts`` contiguous parts of nearly equal size."""
    base, extra = divmod(n_items, n_parts)
    bounds = [0]
    for k in range(n_parts):
        bounds.append(bounds[-1] + base + (1 if k < extra else 0))
    return bounds


def split_by_weight(weights, n_parts):
    """Boundaries of ``n_parts`` contiguous non-empty parts with nearly equal total weight.

    Part k ends at the line where the running total is closest to ``k * total / n_parts``,
    constrained so that every part keeps at least one line.
    """
    n = len(weights)
    cum = [0.0]
    for w in weights:
        cum.append(cum[-1] + w)
    total = cum[-1]
    bounds = [0]
    for k in range(1, n_parts):
        target = total * k / n_parts
        lo, hi = bounds[-1] + 1, n - (n_parts - k)  # leave >= 1 line for each later part
        # the first boundary whose running total reaches the target, or the one just before it
        b = lo
        while b < hi and cum[b] < target:
            b += 1
        if b > lo and abs(cum[b - 1] - target) <= abs(cum[b] - target):
            b -= 1
        bounds.append(b)
    bounds.append(n)
    return bounds


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]


def read_utt2dur(path):
    durs = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if len(parts) != 2:
                    raise ValueError
                durs[parts[0]] = float(parts[1])
            except ValueError:
                raise SystemExit(f"split_scp.py: {path}:{lineno}: expected '<utt> <seconds>', got {line.strip()!r}")
            if not durs[parts[0]] >= 0:
                raise SystemExit(f"split_scp.py: {path}:{lineno}: negative duration")
    return durs


def write_atomic(path, lines):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def get_parser():
    parser = argparse.ArgumentParser(
        prog="split_scp.py", description="Split an scp file into N contiguous parts (Kaldi's split_scp).")
    parser.add_argument("--utt2dur", help="balance the parts by total duration from this utt2dur file")
    parser.add_argument("input", help="input scp file")
    parser.add_argument("outputs", nargs="+", help="output files, one per part")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        lines = read_lines(args.input)
    except OSError as exc:
        raise SystemExit(f"split_scp.py: {args.input}: cannot read ({exc.strerror or exc})")
    n_parts = len(args.outputs)
    if len(set(args.outputs)) != n_parts or args.input in args.outputs:
        raise SystemExit("split_scp.py: output files must be distinct and differ from the input")
    if len(lines) < n_parts:
        raise SystemExit(f"split_scp.py: {args.input}: {len(lines)} lines cannot be split into {n_parts} parts")
    if args.utt2dur:
        try:
            durs = read_utt2dur(args.utt2dur)
        except OSError as exc:
            raise SystemExit(f"split_scp.py: {args.utt2dur}: cannot read ({exc.strerror or exc})")
        weights = []
        for line in lines:
            utt = line.split()[0]
            if utt not in durs:
                raise SystemExit(f"split_scp.py: {args.utt2dur}: no duration for utterance {utt!r} of {args.input}")
            weights.append(durs[utt])
        bounds = split_by_weight(weights, n_parts)
    else:
        bounds = split_by_count(len(lines), n_parts)
    for k, path in enumerate(args.outputs):
        write_atomic(path, lines[bounds[k]:bounds[k + 1]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
