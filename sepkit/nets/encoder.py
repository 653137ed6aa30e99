"""BLSTM encoder: the body of the DC / MI / Chimera networks (paper §3.2; MIREX tricks of §3.3)."""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sepkit.nets import BODIES

__all__ = ["BLSTMEncoder", "LSTMEncoder"]


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


@BODIES.register("lstm", causal=True,
                 help="stack of unidirectional LSTMs, causal with `lookahead` frames of future context (live "
                      "separation, sepkit.online); hidden, layers, dropout, lookahead")
class LSTMEncoder(nn.Module):
    """A stack of unidirectional (causal) LSTMs with an optional lookahead of ``L`` frames.

    Output frame ``t`` is the LSTM's output after reading input frame ``t + L``: the network sees ``L``
    frames of future context and nothing beyond, so it can run live with an algorithmic latency of
    ``window + hop + L * hop`` samples. On a whole sequence, :meth:`forward` appends ``L`` zero frames
    (the end of the stream), runs the LSTM and drops its first ``L`` outputs. Block by block,
    :meth:`init_state` and :meth:`step` run the same LSTM on consecutive chunks with the state carried
    (the raw, unshifted outputs); the caller delays them by ``L`` frames and ends the stream with ``L``
    zero frames, which gives :meth:`forward`'s output exactly (:mod:`sepkit.online`).

    Args:
        input_dim: feature dimension of the input ``(B, T, input_dim)``.
        hidden: units per layer.
        layers: number of LSTM layers.
        dropout: dropout between layers and on the output.
        batch_norm: not supported (its batch statistics over time are not causal); must be False.
        lookahead: ``L`` >= 0 frames of future context (0 = strictly causal).
    Output: ``(B, T, hidden)``.
    """

    causal = True

    def __init__(self, input_dim, hidden=300, layers=3, dropout=0.0, batch_norm=False, lookahead=0):
        super().__init__()
        if batch_norm:
            raise ValueError("body lstm has no batch_norm (its statistics over time would see the future)")
        if not (isinstance(lookahead, int) and not isinstance(lookahead, bool) and 0 <= lookahead <= 1000):
            raise ValueError(f"lookahead must be an integer number of frames in [0, 1000], got {lookahead!r}")
        self.hidden, self.layers, self.lookahead, self.batch_norm = hidden, layers, lookahead, False
        self.out_dim = hidden
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)

    def forward(self, x, lengths=None):
        """``x``: ``(B, T, D)``; ``lengths``: ``(B,)`` valid frames (each sequence's end gets its own L zero
        frames), or None when all are full."""
        L, (B, T, D) = self.lookahead, x.shape
        if L:
            x = torch.cat([x, x.new_zeros(B, L, D)], 1)
            if lengths is not None and not bool((lengths == T).all()):
                # The zero frames must follow each sequence's last valid frame, not the batch's padding.
                valid = torch.arange(T + L, device=x.device)[None, :] < lengths.to(x.device)[:, None]
                x = x * valid[..., None].to(x.dtype)
            lengths = None if lengths is None else lengths + L
        h = _run_lstm(self.lstm, x, lengths)
        return self.dropout(h[:, L:L + T])

    def init_state(self, batch=1, device="cpu", dtype=torch.float32):
        """The zero state of the LSTM stack for :meth:`step`."""
        z = torch.zeros(self.layers, batch, self.hidden, device=device, dtype=dtype)
        return (z, z.clone())

    def step(self, x, state):
        """Run a chunk ``(B, t, D)`` (``t`` >= 0) with the carried ``state``: ``(raw outputs (B, t, hidden), state)``.

        Raw = not delayed: output ``i`` belongs to frame ``(first frame of the chunk) + i - L``."""
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.hidden), state
        h, state = self.lstm(x, state)
        return self.dropout(h), state
