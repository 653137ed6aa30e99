"""The training engine: epochs, validation, curriculum, checkpoints and resume, early stopping.

One :class:`Trainer` per process. Under torchrun every process holds a DDP replica and a shard of
each global batch (:class:`~sepkit.train.distributed.GlobalBatchSampler`); rank 0 alone logs,
writes TensorBoard events, ``model.pt`` and checkpoints.

Objective: the mean over the global batch of :func:`sepkit.losses.chimera_loss` (Eq. 4, divided
by TF). Each rank takes the mean over its ``B/W`` segments and DDP averages gradients over ranks,
which is the mean over all ``B`` segments: ``W`` processes follow the updates of one process
with batch ``B``. Only the heads the objective uses are built (``alpha == 1``: DC only,
``alpha == 0``: MI only), so DDP never meets a parameter without gradient.

Exact resume: checkpoints are written at epoch boundaries with every RNG state, and data order is
a function of ``(seed, epoch)``, so re-running an epoch that a kill interrupted gives the weights
an uninterrupted run would have had (bit for bit on the CPU).
"""
import logging
import math
import time
from pathlib import Path

import torch

from sepkit.train import checkpoint as ck
from sepkit.train.config import config_dict, dump_config
from sepkit.train.curriculum import advance_schedule, budget_note, parse_curriculum
from sepkit.train.schedule import build_scheduler
from sepkit.train.distributed import (GlobalBatchSampler, all_gather_object, all_reduce_sum, broadcast_object,
                                      check_params_in_sync, epoch_seed, get_rng_state, seed_everything,
                                      set_rng_state, shard_batches)
from sepkit.cluster import anchors_from_sums, source_anchor_sums
from sepkit.train.tensorboard import TBWriter, ValidationExample

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "build_model_conf"]


def build_model_conf(conf, feat_conf, n_sources):
    """``build_model`` kwargs from the configuration and the dump (input_dim, F and C come from the dump)."""
    heads = ["dc"] if conf["alpha"] == 1.0 else ["mi"] if conf["alpha"] == 0.0 else ["dc", "mi"]
    linear = conf["mask_bins"] == "linear"  # heads per STFT bin; mel-mask models keep their old model_conf
    return {"type": "chimera", "input_dim": feat_conf.input_dim, "n_freq": feat_conf.n_linear if linear else
            feat_conf.n_mels, "hidden": conf["hidden"], "layers": conf["layers"], "emb_dim": conf["emb_dim"],
            "n_sources": n_sources, "dropout": conf["dropout"], "batch_norm": conf["batch_norm"], "heads": heads,
            "mask_activation": conf["mask_activation"], **({"mask_bins": "linear"} if linear else {}),
            **({"body": conf["body"]} if conf.get("body", "blstm") != "blstm" else {}),  # blstm: model_conf as before
            **({"lookahead": conf["lookahead"]} if conf.get("lookahead") else {})}


def _check_dump(conf, dump):
    """Refuse, in one line, objectives or masks that the dump cannot feed (an older or mel dump)."""
    from sepkit.losses import MI_LOSSES

    if conf["alpha"] < 1 and MI_LOSSES.setting(conf["mi_loss"], "needs_phase") and not dump.feat_conf.phase_sensitive:
        raise SystemExit(f"{dump.path}: mi_loss {conf['mi_loss']} needs the sources' phase, which this dump lacks; "
                         "re-run stage 2 (compute_feats) with phase_sensitive: true in the feature config")
    if conf["mask_bins"] == "linear" and dump.feat_conf.bins != "linear":
        raise SystemExit(f"{dump.path}: mask_bins linear needs a dump of linear magnitudes; re-run stage 2 "
                         "(compute_feats) with bins: linear in the feature config")
    if conf["mask_bins"] == "mel" and dump.feat_conf.input == "logmag":
        raise SystemExit(f"{dump.path}: input logmag is for mask_bins linear (the network input would need "
                         "linear magnitudes at separation time)")


