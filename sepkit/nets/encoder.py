"""BLSTM encoder: the body of the DC / MI / Chimera networks (paper §3.2; MIREX tricks of §3.3)."""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sepkit.nets import BODIES

__all__ = ["BLSTMEncoder"]


@BODIES.register("blstm", help="stack of bidirectional LSTMs (paper: 4 x 500); hidden, layers, dropout, batch_norm")
class BLSTMEncoder(nn.Module):
    """A stack of bidirectional LSTMs.

    Args:
        input_dim: feature dimension of the input ``(B, T, input_dim)``.
        hidden: units per direction (paper: 500).
        layers: number of BLSTM layers (paper: 4).
        dropout: dropout between layers and on the output (MIREX system: 0.2).
        batch_norm: sequence-wise batch normalisation of the input-to-hidden transform of every
            layer (Laurent et al. 2015, as in the MIREX system): statistics over batch and time of
            ``W_x x``, computed before the recurrence.
    Output: ``(B, T, 2 * hidden)``.
    """

    def __init__(self, input_dim, hidden=500, layers=4, dropout=0.0, batch_norm=False):
        super().__init__()
        self.hidden, self.layers, self.batch_norm = hidden, layers, batch_norm
        self.out_dim = 2 * hidden
        self.dropout = nn.Dropout(dropout)
        if not batch_norm:
            # One fused (cuDNN on GPU) call for the whole stack: the fast default.
            self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, batch_first=True,
                                bidirectional=True, dropout=dropout if layers > 1 else 0.0)
        else:
            self.blocks = nn.ModuleList(
                _BNBLSTMLayer(input_dim if i == 0 else 2 * hidden, hidden) for i in range(layers))

    def forward(self, x, lengths=None):
        """``x``: ``(B, T, D)``; ``lengths``: ``(B,)`` valid frames, or None when all are full."""
        if not self.batch_norm:
            return self.dropout(_run_lstm(self.lstm, x, lengths))
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.dropout(x), lengths)
        return self.dropout(x)


def _run_lstm(lstm, x, lengths):
    T = x.shape[1]
    if lengths is None or bool((lengths == T).all()):
        return lstm(x)[0]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=T)[0]


class _BNBLSTMLayer(nn.Module):
    """One BLSTM layer with batch-normalised input-to-hidden transforms.

    ``W_x x`` for both directions is computed by ``proj`` and normalised by ``bn``; the recurrence
    then runs in a bidirectional ``nn.LSTM`` whose own input weights are fixed selection matrices
    (forward gates read the first half, backward the second), which keeps cuDNN and packing.
    """

    def __init__(self, input_dim, hidden):
        super().__init__()
        g = 4 * hidden
        self.proj = nn.Linear(input_dim, 2 * g, bias=False)
        self.bn = nn.BatchNorm1d(2 * g)
        self.lstm = nn.LSTM(2 * g, hidden, batch_first=True, bidirectional=True)
        eye = torch.eye(g)
        with torch.no_grad():
            self.lstm.weight_ih_l0.copy_(torch.cat([eye, torch.zeros(g, g)], 1))
            self.lstm.weight_ih_l0_reverse.copy_(torch.cat([torch.zeros(g, g), eye], 1))
            self.lstm.bias_ih_l0.zero_()
            self.lstm.bias_ih_l0_reverse.zero_()
        for name in ("weight_ih_l0", "weight_ih_l0_reverse", "bias_ih_l0", "bias_ih_l0_reverse"):
            getattr(self.lstm, name).requires_grad_(False)

    def forward(self, x, lengths=None):
        B, T, _ = x.shape
        gates = self.proj(x)  # (B, T, 8H)
        if lengths is None:
            normed = self.bn(gates.reshape(B * T, -1)).reshape(B, T, -1)
        else:
            # Statistics over valid frames only; padded frames pass through unchanged.
            valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
            normed = gates.clone()
            normed[valid] = self.bn(gates[valid])
        return _run_lstm(self.lstm, normed, lengths)
