"""Command-line options that several subcommands share."""

from __future__ import annotations

import argparse


def add_checkpoint_trust_options(parser: argparse.ArgumentParser, *, allow_unverified: bool = True) -> None:
    """``--trust-checkpoint`` (read torch.distributed.checkpoint's pickled format) and, for commands that load an
    exported model, ``--allow-unverified`` (weights without checksums); docs/security.md says what each risks."""
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="also read checkpoints in torch.distributed.checkpoint's pickled format (runs code in them; trusted "
        "sources only, see docs/security.md)",
    )
    if allow_unverified:
        parser.add_argument("--allow-unverified", action="store_true", help="load weights that have no checksums")
