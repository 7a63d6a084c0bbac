"""``retnet compare``: the paper's architecture comparison (Tables 5 and 6) on one harness.

Examples::

    retnet compare --preset tiny                                  # CPU, all eleven models
    retnet compare --preset small --archs transformer,retnet      # a subset
    retnet compare --config configs/compare/small.yaml --prepare-only
    retnet compare --preset tiny train.tokens=409600 data.in_domain=shakespeare
    retnet compare --preset tiny --train.lr=1e-3
"""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare",
        help="train and evaluate RetNet against Transformer, Linear Transformer, RWKV, H3 and Hyena",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default="tiny", help="tiny (CPU), small (one H200) or 200m (paper Table 5)")
    p.add_argument("--config", default=None, help="YAML file (configs/compare/*.yaml) applied over the preset")
    p.add_argument("--archs", default=None, help="comma-separated subset of architectures (default: all)")
    p.add_argument("--out", default=None, help="run folder (default runs/compare-<preset>)")
    p.add_argument("--prepare-only", action="store_true", help="only fetch and tokenise the corpora")
    p.add_argument(
        "settings", nargs="*", help="section.field=value overrides, e.g. train.tokens=409600 (or --train.tokens=409600)"
    )
    p.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    """Build the config from the arguments and run the comparison."""
    from ..compare import load_compare_config, run_comparison

    overrides = [*args.settings, *getattr(args, "overrides", [])]
    if args.archs:
        overrides.append(f"archs=[{args.archs}]")
    if args.out:
        overrides.append(f"out_dir={args.out}")
    config = load_compare_config(args.preset, args.config, overrides)
    doc = run_comparison(config, prepare_only=args.prepare_only, command=shlex.join(["retnet", *sys.argv[1:]]))
    if not args.prepare_only:
        print(f"results: {config.out_dir}/results.md")
    return 0 if doc is not None else 1
