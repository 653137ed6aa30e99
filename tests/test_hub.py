"""Hub packaging and loading (issue 21 item 1): sepkit-pack writes a hub folder; --model / from_pretrained
resolve a file, an exp or hub folder, or a hub id through huggingface_hub's cache, offline here.

The hub cache is built by the test in the layout huggingface_hub reads (``models--<owner>--<name>/``
with ``blobs/<sha256>``, ``snapshots/<commit>/<file>`` links to the blobs and ``refs/<branch>``), and
the model is loaded from it by id through ``huggingface_hub.snapshot_download`` with
``HF_HUB_OFFLINE=1``: the path a user's download leaves behind.
"""
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import make_corpus, train_args  # noqa: E402

from sepkit import Separator  # noqa: E402
from sepkit.bin import pack_hub  # noqa: E402
from sepkit.bin import separate as separate_bin  # noqa: E402
from sepkit.hub import parse_hub_id, resolve_model  # noqa: E402
from sepkit.model_io import ModelFileError, load_model_dict  # noqa: E402

REPO_ID = "sepkit-test/tiny-chimera"
RESULTS = """# exp results

```
# a shell comment in a code block is no heading, and | this | no table |
```

| tag | set | head | SI-SDRi V | SI-SDRi M |
|---|---|---|---:|---:|
| other | test | mi | 1.00 | 2.00 |
| tiny | test | mi | 3.25 | 4.50 |
| tiny | test | dc | 2.75 | 3.00 |

Some notes.
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``exp/tiny`` of a tiny Chimera network trained for 2 epochs on the synthetic corpus (model.pt,
    config.yaml, train.log with its command line), and an exp/RESULTS.md naming it."""
    from sepkit.bin.train import main as train_main

    root = tmp_path_factory.mktemp("hubtrain")
    corpus = make_corpus(root, n_train=4, n_valid=1, seconds=1.0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main(train_args(corpus, root / "exp" / "tiny", "--epochs", "2")) == 0
    finally:
        torch.set_num_threads(n)
    (root / "exp" / "RESULTS.md").write_text(RESULTS)
    return root / "exp" / "tiny"


def pack(*argv):
    return pack_hub.main([str(a) for a in argv])


def hub_cache(cache, repo_id, folder, branch="main", skip=()):
    """Put the files of ``folder`` into ``cache`` as huggingface_hub stores a downloaded model repository."""
    owner, name = repo_id.split("/")
    repo = Path(cache) / f"models--{owner}--{name}"
    commit = hashlib.sha1(repo_id.encode() + b"".join(p.read_bytes() for p in sorted(Path(folder).iterdir()))
                          ).hexdigest()
    for f in sorted(Path(folder).iterdir()):
        if f.name in skip:
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return commit


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty hub cache under tmp_path, named by HF_HUB_CACHE, with HF_HUB_OFFLINE=1 (no network either way)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import otherwise
    return cache


def song(path, sr=16000, seconds=1.3, seed=3):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.2 * np.sin(2 * np.pi * 330 * t) * (np.sin(2 * np.pi * t) > 0) + 0.1 * np.sin(2 * np.pi * 110 * t)
    sf.write(path, np.stack([x, x + 0.01 * rng.standard_normal(len(t))], 1).astype(np.float32), sr,
             subtype="FLOAT")
    return path


def tree(root):
    return sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*")) if Path(root).exists() else None


def run_separate(capsys, *argv):
    rc = separate_bin.main(["--no-progress", "--quiet", *map(str, argv)])
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def packed(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("hubpack") / "tiny-chimera"
    assert pack(trained, out, "--data", "synthetic tones (tests/test_train_helpers.py)", "--data_licence",
                "CC0-1.0", "--licence", "apache-2.0", "--recipe", "tests/test_hub.py",
                "--results", trained.parent / "RESULTS.md", "--repo_id", REPO_ID) == 0
    return out


def test_pack_writes_model_config_and_card(packed, trained):
    assert sorted(p.name for p in packed.iterdir()) == ["README.md", "config.yaml", "model.pt"]
    assert not [p for p in packed.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    d = torch.load(packed / "model.pt", weights_only=True)
    src = torch.load(trained / "model.pt", weights_only=True)
    assert "checkpoint" not in d and "optimizer" not in d
    assert all(torch.equal(d["model_state"][k], v) for k, v in src["model_state"].items())
    conf = yaml.safe_load((packed / "config.yaml").read_text())
    assert conf["sources"] == ["vocals", "accompaniment"] and conf["model_conf"] == src["model_conf"]
    assert conf["feat_conf"] == src["feat_conf"] and conf["train"]["segment_frames"] == 20
    card = (packed / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front == {"library_name": "sepkit", "license": "apache-2.0",
                     "tags": ["audio-source-separation", "music-source-separation", "sepkit"]}
    command = next(ln.split("command: ", 1)[1] for ln in (trained / "train.log").read_text().splitlines()
                   if "command: " in ln)
    for needle in ("## Training data and its licence", "synthetic tones", "licence of the data: CC0-1.0",
                   "## Recipe and command", "recipe: tests/test_hub.py", f"`{command}`", "sepkit commit at packing",
                   "epochs: 2", "## Results", "| tiny | test | mi | 3.25 | 4.50 |", "| tiny | test | dc | 2.75 |",
                   f"--model {REPO_ID}"):
        assert needle in card, needle
    assert "| other |" not in card  # only the packed experiment's rows of exp/RESULTS.md
    assert "**exp results**" in card and "shell comment" not in card and "no table" not in card


def test_load_by_hub_id_offline_separates_like_the_file(packed, trained, offline, tmp_path, capsys):
    commit = hub_cache(offline, REPO_ID, packed)
    path = resolve_model(REPO_ID)
    assert path == offline / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / commit / "model.pt"
    assert resolve_model(f"{REPO_ID}@main") == path and resolve_model(f"{REPO_ID}@{commit}") == path
    x, sr = sf.read(song(tmp_path / "song.wav"), dtype="float32", always_2d=True)
    wave = torch.from_numpy(x.T.copy())
    by_id, by_file = Separator.from_pretrained(REPO_ID), Separator.from_pretrained(trained / "model.pt")
    for head in ("mi", "dc"):
        a, b = by_id.separate(wave, sr, head=head), by_file.separate(wave, sr, head=head)
        assert list(a) == list(b) == ["vocals", "accompaniment"]
        for name in a:
            assert np.array_equal(a[name], b[name]), (head, name)
            assert np.abs(a[name]).max() > 0
    # the command line: --model <owner>/<name> writes the same files as --model exp/tiny
    for head in ("mi", "dc"):
        for model, out in ((REPO_ID, tmp_path / f"by_id_{head}"), (trained, tmp_path / f"by_exp_{head}")):
            rc, err = run_separate(capsys, "--model", model, "--head", head, "--outdir", out, tmp_path / "song.wav")
            assert rc == 0 and err == [], err
        for name in ("vocals", "accompaniment"):
            a = sf.read(tmp_path / f"by_id_{head}" / "song" / f"{name}.wav")[0]
            b = sf.read(tmp_path / f"by_exp_{head}" / "song" / f"{name}.wav")[0]
            assert np.array_equal(a, b), (head, name)


def test_pack_finds_the_exp_of_a_checkpoint(trained, tmp_path):
    ckpt = sorted((trained / "checkpoints").iterdir())[-1]
    assert pack(ckpt, tmp_path / "from-ckpt") == 0
    card = (tmp_path / "from-ckpt" / "README.md").read_text()
    assert "--epochs 2`" in card and "No results table given" in card
    plain = tmp_path / "plain.pt"
    plain.write_bytes((trained / "model.pt").read_bytes())  # an exported file alone: nothing to tell
    assert pack(plain, tmp_path / "from-file") == 0
    assert "training command: not recorded" in (tmp_path / "from-file" / "README.md").read_text()


def test_local_hub_folder_loads_like_the_file(packed, trained):
    a, b = load_model_dict(packed), load_model_dict(trained)
    assert all(torch.equal(a["model_state"][k], v) for k, v in b["model_state"].items())


@pytest.mark.parametrize("case", ["unknown_id", "unknown_revision", "cached_repo_without_model",
                                  "folder_without_model", "neither", "stranger_pickle"])
def test_bad_models_one_line_nothing_written(case, packed, offline, tmp_path, capsys):
    spec, words = {
        "unknown_id": ("nobody/no-such-model", ["nobody/no-such-model", "not in the local hub cache",
                                                "HF_HUB_OFFLINE"]),
        "unknown_revision": (f"{REPO_ID}@v9", [f"{REPO_ID}@v9", "revision v9", "not in the local hub cache"]),
        "cached_repo_without_model": ("someone/cards-only", ["someone/cards-only", "has no model.pt"]),
        "folder_without_model": (str(tmp_path / "incomplete"), ["incomplete", "hub folder without its model file"]),
        "neither": ("no-such-model.pt", ["no-such-model.pt", "no such model file, folder or hub id"]),
        "stranger_pickle": ("stranger/evil", ["stranger/evil", "refusing to unpickle"]),
    }[case]
    hub_cache(offline, REPO_ID, packed)
    hub_cache(offline, "someone/cards-only", packed, skip=("model.pt",))
    inc = tmp_path / "incomplete"
    inc.mkdir()
    for name in ("README.md", "config.yaml"):
        (inc / name).write_bytes((packed / name).read_bytes())
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"format": "sepkit-model/1", "payload": Path("/")}, evil / "model.pt")  # a Python object
    hub_cache(offline, "stranger/evil", evil)
    with pytest.raises(ModelFileError) as exc:
        Separator.from_pretrained(spec)
    assert "\n" not in str(exc.value) and all(w in str(exc.value) for w in words), str(exc.value)
    rc, err = run_separate(capsys, "--model", spec, "--outdir", tmp_path / "out", song(tmp_path / "s.wav"))
    assert rc == 1 and len(err) == 1 and err[0].startswith("sepkit-separate: error: "), err
    assert all(w in err[0] for w in words), err
    assert tree(tmp_path / "out") is None


def test_hub_id_syntax():
    assert parse_hub_id("owner/name") == ("owner/name", None)
    assert parse_hub_id("owner/name@v1.0") == ("owner/name", "v1.0")
    assert parse_hub_id("owner/name@refs/pr/1") == ("owner/name", "refs/pr/1")
    for bad in ("name", "a/b/c", "../x", "owner/..", ".hidden/name", "owner/na me", "owner/name@", "owner/name@../x",
                "/abs/path", "owner/name@a@b"):
        assert parse_hub_id(bad) is None, bad


def test_pack_refusals_leave_nothing(trained, packed, tmp_path, capsys):
    def one_error(*argv):
        capsys.readouterr()
        rc = pack(*argv)
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert rc == 1 and len(err) == 1 and err[0].startswith("sepkit-pack: error: "), err
        return err[0]

    # an existing OUTDIR: refused without --overwrite, replaced with it when sepkit-pack wrote it
    out = tmp_path / "m"
    assert pack(trained, out) == 0
    before = (out / "README.md").read_text()
    assert "exists" in one_error(trained, out) and (out / "README.md").read_text() == before
    assert pack(trained, out, "--overwrite", "--data", "new words") == 0
    assert "new words" in (out / "README.md").read_text() and "No results table given" in before
    # ... and never a folder it did not write
    (out / "notes.txt").write_text("mine")
    assert "notes.txt" in one_error(trained, out, "--overwrite") and (out / "notes.txt").read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my own card\n")
    assert "not written by sepkit-pack" in one_error(trained, mine, "--overwrite")
    assert (mine / "README.md").read_text() == "my own card\n"
    # bad inputs: nothing written, no temporary folder left beside OUTDIR
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.md").write_text("# no table here\n")
    (bad / "broken.pt").write_bytes(b"not a model")
    for argv, words in (
            ([bad / "missing", bad / "x"], ["missing", "no such model"]),
            ([bad / "broken.pt", bad / "x"], ["broken.pt", "not a loadable sepkit model"]),
            ([trained, bad / "x", "--licence", "MIT licence\nevil: 1"], ["--licence", "not a licence id"]),
            ([trained, bad / "x", "--results", bad / "notes.md"], ["notes.md", "no Markdown table"]),
            ([trained, bad / "x", "--results", bad / "none.md"], ["none.md", "cannot read"]),
            ([trained, bad / ".hidden"], [".hidden", "starts with a dot"]),
            ([trained, bad / "x", "--repo_id", "a/b/../c"], ["--repo_id", "not a hub id"])):
        line = one_error(*argv)
        assert all(w in line for w in words), (line, words)
        assert sorted(p.name for p in bad.iterdir()) == ["broken.pt", "notes.md"], argv
