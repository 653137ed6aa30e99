"""Names that become paths: source names, tags and ids from model files, hub folders, YAML or data dirs.

A model file may come from a stranger, so a name read from it is untrusted input: ``sources``
becomes ``<outdir>/<input>/<source>.wav``, a dump's ``<source>.scp`` and a column of every table.
A safe name is one path component that cannot leave the folder it is joined to and cannot hide:

* a string of 1 to :data:`MAX_LEN` characters, letters (any script), digits, ``_``, ``-``, ``+``
  and ``.``, starting with a letter, digit or ``_``: no separator (``/``, ``\\``), no ``..`` as a
  whole name, no leading dot (hidden files, sepkit's own temporary names), no NUL, no whitespace or
  control character (the Kaldi tables are split on whitespace).

:func:`name_problem` says what is wrong (or ``None``); :func:`check_names` checks a list (distinct,
each safe) and raises ``ValueError`` with one line naming where the list came from.
"""
import re

MAX_LEN = 64
_SAFE = re.compile(r"[^\W][\w.+-]*\Z")  # \w: letters of any script, digits, underscore

__all__ = ["MAX_LEN", "name_problem", "check_names"]


def name_problem(name):
    """Why ``name`` cannot be one path component made from untrusted input, or ``None`` when it can."""
    if not isinstance(name, str):
        return f"must be text, got {type(name).__name__}"
    if not name:
        return "is empty"
    if len(name) > MAX_LEN:
        return f"is {len(name)} characters long (at most {MAX_LEN})"
    if "\x00" in name:
        return "holds a NUL character"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if name in (".", ".."):
        return "is a relative folder name"
    if name.startswith("."):
        return "starts with a dot"
    if not _SAFE.match(name):
        bad = next((c for c in name if not (c.isalnum() or c in "_.+-")), name[0])
        return f"holds {bad!r} (allowed: letters, digits, _ - + . and not a leading - + or .)"
    return None


def check_names(names, where, what="source name", at_least=1):
    """Raise ``ValueError("<where>: ...")`` unless ``names`` is a list of ``at_least`` or more distinct safe names."""
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"{where}: must be a list of {what}s, got {type(names).__name__}")
    if len(names) < at_least:
        raise ValueError(f"{where}: needs at least {at_least} {what}s, got {len(names)}")
    seen = set()
    for name in names:
        why = name_problem(name)
        if why is not None:
            shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
            raise ValueError(f"{where}: {what} {shown} {why}")
        if name in seen:
            raise ValueError(f"{where}: {what} {name!r} is listed twice")
        seen.add(name)
    return list(names)
