"""Pack a trained model into a hub-ready folder: model file, configuration and model card.

Usage::

    sepkit-pack exp/<tag> hub/<name> --data "MIR-1K, abjones + amy" --data_licence "research only" \\
        --licence cc-by-nc-4.0 --results RESULTS.md      # or: python -m sepkit.bin.pack_hub ...
    hf upload <owner>/<name> hub/<name> .                 # with network and a hub token
    sepkit-separate --model <owner>/<name> --outdir sep song.wav

OUTDIR receives (layout of :mod:`sepkit.hub`):

* ``model.pt``: the exported model file (as ``sepkit-export``: weights and settings only, no optimiser
  or resume state; loaded with ``torch.load(weights_only=True)``);
* ``config.yaml``: its settings as plain YAML (``sources``, ``model_conf``, ``feat_conf``, ``train``);
* ``README.md``: the model card, with hub front matter (``library_name: sepkit``, ``license``, tags) and
  sections: training data and its licence; the recipe, the training command (the ``command:`` line of
  ``exp/<tag>/train.log``), its configuration (``exp/<tag>/config.yaml``) and the sepkit commit; the
  results: the tables of ``--results FILE`` (a recipe's RESULTS.md or ``exp/RESULTS.md``; where some
  rows' first cell is the experiment's tag only those rows are kept), or a line saying none was given.

The source is an ``exp/<tag>`` directory, a model or checkpoint file, or a hub id. OUTDIR is written
at once (a temporary folder renamed into place): an existing OUTDIR is refused, and ``--overwrite``
replaces only a folder this tool wrote (its three files and nothing else).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PROG = "sepkit-pack"
_LICENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}\Z")  # a hub licence id (apache-2.0, cc-by-nc-4.0, other)


class PackError(RuntimeError):
    """One line naming the file or folder and the problem."""


def get_parser():
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("model", metavar="EXP_OR_MODEL", help="exp/<tag> directory, model or checkpoint file, or hub id")
    p.add_argument("outdir", metavar="OUTDIR", help="hub folder to write (its name is the model's name)")
    p.add_argument("--data", default="", help="training data, as the card should name it (default: not stated)")
    p.add_argument("--data_licence", "--data_license", default="",
                   help="the training data's licence or terms of use (default: not stated)")
    p.add_argument("--licence", "--license", default="other",
                   help="the model's licence, a hub licence id such as apache-2.0 or cc-by-nc-4.0 (default: other)")
    p.add_argument("--recipe", default="",
                   help="recipe that made it (default: egs/<corpus>/<recipe> when the exp is inside one)")
    p.add_argument("--results", default="", metavar="FILE", help="Markdown file whose tables the card copies")
    p.add_argument("--repo_id", default="", metavar="OWNER/NAME",
                   help="the hub id the card's example uses (default: <owner>/<OUTDIR's name>)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTDIR when this tool wrote it")
    return p


def _line(text):
    from sepkit.model_io import one_line

    return one_line(text, limit=500)


def _exp_dir(model):
    """The ``exp/<tag>`` directory behind ``model`` (a dir, or its model.pt), or None for an exported file."""
    path = Path(model)
    if path.is_dir():
        return path
    for exp in (path.parent, path.parent.parent):  # exp/<tag>/model.pt, exp/<tag>/checkpoints/<ckpt>.pt
        if path.suffix == ".pt" and (exp / "train.log").is_file():
            return exp
    return None


def _train_command(exp):
    log = exp / "train.log" if exp is not None else None
    if log is None or not log.is_file():
        return None
    found = None
    with open(log, errors="replace") as f:
        for line in f:
            if "command: " in line:
                found = line.split("command: ", 1)[1].strip()  # the last run's (a resumed run logs it again)
    return found


def _recipe(exp):
    if exp is None:
        return None
    parts = exp.resolve().parts
    for i in range(len(parts) - 4, -1, -1):
        if parts[i] == "egs" and i + 3 < len(parts) and parts[i + 3] == "exp":
            return "/".join(parts[i:i + 3])
    return None


def _git_commit():
    """``<commit>`` (``+ local changes`` when dirty) of the sepkit checkout doing the packing, or None."""
    import sepkit

    root = Path(sepkit.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" (with local changes)" if dirty else "")


def results_tables(path, tag=None):
    """The Markdown tables of ``path``, each under the heading above it; rows of ``tag`` only where it has some."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        raise PackError(f"{path}: cannot read the results file ({exc.strerror or exc})") from None
    tables, heading, cur, fenced = [], None, None, False
    for line in lines + [""]:
        if line.lstrip().startswith(("```", "~~~")):  # a code block: its lines are neither tables nor headings
            fenced, cur = not fenced, None
        elif fenced:
            continue
        elif line.lstrip().startswith("|"):
            if cur is None:
                cur = {"heading": heading, "rows": []}
                tables.append(cur)
            cur["rows"].append(line.strip())
        else:
            cur = None
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
    if not tables:
        raise PackError(f"{path}: no Markdown table in the results file")

    def first_cell(row):
        cells = row.strip("|").split("|")
        return cells[0].strip().strip("`*").rsplit("/", 1)[-1] if cells else ""

    if tag and any(first_cell(r) == tag for t in tables for r in t["rows"][2:]):
        tables = [{"heading": t["heading"], "rows": t["rows"][:2] + [r for r in t["rows"][2:] if first_cell(r) == tag]}
                  for t in tables if any(first_cell(r) == tag for r in t["rows"][2:])]
    return tables


