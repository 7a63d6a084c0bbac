"""``retnet --version``, ``retnet.__version__``, and plain-text help with an example for every subcommand."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io

import pytest

import retnet
from retnet.cli.__main__ import build_parser, main, plain_text, subcommand_parsers


def _help(words: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([*words, "--help"])
    assert stop.value.code == 0
    return out.getvalue()


def test_version_matches_the_package_metadata():
    assert retnet.__version__ == importlib.metadata.version("retnet")
    assert retnet.__version__[0].isdigit()


def test_version_falls_back_when_not_installed(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    from retnet.utils import environment

    monkeypatch.setattr(environment.importlib.metadata, "version", missing)
    assert environment.retnet_version() == "0+unknown"


def test_cli_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"retnet {retnet.__version__}"


SUBCOMMANDS = sorted(subcommand_parsers(build_parser()))


def test_every_command_is_covered():
    assert {"train", "eval", "generate", "compare", "data", "data prepare", "convert", "demo"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("words", [""] + SUBCOMMANDS, ids=lambda w: w.replace(" ", "-") or "top")
def test_help_is_plain_text_with_an_example(words):
    text = _help(words.split())
    assert "``" not in text, text
    assert "::" not in text, text
    assert "example" in text.lower(), text
    assert f"retnet {words}".strip() in text.split("xample", 1)[1], "the example does not show the command"


def test_plain_text_strips_rest_markup():
    doc = "Run ``retnet compare`` (see :func:`run_comparison`).\n\nExamples::\n\n    retnet compare\n"
    assert plain_text(doc) == "Run retnet compare (see run_comparison).\n\nExamples:\n\n    retnet compare\n"
    assert plain_text(None) is None
