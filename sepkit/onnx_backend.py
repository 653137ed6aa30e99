"""ONNX export of the network and the onnxruntime backend of :class:`sepkit.separate.Separator`.

Only the network goes to ONNX: features ``(B, T, Din)`` in, with B and T dynamic, and the outputs of
``ChimeraNet.forward`` out, under their names: ``mask`` ``(B, T, F, C)`` (MI head) and/or
``embedding`` ``(B, T*F, D)`` (DC head). Everything around the network (resampling, STFT, features,
CMVN, segments and batches, the cross-fade, k-means, masks, inverse STFT, streaming) stays the
torch code of :mod:`sepkit.separate` and :mod:`sepkit.stream`; the backend only replaces the one
network call (``Separator._forward``).

The exporter is torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``, opset 17):
it turns ``nn.LSTM`` into ONNX ``LSTM`` nodes with a dynamic time axis and needs no onnxscript.

The file carries what separation needs besides the weights as JSON under the metadata key
``sepkit`` (``metadata_props``): format, feature settings, CMVN statistics, sources, network and
training settings, so an ``.onnx`` file alone is a model (``Separator.from_pretrained("m.onnx")``,
``sepkit-separate --model m.onnx``). An ONNX file is untrusted input like a model file: its
metadata goes through :func:`sepkit.model_io.check_model_dict` (the source names through
:func:`sepkit.names.check_names`), the graph's input and outputs must fit the metadata, and a file
with external data or operators outside the standard ONNX domains is refused; the session is built
from the bytes read, never from paths the file names. Given beside a model file
(``--model m.pt --onnx m.onnx``), its settings must be the model's: one that was exported for other
feature settings is refused in one line.
"""
import json
import math
import os
import warnings
from pathlib import Path

import torch

from sepkit.model_io import ModelFileError, check_model_dict, one_line

__all__ = ["OnnxFileError", "export_onnx", "read_onnx", "check_same_model", "OnnxNet", "is_onnx_path"]

FORMAT = "sepkit-onnx/1"
META_KEY = "sepkit"
INPUT = "features"
OUTPUTS = {"mi": "mask", "dc": "embedding"}  # head -> output name (ChimeraNet.forward's keys)
OPSET = 17
_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")  # standard operators only: no custom-op libraries
MAX_BYTES = 4 << 30  # an .onnx file larger than this is not a sepkit network


class OnnxFileError(ModelFileError):
    """An ONNX file that cannot be used; the message names it and the problem (one line)."""


def is_onnx_path(path):
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".onnx")


def _need(module):
    try:
        return __import__(module)
    except ImportError:
        raise ModelFileError(f"the ONNX export and the onnxruntime backend need {module}: "
                             "pip install 'sepkit[onnx]' (or: pip install onnx onnxruntime)") from None


class _Export(torch.nn.Module):
    """The network as ONNX sees it: features -> the chosen heads' outputs as a tuple, in ``heads`` order."""

    def __init__(self, model, heads):
        super().__init__()
        self.model, self.heads = model, tuple(heads)

    def forward(self, feats):
        out = self.model(feats, heads=self.heads)
        return tuple(out[OUTPUTS[h]] for h in self.heads)


def export_onnx(model_dict, out, heads=None, overwrite=False):
    """Write the network of ``model_dict`` (:mod:`sepkit.model_io`) to ``out`` (ONNX, metadata included).

    ``heads``: ``("mi",)``, ``("dc",)`` or both (default: every head the model has). The file is
    written under a temporary name and renamed once complete. Returns the metadata dict.
    Raises :class:`OnnxFileError` (one line).
    """
    onnx = _need("onnx")
    from sepkit.audio import atomic_path
    from sepkit.model_io import build_from_dict

    out = Path(out)
    if out.is_dir():
        raise OnnxFileError(f"{out}: is a directory, expected a file name")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OnnxFileError(f"{out}: exists (use --overwrite to replace it)")
    model, frontend, _ = build_from_dict(model_dict)
    have = [h for h in ("mi", "dc") if h in model.heads]
    heads = tuple(h for h in ("mi", "dc") if h in (heads or have))
    missing = [h for h in heads if h not in have]
    if not heads or missing:
        raise OnnxFileError(f"{out}: cannot export head(s) {', '.join(missing) or '(none)'}: the model has "
                            f"{', '.join(have)}")
    conf = dict(model_dict["model_conf"], heads=list(heads))
    meta = {"format": FORMAT, "sepkit_version": model_dict.get("sepkit_version"), "model_conf": conf,
            "feat_conf": dict(model_dict["feat_conf"]), "cmvn": _plain(model_dict["cmvn"]),
            "sources": list(model_dict["sources"]), "train": dict(model_dict.get("train", {})),
            "outputs": [OUTPUTS[h] for h in heads]}
    x = torch.zeros(2, 7, frontend.config.input_dim)
    names = [OUTPUTS[h] for h in heads]
    axes = {INPUT: {0: "batch", 1: "frames"}, "mask": {0: "batch", 1: "frames"}, "embedding": {0: "batch", 1: "bins"}}
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and LSTM batch-size notes
        torch.onnx.export(_Export(model, heads).eval(), (x,), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=names,
                          dynamic_axes={k: v for k, v in axes.items() if k == INPUT or k in names})
    proto = onnx.load_model_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    proto.producer_name = "sepkit"
    onnx.checker.check_model(proto)
    try:
        with atomic_path(out) as tmp:
            Path(tmp).write_bytes(proto.SerializeToString())
    except OSError as exc:
        raise OnnxFileError(f"{out}: cannot write ({exc.strerror or exc})") from None
    return meta


