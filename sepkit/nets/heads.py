"""Output heads of the Chimera network (paper §2.2, Fig. 1)."""
import torch
from torch import nn

from sepkit.nets import HEADS

__all__ = ["DCHead", "MIHead"]


@HEADS.register("dc", output="embedding", help="deep clustering: V = normalize(tanh(Z)), (B, T*F, D)")
class DCHead(nn.Module):
    """Deep clustering head: ``V = normalize(tanh(Z))`` per T-F bin (§2.2).

    Input ``Z``: ``(B, T, F, D)``. Output: embeddings ``(B, T*F, D)``, time-major, unit norm per bin.
    It has no weights; it takes the arguments every head is given and uses none.
    """

    def __init__(self, n_freq=None, emb_dim=None, n_sources=None, activation=None):
        super().__init__()

    def forward(self, z):
        B, T, F, D = z.shape
        v = torch.tanh(z)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return v.reshape(B, T * F, D)  # (B, T, F, D) -> (B, T*F, D)


@HEADS.register("mi", output="mask",
                help="mask inference: F per-frequency D x C layers, softmax or sigmoid, (B, T, F, C)")
class MIHead(nn.Module):
    """Mask inference head: F per-frequency ``D x C`` layers on ``Z``, then softmax or sigmoid (§2.2).

    The F layers are one weight tensor ``(F, D, C)`` applied with a single einsum.
    Input ``Z``: ``(B, T, F, D)``. Output: masks ``(B, T, F, C)`` in [0, 1].
    """

    def __init__(self, n_freq, emb_dim, n_sources, activation="softmax"):
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown mask activation {activation!r} (softmax or sigmoid)")
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(n_freq, emb_dim, n_sources))
        self.bias = nn.Parameter(torch.zeros(n_freq, n_sources))
        bound = emb_dim**-0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, z):
        logits = torch.einsum("btfd,fdc->btfc", z, self.weight) + self.bias
        if self.activation == "softmax":
            return logits.softmax(-1)
        return logits.sigmoid()
