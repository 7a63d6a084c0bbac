"""``retnet eval MODEL [--data DATASET | --text PATH]``: perplexity and bits per byte, in any form and length."""

from __future__ import annotations

from .options import add_checkpoint_trust_options


def register(subparsers) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser("eval", help="perplexity and bits per byte of a trained model")
    p.add_argument("model", help="run folder, checkpoint folder or exported model folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="prepared dataset folder (default: the run's dataset)")
    src.add_argument("--text", help="text/JSONL file or folder, tokenized with the model's tokenizer")
    p.add_argument("--split", choices=["train", "val"], default="val")
    p.add_argument("--form", choices=["parallel", "chunkwise", "recurrent"], default="chunkwise")
    p.add_argument("--seq-len", type=int, help="window length (beyond training length for long context)")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-windows", type=int, default=0, help="evaluate at most this many windows (0: all)")
    p.add_argument("--no-reset", action="store_true", help="do not reset the state at document boundaries")
    p.add_argument("--device", default="cpu")
    add_checkpoint_trust_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.evaluate import evaluate_source

    result = evaluate_source(
        args.model,
        data=args.data,
        text=args.text,
        split=args.split,
        form=args.form,
        seq_len=args.seq_len,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        max_windows=args.max_windows,
        reset_at_boundaries=not args.no_reset,
        device=args.device,
        trust_checkpoint=args.trust_checkpoint,
        allow_unverified=args.allow_unverified,
    )
    print(
        f"loss {result.loss:.4f}  perplexity {result.perplexity:.3f}  bits/byte {result.bits_per_byte:.4f}  "
        f"({result.tokens:,} tokens, {result.bytes:,} bytes, form {args.form})"
    )
    return 0
