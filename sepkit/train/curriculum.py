"""Curriculum learning (MIREX system, paper §3.3): train on short segments, then on longer ones.

A curriculum is written ``FRAMES:EPOCHS,...``, e.g. ``100:30,500`` = 30 epochs on 100-frame
segments, then 500-frame segments until the ``epochs`` budget; only the last stage may leave out
its epoch count. Early stopping ends a stage (the next one starts with its own patience); the last
stage ending ends training.
"""

import logging

__all__ = ["ConfigError", "parse_curriculum", "advance_schedule", "budget_note"]


class ConfigError(ValueError):
    """A configuration value or combination that cannot be used."""


def parse_curriculum(text):
    """``"100:10,500"`` -> ``[(100, 10), (500, None)]``: (segment frames, epochs) per stage.

    Only the last stage may leave out its epoch count (it then runs until ``epochs``).
    """
    if text is None:
        return None
    stages = []
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"curriculum {text!r} has no stages")
    for i, part in enumerate(parts):
        frames, _, epochs = part.partition(":")
        try:
            frames = int(frames)
            epochs = int(epochs) if epochs.strip() else None
        except ValueError:
            raise ConfigError(f"curriculum stage {part!r}: expected FRAMES:EPOCHS, e.g. 100:10") from None
        if frames <= 0 or (epochs is not None and epochs <= 0):
            raise ConfigError(f"curriculum stage {part!r}: frames and epochs must be positive")
        if epochs is None and i != len(parts) - 1:
            raise ConfigError(f"curriculum stage {part!r}: only the last stage may omit its epochs")
        stages.append((frames, epochs))
    return stages


def advance_schedule(st, stages, patience, max_epochs):
    """After an epoch: move to the next curriculum stage or finish; returns a log message or None.

    A stage ends when its epochs are done or, early, after ``patience`` epochs without a better
    validation loss (the next stage then gets its own patience); the last stage ending, or
    ``max_epochs``, ends training (``st["finished"]`` = ``curriculum_done``, ``early_stop`` or
    ``max_epochs``). ``st`` is the trainer state dict, updated in place.
    """
    stage_len = stages[st["stage"]][1]
    stage_done = stage_len is not None and st["stage_epoch"] >= stage_len
    early = patience is not None and st["bad_epochs"] >= patience
    message = None
    if (stage_done or early) and st["stage"] < len(stages) - 1:
        st.update(stage=st["stage"] + 1, stage_epoch=0, bad_epochs=0)
        message = (f"curriculum: {'stage complete' if stage_done else 'early stop'} after epoch {st['epoch']}; "
                   f"stage {st['stage'] + 1}/{len(stages)}: {stages[st['stage']][0]}-frame segments from epoch "
                   f"{st['epoch'] + 1}")
    elif early:
        st["finished"] = "early_stop"
        message = f"early stopping: no better validation loss for {st['bad_epochs']} epochs"
    elif stage_done:
        st["finished"] = "curriculum_done"
    if st["finished"] is None and st["epoch"] >= max_epochs:
        st["finished"] = "max_epochs"
    return message


def budget_note(conf, batches_per_pass):
    """``(logging level, message)`` on the length of the run's epochs, or None when there is nothing to say.

    With ``steps_per_epoch`` every epoch has that many steps (an info line says how many passes that
    takes). Without it an epoch is one pass; a ``max_steps_per_epoch`` that one pass does not reach
    by half is the configuration meaning longer epochs than the data give: a warning says so.
    """
    epochs, fixed, cap = conf["epochs"], conf.get("steps_per_epoch"), conf.get("max_steps_per_epoch")
    if fixed:
        steps = min(fixed, cap) if cap else fixed
        if steps > batches_per_pass > 0:
            return logging.INFO, (f"an epoch is {steps} steps (steps_per_epoch): {steps / batches_per_pass:.1f} "
                                  f"passes over the training segments ({batches_per_pass} batches each); "
                                  f"{epochs} epochs = {steps * epochs} steps")
        return None
    if cap and 0 < batches_per_pass * 2 <= cap:
        return logging.WARNING, (
            f"one pass over the training segments is {batches_per_pass} steps, under half of max_steps_per_epoch="
            f"{cap}: {epochs} epochs train {batches_per_pass * epochs} steps, not the {cap * epochs} the "
            f"configuration means; set steps_per_epoch {cap} (several passes per epoch) or add training data")
    return None
