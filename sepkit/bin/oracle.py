"""Reference rows for a results table: oracle mel masks and the unprocessed mixture, scored like a model.

Usage::

    python -m sepkit.bin.oracle --feat-conf conf/feats.yaml [--masks ibm,wlm,mix] [--nj 2]
        [--band full|model] [--bss true] [--v4 false] [--overwrite] DATA EXPDIR

For every utterance of DATA (``wav.scp`` = mixture, ``<source>.scp`` = references) and every
"head" in ``--masks``, an estimate of each source is made and scored exactly as
``python -m sepkit.bin.score`` scores a separation (mono = mean of channels, at the references' rate):

* ``ibm``: the oracle **mel ideal binary mask** ``ibm(|S_c| mel)`` (the DC training target);
* ``wlm``: the oracle **mel Wiener-like mask** ``|S_c|^2 / sum |S_c'|^2`` on mel magnitudes (mMSA target);
* ``ibm_lin``, ``wlm_lin``: the same masks on the linear STFT bins (``n_fft / 2 + 1``), applied as they
  are: the ceiling of models whose heads output linear-bin masks (training key ``mask_bins: linear``);
* ``ibm_stft``, ``wlm_stft``: the same masks on the STFT bins **at the references' own rate** (the full-band
  grid of :func:`sepkit.fullband.input_grid`: the window duration of ``--feat-conf``), computed from the
  full-band references and applied to the full-band mixture STFT, no resampling: the ceiling of masking with
  this window on the whole band;
* ``mix``: the mixture itself as the estimate of every source (SI-SDRi = NSDR = 0 by definition; its
  SDR/SIR/SAR are the "do nothing" baseline).

The masks use the features of ``--feat-conf`` (sepkit.frontend.FeatureConfig keys): mixture and
sources are downmixed to mono and resampled to its ``sample_rate``; the mel mask of the mono signals is
applied to the STFT of every channel of the mixture, inverted with the mixture phase and resampled back
(``--band model``), or, with ``--band full`` (the default, the default of :class:`sepkit.Separator`), mapped
onto the mixture's own STFT at its rate and inverted there (:mod:`sepkit.fullband`: the same mapping and the
same rule above the model's Nyquist frequency as a model's masks), so the oracle rows follow the path of the
model rows. So these rows are the ceiling of a mask-based system on these features, not of separation in
general.

Written per head into ``EXPDIR/score_<set>_<head>/`` (``<set>`` = basename of DATA): ``result.json``
and ``per_utt.csv`` in the schema of ``sepkit.bin.score`` (so ``sepkit.bin.show_results`` lists them
as experiment ``basename(EXPDIR)``), and with ``--v4 true`` also ``result_v4.json`` /
``per_track_v4.csv`` in the schema of ``sepkit.bin.score_v4`` (BSS eval v4 on the channels of the
references, 1 s frames, medians). A head whose results exist (``result.json``, and ``result_v4.json`` with ``--v4 true``) is skipped
unless ``--overwrite``.
"""
import argparse
import json
import logging
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from sepkit import fullband
from sepkit.audio import AudioError, resample
from sepkit.bin.score import per_utt_csv, str2bool, summarize
from sepkit.data.datadir import DataDir, DataDirError, load_audio
from sepkit.metrics import bss_eval, si_sdr_improvement

logger = logging.getLogger("sepkit.bin.oracle")

HEADS = {"ibm": "oracle mel ideal binary mask", "wlm": "oracle mel Wiener-like mask",
         "ibm_lin": "oracle linear-bin ideal binary mask", "wlm_lin": "oracle linear-bin Wiener-like mask",
         "ibm_stft": "oracle STFT-bin ideal binary mask at the input's rate",
         "wlm_stft": "oracle STFT-bin Wiener-like mask at the input's rate",
         "mix": "mixture as the estimate"}
METRICS = ("si_sdr", "si_sdri", "sdr", "sir", "sar", "nsdr")


