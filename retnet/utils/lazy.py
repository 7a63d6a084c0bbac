"""Lazy package exports: a package's public names are imported from their submodules on first use.

``import retnet`` (and the ``retnet`` command's start, ``retnet --help``) then loads no torch: a package's
``__init__.py`` lists where each name lives, and the module-level ``__getattr__`` of PEP 562 imports it when it is
first read. The names behave as before (``from retnet import RetNetConfig``, ``retnet.training.train``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names are imported on first use.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module that defines it, relative to the package (``".config"``).

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__.py``. ``__getattr__`` imports the name's
        module, caches the value on the package and returns it; a name that is no export but a submodule
        (``retnet.training.trainer``) is imported as such, as an eager ``__init__.py`` would have left it.

    Raises:
        AttributeError: (from ``__getattr__``) neither an export nor a submodule.
    """

    def __getattr__(name: str) -> object:
        module = sys.modules[package]
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        else:
            try:
                value = importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
