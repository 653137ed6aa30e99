"""Training engine (``python -m sepkit.bin.train``; launcher ``utils/train.sh``).

Modules: :mod:`~sepkit.train.config` (keys, YAML + command line), :mod:`~sepkit.train.curriculum`
(segment-length stages, stopping), :mod:`~sepkit.train.distributed` (torchrun / DDP, sharding,
RNG state), :mod:`~sepkit.train.trainer` (the loop), :mod:`~sepkit.train.checkpoint` (resume
files), :mod:`~sepkit.train.tensorboard` (scalars, mask images, audio). Nothing is imported
here, so that ``import sepkit.train.config`` stays cheap.
"""
