"""A bit-level emulation of bfloat16 inference, for checking bf16 quality on hardware without it.

Under ``torch.autocast(dtype=torch.bfloat16)`` oneDNN (AMX / avx512_bf16 CPUs) and cuDNN run the
LSTM and linear layers with bf16 operands and float32 accumulation, and hand bf16 outputs to the next
layer. :func:`emulate_bf16` turns a :class:`sepkit.Separator`'s network into exactly that arithmetic
in float32 code: weights rounded to bf16, every matmul operand (layer input, recurrent state) rounded
to bf16, the LSTM cell state kept in float32, every layer's output rounded to bf16. Masks, k-means and
reconstruction stay float32, as in the library's bf16 path. It runs the recurrence one time step at a
time in Python, so it is slow (seconds per clip): a quality check, not a way to separate.
"""
import torch

__all__ = ["EmulatedBf16LSTM", "emulate_bf16", "round_bf16"]


def round_bf16(t):
    """``t`` rounded to bfloat16 (round to nearest even) and returned as float32."""
    return t.to(torch.bfloat16).float()


class EmulatedBf16LSTM(torch.nn.Module):
    """A bidirectional multi-layer LSTM (batch_first) with bf16 operands and float32 accumulation.

    Gates ``W_ih x + W_hh h + b`` (PyTorch's gate order i, f, g, o) take ``x``, ``h`` and the weights
    rounded to bf16; the cell state is float32; each layer's output is rounded to bf16.
    """

    def __init__(self, lstm):
        super().__init__()
        if not (lstm.batch_first and lstm.bidirectional):
            raise ValueError("EmulatedBf16LSTM expects a batch_first bidirectional nn.LSTM")
        self.lstm = lstm

    def forward(self, x, hx=None):
        lstm = self.lstm
        H = lstm.hidden_size
        for layer in range(lstm.num_layers):
            outs = []
            for d, sfx in enumerate(("", "_reverse")):
                w_ih, w_hh = (round_bf16(getattr(lstm, f"weight_{k}_l{layer}{sfx}")) for k in ("ih", "hh"))
                bias = getattr(lstm, f"bias_ih_l{layer}{sfx}") + getattr(lstm, f"bias_hh_l{layer}{sfx}")
                gx = round_bf16(x) @ w_ih.t() + bias  # (B, T, 4H)
                h = x.new_zeros(x.shape[0], H)
                c = x.new_zeros(x.shape[0], H)
                ys = [None] * x.shape[1]
                steps = range(x.shape[1]) if d == 0 else reversed(range(x.shape[1]))
                for t in steps:
                    i, f, g, o = (gx[:, t] + round_bf16(h) @ w_hh.t()).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    ys[t] = h
                outs.append(torch.stack(ys, dim=1))
            x = round_bf16(torch.cat(outs, dim=-1))  # (B, T, 2H)
        return x, None


def emulate_bf16(sep):
    """Turn ``sep``'s (a float32 :class:`sepkit.Separator`) network into its bf16 emulation, in place."""
    net = sep.model
    if not isinstance(getattr(net.encoder, "lstm", None), torch.nn.LSTM):
        raise ValueError("bf16 emulation supports the plain BLSTM encoder (batch_norm: false) only")
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(round_bf16(p))
    net.encoder.lstm = EmulatedBf16LSTM(net.encoder.lstm)

    def round_out(module, args, out):  # the bf16 output of an autocast layer
        return round_bf16(out)

    net.linear.register_forward_hook(round_out)
    if net.dc_head is not None:
        net.dc_head.register_forward_hook(round_out)
    return sep
