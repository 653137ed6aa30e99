"""Training configuration: one flat set of keys, from a YAML file and the command line.

Every key is both a command-line option (``--hidden 600``; ``--train-dump`` and ``--train_dump``
are the same) and a YAML key of the same underscore name; the command line overrides the file
given with ``--config``. Rules that configargparse alone does not give:

* an unknown YAML key is an error naming the key and the file (no silently dropped settings);
* booleans accept ``true/false/yes/no/on/off/1/0`` (YAML booleans included);
* keys that may be empty accept ``none`` / ``null`` / YAML ``null`` (configargparse would drop a
  YAML null and keep the code default);
* ``mi_loss`` and ``dc_loss`` take the names of the registries :data:`sepkit.losses.MI_LOSSES` and
  :data:`~sepkit.losses.DC_LOSSES` (:mod:`sepkit.registry`), whose help texts make the keys' help; the
  modules of ``plugins`` are imported first, so that their entries are names too;
* ``--print_config`` prints every key with its default and help text as YAML, and
  :func:`dump_config` writes the resolved configuration (``exp/<tag>/config.yaml``), which is
  itself a valid ``--config`` file.
"""
import difflib
import importlib
import math
import sys

import configargparse
import yaml

from sepkit.losses import DC_LOSSES, MI_LOSSES  # registries only: sepkit.losses imports torch lazily
from sepkit.registry import Registry, RegistryError, load_plugins
from sepkit.train.curriculum import ConfigError, parse_curriculum

__all__ = ["ConfigError", "str2bool", "optional", "get_parser", "parse_config", "config_dict", "config_yaml",
           "dump_config", "parse_curriculum", "GROUPS"]

_NONE = ("none", "null", "~", "")