class OracleError(Exception):
    """An utterance that cannot be processed; the message names it."""


def get_parser():
    parser = argparse.ArgumentParser(prog="python -m sepkit.bin.oracle", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--feat-conf", required=True, help="feature settings (YAML of FeatureConfig keys)")
    parser.add_argument("--masks", default="ibm,wlm,mix",
                        help="comma-separated heads: ibm, wlm, ibm_lin, wlm_lin, ibm_stft, wlm_stft, mix "
                             "(ibm,wlm,mix)")
    parser.add_argument("--band", choices=["full", "model"], default="full",
                        help="mel and linear-bin masks applied to the mixture's own STFT at its rate (full, "
                             "sepkit.fullband) or at the features' rate and resampled back (model) (full)")
    parser.add_argument("--nj", type=int, default=1, help="parallel processes (1)")
    parser.add_argument("--bss", type=str2bool, default=True, help="also BSS eval v3 GNSDR/GSIR/GSAR (true)")
    parser.add_argument("--v4", type=str2bool, default=False,
                        help="also BSS eval v4 medians (MUSDB18 convention) into result_v4.json (false)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results")
    parser.add_argument("data", help="reference data dir")
    parser.add_argument("expdir", help="experiment dir receiving score_<set>_<head>/")
    return parser


def oracle_estimates(mix, refs, sr, frontend, heads, band="full"):
    """Estimates of every source for each oracle head.

    Args:
        mix: ``(C, N)`` mixture at ``sr`` Hz; refs: ``(S, C', N)`` references (any channel count).
        frontend: :class:`sepkit.frontend.Frontend` of the feature settings.
        heads: names from :data:`HEADS`.
        band: "full" (the mel / linear-bin masks on the mixture's STFT at ``sr`` when ``sr`` is above the
            features' rate, :mod:`sepkit.fullband`) or "model" (at the features' rate, resampled back).
    Returns:
        ``{head: (S, C, N) float64}`` at ``sr``.
    """
    import torch

    from sepkit.frontend import ibm, wiener_like_mask

    S, (C, N) = refs.shape[0], mix.shape
    out = {}
    if "mix" in heads:
        out["mix"] = np.broadcast_to(mix, (S, C, N)).astype(np.float64)
    masks = {"ibm": ibm, "wlm": wiener_like_mask}
    for head in [h for h in heads if h.endswith("_stft")]:
        out[head] = _stft_oracle(mix, refs, sr, frontend, masks[head.removesuffix("_stft")])
    masked = [h for h in heads if h != "mix" and not h.endswith("_stft")]
    if not masked:
        return out
    fs = frontend.config.sample_rate
    full = band == "full" and sr > fs
    with torch.inference_mode():
        x = torch.from_numpy(resample(mix.astype(np.float32), sr, fs))  # (C, Nf)
        src = torch.from_numpy(resample(refs.mean(axis=1).astype(np.float32), sr, fs))  # (S, Nf) mono
        spec = frontend.stft(x)  # (C, T, K)
        src_lin = frontend.stft(src).abs()  # (S, T, K)
        src_mel = frontend.mel(src_lin).permute(1, 2, 0)  # (S, T, F) -> (T, F, S)
        for head in masked:
            linear = head.endswith("_lin")
            m = masks[head.removesuffix("_lin")](src_lin.permute(1, 2, 0) if linear else src_mel)  # (T, F|K, S)
            if full:  # the masks mapped onto the mixture's own STFT at sr (the path of the model rows)
                fb = _fullband(frontend, "linear" if linear else "mel", sr)
                x_in = torch.from_numpy(mix.astype(np.float32))
                out[head] = fullband.reconstruct(fb, x_in, m, renorm=True).double().numpy()  # the masks sum to 1
                continue
            est = torch.stack([frontend.istft(spec * m[..., s], x.shape[-1]) if linear else
                               frontend.reconstruct(spec, m[..., s].expand(C, -1, -1), x.shape[-1])
                               for s in range(S)])  # (S, C, Nf)
            y = resample(est.numpy().reshape(S * C, -1), fs, sr).reshape(S, C, -1)
            y = y[..., :N] if y.shape[-1] >= N else np.pad(y, ((0, 0), (0, 0), (0, N - y.shape[-1])))
            out[head] = y.astype(np.float64)
    return out


def _stft_oracle(mix, refs, sr, frontend, mask_fn):
    """Mask ``mask_fn`` of the references' STFT magnitudes at ``sr`` (the full-band grid of ``frontend``'s
    window duration, mono references) applied to the mixture's STFT at ``sr``: ``(S, C, N)`` float64."""
    import torch

    fe = _fullband(frontend, "linear", sr).frontend  # the STFT at sr with frontend's window duration
    N = mix.shape[-1]
    with torch.inference_mode():
        spec = fe.stft(torch.from_numpy(mix.astype(np.float32)))  # (C, T, K)
        src = fe.stft(torch.from_numpy(refs.mean(axis=1).astype(np.float32))).abs()  # (S, T, K)
        m = mask_fn(src.permute(1, 2, 0))  # (T, K, S)
        return torch.stack([fe.istft(spec * m[..., s], N) for s in range(m.shape[-1])]).double().numpy()


_FRONTEND, _FULLBAND = {}, {}


def _fullband(frontend, bins, sr):
    """The :class:`sepkit.fullband.FullBand` of ``frontend``'s ``bins`` masks at ``sr`` (cached)."""
    key = (json.dumps(frontend.config.to_dict(), sort_keys=True), bins, int(sr))
    if key not in _FULLBAND:
        _FULLBAND[key] = fullband.FullBand(frontend, bins, int(sr), "cpu")
    return _FULLBAND[key]


def _frontend(conf_dict):
    from sepkit.frontend import FeatureConfig, Frontend

    key = json.dumps(conf_dict, sort_keys=True)
    if key not in _FRONTEND:
        _FRONTEND[key] = Frontend(FeatureConfig.from_dict(conf_dict))
    return _FRONTEND[key]


def process_utt(job):
    """One utterance: ``(utt, mix spec, [ref specs], conf dict, heads, bss, v4, band)`` -> ``{head: row}``."""
    utt, mix_spec, ref_specs, conf, heads, bss, v4, band = job
    try:
        mix, sr = load_audio(mix_spec)
        refs = []
        for spec in ref_specs:
            ref, rsr = load_audio(spec)
            if rsr != sr:
                ref = resample(ref, rsr, sr)
            refs.append(ref)
    except AudioError as exc:
        raise OracleError(f"utterance {utt}: {exc}") from None
    n = min([mix.shape[1]] + [r.shape[1] for r in refs])
    channels = {r.shape[0] for r in refs}
    if len(channels) > 1:
        raise OracleError(f"utterance {utt}: references have different channel counts {sorted(channels)}")
    mix = mix[:, :n].astype(np.float64)
    refs = np.stack([r[:, :n] for r in refs]).astype(np.float64)  # (S, C', n)
    ests = oracle_estimates(mix, refs, sr, _frontend(conf), heads, band)
    ref_mono, mix_mono = refs.mean(axis=1), mix.mean(axis=0)
    # BSS eval of the mixture itself: the NSDR baseline of every head, and the whole "mix" row
    mix_bss = bss_eval(np.broadcast_to(mix_mono, ref_mono.shape), ref_mono) if bss else None
    rows = {}
    for head, est in ests.items():
        est_mono = est.mean(axis=1)
        out = si_sdr_improvement(est_mono, ref_mono, mix_mono, permute=False)
        if bss:
            sdr, sir, sar = mix_bss if head == "mix" else bss_eval(est_mono, ref_mono)
            out.update(sdr=sdr, sir=sir, sar=sar, nsdr=sdr - mix_bss[0])
        row = {"utt": utt, "seconds": n / sr, "perm": list(map(int, out["perm"]))}
        for key in METRICS:
            if key in out:
                row[key] = [float(v) for v in np.asarray(out[key], dtype=np.float64)]
        if v4:
            from sepkit.bin.score_v4 import v4_track

            e = est if est.shape[1] == refs.shape[1] else np.broadcast_to(est.mean(axis=1, keepdims=True), refs.shape)
            row["v4"] = v4_track(refs, e, sr)
        rows[head] = row
    return rows


def _init_worker():
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # optional: results are the same without it
        pass


def run(jobs, nj):
    from tqdm import tqdm

    if nj <= 1 or len(jobs) <= 1:
        return [process_utt(j) for j in tqdm(jobs, desc="oracle", unit="utt", disable=None)]
    ctx = get_context("fork") if sys.platform.startswith("linux") else get_context()
    with ctx.Pool(min(nj, len(jobs)), initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(process_utt, jobs), total=len(jobs), desc="oracle", unit="utt", disable=None))


