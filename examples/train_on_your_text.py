"""Train a small RetNet on your own text files, then chat with it (or answer one prompt).

Give it a folder of ``.txt`` / ``.md`` / ``.jsonl`` files (read recursively). The text is tokenized into bytes,
a small model trains on it on the CPU (a few minutes for the defaults), and then each line you type is continued
by the model until you press Ctrl-D::

    python examples/train_on_your_text.py my_texts/
    python examples/train_on_your_text.py my_texts/ --steps 1000 --preset small --out runs/my-texts
    python examples/train_on_your_text.py my_texts/ --prompt "Once upon a time"   # one answer, no loop
    python examples/train_on_your_text.py --resume runs/my-texts --prompt "Once"   # chat with a trained run again

Everything goes through the Python API: ``retnet.training.load_config`` and ``train`` (what ``retnet train``
runs), ``retnet.training.artifacts.load_trained`` and ``retnet.training.text_samples.generate_samples`` (what
``retnet generate`` runs). The run folder holds the checkpoints, ``loss_curve.png`` and the exported model, so
``retnet generate RUN`` and ``retnet eval RUN`` work on it too. Set ``OMP_NUM_THREADS`` to the number of free
cores on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


def train_model(folder: Path, out: Path, *, steps: int, preset: str, seq_len: int, batch_size: int) -> Path:
    """Train a byte-level RetNet of ``preset`` on the text under ``folder``; return the run folder."""
    from retnet.training import load_config, train

    config = load_config(
        overrides={
            "run_dir": str(out),
            "steps": steps,
            "batch_size": batch_size,
            "log_every": max(1, steps // 10),
            "eval_every": 0,
            "sample_tokens": 0,
            "tensorboard": False,
            "model": {"preset": preset},
            # the prepared (tokenized) copy of the folder is cached inside the run folder
            "data": {"corpus": str(folder), "tokenizer": "byte", "seq_len": seq_len, "cache_dir": str(out / "cache")},
            "checkpoint": {"every": steps},
        }
    )
    with contextlib.redirect_stdout(sys.stderr):  # progress on stderr; stdout carries only the answers
        result = train(config)
    if result.val is not None:
        print(f"validation perplexity {result.val.perplexity:.2f} after {result.steps} steps", file=sys.stderr)
    return Path(result.run_dir)


def answer(trained, prompt: str, index: int, *, max_new_tokens: int, seed: int) -> str:
    """The model's continuation of ``prompt`` (prompt number ``index`` gets its own seed)."""
    from retnet.training.text_samples import generate_samples

    (sample,) = generate_samples(
        trained, [prompt], first_prompt=index, seed=seed, max_new_tokens=max_new_tokens, temperature=0.8, top_p=0.95
    )
    return sample.text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", type=Path, help="folder of text files to train on")
    ap.add_argument("--resume", type=Path, help="skip training: chat with this finished run folder")
    ap.add_argument("--out", type=Path, default=Path("runs/your-text"), help="run folder (default runs/your-text)")
    ap.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    ap.add_argument("--preset", default="tiny", help="model size: debug, tiny, small (default tiny)")
    ap.add_argument("--seq-len", type=int, default=128, help="training window in bytes (default 128)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prompt", help="answer this prompt and exit (default: read prompts from standard input)")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if (args.folder is None) == (args.resume is None):
        ap.error("give a folder of text files to train on, or --resume RUN (not both)")
    if args.folder is not None and not args.folder.is_dir():
        ap.error(f"not a folder: {args.folder}")

    from retnet.training.artifacts import load_trained

    run = args.resume or train_model(
        args.folder, args.out, steps=args.steps, preset=args.preset, seq_len=args.seq_len, batch_size=args.batch_size
    )
    trained = load_trained(run)
    options = dict(max_new_tokens=args.max_new_tokens, seed=args.seed)
    if args.prompt is not None:
        print(args.prompt + answer(trained, args.prompt, 0, **options))
        return 0
    if sys.stdin.isatty():
        print(f"model from {run}; type a line to continue it (Ctrl-D to quit)", file=sys.stderr)
    index = 0
    for line in sys.stdin:
        prompt = line.rstrip("\n")
        if prompt.strip():
            print(prompt + answer(trained, prompt, index, **options), flush=True)
            index += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
