"""The trainer in one process on the CPU: outputs, TensorBoard events, resume, curriculum, stopping."""
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import make_corpus, train_args  # noqa: E402

from sepkit.bin.train import main  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and a busy shared machine punishes spinning ones)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("train"), n_train=6, n_valid=2)


@pytest.fixture(scope="module")
def run3(corpus, tmp_path_factory):
    """A 3-epoch run with TensorBoard and audio examples, keeping the last 2 checkpoints."""
    out = tmp_path_factory.mktemp("run3") / "exp"
    assert main(train_args(corpus, out, "--epochs", "3", "--keep_last_n", "2",
                           "--valid_data", str(corpus["valid_data"]))) == 0
    return out


def test_outputs(run3, corpus):
    from sepkit.model_io import build_from_dict, load_model_dict

    assert sorted(p.name for p in (run3 / "checkpoints").iterdir()) == ["ckpt-epoch2.pt", "ckpt-epoch3.pt"]
    assert not list(run3.glob("**/.*.tmp"))
    conf = yaml.safe_load((run3 / "config.yaml").read_text())
    assert conf["hidden"] == 8 and conf["epochs"] == 3 and conf["curriculum"] is None
    assert conf["train_dump"] == str(corpus["train_dump"])
    # model.pt: a model file that needs no training command line
    d = load_model_dict(run3)
    assert d["model_conf"]["heads"] == ["dc", "mi"] and d["model_conf"]["input_dim"] == 40
    assert d["model_conf"]["n_freq"] == 20 and d["sources"] == ["vocals", "accompaniment"]
    assert d["feat_conf"]["sample_rate"] == 8000 and len(d["cmvn"]["mean"]) == 40
    assert d["train"]["alpha"] == 0.1 and d["train"]["segment_frames"] == 20
    model, frontend, cmvn = build_from_dict(d)
    out = model(torch.zeros(1, 5, 40))
    assert out["mask"].shape == (1, 5, 20, 2) and out["embedding"].shape == (1, 100, 4)
    # the checkpoint is a model file too, plus the resume state
    ck = torch.load(run3 / "checkpoints" / "ckpt-epoch3.pt", weights_only=True)
    assert build_from_dict(ck)[0] is not None
    c = ck["checkpoint"]
    assert c["epoch"] == 3 and c["finished"] == "max_epochs" and len(c["rng"]) == 1 and len(c["history"]) == 3
    best = min(c["history"], key=lambda h: h["valid_loss"])
    assert d["train"]["epoch"] == best["epoch"] and d["train"]["valid_loss"] == pytest.approx(best["valid_loss"])
    log = (run3 / "train.log").read_text()
    for needle in ("epoch 1 step 2 (2/", "frames/s", "grad_norm", "epoch 3 done", "training finished (max_epochs)"):
        assert needle in log


