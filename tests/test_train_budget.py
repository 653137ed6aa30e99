"""Training budgets that do not follow the corpus size: ``steps_per_epoch`` (an epoch of a fixed number
of steps, in several passes over a small corpus), and the warning when the data make a run much shorter
than its configuration means (``max_steps_per_epoch`` far above one pass)."""
import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import make_corpus, train_args  # noqa: E402

from sepkit.train.curriculum import budget_note  # noqa: E402
from sepkit.train.distributed import GlobalBatchSampler  # noqa: E402


def _batches(n, batch_size, **kw):
    sampler = GlobalBatchSampler(n, batch_size, seed=3, **kw)
    sampler.set_epoch(2)
    return len(sampler), list(sampler)


def test_steps_per_epoch_takes_several_passes():
    n_plain, plain = _batches(10, 4)  # one pass: 2 full batches, 2 items dropped
    assert n_plain == 2 and len(plain) == 2
    n, batches = _batches(10, 4, steps=7)
    assert n == len(batches) == 7
    assert batches[:2] == plain  # the first pass is the epoch's usual one (same runs as before)
    passes = [sum(batches[i:i + 2], []) for i in (0, 2, 4)]
    assert all(len(set(p)) == 8 for p in passes) and len({tuple(p) for p in passes}) == 3  # new orders
    assert _batches(10, 4, steps=7, max_batches=5)[0] == 5  # max_batches still cuts
    assert _batches(40, 4, steps=3)[1] == _batches(40, 4)[1][:3]  # a longer pass is cut
    assert _batches(3, 4, steps=5) == (0, [])  # no full batch: nothing (the trainer says so)
    # DDP: the ranks' shards of every step make the single-process batch
    for step in range(7):
        shards = [_batches(10, 4, steps=7, rank=r, world_size=2)[1][step] for r in (0, 1)]
        assert shards[0] + shards[1] == batches[step]


def test_budget_note():
    conf = {"epochs": 5, "steps_per_epoch": None, "max_steps_per_epoch": 100}
    level, text = budget_note(conf, 10)
    assert level == logging.WARNING
    assert "5 epochs train 50 steps, not the 500 the configuration means; set steps_per_epoch 100" in text
    assert budget_note(conf, 60) is None  # more than half of the cap: as meant
    assert budget_note({**conf, "max_steps_per_epoch": None}, 10) is None  # one pass per epoch, as asked
    level, text = budget_note({**conf, "steps_per_epoch": 100}, 10)
    assert level == logging.INFO and "10.0 passes" in text and "5 epochs = 500 steps" in text
    assert budget_note({**conf, "steps_per_epoch": 100}, 400) is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_corpus(tmp_path_factory.mktemp("budget"), n_train=3, n_valid=1)
    torch.set_num_threads(n)


def _steps(out):
    return torch.load(out / "checkpoints" / "ckpt-epoch2.pt", weights_only=True)["checkpoint"]["step"]


def test_trainer_steps_per_epoch_and_warning(corpus, tmp_path, caplog):
    from sepkit.bin.train import main

    caplog.set_level("INFO")
    args = ["--epochs", "2", "--tensorboard", "false", "--batch_size", "2", "--max_steps_per_epoch", "40"]
    assert main(train_args(corpus, tmp_path / "short", *args)) == 0
    one_pass = _steps(tmp_path / "short") // 2
    assert 0 < one_pass <= 20
    assert f"2 epochs train {2 * one_pass} steps, not the 80 the configuration means" in caplog.text
    caplog.clear()
    assert main(train_args(corpus, tmp_path / "fixed", *args, "--steps_per_epoch", "30")) == 0
    assert _steps(tmp_path / "fixed") == 60
    assert "not the 80 the configuration means" not in caplog.text and "2 epochs = 60 steps" in caplog.text
