"""retnet eval: perplexity and bits per byte, or zero/few-shot accuracy on multiple-choice task files.

Perplexity (the default): retnet eval MODEL [--data DATASET | --text PATH], in any form and length.
Tasks: retnet eval MODEL --tasks copa.jsonl piqa.jsonl [--num-fewshot K] reports acc and acc_norm with standard
errors (the task format is in docs/evaluation.md). --table3 prints the paper's Table 3 layout, from the tasks given
or from lm-evaluation-harness results files (--lm-eval-results, no MODEL needed). --json prints one JSON document
instead of text; a progress bar goes to stderr.

examples:
  retnet eval runs/shakespeare-20261201-101500 --json
  retnet eval runs/my-run --tasks tasks/copa.jsonl tasks/piqa.jsonl --num-fewshot 4 --table3
  retnet eval --table3 --lm-eval-results results/zero-shot.json results/four-shot.json
"""

from __future__ import annotations

import argparse

from .options import add_checkpoint_trust_options


def register(subparsers) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="perplexity, or zero/few-shot accuracy on task files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", help="run, checkpoint or exported model folder, or a Hugging Face directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="prepared dataset folder (default: the run's dataset)")
    src.add_argument("--text", help="text/JSONL file or folder, tokenized with the model's tokenizer")
    src.add_argument("--tasks", nargs="+", metavar="TASK.jsonl", help="multiple-choice task files to score")
    p.add_argument("--split", choices=["train", "val"], default="val")
    p.add_argument("--form", choices=["parallel", "chunkwise", "recurrent"], default="chunkwise")
    p.add_argument("--seq-len", type=int, help="window length (beyond training length for long context)")
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-windows", type=int, default=0, help="evaluate at most this many windows (0: all)")
    p.add_argument("--no-reset", action="store_true", help="do not reset the state at document boundaries")
    p.add_argument("--num-fewshot", type=int, default=0, help="solved examples before each question (--tasks)")
    p.add_argument("--seed", type=int, default=0, help="seed of the few-shot draw (--tasks)")
    p.add_argument("--max-length", type=int, help="keep at most this many tokens per scored row (--tasks)")
    p.add_argument("--table3", action="store_true", help="print the paper's Table 3 layout")
    p.add_argument("--lm-eval-results", nargs="+", metavar="FILE", help="lm-eval results JSON files (--table3)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--device", default="cpu")
    add_checkpoint_trust_options(p)
    p.set_defaults(func=run)


def check_args(args) -> None:
    """Reject combinations that make no sense, naming the options.

    Raises:
        ValueError: a missing MODEL, --lm-eval-results without --table3 or with a model, task-only options without
            --tasks, or a negative --num-fewshot.
    """
    if args.lm_eval_results:
        if not args.table3:
            raise ValueError("--lm-eval-results is read by --table3; add --table3")
        if args.model or args.tasks:
            raise ValueError("--lm-eval-results takes no MODEL or --tasks (the files hold the results)")
        return
    if not args.model:
        raise ValueError("give a MODEL (or --table3 --lm-eval-results FILE ...)")
    if args.table3 and not args.tasks:
        raise ValueError("--table3 needs --tasks (task files named after its columns) or --lm-eval-results")
    if not args.tasks and (args.num_fewshot or args.max_length is not None):
        raise ValueError("--num-fewshot and --max-length apply to --tasks")
    if args.num_fewshot < 0:
        raise ValueError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")


def run(args) -> int:
    check_args(args)
    if args.lm_eval_results:
        return _lm_eval_table(args)
    if args.tasks:
        return _tasks(args)
    return _perplexity(args)


def _print_json(doc: dict) -> None:
    import json

    print(json.dumps(doc, indent=2, allow_nan=False))


def _perplexity(args) -> int:
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
        progress=not args.no_progress,
    )
    if args.json:
        from dataclasses import asdict

        _print_json({"model": args.model, "form": args.form, **asdict(result)})
        return 0
    print(
        f"loss {result.loss:.4f}  perplexity {result.perplexity:.3f}  bits/byte {result.bits_per_byte:.4f}  "
        f"({result.tokens:,} tokens, {result.bytes:,} bytes, form {args.form})"
    )
    return 0


def _tasks(args) -> int:
    from ..evaluation import evaluate_task_files, format_table3, row_from_metrics

    report = evaluate_task_files(
        args.model,
        args.tasks,
        num_fewshot=args.num_fewshot,
        seed=args.seed,
        form=args.form,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        max_length=args.max_length,
        device=args.device,
        progress=not args.no_progress,
        trust_checkpoint=args.trust_checkpoint,
        allow_unverified=args.allow_unverified,
    )
    row = None
    if args.table3:
        row = row_from_metrics(f"{args.model} {args.num_fewshot}-shot", {t.name: t.metrics for t in report.tasks})
    if args.json:
        doc = report.as_dict()
        if row is not None:
            doc["table3"] = row.values
        _print_json(doc)
    elif row is not None:
        print(format_table3([row]))
    else:
        print(_task_lines(report))
    return 0


def _task_lines(report) -> str:
    """One aligned line per task: documents, shots, acc and acc_norm with their standard errors."""

    def pm(value: float, err: float | None) -> str:
        return f"{value:.4f} ± {err:.4f}" if err is not None else f"{value:.4f}"

    rows = [("task", "docs", "shots", "acc", "acc_norm")]
    for t in report.tasks:
        m = t.metrics
        rows.append(
            (
                t.name,
                str(t.num_docs),
                str(t.num_fewshot),
                pm(m["acc"], m["acc_stderr"]),
                pm(m["acc_norm"], m["acc_norm_stderr"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]) for r in rows]
    return "\n".join([*lines, f"(form {report.form}, seed {report.seed})"])


def _lm_eval_table(args) -> int:
    from ..evaluation import format_table3, load_lm_eval_row

    rows = [load_lm_eval_row(path) for path in args.lm_eval_results]
    if args.json:
        _print_json({"table3": {row.label: row.values for row in rows}})
    else:
        print(format_table3(rows))
    return 0
