"""Multiple input spectrogram inversion (MISI; Gunawardana & Sejdinovic 2005, as used by Wang et al.,
"Alternative objective functions for deep clustering", ICASSP 2018): phase reconstruction of several
sources whose magnitudes are estimated and whose sum must be the mixture.

Starting from the mixture phase, each iteration
  1. inverts every source's STFT ``Y_c`` to a waveform ``y_c``,
  2. shares the mixture error equally: ``y_c += (x - sum_c y_c) / C`` (the sum now equals the mixture),
  3. keeps the phase of ``STFT(y_c)`` and puts back the estimated magnitude ``A_c``,
and the result is the inverse STFT of the last ``Y_c``. Zero iterations give the mixture-phase
reconstruction of the paper (Sec. 3.2) exactly.

The separator applies it to blocks of STFT frames with a margin of neighbouring frames that grows with
the iterations (:attr:`sepkit.Separator.margin`): an iteration moves information by at most
``ceil(n_fft / hop)`` frames, so the kept samples of a block are what MISI over the whole signal gives
(up to float rounding), and memory stays bounded for any length.
"""
import torch


def misi(spec, masks, frontend, length, iters):
    """Reconstruct sources from mixture STFT frames and linear-frequency masks.

    Args:
        spec: ``(C, n, K)`` complex mixture STFT frames (C channels, n frames, K = n_fft/2 + 1 bins),
            centred frames of a signal that starts at the first frame's centre.
        masks: ``(S, n, K)`` real masks, one per source (all sources: the error is shared among them).
        frontend: the :class:`sepkit.frontend.Frontend` of ``spec`` (its STFT / inverse STFT).
        length: samples of the reconstructed signals (``1 + (length - 1) // hop`` must be ``n``, or
            ``length`` the signal's end when the frames run to it).
        iters: MISI iterations; 0 = the masked mixture with its own phase.
    Returns:
        ``(S, C, length)`` float waveforms.
    """
    C, n, K = spec.shape
    S = masks.shape[0]
    Y = spec[None] * masks[:, None]  # (S, C, n, K): estimated magnitude A_c with the mixture phase
    if iters <= 0:
        return frontend.istft(Y.reshape(S * C, n, K), length).reshape(S, C, length)
    mag = Y.abs()
    x = frontend.istft(spec, length)  # (C, L): the mixture itself (every frame of x is inverted exactly)
    for _ in range(iters):
        y = frontend.istft(Y.reshape(S * C, n, K), length).reshape(S, C, length)
        y = y + (x - y.sum(0)) / S  # Eq. of step 2: the estimates now add up to the mixture
        P = frontend.stft(y.reshape(S * C, length))[:, :n]  # (S*C, n, K)
        Y = torch.polar(mag, torch.angle(P).reshape(S, C, n, K))
    return frontend.istft(Y.reshape(S * C, n, K), length).reshape(S, C, length)
