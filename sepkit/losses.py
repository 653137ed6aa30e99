"""Training objectives of the paper: DC (Eq. 1), MSA (Eq. 2), mMSA (Eq. 3) and Chimera (Eq. 4).

Raw losses return one value per utterance, shape ``(B,)``, summed over T-F bins exactly as the
equations are written. Normalisations are separate and explicit:

* ``chimera_loss`` computes Eq. (4), ``alpha * L_DC / TF + (1 - alpha) * L_MI``, and divides the
  whole of it once more by TF (the number of valid T-F bins of each utterance) so that the value
  is a per-bin average that does not grow with segment length or batch size. Dividing Eq. (4) by
  a constant keeps the paper's meaning of alpha. Its parts are reported as ``dc = L_DC / TF^2``
  (the mean squared affinity error over all bin pairs, in [0, 1] for binary targets) and
  ``mi = L_MI / TF``.
* With silence weights (``silence_db``), ``dc_norm`` says what TF is for the DC term:

  - ``active`` (default): the weighted (active) bins, ``dc = L_DC / (sum w)^2``: the mean squared
    affinity error over the pairs of active bins, whatever share of the segment is silent. The DC
    term then weighs ``(TF / active)^2`` times more against MI than in Eq. (4) (4x when half of
    the bins are silent).
  - ``all``: every valid bin, ``dc = L_DC / TF^2``, the same TF as the MI term: exactly Eq. (4)
    (divided by TF), so ``alpha`` is the paper's. Silent bins still add no error to ``L_DC``.

  Without silence weights (``silence_db=None``) both are the same.

The objectives are chosen by name from the registries :data:`DC_LOSSES` and :data:`MI_LOSSES` (the
training keys ``dc_loss`` and ``mi_loss``; :mod:`sepkit.registry`): an objective is one function with a
``@MI_LOSSES.register(name, help=...)`` (or ``DC_LOSSES``) line above it, here or in a module of one's
own (docs/extending.md). The configuration's choices and docs/config.md are read from the registries.
This module imports torch inside its functions only, so that the torch-free configuration can read
the registries without it.

Chimera++ objectives (Wang, Le Roux, Hershey, ICASSP 2018):

* ``dcw``: the whitened k-means objective ``L_DC,W = D - tr((V^T V)^-1 V^T Y (Y^T Y)^-1 Y^T V)``
  (:func:`dcw_loss`). It is already scale-free (in ``[D - C, D]``), so ``chimera_loss`` reports it
  as is (``dc = L_DC,W``), with no division by TF.
* ``psa``, ``tpsa`` (L2) and ``tpsa_l1``: phase-sensitive approximation, ``sum_c ||M_c |X| - T_c||``
  with ``T_c = |S_c| cos(theta_c - theta_X)`` (``psa``) or its truncation to ``[0, |X|]``
  (``tpsa*``). ``T_c`` comes from a feature dump made with ``phase_sensitive: true``.
"""
from sepkit.registry import Registry

__all__ = ["DC_NORMS", "DC_LOSSES", "MI_LOSSES", "PHASE_MI_LOSSES", "dc_loss", "dcw_loss", "msa_loss",
           "mmsa_loss", "psa_loss", "silence_weights", "chimera_loss"]

DC_NORMS = ("active", "all")
# DC objectives: f(V, Y, W) -> (B,), V (B, N, D), Y (B, N, C), W (B, N) or None. ``scale_free``: the value
# is used as it is (not divided by TF^2; dc_norm does not apply).
DC_LOSSES = Registry("dc_loss", scale_free=False)
# MI objectives: f(mask, mix_mag, src_mag, psa_target, frame_mask) -> (B,), summed over the valid T-F bins
# (chimera_loss divides by TF). ``needs_phase``: psa_target is needed (a phase_sensitive dump).
MI_LOSSES = Registry("mi_loss", needs_phase=False)


@DC_LOSSES.register("dc", help="Eq. (1), ||W^1/2 (VV' - YY') W^1/2||^2, divided by TF^2 (see dc_norm)")