# Feature settings that make the network's input: a parent is refused when one of them differs from the dump's
# (bins and phase_sensitive say what the dump stores besides; mask bins show as heads of another shape).
INPUT_FEATURES = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "use_delta", "input")
BODY = "encoder."  # ChimeraNet's body (sepkit.nets.BODIES) is its attribute encoder


def _heads_name(heads):
    heads = sorted(heads)
    return {("dc",): "DC-only", ("mi",): "MI-only", ("dc", "mi"): "Chimera"}.get(tuple(heads), "+".join(heads))


def _group(names):
    """``encoder.* (16 tensors), linear.weight`` for a list of tensor names: the body as one entry."""
    body = [n for n in names if n.startswith(BODY)]
    rest = [n for n in names if not n.startswith(BODY)]
    return ", ".join(([f"{BODY}* ({len(body)} tensors)"] if body else []) + rest) or "none"


def init_from_parent(model, model_conf, feat_conf, sources, spec, dump_path):
    """Fine-tuning: copy a parent network's weights into ``model`` (freshly built); returns the log lines.

    ``spec``: a model file, exp or hub folder, training checkpoint or hub id (:func:`sepkit.model_io.load_model_dict`).
    Raises ``SystemExit`` with one line when the parent cannot make sense: unreadable, other input features than
    the dump at ``dump_path``, another body (type or size), or no head in common with ``model_conf``. Every body
    tensor is taken; other tensors of the same name and shape are taken too (head tensors only when the sources
    are the same list); the rest keep their initialisation and are listed.
    """
    from sepkit.frontend import FeatureConfig
    from sepkit.model_io import ModelFileError, load_model_dict, one_line

    try:
        d = load_model_dict(spec)
    except ModelFileError as exc:
        raise SystemExit(f"init_model: {exc}") from None
    pf = FeatureConfig.from_dict({**FeatureConfig().to_dict(), **d["feat_conf"]}).to_dict()
    cf = feat_conf.to_dict()
    diff = [k for k in INPUT_FEATURES if pf[k] != cf[k]]
    if diff:
        pairs = ", ".join(f"{k} {pf[k]!r} (parent) vs {cf[k]!r} (dump)" for k in diff)
        raise SystemExit(one_line(f"init_model {spec}: feature settings differ from {Path(dump_path) / 'feat_conf.yaml'}: "
                                  f"{pairs}; the parent's body reads other features: compute the dump with the "
                                  f"parent's settings, or train from scratch", 600))
    pm = d["model_conf"]
    if pm.get("type", "chimera") != model_conf.get("type", "chimera") or \
            pm.get("body", "blstm") != model_conf.get("body", "blstm"):
        raise SystemExit(f"init_model {spec}: the parent is a {pm.get('type', 'chimera')} network with body "
                         f"{pm.get('body', 'blstm')}, this one a {model_conf.get('type', 'chimera')} with body "
                         f"{model_conf.get('body', 'blstm')}: no body to take")
    p_heads, c_heads = list(pm.get("heads", ("dc", "mi"))), list(model_conf["heads"])
    if not set(p_heads) & set(c_heads):
        raise SystemExit(f"init_model {spec}: a {_heads_name(p_heads)} parent (heads {'+'.join(p_heads)}) has no "
                         f"head in common with this {_heads_name(c_heads)} network (heads {'+'.join(c_heads)}, "
                         f"alpha {'0' if c_heads == ['mi'] else '1' if c_heads == ['dc'] else 'in (0, 1)'}): "
                         "its body was trained for another objective; fine-tune a network with a head of the parent "
                         "(e.g. Chimera, alpha in (0, 1)), or train from scratch")
    have, want = d["model_state"], model.state_dict()
    bad_body = [k for k in want if k.startswith(BODY) and (k not in have or tuple(have[k].shape) != tuple(want[k].shape))]
    if bad_body:
        keys = [k for k in ("input_dim", "hidden", "layers", "batch_norm") if pm.get(k) != model_conf.get(k)]
        why = ", ".join(f"{k} {pm.get(k)!r} (parent) vs {model_conf.get(k)!r} (here)" for k in keys) or \
            f"{len(bad_body)} body tensor(s) missing or of another shape, e.g. {bad_body[0]}"
        raise SystemExit(f"init_model {spec}: the parent's body does not fit this network: {why}; "
                         "use the parent's body settings, or train from scratch")
    same_sources = list(d["sources"]) == list(sources)
    taken, reinit, fresh = {}, [], []
    for k, t in want.items():
        if k not in have:
            fresh.append(k)
        elif tuple(have[k].shape) != tuple(t.shape):
            reinit.append(f"{k} (parent {list(have[k].shape)}, here {list(t.shape)})")
        elif not (k.startswith(BODY) or k.startswith("linear.") or same_sources):
            reinit.append(f"{k} (parent sources {','.join(d['sources'])}, here {','.join(sources)})")
        else:
            taken[k] = have[k]
    # a head is re-initialised whole: no bias of the parent beside a fresh weight
    redone = {k.rsplit(".", 1)[0] for k in want if k not in taken and not k.startswith(BODY)}
    for k in [k for k in taken if not k.startswith(BODY) and k.rsplit(".", 1)[0] in redone]:
        del taken[k]
        reinit.append(f"{k} (with the rest of {k.rsplit('.', 1)[0]})")
    model.load_state_dict({**want, **taken})
    unused = [k for k in have if k not in want]
    return [f"init_model {spec}: parent {_heads_name(p_heads)} network, sources {', '.join(d['sources'])}, "
            f"feature settings equal to the dump's; the dump's CMVN is used",
            f"init_model: taken from the parent: {_group(list(taken))}",
            f"init_model: re-initialised (another shape or other sources): {', '.join(reinit) or 'none'}",
            f"init_model: not in the parent (fresh initialisation): {_group(fresh)}",
            f"init_model: not used (not in this network): {_group(unused)}"]


