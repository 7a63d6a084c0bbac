"""Load an exported model folder and report its perplexity on text files, with the Python API.

An exported model folder is what ``retnet train`` writes into ``RUN/model/`` (``config.json``,
``model.safetensors``, ``checksums.json`` and the ``tokenizer/`` beside or inside it), what
``model.save_pretrained(folder)`` writes, or what ``retnet convert`` makes of an official checkpoint::

    python examples/evaluate_exported_model.py runs/shakespeare-20261201-101500/model my_texts/
    python examples/evaluate_exported_model.py MODEL_DIR notes.txt --seq-len 512 --forms parallel recurrent

For each form it prints the loss (nats per token), the perplexity and bits per byte over windows of
``--seq-len`` tokens. The three forms compute the same function (docs/spec.md §3), so their numbers agree to
rounding; the recurrent form is the one decoding uses. ``retnet eval MODEL --text FILES`` gives the same numbers
from the shell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMS = ("parallel", "chunkwise", "recurrent")


def perplexities(model_dir: Path, text: Path, *, forms=FORMS, seq_len: int = 256, max_windows: int = 0) -> dict:
    """Evaluate the model in ``model_dir`` on the documents under ``text`` in each of ``forms``.

    Returns:
        ``{form: EvalResult}`` (``loss``, ``perplexity``, ``bits_per_byte``, ``tokens``, ``bytes``).
    """
    from retnet.data.prepare import encode_documents
    from retnet.training import evaluate
    from retnet.training.artifacts import load_trained

    trained = load_trained(model_dir)  # verifies the checksums; the tokenizer must match the model's vocabulary
    tokens = encode_documents(trained.tokenizer, text)  # (N,) int64: each document, then the separator
    tok = trained.tokenizer
    return {
        form: evaluate(
            trained.model,
            tokens,
            seq_len=seq_len,
            batch_size=8,
            token_bytes=tok.token_bytes(),  # bytes per token, for bits per byte
            sep_id=tok.sep_id,
            form=form,
            max_windows=max_windows,
        )
        for form in forms
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="exported model folder (config.json, model.safetensors)")
    ap.add_argument("text", type=Path, help="text/JSONL file or folder to evaluate on")
    ap.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    ap.add_argument("--max-windows", type=int, default=0, help="evaluate at most this many windows (0: all)")
    args = ap.parse_args(argv)
    from retnet.utils.table import format_table

    results = perplexities(args.model, args.text, forms=args.forms, seq_len=args.seq_len, max_windows=args.max_windows)
    rows = [
        [form, f"{r.loss:.4f}", f"{r.perplexity:.3f}", f"{r.bits_per_byte:.4f}", f"{r.tokens:,}"]
        for form, r in results.items()
    ]
    print(format_table(["form", "loss (nats/token)", "perplexity", "bits/byte", "tokens"], rows, align="lrrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
