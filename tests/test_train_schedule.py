"""Learning-rate schedules (sepkit.train.schedule): the cosine factor against its formula by hand, the
trainer stepping it once per optimiser step, resume continuing it exactly, and the configurations
that cannot mean anything refused in one line."""
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import one_thread, make_corpus, train_args  # noqa: E402,F401  (one_thread: a fixture)

from sepkit.bin.train import main  # noqa: E402
from sepkit.train.schedule import cosine_factor  # noqa: E402

COSINE = ["--epochs", "3", "--steps_per_epoch", "6", "--lr_schedule", "cosine", "--warmup_steps", "2",
          "--lr", "0.01", "--min_lr", "0.0001", "--batch_size", "2", "--tensorboard", "false", "--dropout", "0.2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("sched"), n_train=3, n_valid=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cosine_factor_by_hand():
    # 10 steps, 2 of warm-up, floor 0.1: warm-up 1/2, 1; then 0.1 + 0.9 (1 + cos(pi (s - 2) / 7)) / 2
    assert cosine_factor(0, 10, 2, 0.1) == pytest.approx(0.5)
    assert cosine_factor(1, 10, 2, 0.1) == pytest.approx(1.0)
    assert cosine_factor(2, 10, 2, 0.1) == pytest.approx(1.0)  # the decay starts at the full rate
    assert cosine_factor(5, 10, 2, 0.1) == pytest.approx(0.1 + 0.45 * (1 + math.cos(3 * math.pi / 7)))
    assert cosine_factor(9, 10, 2, 0.1) == pytest.approx(0.1)  # the last step runs at min_lr
    assert cosine_factor(12, 10, 2, 0.1) == pytest.approx(0.1)  # past the budget: stays at the floor
    assert cosine_factor(0, 4, 0, 0.0) == pytest.approx(1.0) and cosine_factor(3, 4, 0, 0.0) == pytest.approx(0.0)


def _ckpt(outdir, epoch):
    return torch.load(Path(outdir) / "checkpoints" / f"ckpt-epoch{epoch}.pt", weights_only=True)


def test_trainer_steps_cosine_per_step_and_resumes_it(corpus, tmp_path):
    full = tmp_path / "full"
    assert main(train_args(corpus, full, *COSINE)) == 0
    last = _ckpt(full, 3)
    lrs = [h["lr"] for h in last["checkpoint"]["history"]]
    # after epoch e the scheduler has stepped 6e times: the rate of the next step, 0.01 x factor(6e)
    assert lrs == pytest.approx([0.01 * cosine_factor(6 * e, 18, 2, 0.01) for e in (1, 2, 3)], rel=1e-6)
    assert lrs[0] > lrs[1] > lrs[2] == pytest.approx(1e-4)

    # an interrupted run (only epoch 1 done) resumed: the same schedule and the same weights
    cut = tmp_path / "cut"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "ckpt-epoch1.pt", cut / "checkpoints" / "ckpt-epoch1.pt")
    assert main(train_args(corpus, cut, *COSINE)) == 0
    again = _ckpt(cut, 3)
    assert [h["lr"] for h in again["checkpoint"]["history"]] == pytest.approx(lrs, rel=1e-9)
    for k, v in last["model_state"].items():
        assert torch.equal(v, again["model_state"][k]), k

    # a resume that would change the length of the decay is refused, naming the settings
    assert main(train_args(corpus, cut, *[x if x != "3" else "4" for x in COSINE])) == 1
    assert "learning-rate schedule settings ['epochs'] differ" in (cut / "train.log").read_text()


def test_plateau_stays_the_default(corpus, tmp_path):
    out = tmp_path / "plateau"
    assert main(train_args(corpus, out, "--epochs", "2", "--steps_per_epoch", "3", "--batch_size", "2",
                           "--tensorboard", "false")) == 0
    assert [h["lr"] for h in _ckpt(out, 2)["checkpoint"]["history"]] == [0.01, 0.01]  # TINY's lr, unchanged


@pytest.mark.parametrize("extra, message", [
    (["--lr_schedule", "cosine"], "lr_schedule cosine needs steps_per_epoch"),
    (["--warmup_steps", "5", "--steps_per_epoch", "3"], "warmup_steps needs lr_schedule cosine"),
    (["--lr_schedule", "cosine", "--steps_per_epoch", "2", "--epochs", "2", "--warmup_steps", "4"],
     "warmup_steps 4 leaves no step of the budget"),
    (["--lr_schedule", "linear", "--steps_per_epoch", "2"], "linear"),
])
def test_meaningless_schedules_refused(corpus, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(train_args(corpus, tmp_path / "x", *extra))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
