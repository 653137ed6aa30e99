"""utils/new_recipe.sh and egs/TEMPLATE: a new recipe runs end to end once its local/songs.py is written.

Also checks that the recipes made from the template share its stages (egs/folder/chimera differs
only in its corpus options and data preparation), so a fix to a stage reaches every recipe.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "egs" / "TEMPLATE"
VENV_PYTHON = REPO / "tools" / "venv" / "bin" / "python"
needs_venv = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")

# The data preparation a user writes for a corpus in a flat layout no recipe knows:
# <corpus>/<split>/<name>.mix.flac, <name>.voice.flac, <name>.band.flac
SONGS_PY = '''from pathlib import Path


def find_songs(corpus_dir):
    """<corpus>/<split>/<name>.mix.flac (mixture), <name>.voice.flac (vocals), <name>.band.flac."""
    sets = {}
    for split in ("train", "valid", "test"):
        for mix in sorted((corpus_dir / split).glob("*.mix.flac")):
            name = mix.name[:-len(".mix.flac")]
            sets.setdefault(split, {})[name] = {
                "mixture": str(mix.resolve()),
                "vocals": str(mix.with_name(name + ".voice.flac").resolve()),
                "accompaniment": str(mix.with_name(name + ".band.flac").resolve()),
            }
    return sets
'''
TINY = ["--nj", "1", "--oracle", "false", "--tag", "tiny",
        "--train_args", "--epochs 1 --hidden 16 --layers 1 --emb_dim 8 --batch_size 4 --segment_frames 50 "
                        "--max_steps_per_epoch 3 --num_workers 0 --tensorboard false"]


def workspace(base):
    """``base`` with tools/ and utils/ linked to the repository's and egs/TEMPLATE, as in a checkout."""
    base = Path(base)
    (base / "egs").mkdir(parents=True, exist_ok=True)
    for name in ("tools", "utils"):
        (base / name).symlink_to(REPO / name)
    (base / "egs" / "TEMPLATE").symlink_to(TEMPLATE)
    return base


