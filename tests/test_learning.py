"""Training learns: a small Chimera network trained on synthetic songs (sepkit.data.synth) halves its
training loss and separates held-out songs with a vocals SI-SDRi of at least 4.5 dB with both heads.

The other trainer tests check files, resume and DDP arithmetic, which all stay green when the
trainer stops learning. This one fails when it does: it was checked by mutation of
sepkit/train/trainer.py, one at a time (the loss's sign flipped; the gradients zeroed between the
clipping and the optimiser step; the optimiser step skipped; the targets permuted across the batch
before the loss). Each made it fail: the training loss went 2.2x up (sign), stayed (zeroed gradients,
no step: SI-SDRi about 0 dB), or, with shuffled targets, still fell to 0.25x, but the held-out vocals
SI-SDRi was 3.0 dB (MI) and -2.3 dB (DC).

Measured on a 2-core AMD EPYC with OMP_NUM_THREADS=2, nearly idle: 18 s in all (17 s CPU). Over corpus and training
seeds 1-5 the mean vocals SI-SDRi of the 4 held-out songs was 7.3-7.9 dB (MI) and 6.2-7.2 dB (DC),
and with seed 1 the training loss fell to 0.11x of its start.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_helpers import make_corpus, train_args  # noqa: E402

SR = 8000
# alpha = 0.1 (the default, both heads); RMSprop at a constant learning rate (lr_patience off).
ARGS = ["--hidden", "48", "--layers", "2", "--emb_dim", "10", "--segment_frames", "50", "--batch_size", "8",
        "--lr", "0.005", "--epochs", "30", "--max_steps_per_epoch", "20", "--patience", "none",
        "--lr_patience", "100", "--log_interval", "20", "--tensorboard", "false", "--dtype", "float32",
        "--alpha", "0.1", "--seed", "1"]
# dB, mean over the held-out songs. The issue asks for 3 dB; a network trained on targets shuffled across
# the batch still learns a spectral prior worth ~3 dB with MI (measured: 2.98 dB), so 3 dB would let
# that broken trainer pass. Trained as here: >= 7.3 dB (MI) and >= 6.2 dB (DC) over seeds 1-5.
MIN_SI_SDRI = 4.5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """As the other training tests: a tiny network trains fastest on one thread, and a busy machine
    punishes spinning ones (two threads cost several times the CPU time here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def song(rng, seconds, sr):
    """One synthetic song, mono: (vocals, accompaniment = bass + drums + other), float32."""
    from sepkit.data.synth import make_song

    stems, _ = make_song(rng, seconds, sr, channels=1)
    return stems["vocals"][0], (stems["bass"] + stems["drums"] + stems["other"])[0]


def _training_set_loss(trainer):
    """Mean Chimera loss over consecutive 50-frame segments of the whole training dump, float32."""
    from sepkit.data.dataset import SegmentDataset, collate
    from sepkit.losses import chimera_loss

    conf = trainer.conf
    ds = SegmentDataset(trainer.train_set.dump, 50, trainer.cmvn, train=False)
    batch = collate([ds[i] for i in range(len(ds))])
    model = trainer.model.eval()
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        out = model(batch["feats"].float(), batch["lengths"])
        loss = chimera_loss({k: v.float() for k, v in out.items()}, batch["mix"], batch["src"], conf["alpha"],
                            conf["mi_loss"], conf["silence_db"], batch["lengths"], conf["dc_norm"])["loss"]
    return loss.mean().item()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from sepkit.train.config import parse_config
    from sepkit.train.distributed import DistEnv
    from sepkit.train.trainer import Trainer

    root = tmp_path_factory.mktemp("learning")
    corpus = make_corpus(root, n_train=16, n_valid=2, seconds=8.0, seed=1, synth=song, feat_conf={"n_mels": 32})
    trainer = Trainer(vars(parse_config(train_args(corpus, root / "exp", *ARGS))), DistEnv())
    before = _training_set_loss(trainer)
    trainer.fit()
    after = _training_set_loss(trainer)
    return trainer, before, after


def test_training_loss_falls_by_half(trained):
    trainer, before, after = trained
    assert trainer.state["step"] == 600
    print(f"training loss {before:.5g} -> {after:.5g} ({after / before:.3f})")
    assert np.isfinite(after) and after <= 0.5 * before, (before, after)


@pytest.mark.parametrize("head", ["mi", "dc"])
def test_held_out_songs_are_separated(trained, head):
    from sepkit import Separator
    from sepkit.metrics import si_sdr_improvement

    trainer, _, _ = trained
    sep = Separator(trainer._model_dict(), dtype="float32")
    assert sep.sources == ["vocals", "accompaniment"]
    rng = np.random.default_rng(123)  # songs the training never saw (the corpus used seed 1)
    scores = []
    for _ in range(4):
        vocals, accomp = song(rng, 6.0, SR)
        mix = vocals + accomp
        est = sep.separate(mix, SR, head=head)
        # DC names its clusters as sources (sepkit.separate): no permutation search for either head
        res = si_sdr_improvement(np.stack([est["vocals"], est["accompaniment"]]), np.stack([vocals, accomp]), mix,
                                 permute=False)
        scores.append(res["si_sdri"][0])
    print(f"vocals SI-SDRi ({head}): {np.round(scores, 2)}, mean {np.mean(scores):.2f} dB")
    assert np.mean(scores) >= MIN_SI_SDRI, scores
