"""``retnet convert``: official torchscale checkpoints to retnet, and retnet to Hugging Face directories and back.

``retnet convert torchscale CKPT OUTDIR`` reads an official checkpoint. ``retnet convert hf SOURCE OUTDIR`` turns a
run, checkpoint or model folder into a ``transformers`` directory (weights, config with ``auto_map``, tokenizer,
model card), and a ``transformers`` directory back into a retnet model folder (the direction follows from what
SOURCE is; ``--to`` makes it explicit).
"""

from __future__ import annotations

from .options import add_checkpoint_trust_options


def register(subparsers) -> None:
    """Add the ``convert`` subcommand."""
    parser = subparsers.add_parser(
        "convert", help="convert official checkpoints to retnet, and retnet to Hugging Face directories and back"
    )
    parser.add_argument(
        "source",
        choices=["torchscale", "hf"],
        help="torchscale: an official checkpoint to retnet; hf: retnet <-> a transformers directory",
    )
    parser.add_argument("checkpoint", help="the official .pt file, a retnet run/checkpoint/model, or an HF directory")
    parser.add_argument("outdir", help="the output folder")
    parser.add_argument("--config", help="torchscale: JSON file of official config keys (if the checkpoint has none)")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="torchscale: allow pickled objects (trusted files only)"
    )
    parser.add_argument(
        "--to",
        choices=["hf", "native"],
        help="hf: the direction (default: native when the input is a transformers directory, else hf)",
    )
    add_checkpoint_trust_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    """Convert and save; prints a one-line summary."""
    if args.source == "torchscale":
        from ..model.loading import load_torchscale_checkpoint

        model = load_torchscale_checkpoint(args.checkpoint, config_path=args.config, trust_pickle=args.trust_pickle)
        model.save_pretrained(args.outdir)
        print(f"converted {args.checkpoint} -> {args.outdir} ({model.num_parameters():,} parameters)")
        return 0
    from ..hf.directory import is_hf_directory
    from ..hf.export import convert_from_hf, convert_to_hf

    target = args.to or ("native" if is_hf_directory(args.checkpoint) else "hf")
    if target == "native":
        model = convert_from_hf(args.checkpoint, args.outdir)
    else:
        model = convert_to_hf(
            args.checkpoint, args.outdir, trust_checkpoint=args.trust_checkpoint, allow_unverified=args.allow_unverified
        )
    what = "retnet model folder" if target == "native" else "transformers directory"
    print(f"converted {args.checkpoint} -> {args.outdir} ({what}, {model.num_parameters():,} parameters)")
    return 0