def run(cmd, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), SEPKIT_BACKEND="local")
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def flat_corpus(root, seed=0):
    rng = np.random.default_rng(seed)
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    for split, n in (("train", 3), ("valid", 1), ("test", 2)):
        for i in range(n):
            f0 = rng.uniform(200, 400)
            voice = 0.2 * np.sin(2 * np.pi * f0 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
            band = 0.2 * np.sin(2 * np.pi * rng.uniform(50, 90) * t) + 0.02 * rng.standard_normal(t.size)
            name = f"{split}-take{i}"
            (root / split).mkdir(parents=True, exist_ok=True)
            for kind, x in (("voice", voice), ("band", band), ("mix", voice + band)):
                sf.write(str(root / split / f"{name}.{kind}.flac"), x.astype(np.float32), sr, subtype="PCM_24")
    return root


def test_creates_a_recipe_and_refuses_to_overwrite(tmp_path):
    base = workspace(tmp_path)
    res = run([base / "utils" / "new_recipe.sh", "mycorpus"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout
    rec = base / "egs" / "mycorpus" / "chimera"
    for name in ("run.sh", "cmd.sh", "path.sh", "conf/feats.yaml", "conf/tuning/train_chimera_tiny.yaml",
                 "conf/tuning/train_chimera_cpu.yaml", "local/data.sh", "local/data.py", "local/songs.py", ".gitignore"):
        assert (rec / name).is_file(), name
    assert os.readlink(rec / "utils") == "../../../utils" and (rec / "utils" / "lib.sh").is_file()
    assert os.access(rec / "run.sh", os.X_OK) and os.access(rec / "local" / "data.sh", os.X_OK)
    assert not (rec / "README.md").exists()
    for path in rec.rglob("*"):
        if path.is_file():
            assert "@CORPUS@" not in path.read_text() and "@SYSTEM@" not in path.read_text(), path
    assert "egs/mycorpus/chimera" in (rec / "run.sh").read_text()
    before = (rec / "run.sh").read_text()
    res = run([base / "utils" / "new_recipe.sh", "mycorpus", "chimera"], cwd=tmp_path)
    assert res.returncode != 0 and "already exists; not touching it" in res.stdout
    assert (rec / "run.sh").read_text() == before
    for bad in (["bad name"], ["TEMPLATE"], [], ["a", "b", "c"], ["-x"]):
        res = run([base / "utils" / "new_recipe.sh", *bad], cwd=tmp_path)
        assert res.returncode != 0 and res.stdout.strip(), bad
    for ask in ("--help", "-h"):  # usage on stdout, success
        res = subprocess.run([str(base / "utils" / "new_recipe.sh"), ask], capture_output=True, text=True)
        assert res.returncode == 0 and "Usage: utils/new_recipe.sh <corpus>" in res.stdout and not res.stderr, ask
    res = run([base / "utils" / "new_recipe.sh", "other", "dc"], cwd=tmp_path)
    assert res.returncode == 0 and (base / "egs" / "other" / "dc" / "run.sh").is_file()
    assert not list((base / "egs").glob(".new_recipe.*"))  # no temporary dir left behind


@needs_venv
def test_stub_data_preparation_fails_clearly(tmp_path):
    base = workspace(tmp_path)
    run([base / "utils" / "new_recipe.sh", "mycorpus"], cwd=tmp_path)
    rec = base / "egs" / "mycorpus" / "chimera"
    res = run(["./run.sh", "--help"], cwd=rec)
    assert res.returncode == 0 and "--corpus-dir downloads/mycorpus" in res.stdout and "--model-dir" in res.stdout
    res = run(["./run.sh", "--stop_stage", 0], cwd=rec)
    assert res.returncode != 0 and "corpus 'downloads/mycorpus' not found" in res.stdout
    res = run(["./run.sh", "--stop_stage", 0, "--corpus_dir", tmp_path], cwd=rec)
    assert res.returncode != 0
    assert "local/songs.py of mycorpus is still the template's stub: write its find_songs()" in res.stdout
    assert not (rec / "data" / "train").exists()


def takes_recipe(tmp_path, songs_py=SONGS_PY):
    """egs/takes/chimera made by utils/new_recipe.sh with ``songs_py`` as its local/songs.py, and its corpus."""
    base = workspace(tmp_path)
    corpus = flat_corpus(tmp_path / "takes")
    assert run([base / "utils" / "new_recipe.sh", "takes"], cwd=tmp_path).returncode == 0
    rec = base / "egs" / "takes" / "chimera"
    (rec / "local" / "songs.py").write_text(songs_py)  # the only file written
    return rec, corpus


@needs_venv
def test_runs_end_to_end_after_writing_only_its_songs_file(tmp_path):
    rec, corpus = takes_recipe(tmp_path)
    res = run(["./run.sh", "--corpus_dir", corpus, *TINY], cwd=rec)
    assert res.returncode == 0, res.stdout[-4000:]
    for stage in (0, 2, 3, 4, 5):
        assert re.search(rf"\(run\.sh:\d+\) Stage {stage}:", res.stdout), stage
    from sepkit.data.datadir import DataDir, validate_data_dir

    for name, n in (("train", 3), ("valid", 1), ("test", 2)):
        assert validate_data_dir(rec / "data" / name, check_audio=True) == []
        assert len(DataDir(rec / "data" / name).utts) == n
    for head in ("mi", "dc"):
        result = json.loads((rec / "exp" / "tiny" / f"score_test_{head}" / "result.json").read_text())
        assert result["n_files"] == 2
    assert "| tiny | test | mi |" in (rec / "exp" / "RESULTS.md").read_text()
    again = run(["./run.sh", "--corpus_dir", corpus, "--stop_stage", 0], cwd=rec)
    assert again.returncode == 0 and "already prepared" in again.stdout


def fresh_copy(dest):
    """A copy of the working tree as a clone of it has it (tracked and untracked files that git does not
    ignore; without git: everything but outputs), with tools/venv linked to the repository's."""
    import shutil

    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
        names = [n for n in listed.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "tools", "data", "dump", "exp", "corpus", "downloads", "__pycache__", ".pytest_cache"}
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if not (p.is_dir() and not p.is_symlink()) and not skip & set(p.relative_to(REPO).parts)]
    for name in names:
        src, dst = REPO / name, dest / name
        if not (src.exists() or src.is_symlink()) or name.startswith("tools/venv/"):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, dst)
    (dest / "tools").mkdir(exist_ok=True)
    (dest / "tools" / "venv").symlink_to(REPO / "tools" / "venv")
    return dest


@needs_venv
def test_a_new_recipe_leaves_the_test_suite_passing(tmp_path):
    """A fresh clone + utils/new_recipe.sh, no other step: the tests that read every recipe still pass there."""
    clone = fresh_copy(tmp_path / "clone")
    res = run([clone / "utils" / "new_recipe.sh", "newcorpus"], cwd=clone)
    assert res.returncode == 0 and (clone / "egs" / "newcorpus" / "chimera" / "run.sh").is_file(), res.stdout
    assert "gen_config_doc" not in res.stdout  # nothing to regenerate
    tests = ["tests/test_docs.py::test_config_doc_is_generated_from_the_code",
             "tests/test_docs.py::test_shipped_recipes_are_documented",
             "tests/test_docs.py::test_links_and_anchors_resolve",
             "tests/test_new_recipe.py::test_recipes_from_the_template_share_its_stages",
             "tests/test_new_recipe.py::test_template_feature_file_documents_every_feature_key"]
    res = run([clone / "tools" / "venv" / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
              cwd=clone)
    assert res.returncode == 0 and f"{len(tests)} passed" in res.stdout, res.stdout[-4000:]


@needs_venv
def test_song_names_with_spaces_become_ids(tmp_path):
    """find_songs() may key songs by their names, spaces included: the ids are made as in egs/folder."""
    spaced = SONGS_PY.replace('sets.setdefault(split, {})[name]', 'sets.setdefault(split, {})[name.replace("-", " ")]')
    rec, corpus = takes_recipe(tmp_path, spaced)
    res = run(["./run.sh", "--corpus_dir", corpus, "--stop_stage", 0], cwd=rec)
    assert res.returncode == 0, res.stdout[-3000:]
    from sepkit.data.datadir import DataDir

    assert DataDir(rec / "data" / "train").utts == ["train_take0", "train_take1", "train_take2"]
    clash = SONGS_PY.replace('sets.setdefault(split, {})[name]',
                             'sets.setdefault(split, {})[name.replace("-", " ") if name.endswith("0") else '
                             'name.replace("-", "  ").replace("take1", "take0")]')
    (rec / "local" / "songs.py").write_text(clash)
    res = run(["./run.sh", "--corpus_dir", corpus, "--stop_stage", 0, "--overwrite", "true"], cwd=rec)
    assert res.returncode != 0 and "give the same utterance id 'train_take0'" in res.stdout, res.stdout[-3000:]


# ------------------------------------------------------------------------------- shared stages

def _shared_part(text):
    """run.sh from its first option on, with the corpus blocks and recipe names blanked out."""
    body = text[text.index("\nstage=0"):]
    body = re.sub(r"# ---- corpus options.*?# ---- end of corpus options ----", "<corpus options>", body, flags=re.S)
    body = re.sub(r"# ---- corpus: stage 0 ----.*?# ---- end of corpus: stage 0 ----", "<stage 0>", body, flags=re.S)
    return re.sub(r"egs/[^/ \"]+/[^/ \"]+ results", "<recipe> results", body)


def test_recipes_from_the_template_share_its_stages():
    template = _shared_part((TEMPLATE / "run.sh").read_text())
    assert "<corpus options>" in template and "<stage 0>" in template
    made = [p.parent.parent for p in (REPO / "egs").glob("*/*/local/data.sh")
            if "egs/TEMPLATE" in (p.parent.parent / "run.sh").read_text()]
    assert REPO / "egs" / "folder" / "chimera" in made
    for rec in made:
        assert _shared_part((rec / "run.sh").read_text()) == template, f"{rec}/run.sh differs from egs/TEMPLATE/run.sh"
        for name in ("cmd.sh", "path.sh", "conf/feats.yaml"):
            assert (rec / name).read_text() == (TEMPLATE / name).read_text(), f"{rec}/{name}"
    # the template's job and environment set-up is the one of every recipe
    for other in (REPO / "egs").glob("*/*/cmd.sh"):
        assert other.read_text() == (TEMPLATE / "cmd.sh").read_text(), other
        assert (other.parent / "path.sh").read_text() == (TEMPLATE / "path.sh").read_text(), other.parent


def test_template_feature_file_documents_every_feature_key():
    import yaml

    from sepkit.frontend import FeatureConfig

    assert yaml.safe_load((TEMPLATE / "conf" / "feats.yaml").read_text()) == FeatureConfig().to_dict()


# ------------------------------------------------------------------------------- configuration names

NETWORK = ("hidden", "layers", "emb_dim", "alpha", "mi_loss", "mask_activation", "dropout", "batch_norm")
SIZES = {"train_chimera_tiny.yaml": (2, 128, 10), "train_chimera_cpu.yaml": (3, 300, 20),
         "train_chimera_msa_alpha0.1.yaml": (4, 500, 20)}  # layers x hidden, D


def _configs():
    import yaml

    from sepkit.train.config import get_parser

    defaults = vars(get_parser().parse_args([]))
    for path in sorted(REPO.glob("egs/*/*/conf/tuning/*.yaml")) + sorted(TEMPLATE.glob("conf/tuning/*.yaml")):
        conf = {**defaults, **yaml.safe_load(path.read_text())}
        yield path, {k: conf[k] for k in NETWORK}


def test_one_name_per_network_size():
    """A configuration name means one network in every recipe; the tiny and CPU sizes have one name each."""
    by_name = {}
    for path, net in _configs():
        by_name.setdefault(path.name, []).append((path, net))
        size = (net["layers"], net["hidden"], net["emb_dim"])
        for name, known in SIZES.items():
            if name != "train_chimera_msa_alpha0.1.yaml" and size[:2] == known[:2]:  # variants: <name>_<what>.yaml
                assert path.name == name or path.name.startswith(name[:-len(".yaml")] + "_"), \
                    f"{path}: a {size[0]} x {size[1]} network is named {name} (or {name[:-5]}_<variant>.yaml)"
    for name, found in by_name.items():
        for path, net in found[1:]:
            assert net == found[0][1], f"{path} and {found[0][0]}: {name} means two networks"
    for name, size in SIZES.items():
        assert len(by_name[name]) >= 2, name
        assert all((n["layers"], n["hidden"], n["emb_dim"]) == size for _, n in by_name[name]), name


def test_run_sh_headers_state_the_default_network_and_cost():
    import yaml

    recipes = [p for p in sorted(REPO.glob("egs/*/*/run.sh")) + [TEMPLATE / "run.sh"]
               if re.search(r"^train_config=", p.read_text(), re.M)]
    assert len(recipes) >= 5
    for run_sh in recipes:
        text = run_sh.read_text()
        default = re.search(r"^train_config=(\S+)", text, re.M).group(1)
        header = text[:text.index("\nstage=0")]
        m = re.search(r"^# Default training config: (\S+) = (\d+) x (\d+) BLSTM, D = (\d+)(.*\n(?:#  .*\n)*)", header, re.M)
        assert m, f"{run_sh}: no '# Default training config: FILE = L x H BLSTM, D = N' header line"
        assert m.group(1) == default, f"{run_sh}: the header names {m.group(1)}, the default is {default}"
        conf = yaml.safe_load((run_sh.parent / default).read_text())
        assert (int(m.group(2)), int(m.group(3)), int(m.group(4))) == (conf["layers"], conf["hidden"], conf["emb_dim"])
        assert re.search(r"\d+ steps", m.group(5)) and re.search(r"\d+ (min|s|h) ", m.group(5)), f"{run_sh}: cost"

