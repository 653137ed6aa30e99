"""Train a DC / MI / Chimera network on feature dumps (recipe stage 3).

    python -m sepkit.bin.train --config conf/tuning/chimera.yaml \\
        --train-dump dump/mel150/train --valid-dump dump/mel150/valid --outdir exp/chimera [--key value ...]

One process trains on the CPU or one GPU; under torchrun (``utils/train.sh --ngpu N``) each process
drives one GPU with DDP. Every key is documented in ``--help``; ``--print_config`` prints them all
as YAML with their defaults. Re-running the same command continues from the newest checkpoint
in ``<outdir>/checkpoints`` (``--resume auto``). Writes ``<outdir>/{config.yaml, model.pt,
checkpoints/, tensorboard/, train.log}``.
"""
import logging
import os
import sys
from pathlib import Path

from sepkit.train.config import get_parser as _get_parser
from sepkit.train.config import parse_config

__all__ = ["get_parser", "main"]

_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"


def get_parser():
    return _get_parser(prog="sepkit.bin.train")


class _LogFile(logging.FileHandler):
    """``train.log`` that stops quietly when it cannot be written (a full disk): the run's own error says
    what failed, in one line on stderr, instead of a logging traceback for every later line."""

    failed = False

    def emit(self, record):
        if not self.failed:
            super().emit(record)

    def handleError(self, record):
        self.failed = True


def setup_logging(outdir, rank):
    """Rank 0: INFO to stderr and ``<outdir>/train.log`` (appended across resumes); others: warnings only."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_sepkit_train", False):
            root.removeHandler(h)
            h.close()
    handlers = [logging.StreamHandler(sys.stderr)]
    if rank == 0:
        Path(outdir).mkdir(parents=True, exist_ok=True)
        handlers.append(_LogFile(Path(outdir) / "train.log", mode="a"))
        fmt = logging.Formatter(_FORMAT)
    else:
        fmt = logging.Formatter(f"[rank {rank}] " + _FORMAT)
    for h in handlers:
        h.setFormatter(fmt)
        h._sepkit_train = True
        root.addHandler(h)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    return handlers


def main(argv=None):
    """Parse, set up the process group, train; returns 0 on success, 1 with a one-line error."""
    args = parse_config(argv, get_parser())
    rank = int(os.environ.get("RANK", "0"))
    handlers = setup_logging(args.outdir, rank)
    log = logging.getLogger("sepkit.bin.train")
    from sepkit.train import distributed
    from sepkit.train.trainer import Trainer

    env, finished = None, False
    try:
        env = distributed.setup(args.device)
        if env.is_main:
            log.info("command: %s", " ".join([sys.executable, "-m", "sepkit.bin.train"] + list(
                sys.argv[1:] if argv is None else argv)))
        Trainer(vars(args), env).fit()
        finished = True
        return 0
    except SystemExit as exc:
        if exc.code in (None, 0):
            return 0
        log.error("%s", exc.code)
        return 1
    except FloatingPointError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # a full disk or a read-only folder while writing checkpoints, model.pt, logs
        log.error("%s: cannot write (%s); the checkpoints written before are complete: free space and run the "
                  "same command again to resume", exc.filename or args.outdir, exc.strerror or exc)
        return 1
    finally:
        if env is not None:
            distributed.cleanup(env, finished)
        root = logging.getLogger()
        for h in handlers:
            root.removeHandler(h)
            h.close()


if __name__ == "__main__":
    sys.exit(main())