def dc_loss(embedding, assignment, weights=None):
    """Deep clustering loss, Eq. (1), per utterance, in low-rank form.

    ``||W^1/2 (V V^T - Y Y^T) W^1/2||_F^2 = ||V'^T V'||^2 - 2 ||V'^T Y'||^2 + ||Y'^T Y'||^2``
    with ``V' = W^1/2 V`` and ``Y' = W^1/2 Y``; no ``N x N`` matrix is formed (O(N D^2) time,
    O(N D) memory).

    Args:
        embedding: V, ``(B, N, D)``, N = T*F bins (time-major).
        assignment: Y, ``(B, N, C)``, one-hot or soft.
        weights: optional per-bin weights W, ``(B, N)`` (e.g. silence weights, padding masks).
    Returns:
        ``(B,)`` loss per utterance (no normalisation).
    """
    import torch

    V, Y = embedding, assignment.to(embedding.dtype)
    if weights is not None:
        sw = weights.to(V.dtype).clamp_min(0).sqrt().unsqueeze(-1)
        V, Y = V * sw, Y * sw
    Vt = V.transpose(1, 2)
    vv = torch.bmm(Vt, V)  # (B, D, D)
    vy = torch.bmm(Vt, Y)  # (B, D, C)
    yy = torch.bmm(Y.transpose(1, 2), Y)  # (B, C, C)
    return vv.square().sum((1, 2)) - 2 * vy.square().sum((1, 2)) + yy.square().sum((1, 2))


@DC_LOSSES.register("dcw", scale_free=True,
                    help="Chimera++ whitened k-means, D - tr((V'V)^-1 V'Y (Y'Y)^-1 Y'V), scale-free: not divided "
                         "by TF, dc_norm does not apply")
def dcw_loss(embedding, assignment, weights=None, ridge=1e-6):
    """Whitened k-means DC objective of Chimera++, per utterance, low-rank (no ``N x N`` matrix).

    ``L_DC,W = D - tr((V^T V)^-1 V^T Y (Y^T Y)^-1 Y^T V)`` with ``V' = W^1/2 V`` and ``Y' = W^1/2 Y``
    in place of V and Y, as in :func:`dc_loss`.

    Guards: a source absent from the utterance (an all-zero column of Y', e.g. an instrumental
    segment, or a source whose bins are all silent) makes ``Y^T Y`` singular; such sources are
    dropped, which is exact: their column of ``V^T Y`` is zero, so they add nothing to the trace
    (done by putting 1 on their diagonal entry of ``Y^T Y`` and 0 elsewhere in their row and
    column). ``V^T V`` is singular when fewer than D bins are active (e.g. an all-silent segment);
    ``ridge * I`` is added to it (``ridge=0`` for the exact definition).

    Args: as :func:`dc_loss`; ``ridge``: the added diagonal of ``V^T V``.
    Returns: ``(B,)``.
    """
    import torch

    V, Y = embedding, assignment.to(embedding.dtype)
    if weights is not None:
        sw = weights.to(V.dtype).clamp_min(0).sqrt().unsqueeze(-1)
        V, Y = V * sw, Y * sw
    D, C = V.shape[-1], Y.shape[-1]
    Vt = V.transpose(1, 2)
    vv = torch.bmm(Vt, V) + ridge * torch.eye(D, dtype=V.dtype, device=V.device)
    vy = torch.bmm(Vt, Y)  # (B, D, C)
    yy = torch.bmm(Y.transpose(1, 2), Y)  # (B, C, C)
    present = Y.abs().sum(1) > 0  # (B, C)
    keep = (present[:, :, None] & present[:, None, :]).to(V.dtype)
    yy = yy * keep + torch.diag_embed((~present).to(V.dtype))
    a = torch.linalg.solve(vv, vy)  # (V^T V)^-1 V^T Y, (B, D, C)
    b = torch.linalg.solve(yy, vy.transpose(1, 2))  # (Y^T Y)^-1 Y^T V, (B, C, D)
    return D - (a * b.transpose(1, 2)).sum((1, 2))


def msa_loss(mask, mix_mag, src_mag, frame_mask=None):
    """Magnitude spectrum approximation, Eq. (2): ``sum_c ||R_c - M_c * S||^2`` per utterance.

    Args:
        mask: M, ``(B, T, F, C)``; mix_mag: S, ``(B, T, F)``; src_mag: R, ``(B, T, F, C)``.
        frame_mask: optional ``(B, T)`` 1 for valid frames, 0 for padding.
    Returns: ``(B,)``.
    """
    err = (src_mag - mask * mix_mag.unsqueeze(-1)).square()
    return _sum_valid(err, frame_mask)


