"""``retnet train [--config FILE]... [--resume RUN] [--key=value]...``: train, validate, sample.

With no arguments it trains the default: a small RetNet on Shakespeare (fetched on first use) on CPU.

The entry point sets PyTorch's CPU thread count (``torch.set_num_threads``; library code never does): the
``threads`` setting if given, else ``OMP_NUM_THREADS`` if set, else the CPUs this process may run on. More threads
than free cores makes training several times slower, so on a busy machine it says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Mapping

from .options import add_checkpoint_trust_options

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the ``train`` subcommand."""
    import textwrap

    from ..training.config import describe_keys

    keys = textwrap.fill("  ".join(describe_keys()), width=118, initial_indent="  ", subsequent_indent="  ")
    parser = subparsers.add_parser(
        "train",
        help="train a RetNet (default: small model on Shakespeare)",
        description="Train a RetNet. Settings come from YAML files (--config) and --key=value overrides such as "
        "--optim.lr=3e-4 --model.preset=small --data.corpus=sotu; see configs/ and docs/training.md.",
        epilog="config keys and defaults (override any with --key=value):\n" + keys,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)")
    parser.add_argument("--resume", metavar="RUN", help="continue a run folder (or a checkpoint folder)")
    add_checkpoint_trust_options(parser, allow_unverified=False)
    parser.set_defaults(func=run, accepts_overrides=True, overrides=[])


def run(args) -> int:
    """Load the config, train, then print the validation result and a sample (rank 0)."""
    from pathlib import Path

    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..training import load_config, parse_overrides, train
    from ..training.artifacts import load_trained, sample_text

    paths = list(args.config)
    if args.resume:
        resume = Path(args.resume)
        if not resume.is_dir():
            raise FileNotFoundError(f"--resume {resume}: no such run or checkpoint folder")
        run_config = resume / "train_config.yaml"
        if not run_config.is_file():
            run_config = resume.parent.parent / "train_config.yaml"
        if not run_config.is_file():
            raise FileNotFoundError(f"--resume {resume}: no train_config.yaml there (not a run or checkpoint folder)")
        paths.insert(0, run_config)
    cfg = load_config(paths, parse_overrides(args.overrides))
    set_threads(cfg.threads)
    with logging_redirect_tqdm():  # log lines (first step, expected time) above the progress bar, not into it
        result = train(cfg, resume=args.resume, trust_checkpoint=args.trust_checkpoint)
    if result.rank != 0:
        return 0
    if result.val is not None:
        mfu = f", MFU {100 * result.mfu:.1f}%" if result.mfu is not None else ""
        print(
            f"validation: loss {result.val.loss:.4f}, perplexity {result.val.perplexity:.2f}, "
            f"bits/byte {result.val.bits_per_byte:.3f} ({result.steps} steps in {result.wall_s:.0f}s, "
            f"{result.tokens_per_s:,.0f} tokens/s{mfu}, {result.skipped} skipped)"
        )
    print(f"run folder: {result.run_dir}")
    if cfg.sample_tokens > 0:
        trained = load_trained(result.run_dir / "model")
        text = sample_text(trained, result.sample_prompt, max_new_tokens=cfg.sample_tokens, seed=cfg.seed)
        print("sample:\n" + result.sample_prompt + text)
    return 0


def usable_cpu_set() -> set[int]:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    return len(usable_cpu_set())


def choose_threads(requested: int, environ: Mapping[str, str], cpus: int) -> tuple[int, str]:
    """The CPU thread count for training and where it came from.

    Args:
        requested: the ``threads`` setting (0: not set).
        environ: the environment (``OMP_NUM_THREADS`` is honoured when set).
        cpus: the CPUs this process may run on.

    Returns:
        ``(threads, source)`` with source "threads", "OMP_NUM_THREADS" or "CPU affinity".

    Raises:
        ValueError: ``OMP_NUM_THREADS`` is not a positive integer.
    """
    if requested > 0:
        return requested, "threads"
    env = environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        first = env.split(",")[0]  # OpenMP allows a list for nested levels; the first is the outer one
        if not first.isdigit() or int(first) < 1:
            raise ValueError(f"OMP_NUM_THREADS={env!r} is invalid; expected a positive integer")
        return int(first), "OMP_NUM_THREADS"
    return max(cpus, 1), "CPU affinity"


def read_cpu_times(cpus: set[int], stat_path: str = "/proc/stat") -> dict[int, tuple[int, int]] | None:
    """``{cpu: (busy, total)}`` clock ticks of the given CPUs from ``/proc/stat`` (None where it cannot be read)."""
    try:
        with open(stat_path, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    times = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle = ticks[3] + ticks[4]
            times[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    return times or None


def busy_cpus(interval: float = 0.25, read=read_cpu_times) -> float | None:
    """How many of this process's CPUs other work keeps busy right now: their non-idle share over ``interval``
    seconds while this process sleeps (None where ``/proc/stat`` is not available)."""
    cpus = usable_cpu_set()
    before = read(cpus)
    time.sleep(interval)
    after = read(cpus)
    if not before or not after:
        return None
    busy = 0.0
    for cpu, (b1, t1) in after.items():
        b0, t0 = before.get(cpu, (b1, t1))
        busy += (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
    return busy


def free_cpu_threads(cpus: int, busy: float | None) -> int:
    """Threads that do not oversubscribe: the CPUs not kept busy by other work (at least one)."""
    return cpus if busy is None else max(1, cpus - round(busy))


def busy_hint(threads: int, cpus: int, load: float) -> str | None:
    """A hint when ``threads`` plus the other work already running (``load``) exceed the ``cpus``."""
    if threads > 1 and load >= 1 and threads + load > cpus + 0.5:
        return (
            f"the machine is busy (load average {load:.1f} on {cpus} CPUs); with {threads} threads training may "
            f"run several times slower: try --threads={max(1, cpus - round(load))}"
        )
    return None


def set_threads(requested: int) -> int:
    """Choose the thread count (:func:`choose_threads`), set it in PyTorch and log it; returns it."""
    import torch

    cpus = usable_cpus()
    threads, source = choose_threads(requested, os.environ, cpus)
    busy = busy_cpus() if source == "CPU affinity" and cpus > 1 else None
    if busy is not None:
        threads = free_cpu_threads(cpus, busy)
        source = f"CPU affinity, {busy:.1f} of {cpus} CPUs busy with other work"
    torch.set_num_threads(threads)
    logger.info("%d CPU thread%s (from %s)", threads, "" if threads == 1 else "s", source)
    hint = busy_hint(threads, cpus, os.getloadavg()[0]) if hasattr(os, "getloadavg") else None
    if hint and source == "CPU affinity":  # only where the busy CPUs could not be measured
        logger.warning(hint)
    return threads
