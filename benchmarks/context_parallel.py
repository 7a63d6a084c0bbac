"""Scaling benchmark of context-parallel retention (docs/parallel.md): tokens/s and peak memory per GPU against the
sequence length and the number of ranks, beside the single-GPU op, forward + backward, in one run.

For each sequence length T and each number of ranks n (powers of two up to the world size, or ``--ranks``), the
first n ranks run ``retention(..., cp_group=)`` on their slices of one sequence of T tokens; the step time is the
slowest rank's. The single-GPU row runs the plain op on all T tokens on rank 0; the 1-rank row runs the split path
without partners, which is its overhead against the plain op. A single rank is the first and the last: it computes
no summary (no rank folds it) and runs its op from an empty state, so two more rows on rank 0 give what a rank that
is not the last pays besides: the plain op from a non-empty state (with its gradient), and the slice summary of T
tokens alone, forward + backward (``slice_summary``). Launch under torchrun (one process per GPU)::

    torchrun --nproc_per_node=8 benchmarks/context_parallel.py --out bench_cp --lengths 8192 32768 131072

It also runs as one plain process (world size 1) and on CPU with gloo (``--device cpu``). Writes ``results.json``
(after every row, with the environment stamp), ``results.md`` and ``context_parallel.png`` to ``--out`` (rank 0) and
prints the table. A length that does not fit ends the run with the rows measured so far kept in ``results.json``
(an out-of-memory error inside a collective cannot be recorded as a row without stalling the other ranks).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retnet.ops.retention import RetentionState, log_decay_schedule, retention  # noqa: E402
from retnet.ops.retention.context_parallel import ContextParallelGroup, slice_summary  # noqa: E402
from retnet.utils.environment import environment_stamp  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_context_parallel")
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072], help="sequence lengths T")
    p.add_argument("--ranks", type=int, nargs="+", default=None, help="rank counts (default: powers of two)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--key-dim", type=int, default=256)
    p.add_argument("--value-dim", type=int, default=512)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--form", choices=["chunkwise", "parallel"], default="chunkwise")
    p.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    return p.parse_args(argv)


def _join_group(device: torch.device) -> None:
    """Use the launcher's group (torchrun's environment), or a group of one process."""
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend)
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def _inputs(B, T, H, K, V, dtype, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, device=device, dtype=dtype).requires_grad_(True)
    k = (torch.randn(B, T, H, K, generator=g, device=device, dtype=dtype) * K**-0.5).requires_grad_(True)
    v = torch.randn(B, T, H, V, generator=g, device=device, dtype=dtype).requires_grad_(True)
    return q, k, v


def _time_steps(step, device: torch.device, warmup: int, steps: int) -> tuple[float, float | None]:
    """Median seconds of ``step()`` and peak GiB of the device (None on CPU)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return statistics.median(times), peak


def _op_step(q, k, v, log_decay, args, cp_group=None, initial_state=None):
    def step():
        for x in (q, k, v, *(() if initial_state is None else initial_state[:1])):
            x.grad = None
        o, _ = retention(
            q, k, v, log_decay, form=args.form, backend=args.backend, cp_group=cp_group, initial_state=initial_state
        )
        o.float().square().mean().backward()

    return step


def _row(T: int, kind: str, ranks: int, seconds: float, peak: float | None, args) -> dict:
    return {"T": T, "ranks": ranks, "kind": kind, "ms": 1e3 * seconds, "tokens_per_s": args.batch * T / seconds,
            "peak_gib_per_gpu": peak}  # fmt: skip


def single_row(T: int, args, device: torch.device, log_decay, from_state: bool = False) -> dict:
    """The plain op on all T tokens, on this rank alone; ``from_state``: from a random state that takes a gradient
    (as a rank that is not the first runs its slice)."""
    B, H, K, V = args.batch, args.heads, args.key_dim, args.value_dim
    q, k, v = _inputs(B, T, H, K, V, DTYPES[args.dtype], device, 0)
    state = None
    if from_state:
        g = torch.Generator(device=device).manual_seed(2)
        S = (0.1 * torch.randn(B, H, K, V, generator=g, device=device)).requires_grad_(True)
        z = torch.randn(B, H, K, generator=g, device=device).abs()
        state = RetentionState(S, z, torch.full((B,), 4 * T, dtype=torch.long, device=device))
    step = _op_step(q, k, v, log_decay, args, initial_state=state)
    seconds, peak = _time_steps(step, device, args.warmup, args.steps)
    return _row(T, "single_state" if from_state else "single", 0, seconds, peak, args)


def summary_row(T: int, args, device: torch.device, log_decay) -> dict:
    """The slice summary of T tokens alone, forward + backward: what a rank that is not the last adds to its op."""
    _, k, v = _inputs(args.batch, T, args.heads, args.key_dim, args.value_dim, DTYPES[args.dtype], device, 0)
    g = torch.Generator(device=device).manual_seed(3)
    cotangent = torch.randn(args.batch, args.heads, args.key_dim, args.value_dim + 1, generator=g, device=device)

    def step():
        k.grad = v.grad = None
        X = slice_summary(k, v, log_decay, backend=args.backend)  # (B, H, K, V + 1)
        X.backward(cotangent.to(X.dtype))

    seconds, peak = _time_steps(step, device, args.warmup, args.steps)
    return _row(T, "summary", 1, seconds, peak, args)


