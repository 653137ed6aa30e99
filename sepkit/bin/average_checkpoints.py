"""Average the weights of several checkpoints of one training run into a model file (ESPnet-style).

Usage::

    python -m sepkit.bin.average_checkpoints [--last 3 | --epochs 4,5,6] [--overwrite] EXPDIR OUT

EXPDIR is an ``exp/<tag>`` directory of ``python -m sepkit.bin.train`` (its ``checkpoints/ckpt-epoch<N>.pt``);
OUT a model file (``exp/<tag>/model_avg3.pt``, or ``exp/<other-tag>/model.pt`` so that a recipe's
separation and scoring stages use it). Floating-point weights are averaged; integer buffers (batch
norm's step counter) are taken from the newest checkpoint. The checkpoints must hold the same network
(model and feature settings, CMVN, sources); anything else is refused with a one-line error. The
output is a plain model file (no optimiser state), loadable with ``torch.load(weights_only=True)``.

Averaging the last few checkpoints smooths the epoch-to-epoch fluctuation of the test scores (which a
validation set drawn from the training singers does not see).
"""
import argparse
import logging
import sys
from pathlib import Path

import torch

from sepkit.model_io import MODEL_KEYS, ModelFileError, load_model_dict, save_model_dict
from sepkit.train.checkpoint import list_checkpoints

logger = logging.getLogger("sepkit.bin.average_checkpoints")


def get_parser():
    p = argparse.ArgumentParser(prog="python -m sepkit.bin.average_checkpoints",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("expdir", help="exp/<tag> directory with checkpoints/ckpt-epoch<N>.pt")
    p.add_argument("out", help="model file to write")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--last", type=int, default=3, help="average the N newest checkpoints (default 3)")
    g.add_argument("--epochs", default="", help="comma-separated epochs to average instead, e.g. 4,5,6")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--update", action="store_true",
                   help="(recipes) skip if OUT already averages these checkpoints and is newer than them, else rewrite it")
    return p


SAME = ("model_conf", "feat_conf", "cmvn", "sources")  # what every averaged checkpoint must share


def _differ(a, b, key):
    """Short description of where ``a`` and ``b`` (a model-dict entry) differ: ``key.field: x vs y``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _differ(a.get(k), b.get(k), f"{key}.{k}")
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        k = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return f"{key}[{k}]: {a[k]!r:.40} vs {b[k]!r:.40}"
    return f"{key}: {a!r:.60} vs {b!r:.60}"


def average(dicts, epochs=None, names=None):
    """Model dict whose weights are the mean of ``dicts``' (the last one's settings are kept).

    Every dict must have the same :data:`SAME` entries and the same weight names; ``names`` (the files)
    go into the one-line error otherwise.
    """
    names = names or [f"checkpoint {k}" for k in range(len(dicts))]
    ref = dicts[-1]
    for d, name in zip(dicts[:-1], names):
        for key in SAME:
            if d[key] != ref[key]:
                raise ValueError(f"{name} and {names[-1]} differ in {_differ(d[key], ref[key], key)}: "
                                 "not checkpoints of one network")
        if d["model_state"].keys() != ref["model_state"].keys():
            raise ValueError(f"{name} and {names[-1]} hold different sets of weights")
    state = {}
    for name, last in ref["model_state"].items():
        if last.is_floating_point():
            acc = torch.zeros_like(last, dtype=torch.float64)
            for d in dicts:
                acc += d["model_state"][name].to(torch.float64)
            state[name] = (acc / len(dicts)).to(last.dtype)
        else:
            state[name] = last.clone()
    out = {k: ref[k] for k in ref if k != "checkpoint"}
    out["model_state"] = state
    out["train"] = dict(ref.get("train") or {})
    centers = [d.get("dc_centers") for d in dicts]
    if all(c is not None for c in centers):  # DC anchors: the normalised mean of the checkpoints' anchors
        mean = torch.stack([torch.as_tensor(c, dtype=torch.float64) for c in centers]).mean(0)
        out["dc_centers"] = torch.nn.functional.normalize(mean, dim=-1).float().tolist()
    else:
        out.pop("dc_centers", None)
    if epochs is not None:
        out["train"]["averaged_epochs"] = list(epochs)
    return out


def run(args):
    expdir, out = Path(args.expdir), Path(args.out)
    ckpts = sorted(list_checkpoints(expdir))  # [(epoch, path)], oldest first
    if not ckpts:
        raise SystemExit(f"average_checkpoints: {expdir / 'checkpoints'}: no ckpt-epoch<N>.pt files")
    if args.epochs:
        try:
            want = [int(e) for e in args.epochs.split(",") if e.strip()]
        except ValueError:
            raise SystemExit(f"average_checkpoints: --epochs must be comma-separated integers, got {args.epochs!r}")
        have = dict(ckpts)
        missing = [e for e in want if e not in have]
        if missing:
            raise SystemExit(f"average_checkpoints: {expdir}: no checkpoint of epoch(s) {missing} "
                             f"(have {sorted(have)})")
        chosen = [(e, have[e]) for e in sorted(set(want))]
    else:
        if args.last < 1:
            raise SystemExit("average_checkpoints: --last must be at least 1")
        if args.last > len(ckpts):
            logger.warning("%s: --last %d but only %d checkpoint(s) (epochs %s; see keep_last_n): averaging those",
                           expdir, args.last, len(ckpts), [e for e, _ in ckpts])
        chosen = ckpts[-args.last:]
    epochs = [e for e, _ in chosen]
    if out.exists() and not args.overwrite:
        if not args.update:
            raise SystemExit(f"average_checkpoints: {out} exists (--overwrite to replace it)")
        try:
            done = load_model_dict(out)["train"].get("averaged_epochs")
        except ModelFileError:
            done = None
        if done == epochs and out.stat().st_mtime >= max(p.stat().st_mtime for _, p in chosen):
            logger.info("%s: already the average of epochs %s of %s, skipping", out, epochs, expdir)
            return 0
    dicts = [load_model_dict(path) for _, path in chosen]
    avg = average(dicts, epochs, names=[str(path) for _, path in chosen])
    missing = [k for k in MODEL_KEYS if k not in avg]
    if missing:
        raise ValueError(f"averaged model lacks {missing}")
    save_model_dict(out, avg)
    logger.info("wrote %s: average of epochs %s of %s", out, epochs, expdir)
    return 0


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except (ModelFileError, ValueError, OSError) as exc:
        print(f"average_checkpoints: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
