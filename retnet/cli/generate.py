"""``retnet generate MODEL [PROMPT]``: text from a run, checkpoint or model (prompt from stdin if '-').

One prompt is streamed as it is generated; ``--file`` (one prompt per line) and ``--num-samples`` generate many
samples in batches, ``--stop`` ends a sample at a string, and ``--json`` prints one JSON object per sample. Every
sample gets its own seed, derived from ``--seed`` (see retnet.training.text_samples.sample_seeds), and reported with
``--json`` so that any sample can be repeated alone.
"""

from __future__ import annotations

import json
import re
import sys

from .options import add_checkpoint_trust_options

EPILOG = """examples:
  retnet generate runs/shakespeare-20261201-101500 "ROMEO." --max-new-tokens 200 --seed 0
  retnet generate runs/shakespeare-20261201-101500 --file prompts.txt --num-samples 3 --stop '\\n\\n' --json

With --json each line is {"prompt", "prompt_index", "sample_index", "seed", "text", "tokens", "stop_reason"};
stop_reason is stop_string, end_of_text or max_new_tokens. Sample j of prompt p (0-based) uses seed
(SEED + p * N + j) mod 2^32 for --seed SEED and --num-samples N; without --seed a random SEED is drawn."""

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def register(subparsers) -> None:
    """Add the ``generate`` subcommand."""
    import argparse

    p = subparsers.add_parser(
        "generate",
        help="generate text from a trained model (streamed, or batched from a file)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="run, checkpoint or exported model folder, or a Hugging Face directory")
    p.add_argument("prompt", nargs="?", default=None, help="prompt text; '-' or omitted reads standard input")
    p.add_argument("--file", metavar="FILE", help="prompts, one per line (blank lines skipped); '-' reads stdin")
    p.add_argument("--num-samples", type=int, default=1, metavar="N", help="samples per prompt (default 1)")
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="STR",
        help="end a sample at this string, cut before it (repeatable; \\n and \\t are understood)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per sample instead of text")
    p.add_argument("--batch-size", type=int, default=8, help="samples decoded together (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--seed", type=int, help="base seed in [0, 2^32); each sample's seed is derived from it")
    p.add_argument("--interactive", "-i", action="store_true", help="read prompts line by line until EOF")
    p.add_argument("--device", default="cpu")
    add_checkpoint_trust_options(p)
    p.set_defaults(func=run)


def unescape(text: str) -> str:
    """``\\n``, ``\\t`` and ``\\\\`` in a command-line string as a newline, a tab and a backslash."""
    return re.sub(r"\\(n|t|\\)", lambda m: _ESCAPES[m.group(1)], text)


def read_prompts(path: str) -> list[str]:
    """The non-blank lines of ``path`` ('-': standard input), without their line ends.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no prompt.
    """
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"--file {path} holds no prompt (every line is blank)")
    return prompts


def run(args) -> int:
    from ..training.artifacts import load_trained
    from ..training.text_samples import random_seed, sample_seeds

    if args.file is not None and (args.prompt is not None or args.interactive):
        raise ValueError("--file replaces the PROMPT argument and --interactive; give only one of them")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    seed = random_seed() if args.seed is None else args.seed
    sample_seeds(seed, 1, 1)  # checks the seed before the model loads
    stop = [unescape(s) for s in args.stop]
    trained = load_trained(  # also a transformers directory (retnet convert hf, a Trainer checkpoint)
        args.model,
        device=args.device,
        trust_checkpoint=args.trust_checkpoint,
        allow_unverified=args.allow_unverified,
    )
    options = dict(
        num_samples=args.num_samples,
        seed=seed,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        greedy=args.greedy,
        stop=stop,
        batch_size=args.batch_size,
    )
    if args.file is not None:
        emit(trained, read_prompts(args.file), options, as_json=args.json)
        return 0
    if args.interactive:
        if sys.stdin.isatty():
            print("enter a prompt (Ctrl-D to quit)", file=sys.stderr)
        index = 0
        for line in sys.stdin:
            if line.strip():
                emit(trained, [line.rstrip("\n")], options, as_json=args.json, first_prompt=index)
                index += 1
        return 0
    prompt = args.prompt
    if prompt is None or prompt == "-":
        prompt = sys.stdin.read()
    emit(trained, [prompt], options, as_json=args.json)
    return 0


def emit(trained, prompts: list[str], options: dict, *, as_json: bool, first_prompt: int = 0) -> None:
    """Generate and print the samples of ``prompts``: JSON lines, one streamed text, or texts under headers."""
    from ..training.text_samples import generate_samples

    if as_json:
        for sample in generate_samples(trained, prompts, first_prompt=first_prompt, **options):
            print(json.dumps(sample.to_dict(), ensure_ascii=False), flush=True)
        return
    if len(prompts) == 1 and options["num_samples"] == 1:
        sys.stdout.write(prompts[0])
        sys.stdout.flush()

        def write(_prompt: int, _sample: int, piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        for _ in generate_samples(trained, prompts, first_prompt=first_prompt, on_text=write, **options):
            pass
        sys.stdout.write("\n")
        sys.stdout.flush()
        return
    for s in generate_samples(trained, prompts, first_prompt=first_prompt, **options):
        print(f"--- prompt {s.prompt_index}, sample {s.sample_index} (seed {s.seed}, {s.stop_reason})")
        print(s.prompt + s.text, flush=True)