def _write(path, text):
    from sepkit.audio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sepkit.bin.compute_feats import load_feat_conf

    heads = [h.strip() for h in args.masks.split(",") if h.strip()]
    unknown = [h for h in heads if h not in HEADS]
    if unknown or not heads:
        print(f"oracle: unknown --masks {','.join(unknown) or '(none)'} (choose from {', '.join(HEADS)})",
              file=sys.stderr)
        return 2
    if args.nj < 1:
        print(f"oracle: --nj must be >= 1, got {args.nj}", file=sys.stderr)
        return 2
    conf = load_feat_conf(args.feat_conf).to_dict()  # SystemExit with a one-line message on bad files
    try:
        data = DataDir(args.data)
    except DataDirError as exc:
        print(f"oracle: {exc}", file=sys.stderr)
        return 1
    set_name = data.path.resolve().name
    outdirs = {h: Path(args.expdir) / f"score_{set_name}_{h}" for h in heads}
    done = [h for h, d in outdirs.items()
            if (d / "result.json").exists() and (not args.v4 or (d / "result_v4.json").exists())]
    if done and not args.overwrite:
        heads = [h for h in heads if h not in done]
        logger.info("already scored (pass --overwrite to redo): %s", ", ".join(str(outdirs[h]) for h in done))
        if not heads:
            return 0
    jobs = [(u, data.wav[u], [data.source(s)[u] for s in data.sources], conf, heads, args.bss, args.v4, args.band)
            for u in data.utts]
    logger.info("%s: %d utterances, heads %s, features %s", data.path, len(jobs), ", ".join(heads), args.feat_conf)
    try:
        results = run(jobs, args.nj)
    except OracleError as exc:
        print(f"oracle: {exc}", file=sys.stderr)
        return 1
    for head in heads:
        rows = [r[head] for r in results]
        result = summarize(rows, data.sources)
        result["head"] = HEADS[head]
        _write(outdirs[head] / "per_utt.csv", per_utt_csv(rows, data.sources))
        if args.v4:
            from sepkit.bin.score_v4 import per_track_csv, summarize_v4

            tracks = [(r["utt"], r["v4"]) for r in rows]
            _write(outdirs[head] / "per_track_v4.csv", per_track_csv(tracks, data.sources))
            _write(outdirs[head] / "result_v4.json", json.dumps(summarize_v4(tracks, data.sources), indent=2) + "\n")
        _write(outdirs[head] / "result.json", json.dumps(result, indent=2) + "\n")
        v = result[data.sources[0]]
        logger.info("%s (%s): %s GNSDR %s GSIR %s GSAR %s SI-SDRi %s", head, HEADS[head], data.sources[0],
                    v["gnsdr"], v["gsir"], v["gsar"], v["si_sdri"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
