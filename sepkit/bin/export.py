"""Export a trained model into one self-contained file for sepkit-separate and sepkit.Separator.

Usage::

    sepkit-export exp/<tag> chimera.pt          # or: python -m sepkit.bin.export ...
    sepkit-separate --model chimera.pt --outdir sep song.wav
    sepkit-export --onnx exp/<tag> chimera.onnx  # the network as ONNX, for --backend onnxruntime

The file (format ``sepkit-model/1``, see :mod:`sepkit.model_io`) holds the weights and every
setting separation needs: network settings, feature settings, CMVN statistics, source names,
training settings (the segment length) and the sepkit version that wrote it. It holds plain data
only, so it loads with ``torch.load(weights_only=True)``, without the recipe or its config files,
and separates exactly like the directory. Resume state found in a checkpoint (optimiser, RNG) is
left out.
"""
import argparse
import sys
from pathlib import Path

PROG = "sepkit-export"


def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("model", metavar="MODEL_DIR", help="exp/<tag> directory (its model.pt) or a model/checkpoint file")
    p.add_argument("out", metavar="OUT_FILE", help="exported model file")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_FILE when it exists")
    p.add_argument("--onnx", action="store_true",
                   help="write the network as ONNX instead (OUT_FILE.onnx, dynamic batch and length, settings "
                        "in its metadata) for sepkit-separate --backend onnxruntime (docs/onnx.md)")
    p.add_argument("--heads", choices=["mi", "dc", "both"], default="both",
                   help="with --onnx: the head(s) the ONNX network outputs; both = every head the model has (both)")
    return p


def export(model, out, overwrite=False):
    """Write the model file of ``model`` (dir or file) to ``out``; returns the exported dict.

    Raises:
        ModelFileError: unreadable model, weights that do not match the settings, ``out`` exists.
    """
    import torch

    import sepkit
    from sepkit.model_io import MODEL_KEYS, ModelFileError, build_from_dict, load_model_dict, save_model_dict

    out = Path(out)
    if out.exists() and not overwrite:
        raise ModelFileError(f"{out}: exists (use --overwrite to replace it)")
    if out.is_dir():
        raise ModelFileError(f"{out}: is a directory, expected a file name")
    d = load_model_dict(model)
    try:
        build_from_dict(d)  # refuse to export weights that cannot be rebuilt
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable model
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{model}: weights do not fit the model settings ({msg})") from None
    clean = {k: d[k] for k in MODEL_KEYS}
    clean["sepkit_version"] = sepkit.__version__
    clean["model_state"] = {k: v.detach().cpu().contiguous().clone() for k, v in d["model_state"].items()}
    try:
        save_model_dict(out, clean)
    except OSError as exc:
        raise ModelFileError(f"{out}: cannot write ({exc.strerror or exc})") from None
    back = load_model_dict(out)  # the file must load with weights_only=True, as Separator loads it
    if any(not torch.equal(back["model_state"][k], v) for k, v in clean["model_state"].items()):
        raise ModelFileError(f"{out}: weights read back differ from the exported ones")
    return clean


def main(argv=None):
    from sepkit.model_io import ModelFileError

    args = get_parser().parse_args(argv)
    if args.onnx:
        return export_onnx_main(args)
    try:
        d = export(args.model, args.out, args.overwrite)
    except ModelFileError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    n = sum(v.numel() for v in d["model_state"].values())
    heads = ",".join(d["model_conf"].get("heads", ["dc", "mi"]))
    print(f"{PROG}: wrote {args.out} ({n / 1e6:.2f} M parameters, heads {heads}, sources "
          f"{','.join(d['sources'])}, {d['feat_conf'].get('sample_rate')} Hz)", file=sys.stderr)
    return 0


def export_onnx_main(args):
    """``--onnx``: the network of MODEL to an ONNX file (:func:`sepkit.onnx_backend.export_onnx`)."""
    from sepkit.model_io import ModelFileError, load_model_dict
    from sepkit.onnx_backend import export_onnx, is_onnx_path

    try:
        if not is_onnx_path(args.out):
            raise ModelFileError(f"{args.out}: an ONNX export is named *.onnx")
        d = load_model_dict(args.model)
        meta = export_onnx(d, args.out, heads=None if args.heads == "both" else (args.heads,),
                           overwrite=args.overwrite)
    except ModelFileError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{PROG}: wrote {args.out} (ONNX, outputs {', '.join(meta['outputs'])}, sources "
          f"{','.join(meta['sources'])}, {meta['feat_conf'].get('sample_rate')} Hz)", file=sys.stderr)
    return 0


def console_main():
    sys.exit(main())


if __name__ == "__main__":
    console_main()
