"""Registries: the one place where objectives, network bodies, heads and networks are named.

A registry maps a name (what a YAML key or a model file says) to a function or class, with a one-line
help text and optional settings. Adding an entry is one decorator beside the function::

    from sepkit.losses import MI_LOSSES

    @MI_LOSSES.register("l1mask", help="L1 mask approximation")
    def l1_mask(mask, mix_mag, src_mag, psa_target, frame_mask):
        ...

The configuration's choices (``--mi_loss``), its ``--help`` text and docs/config.md are read from the
registries, so they follow. A registry imports nothing: this module is free of torch, and so is the
configuration that reads it (``python -m sepkit.bin.train --help`` stays instant).

Code of one's own (a module or a ``.py`` file) registers its entries when it is imported:
:func:`load_plugins` imports it, and the training key ``plugins`` names it.
"""
import importlib
import importlib.util
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Registry", "RegistryError", "load_plugins"]


class RegistryError(ValueError):
    """A name that is not registered, or one registered twice; the message is one line."""


class Registry(Mapping):
    """``name -> object`` with a help text and settings per entry, in registration order.

    Args:
        kind: what the names are, as a user sees them (``mi_loss``): the subject of every error.
        defaults: settings every entry has unless its ``register`` call says otherwise.
    """

    def __init__(self, kind, **defaults):
        self.kind = kind
        self._defaults = defaults
        self._entries = {}  # name -> (object, help, settings)

    def register(self, name, obj=None, *, help, **settings):
        """Register ``obj`` under ``name``; without ``obj``, a decorator that registers what it decorates.

        ``settings`` are kept per entry (:meth:`setting`); a key not given in the registry's
        ``defaults`` is refused, so a typo cannot pass unnoticed.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistryError(f"{self.kind}: a name must be a Python identifier, got {name!r}")
        if not help or "\n" in help:
            raise RegistryError(f"{self.kind} {name!r}: give a one-line help text")
        unknown = sorted(set(settings) - set(self._defaults))
        if unknown:
            raise RegistryError(f"{self.kind} {name!r}: unknown setting {unknown[0]!r} "
                                f"(known: {', '.join(self._defaults) or 'none'})")

        def add(target):
            if name in self._entries and self._entries[name][0] is not target:
                raise RegistryError(f"{self.kind} {name!r} is already registered (to {self._entries[name][0]!r})")
            self._entries[name] = (target, help, {**self._defaults, **settings})
            return target

        return add if obj is None else add(obj)

    def unregister(self, name):
        """Remove an entry (for tests); a name that is not there is an error."""
        self.get(name)
        del self._entries[name]

    def get(self, name):
        """The object of ``name``; an unknown name raises :class:`RegistryError` listing the known ones."""
        try:
            return self._entries[name][0]
        except (KeyError, TypeError):
            raise RegistryError(self.unknown(name)) from None

    def unknown(self, name):
        """The one-line message for an unknown ``name``."""
        return f"unknown {self.kind} {name!r} (known: {', '.join(self._entries)})"

    def names(self):
        """The registered names, in registration order."""
        return tuple(self._entries)

    def help(self, name):
        self.get(name)
        return self._entries[name][1]

    def setting(self, name, key):
        """A setting of the entry ``name`` (its registry's default when its ``register`` did not give it)."""
        self.get(name)
        return self._entries[name][2][key]

    def names_with(self, key, value=True):
        """The names whose setting ``key`` is ``value``."""
        return tuple(n for n, (_, _, s) in self._entries.items() if s[key] == value)

    def describe(self):
        """``name: help; name: help; ...``: the entries as one line (help texts of the configuration)."""
        return "; ".join(f"{name}: {h}" for name, (_, h, _) in self._entries.items())

    def __getitem__(self, name):
        return self.get(name)

    def __contains__(self, name):
        return isinstance(name, str) and name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self._entries)

    def __repr__(self):
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def load_plugins(spec):
    """Import the modules of ``spec`` (comma-separated; each a module name or a path to a ``.py`` file).

    Importing is what registers their entries. Returns the modules. An import that fails raises
    :class:`RegistryError` with one line naming the plugin and the error.
    """
    modules = []
    for item in [s.strip() for s in str(spec or "").split(",") if s.strip()]:
        try:
            if item.endswith(".py") or "/" in item:
                path = Path(item).resolve()
                name = f"sepkit_plugin_{path.stem}_{zlib.crc32(str(path).encode()):08x}"
                if name in sys.modules:  # imported already (each file is imported once)
                    modules.append(sys.modules[name])
                    continue
                if not path.is_file():
                    raise FileNotFoundError(f"no such file {str(path)!r}")
                spec_ = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec_)
                sys.modules[name] = module
                try:
                    spec_.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            else:
                module = importlib.import_module(item)
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise RegistryError(f"plugin {item!r} failed to import: {type(exc).__name__}: "
                                f"{text[0] if text else ''}".rstrip(": ")) from None
        modules.append(module)
    return modules
