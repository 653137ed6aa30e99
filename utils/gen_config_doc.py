#!/usr/bin/env python3
"""Write docs/config.md, the reference of every configuration key, from the code itself.

    utils/gen_config_doc.py            # (re)write docs/config.md
    utils/gen_config_doc.py --check    # exit 1 when docs/config.md is not what the code gives

Sources, so that the page cannot drift from the code: the parsers of the training keys
(sepkit.train.config) and of every ``python -m sepkit.bin.<verb>``; the registries of objectives,
bodies, heads and networks (REGISTRIES; the help of mi_loss and dc_loss lists their entries too, so a
registered objective appears here once the page is regenerated); sepkit.frontend.FeatureConfig;
the folder-corpus description (sepkit.data.corpora.folder.DEFAULTS and the option help of
egs/folder/chimera/local/prepare_folder.py); and the option lines of the shipped recipes' run.sh and of
the stage scripts utils/*.sh (the ``name=value  # comment`` lines that parse_options.sh reads).
tests/test_docs.py runs ``--check``.
"""
import argparse
import dataclasses
import importlib
import importlib.util
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "config.md"
# FeatureConfig has no help strings; every field must have one here (a new field fails loudly).
FEATURE_HELP = {
    "sample_rate": "audio is made mono and resampled to this rate (Hz) before the STFT",
    "n_fft": "STFT size (points); the paper: 512 at 16 kHz (32 ms)",
    "hop_length": "STFT hop (samples); a signal of N samples has 1 + N // hop frames",
    "win_length": "analysis window length (samples); 0 = n_fft",
    "n_mels": "mel bands F: the network's output resolution (the paper: 150)",
    "fmin": "lowest mel band edge (Hz)",
    "fmax": "highest mel band edge (Hz); 0 = sample_rate / 2",
    "use_delta": "append first-order deltas to the log-mel input (input dim 2 F)",
    "bins": "magnitudes the dump stores (mixture, sources, PSA targets): mel (n_mels bands) or linear "
            "(n_fft / 2 + 1 STFT bins; needed by mask_bins: linear and input: logmag)",
    "input": "network input: logmel (log-mel, from linear magnitudes through the mel filters) or logmag "
             "(log STFT magnitude; needs bins: linear)",
    "phase_sensitive": "also store |S_c| cos(theta_c - theta_X) per source, on the dump's bins: needed by "
                       "mi_loss {phase} (about 1 + C/(C+1) times the dump size)",
}
# The recipes documented: those shipped with sepkit (the table of docs/recipes.md; tests/test_docs.py checks
# that the two agree), not whichever egs/*/*/run.sh exist, so that a recipe made with utils/new_recipe.sh
# (it has egs/TEMPLATE's options, documented here) leaves this page up to date.
RECIPES = ("egs/dsd100/chimera", "egs/folder/chimera", "egs/ikala/eval", "egs/mir1k/chimera", "egs/musdb18/chimera",
           "egs/TEMPLATE")
_OPTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S*)\s*(?:#\s?(.*))?$")


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def code(value):
    if value is None or value == "":
        return ""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return f"`{text}`" if "`" not in text else text


def table(rows, header=("key", "default", "meaning")):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parser_rows(parser, skip=("help",)):
    """``{group title: [(options, default, help)]}`` of an argparse parser, in declaration order."""
    out = {}
    for group in parser._action_groups:  # argparse keeps no public list of groups
        rows = []
        for action in group._group_actions:
            if action.dest in skip or action.help == argparse.SUPPRESS:
                continue
            names = ", ".join(action.option_strings) or action.dest
            help_text = action.help or ""
            try:
                help_text = help_text % {**vars(action), "prog": parser.prog}
            except (KeyError, TypeError, ValueError):
                pass
            default = None if action.option_strings == [] or action.default is argparse.SUPPRESS else action.default
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction)) and not default:
                default = None
            rows.append((code(names), code(default), help_text))
        if rows:
            out[group.title] = rows
    return out


