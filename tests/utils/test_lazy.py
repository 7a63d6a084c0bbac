"""Lazy package exports: names import on first use and behave as an eager ``__init__.py`` made them behave."""

from __future__ import annotations

import importlib
import sys

import pytest

from retnet.utils.lazy import lazy_exports

INIT = """
from retnet.utils.lazy import lazy_exports
lazy_exports(__name__, {"helper": ".helper", "Thing": ".things"})
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    root = tmp_path / "lazypkg"
    root.mkdir()
    (root / "__init__.py").write_text(INIT)
    (root / "helper.py").write_text("def helper():\n    return 'function'\n")  # a function named like its module
    (root / "things.py").write_text("LOADED = True\n\nclass Thing:\n    pass\n")
    (root / "other.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("lazypkg")
    for name in [m for m in sys.modules if m == "lazypkg" or m.startswith("lazypkg.")]:
        del sys.modules[name]


def test_names_load_on_first_use(package):
    assert "lazypkg.things" not in sys.modules and "Thing" in dir(package)
    from lazypkg import Thing

    assert Thing.__module__ == "lazypkg.things" and "lazypkg.things" in sys.modules
    assert package.other.VALUE == 3  # a submodule, as an eager __init__ would leave it
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        _ = package.missing


def test_an_export_named_like_its_submodule_stays_the_export(package):
    importlib.import_module("lazypkg.helper")  # the import system binds the submodule to the package
    assert package.helper() == "function"
    from lazypkg import helper

    assert helper() == "function"


def test_the_training_package_keeps_evaluate_a_function():
    import retnet.training
    import retnet.training.evaluate  # noqa: F401

    assert callable(retnet.training.evaluate) and retnet.training.evaluate.__name__ == "evaluate"


def test_exports_must_be_relative():
    with pytest.raises(ValueError, match="relative modules"):
        lazy_exports("retnet", {"x": "retnet.model"})
