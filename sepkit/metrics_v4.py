"""BSS eval v4 (SiSEC 2018, Stöter, Liutkus & Ito 2018): framewise image metrics as MUSDB18 reports them.

Implemented here from the definitions (museval, the usual tool, is not needed here; it is the
reference of tests/test_metrics_v4.py: stored museval numbers on fixed signals, and a live
comparison where museval is installed, as the dev extra does). What makes it "v4" rather than mir_eval's v3 framewise functions:

* *Images* version: an estimate is compared with the reference image itself; the spatial
  (filtering) distortion ``e_spat`` is an error term (SDR counts it, ISR measures it alone).
* *Time-invariant distortion filters*: the least-squares projection filters (``filters_len``
  = 512 taps per channel pair) are computed **once on the whole track**; only the energy ratios
  are computed per window (v3 re-estimates the filters in every window).
* Windows of ``win`` seconds every ``hop`` seconds (1 s / 1 s for MUSDB18); a window in which a
  reference or an estimate is all zeros is undefined (NaN); the last partial window is dropped.
* Aggregation (:func:`aggregate_v4`): median over a track's frames ignoring NaN, then median over
  tracks of those per-track medians.

Decomposition of estimate ``e_j`` of source ``j`` in one window (Vincent et al. 2006, with the
window's references filtered by the global filters, each projection ``L - 1`` samples longer)::

    s_true   = reference image of j (zero padded by L - 1)
    P_j      = projection of e_j on delayed copies of source j's channels
    P_all    = projection of e_j on delayed copies of all sources' channels
    e_spat   = P_j - s_true,  e_interf = P_all - P_j,  e_artif = e_j - P_all
    SDR = 10 log10 |s_true|^2 / |e_j - s_true|^2           ISR = 10 log10 |s_true|^2 / |e_spat|^2
    SIR = 10 log10 |P_j|^2 / |e_interf|^2                 SAR = 10 log10 |P_all|^2 / |e_artif|^2

Signals are ``(S, N, M)`` numpy arrays: sources x samples x channels (``(S, N)`` = mono).
"""
import logging

import numpy as np
from scipy.linalg import toeplitz
from scipy.signal import fftconvolve

logger = logging.getLogger(__name__)

__all__ = ["bss_eval_v4", "frame_bounds", "track_medians", "aggregate_v4", "METRICS_V4"]

METRICS_V4 = ("sdr", "isr", "sir", "sar")


def frame_bounds(n_samples, win, hop):
    """``[(start, stop)]`` sample bounds of the evaluation windows (partial last window dropped).

    One window covering everything when ``win >= n_samples``.
    """
    if win >= n_samples:
        return [(0, n_samples)]
    count = (n_samples - win + hop) // hop
    return [(k * hop, k * hop + win) for k in range(count)]


def _as_3d(x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"expected (sources, samples[, channels]), got shape {x.shape}")
    return x


def _xcorr(a_f, b_f, n_fft, lags):
    """``r[k] = sum_t a[t] b[t + k]`` for ``k`` in ``-(lags-1) .. lags-1`` via FFTs of zero-padded signals.

    Returns ``(2 * lags - 1,)`` ordered from lag ``-(lags - 1)`` to ``lags - 1``.
    """
    r = np.fft.irfft(np.conj(a_f) * b_f, n=n_fft)
    return np.concatenate([r[n_fft - lags + 1:], r[:lags]])


