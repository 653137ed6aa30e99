"""Fine-tuning (``--init_model``): the body of a parent network is taken, heads that do not fit are re-initialised
and listed, a parent of other features or of no head in common is refused in one line before anything is
written, and a resumed run continues from its checkpoint instead of starting from the parent again."""
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import one_thread, make_corpus, train_args  # noqa: E402,F401  (one_thread: a fixture)

from sepkit.bin.train import main  # noqa: E402
from sepkit.train.config import parse_config  # noqa: E402
from sepkit.train.distributed import DistEnv  # noqa: E402
from sepkit.train.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = ["--epochs", "1", "--max_steps_per_epoch", "2", "--tensorboard", "false"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A tiny Chimera network trained for 2 steps, and its corpus."""
    root = tmp_path_factory.mktemp("init_model")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        corpus = make_corpus(root / "corpus", n_train=4, n_valid=2)
        assert main(train_args(corpus, root / "parent", *QUICK)) == 0
    finally:
        torch.set_num_threads(n)
    return {"corpus": corpus, "exp": root / "parent", "model": root / "parent" / "model.pt"}


def _trainer(corpus, outdir, *extra):
    return Trainer(vars(parse_config(train_args(corpus, outdir, *QUICK, *extra))), DistEnv())


def _parent_state(parent):
    return torch.load(parent["model"], weights_only=True)["model_state"]


def _log(outdir):
    return (Path(outdir) / "train.log").read_text()


def test_body_and_fitting_heads_are_taken(parent, tmp_path):
    t = _trainer(parent["corpus"], tmp_path / "child", "--init_model", str(parent["model"]), "--seed", "7")
    want, have = _parent_state(parent), t.model.state_dict()
    assert set(want) == set(have)
    for k in want:  # same network and sources: every tensor is the parent's
        assert torch.equal(have[k], want[k]), k
    report = "\n".join(t.init_report)
    assert "taken from the parent: encoder.* (8 tensors), linear.weight, linear.bias, mi_head.weight, mi_head.bias" \
        in report
    assert "re-initialised (another shape or other sources): none" in report


def test_head_of_another_embedding_size_is_reinitialised_and_listed(parent, tmp_path):
    out = tmp_path / "child"
    assert main(train_args(parent["corpus"], out, *QUICK, "--emb_dim", "6", "--max_steps_per_epoch", "1",
                           "--init_model", str(parent["exp"]))) == 0
    log = _log(out)
    assert "taken from the parent: encoder.* (8 tensors)\n" in log
    assert "re-initialised (another shape or other sources): linear.weight (parent [80, 16], here [120, 16]), " \
           "linear.bias (parent [80], here [120]), mi_head.weight (parent [20, 4, 2], here [20, 6, 2]), mi_head.bias (with the rest of mi_head)" in log
    assert "init_model: " + str(parent["exp"]) in (out / "config.yaml").read_text()
    # the body really was the parent's: a fresh build with this seed is not
    t = _trainer(parent["corpus"], tmp_path / "fresh", "--emb_dim", "6")
    assert not torch.equal(t.model.state_dict()["encoder.lstm.weight_ih_l0"],
                           _parent_state(parent)["encoder.lstm.weight_ih_l0"])


def test_head_of_another_source_count_or_order_is_reinitialised(parent, tmp_path):
    src = parent["corpus"]
    corpus = {k: tmp_path / k for k in ("train_dump", "valid_dump")}
    for k, dst in corpus.items():
        shutil.copytree(src[k], dst)
    three = dict(corpus)
    for dst in corpus.values():
        shutil.copy(dst / "vocals.scp", dst / "drums.scp")
        (dst / "sources").write_text("vocals\naccompaniment\ndrums\n")
    t = _trainer(three, tmp_path / "child3", "--init_model", str(parent["model"]))
    report = "\n".join(t.init_report)
    assert "mi_head.weight (parent [20, 4, 2], here [20, 4, 3]), mi_head.bias (parent [20, 2], here [20, 3])" in report
    assert torch.equal(t.model.state_dict()["linear.weight"], _parent_state(parent)["linear.weight"])
    for dst in corpus.values():  # same count, other order: the MI head's columns would swap meaning
        (dst / "drums.scp").unlink()
        (dst / "sources").write_text("accompaniment\nvocals\n")
    t = _trainer(corpus, tmp_path / "swapped", "--init_model", str(parent["model"]))
    report = "\n".join(t.init_report)
    assert "mi_head.weight (parent sources vocals,accompaniment, here accompaniment,vocals)" in report
    assert not torch.equal(t.model.state_dict()["mi_head.weight"], _parent_state(parent)["mi_head.weight"])
    assert torch.equal(t.model.state_dict()["encoder.lstm.weight_hh_l0"],
                       _parent_state(parent)["encoder.lstm.weight_hh_l0"])


def test_checkpoint_and_hub_id_as_parent(parent, tmp_path, monkeypatch):
    ckpt = parent["exp"] / "checkpoints" / "ckpt-epoch1.pt"
    t = _trainer(parent["corpus"], tmp_path / "a", "--init_model", str(ckpt))
    state = torch.load(ckpt, weights_only=True)["model_state"]
    assert all(torch.equal(t.model.state_dict()[k], v) for k, v in state.items())

    import sepkit.hub

    asked = []
    monkeypatch.setattr(sepkit.hub, "download", lambda spec, repo, rev=None: asked.append((repo, rev)) or parent["model"])
    t = _trainer(parent["corpus"], tmp_path / "b", "--init_model", "someone/chimera@v1")
    assert asked == [("someone/chimera", "v1")]
    assert torch.equal(t.model.state_dict()["encoder.lstm.weight_ih_l0"], state["encoder.lstm.weight_ih_l0"])


def _refused(outdir, argv):
    assert main(argv) == 1
    errors = [ln for ln in _log(outdir).splitlines() if " ERROR: " in ln]
    assert len(errors) == 1
    assert not (outdir / "checkpoints").exists() and not (outdir / "model.pt").exists()
    assert not (outdir / "config.yaml").exists()
    return errors[0].split(" ERROR: ", 1)[1]


def test_other_features_are_refused_in_one_line(parent, tmp_path):
    corpus = make_corpus(tmp_path / "corpus16", n_train=2, n_valid=1, feat_conf={"n_mels": 16})
    out = tmp_path / "child"
    msg = _refused(out, train_args(corpus, out, *QUICK, "--init_model", str(parent["model"])))
    assert msg.startswith(f"init_model {parent['model']}: feature settings differ from "
                          f"{corpus['train_dump'] / 'feat_conf.yaml'}: n_mels 20 (parent) vs 16 (dump)")


def test_dc_only_parent_into_mi_only_network_is_refused(tmp_path, parent):
    dc = tmp_path / "dc_parent"
    assert main(train_args(parent["corpus"], dc, *QUICK, "--alpha", "1")) == 0
    out = tmp_path / "child"
    msg = _refused(out, train_args(parent["corpus"], out, *QUICK, "--alpha", "0", "--init_model", str(dc)))
    assert msg.startswith(f"init_model {dc}: a DC-only parent (heads dc) has no head in common with this MI-only "
                          "network (heads mi, alpha 0)")
    # a DC-only parent into a Chimera network is fine: body and linear layer taken, the MI head is new
    t = _trainer(parent["corpus"], tmp_path / "chimera", "--init_model", str(dc))
    assert "not in the parent (fresh initialisation): mi_head.weight, mi_head.bias" in "\n".join(t.init_report)


def test_another_body_size_is_refused(parent, tmp_path):
    out = tmp_path / "child"
    msg = _refused(out, train_args(parent["corpus"], out, *QUICK, "--hidden", "6", "--init_model", str(parent["model"])))
    assert msg == (f"init_model {parent['model']}: the parent's body does not fit this network: hidden 8 (parent) "
                   "vs 6 (here); use the parent's body settings, or train from scratch")


def test_unreadable_parent_is_refused(parent, tmp_path):
    out = tmp_path / "child"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    msg = _refused(out, train_args(parent["corpus"], out, *QUICK, "--init_model", str(bad)))
    assert msg.startswith(f"init_model: {bad}: not a loadable sepkit model")


def test_resume_continues_the_run_not_the_parent(parent, tmp_path):
    out = tmp_path / "child"
    argv = train_args(parent["corpus"], out, *QUICK, "--seed", "3", "--init_model", str(parent["model"]))
    assert main(argv) == 0
    ckpt = torch.load(out / "checkpoints" / "ckpt-epoch1.pt", weights_only=True)
    t = Trainer(vars(parse_config(argv + ["--epochs", "2"])), DistEnv())  # the same command, one more epoch
    assert t.resumed_from is not None and t.init_report is None
    have = t.model.state_dict()
    assert all(torch.equal(have[k], v) for k, v in ckpt["model_state"].items())
    assert not torch.equal(have["encoder.lstm.weight_ih_l0"], _parent_state(parent)["encoder.lstm.weight_ih_l0"])
    assert main(argv + ["--epochs", "2"]) == 0
    log = _log(out)
    assert log.count("init_model: taken from the parent") == 1
    assert f"init_model {parent['model']} not applied: the run continues from its checkpoint" in log
    assert torch.load(out / "model.pt", weights_only=True)["train"]["init_model"] == str(parent["model"])


# ------------------------------------------------------------------ utils/train_exp.sh --init-model
FAKE_CMD = """#!/usr/bin/env bash
# a job runner whose 'training' records its arguments and writes <outdir>/model.pt
shift
echo "$@" >> args.txt
while [ $# -gt 0 ]; do [ "$1" = --outdir ] && outdir=$2; shift; done
mkdir -p "$outdir" && echo "model $RANDOM" > "$outdir/model.pt"
"""


def test_train_exp_takes_the_parent_as_an_input(tmp_path):
    from test_utils_scripts import _fake_train_exp, _run

    repo = Path(__file__).resolve().parents[1]
    args = _fake_train_exp(tmp_path)  # utils/train_exp.sh --cmd fake_cmd.sh c.yaml dump/train dump/valid exp/x
    (tmp_path / "fake_cmd.sh").write_text(FAKE_CMD)
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "model.pt").write_text("parent v1")

    def run(*opts):
        return _run(args[:3] + list(opts) + args[3:], tmp_path)

    assert run("--init-model", "parent").returncode == 0
    assert "--init_model parent" in (tmp_path / "args.txt").read_text()
    assert "already finished" in run("--init-model", "parent").stderr
    (tmp_path / "parent" / "model.pt").write_text("parent v2, retrained")  # the parent changed: not done
    proc = run("--init-model", "parent")
    assert proc.returncode == 0 and "already finished" not in proc.stderr
    (tmp_path / "exp" / "x" / "checkpoints").mkdir()  # a run with checkpoints of the parent as it was
    (tmp_path / "exp" / "x" / "checkpoints" / "ckpt-epoch1.pt").write_text("c")
    (tmp_path / "parent" / "model.pt").write_text("parent v3")
    proc = run("--init-model", "parent")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"{repo / 'utils' / 'train_exp.sh'}: exp/x: its checkpoints were not fine-tuned from parent as it is now")
    proc = run("--init-model", "nowhere/parent.pt")
    assert proc.returncode == 1 and "--init_model nowhere/parent.pt: no such model file" in proc.stderr
