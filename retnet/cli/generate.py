"""``retnet generate MODEL [PROMPT]``: streamed text from a run, checkpoint or model (prompt from stdin if '-')."""

from __future__ import annotations

import sys

from .options import add_checkpoint_trust_options


def register(subparsers) -> None:
    """Add the ``generate`` subcommand."""
    p = subparsers.add_parser("generate", help="generate text from a trained model (streamed)")
    p.add_argument("model", help="run folder, checkpoint folder or exported model folder")
    p.add_argument("prompt", nargs="?", default=None, help="prompt text; '-' or omitted reads standard input")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--seed", type=int)
    p.add_argument("--interactive", "-i", action="store_true", help="read prompts line by line until EOF")
    p.add_argument("--device", default="cpu")
    add_checkpoint_trust_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hf.directory import is_hf_directory
    from ..training.artifacts import load_trained, stream_text

    if is_hf_directory(args.model):  # a transformers directory (retnet convert hf, a Trainer checkpoint)
        from ..hf.export import load_hf_trained

        trained = load_hf_trained(args.model, device=args.device)
    else:
        trained = load_trained(
            args.model,
            device=args.device,
            trust_checkpoint=args.trust_checkpoint,
            allow_unverified=args.allow_unverified,
        )
    options = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        greedy=args.greedy,
        seed=args.seed,
    )

    def emit(prompt: str) -> None:
        sys.stdout.write(prompt)
        for piece in stream_text(trained, prompt, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()

    if args.interactive:
        if sys.stdin.isatty():
            print("enter a prompt (Ctrl-D to quit)", file=sys.stderr)
        for line in sys.stdin:
            if line.strip():
                emit(line.rstrip("\n"))
        return 0
    prompt = args.prompt
    if prompt is None or prompt == "-":
        prompt = sys.stdin.read()
    emit(prompt)
    return 0
