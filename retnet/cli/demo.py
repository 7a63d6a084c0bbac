"""``retnet demo``: build a small RetNet, show that its three forms agree, and generate from it."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser("demo", help="run a small model in all three forms and generate")
    parser.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    parser.add_argument("--length", type=int, default=200, help="tokens to compare the forms on")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def run(args) -> int:
    """Print the largest difference between forms and a greedy continuation."""
    from ..generation.demo import forms_demo

    report = forms_demo(args.preset, args.length, args.seed)
    for line in report:
        print(line)
    return 0