def str2bool(value):
    """``true/false/yes/no/on/off/1/0`` (any case) -> bool."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("true", "yes", "on", "1"):
        return True
    if v in ("false", "no", "off", "0"):
        return False
    raise configargparse.ArgumentTypeError(f"expected a boolean (true or false), got {value!r}")


def optional(kind):
    """Converter: ``none``/``null``/empty -> None, else ``kind(value)``."""

    def convert(value):
        if value is None or str(value).strip().lower() in _NONE:
            return None
        return kind(value)

    convert.__name__ = f"optional_{getattr(kind, '__name__', 'value')}"
    return convert


def _positive_int(value):
    v = int(value)
    if v <= 0:
        raise configargparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return v


def _positive_float(value):
    v = float(value)
    if not (v > 0 and math.isfinite(v)):  # a negative lr or clip norm trains uphill without a word
        raise configargparse.ArgumentTypeError(f"expected a finite number > 0, got {value!r}")
    return v


def _nonneg_float(value):
    v = float(value)
    if not (v >= 0 and math.isfinite(v)):
        raise configargparse.ArgumentTypeError(f"expected a finite number >= 0, got {value!r}")
    return v


def _factor(value):
    v = float(value)
    if not 0 < v <= 1:
        raise configargparse.ArgumentTypeError(f"expected a number in (0, 1], got {value!r}")
    return v


def _nonneg_int(value):
    v = int(value)
    if v < 0:
        raise configargparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return v


def _unit_float(value):
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise configargparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}")
    return v


def _curriculum(value):
    value = optional(str)(value)
    if value is not None:
        try:
            parse_curriculum(value)
        except ConfigError as exc:
            raise configargparse.ArgumentTypeError(str(exc)) from None
    return value


# (group, key, converter, default, help). The order is the order of --print_config. The help of a key whose
# CHOICES entry is a registry is followed by the registry's names and help texts (see _help).
_KEYS = [
    ("plugins", "plugins", optional(str), None,
     "comma-separated Python modules or .py files imported before the other keys are checked (in every "
     "training process): code of one's own that registers objectives, bodies or heads "
     "(docs/extending.md); none = no plugins"),
    ("model", "body", str, "blstm",
     "network body, a name of sepkit.nets.BODIES (the registries section of docs/config.md lists them; "
     "plugins may add one); blstm: the paper's BLSTM stack, set by hidden, layers, dropout and batch_norm "
     "(every body is given them)"),
    ("model", "lookahead", _nonneg_int, 0,
     "frames of future context of a causal body (body lstm: output frame t sees input frames <= t + lookahead); "
     "algorithmic latency = window + hop + lookahead x hop samples; 0 = strictly causal; only for causal bodies"),
    ("model", "hidden", _positive_int, 500, "BLSTM units per direction (paper: 500)"),
    ("model", "layers", _positive_int, 4, "number of BLSTM layers (paper: 4)"),
    ("model", "emb_dim", _positive_int, 20, "D, embedding dimension per T-F bin (paper: 20)"),
    ("model", "dropout", _unit_float, 0.0, "dropout between layers (MIREX system: 0.2)"),
    ("model", "batch_norm", str2bool, False,
     "sequence-wise batch norm of each BLSTM's input-to-hidden transform (MIREX system); "
     "statistics are per process under DDP"),
    ("model", "mask_activation", str, "softmax", "MI head non-linearity: softmax (paper) or sigmoid"),
    ("model", "mask_bins", str, "mel",
     "bins the heads output masks / embeddings for: mel (paper: one per mel band) or linear (one per STFT "
     "bin, n_fft / 2 + 1, as Chimera++; needs a dump made with bins: linear; the input stays feat_conf's)"),
    ("objective", "alpha", _unit_float, 0.1,
     "Chimera weight of the DC objective, Eq. (4): 1 = DC only, 0 = MI only (only the heads the "
     "objective uses are built)"),
    ("objective", "mi_loss", str, "msa", "MI objective, a name of sepkit.losses.MI_LOSSES"),
    ("objective", "dc_loss", str, "dc", "DC objective, a name of sepkit.losses.DC_LOSSES"),
    ("objective", "silence_db", optional(float), 40.0,
     "DC loss ignores bins this many dB below the segment's peak; none = weigh all bins"),
    ("objective", "dc_norm", str, "active",
     "TF that divides the DC term under silence weights: active = the non-silent bins, L_DC / active^2 "
     "(the DC weight grows by (TF / active)^2 against Eq. 4); all = every bin, L_DC / TF^2, exactly "
     "Eq. (4) with the paper's alpha. Same when silence_db is none"),
    ("optimisation", "optimizer", str, "rmsprop", "rmsprop (paper) or adam"),
    ("optimisation", "lr", _positive_float, 1e-3, "initial learning rate"),
    ("optimisation", "weight_decay", _nonneg_float, 0.0, "L2 weight decay"),
    ("optimisation", "grad_clip", optional(_positive_float), 5.0, "clip the global gradient norm to this; none = no clipping"),
    ("optimisation", "batch_size", _positive_int, 16,
     "GLOBAL batch size (segments per step over all processes); must divide by the number of processes"),
    ("optimisation", "epochs", _positive_int, 100, "maximum number of epochs (all curriculum stages together)"),
    ("optimisation", "steps_per_epoch", optional(_positive_int), None,
     "steps of every epoch whatever the corpus size, so that the budget is epochs x steps_per_epoch steps: "
     "a pass over the training segments that gives fewer full batches is followed by more passes (each in "
     "a new order), a longer one is cut; none = one pass per epoch"),
    ("optimisation", "patience", optional(_positive_int), 10,
     "early stopping: end the curriculum stage (the last one: training) after this many epochs "
     "without a better validation loss; none = never"),
    ("optimisation", "lr_schedule", str, "plateau",
     "plateau: multiply lr by lr_factor after lr_patience epochs without a better validation loss (paper "
     "configs); cosine: per step, warmup_steps of linear warm-up, then a half cosine from lr down to min_lr "
     "at the last step of epochs x steps_per_epoch (needs steps_per_epoch)"),
    ("optimisation", "warmup_steps", _nonneg_int, 0, "linear warm-up steps of lr_schedule cosine"),
    ("optimisation", "lr_patience", _nonneg_int, 3,
     "reduce the learning rate after this many epochs without a better validation loss"),
    ("optimisation", "lr_factor", _factor, 0.5, "learning-rate reduction factor"),
    ("optimisation", "min_lr", _nonneg_float, 1e-6, "learning rate floor"),
    ("segments", "segment_frames", _positive_int, 100, "training segment length in frames (paper: 100)"),
    ("segments", "curriculum", _curriculum, None,
     "curriculum as FRAMES:EPOCHS stages, e.g. '100:30,500' (MIREX: 100-frame segments, then 500); "
     "the last stage may omit EPOCHS (runs to 'epochs'); overrides segment_frames; none = off"),
    ("segments", "valid_segment_frames", optional(_positive_int), None,
     "validation segment length, fixed for the whole run so that losses compare across epochs; "
     "none = the last curriculum stage's length (or segment_frames)"),
    ("data", "num_workers", _nonneg_int, 2, "DataLoader worker processes per training process"),
    ("data", "pin_memory", str2bool, True, "pinned host memory for batches (used on CUDA only)"),
    ("data", "prefetch_factor", _positive_int, 4, "batches each worker loads ahead"),
    ("data", "dynamic_mix", str2bool, False,
     "dynamic mixing (sepkit.data.dynamic_mix, docs/data.md): every training example is mixed on the fly from "
     "stems of the data dir's tracks (dm_data): per source a random track and offset, a random gain and channel "
     "swap; the mixture is the SUM of the drawn stems, not an official mix. Example i of epoch e depends on "
     "(seed, e, i) only. The features and CMVN are the training dump's; validation stays on valid_dump. "
     "false = training segments of train_dump"),
    ("data", "dm_data", optional(str), None,
     "dynamic mixing: data dir of the training tracks (data/<training set>); none = the data dir the training "
     "dump was computed from (its .sepkit_dump record)"),
    ("data", "dm_examples_per_epoch", optional(_positive_int), None,
     "dynamic mixing: examples per epoch; none = steps_per_epoch x batch_size when steps_per_epoch is set, "
     "else as many as the training dump's segments"),
    ("data", "dm_gain_min", _positive_float, 0.25, "dynamic mixing: lowest random gain of a stem (open-unmix: 0.25)"),
    ("data", "dm_gain_max", _positive_float, 1.25, "dynamic mixing: highest random gain of a stem (open-unmix: 1.25)"),
    ("data", "dm_swap_prob", _unit_float, 0.5,
     "dynamic mixing: probability of swapping the channels of a stereo stem (before the mono downmix of the "
     "features, which the swap does not change)"),
    ("data", "dm_same_track_prob", _unit_float, 0.0,
     "dynamic mixing: probability that one track gives every source of an example, at one offset (a coherent "
     "excerpt); otherwise each source has its own track (different ones when there are enough) and offset"),
    ("data", "dm_cache_mb", _nonneg_int, 1024,
     "dynamic mixing: keep the stems, resampled to the model's rate, in memory when they fit in this many MiB "
     "(per training process); otherwise every segment is read from disk (partial reads); 0 = always from disk"),
    ("runtime", "seed", int, 0, "random seed: weights, data order (a function of seed and epoch), dropout"),
    ("runtime", "keep_last_n", _positive_int, 3, "resume checkpoints kept (checkpoints/ckpt-epoch<N>.pt)"),
    ("runtime", "log_interval", _positive_int, 50, "steps between train.log lines and TensorBoard scalars"),
    ("runtime", "dtype", str, "float32", "float32, or bfloat16 (autocast of the network; losses stay float32)"),
    ("runtime", "device", str, "auto", "auto (cuda when available), cpu or cuda"),
    ("runtime", "tensorboard", str2bool, True, "write TensorBoard events to <outdir>/tensorboard"),
    ("runtime", "tb_example_frames", _positive_int, 500,
     "frames of the fixed validation example drawn and played in TensorBoard"),
    ("runtime", "max_steps_per_epoch", optional(_positive_int), None,
     "cut every epoch after this many steps; none = full epochs. Without steps_per_epoch, a warning says "
     "when one pass over the data is under half of this (the run is then much shorter than intended)"),
    ("runtime", "max_valid_batches", optional(_positive_int), None,
     "validate on at most this many batches per process; none = all"),
    ("paths", "train_dump", optional(str), None, "training feature dump (dump/<feat_tag>/<set>, with cmvn.ark)"),
    ("paths", "valid_dump", optional(str), None, "validation feature dump"),
    ("paths", "valid_data", optional(str), None,
     "validation data dir (data/<set>): mixture audio for the TensorBoard audio examples; none = no audio"),
    ("paths", "outdir", optional(str), None, "experiment dir exp/<tag>"),
    ("paths", "init_model", optional(str), None,
     "fine-tuning: the parent network to start from when no checkpoint is resumed: a model file (exported, "
     "or exp/<tag>/model.pt), an exp/<tag> or hub folder, a training checkpoint (exp/<tag>/checkpoints/"
     "ckpt-epoch<N>.pt) or a hub id owner/name[@revision]. Its feature settings must equal the training "
     "dump's (feat_conf.yaml); the body's weights are all taken, every other tensor of the same name and "
     "shape too (the linear layer to Z, a head), and the rest (a head for another source count or "
     "embedding size, a head the parent lacks) keeps its fresh initialisation; train.log lists both. "
     "Refused: another body or body size, or a parent with no head in common (a DC-only parent into an "
     "MI-only network). The dump's own CMVN is used. Not applied when a checkpoint is resumed; none = random "
     "initialisation"),
    ("paths", "resume", str, "auto",
     "auto = continue from the newest valid checkpoint in <outdir>/checkpoints (if any); "
     "none = start fresh (refused if checkpoints exist); or a checkpoint file"),
]
# A registry as choices: its names when the value is checked (plugins loaded), not when the parser is made.
CHOICES = {"mask_activation": ("softmax", "sigmoid"), "mask_bins": ("mel", "linear"), "mi_loss": MI_LOSSES,
           "dc_loss": DC_LOSSES, "dc_norm": ("active", "all"),
           "optimizer": ("rmsprop", "adam"), "lr_schedule": ("plateau", "cosine"),
           "dtype": ("float32", "bfloat16"), "device": ("auto", "cpu", "cuda")}
# Registries of torch modules: "module:attribute", imported when a configuration is checked (training imports
# them anyway), not for --help or --print_config.
LAZY_CHOICES = {"body": "sepkit.nets:BODIES"}
GROUPS = {}
for _g, _k, *_ in _KEYS:
    GROUPS.setdefault(_g, []).append(_k)
REQUIRED = ("train_dump", "valid_dump", "outdir")


class _Loader(yaml.SafeLoader):
    """YAML loader that resolves only booleans and null; every other scalar stays text.

    The keys' own converters then read the text, so YAML 1.1 surprises cannot happen
    (``100:10`` is not the base-60 integer 6010, ``0123`` is not octal).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:null")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _StrictYAML(configargparse.YAMLConfigFileParser):
    """YAML parser that rejects unknown keys (naming key and file) and keeps null and booleans."""

    known = frozenset()  # set once from _KEYS below

    def parse(self, stream):
        name = getattr(stream, "name", "config")
        try:
            data = yaml.load(stream, Loader=_Loader)  # noqa: S506 (a safe loader)
        except yaml.YAMLError as exc:
            raise configargparse.ConfigFileParserException(f"{name}: not valid YAML ({str(exc).splitlines()[0]})")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise configargparse.ConfigFileParserException(f"{name}: expected a mapping of key: value lines")
        out = {}
        for key, value in data.items():
            key = str(key)
            if key not in self.known:
                close = difflib.get_close_matches(key, sorted(self.known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise configargparse.ConfigFileParserException(f"{name}: unknown key {key!r}{hint}")
            if isinstance(value, (list, dict)):
                raise configargparse.ConfigFileParserException(f"{name}: key {key!r} needs a single value")
            if value is None:
                out[key] = "none"
            elif isinstance(value, bool):
                out[key] = "true" if value else "false"
            else:
                out[key] = str(value)
        return out


_StrictYAML.known = frozenset(k for _, k, *_ in _KEYS)


class _ArgParser(configargparse.ArgParser):
    def error(self, message):
        # One line (no usage block): the message names the key or file at fault.
        self.exit(2, f"{self.prog}: error: {message}\n")


def get_parser(prog="sepkit.bin.train"):
    """The training parser: ``--config FILE`` plus one option per key of :data:`_KEYS`."""
    parser = _ArgParser(
        prog=prog, config_file_parser_class=_StrictYAML,
        description="Train a DC / MI / Chimera network on feature dumps (single process, or one process per "
                    "GPU under torchrun; see utils/train.sh). Every option is also a YAML key of --config.",
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", is_config_file=True, help="YAML file of the keys below (command line wins)")
    parser.add_argument("--print_config", "--print-config", action="store_true",
                        help="print every key with its default as YAML and exit")
    groups = {}
    for group, key, conv, default, text in _KEYS:
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        names = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        kw = dict(type=conv, default=default, help=_help(key, text).replace("%", "%%"), metavar=key.upper())
        if conv is str2bool:
            kw.update(nargs="?", const=True, metavar="BOOL")
        if key in CHOICES and not isinstance(CHOICES[key], Registry):  # registries: check_config
            kw["choices"] = CHOICES[key]
            kw.pop("metavar")
        groups[group].add_argument(*names, **kw)
    return parser


def _help(key, text):
    """The help text of ``key``: a registry's keys end with its entries (``name: help; ...``)."""
    choices = CHOICES.get(key)
    return f"{text}: {choices.describe()}" if isinstance(choices, Registry) else text


def parse_config(argv=None, parser=None, require_paths=True):
    """Parse ``argv``; returns an ``argparse.Namespace`` of every key (``print_config`` exits).

    Raises ``SystemExit`` with a one-line message on bad values or combinations.
    """
    parser = parser or get_parser()
    args = parser.parse_args(argv)
    if args.print_config:
        try:
            load_plugins(args.plugins)  # their entries are listed in the help comments too
        except RegistryError as exc:
            parser.error(str(exc))
        sys.stdout.write(default_config_yaml())
        raise SystemExit(0)
    missing = [k for k in REQUIRED if require_paths and getattr(args, k) is None]
    if missing:
        parser.error("missing " + ", ".join(f"--{k}" for k in missing))
    try:
        check_config(vars(args))
    except ConfigError as exc:
        parser.error(str(exc))
    return args


def check_config(conf):
    """Cross-key checks (value ranges per key are done by the converters).

    A curriculum whose stages all have epoch counts is simply cut at ``epochs``; one whose last
    stage runs "until epochs" must leave it at least one epoch. The ``plugins`` are imported here,
    before the names of the registries' keys are checked.
    """
    try:
        load_plugins(conf.get("plugins"))
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    for key, registry in CHOICES.items():
        if isinstance(registry, Registry) and key in conf and conf[key] not in registry:
            raise ConfigError(registry.unknown(conf[key]))
    for key, where in LAZY_CHOICES.items():
        if key in conf:
            module, attr = where.split(":")
            registry = getattr(importlib.import_module(module), attr)
            if conf[key] not in registry:
                raise ConfigError(registry.unknown(conf[key]))
    from sepkit.nets import BODIES

    body = conf.get("body", "blstm")
    if conf.get("lookahead", 0):
        if not BODIES.setting(body, "causal"):
            raise ConfigError(f"lookahead {conf['lookahead']} is for a causal body (body lstm); body {body} sees "
                              "the whole sequence")
        if conf["lookahead"] > 1000:
            raise ConfigError(f"lookahead must be at most 1000 frames, got {conf['lookahead']}")
    if conf.get("batch_norm") and BODIES.setting(body, "causal"):
        raise ConfigError(f"batch_norm is not causal (its statistics are over time): body {body} has none")
    if conf.get("lr_schedule") == "cosine":
        if conf.get("steps_per_epoch") is None:
            raise ConfigError("lr_schedule cosine needs steps_per_epoch (its decay ends at the last step of "
                              "epochs x steps_per_epoch)")
        if conf.get("warmup_steps", 0) >= conf["epochs"] * conf["steps_per_epoch"]:
            raise ConfigError(f"warmup_steps {conf['warmup_steps']} leaves no step of the budget "
                              f"epochs x steps_per_epoch = {conf['epochs'] * conf['steps_per_epoch']} to decay over")
    elif conf.get("warmup_steps", 0):
        raise ConfigError("warmup_steps needs lr_schedule cosine (plateau has no warm-up)")
    if conf.get("dm_gain_min", 0.25) > conf.get("dm_gain_max", 1.25):
        raise ConfigError(f"dm_gain_min {conf['dm_gain_min']} is above dm_gain_max {conf['dm_gain_max']}")
    stages = parse_curriculum(conf["curriculum"])
    if stages is not None and stages[-1][1] is None:
        if sum(e for _, e in stages[:-1]) >= conf["epochs"]:
            raise ConfigError(f"curriculum {conf['curriculum']!r} leaves no epochs for its last stage "
                              f"with epochs={conf['epochs']}")


def config_dict(args):
    """The resolved configuration as a plain dict in ``--print_config`` order."""
    conf = vars(args) if not isinstance(args, dict) else args
    return {k: conf[k] for _, k, *_ in _KEYS}


def config_yaml(conf, comments=False):
    """YAML text of a configuration dict, grouped by section (help text as comments if asked)."""
    helps = {k: _help(k, h) for _, k, _, _, h in _KEYS}
    lines = []
    for group, keys in GROUPS.items():
        lines.append(f"# --- {group} ---")
        for key in keys:
            if comments:
                lines.append(f"# {helps[key]}")
            lines.append(yaml.safe_dump({key: conf[key]}, default_flow_style=False, width=1000).rstrip("\n"))
    return "\n".join(lines) + "\n"


def default_config_yaml():
    return config_yaml({k: d for _, k, _, d, _ in _KEYS}, comments=True)


def dump_config(path, args):
    """Write the resolved configuration atomically to ``path`` (a valid ``--config`` file)."""
    from sepkit.audio import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("# resolved training configuration (written by sepkit.bin.train)\n")
            f.write(config_yaml(config_dict(args)))
