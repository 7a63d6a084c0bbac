"""``retnet train [--config FILE]... [--resume RUN] [--key=value]...``: train, validate, sample.

With no arguments it trains the default: a small RetNet on Shakespeare (fetched on first use) on CPU.
"""

from __future__ import annotations

import argparse

from .options import add_checkpoint_trust_options


def register(subparsers) -> None:
    """Add the ``train`` subcommand."""
    import textwrap

    from ..training.config import describe_keys

    keys = textwrap.fill("  ".join(describe_keys()), width=118, initial_indent="  ", subsequent_indent="  ")
    parser = subparsers.add_parser(
        "train",
        help="train a RetNet (default: small model on Shakespeare)",
        description="Train a RetNet. Settings come from YAML files (--config) and --key=value overrides such as "
        "--optim.lr=3e-4 --model.preset=small --data.corpus=sotu; see configs/ and docs/training.md.",
        epilog="config keys and defaults (override any with --key=value):\n" + keys,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)")
    parser.add_argument("--resume", metavar="RUN", help="continue a run folder (or a checkpoint folder)")
    add_checkpoint_trust_options(parser, allow_unverified=False)
    parser.set_defaults(func=run, accepts_overrides=True, overrides=[])


def run(args) -> int:
    """Load the config, train, then print the validation result and a sample (rank 0)."""
    from pathlib import Path

    from ..training import load_config, parse_overrides, train
    from ..training.artifacts import load_trained, sample_text

    paths = list(args.config)
    if args.resume:
        resume = Path(args.resume)
        if not resume.is_dir():
            raise FileNotFoundError(f"--resume {resume}: no such run or checkpoint folder")
        run_config = resume / "train_config.yaml"
        if not run_config.is_file():
            run_config = resume.parent.parent / "train_config.yaml"
        if not run_config.is_file():
            raise FileNotFoundError(f"--resume {resume}: no train_config.yaml there (not a run or checkpoint folder)")
        paths.insert(0, run_config)
    cfg = load_config(paths, parse_overrides(args.overrides))
    result = train(cfg, resume=args.resume, trust_checkpoint=args.trust_checkpoint)
    if result.rank != 0:
        return 0
    if result.val is not None:
        mfu = f", MFU {100 * result.mfu:.1f}%" if result.mfu is not None else ""
        print(
            f"validation: loss {result.val.loss:.4f}, perplexity {result.val.perplexity:.2f}, "
            f"bits/byte {result.val.bits_per_byte:.3f} ({result.steps} steps in {result.wall_s:.0f}s, "
            f"{result.tokens_per_s:,.0f} tokens/s{mfu}, {result.skipped} skipped)"
        )
    print(f"run folder: {result.run_dir}")
    if cfg.sample_tokens > 0:
        trained = load_trained(result.run_dir / "model")
        text = sample_text(trained, cfg.sample_prompt, max_new_tokens=cfg.sample_tokens, seed=cfg.seed)
        print("sample:\n" + cfg.sample_prompt + text)
    return 0
