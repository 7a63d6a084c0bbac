"""``retnet convert torchscale CKPT OUTDIR``: an official checkpoint to a retnet checkpoint directory."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``convert`` subcommand."""
    parser = subparsers.add_parser("convert", help="convert an official checkpoint to retnet's format")
    parser.add_argument("source", choices=["torchscale"], help="format of the checkpoint")
    parser.add_argument("checkpoint", help="the official .pt file")
    parser.add_argument("outdir", help="directory for config.json + model.safetensors")
    parser.add_argument("--config", help="JSON file of official config keys (if the checkpoint has none)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow pickled objects (trusted files only)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Convert and save; prints a one-line summary."""
    from ..model.loading import load_torchscale_checkpoint

    model = load_torchscale_checkpoint(args.checkpoint, config_path=args.config, trust_pickle=args.trust_pickle)
    model.save_pretrained(args.outdir)
    print(f"converted {args.checkpoint} -> {args.outdir} ({model.num_parameters():,} parameters)")
    return 0
