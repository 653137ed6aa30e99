"""The two-headed Chimera network (paper §2.2); DC-only and MI-only are the same class with one head."""
from torch import nn

from sepkit.nets.encoder import BLSTMEncoder
from sepkit.nets.heads import DCHead, MIHead

__all__ = ["ChimeraNet"]


class ChimeraNet(nn.Module):
    """BLSTM body -> linear layer to ``Z`` (F x D per frame) -> DC and/or MI head.

    Paper default: 4 x 500 BLSTM, D = 20, F = 150, C = 2, input = 150 log-mel + deltas (300).

    Args:
        input_dim: network input dimension (features per frame).
        n_freq: F, number of frequency bins the heads output (mel bands, or STFT bins).
        hidden, layers, dropout, batch_norm: see :class:`BLSTMEncoder`.
        emb_dim: D, embedding dimension.
        n_sources: C, number of sources of the MI head.
        heads: any non-empty subset of ``("dc", "mi")``.
        mask_activation: ``softmax`` (paper) or ``sigmoid``.
        mask_bins: ``mel`` (paper; masks go through the mel->linear transfer at separation) or
            ``linear`` (n_freq = n_fft / 2 + 1 STFT bins, applied as they are).
    """

    def __init__(self, input_dim, n_freq=150, hidden=500, layers=4, emb_dim=20, n_sources=2,
                 dropout=0.0, batch_norm=False, heads=("dc", "mi"), mask_activation="softmax",
                 mask_bins="mel"):
        super().__init__()
        heads = tuple(heads)
        if not heads or set(heads) - {"dc", "mi"}:
            raise ValueError(f"heads must be a non-empty subset of ('dc', 'mi'), got {heads}")
        if mask_bins not in ("mel", "linear"):
            raise ValueError(f"mask_bins must be mel or linear, got {mask_bins!r}")
        self.n_freq, self.emb_dim, self.n_sources, self.heads = n_freq, emb_dim, n_sources, heads
        self.mask_bins = mask_bins
        self.encoder = BLSTMEncoder(input_dim, hidden, layers, dropout, batch_norm)
        self.linear = nn.Linear(self.encoder.out_dim, n_freq * emb_dim)
        self.dc_head = DCHead() if "dc" in heads else None
        self.mi_head = MIHead(n_freq, emb_dim, n_sources, mask_activation) if "mi" in heads else None

    def forward(self, feats, lengths=None, heads=None):
        """``feats``: ``(B, T, input_dim)``; ``lengths``: ``(B,)`` or None.

        Returns a dict with ``embedding`` ``(B, T*F, D)`` (DC head) and/or ``mask`` ``(B, T, F, C)``
        (MI head); ``heads`` restricts which are computed (default: all the model has).
        """
        heads = self.heads if heads is None else heads
        B, T, _ = feats.shape
        z = self.linear(self.encoder(feats, lengths)).reshape(B, T, self.n_freq, self.emb_dim)  # Z: (B,T,F,D)
        out = {}
        if "dc" in heads and self.dc_head is not None:
            out["embedding"] = self.dc_head(z)
        if "mi" in heads and self.mi_head is not None:
            out["mask"] = self.mi_head(z)
        return out