class Trainer:
    """Train from a resolved configuration (``dict`` or namespace of :mod:`sepkit.train.config`)."""

    def __init__(self, conf, env):
        from sepkit.data.dataset import DumpError, FeatureDump, SegmentDataset
        from sepkit.frontend import CMVN
        from sepkit.nets import build_model

        self.conf = conf = dict(config_dict(conf))
        self.env = env
        self.outdir = Path(conf["outdir"])
        self.device = env.device
        try:
            train_dump, valid_dump = FeatureDump(conf["train_dump"]), FeatureDump(conf["valid_dump"])
        except DumpError as exc:
            raise SystemExit(str(exc)) from None
        if valid_dump.sources != train_dump.sources or valid_dump.feat_conf != train_dump.feat_conf:
            raise SystemExit(f"{valid_dump.path}: sources or feat_conf.yaml differ from {train_dump.path}")
        cmvn_path = train_dump.path / "cmvn.ark"
        if not cmvn_path.is_file():
            raise SystemExit(f"{cmvn_path}: missing; run python -m sepkit.bin.compute_cmvn {train_dump.path}")
        self.cmvn = CMVN.load(cmvn_path)
        self.feat_conf, self.sources = train_dump.feat_conf, list(train_dump.sources)
        self.stages = parse_curriculum(conf["curriculum"]) or [(conf["segment_frames"], None)]
        valid_frames = conf["valid_segment_frames"] or self.stages[-1][0]
        _check_dump(conf, train_dump)
        kw = dict(seed=conf["seed"], mask_bins=conf["mask_bins"])
        if conf.get("dynamic_mix"):  # examples mixed on the fly from the tracks' stems (docs/data.md)
            from sepkit.data.dynamic_mix import from_config

            self.train_set = from_config(conf, train_dump, self.stages[0][0], self.cmvn)
        else:
            self.train_set = SegmentDataset(train_dump, self.stages[0][0], self.cmvn, train=True, **kw)
        self.valid_set = SegmentDataset(valid_dump, valid_frames, self.cmvn, train=False, **kw)
        if len(self.valid_set) == 0:
            raise SystemExit(f"{valid_dump.path}: no validation segments")
        if conf["batch_size"] % env.world_size:
            raise SystemExit(f"batch_size={conf['batch_size']} is the global batch: it must divide by the "
                             f"{env.world_size} processes")
        self.model_conf = build_model_conf(conf, self.feat_conf, len(self.sources))
        self.heads = tuple(self.model_conf["heads"])
        self.autocast = torch.bfloat16 if conf["dtype"] == "bfloat16" else None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed segment shapes: cuDNN LSTM picks its best kernels

        seed_everything(conf["seed"])  # same initial weights everywhere (DDP also broadcasts rank 0's)
        self.model = build_model(self.model_conf).to(self.device)
        if env.world_size > 1:  # own dropout masks per rank (same seed everywhere would draw the same ones)
            seed_everything(epoch_seed(conf["seed"], 0, 1 + env.rank))
        params = [p for p in self.model.parameters() if p.requires_grad]
        kind = torch.optim.RMSprop if conf["optimizer"] == "rmsprop" else torch.optim.Adam
        self.optimizer = kind(params, lr=conf["lr"], weight_decay=conf["weight_decay"])
        self.scheduler, self.per_step_lr = build_scheduler(self.optimizer, conf)
        self.state = {"epoch": 0, "step": 0, "stage": 0, "stage_epoch": 0, "best_loss": math.inf, "best_epoch": 0,
                      "bad_epochs": 0, "finished": None, "history": []}
        self.resumed_from = self._resume()
        self.init_report = None
        if conf.get("init_model") is not None:
            if self.resumed_from is None:
                self.init_report = init_from_parent(self.model, self.model_conf, self.feat_conf, self.sources,
                                                    conf["init_model"], train_dump.path)
                if env.is_main:
                    for line in self.init_report:
                        logger.info("%s", line)
            elif env.is_main:
                logger.info("init_model %s not applied: the run continues from its checkpoint %s",
                            conf["init_model"], self.resumed_from)
        self.ddp = None
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.tb = TBWriter(self.outdir / "tensorboard", enabled=env.is_main and conf["tensorboard"])
        self.example = None
        self.valid_loader = self._train_loader = self._sampler = None

    # ----------------------------------------------------------------------------------------------
    # resume
    def _resume(self):
        conf, env = self.conf, self.env
        path = None
        if env.is_main:
            ck.remove_stale_temporaries(self.outdir)
            existing = ck.list_checkpoints(self.outdir)
            if conf["resume"] == "auto":
                path = ck.find_latest(self.outdir)
            elif conf["resume"] == "none":
                if existing:
                    path = f"ERROR:{self.outdir / ck.CKPT_DIR}: has checkpoints; use --resume auto to continue, " \
                           "or another --outdir"
            else:
                path = conf["resume"]
            if path is None:  # a fresh start over unreadable checkpoints or an old model.pt: keep them
                ck.set_aside_superseded(self.outdir, 0, foreign=True)
        path = broadcast_object(None if path is None else str(path), env)
        if path is None:
            return None
        if path.startswith("ERROR:"):
            raise SystemExit(path[6:])
        try:
            d = ck.load_checkpoint(path)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        if d["model_conf"] != self.model_conf:
            diff = sorted(k for k in set(d["model_conf"]) | set(self.model_conf)
                          if d["model_conf"].get(k) != self.model_conf.get(k))
            raise SystemExit(f"{path}: model settings {diff} differ from this configuration; "
                             "use another --outdir or --resume none")
        c = d["checkpoint"]
        if env.is_main:
            own = Path(path).resolve().parent == (self.outdir / ck.CKPT_DIR).resolve()
            ck.set_aside_superseded(self.outdir, c["epoch"], foreign=not own)
        self.model.load_state_dict(d["model_state"])
        self.optimizer.load_state_dict(c["optimizer"])
        keys = ("lr_schedule", "warmup_steps", "epochs", "steps_per_epoch", "lr", "min_lr")
        old = {k: c["config"].get(k, {"lr_schedule": "plateau", "warmup_steps": 0}.get(k)) for k in keys}
        if old["lr_schedule"] == "cosine" or self.per_step_lr:  # the decay is fixed by these when it starts
            diff = [k for k in keys if old[k] != conf[k]]
            if diff:
                raise SystemExit(f"{path}: learning-rate schedule settings {diff} differ from this configuration "
                                 "(a cosine decay cannot change its length mid-way); use another --outdir")
        self.scheduler.load_state_dict(c["scheduler"])
        if [list(s) for s in c["curriculum"]["stages"]] != [list(s) for s in self.stages]:
            logger.warning("curriculum changed from %s to %s; continuing in stage %d",
                           c["curriculum"]["stages"], self.stages, c["curriculum"]["stage"] + 1)
        self.state.update(epoch=c["epoch"], step=c["step"], stage=min(c["curriculum"]["stage"], len(self.stages) - 1),
                          stage_epoch=c["curriculum"]["stage_epoch"], best_loss=c["best"]["loss"],
                          best_epoch=c["best"]["epoch"], bad_epochs=c["bad_epochs"], finished=c["finished"],
                          history=list(c["history"]))
        rng = c["rng"]
        if len(rng) == env.world_size:
            set_rng_state(rng[env.rank])
        else:
            logger.warning("checkpoint from %d processes, now %d: RNG streams re-seeded", len(rng), env.world_size)
            seed_everything(epoch_seed(conf["seed"], c["epoch"], 1 + env.rank))
        S = self.stages[self.state["stage"]][0]
        logger.info("resuming from %s: %d epochs done, step %d, curriculum stage %d/%d (%d-frame segments), "
                    "best valid loss %.5g (epoch %d)", path, c["epoch"], c["step"], self.state["stage"] + 1,
                    len(self.stages), S, c["best"]["loss"], c["best"]["epoch"])
        return path

    # ----------------------------------------------------------------------------------------------
    def _loader(self, dataset, batch_sampler, salt):
        import torch.utils.data as tud

        from sepkit.data.dataset import collate

        workers = self.conf["num_workers"]
        pin = self.conf["pin_memory"] and self.device.type == "cuda"
        kw = dict(num_workers=workers, collate_fn=collate, pin_memory=pin,
                  generator=torch.Generator().manual_seed(epoch_seed(self.conf["seed"], salt, self.env.rank)))
        if workers:
            kw.update(persistent_workers=True, prefetch_factor=self.conf["prefetch_factor"])
        return tud.DataLoader(dataset, batch_sampler=batch_sampler, **kw)

    def _to_device(self, batch):
        """Tensors to the device (asynchronously from pinned memory); ``lengths`` stays on the host.

        ``valid_lengths`` is None when every item fills the batch (fixed-length training segments):
        the network and loss then skip packing and masking, which would otherwise need host syncs.
        """
        nb = self.device.type == "cuda"
        out = {k: (v if k == "lengths" else v.to(self.device, non_blocking=nb)) for k, v in batch.items()}
        lengths = batch["lengths"]
        out["valid_lengths"] = None if bool((lengths == batch["feats"].shape[1]).all()) else lengths
        return out

    def train_step(self, batch):
        """One optimiser step on a (this rank's) batch; returns detached ``(losses (3,), grad_norm)``."""
        from sepkit.losses import chimera_loss

        conf = self.conf
        net = self.ddp or self.model
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            out = net(batch["feats"], batch["valid_lengths"])
        out = {k: v.float() for k, v in out.items()}
        losses = chimera_loss(out, batch["mix"], batch["src"], conf["alpha"], conf["mi_loss"], conf["silence_db"],
                              batch["valid_lengths"], conf["dc_norm"], conf["dc_loss"], batch.get("psa"))
        loss = losses["loss"].mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = conf["grad_clip"] if conf["grad_clip"] is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        if self.per_step_lr:
            self.scheduler.step()
        self.state["step"] += 1
        return torch.stack([losses[k].detach().sum() for k in ("loss", "dc", "mi")]), grad_norm.detach()

    def _train_epoch(self, epoch, loader):
        from tqdm import tqdm

        conf, env = self.conf, self.env
        (self.ddp or self.model).train()
        # Interval sums, kept on the device between log lines so that no step waits for the GPU:
        # loss, dc, mi (summed over items) and the grad-norm sum; item/frame/step counts on the host.
        dev_acc = torch.zeros(4, dtype=torch.float64, device=self.device)
        counts = [0.0, 0.0, 0.0]  # items, frames, steps
        epoch_acc = torch.zeros(7, dtype=torch.float64)
        t0 = t_epoch = time.perf_counter()
        bar = tqdm(total=len(loader), desc=f"epoch {epoch}", disable=None if env.is_main else True, leave=False)
        for i, batch in enumerate(loader, 1):
            batch = self._to_device(batch)
            losses, gn = self.train_step(batch)
            dev_acc[:3] += losses.double()
            dev_acc[3] += gn.double()
            counts[0] += len(batch["lengths"])
            counts[1] += float(batch["lengths"].sum())
            counts[2] += 1
            bar.update(1)
            if i % conf["log_interval"] == 0 or i == len(loader):
                s = dev_acc.tolist()
                # global sums: loss, dc, mi, items, frames, grad-norm, steps
                tot = all_reduce_sum(torch.tensor(s[:3] + counts[:2] + s[3:] + counts[2:], dtype=torch.float64), env)
                loss = tot[0].item() / max(tot[3].item(), 1.0)
                if not math.isfinite(loss):  # every rank sees the same sums: all stop together
                    raise FloatingPointError(f"training loss is {loss} at epoch {epoch}, step {self.state['step']}")
                elapsed = time.perf_counter() - t0
                self._log_interval(epoch, i, len(loader), tot, elapsed)
                epoch_acc += tot
                dev_acc.zero_()
                counts = [0.0, 0.0, 0.0]
                t0 = time.perf_counter()
        bar.close()
        secs = time.perf_counter() - t_epoch
        n = max(epoch_acc[3].item(), 1.0)
        return {"loss": epoch_acc[0].item() / n, "dc": epoch_acc[1].item() / n, "mi": epoch_acc[2].item() / n,
                "frames_per_sec": epoch_acc[4].item() / max(secs, 1e-9), "seconds": secs}

    def _log_interval(self, epoch, i, n, tot, elapsed):
        if not self.env.is_main:
            return
        items, steps = max(tot[3].item(), 1.0), max(tot[6].item() / self.env.world_size, 1.0)
        vals = {"loss": tot[0].item() / items}
        for j, head in ((1, "dc"), (2, "mi")):
            if head in self.heads:
                vals[head] = tot[j].item() / items
        lr = self.optimizer.param_groups[0]["lr"]
        fps = tot[4].item() / max(elapsed, 1e-9)
        gn = tot[5].item() / max(tot[6].item(), 1.0)
        parts = " ".join(f"{k} {v:.5g}" for k, v in vals.items())
        logger.info("epoch %d step %d (%d/%d): %s lr %.3g grad_norm %.4g frames/s %.0f (%.2f s/step)", epoch,
                    self.state["step"], i, n, parts, lr, gn, fps, elapsed / steps)
        self.tb.scalars("train", {**vals, "lr": lr, "grad_norm": gn, "frames_per_sec": fps}, self.state["step"])

    @torch.no_grad()
    def validate(self):
        """Mean validation losses over all validation segments (all ranks together)."""
        from sepkit.losses import chimera_loss

        conf, env = self.conf, self.env
        self.model.eval()
        if self.valid_loader is None:
            batches = shard_batches(len(self.valid_set), conf["batch_size"], env.rank, env.world_size,
                                    conf["max_valid_batches"])
            self.valid_loader = self._loader(self.valid_set, batches, salt=1) if batches else []
        acc = torch.zeros(4, dtype=torch.float64)
        anchors = None  # DC head: per-source sums of unit embeddings over the bins each source dominates
        for batch in self.valid_loader:
            batch = self._to_device(batch)
            with torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                                enabled=self.autocast is not None):
                out = self.model(batch["feats"], batch["valid_lengths"])
            out = {k: v.float() for k, v in out.items()}
            losses = chimera_loss(out, batch["mix"], batch["src"], conf["alpha"], conf["mi_loss"],
                                  conf["silence_db"], batch["valid_lengths"], conf["dc_norm"], conf["dc_loss"],
                                  batch.get("psa"))
            acc += torch.stack([losses[k].double().sum().cpu() for k in ("loss", "dc", "mi")] +
                               [torch.tensor(len(batch["lengths"]), dtype=torch.float64)])
            if "embedding" in out:
                part = source_anchor_sums(out["embedding"], batch["mix"], batch["src"], conf["silence_db"],
                                          batch["valid_lengths"])
                anchors = part if anchors is None else anchors + part
        acc = all_reduce_sum(acc, env)
        if anchors is not None:
            anchors = all_reduce_sum(anchors, env)
            self.dc_centers = anchors_from_sums(anchors)
        n = max(acc[3].item(), 1.0)
        return {"loss": acc[0].item() / n, "dc": acc[1].item() / n, "mi": acc[2].item() / n}

    # ----------------------------------------------------------------------------------------------
    def fit(self):
        """Train until the epoch budget, the curriculum or early stopping ends it; returns the state."""
        conf, env, st = self.conf, self.env, self.state
        if env.is_main:
            self.outdir.mkdir(parents=True, exist_ok=True)
            dump_config(self.outdir / "config.yaml", self.conf)
        if st["finished"] is not None:
            if st["finished"] == "max_epochs" and st["epoch"] < conf["epochs"]:
                logger.info("extending the finished run from %d to %d epochs", st["epoch"], conf["epochs"])
                st["finished"] = None
            else:
                logger.info("training already finished (%s) after %d epochs; best valid loss %.5g at epoch %d; "
                            "nothing to do", st["finished"], st["epoch"], st["best_loss"], st["best_epoch"])
                return st
        n_params = sum(p.numel() for p in self.model.parameters())
        logger.info("model: %s, %s parameters, heads %s; %d process(es) on %s (%s), global batch %d",
                    self.model_conf, f"{n_params:,}", "+".join(self.heads), env.world_size, self.device,
                    env.backend or "single", conf["batch_size"])
        logger.info("data: %d training utterances, %d validation segments of %s frames; curriculum %s",
                    len(self.train_set.dump), len(self.valid_set), self.valid_set.segment_frames,
                    ", ".join(f"{s} frames x {e or 'rest'}" for s, e in self.stages))
        if env.is_main and self.tb.writer is not None:
            self.example = ValidationExample(self.valid_set, conf["tb_example_frames"], conf["valid_data"])
            self.tb.text("example/legend", self.example.legend(self.heads))
            if conf["valid_data"] is None:
                logger.info("TensorBoard: no audio examples (give --valid_data data/<valid set> for them)")
        while st["finished"] is None:
            epoch = st["epoch"] + 1
            train = self.train_epoch(epoch)
            valid = self.validate()
            self._end_epoch(epoch, train, valid)
        logger.info("training finished (%s) after %d epochs; best valid loss %.5g at epoch %d; model: %s",
                    st["finished"], st["epoch"], st["best_loss"], st["best_epoch"], self.outdir / "model.pt")
        self.tb.close()
        return st

    def train_epoch(self, epoch):
        """Training pass of ``epoch`` (1-based) at the current curriculum stage; returns its statistics.

        The loader is built once: its workers persist, and the dataset's epoch and segment length
        reach them through shared memory.
        """
        conf, env = self.conf, self.env
        if self._train_loader is None:
            self._sampler = GlobalBatchSampler(self.train_set, conf["batch_size"], env.rank, env.world_size,
                                               conf["seed"], max_batches=conf["max_steps_per_epoch"],
                                               steps=conf["steps_per_epoch"])
            note = budget_note(conf, self._sampler.batches_per_pass)
            if note and env.is_main:
                logger.log(*note)
            self._train_loader = self._loader(self.train_set, self._sampler, salt=0)
        stage_frames = self.stages[self.state["stage"]][0]
        if self.train_set.segment_frames != stage_frames:
            self.train_set.set_segment_frames(stage_frames)
        self.train_set.set_epoch(epoch)
        self._sampler.set_epoch(epoch)
        if len(self._sampler) == 0:
            raise SystemExit(f"{self.train_set.dump.path}: {len(self.train_set)} segments of {stage_frames} "
                             f"frames make no full batch of {conf['batch_size']}")
        return self._train_epoch(epoch, self._train_loader)

    def _end_epoch(self, epoch, train, valid):
        conf, env, st = self.conf, self.env, self.state
        if not self.per_step_lr:
            self.scheduler.step(valid["loss"])
        st["epoch"] = epoch
        st["stage_epoch"] += 1
        improved = valid["loss"] < st["best_loss"]
        if improved:
            st.update(best_loss=valid["loss"], best_epoch=epoch, bad_epochs=0)
        else:
            st["bad_epochs"] += 1
        lr = self.optimizer.param_groups[0]["lr"]
        st["history"].append({"epoch": epoch, "step": st["step"], "train_loss": train["loss"],
                              "valid_loss": valid["loss"], "lr": lr, "seconds": train["seconds"]})
        n_synced = check_params_in_sync(self.model, env)
        parts = " ".join(f"{k} {valid[k]:.5g}" for k in ("loss", "dc", "mi") if k == "loss" or k in self.heads)
        logger.info("epoch %d done: train loss %.5g, valid %s%s; lr %.3g; %.1f s, %.0f frames/s%s", epoch,
                    train["loss"], parts, " (best)" if improved else f" (best {st['best_loss']:.5g} at epoch {st['best_epoch']})",
                    lr, train["seconds"], train["frames_per_sec"],
                    f"; parameters identical on {env.world_size} ranks ({n_synced} tensors)" if env.distributed else "")
        message = advance_schedule(st, self.stages, conf["patience"], conf["epochs"])
        if message:
            logger.info("%s", message)
        rng = all_gather_object(get_rng_state(), env)
        if env.is_main:
            self.tb.scalars("valid", {k: valid[k] for k in ("loss", "dc", "mi") if k == "loss" or k in self.heads},
                            st["step"])
            self.tb.scalars("epoch", {"train_loss": train["loss"], "valid_loss": valid["loss"], "lr": lr,
                                      "frames_per_sec": train["frames_per_sec"]}, epoch)
            if self.example is not None:
                self.example.log(self.tb, self.model, self.device, st["step"], self.autocast)
            self.tb.flush()
            if improved:
                self._save_model()
            self._save_checkpoint(rng)
        # rank 0 writes; the others wait so that no rank runs ahead of a checkpoint it might resume from
        if env.distributed:
            import torch.distributed as dist

            dist.barrier()

    def _model_dict(self):
        from sepkit.model_io import make_model_dict

        st = self.state
        train = {"alpha": self.conf["alpha"], "mi_loss": self.conf["mi_loss"], "silence_db": self.conf["silence_db"],
                 "dc_norm": self.conf["dc_norm"], "dc_loss": self.conf["dc_loss"],
                 "segment_frames": self.stages[-1][0], "curriculum": self.conf["curriculum"],
                 "valid_segment_frames": self.valid_set.segment_frames, "epoch": st["epoch"], "step": st["step"],
                 "valid_loss": st["best_loss"] if st["best_epoch"] == st["epoch"] else None,
                 **({"init_model": self.conf["init_model"]} if self.conf.get("init_model") else {})}
        d = make_model_dict(self.model, self.model_conf, self.feat_conf.to_dict(), self.cmvn, self.sources, train)
        if getattr(self, "dc_centers", None) is not None:  # of the validation that preceded this save
            d["dc_centers"] = self.dc_centers
        return d

    def _save_model(self):
        d = self._model_dict()
        ck.save_atomic(d, self.outdir / "model.pt")
        logger.info("saved %s (valid loss %.5g, epoch %d)", self.outdir / "model.pt", self.state["best_loss"],
                    self.state["epoch"])

    def _save_checkpoint(self, rng):
        st = self.state
        d = self._model_dict()
        d["checkpoint"] = ck.checkpoint_entry(st, self.stages, self.optimizer, self.scheduler, rng,
                                              self.env.world_size, self.conf)
        path = ck.ckpt_path(self.outdir, st["epoch"])
        ck.save_atomic(d, path)
        ck.prune_checkpoints(self.outdir, st["epoch"], self.conf["keep_last_n"])
        logger.info("saved checkpoint %s", path)