def shell_options(path):
    """``[(name, value, comment)]`` of a script's option lines (before parse_options.sh is sourced)."""
    rows, seen = [], set()
    for line in Path(path).read_text().splitlines():
        if "parse_options.sh" in line and not line.lstrip().startswith("#"):
            break
        m = _OPTION.match(line)
        if m and m.group(1) not in seen:
            seen.add(m.group(1))
            rows.append((m.group(1), m.group(2).strip("\"'"), m.group(3) or ""))
    return rows


def training_section():
    from sepkit.train.config import get_parser

    lines = ["## Training: `python -m sepkit.bin.train`, `conf/tuning/*.yaml`", "",
             "Every key is a YAML key of `--config FILE` and a command-line option (`--key value`, "
             "`--key-with-dashes value`); the command line wins, an unknown YAML key is an error. A recipe "
             "passes its `--train_args \"--key value ...\"` here. `exp/<tag>/config.yaml` is the resolved set. "
             "`python -m sepkit.bin.train --print_config` prints the same keys as YAML.", ""]
    parser = get_parser()
    for group in parser._action_groups:
        rows = [(code(a.dest), code("none" if a.default is None else a.default), a.help.replace("%%", "%"))
                for a in group._group_actions
                if a.dest not in ("help", "config", "print_config")]
        if rows:
            lines += [f"### {group.title}", "", table(rows), ""]
    return lines


# The registries documented (sepkit/registry.py): (module, attribute, what chooses an entry).
REGISTRIES = (("sepkit.losses", "MI_LOSSES", "training key `mi_loss`"),
              ("sepkit.losses", "DC_LOSSES", "training key `dc_loss`"),
              ("sepkit.nets", "BODIES", "training key `body`"),
              ("sepkit.nets", "HEADS", "built as the training key `alpha` says: 0 mi, 1 dc, else both"),
              ("sepkit.nets", "MODELS", "`type` of a model file's `model_conf`"))


def registries_section():
    lines = ["## Registries: objectives, bodies, heads, networks", "",
             "The names that the keys above (and model files) choose among, with their help texts, read from "
             "the registries of `sepkit/registry.py`; [extending.md](extending.md) adds one. A plugin's entries "
             "(training key `plugins`) are names too, but not listed here.", ""]
    for module, attr, chosen in REGISTRIES:
        registry = getattr(importlib.import_module(module), attr)
        lines += [f"### `{module}.{attr}` ({chosen})", "",
                  table([(code(n), registry.help(n)) for n in registry.names()], ("name", "meaning")), ""]
    return lines


def features_section():
    from sepkit.frontend import FeatureConfig

    from sepkit.losses import MI_LOSSES

    phase = MI_LOSSES.names_with("needs_phase")  # the registry says which objectives need the phase
    phase = ", ".join(phase[:-1]) + " and " + phase[-1] if len(phase) > 1 else "".join(phase) or "(none)"
    rows = []
    for field in dataclasses.fields(FeatureConfig):
        if field.name not in FEATURE_HELP:
            raise SystemExit(f"gen_config_doc: FeatureConfig.{field.name} has no help text in FEATURE_HELP")
        rows.append((code(field.name), code(field.default), FEATURE_HELP[field.name].format(phase=phase)))
    return ["## Features: `conf/feats.yaml` (`sepkit.frontend.FeatureConfig`)", "",
            "The feature dump `dump/<name of the file>/` is computed with these settings and the model file "
            "stores them, so separation uses the same ones. A training config `conf/tuning/X.yaml` with a "
            "link `X.feat_conf -> ../feats/<setting>.yaml` beside it uses that file instead.", "",
            table(rows), ""]


def folder_section():
    from sepkit.data.corpora.folder import DEFAULTS

    spec = importlib.util.spec_from_file_location("prepare_folder",
                                                  ROOT / "egs" / "folder" / "chimera" / "local" / "prepare_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = [(code(k), code(module._default(k)) if DEFAULTS[k] not in (None, []) else "", module.HELP[k])
            for k in DEFAULTS]
    return ["## Folder corpus description: `egs/folder/chimera` (`--corpus_conf FILE.yaml`)", "",
            "The keys of the YAML description of a corpus laid out as one folder per song "
            "(`sepkit.data.corpora.folder`). Each is also an option of `egs/folder/chimera/run.sh` "
            "(`--seed` is `--split_seed` there) and of `local/prepare_folder.py`; an option given wins over "
            "the file. In YAML, `sources` is a mapping `name: [files]` and `exclude` a list.", "",
            table(rows), ""]


