"""Training configuration (YAML + command line), data sharding, RNG state and TensorBoard images."""
import io
import random

import numpy as np
import pytest
import torch
import yaml

from sepkit.train.config import config_dict, dump_config, get_parser, parse_config, parse_curriculum
from sepkit.train.distributed import (DistEnv, GlobalBatchSampler, check_params_in_sync, get_rng_state,
                                      set_rng_state, shard_batches)
from sepkit.train.tensorboard import colorize, stack_panels

PATHS = ["--train_dump", "t", "--valid_dump", "v", "--outdir", "o"]


def _parse(argv):
    return parse_config(argv + PATHS)


def test_command_line_overrides_yaml(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("hidden: 64\nlayers: 2\nlr: 1e-3\n")
    args = _parse(["--config", str(conf), "--hidden", "32"])
    assert args.hidden == 32 and args.layers == 2 and args.lr == pytest.approx(1e-3)
    # dashes and underscores name the same key
    assert _parse(["--train-dump", "x", "--emb-dim", "5"]).emb_dim == 5


def test_booleans_none_and_yaml_1_1_pitfalls(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("batch_norm: yes\ntensorboard: off\nsilence_db: null\ngrad_clip: none\n"
                    "curriculum: 100:10\npin_memory: False\nseed: 0123\n")
    a = _parse(["--config", str(conf)])
    assert a.batch_norm is True and a.tensorboard is False and a.pin_memory is False
    assert a.silence_db is None and a.grad_clip is None  # a YAML null is not dropped
    assert a.curriculum == "100:10"  # not YAML 1.1's base-60 integer 6010
    assert a.seed == 123
    b = _parse(["--config", str(conf), "--batch_norm", "false", "--silence_db", "30", "--curriculum", "none"])
    assert b.batch_norm is False and b.silence_db == 30.0 and b.curriculum is None
    assert _parse(["--batch_norm"]).batch_norm is True


@pytest.mark.parametrize("text, message", [
    ("hiden: 3\n", "unknown key 'hiden' (did you mean 'hidden'?)"),
    ("hidden: [1, 2]\n", "key 'hidden' needs a single value"),
    ("- a\n", "expected a mapping"),
])
def test_bad_yaml_is_one_line_naming_file_and_key(tmp_path, capsys, text, message):
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    with pytest.raises(SystemExit) as exc:
        _parse(["--config", str(conf)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(conf) in err and message in err


@pytest.mark.parametrize("argv, message", [
    (["--batch_norm", "maybe"], "expected a boolean"),
    (["--alpha", "1.5"], "expected a number in [0, 1]"),
    (["--curriculum", "100:x"], "expected FRAMES:EPOCHS"),
    (["--curriculum", "100,500:3"], "only the last stage may omit its epochs"),
    (["--curriculum", "100:10,500", "--epochs", "10"], "leaves no epochs for its last stage"),
    (["--optimizer", "sgd"], "invalid choice"),
    (["--grad_clip=-1"], "--grad-clip: expected a finite number > 0, got '-1'"),  # trained uphill, exit 0
    (["--grad_clip", "0"], "expected a finite number > 0, got '0'"),
    (["--lr=-1e-3"], "argument --lr: expected a finite number > 0, got '-1e-3'"),  # was a traceback
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["--weight_decay=-1"], "--weight-decay: expected a finite number >= 0, got '-1'"),  # was a traceback
    (["--lr_factor", "1.5"], "--lr-factor: expected a number in (0, 1], got '1.5'"),
    (["--min_lr=-1"], "--min-lr: expected a finite number >= 0, got '-1'"),
])
def test_bad_values(capsys, argv, message):
    with pytest.raises(SystemExit):
        _parse(argv)
    assert message in capsys.readouterr().err


def test_missing_paths(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--hidden", "3"])
    assert "missing --train_dump, --valid_dump, --outdir" in capsys.readouterr().err


def test_print_config_documents_every_key_and_round_trips(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(["--print_config"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    defaults = yaml.safe_load(text)
    keys = [a.dest for a in get_parser()._actions if a.dest not in ("help", "config", "print_config")]
    assert sorted(defaults) == sorted(keys)
    for key in keys:  # a comment line with the help text precedes every key
        lines = text.splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 10, key
    (tmp_path / "defaults.yaml").write_text(text)
    assert config_dict(_parse(["--config", str(tmp_path / "defaults.yaml")])) == config_dict(_parse([]))


def test_resolved_config_round_trips(tmp_path):
    args = _parse(["--curriculum", "100:2,500", "--silence_db", "none", "--batch_norm", "true", "--lr", "0.0003"])
    dump_config(tmp_path / "config.yaml", args)
    again = parse_config(["--config", str(tmp_path / "config.yaml")])
    assert config_dict(again) == config_dict(args)


def test_parse_curriculum():
    assert parse_curriculum("100:10,500") == [(100, 10), (500, None)]
    assert parse_curriculum(" 100:10 , 500:5 ") == [(100, 10), (500, 5)]
    assert parse_curriculum(None) is None


def test_global_batches_are_the_same_for_any_number_of_processes():
    n, B = 37, 8
    one = list(GlobalBatchSampler(n, B, seed=3))
    two = [list(GlobalBatchSampler(n, B, rank=r, world_size=2, seed=3)) for r in range(2)]
    assert len(one) == 4 == len(two[0]) == len(two[1])  # incomplete last batch dropped
    for k, batch in enumerate(one):
        assert two[0][k] + two[1][k] == batch and len(two[0][k]) == 4
    assert len(set(sum(one, []))) == 32
    s = GlobalBatchSampler(n, B, seed=3)
    s.set_epoch(1)
    assert list(s) != one  # new order every epoch ...
    s.set_epoch(0)
    assert list(s) == one  # ... and a pure function of (seed, epoch)
    assert len(GlobalBatchSampler(n, B, max_batches=2)) == 2
    with pytest.raises(ValueError, match="does not divide"):
        GlobalBatchSampler(n, 7, world_size=2)


def test_validation_shards_cover_every_item_once():
    shards = [shard_batches(23, 8, r, 3) for r in range(3)]
    items = sorted(i for s in shards for b in s for i in b)
    assert items == list(range(23))
    assert all(len(b) <= 3 for s in shards for b in s)


def test_rng_state_round_trips_through_weights_only_load():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in numpy's state
    buf = io.BytesIO()
    torch.save(get_rng_state(), buf)
    expect = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True))
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1])
    assert expect[2] == got[2] and expect[3] == got[3]


def test_single_process_sync_check_and_images():
    assert check_params_in_sync(torch.nn.Linear(3, 2), DistEnv()) == 2
    c = colorize(np.array([[0.0, 1.0, 0.5]]))
    assert c.shape == (1, 3, 3) and c.dtype == np.uint8
    assert tuple(c[0, 0]) == (68, 1, 84) and tuple(c[0, 1]) == (253, 231, 37)
    img = stack_panels([np.zeros((7, 10)), np.ones((7, 10))], gap=2, min_height=20)
    assert img.shape == (3, 2 * 20 + 2, 7)
    assert (img[:, 20:22] == 255).all()  # white gap between panels
    ramp = np.tile(np.linspace(0, 1, 10), (4, 1))  # (T=4, F=10), high values at high frequency
    top_row = stack_panels([ramp], min_height=10)[:, 0, 0]
    assert tuple(top_row) == (253, 231, 37)  # high frequencies at the top


def _state(**kw):
    st = {"epoch": 1, "stage": 0, "stage_epoch": 1, "bad_epochs": 0, "finished": None}
    st.update(kw)
    return st


def test_advance_schedule():
    from sepkit.train.curriculum import advance_schedule

    stages = [(100, 2), (500, None)]
    st = _state()
    assert advance_schedule(st, stages, patience=3, max_epochs=10) is None and st["stage"] == 0
    st = _state(epoch=2, stage_epoch=2, bad_epochs=1)
    msg = advance_schedule(st, stages, patience=3, max_epochs=10)
    assert msg == "curriculum: stage complete after epoch 2; stage 2/2: 500-frame segments from epoch 3"
    assert st["stage"] == 1 and st["stage_epoch"] == 0 and st["bad_epochs"] == 0 and st["finished"] is None
    st = _state(epoch=1, bad_epochs=3)  # stage 1 stopped early: stage 2 starts
    assert "early stop after epoch 1" in advance_schedule(st, stages, patience=3, max_epochs=10)
    st = _state(epoch=5, stage=1, stage_epoch=3, bad_epochs=3)  # last stage stopped early: done
    assert advance_schedule(st, stages, patience=3, max_epochs=10).startswith("early stopping")
    assert st["finished"] == "early_stop"
    st = _state(epoch=10, stage=1, stage_epoch=8)
    advance_schedule(st, stages, patience=None, max_epochs=10)
    assert st["finished"] == "max_epochs"
    st = _state(epoch=4, stage=1, stage_epoch=2)
    advance_schedule(st, [(100, 2), (500, 2)], patience=None, max_epochs=10)
    assert st["finished"] == "curriculum_done"
