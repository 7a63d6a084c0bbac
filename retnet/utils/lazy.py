"""Lazy package exports: a package's public names are imported from their submodules on first use.

``import retnet`` (and the ``retnet`` command's start, ``retnet --help``) then loads no torch: a package's
``__init__.py`` lists where each name lives, and the name is imported when it is first read (PEP 562's module
``__getattr__``, here as a method of the package's module class). The names behave as an eager ``__init__.py``
made them behave (``from retnet import RetNetConfig``, ``retnet.training.train``), including a name that is also
a submodule: ``retnet.training.evaluate`` stays the function when ``retnet/training/evaluate.py`` gets imported.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping


class LazyPackage(types.ModuleType):
    """The module class of a package whose public names (``_lazy_exports``) are imported on first use."""

    _lazy_exports: Mapping[str, str]

    def __getattr__(self, name: str) -> object:
        exports = self.__dict__.get("_lazy_exports", {})
        if name in exports:
            value = getattr(importlib.import_module(exports[name], self.__name__), name)
        else:
            # A submodule that an eager __init__.py would have imported (``retnet.training.trainer``).
            try:
                value = importlib.import_module(f"{self.__name__}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{self.__name__}.{name}":
                    raise
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None
        setattr(self, name, value)
        return value

    def __setattr__(self, name: str, value: object) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if name in exports and isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            # The import system binds a submodule to its package; where an export has that name, keep the export.
            value = getattr(importlib.import_module(exports[name], self.__name__), name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_lazy_exports", {})))


def lazy_exports(package: str, exports: Mapping[str, str]) -> None:
    """Make the public names of ``package`` import on first use.

    Args:
        package: the package's ``__name__`` (call this at the end of its ``__init__.py``).
        exports: public name -> the module that defines it, relative to the package (``".config"``).

    Raises:
        ValueError: an export whose module path is not relative.
    """
    bad = [name for name, module in exports.items() if not module.startswith(".")]
    if bad:
        raise ValueError(f"exports must name relative modules ('.config'), got {[exports[n] for n in bad]}")
    module = sys.modules[package]
    module.__dict__["_lazy_exports"] = dict(exports)
    module.__class__ = LazyPackage