def model_card(d, name, args, exp, results):
    """The README.md text of the hub folder."""
    import yaml

    import sepkit
    from sepkit.hub import PACK_MARK

    repo_id = args.repo_id or f"<owner>/{name}"
    heads = d["model_conf"].get("heads", ["dc", "mi"])
    fc = d["feat_conf"]
    n = sum(v.numel() for v in d["model_state"].values())
    command, recipe = _train_command(exp), args.recipe or _recipe(exp)
    commit = _git_commit()
    out = ["---", "library_name: sepkit", f"license: {args.licence}", "tags:", "- audio-source-separation",
           "- music-source-separation", "- sepkit", "---", PACK_MARK, "", f"# {name}", "",
           _line(f"A sepkit {d['model_conf'].get('type', 'chimera')} network ({n:,} parameters, heads "
                 f"{', '.join(heads)}) separating {', '.join(d['sources'])} at {fc.get('sample_rate')} Hz, "
                 f"packed by sepkit {sepkit.__version__} (model file written by sepkit {d.get('sepkit_version')})."),
           "", "## Use", "", "```sh", "pip install sepkit huggingface_hub",
           f"sepkit-separate --model {repo_id} --outdir sep song.wav   # --head dc: the deep-clustering head",
           "```", "", "```python", "from sepkit import Separator", "",
           f'sep = Separator.from_pretrained("{repo_id}")', "```", "",
           "`model.pt` holds plain data only and loads with `torch.load(weights_only=True)`; `config.yaml` lists "
           "its settings.", "", "## Training data and its licence", "",
           f"- data: {_line(args.data) if args.data else 'not stated by the packer'}",
           f"- licence of the data: {_line(args.data_licence) if args.data_licence else 'not stated by the packer'}",
           f"- licence of this model: {args.licence}", "", "## Recipe and command", "",
           f"- recipe: {_line(recipe) if recipe else 'not recorded'}",
           f"- training command: {'`' + _line(command) + '`' if command else 'not recorded (no train.log)'}",
           f"- sepkit commit at packing time: {commit or 'not available (not a git checkout)'}"]
    conf = exp / "config.yaml" if exp is not None else None
    if conf is not None and conf.is_file():
        try:
            text = yaml.safe_dump(yaml.safe_load(conf.read_text()), sort_keys=True, default_flow_style=False)
        except (OSError, yaml.YAMLError) as exc:
            raise PackError(f"{conf}: cannot read the training configuration ({_line(exc)})") from None
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))  # the text cannot close it
        out += ["", f"Training configuration (`{exp.name}/config.yaml`):", "", fence + "yaml", text.rstrip(), fence]
    out += ["", "## Results", ""]
    if results is None:
        out.append("No results table given (sepkit-pack --results).")
    else:
        src, tables = results
        out.append(f"From `{Path(src).name}`:")
        for t in tables:
            out += [""] + ([f"**{_line(t['heading'])}**", ""] if t["heading"] else []) + [_line(r) for r in t["rows"]]
    return "\n".join(out) + "\n"