def split_row(T: int, n: int, group, args, device: torch.device, log_decay) -> dict | None:
    """The split path on the first n ranks (the caller's rank among them); the slowest rank's time."""
    cp = ContextParallelGroup.balanced(T, group)
    q, k, v = _inputs(args.batch, cp.length, args.heads, args.key_dim, args.value_dim, DTYPES[args.dtype], device, 1)
    seconds, peak = _time_steps(_op_step(q, k, v, log_decay, args, cp), device, args.warmup, args.steps)
    stats = torch.tensor([seconds, peak or 0.0], dtype=torch.float64, device=device)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX, group=group)
    seconds, peak_max = stats.tolist()
    return _row(T, "split", n, seconds, peak_max if peak is not None else None, args)


LABELS = {"single": "one device (plain op)", "single_state": "one device, from a state", "summary": "summary alone"}


def _pays_table(rows: list[dict]) -> list[str]:
    """Per T, on one GPU: the plain op, the op from a state, the 1-rank split path and the summary alone."""
    by = {(r["T"], r["kind"], r["ranks"]): r["ms"] for r in rows}
    lines = [
        "",
        "What a rank pays on one device, forward + backward, ms (no communication). One rank is the first and the "
        "last: no summary, its op from an empty state. A rank that is not the last adds the summary of its slice; "
        "one that is not the first runs its op from a state.",
        "",
        "| T | plain op | split path, one rank | one-rank overhead | plain op from a state | summary alone | "
        "summary / plain op |",
        "|---|---|---|---|---|---|---|",
    ]
    for T in sorted({r["T"] for r in rows}):
        plain, split = by.get((T, "single", 0)), by.get((T, "split", 1))
        state, summary = by.get((T, "single_state", 0)), by.get((T, "summary", 1))
        if None in (plain, split, state, summary):
            continue
        lines.append(
            f"| {T} | {plain:.2f} | {split:.2f} | {split / plain:.2f}× | {state:.2f} | {summary:.2f} | "
            f"{summary / plain:.2f} |"
        )
    return lines


def report(results: dict, out: Path) -> str:
    """``results.md``: one row per (T, ranks), with the speed-up over the single-GPU op at that T, and the table
    of what a rank pays on one GPU (:func:`_pays_table`)."""
    single = {r["T"]: r for r in results["rows"] if r["kind"] == "single"}
    a = results["args"]
    lines = [
        f"# Context-parallel retention, forward + backward ({a['dtype']}, B {a['batch']}, H {a['heads']}, "
        f"K {a['key_dim']}, V {a['value_dim']}, {a['form']}); device {results['environment']['device']}",
        "",
        "| T | ranks | ms per step | tokens/s | tokens/s per GPU | × one device | peak GiB per GPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        n = r["ranks"] or 1
        base = single.get(r["T"])
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base and r["kind"] != "summary" else "—"
        peak = "—" if r["peak_gib_per_gpu"] is None else f"{r['peak_gib_per_gpu']:.2f}"
        label = LABELS.get(r["kind"], str(r["ranks"]))
        lines.append(
            f"| {r['T']} | {label} | {r['ms']:.2f} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / n:,.0f} | "
            f"{ratio} | {peak} |"
        )
    text = "\n".join(lines + _pays_table(results["rows"])) + "\n"
    (out / "results.md").write_text(text)
    return text


def plot(results: dict, out: Path) -> None:
    """``context_parallel.png``: tokens/s and peak memory per GPU against T, one line per rank count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["kind"], r["ranks"]) for r in results["rows"] if r["kind"] in ("single", "split")}):
        rows = sorted((r for r in results["rows"] if (r["kind"], r["ranks"]) == key), key=lambda r: r["T"])
        label = LABELS["single"] if key[0] == "single" else f"{key[1]} ranks"
        ax1.plot([r["T"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=label)
        if all(r["peak_gib_per_gpu"] is not None for r in rows):
            ax2.plot([r["T"] for r in rows], [r["peak_gib_per_gpu"] for r in rows], marker="o", label=label)
    for ax, name in ((ax1, "tokens/s"), (ax2, "peak GiB per GPU")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(name)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "context_parallel.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict | None:
    """Run the benchmark on every rank; rank 0 writes the files and returns the results (others return None)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
    _join_group(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    counts = args.ranks or [1 << i for i in range(world.bit_length()) if 1 << i <= world]
    if any(n < 1 or n > world for n in counts):
        raise ValueError(f"--ranks must lie in [1, {world}] (the world size), got {counts}")
    groups = {n: dist.new_group(list(range(n))) for n in counts}  # every rank creates every group, in order
    log_decay = log_decay_schedule(args.heads, device=device)
    out = Path(args.out)
    stamp = {**environment_stamp(device), "world_size": world,
             "command": "benchmarks/context_parallel.py " + " ".join(argv)}  # fmt: skip
    results = {"args": vars(args), "environment": stamp, "rows": []}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    def record(row: dict | None) -> None:
        if rank == 0 and row is not None:
            results["rows"].append(row)
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    for T in args.lengths:
        if rank == 0:
            record(single_row(T, args, device, log_decay))
            record(single_row(T, args, device, log_decay, from_state=True))
            record(summary_row(T, args, device, log_decay))
        dist.barrier()
        for n in counts:
            if T < n:
                continue
            row = split_row(T, n, groups[n], args, device, log_decay) if rank < n else None
            record(row)
            dist.barrier()
    if rank != 0:
        return None
    print(report(results, out))
    plot(results, out)
    return results


if __name__ == "__main__":
    main()
    dist.destroy_process_group()
