"""``retnet`` / ``python -m retnet``: one console script with a subcommand per module.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). Library errors (``ValueError``, ``FileNotFoundError``,
malformed YAML, ...) are reported as one line on stderr with exit code 1; Ctrl-C ends a command with one line and
exit code 130, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMAND_MODULES = ("convert", "demo", "data", "train", "eval", "generate", "compare")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="retnet", description="Retentive Networks: train, evaluate, generate.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"retnet.cli.{name}").register(subparsers)
    return parser


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