def _gram_and_cross(refs, est, L):
    """Normal equations of the projection of every estimate on delayed reference channels.

    Args:
        refs: ``(S, N, M)``; est: ``(S, N, M)``; L: filter length (taps).
    Returns:
        G ``(S*M*L, S*M*L)`` with ``G[(i,a,k), (j,b,l)] = sum_t r_ia[t-k] r_jb[t-l]``;
        D ``(S_est, S*M*L, M)`` with ``D[e, (i,a,k), c] = sum_t r_ia[t-k] est_ec[t]``.
    """
    S, N, M = refs.shape
    n_fft = int(2 ** np.ceil(np.log2(N + L - 1)))
    rf = np.fft.rfft(refs, n=n_fft, axis=1)  # (S, K, M)
    ef = np.fft.rfft(est, n=n_fft, axis=1)
    P = S * M
    G = np.zeros((P * L, P * L))
    flat = [(i, a) for i in range(S) for a in range(M)]
    for p, (i, a) in enumerate(flat):
        for q in range(p, P):
            j, b = flat[q]
            # sum_t r_ia[t-k] r_jb[t-l] = xcorr_{ia,jb}[k - l]: lag k-l in -(L-1)..L-1
            r = _xcorr(rf[i, :, a], rf[j, :, b], n_fft, L)  # r(m) = sum_u r_ia[u] r_jb[u + m]
            block = toeplitz(r[L - 1:], r[L - 1::-1])  # block[k, l] = r(k - l)
            G[p * L:(p + 1) * L, q * L:(q + 1) * L] = block
            G[q * L:(q + 1) * L, p * L:(p + 1) * L] = block.T
    D = np.zeros((est.shape[0], P * L, M))
    for e in range(est.shape[0]):
        for p, (i, a) in enumerate(flat):
            for c in range(M):
                r = _xcorr(rf[i, :, a], ef[e, :, c], n_fft, L)  # r[m] = sum_t r_ia[t] est[t + m]
                D[e, p * L:(p + 1) * L, c] = r[L - 1:]  # lag k >= 0: sum_t r_ia[t - k] est[t]
    return G, D


def _solve(A, D):
    """``A^-1 D`` for the Gram matrix ``A`` (symmetric, positive semi-definite; its diagonal already raised by
    the float64 eps): Cholesky (half the work of an LU), else LU, else least squares when the references are
    (numerically) dependent."""
    import warnings

    from scipy.linalg import LinAlgError, LinAlgWarning, solve

    try:
        with warnings.catch_warnings():  # band-limited stems (a bass) make G near singular: eps is the remedy
            warnings.simplefilter("ignore", LinAlgWarning)
            return solve(A, D, assume_a="pos", check_finite=False)
    except (LinAlgError, ValueError):
        pass
    try:
        return np.linalg.solve(A, D)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, D, rcond=None)[0]


def _project(refs, filters, L):
    """Filter references ``(S', n, M)`` with ``filters (S'*M*L, K)``; -> ``(n + L - 1, K)``.

    Output column ``c`` is ``sum_{i,a} filters[(i, a, :), c] * refs[i, :, a]`` (convolutions).
    """
    S, n, M = refs.shape
    K = filters.shape[1]
    W = filters.reshape(S, M, L, K)
    out = np.zeros((n + L - 1, K))
    for i in range(S):
        for a in range(M):
            out += fftconvolve(refs[i, :, a][:, None], W[i, a], axes=0)
    return out


def _db(num, den):
    if den <= 0:
        return np.inf
    if num <= 0:
        return -np.inf
    return 10.0 * np.log10(num / den)


