"""``retnet`` / ``python -m retnet``: one console script with a subcommand per module.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). Library errors (``ValueError``, ``FileNotFoundError``,
malformed YAML, ...) are reported as one line on stderr with exit code 1; Ctrl-C ends a command with one line and
exit code 130, without a traceback.

Help is plain text: descriptions written as reStructuredText (module docstrings) lose their markup
(:func:`plain_text`), and every subcommand's help ends with an example (:data:`EXAMPLES` where its module gives
none).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

SUBCOMMAND_MODULES = ("convert", "demo", "data", "train", "eval", "generate", "compare")

# An example for each command whose own help has none (keyed by the command's words after "retnet").
EXAMPLES = {
    "convert": "retnet convert torchscale retnet_base.pt converted/",
    "demo": "retnet demo",
    "data": "retnet data prepare shakespeare data/shakespeare-byte",
    "data list": "retnet data list",
    "data fetch": "retnet data fetch shakespeare",
    "data prepare": "retnet data prepare my_texts/ data/my-texts --tokenizer bpe --vocab-size 4096",
    "train": "retnet train --config configs/debug.yaml --steps=50 --threads=2",
    "eval": "retnet eval runs/shakespeare-20261201-101500",
    "generate": 'retnet generate runs/shakespeare-20261201-101500 "ROMEO." --max-new-tokens 200 --seed 0',
    "compare": "retnet compare --preset tiny",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from ..utils.environment import retnet_version

    parser = argparse.ArgumentParser(
        prog="retnet",
        description="Retentive Networks: train, evaluate, generate.",
        epilog="example:\n  retnet train --config configs/debug.yaml\n  retnet COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"retnet {retnet_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"retnet.cli.{name}").register(subparsers)
    for name, sub in subcommand_parsers(parser).items():
        finish_help(sub, EXAMPLES.get(name))
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones included, keyed by its words (``"data prepare"``)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                key = f"{prefix} {name}".strip()
                found[key] = sub
                found.update(subcommand_parsers(sub, key))
    return found


def finish_help(parser: argparse.ArgumentParser, example: str | None) -> None:
    """Strip reST markup from a subcommand's description and epilog, and append ``example`` if it has none."""
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    has_example = any("example" in (text or "").lower() for text in (parser.description, parser.epilog))
    if example and not has_example:
        parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + f"example:\n  {example}"
        if parser.formatter_class is argparse.HelpFormatter:
            # The default formatter re-wraps the epilog, which would join the example to the line above.
            parser.formatter_class = argparse.RawDescriptionHelpFormatter


def plain_text(text: str | None) -> str | None:
    """``text`` without reStructuredText markup: ````code```` -> ``code``, ``Examples::`` -> ``Examples:``,
    ``:func:`name``` -> ``name``."""
    if not text:
        return text
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    return re.sub(r"::(\s*)$", r":\1", text, flags=re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Subcommands that take config overrides (``--optim.lr=3e-4``) set ``accepts_overrides``.
        if not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import yaml

    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError, OSError, yaml.YAMLError) as err:
        what = "malformed YAML: " if isinstance(err, yaml.YAMLError) else ""
        print(f"retnet {args.command}: error: {what}{one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nretnet {args.command}: interrupted", file=sys.stderr)
        return 130


def one_line(err: BaseException) -> str:
    """An error's message on one line (YAML and some torch errors span several)."""
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
