"""Learning-rate schedules of the trainer (``lr_schedule`` in the training YAML).

``plateau`` (the default, and what every shipped paper config uses): the learning rate is multiplied
by ``lr_factor`` after ``lr_patience`` epochs without a better validation loss (stepped once per epoch).

``cosine``: stepped after every optimiser step. ``warmup_steps`` of linear warm-up from ``lr / W`` to
``lr``, then a half cosine from ``lr`` down to ``min_lr`` at the last step of the budget
``epochs x steps_per_epoch`` (a budget fixed in steps, so that the end of the decay is known in
advance; early stopping may end a run before it). The factor applied to ``lr`` before step ``s``
(0-based, ``T`` steps in all, ``m = min_lr / lr``)::

    s < W:   (s + 1) / W
    s >= W:  m + (1 - m) * (1 + cos(pi * min(1, (s - W) / max(1, T - 1 - W)))) / 2

so the last step ``s = T - 1`` runs at ``min_lr`` exactly.
"""
import math

import torch

SCHEDULES = ("plateau", "cosine")


def total_steps(conf):
    """Optimiser steps of the whole budget (``epochs x steps_per_epoch``); None without ``steps_per_epoch``."""
    if conf.get("steps_per_epoch") is None:
        return None
    return conf["epochs"] * conf["steps_per_epoch"]


def cosine_factor(step, total, warmup, floor):
    """Multiplier of the base learning rate before optimiser step ``step`` (0-based) of ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - 1 - warmup)
    p = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


class _Cosine:
    """The cosine factor as an object: LambdaLR saves its ``__dict__`` (three numbers) in checkpoints."""

    def __init__(self, total, warmup, floor):
        self.total, self.warmup, self.floor = total, warmup, floor

    def __call__(self, step):
        return cosine_factor(step, self.total, self.warmup, self.floor)


def build_scheduler(optimizer, conf):
    """``(scheduler, per_step)``: the configured schedule and whether it steps per optimiser step
    (True, ``scheduler.step()``) or per epoch on the validation loss (False, ``scheduler.step(loss)``)."""
    kind = conf.get("lr_schedule", "plateau")
    if kind == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=conf["lr_factor"], patience=conf["lr_patience"], min_lr=conf["min_lr"])
        return sched, False
    if kind == "cosine":
        total = total_steps(conf)
        if total is None:
            raise ValueError("lr_schedule cosine needs steps_per_epoch (the budget in steps)")
        floor = min(1.0, conf["min_lr"] / conf["lr"])
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _Cosine(total, conf.get("warmup_steps", 0), floor)), True
    raise ValueError(f"unknown lr_schedule {kind!r} (known: {', '.join(SCHEDULES)})")
