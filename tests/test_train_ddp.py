"""DDP on the CPU (gloo, 2 processes): replicas stay identical, 2 x B/2 follows 1 x B with alpha = 1 and
the default alpha = 0.1, and a run SIGKILLed mid-epoch resumes to the weights of an uninterrupted one."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import make_corpus, run_train_sh, start_ddp, train_args  # noqa: E402

EPOCHS = ["--epochs", "2", "--tensorboard", "false"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and a busy shared machine punishes spinning ones)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ddp"), n_train=6, n_valid=2)


def _in_process(args):
    from sepkit.train.config import parse_config
    from sepkit.train.distributed import DistEnv
    from sepkit.train.trainer import Trainer

    trainer = Trainer(vars(parse_config(args)), DistEnv())
    trainer.fit()
    return trainer


@pytest.mark.parametrize("alpha", ["1", "0.1"])
def test_two_processes_match_one_with_the_global_batch(corpus, tmp_path, alpha):
    """utils/train.sh --nproc_cpu 2 (torchrun, gloo) with the DC-only objective (alpha = 1: no MI
    head is built) and with the default Chimera system (alpha = 0.1: both heads, both trained)."""
    epochs = [*EPOCHS, "--alpha", alpha]
    heads = ["dc"] if alpha == "1" else ["dc", "mi"]
    ddp_out = tmp_path / "ddp"
    run_train_sh(["--ngpu", "0", "--nproc_cpu", "2"], train_args(corpus, ddp_out, *epochs))
    log = (ddp_out / "train.log").read_text()
    # compared every epoch through digests of the parameters' bytes (a mismatch stops training)
    assert log.count("parameters identical on 2 ranks") == 2
    assert "2 process(es) on cpu (gloo), global batch 8" in log
    d = torch.load(ddp_out / "model.pt", weights_only=True)
    assert d["model_conf"]["heads"] == heads
    assert any(k.startswith("mi_head") for k in d["model_state"]) == ("mi" in heads)

    # One process with the same global batch of 8 (the 2-process run took 4 per rank) takes the same
    # steps; the weights differ only by float rounding (batch-size-dependent reduction order),
    # which RMSprop's per-weight normalisation amplifies a little: compare against the gap to a
    # run that really differs (global batch 4, same number of steps).
    ddp_ckpt = torch.load(ddp_out / "checkpoints" / "ckpt-epoch2.pt", weights_only=True)
    single = _in_process(train_args(corpus, tmp_path / "single", *epochs))
    other = _in_process(train_args(corpus, tmp_path / "b4", *epochs, "--batch_size", "4", "--max_steps_per_epoch",
                                   str(single.state["step"] // 2)))
    assert single.state["step"] == ddp_ckpt["checkpoint"]["step"] == other.state["step"]
    ref = single.model.state_dict()
    gap_ddp = max((ddp_ckpt["model_state"][k] - v).abs().max().item() for k, v in ref.items())
    gap_other = max((other.model.state_dict()[k] - v).abs().max().item() for k, v in ref.items())
    assert gap_ddp < 1e-3, gap_ddp
    assert gap_ddp < 0.02 * gap_other, (gap_ddp, gap_other)
    for a, b in zip(ddp_ckpt["checkpoint"]["history"], single.state["history"]):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_global_batch_must_divide_over_processes(corpus, tmp_path):
    from sepkit.train.config import parse_config
    from sepkit.train.distributed import DistEnv
    from sepkit.train.trainer import Trainer

    conf = vars(parse_config(train_args(corpus, tmp_path / "odd", "--batch_size", "7", *EPOCHS)))
    with pytest.raises(SystemExit, match="batch_size=7 is the global batch: it must divide by the 2 processes"):
        Trainer(conf, DistEnv(rank=0, world_size=2))


def test_sync_check_detects_a_diverged_replica(monkeypatch):
    from sepkit.train import distributed

    model = torch.nn.Linear(3, 2)
    env = distributed.DistEnv(rank=0, world_size=2)
    same = distributed.params_digest(model)
    monkeypatch.setattr(distributed, "all_gather_object", lambda obj, env: [obj, same])
    assert distributed.check_params_in_sync(model, env) == 2
    other = torch.nn.Linear(3, 2)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.bias[0] = torch.nextafter(other.bias[0], torch.tensor(1.0))  # one ulp
    monkeypatch.setattr(distributed, "all_gather_object", lambda obj, env: [obj, distributed.params_digest(other)])
    with pytest.raises(RuntimeError, match=r"rank\(s\) \[1\] differ"):
        distributed.check_params_in_sync(model, env)



# Many small steps per epoch (one segment per rank and step), so that the kill lands inside epoch 2.
RESUME_ARGS = ["--epochs", "3", "--batch_size", "2", "--segment_frames", "10", "--log_interval", "1",
               "--max_steps_per_epoch", "30", "--dropout", "0.2", "--tensorboard", "false"]


def _wait_all(procs, timeout):
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_sigkill_mid_epoch_then_resume_gives_uninterrupted_weights(corpus, tmp_path):
    """Both processes of a 2-process gloo run are SIGKILLed in the middle of epoch 2; the same
    command again resumes from epoch 1 and ends with the weights of an uninterrupted 2-process run,
    bit for bit (every rank's RNG state is in the checkpoint; data order is a function of the epoch)."""
    from sepkit.train.checkpoint import ckpt_path

    killed = tmp_path / "killed"
    args = train_args(corpus, killed, *RESUME_ARGS)
    victims = start_ddp(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "train.log"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in victims):
            if log.is_file() and "epoch 2 step 34 (4/30)" in log.read_text():
                for p in victims:
                    os.kill(p.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        codes = _wait_all(victims, 30)
    assert codes == [-signal.SIGKILL] * 2, f"the run ended ({codes}) before it could be killed mid-epoch"
    text = log.read_text()
    assert "epoch 2 done" not in text and "ckpt-epoch1.pt" in text
    assert not ckpt_path(killed, 2).exists()

    # the re-run and an uninterrupted run, side by side (one thread per process)
    rerun = start_ddp(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    full = start_ddp(train_args(corpus, tmp_path / "full", *RESUME_ARGS), stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True)
    codes = _wait_all(rerun + full, 300)
    assert codes == [0] * 4, [p.stderr.read()[-2000:] for p in rerun + full]
    assert f"resuming from {ckpt_path(killed, 1)}: 1 epochs done, step 30" in log.read_text()
    a = torch.load(ckpt_path(tmp_path / "full", 3), weights_only=True)
    b = torch.load(ckpt_path(killed, 3), weights_only=True)
    assert a["model_conf"]["heads"] == ["dc", "mi"]
    assert a["model_state"].keys() == b["model_state"].keys()
    for name in a["model_state"]:
        assert torch.equal(a["model_state"][name], b["model_state"][name]), name
    assert a["checkpoint"]["step"] == b["checkpoint"]["step"] == 90 and b["checkpoint"]["world_size"] == 2
    assert [h["valid_loss"] for h in a["checkpoint"]["history"]] == [h["valid_loss"] for h in b["checkpoint"]["history"]]