def _plain(cmvn):
    d = cmvn.to_dict() if hasattr(cmvn, "to_dict") else dict(cmvn)
    return {k: (v.tolist() if hasattr(v, "tolist") else list(v)) for k, v in d.items()}


def read_onnx(path):
    """Read and check an ONNX file -> ``(model dict without weights, the file's bytes)``.

    The dict has the keys of a model file except ``model_state`` (and ``format`` is the ONNX one).
    Raises :class:`OnnxFileError` naming ``path`` and the problem.
    """
    onnx = _need("onnx")
    from sepkit.audio import path_problem

    path = Path(path)
    problem = path_problem(path)
    if problem is None and not path.is_file():
        problem = "not a file"
    if problem is not None:
        raise OnnxFileError(f"{path}: {'no such ONNX file' if problem == 'no such file' else problem}")
    size = path.stat().st_size
    if size == 0 or size > MAX_BYTES:
        raise OnnxFileError(f"{path}: {'empty' if size == 0 else 'larger than 4 GiB'}; not a sepkit ONNX file")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError and friends
        raise OnnxFileError(f"{path}: not an ONNX file ({one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 120)})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise OnnxFileError(f"{path}: no sepkit settings in the ONNX metadata (not written by sepkit-export --onnx)")
    try:
        meta = json.loads(props[META_KEY])
    except ValueError:
        raise OnnxFileError(f"{path}: the sepkit metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise OnnxFileError(f"{path}: not a sepkit ONNX file (expected metadata format {FORMAT})")
    lacking = [k for k in ("model_conf", "feat_conf", "cmvn", "sources", "train", "outputs") if k not in meta]
    if lacking:
        raise OnnxFileError(f"{path}: the sepkit metadata lacks {lacking}")
    d = {"format": FORMAT, "sepkit_version": meta.get("sepkit_version"), "model_conf": meta["model_conf"],
         "feat_conf": meta["feat_conf"], "cmvn": meta["cmvn"], "sources": meta["sources"], "train": meta["train"]}
    _check_settings(d, path)
    _check_graph(proto, d, meta["outputs"], path)
    return d, data


def _check_settings(d, path):
    """The settings through the model-file checks, with stand-in weights of the right shapes (no memory)."""
    from sepkit.nets import build_model

    if not isinstance(d["model_conf"], dict):
        raise OnnxFileError(f"{path}: model_conf must be a mapping")
    try:
        with torch.device("meta"):
            want = build_model(d["model_conf"]).state_dict()
    except Exception as exc:  # noqa: BLE001 - a stranger's settings: any failure is a bad file
        raise OnnxFileError(f"{path}: model_conf cannot build a network "
                            f"({one_line((str(exc).strip().splitlines() or [type(exc).__name__])[0], 120)})") from None
    state = {k: torch.zeros((), dtype=t.dtype).expand(t.shape) for k, t in want.items()}
    try:
        check_model_dict({**d, "model_state": state}, path)
    except ModelFileError as exc:
        raise OnnxFileError(str(exc)) from None


def _check_graph(proto, d, outputs, path):
    """Input ``features`` ``(B, T, Din)`` and the outputs of the metadata's heads, with the sizes of the settings."""
    from sepkit.frontend import FeatureConfig

    def bad(why):
        raise OnnxFileError(f"{path}: {one_line(why)}")

    for t in list(proto.graph.initializer):
        if t.data_location == 1:  # EXTERNAL: would read files next to (or anywhere from) the model
            bad(f"tensor {t.name} is stored outside the file (external data is refused)")
    for op in proto.opset_import:
        if op.domain not in _DOMAINS:
            bad(f"uses operator domain {op.domain!r} (only standard ONNX operators are accepted)")
    for node in proto.graph.node:
        if node.domain not in _DOMAINS:
            bad(f"node {node.name or node.op_type} uses operator domain {node.domain!r}")
    mc = d["model_conf"]
    heads = [h for h in ("mi", "dc") if h in mc.get("heads", ("dc", "mi"))]
    if outputs != [OUTPUTS[h] for h in heads]:
        bad(f"metadata outputs {outputs!r} do not match the heads {heads}")

    def dims(vi):
        return [x.dim_value if x.HasField("dim_value") else None for x in vi.type.tensor_type.shape.dim]

    ins = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    din = FeatureConfig.from_dict({**FeatureConfig().to_dict(), **d["feat_conf"]}).input_dim
    if len(ins) != 1 or ins[0].name != INPUT or len(dims(ins[0])) != 3 or dims(ins[0])[2] != din:
        got = ", ".join(f"{i.name} {dims(i)}" for i in ins)
        bad(f"network input is {got or 'missing'}; the feature settings (feat_conf) need {INPUT} (B, T, {din})")
    outs = {o.name: dims(o) for o in proto.graph.output}
    if sorted(outs) != sorted(outputs):
        bad(f"graph outputs {sorted(outs)} are not the metadata's {outputs}")
    F, C = mc.get("n_freq", 150), mc.get("n_sources", 2)
    if "mask" in outs and (len(outs["mask"]) != 4 or outs["mask"][2:] != [F, C]):
        bad(f"output mask has shape {outs['mask']}, the settings need (B, T, {F}, {C})")
    if "embedding" in outs and len(outs["embedding"]) != 3:
        bad(f"output embedding has shape {outs['embedding']}, the settings need (B, T*{F}, D)")


_COMPARED = (("feat_conf", "feature settings"), ("cmvn", "CMVN statistics"), ("sources", "sources"))


def check_same_model(onnx_dict, model_dict, onnx_path, model_name):
    """Refuse (one line) an ONNX file whose settings are not those of the model it is to run for."""
    from sepkit.frontend import FeatureConfig

    base = FeatureConfig().to_dict()
    fa, fb = {**base, **onnx_dict["feat_conf"]}, {**base, **model_dict["feat_conf"]}
    diff = [f"{k} {fa[k]!r} vs {fb[k]!r}" for k in base if fa[k] != fb[k]]
    if diff:
        raise OnnxFileError(f"{onnx_path}: exported for other feature settings than {model_name} "
                            f"({'; '.join(diff[:3])}{'; ...' if diff[3:] else ''}); export it again from this model")
    for key, what in _COMPARED[1:]:
        a, b = onnx_dict[key], model_dict[key]
        if key == "cmvn":
            a, b = _plain(a), _plain(b)
            same = all(len(a[k]) == len(b[k]) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
                                                      for x, y in zip(a[k], b[k])) for k in ("mean", "std"))
        else:
            same = list(a) == list(b)
        if not same:
            raise OnnxFileError(f"{onnx_path}: its {what} are not those of {model_name}; export it again from this model")
    ca = {k: v for k, v in onnx_dict["model_conf"].items() if k != "heads"}
    cb = {k: v for k, v in model_dict["model_conf"].items() if k != "heads"}
    if ca != cb:
        keys = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
        raise OnnxFileError(f"{onnx_path}: network settings differ from {model_name} ({', '.join(keys[:4])}); "
                            "export it again from this model")


class OnnxNet:
    """The network as an onnxruntime session, with the attributes :class:`Separator` reads of a ``ChimeraNet``.

    ``run(x, head)``: features ``(B, L, Din)`` (torch) -> the head's output as ChimeraNet gives it,
    float32 torch on ``x``'s device.
    """

    def __init__(self, data, onnx_dict, path, num_threads=0):
        ort = _need("onnxruntime")
        mc = onnx_dict["model_conf"]
        self.path = path
        self.n_freq, self.emb_dim, self.n_sources = mc.get("n_freq", 150), mc.get("emb_dim", 20), mc.get("n_sources", 2)
        self.mask_bins = mc.get("mask_bins", "mel")
        self.heads = tuple(h for h in ("mi", "dc") if h in mc.get("heads", ("dc", "mi")))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(0, int(num_threads or 0))  # 0: onnxruntime's default (all cores)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise OnnxFileError(f"{path}: onnxruntime cannot load it ({one_line(first, 200)})") from None

    def run(self, x, head):
        """The output of ``head`` (a head's name), or a list of the outputs of ``head`` (a tuple of heads' names,
        one run of the graph)."""
        names = [OUTPUTS[h] for h in (head if isinstance(head, tuple) else (head,))]
        feats = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = [torch.from_numpy(o).to(x.device) for o in self.session.run(names, {INPUT: feats})]
        return outs if isinstance(head, tuple) else outs[0]


def load_backend(model_dict, onnx_path, num_threads=0):
    """``(OnnxNet, frontend, cmvn)`` for :class:`Separator`: ``onnx_path`` read, checked, and checked against
    ``model_dict`` (a model file's dict, or the ONNX file's own settings from :func:`read_onnx`)."""
    from sepkit.frontend import CMVN, FeatureConfig, Frontend
    from sepkit.separate import SeparationError

    if onnx_path is None:
        raise SeparationError("the onnxruntime backend needs an ONNX file (onnx_path=; sepkit-separate --onnx FILE "
                              "or --model FILE.onnx), written by sepkit-export --onnx")
    onnx_dict, data = read_onnx(onnx_path)
    check_same_model(onnx_dict, model_dict, onnx_path, "the model given")
    net = OnnxNet(data, onnx_dict, onnx_path, num_threads)
    frontend = Frontend(FeatureConfig.from_dict(onnx_dict["feat_conf"]))
    return net, frontend, CMVN.from_dict(onnx_dict["cmvn"])
