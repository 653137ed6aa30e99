"""The two-headed Chimera network (paper §2.2); DC-only and MI-only are the same class with one head."""
from torch import nn

import sepkit.nets.encoder  # noqa: F401  (registers the bodies)
import sepkit.nets.heads  # noqa: F401  (registers the heads)
from sepkit.nets import BODIES, HEADS, MODELS

__all__ = ["ChimeraNet"]


@MODELS.register("chimera", help="body -> linear layer to Z (F x D per frame) -> heads (the paper's Chimera)")
class ChimeraNet(nn.Module):
    """BLSTM body -> linear layer to ``Z`` (F x D per frame) -> DC and/or MI head.

    Paper default: 4 x 500 BLSTM, D = 20, F = 150, C = 2, input = 150 log-mel + deltas (300).

    Args:
        input_dim: network input dimension (features per frame).
        n_freq: F, number of frequency bins the heads output (mel bands, or STFT bins).
        hidden, layers, dropout, batch_norm: see :class:`BLSTMEncoder`.
        emb_dim: D, embedding dimension.
        n_sources: C, number of sources of the MI head.
        heads: a non-empty set of names of :data:`~sepkit.nets.HEADS` (``dc``, ``mi``), each filling
            another output key; head ``x`` is the attribute ``x_head``.
        mask_activation: ``softmax`` (paper) or ``sigmoid``.
        mask_bins: ``mel`` (paper; masks go through the mel->linear transfer at separation) or
            ``linear`` (n_freq = n_fft / 2 + 1 STFT bins, applied as they are).
        body: a name of :data:`~sepkit.nets.BODIES` (``blstm``); it is given input_dim, hidden,
            layers, dropout and batch_norm (and is the attribute ``encoder``); a causal body (``lstm``) is
            also given ``lookahead``.
        lookahead: frames of future context of a causal body (output frame t sees input frames <= t + L).
    """

    def __init__(self, input_dim, n_freq=150, hidden=500, layers=4, emb_dim=20, n_sources=2,
                 dropout=0.0, batch_norm=False, heads=("dc", "mi"), mask_activation="softmax",
                 mask_bins="mel", body="blstm", lookahead=0):
        super().__init__()
        heads = tuple(heads)
        if not heads or not all(isinstance(h, str) and h in HEADS for h in heads) or len(set(heads)) < len(heads):
            raise ValueError(f"heads must be a non-empty set of {HEADS.names()}, got {heads}")
        outputs = [HEADS.setting(h, "output") for h in heads]
        if len(set(outputs)) < len(outputs):
            raise ValueError(f"heads {heads} fill the same output ({', '.join(outputs)})")
        if mask_bins not in ("mel", "linear"):
            raise ValueError(f"mask_bins must be mel or linear, got {mask_bins!r}")
        self.n_freq, self.emb_dim, self.n_sources, self.heads = n_freq, emb_dim, n_sources, heads
        self.mask_bins = mask_bins
        if BODIES.setting(body, "causal"):
            self.encoder = BODIES.get(body)(input_dim, hidden, layers, dropout, batch_norm, lookahead=lookahead)
        elif lookahead:
            raise ValueError(f"lookahead is for a causal body (body {body!r} sees the whole sequence)")
        else:
            self.encoder = BODIES.get(body)(input_dim, hidden, layers, dropout, batch_norm)
        self.linear = nn.Linear(self.encoder.out_dim, n_freq * emb_dim)
        self.dc_head = self.mi_head = None  # the built-in heads' attributes exist even when they are not built
        for name in heads:  # attribute <name>_head: the weights' names in model files (mi_head.weight, ...)
            setattr(self, f"{name}_head", HEADS.get(name)(n_freq=n_freq, emb_dim=emb_dim, n_sources=n_sources,
                                                          activation=mask_activation))

    def forward(self, feats, lengths=None, heads=None):
        """``feats``: ``(B, T, input_dim)``; ``lengths``: ``(B,)`` or None.

        Returns a dict with ``embedding`` ``(B, T*F, D)`` (DC head) and/or ``mask`` ``(B, T, F, C)``
        (MI head); ``heads`` restricts which are computed (default: all the model has).
        """
        heads = self.heads if heads is None else heads
        B, T, _ = feats.shape
        z = self.linear(self.encoder(feats, lengths)).reshape(B, T, self.n_freq, self.emb_dim)  # Z: (B,T,F,D)
        out = {}
        for name in self.heads:
            if name in heads:
                out[HEADS.setting(name, "output")] = getattr(self, f"{name}_head")(z)
        return out