def recipes_section():
    lines = ["## Recipe options: `egs/<corpus>/<recipe>/run.sh`", "",
             "Options are the variables at the top of `run.sh` (`--name value` or `--name-with-dashes value`; "
             "`./run.sh --help` prints them with their values). `--config FILE` sources a file of "
             "`name=value` lines first. A recipe made with `utils/new_recipe.sh` has the options of "
             "`egs/TEMPLATE`.", ""]
    for name in RECIPES:
        run_sh = ROOT / name / "run.sh"
        if not run_sh.is_file():
            raise SystemExit(f"gen_config_doc: {run_sh} not found (a recipe of RECIPES)")
        title = f"`{name}`" + (" (what `utils/new_recipe.sh` makes)" if run_sh.parent.name == "TEMPLATE" else "")
        lines += [f"### {title}", "", table([(code(f"--{n}"), code(v), c) for n, v, c in shell_options(run_sh)],
                                            ("option", "default", "meaning")), ""]
    return lines


def stage_scripts_section():
    lines = ["## Stage scripts: `utils/*.sh`", "",
             "The shared stages every recipe calls; options as for recipes (`--help` prints the header).", ""]
    for script in sorted(ROOT.glob("utils/*.sh")):
        text = script.read_text()
        if "parse_options.sh" not in text:
            continue
        rows = [(code(f"--{n}"), code(v), c) for n, v, c in shell_options(script)]
        if rows:
            lines += [f"### `utils/{script.name}`", "", table(rows, ("option", "default", "meaning")), ""]
    return lines


def tools_section():
    import sepkit.bin

    lines = ["## Command-line tools: `python -m sepkit.bin.<verb>`", "",
             "Each recipe stage is a call of one of these (`--help` prints the same text). "
             "`python -m sepkit.bin.train`: see Training above.", ""]
    for info in sorted(pkgutil.iter_modules(sepkit.bin.__path__), key=lambda m: m.name):
        if info.name == "train":
            continue
        module = importlib.import_module(f"sepkit.bin.{info.name}")
        if not hasattr(module, "get_parser"):
            continue
        parser = module.get_parser()
        first = (module.__doc__ or parser.description or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [f"### `{info.name}`", "", first, ""]
        rows = [r for rows in parser_rows(parser).values() for r in rows]
        lines += [table(rows, ("option", "default", "meaning")), ""]
    return lines


def render():
    sys.path.insert(0, str(ROOT))
    lines = ["# Configuration reference", "",
             "<!-- Generated by utils/gen_config_doc.py from the code; do not edit by hand. "
             "tests/test_docs.py fails when this page is stale. -->", "",
             "Every key, option and default below is read from the code. Contents: "
             "[training](#training-python--m-sepkitbintrain-conftuningyaml), "
             "[registries](#registries-objectives-bodies-heads-networks), "
             "[features](#features-conffeatsyaml-sepkitfrontendfeatureconfig), "
             "[folder corpus](#folder-corpus-description-egsfolderchimera---corpus_conf-fileyaml), "
             "[recipes](#recipe-options-egscorpusreciperunsh), [stage scripts](#stage-scripts-utilssh), "
             "[tools](#command-line-tools-python--m-sepkitbinverb).", ""]
    for section in (training_section, registries_section, features_section, folder_section, recipes_section, stage_scripts_section,
                    tools_section):
        lines += section()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="utils/gen_config_doc.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/config.md is stale")
    parser.add_argument("--out", default=str(OUT), help="output file (docs/config.md)")
    args = parser.parse_args(argv)
    text = render()
    out = Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            print(f"gen_config_doc: {out} is stale (the code changed): run utils/gen_config_doc.py", file=sys.stderr)
            return 1
        print(f"gen_config_doc: {out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"gen_config_doc: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
