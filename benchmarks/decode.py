"""Decoding cost, the paper's Figure 6: RetNet against an equally optimised Transformer, both on the decoding engine.

Both models run on :class:`retnet.generation.DecodeEngine` with the same options: weights cast once to
``--dtype`` (bf16 by default), static preallocated state (RetNet: retention states, constant in the context;
Transformer: a KV cache of ``max_len`` positions written in place), sampling on the device and the whole
single-token step in one CUDA graph. The Transformer is the comparison harness's (rotary positions, RMSNorm,
SwiGLU, heads of 128; see ``benchmarks/common.py``), its attention through SDPA; the fastest SDPA backend among
``--sdpa-backends`` is picked by timing at batch 1 first.

Measured, per model:
- memory (peak GiB during decoding: weights, state, step buffers) and throughput against the context length at
  batch ``--context-batch`` (the paper's panels a and b);
- per-token latency against the batch size at each ``--latency-contexts`` (panel c);
- batch-1 tokens/s as a fraction of the weight-bandwidth floor, (weight bytes + state bytes) ÷ the copy
  bandwidth measured in this run (bytes read + written per second);
- the largest batch that fits at ``--fit-context`` (doubling, then bisection; out-of-memory recorded as such),
  and both models' throughput and memory at the Transformer's largest batch;
- prefill tokens/s for prompts of ``--prefill-lengths`` (batch 1, chunkwise form / SDPA).
The context is prefilled with random tokens (``--fill prompt``), or with one token (``--fill short``): the
engine's step cost and memory do not depend on how much of the static state is filled (the Transformer's step
attends to all ``max_len`` positions with the unwritten ones masked), only the prefill time does. The batch
search always uses one-token prompts for that reason, and the uncompiled step. ``--compile`` compiles the
measured steps with inductor (one compilation per batch size and ``max_len``: limit the rows) and the prefill
(one graph per layer shape with dynamic lengths; the prefill rows report the first, compiling call apart).

Optional outside references, timed when they import (skipped with a note otherwise): transformers'
``LlamaForCausalLM`` of the Transformer's size with ``cache_implementation="static"`` and a compiled forward, and
flash-linear-attention's RetNet ``generate``; their tokens/s is the difference of two generation lengths. With
``--prefill-peers``, flash-linear-attention's prefill is timed beside retnet's at every ``--prefill-lengths`` (its
backbone's forward with the cache on).

    python benchmarks/decode.py --preset 1.3b --out bench_decode
    python benchmarks/decode.py --preset 6.7b --contexts 1024 8192 65536 --batches 1 8 32 --steps 32 --out b67
    python benchmarks/decode.py --preset debug --device cpu --out /tmp/bd          # smoke run

Writes ``results.json`` (with the environment stamp, rewritten after every row), ``results.md`` and
``figure6.png`` (three panels) into ``--out``, and prints the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (benchmarks/common.py: the compared Transformer, out-of-memory rows)

from retnet import RetNetConfig, RetNetForCausalLM  # noqa: E402
from retnet.baselines import MixerLM  # noqa: E402
from retnet.generation import DecodeEngine  # noqa: E402
from retnet.utils.environment import environment_stamp  # noqa: E402

DTYPES = common.DTYPES
MODELS = ("retnet", "transformer")
REFERENCES = ("hf-llama", "fla-retnet")
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth in bytes (read + written) per second: median of 10 timings of 10 copies
    of 1 GiB (16 MiB off the GPU)."""
    n = (1 << 30) if device.type == "cuda" else (1 << 24)
    x = torch.ones(n // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    times = []
    for _ in range(10):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            y.copy_(x)
        _sync(device)
        times.append((time.perf_counter() - t0) / 10)
    return 2 * n / sorted(times)[len(times) // 2]


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct parameters (tied weights once)."""
    params = {id(p): p for p in model.parameters()}
    return sum(p.numel() * p.element_size() for p in params.values())


def sdpa_context(backend: str):
    """A context selecting one SDPA backend ("auto": PyTorch's choice)."""
    if backend == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    return sdpa_kernel(getattr(SDPBackend, names[backend]))


def build_model(name: str, args, device: torch.device) -> torch.nn.Module:
    """RetNet of ``--preset`` or the Transformer of its size, built directly on ``device``, cast once to ``--dtype``."""
    overrides = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
    config = RetNetConfig.from_preset(args.preset, **overrides)
    with torch.device(device):
        model = RetNetForCausalLM(config) if name == "retnet" else MixerLM(common.transformer_config(config))
    return model.to(DTYPES[args.dtype]).eval()


def fill(engine: DecodeEngine, B: int, context: int, mode: str, prefill_batch: int, vocab: int) -> None:
    """Fill ``B`` slots with prompts of ``context`` random tokens (``"prompt"``) or of one token (``"short"``),
    ``prefill_batch`` rows at a time."""
    length = context if mode == "prompt" else 1
    g = torch.Generator().manual_seed(0)
    for start in range(0, B, prefill_batch):
        n = min(prefill_batch, B - start)
        engine.add(torch.randint(0, vocab, (n, length), generator=g))


def _warm_engine(model, B: int, context: int, args, device, *, short: bool) -> DecodeEngine:
    """An engine of B slots filled after ``context`` tokens, its step warmed up (compiled, captured)."""
    _free(device)
    engine = DecodeEngine(
        model, max_batch=B, max_len=context + args.warmup + args.steps, cuda_graph=False if args.no_graph else None,
        prefill_chunk=args.prefill_chunk, compile=args.compile, compile_options=compile_options(args),
        pack_weights=not args.no_pack, fused=FUSED[args.fused],
    )  # fmt: skip
    fill(engine, B, context, "short" if short else args.fill, args.prefill_batch, model.config.vocab_size)
    for _ in range(args.warmup):
        engine.step()
    _sync(device)
    return engine


def profile_steps(model, B: int, args, device, path: Path) -> None:
    """Write the per-kernel device time of ``--steps`` steps at batch B (one-token prompts) to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    engine = _warm_engine(model, B, 1, args, device, short=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            engine.step()
        _sync(device)
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=40)
    path.write_text(f"# {args.steps} steps at batch {B} (divide the totals by {args.steps} for one step)\n\n{table}\n")
    del engine


def decode_row(model, B: int, context: int, args, device, *, short: bool = False) -> dict:
    """Tokens/s, latency, peak memory and state bytes of ``--steps`` engine steps at batch B after ``context``."""
    engine = _warm_engine(model, B, context, args, device, short=short)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        engine.step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    row = {
        "B": B,
        "context": context,
        "tokens_per_s": B / seconds,
        "latency_ms": seconds * 1e3,
        "memory_gib": _peak_gib(device),
        "state_gib": engine.state_bytes() / 2**30,
        "cuda_graph": engine.uses_cuda_graph,
        "fused": engine.uses_fused_step,
    }
    del engine
    return row


def prefill_row(model, T: int, args, device) -> dict:
    """Tokens/s of prefilling one prompt of T tokens (a first prefill warms the kernels up and, with
    ``--compile``, compiles the prefill); with ``--profile-prefill T`` also a per-kernel table of one more prefill."""
    _free(device)
    engine = DecodeEngine(
        model, max_batch=1, max_len=T, cuda_graph=False, prefill_chunk=args.prefill_chunk, compile=args.compile,
        compile_options=compile_options(args),
    )  # fmt: skip
    prompt = torch.randint(0, model.config.vocab_size, (1, T))
    t0 = time.perf_counter()
    engine.add(prompt, max_new_tokens=0)
    engine.release([0])
    _sync(device)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.add(prompt, max_new_tokens=0)
    _sync(device)
    seconds = time.perf_counter() - t0
    row = {"T": T, "tokens_per_s": T / seconds, "ms": seconds * 1e3, "first_ms": first * 1e3}
    row["peak_gib"] = _peak_gib(device)
    if T == args.profile_prefill:
        from torch.profiler import ProfilerActivity, profile

        engine.release([0])
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            engine.add(prompt, max_new_tokens=0)
            _sync(device)
        table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=40)
        name = "retnet" if isinstance(model, RetNetForCausalLM) else "transformer"
        (Path(args.out) / f"profile-prefill-{name}-T{T}.txt").write_text(f"# one prefill of {T} tokens\n\n{table}\n")
    return row


def largest_batch(model, context: int, args, device) -> dict:
    """Largest batch whose engine fits at ``context`` (doubling, then bisection), with every trial recorded."""
    trials = []

    def fits(B: int) -> bool:
        row = common.fits_in_memory(
            lambda: decode_row(model, B, context, _quick(args), device, short=True), {"B": B}, device
        )
        trials.append({"B": B, "fits": not row.get("oom")})
        return not row.get("oom")

    lo, hi = 0, None
    B = 1
    while B <= args.max_search_batch:
        if not fits(B):
            hi = B
            break
        lo, B = B, 2 * B
    if hi is not None:
        while hi - lo > max(1, lo // 16):  # to within ~6 %
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"context": context, "batch": lo, "capped": hi is None, "trials": trials}


def _quick(args):
    """Arguments for the short probes (batch search, SDPA backend choice): two steps, never compiled (one
    compilation per probed shape would take longer than the whole run)."""
    quick = argparse.Namespace(**vars(args))
    quick.steps, quick.warmup, quick.compile = 2, 1, False
    return quick


def pick_sdpa_backend(model, args, device) -> tuple[str, dict]:
    """The fastest of ``--sdpa-backends`` for the Transformer's step at batch 1 (unsupported ones recorded)."""
    timings = {}
    for backend in args.sdpa_backends:
        try:
            with sdpa_context(backend):
                row = decode_row(model, 1, args.floor_context, _quick(args), device, short=True)
            timings[backend] = row["latency_ms"]
        except RuntimeError as err:  # "No available kernel": the backend does not take this shape or mask
            timings[backend] = f"unsupported: {str(err).splitlines()[0][:120]}"
    timed = {k: v for k, v in timings.items() if isinstance(v, float)}
    if not timed:
        raise RuntimeError(f"no SDPA backend among {args.sdpa_backends} runs the Transformer's step: {timings}")
    return min(timed, key=timed.get), timings


def _outside_model(name: str, config, context: int, args, device) -> tuple[torch.nn.Module, dict]:
    """The outside implementation of the size of ``config`` (random weights, cast to ``--dtype``) and its
    ``generate`` options; ImportError when its library is missing."""
    if name == "hf-llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.ffn_dim,
            num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads, max_position_embeddings=context + args.steps + 8,
        )  # fmt: skip
        with torch.device(device):
            model = LlamaForCausalLM(cfg).to(DTYPES[args.dtype]).eval()
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
        return model, {"cache_implementation": "static"}
    from fla.models import RetNetConfig as FlaConfig
    from fla.models import RetNetForCausalLM as FlaRetNet

    cfg = FlaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_heads=config.num_heads, expand_k=1, expand_v=config.value_dim / config.hidden_size,
        intermediate_size=config.ffn_dim,
    )  # fmt: skip
    with torch.device(device):
        return FlaRetNet(cfg).to(DTYPES[args.dtype]).eval(), {}


def reference_prefill_row(config, T: int, args, device) -> dict:
    """Tokens/s of flash-linear-attention's RetNet prefilling one prompt of T tokens: its backbone's forward with
    ``use_cache=True`` (its chunk kernels, the states it returns), without the LM head, as retnet's prefill computes
    only the last position's logits. A first call warms its kernels up."""
    _free(device)
    model, _ = _outside_model("fla-retnet", config, T, args, device)
    ids = torch.randint(0, config.vocab_size, (1, T), device=device)
    with torch.no_grad():
        model.model(input_ids=ids, use_cache=True)
        _sync(device)
        t0 = time.perf_counter()
        model.model(input_ids=ids, use_cache=True)
        _sync(device)
    seconds = time.perf_counter() - t0
    del model
    return {"T": T, "tokens_per_s": T / seconds, "ms": seconds * 1e3, "peak_gib": _peak_gib(device)}


def reference_row(name: str, config, B: int, context: int, args, device) -> dict:
    """Tokens/s of an outside implementation's ``generate`` (difference of two lengths), or why it was skipped."""
    if device.type != "cuda":
        return {"skipped": "outside references are timed on CUDA only"}
    try:
        model, options = _outside_model(name, config, context, args, device)
    except ImportError as err:
        return {"skipped": f"not importable: {err}"}
    ids = torch.randint(0, config.vocab_size, (B, context), device=device)

    def run(n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                pad_token_id=0, **options,
            )  # fmt: skip
        _sync(device)
        return time.perf_counter() - t0

    try:
        run(args.steps + 2)  # compile / warm up
        short, long = run(2), run(args.steps + 2)
    except Exception as err:  # an outside library's failure is a note in the table, not the end of the run
        return {"skipped": f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"}
    finally:
        _free(device)
    return {"B": B, "context": context, "tokens_per_s": B * args.steps / (long - short)}


def _spread(rows: list[dict], key: str) -> float | None:
    """Largest value of ``key`` over the measured rows divided by the first one (1.0: flat)."""
    values = [r[key] for r in rows if not r.get("oom") and r.get(key) is not None]
    return max(values) / values[0] if values and values[0] > 0 else None


def summarize(results: dict) -> dict:
    """The issue's goals as numbers: flatness in the context, and the ratios at the Transformer's largest batch."""
    summary = {"flat_in_context": {}}
    for name, rows in results["context_sweep"].items():
        summary["flat_in_context"][name] = {
            "memory_max_over_first": _spread(rows, "memory_gib"),
            "latency_max_over_first": _spread(rows, "latency_ms"),
        }
    at = results.get("at_transformer_batch", {})
    r, t = at.get("retnet"), at.get("transformer")
    if r and t and not r.get("oom") and not t.get("oom"):
        summary["at_transformer_batch"] = {
            "B": t["B"],
            "throughput_ratio": r["tokens_per_s"] / t["tokens_per_s"],
            "memory_saving": None if t["memory_gib"] is None else 1 - r["memory_gib"] / t["memory_gib"],
        }
    return summary


def _fmt(row: dict, key: str, spec: str) -> str:
    if row.get("oom"):
        return "out of memory"
    value = row.get(key)
    return "–" if value is None else format(value, spec)


def write_report(results: dict, out: Path) -> str:
    """Markdown tables (also printed) and the three-panel figure when matplotlib is present."""
    lines = [f"# Decoding, preset {results['args']['preset']}, {results['args']['dtype']}", ""]
    floor = results.get("floor", {})
    if floor:
        lines += [
            "| model | weights GiB | batch-1 tokens/s | floor tokens/s | fraction of floor |",
            "|---|---|---|---|---|",
        ]
        for name, f in floor.items():
            lines.append(
                f"| {name} | {f['weight_gib']:.2f} | {_fmt(f, 'tokens_per_s', ',.1f')} | "
                f"{f['floor_tokens_per_s']:,.0f} | {_fmt(f, 'fraction', '.1%')} |"
            )
        lines.append("")
    for title, key in (("Context sweep", "context_sweep"), ("Batch sweep", "batch_sweep")):
        if not results.get(key):
            continue
        lines += [f"## {title}", "", "| model | B | context | tokens/s | latency ms | memory GiB | state GiB |"]
        lines.append("|---|---|---|---|---|---|---|")
        for name, rows in results[key].items():
            for r in rows:
                lines.append(
                    f"| {name} | {r['B']} | {r['context']} | {_fmt(r, 'tokens_per_s', ',.1f')} | "
                    f"{_fmt(r, 'latency_ms', '.2f')} | {_fmt(r, 'memory_gib', '.2f')} | {_fmt(r, 'state_gib', '.3f')} |"
                )
        lines.append("")
    if results.get("largest_batch"):
        lines += ["## Largest batch", "", "| model | context | largest batch |", "|---|---|---|"]
        for name, r in results["largest_batch"].items():
            lines.append(f"| {name} | {r['context']} | {r['batch']}{' (search cap)' if r['capped'] else ''} |")
        lines.append("")
    if results.get("at_transformer_batch"):
        lines += ["| model | B | context | tokens/s | memory GiB |", "|---|---|---|---|---|"]
        for name, r in results["at_transformer_batch"].items():
            lines.append(
                f"| {name} | {r['B']} | {r['context']} | {_fmt(r, 'tokens_per_s', ',.1f')} | "
                f"{_fmt(r, 'memory_gib', '.2f')} |"
            )
        lines.append("")
    ratio = results.get("summary", {}).get("at_transformer_batch")
    if ratio:
        saving = "–" if ratio["memory_saving"] is None else f"{ratio['memory_saving']:.0%}"
        lines += [f"At B = {ratio['B']}: RetNet {ratio['throughput_ratio']:.2f}× the Transformer's tokens/s, "
                  f"{saving} less memory.", ""]  # fmt: skip
    flat = results.get("summary", {}).get("flat_in_context", {})
    for name, f in flat.items():
        if f["latency_max_over_first"] is not None:
            memory = "–" if f["memory_max_over_first"] is None else f"{f['memory_max_over_first']:.3f}"
            lines.append(
                f"- {name}: largest / first context: latency {f['latency_max_over_first']:.3f}, memory {memory}"
            )
    if flat:
        lines.append("")
    if results.get("prefill"):
        lines += ["## Prefill (batch 1)", "", "| model | T | tokens/s | peak GiB |", "|---|---|---|---|"]
        for name, rows in results["prefill"].items():
            for r in rows:
                lines.append(
                    f"| {name} | {r['T']} | {_fmt(r, 'tokens_per_s', ',.0f')} | {_fmt(r, 'peak_gib', '.2f')} |"
                )
        lines.append("")
    if results.get("references"):
        lines += ["## Outside references", ""]
        for name, r in results["references"].items():
            note = r["skipped"] if "skipped" in r else f"{r['tokens_per_s']:,.1f} tokens/s (B {r['B']}, {r['context']})"
            lines.append(f"- {name}: {note}")
        lines.append("")
    env = results["environment"]
    lines.append(f"{env['device']}, torch {env['torch']}, triton {env.get('triton')}, {env['git_sha']}, {env['date']}")
    lines.append(f"`{env['command']}`")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    _plot(results, out)
    return text


def _plot(results: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (("context_sweep", "context", "memory_gib", "GPU memory (GiB)", "Memory against context"),
              ("context_sweep", "context", "tokens_per_s", "throughput (tokens/s)", "Throughput against context"),
              ("batch_sweep", "B", "latency_ms", "latency per token (ms)", "Latency against batch size"))  # fmt: skip
    for ax, (key, x, y, label, title) in zip(axes, panels):
        for name, rows in results.get(key, {}).items():
            groups = sorted({r["context"] if x == "B" else r["B"] for r in rows})
            for g in groups:
                pts = [(r[x], r[y]) for r in rows if (r["context"] if x == "B" else r["B"]) == g and not r.get("oom")]
                pts = [p for p in pts if p[1] is not None]
                if pts:
                    what = f"context {g:,} tokens" if x == "B" else f"batch {g}"
                    ax.plot(*zip(*pts), marker="o", label=f"{name}, {what}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (sequences)" if x == "B" else "context length (tokens)")
        ax.set_ylabel(label)
        ax.set_title(title)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured on this device", ha="center", va="center", transform=ax.transAxes)
    device = results.get("environment", {}).get("device", "?")
    fig.suptitle(f"Decoding with the engine on {device}: RetNet against a Transformer with a static KV cache")
    fig.tight_layout()
    fig.savefig(out / "figure6.png", dpi=120)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="1.3b")
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768, 65536])
    p.add_argument("--context-batch", type=int, default=1, help="batch of the memory/throughput-vs-context sweep")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    p.add_argument("--latency-contexts", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--steps", type=int, default=64, help="timed decoding steps per row")
    p.add_argument("--warmup", type=int, default=4, help="untimed steps before each row")
    p.add_argument("--fill", choices=("prompt", "short"), default="prompt")
    p.add_argument("--prefill-batch", type=int, default=16, help="rows prefilled together")
    p.add_argument("--prefill-chunk", type=int, default=None, help="prefill prompts in pieces of this many tokens")
    p.add_argument("--prefill-lengths", type=int, nargs="*", default=[1024, 4096, 16384, 65536])
    p.add_argument("--floor-context", type=int, default=1024, help="context of the batch-1 floor row")
    p.add_argument("--fit-context", type=int, default=8192, help="context of the largest-batch search (0: skip)")
    p.add_argument("--max-search-batch", type=int, default=1024)
    p.add_argument("--sdpa-backends", nargs="+", choices=SDPA_BACKENDS, default=["auto", "efficient", "cudnn"])
    p.add_argument("--references", nargs="*", choices=REFERENCES, default=list(REFERENCES))
    p.add_argument(
        "--prefill-peers", action="store_true",
        help="also time flash-linear-attention's RetNet prefill at every --prefill-lengths (CUDA)",
    )  # fmt: skip
    p.add_argument("--no-graph", action="store_true", help="run the engine's step eagerly (no CUDA graph)")
    p.add_argument(
        "--compile", action="store_true",
        help="compile the engine's step (once per batch size) and its prefill (dynamic shapes) with inductor",
    )  # fmt: skip
    p.add_argument(
        "--coordinate-descent",
        action="store_true",
        help="with --compile: inductor's coordinate-descent tuning (batch-1 matrix-vector products become tuned, "
        "fused Triton reductions)",
    )
    p.add_argument("--no-pack", action="store_true", help="keep each projection's weight separate (no stacking)")
    p.add_argument(
        "--fused", choices=sorted(FUSED), default="auto",
        help="RetNet's fused step: the engine's choice (auto: batch 1) or never (off); rows record it",
    )  # fmt: skip
    p.add_argument("--profile-batch", type=int, default=0, help="write a per-kernel profile of steps at this batch")
    p.add_argument(
        "--profile-prefill", type=int, default=0, help="write a per-kernel profile of the prefill of this length"
    )
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


FUSED = {"auto": None, "off": False}
"""``--fused`` as the engine's ``fused`` argument."""


def compile_options(args) -> dict | None:
    """The inductor options of the compiled step (None: inductor's defaults)."""
    return {"coordinate_descent_tuning": True} if args.compile and args.coordinate_descent else None


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results dict (also written to ``--out``)."""
    args = parse_args(argv)
    limit = torch._dynamo.config.cache_size_limit
    if args.compile:  # one compiled step per (model, batch size, max_len): more than dynamo's default 8
        torch._dynamo.config.cache_size_limit = max(limit, 256)
    try:
        return run(args, argv)
    finally:
        torch._dynamo.config.cache_size_limit = limit


def run(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """The measurements of :func:`main` for parsed arguments."""
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment_stamp(device)
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    env["command"] = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["decode.py", *argv])
    env["copy_bandwidth_bytes_per_s"] = copy_bandwidth(device)
    results = {"args": vars(args), "environment": env, "parameters": {}, "floor": {}, "sdpa": {}}
    for key in ("context_sweep", "batch_sweep", "largest_batch", "at_transformer_batch", "prefill", "references"):
        results[key] = {}

    def save():  # after every row: a run stopped by a time limit keeps what it measured
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    def measure(model, B, context):
        return common.fits_in_memory(
            lambda: decode_row(model, B, context, args, device), {"B": B, "context": context}, device
        )

    configs = {}
    for name in args.models:
        model = build_model(name, args, device)
        configs[name] = model.config
        results["parameters"][name] = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        backend = "auto"
        if name == "transformer":
            backend, results["sdpa"] = pick_sdpa_backend(model, args, device)
            results["sdpa"]["chosen"] = backend
        with sdpa_context(backend):
            row = measure(model, 1, args.floor_context)
            wb = weight_bytes(model)
            floor = env["copy_bandwidth_bytes_per_s"] / (wb + row.get("state_gib", 0) * 2**30)
            results["floor"][name] = {**row, "weight_gib": wb / 2**30, "floor_tokens_per_s": floor}
            if not row.get("oom"):
                results["floor"][name]["fraction"] = row["tokens_per_s"] / floor
            save()
            rows = results["context_sweep"][name] = []
            for L in args.contexts:
                rows.append(measure(model, args.context_batch, L))
                save()
            rows = results["batch_sweep"][name] = []
            for L in args.latency_contexts:
                for B in args.batches:
                    rows.append(measure(model, B, L))
                    save()
            if args.fit_context:
                results["largest_batch"][name] = largest_batch(model, args.fit_context, args, device)
                save()
            rows = results["prefill"][name] = []
            for T in args.prefill_lengths:
                timed = functools.partial(prefill_row, model, T, args, device)
                rows.append(common.fits_in_memory(timed, {"T": T}, device))
                save()
            if args.profile_batch:
                path = out / f"profile-{name}-B{args.profile_batch}.txt"
                profile_steps(model, args.profile_batch, args, device, path)
        del model
        _free(device)
    if args.fit_context and "transformer" in results["largest_batch"]:
        B = results["largest_batch"]["transformer"]["batch"]
        for name in args.models if B else ():
            model = build_model(name, args, device)
            with sdpa_context(results["sdpa"].get("chosen", "auto") if name == "transformer" else "auto"):
                results["at_transformer_batch"][name] = measure(model, B, args.fit_context)
            del model
            _free(device)
            save()
    ref_B, ref_L = 1, args.floor_context
    for name in args.references:
        source = configs.get("transformer" if name == "hf-llama" else "retnet")
        if source is None:
            results["references"][name] = {"skipped": "its counterpart model is not in --models"}
        else:
            results["references"][name] = reference_row(name, source, ref_B, ref_L, args, device)
        save()
    if args.prefill_peers and device.type == "cuda" and "retnet" in configs:
        try:
            import fla  # noqa: F401
        except ImportError as err:
            results["prefill"]["fla-retnet"] = [
                {"T": T, "skipped": f"not importable: {err}"} for T in args.prefill_lengths
            ]
        else:
            rows = results["prefill"]["fla-retnet"] = []
            for T in args.prefill_lengths:
                timed = functools.partial(reference_prefill_row, configs["retnet"], T, args, device)
                rows.append(common.fits_in_memory(timed, {"T": T}, device))
                save()
    results["summary"] = summarize(results)
    print(write_report(results, out))
    save()
    return results


if __name__ == "__main__":
    main()
