"""Docs that cannot lie: every ``sh`` block of README.md and docs/*.md runs here, on synthetic data.

Rules (docs/README.md): a block whose first line is ``# no-test: <reason>`` is not run; one whose
first line is ``# fails: <reason>`` must fail; a ``text`` block right after a block lists lines
its output must contain (``...`` = anything). The pages run in the order of :data:`ORDER` (later
pages use the quick-start run of docs/new_dataset.md), each as one shell session that starts at
the root of a copy of the repository, with tools/venv active. Also checked: docs/config.md is
what utils/gen_config_doc.py makes, relative links and anchors resolve, and the tables of
docs/tensorboard.md and docs/new_dataset.md match the code.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "tools" / "venv"
ORDER = ["docs/README.md", "docs/new_dataset.md", "docs/recipes.md", "docs/data.md", "docs/tensorboard.md",
         "docs/distributed.md", "docs/config.md", "README.md"]
PAGES = ORDER + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")
                       if str(p.relative_to(REPO)) not in ORDER)
RUNNABLE = ("sh", "bash", "shell")
needs_venv = pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="tools/venv not built (make venv)")


def blocks(page):
    """``[(line, language, text, marker, expected text or None)]`` of the fenced blocks of a page."""
    lines = (REPO / page).read_text().splitlines()
    found, i, last_end = [], 0, -10
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)", lines[i])
        if not m:
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        start, lang, body = i + 1, m.group(1), []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i])
            i += 1
        text = "\n".join(body) + "\n"
        follows = all(not x.strip() for x in lines[last_end + 1:start - 1])
        if lang == "text" and found and found[-1][1] in RUNNABLE and found[-1][4] is None and follows:
            found[-1][4] = text
        else:
            first = next((x.strip() for x in body if x.strip()), "")
            marker = "no-test" if first.startswith("# no-test") else "fails" if first.startswith("# fails") else None
            found.append([start, lang, text, marker, None])
        last_end = i
        i += 1
    return [tuple(b) for b in found]


def test_blocks_are_marked_with_reasons():
    runnable = 0
    for page in PAGES:
        for line, lang, text, marker, _ in blocks(page):
            if lang not in RUNNABLE:
                continue
            first = next(x.strip() for x in text.splitlines() if x.strip())
            if marker:
                assert re.match(rf"# {marker}: \S", first), f"{page}:{line}: write '# {marker}: <reason>'"
            if marker != "no-test":
                runnable += 1
                assert not re.search(r"\bmake (test|demo)\b", text), (
                    f"{page}:{line}: this block runs 'make test' or 'make demo' (CI runs them itself): "
                    "make its first line '# no-test: <reason>'")
    assert runnable >= 15


def _slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_and_anchors_resolve():
    for page in PAGES:
        text = (REPO / page).read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (REPO / page).parent / path if path else REPO / page
            assert dest.exists(), f"{page}: link to {target}: {dest} does not exist"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", dest.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page}: no heading for #{anchor} in {dest.name}"


def test_config_doc_is_generated_from_the_code(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_config_doc", REPO / "utils" / "gen_config_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(["--check"]) == 0, capsys.readouterr().err


def test_shipped_recipes_are_documented():
    """docs/config.md documents the recipes of the table of docs/recipes.md (not whichever recipes exist)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_config_doc", REPO / "utils" / "gen_config_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    section = (REPO / "docs" / "recipes.md").read_text().split("## The recipes", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(egs/[^`]+)` \|", section, re.M)
    assert sorted(listed) == sorted(gen.RECIPES), "the recipes of docs/recipes.md and RECIPES of utils/gen_config_doc.py"
    for name in gen.RECIPES:
        assert (REPO / name / "run.sh").is_file(), name


def test_folder_description_table_matches_the_defaults():
    from sepkit.data.corpora.folder import DEFAULTS

    rows = re.findall(r"^\| `(\w+)`[^|]* \| ([^|]*) \|", (REPO / "docs" / "new_dataset.md").read_text(), re.M)
    checked = 0
    for key, default in rows:
        if key in DEFAULTS and default.strip():
            value = DEFAULTS[key]
            words = [w for files in value.values() for w in files] + list(value) if isinstance(value, dict) else [value]
            for word in words:
                assert f"{word}" in default, f"docs/new_dataset.md: default of {key} should show {word!r}"
            checked += 1
    assert checked >= 5


# ------------------------------------------------------------------------------------ running


def _copy_repo(base):
    """A working copy: code, tools and utils linked; recipes copied (without outputs) so pages may write."""
    for name in ("sepkit", "tools", "utils", "docs", "tests", "bench", "setup.py", "Makefile", "README.md"):
        if (REPO / name).exists():
            (base / name).symlink_to(REPO / name)
    skip = shutil.ignore_patterns("data", "dump", "exp", "downloads")
    for run_sh in sorted((REPO / "egs").glob("*/*/run.sh")) + [REPO / "egs" / "TEMPLATE" / "run.sh"]:
        rec = run_sh.parent
        shutil.copytree(rec, base / rec.relative_to(REPO), symlinks=True, ignore=skip)
    (base / "tmp").mkdir()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    base = tmp_path_factory.mktemp("docs")
    _copy_repo(base)
    env = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ['PATH']}", VIRTUAL_ENV=str(VENV), SEPKIT_BACKEND="local",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), TMPDIR=str(base / "tmp"), COLUMNS="100")
    env.pop("SEPKIT_NPROC_CPU", None)
    return base, env


def run_page(page, base, env, timeout=900):
    """Run the page's blocks in one bash session; returns (rc, output, {block line: output})."""
    work = base / "tmp" / "doc-blocks" / page.replace("/", "_")
    work.mkdir(parents=True, exist_ok=True)
    script = ["set -eo pipefail", f"cd {base}"]
    todo = [b for b in blocks(page) if b[1] in RUNNABLE and b[3] != "no-test"]
    for line, _, text, marker, _ in todo:
        (work / f"{line}.sh").write_text(text)
        script.append(f"echo '@@ start {line}'")
        if marker == "fails":
            script.append(f"if ( . {work}/{line}.sh ); then echo '@@ {page}:{line}: expected to fail'; exit 97; fi")
        else:
            script.append(f". {work}/{line}.sh")
        script.append(f"echo '@@ end {line}'")
    (work / "page.sh").write_text("\n".join(script) + "\n")
    res = subprocess.run(["bash", str(work / "page.sh")], cwd=base, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=timeout)
    outputs = {int(n): out for n, out in re.findall(r"^@@ start (\d+)\n(.*?)^@@ end \1$", res.stdout, re.M | re.S)}
    return res.returncode, res.stdout, outputs, todo


@needs_venv
@pytest.mark.parametrize("page", PAGES)
def test_page_commands_run(page, workspace):
    base, env = workspace
    for line, lang, text, marker, _ in blocks(page):  # never recurse into the test suite or the demo
        assert marker == "no-test" or lang not in RUNNABLE or not re.search(r"\bmake (test|demo)\b", text), (
            f"{page}:{line}: a block that runs 'make test' or 'make demo' must start with '# no-test: <reason>'")
    rc, out, outputs, todo = run_page(page, base, env)
    started = re.findall(r"^@@ start (\d+)$", out, re.M)
    where = f"{page}:{started[-1]}" if started else page
    assert rc == 0, f"the block at {where} failed (exit {rc}); output:\n{out[-5000:]}"
    for line, _, _, _, expected in todo:
        assert line in outputs, f"{page}:{line}: block did not finish"
        for want in (expected or "").splitlines():
            parts = [p.strip() for p in want.split("...") if p.strip()]
            assert all(p in outputs[line] for p in parts), f"{page}:{line}: output lacks {want!r}:\n{outputs[line][-3000:]}"


@needs_venv
def test_tensorboard_page_names_every_tag(workspace):
    base, _ = workspace
    run = base / "egs" / "folder" / "chimera" / "exp" / "quick" / "tensorboard"
    if not run.is_dir():
        pytest.skip("the quick-start run of docs/new_dataset.md did not run")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "audio": 0, "tensors": 0})
    acc.Reload()
    written = {t for kind in ("scalars", "images", "audio", "tensors") for t in acc.Tags().get(kind, [])}
    written = {t.split("/text_summary")[0] for t in written}
    page = (REPO / "docs" / "tensorboard.md").read_text()
    documented = set()
    for cell in re.findall(r"^\| (`[^|]*`) \|", page, re.M):
        for tag in re.findall(r"`([\w/<>]+)`", cell):
            for source in ("vocals", "accompaniment"):
                documented.add(tag.replace("<source>", source))
    assert written - documented == set(), f"written but not in docs/tensorboard.md: {sorted(written - documented)}"
    assert documented - written == set(), f"in docs/tensorboard.md but not written: {sorted(documented - written)}"