def mmsa_loss(mask, mix_mag, ref_mask, frame_mask=None):
    """Masked magnitude spectrum approximation, Eq. (3): ``sum_c ||(O_c - M_c) * S||^2``.

    ``ref_mask`` O is ``(B, T, F, C)``; the paper uses the Wiener-like mask
    (:func:`sepkit.frontend.wiener_like_mask`). Returns ``(B,)``.
    """
    err = ((ref_mask - mask) * mix_mag.unsqueeze(-1)).square()
    return _sum_valid(err, frame_mask)


def psa_loss(mask, mix_mag, psa_target, frame_mask=None, truncate=False, p=2):
    """Phase-sensitive approximation: ``sum_c ||M_c * |X| - T_c||_p^p`` per utterance.

    ``psa_target`` is ``|S_c| cos(theta_c - theta_X)``, ``(B, T, F, C)``. ``truncate`` (tPSA) clips
    it to ``[0, |X|]``: ``T_c = min(|X|, max(0, |S_c| cos(theta_c - theta_X)))``. ``p``: 2 (squared
    error) or 1 (absolute error). Returns ``(B,)``.
    """
    import torch

    mix = mix_mag.unsqueeze(-1)
    target = torch.minimum(psa_target.clamp_min(0), mix) if truncate else psa_target
    err = (mask * mix - target).abs()
    return _sum_valid(err.square() if p == 2 else err, frame_mask)


def _sum_valid(err, frame_mask):
    if frame_mask is not None:
        err = err * frame_mask.to(err.dtype)[:, :, None, None]
    return err.sum((1, 2, 3))


def silence_weights(mix_mag, threshold_db=40.0, frame_mask=None):
    """0/1 weights ``(B, T, F)``: 0 for bins more than ``threshold_db`` below the utterance maximum.

    ``mix_mag`` is a magnitude spectrogram ``(B, T, F)`` (dB = 20 log10). ``threshold_db=None``
    gives all ones. Padding frames (``frame_mask == 0``) always get 0.
    """
    import torch

    if threshold_db is None:
        w = torch.ones_like(mix_mag)
    else:
        peak = mix_mag.flatten(1).amax(1).clamp_min(1e-20)[:, None, None]
        w = (mix_mag > peak * 10 ** (-threshold_db / 20)).to(mix_mag.dtype)
    if frame_mask is not None:
        w = w * frame_mask.to(w.dtype)[:, :, None]
    return w


# The MI objectives of the registry, in the form f(mask, mix_mag, src_mag, psa_target, frame_mask).
@MI_LOSSES.register("msa", help="magnitude spectrum approximation, Eq. (2)")
def _msa(mask, mix_mag, src_mag, psa_target, frame_mask):
    return msa_loss(mask, mix_mag, src_mag, frame_mask)


@MI_LOSSES.register("mmsa", help="masked MSA, Eq. (3), with the Wiener-like reference mask")
def _mmsa(mask, mix_mag, src_mag, psa_target, frame_mask):
    from sepkit.frontend import wiener_like_mask

    return mmsa_loss(mask, mix_mag, wiener_like_mask(src_mag), frame_mask)


_PHASE = "needs a dump made with phase_sensitive: true"


@MI_LOSSES.register("psa", needs_phase=True, help=f"Chimera++ phase-sensitive approximation (L2), {_PHASE}")
def _psa(mask, mix_mag, src_mag, psa_target, frame_mask):
    return psa_loss(mask, mix_mag, psa_target, frame_mask)


@MI_LOSSES.register("tpsa", needs_phase=True, help=f"truncated PSA (L2), {_PHASE}")
def _tpsa(mask, mix_mag, src_mag, psa_target, frame_mask):
    return psa_loss(mask, mix_mag, psa_target, frame_mask, truncate=True)


@MI_LOSSES.register("tpsa_l1", needs_phase=True, help=f"truncated PSA (L1), {_PHASE}")
def _tpsa_l1(mask, mix_mag, src_mag, psa_target, frame_mask):
    return psa_loss(mask, mix_mag, psa_target, frame_mask, truncate=True, p=1)