def test_tensorboard_events(run3):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run3 / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    ea.Reload()
    tags = ea.Tags()
    for tag in ("train/loss", "train/dc", "train/mi", "train/lr", "train/grad_norm", "train/frames_per_sec",
                "valid/loss", "valid/dc", "valid/mi"):
        assert tag in tags["scalars"], tag
    assert len(ea.Scalars("valid/loss")) == 3
    assert all(e.value > 0 for e in ea.Scalars("train/frames_per_sec"))
    assert ea.Scalars("train/lr")[0].value == pytest.approx(0.01)
    images = ea.Images("example/masks")
    assert len(images) == 3  # one per validation
    # 5 panels (mixture, 2 MI masks, 2 DC masks) of 20 mels x 4 (upscaled to >= 64 px) + 4 gaps
    assert images[-1].height == 5 * 80 + 4 * 2 and images[-1].width > 100
    assert images[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("mixture", "mi_vocals", "mi_accompaniment", "dc_vocals", "dc_accompaniment"):
        clips = ea.Audio(f"example/{name}")
        assert len(clips) == 3 and clips[-1].sample_rate == 8000 and clips[-1].length_frames > 1000


def test_rerun_of_finished_run_does_nothing_and_more_epochs_continue(run3, corpus, tmp_path, caplog):
    out = tmp_path / "exp"
    shutil.copytree(run3, out)
    before = torch.load(out / "checkpoints" / "ckpt-epoch3.pt", weights_only=True)["model_state"]
    caplog.set_level("INFO")
    args = train_args(corpus, out, "--epochs", "3", "--keep_last_n", "2", "--tensorboard", "false")
    assert main(args) == 0
    assert "training already finished (max_epochs) after 3 epochs" in caplog.text
    assert not (out / "checkpoints" / "ckpt-epoch4.pt").exists()
    args[args.index("--epochs") + 1] = "4"
    assert main(args) == 0
    assert "extending the finished run from 3 to 4 epochs" in caplog.text
    after = torch.load(out / "checkpoints" / "ckpt-epoch4.pt", weights_only=True)
    assert after["checkpoint"]["epoch"] == 4
    assert not torch.equal(after["model_state"]["linear.weight"], before["linear.weight"])


def test_resume_from_older_checkpoint_when_newest_is_corrupt(corpus, tmp_path, caplog):
    """An unreadable newest checkpoint is skipped; the epoch is re-run to the same weights."""
    args = ["--epochs", "2", "--tensorboard", "false", "--dropout", "0.2"]
    ref = tmp_path / "ref"
    assert main(train_args(corpus, ref, *args)) == 0
    out = tmp_path / "exp"
    assert main(train_args(corpus, out, *args)) == 0
    newest = out / "checkpoints" / "ckpt-epoch2.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    (out / "checkpoints" / ".ckpt-epoch3.pt.x.tmp").write_bytes(b"partial")  # left by a kill
    caplog.set_level("INFO")
    assert main(train_args(corpus, out, *args)) == 0
    assert "skipping" in caplog.text and "unreadable checkpoint" in caplog.text
    assert "resuming from" in caplog.text and "ckpt-epoch1.pt: 1 epochs done" in caplog.text
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert [p.stat().st_size for p in out.glob("checkpoints.old.*/ckpt-epoch2.pt")] == [1000]  # kept aside
    a = torch.load(ref / "checkpoints" / "ckpt-epoch2.pt", weights_only=True)["model_state"]
    b = torch.load(newest, weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_curriculum_then_early_stopping(corpus, tmp_path, caplog):
    """lr = 1e-30 (lr must be > 0; updates below float32 resolution leave the weights as they are): the
    validation loss never improves after epoch 1, so patience 1 ends stage 1 after
    epoch 2 (early), and training after epoch 3 (stage 2 gets its own patience)."""
    out = tmp_path / "exp"
    caplog.set_level("INFO")
    assert main(train_args(corpus, out, "--curriculum", "10:5,20", "--epochs", "10", "--patience", "1",
                           "--lr", "1e-30", "--tensorboard", "false")) == 0
    assert "curriculum: early stop after epoch 2; stage 2/2: 20-frame segments from epoch 3" in caplog.text
    assert "early stopping" in caplog.text
    c = torch.load(out / "checkpoints" / "ckpt-epoch3.pt", weights_only=True)["checkpoint"]
    assert c["finished"] == "early_stop" and c["curriculum"]["stage"] == 1 and c["epoch"] == 3
    assert c["curriculum"]["stages"] == [[10, 5], [20, None]]
    assert "10 frames x 5, 20 frames x rest" in caplog.text


def test_mirex_tricks_and_bf16(corpus, tmp_path, caplog):
    """Dropout 0.2, sequence-wise batch norm and the 100 -> 500 style curriculum (scaled down)."""
    from sepkit.model_io import build_from_dict, load_model_dict

    out = tmp_path / "exp"
    caplog.set_level("INFO")
    assert main(train_args(corpus, out, "--curriculum", "10:1,20:1", "--epochs", "5", "--dropout", "0.2",
                           "--batch_norm", "true", "--alpha", "1", "--dtype", "bfloat16",
                           "--tensorboard", "false")) == 0
    assert "stage 2/2: 20-frame segments from epoch 2" in caplog.text
    d = load_model_dict(out)
    assert d["model_conf"]["dropout"] == 0.2 and d["model_conf"]["batch_norm"] is True
    assert d["model_conf"]["heads"] == ["dc"] and d["train"]["segment_frames"] == 20
    c = torch.load(out / "checkpoints" / "ckpt-epoch2.pt", weights_only=True)["checkpoint"]
    assert c["finished"] == "curriculum_done" and c["epoch"] == 2
    model = build_from_dict(d)[0]
    assert any("bn" in name for name, _ in model.named_modules())


def test_errors_are_one_line(corpus, tmp_path, caplog):
    out = tmp_path / "exp"
    assert main(train_args(corpus, out, "--epochs", "1", "--tensorboard", "false")) == 0
    caplog.set_level("INFO")
    assert main(train_args(corpus, out, "--epochs", "1", "--resume", "none")) == 1
    assert "has checkpoints; use --resume auto" in caplog.text
    assert main(train_args(corpus, out, "--epochs", "2", "--hidden", "9")) == 1
    assert "model settings ['hidden'] differ" in caplog.text
    nocmvn = tmp_path / "nocmvn"
    shutil.copytree(corpus["train_dump"], nocmvn)
    (nocmvn / "cmvn.ark").unlink()
    args = train_args(corpus, tmp_path / "x", "--epochs", "1")
    args[args.index("--train-dump") + 1] = str(nocmvn)
    assert main(args) == 1
    assert f"{nocmvn / 'cmvn.ark'}: missing; run python -m sepkit.bin.compute_cmvn" in caplog.text
    with pytest.raises(SystemExit):
        main(train_args(corpus, out, "--optimizer", "sgd"))


def test_resume_from_an_older_checkpoint_keeps_the_newer_ones_aside(corpus, tmp_path, caplog):
    """Resuming from epoch 1 of a finished 3-epoch run replaces no file of that run: its epoch-2 and
    epoch-3 checkpoints and its model.pt (saved after epoch 1) move, byte for byte, to
    checkpoints.old.<time>/, and the log says so (today's main deleted and overwrote them)."""
    out = tmp_path / "exp"
    args = ["--epochs", "3", "--tensorboard", "false", "--max_steps_per_epoch", "2"]
    assert main(train_args(corpus, out, *args)) == 0
    ckdir = out / "checkpoints"
    before = {name: (ckdir / name).read_bytes() for name in ("ckpt-epoch2.pt", "ckpt-epoch3.pt")}
    before["model.pt"] = (out / "model.pt").read_bytes()
    first = (ckdir / "ckpt-epoch1.pt").read_bytes()
    caplog.set_level("INFO")
    assert main(train_args(corpus, out, *args, "--resume", str(ckdir / "ckpt-epoch1.pt"), "--lr", "0.02")) == 0
    aside = sorted(out.glob("checkpoints.old.*"))
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == sorted(before)
    for name, data in before.items():
        assert (aside[0] / name).read_bytes() == data, name
    assert f"moved ckpt-epoch3.pt, ckpt-epoch2.pt, model.pt aside to {aside[0]}" in caplog.text
    # the resumed run went on in place, from epoch 1 (another learning rate: other weights)
    assert (ckdir / "ckpt-epoch1.pt").read_bytes() == first
    new3 = torch.load(ckdir / "ckpt-epoch3.pt", weights_only=True)
    assert new3["checkpoint"]["epoch"] == 3 and new3["checkpoint"]["config"]["lr"] == 0.02
    assert (out / "model.pt").is_file()


def test_prune_leaves_newer_checkpoints_alone(tmp_path):
    from sepkit.train.checkpoint import list_checkpoints, prune_checkpoints

    (tmp_path / "checkpoints").mkdir()
    for e in range(1, 7):
        (tmp_path / "checkpoints" / f"ckpt-epoch{e}.pt").write_bytes(b"x")
    prune_checkpoints(tmp_path, current_epoch=4, keep_last_n=2)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [6, 5, 4, 3]


def test_set_aside_superseded_moves_only_what_the_run_would_replace(tmp_path):
    from sepkit.train.checkpoint import list_checkpoints, set_aside_superseded

    ck = tmp_path / "checkpoints"
    ck.mkdir()
    for e in (1, 2, 3):
        (ck / f"ckpt-epoch{e}.pt").write_bytes(b"%d" % e)
    torch.save({"train": {"epoch": 2}}, tmp_path / "model.pt")
    assert set_aside_superseded(tmp_path, 3) is None  # resuming from the newest: nothing in the way
    dest = set_aside_superseded(tmp_path, 2)  # model.pt is from epoch 2: it stays
    assert sorted(p.name for p in dest.iterdir()) == ["ckpt-epoch3.pt"] and (tmp_path / "model.pt").is_file()
    assert [e for e, _ in list_checkpoints(tmp_path)] == [2, 1]
    other = set_aside_superseded(tmp_path, 5, foreign=True)  # another run's checkpoint: all of them
    assert other != dest and sorted(p.name for p in other.iterdir()) == ["ckpt-epoch1.pt", "ckpt-epoch2.pt",
                                                                         "model.pt"]
    assert list_checkpoints(tmp_path) == [] and (other / "ckpt-epoch1.pt").read_bytes() == b"1"