def bss_eval_v4(ref, est, sample_rate, win=1.0, hop=1.0, filters_len=512):
    """Framewise BSS eval v4 image metrics of each estimate against its own reference.

    Args:
        ref: ``(S, N, M)`` or ``(S, N)`` reference images (S sources, M channels).
        est: same layout; estimate ``j`` belongs to reference ``j`` (no permutation search);
            cut or zero padded to ``N`` samples.
        sample_rate: Hz (to turn ``win``/``hop`` seconds into samples).
        win, hop: evaluation window and hop in seconds (MUSDB18: 1 and 1).
        filters_len: taps of the distortion filters (512 as in BSS eval).
    Returns:
        dict ``sdr``, ``isr``, ``sir``, ``sar``: ``(S, n_frames)`` in dB, NaN in windows where a
        reference or an estimate is silent; ``starts``: ``(n_frames,)`` window starts in seconds.
    """
    ref, est = _as_3d(ref), _as_3d(est)
    S, N, M = ref.shape
    if est.shape[0] != S or est.shape[2] != M:
        raise ValueError(f"estimates {est.shape} do not match references {ref.shape} (sources, channels)")
    if est.shape[1] >= N:
        est = est[:, :N]
    else:
        est = np.concatenate([est, np.zeros((S, N - est.shape[1], M))], axis=1)
    L = int(filters_len)
    G, D = _gram_and_cross(ref, est, L)
    G[np.diag_indices_from(G)] += np.finfo(np.float64).eps  # G + eps I, in place (G is 134 MB for 4 stereo stems)
    # Filters on all sources (P_all) and on each source alone (P_j), fitted once on the whole track.
    # One solve for every estimate (the right-hand sides side by side): one factorisation of G, not S of them.
    sol = _solve(G, np.concatenate(list(D), axis=1))  # (S*M*L, S*M)
    C_all = [sol[:, j * M:(j + 1) * M] for j in range(S)]  # each (S*M*L, M)
    C_own = []
    for j in range(S):
        block = slice(j * M * L, (j + 1) * M * L)
        C_own.append(_solve(G[block, block], D[j][block]))  # (M*L, M)
    bounds = frame_bounds(N, max(1, int(round(win * sample_rate))), max(1, int(round(hop * sample_rate))))
    out = {m: np.full((S, len(bounds)), np.nan) for m in METRICS_V4}
    for t, (a, b) in enumerate(bounds):
        r_w, e_w = ref[:, a:b], est[:, a:b]
        if np.any(np.all(r_w == 0, axis=(1, 2))) or np.any(np.all(e_w == 0, axis=(1, 2))):
            continue  # undefined window (museval's rule): all metrics stay NaN
        n = b - a
        proj_own_all = _project(r_w, np.concatenate(C_all, axis=1), L)  # (n+L-1, S*M): every estimate at once
        for j in range(S):
            s_true = np.zeros((n + L - 1, M))
            s_true[:n] = r_w[j]
            e_pad = np.zeros((n + L - 1, M))
            e_pad[:n] = e_w[j]
            p_all = proj_own_all[:, j * M:(j + 1) * M]
            p_own = _project(r_w[j:j + 1], C_own[j], L)
            e_spat, e_interf, e_artif = p_own - s_true, p_all - p_own, e_pad - p_all
            energy = float(np.sum(s_true ** 2))
            out["sdr"][j, t] = _db(energy, float(np.sum((e_pad - s_true) ** 2)))
            out["isr"][j, t] = _db(energy, float(np.sum(e_spat ** 2)))
            out["sir"][j, t] = _db(float(np.sum(p_own ** 2)), float(np.sum(e_interf ** 2)))
            out["sar"][j, t] = _db(float(np.sum(p_all ** 2)), float(np.sum(e_artif ** 2)))
    out["starts"] = np.array([a / sample_rate for a, _ in bounds])
    return out


def track_medians(frames):
    """Per-source median over frames ignoring NaN: ``{metric: (S,)}`` (NaN when no frame is defined)."""
    import warnings

    out = {}
    for m in METRICS_V4:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN, on purpose
            out[m] = np.nanmedian(np.asarray(frames[m], dtype=np.float64), axis=1)
    return out


def aggregate_v4(per_track):
    """Median over tracks of the per-track medians (MUSDB18 / SiSEC 2018 convention).

    Args:
        per_track: list of :func:`track_medians` dicts.
    Returns:
        ``{metric: (S,)}``; tracks whose median is NaN for a source are left out of that source's median.
    """
    import warnings

    out = {}
    for m in METRICS_V4:
        vals = np.stack([np.asarray(t[m], dtype=np.float64) for t in per_track])  # (tracks, S)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[m] = np.nanmedian(vals, axis=0)
    return out