# The built-in objectives that need psa_target; an objective of one's own says it with needs_phase=True
# (chimera_loss and the trainer read the registry, not this tuple).
PHASE_MI_LOSSES = MI_LOSSES.names_with("needs_phase")


def chimera_loss(outputs, mix_mag, src_mag, alpha, mi_loss="msa", silence_db=40.0, lengths=None, dc_norm="active",
                 dc_kind="dc", psa_target=None):
    """Chimera objective, Eq. (4), per utterance, divided by TF (see the module docstring).

    Args:
        outputs: the network's dict: ``embedding`` (B, T*F, D) when alpha > 0, ``mask`` (B, T, F, C)
            when alpha < 1.
        mix_mag: S, mixture mel magnitude ``(B, T, F)``.
        src_mag: R, source mel magnitudes ``(B, T, F, C)``; the DC target Y is their IBM.
        alpha: weight of the DC objective in [0, 1]; 1 = pure DC, 0 = pure MI.
        mi_loss: a name of :data:`MI_LOSSES`: ``msa`` (Eq. 2), ``mmsa`` (Eq. 3 with the Wiener-like
            reference mask), ``psa``, ``tpsa`` or ``tpsa_l1`` (need ``psa_target``), or one registered
            by a plugin.
        silence_db: DC silence weighting threshold (None disables it).
        lengths: ``(B,)`` valid frames per utterance, or None.
        dc_norm: ``active`` or ``all``: the TF of the DC term (see the module docstring).
        dc_kind: a name of :data:`DC_LOSSES` (``dc``: Eq. 1; ``dcw``: whitened, not divided by TF: an
            entry registered with ``scale_free=True``).
        psa_target: ``|S_c| cos(theta_c - theta_X)`` ``(B, T, F, C)``, for the MI losses registered
            with ``needs_phase=True`` (:data:`PHASE_MI_LOSSES` among the built-in ones).
    Returns:
        dict of ``(B,)`` tensors: ``loss``, ``dc`` (``L_DC / TF^2``) and ``mi`` (``L_MI / TF``);
        a head that alpha leaves out is not evaluated and reported as zeros.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if dc_norm not in DC_NORMS:
        raise ValueError(f"unknown dc_norm {dc_norm!r} ({' or '.join(DC_NORMS)})")
    if dc_kind not in DC_LOSSES:
        raise ValueError(DC_LOSSES.unknown(dc_kind))
    if mi_loss not in MI_LOSSES:
        raise ValueError(MI_LOSSES.unknown(mi_loss))
    if alpha < 1 and MI_LOSSES.setting(mi_loss, "needs_phase") and psa_target is None:
        raise ValueError(f"mi_loss {mi_loss!r} needs psa_target (a feature dump made with phase_sensitive: true)")
    import torch

    B, T, F = mix_mag.shape
    frame_mask = None
    if lengths is not None:
        frame_mask = (torch.arange(T, device=mix_mag.device)[None] < lengths.to(mix_mag.device)[:, None]).to(mix_mag.dtype)
        n_bins = lengths.to(mix_mag.dtype) * F
    else:
        n_bins = torch.full((B,), float(T * F), dtype=mix_mag.dtype, device=mix_mag.device)
    zero = torch.zeros(B, dtype=mix_mag.dtype, device=mix_mag.device)
    dc = mi = zero
    total = zero
    if alpha > 0:
        from sepkit.frontend import ibm

        w = silence_weights(mix_mag, silence_db, frame_mask)
        raw = DC_LOSSES[dc_kind](outputs["embedding"], ibm(src_mag).reshape(B, T * F, -1), w.reshape(B, T * F))
        if not DC_LOSSES.setting(dc_kind, "scale_free"):
            n_dc = w.flatten(1).sum(1).clamp_min(1.0) if dc_norm == "active" else n_bins
            dc = raw / n_dc.square()  # alpha * L_DC / TF of Eq. (4), divided by TF once more
        else:
            dc = raw  # e.g. L_DC,W: scale-free
        total = total + alpha * dc
    if alpha < 1:
        raw = MI_LOSSES[mi_loss](outputs["mask"], mix_mag, src_mag, psa_target, frame_mask)
        mi = raw / n_bins
        total = total + (1 - alpha) * mi
    return {"loss": total, "dc": dc, "mi": mi}
