"""The error of separation that every separation module raises (one line, without the file name).

Its own module so that :mod:`sepkit.separate`, :mod:`sepkit.stream`, :mod:`sepkit.engine` and
:mod:`sepkit.online` all import it without importing each other.
"""

__all__ = ["SeparationError"]


class SeparationError(ValueError):
    """A waveform or option that cannot be separated; one line, without the file name."""
