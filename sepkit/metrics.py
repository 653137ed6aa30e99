"""Scoring: SI-SDR(i) with the best permutation (paper Tables 2-4) and BSS eval v3 (Table 1, MIREX).

* SI-SDR ("SDR defined as scale-invariant SNR", §3.4), per file with the permutation of estimates
  that maximises the mean SI-SDR, aggregated over a set as a length-weighted mean of improvements.
* BSS eval v3 through mir_eval (kept behind :func:`bss_eval`): per-file SDR/SIR/SAR, NSDR = SDR of
  the estimate minus SDR of the mixture used as the estimate; set level GNSDR / GSIR / GSAR are
  length-weighted means (MIREX).

Signals are numpy arrays ``(C, N)`` (sources x samples), mono.
"""
import itertools
import logging
import warnings

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["si_sdr", "best_permutation", "si_sdr_improvement", "bss_eval", "score_file", "aggregate"]


def si_sdr(est, ref, eps=1e-12):
    """Scale-invariant SDR in dB along the last axis (vectorised over leading axes).

    Both signals are made zero-mean; ``SI-SDR = 10 log10(||a r||^2 / ||a r - e||^2)`` with
    ``a = <e, r> / ||r||^2``. A silent reference gives NaN (undefined), never a silent 0.
    """
    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    est = est - est.mean(-1, keepdims=True)
    ref = ref - ref.mean(-1, keepdims=True)
    ref_energy = (ref * ref).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (est * ref).sum(-1) / ref_energy
        target = scale[..., None] * ref
        noise = est - target
        val = 10 * np.log10(((target * target).sum(-1) + eps) / ((noise * noise).sum(-1) + eps))
    return np.where(ref_energy > eps, val, np.nan)


def best_permutation(est, ref):
    """Permutation ``p`` maximising ``mean_c SI-SDR(est[p[c]], ref[c])``; returns ``(p, scores)``."""
    C = ref.shape[0]
    pair = si_sdr(np.asarray(est)[None, :, :], np.asarray(ref)[:, None, :])  # (ref c, est j)
    best, best_val = None, -np.inf
    for p in itertools.permutations(range(est.shape[0]), C):
        val = np.nanmean(pair[np.arange(C), list(p)])
        if best is None or val > best_val:
            best, best_val = list(p), val
    return best, pair[np.arange(C), best]


def si_sdr_improvement(est, ref, mix, permute=True):
    """SI-SDR of the estimates minus that of the mixture, per reference source.

    Args:
        est: ``(C, N)``; ref: ``(C, N)``; mix: ``(N,)``.
        permute: choose the best permutation of ``est`` (DC's outputs are unordered).
    Returns: dict with ``perm``, ``si_sdr`` (C,), ``si_sdr_mix`` (C,), ``si_sdri`` (C,).
    """
    if permute:
        perm, scores = best_permutation(est, ref)
    else:
        perm, scores = list(range(ref.shape[0])), si_sdr(est[: ref.shape[0]], ref)
    base = si_sdr(np.broadcast_to(mix, ref.shape), ref)
    return {"perm": perm, "si_sdr": scores, "si_sdr_mix": base, "si_sdri": scores - base}


def bss_eval(est, ref):
    """BSS eval v3 (mir_eval) without permutation search: ``(sdr, sir, sar)``, each ``(C,)``.

    A silent reference source makes BSS eval undefined: all three are NaN for such a file (logged),
    instead of mir_eval's exception or a silent zero.
    """
    import mir_eval

    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    C = ref.shape[0]
    if np.any(np.sum(ref * ref, axis=1) <= 1e-20):
        return (np.full(C, np.nan),) * 3
    est = est + 0.0
    silent_est = np.sum(est * est, axis=1) <= 1e-20
    if silent_est.any():  # mir_eval rejects all-zero estimates; a tiny dither keeps SDR meaningful (very low)
        est[silent_est] += 1e-10 * np.random.default_rng(0).standard_normal((int(silent_est.sum()), est.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(ref, est, compute_permutation=False)
    return sdr, sir, sar


def score_file(est, ref, mix, bss=True, permute=True):
    """All per-file scores of one separation, sources in reference order.

    Returns dict: ``si_sdr``, ``si_sdri`` (C,), ``perm``, and with ``bss``: ``sdr``, ``sir``,
    ``sar``, ``nsdr`` (C,) computed on the estimates in the SI-SDR-optimal order.
    """
    est, ref, mix = np.asarray(est), np.asarray(ref), np.asarray(mix)
    n = min(est.shape[-1], ref.shape[-1], mix.shape[-1])
    est, ref, mix = est[:, :n], ref[:, :n], mix[:n]
    out = si_sdr_improvement(est, ref, mix, permute=permute)
    if bss:
        ordered = est[out["perm"]]
        sdr, sir, sar = bss_eval(ordered, ref)
        sdr_mix, _, _ = bss_eval(np.broadcast_to(mix, ref.shape), ref)
        out.update(sdr=sdr, sir=sir, sar=sar, nsdr=sdr - sdr_mix)
    return out


def aggregate(per_file, lengths, keys=("si_sdri", "nsdr", "sir", "sar")):
    """Length-weighted means over files, per source: ``{key: (C,) array}``.

    Files whose value is NaN (silent reference) are left out of that mean; the number of files used
    is returned under ``n_used`` per key.
    GNSDR = weighted mean of NSDR, GSIR of SIR, GSAR of SAR (MIREX); SI-SDRi likewise (Tables 2-4).
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    out = {}
    for key in keys:
        if not per_file or key not in per_file[0]:
            continue
        vals = np.stack([np.asarray(f[key], dtype=np.float64) for f in per_file])  # (files, C)
        ok = np.isfinite(vals)
        w = lengths[:, None] * ok
        with np.errstate(invalid="ignore", divide="ignore"):
            out[key] = np.where(w.sum(0) > 0, (np.where(ok, vals, 0) * w).sum(0) / w.sum(0), np.nan)
        out[f"n_used_{key}"] = ok.sum(0)
    return out