def _ours(out):
    """Why ``out`` is not a folder this tool wrote (None when it is)."""
    from sepkit.hub import HUB_FILES, PACK_MARK

    if out.is_symlink() or not out.is_dir():
        return "is not a folder"
    for entry in sorted(os.listdir(out)):
        p = out / entry
        if entry not in HUB_FILES or p.is_symlink() or not p.is_file():
            return f"holds {entry!r}, which sepkit-pack does not write"
    try:
        if PACK_MARK not in (out / "README.md").read_text(errors="replace"):
            return "was not written by sepkit-pack (its README.md lacks the mark)"
    except OSError:
        return "was not written by sepkit-pack (its README.md lacks the mark)"
    return None


def pack(model, outdir, args):
    """Write the hub folder ``outdir`` for ``model``; returns the exported model dict. Raises PackError."""
    import yaml

    from sepkit.audio import umask_mkdtemp
    from sepkit.bin.export import export
    from sepkit.hub import CARD_FILE, CONFIG_FILE, MODEL_FILE
    from sepkit.model_io import ModelFileError
    from sepkit.names import name_problem

    out = Path(outdir)
    why = name_problem(out.name)
    if why is not None:  # the folder's name is the model's name on the hub
        raise PackError(f"{outdir}: the folder name {why}")
    if args.repo_id:
        from sepkit.hub import parse_hub_id

        hub = parse_hub_id(args.repo_id)
        if hub is None or hub[1] is not None:
            raise PackError(f"--repo_id {args.repo_id!r}: not a hub id owner/name (each a safe name)")
    if not _LICENCE.match(args.licence):
        raise PackError(f"--licence {args.licence!r}: not a licence id (letters, digits, . + -; e.g. apache-2.0)")
    if os.path.lexists(out):
        if not args.overwrite:
            raise PackError(f"{out}: exists (use --overwrite to replace a folder sepkit-pack wrote)")
        why = _ours(out)
        if why is not None:
            raise PackError(f"{out}: {why}; not replacing it (choose another OUTDIR)")
    exp = _exp_dir(model)
    results = (args.results, results_tables(args.results, exp.name if exp else None)) if args.results else None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = umask_mkdtemp(prefix=f".{out.name}.", suffix=".packing", dir=out.parent)
    except OSError as exc:
        raise PackError(f"{out}: cannot write ({exc.strerror or exc})") from None
    try:
        try:
            d = export(model, tmp / MODEL_FILE)
        except ModelFileError as exc:
            raise PackError(str(exc).replace(str(tmp / MODEL_FILE), str(out / MODEL_FILE))) from None
        conf = {"format": d["format"], "sepkit_version": d["sepkit_version"], "sources": list(d["sources"]),
                "model_conf": d["model_conf"], "feat_conf": d["feat_conf"], "train": d["train"]}
        try:
            text = yaml.safe_dump(conf, sort_keys=False, default_flow_style=False)
        except yaml.YAMLError as exc:
            raise PackError(f"{model}: settings are not plain data ({_line(exc)})") from None
        (tmp / CONFIG_FILE).write_text(text)
        (tmp / CARD_FILE).write_text(model_card(d, out.name, args, exp, results))
        if os.path.lexists(out):  # ours (checked above): moved aside, the new folder in, the old removed
            old = Path(umask_mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            try:
                os.rename(out, old / out.name)
                try:
                    os.rename(tmp, out)
                except OSError:
                    os.rename(old / out.name, out)
                    raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except OSError as exc:
        raise PackError(f"{out}: cannot write ({exc.strerror or exc}); nothing written") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        d = pack(args.model, args.outdir, args)
    except PackError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    n = sum(v.numel() for v in d["model_state"].values())
    print(f"{PROG}: wrote {args.outdir} (model.pt: {n:,} parameters, sources {','.join(d['sources'])}; "
          "config.yaml; README.md)", file=sys.stderr)
    return 0


def console_main():
    sys.exit(main())


if __name__ == "__main__":
    console_main()
