"""Whole-model cost of RetNet and a Transformer of the same size, training and decoding (docs/benchmarks/model-h200.md).

Training: tokens/s and peak memory of forward + backward + AdamW step at each sequence length T, with a fixed
number of tokens per step (the batch shrinks as T grows). Decoding: prefill a context of L tokens, then time
single-token steps at batch B; report tokens/s, per-token latency and the bytes of the per-sequence state
(RetNet: retention states, constant in L; Transformer: the KV cache, linear in L).

The Transformer is the comparison harness's (``retnet.baselines``: SDPA attention, rotary positions, KV cache)
with Llama-style choices: RMSNorm, SwiGLU FFN of width ≈ 8/3·D, heads of 128 (or D / RetNet's heads when D is
small). Both run eagerly; set ``--compile`` to compile each model's forward first.

    python benchmarks/model.py --preset 1.3b --device cuda --dtype bf16 --out bench_model
    python benchmarks/model.py --preset debug --device cpu --out /tmp/bm            # smoke run

Writes ``results.json`` (with the environment stamp), ``results.md`` and ``decode.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retnet import RetNetConfig, RetNetForCausalLM  # noqa: E402
from retnet.baselines import MixerLM, MixerLMConfig  # noqa: E402
from retnet.utils.environment import environment_stamp  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_models(preset: str, vocab_size: int | None) -> dict[str, torch.nn.Module]:
    """RetNet of ``preset`` and a Llama-style Transformer of the same width and depth."""
    overrides = {} if vocab_size is None else {"vocab_size": vocab_size}
    cfg = RetNetConfig.from_preset(preset, **overrides)
    d = cfg.hidden_size
    heads = d // 128 if d >= 256 and d % 128 == 0 else cfg.num_heads
    transformer = MixerLMConfig(
        arch="transformer", vocab_size=cfg.vocab_size, hidden_size=d, num_hidden_layers=cfg.num_hidden_layers,
        ffn_dim=max(64, round(8 * d / 3 / 64) * 64), num_heads=heads, norm="rmsnorm", ffn_glu=True,
        activation="swish", max_position_embeddings=1 << 20,
    )  # fmt: skip
    return {"retnet": RetNetForCausalLM(cfg), "transformer": MixerLM(transformer)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def state_bytes(states) -> int:
    """Bytes held by a (nested) structure of state tensors."""
    if isinstance(states, torch.Tensor):
        return states.numel() * states.element_size()
    if isinstance(states, (list, tuple)):
        return sum(state_bytes(s) for s in states)
    if hasattr(states, "__dict__"):
        return sum(state_bytes(v) for v in vars(states).values())
    return 0


def bench_training(model, T: int, tokens_per_step: int, steps: int, dtype, device) -> dict:
    """Tokens/s and peak memory of full training steps at sequence length T."""
    B = max(1, tokens_per_step // T)
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=device.type == "cuda")
    ids = torch.randint(0, vocab, (B, T), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            loss = model(ids, form="chunkwise", labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: kernels compiled, optimizer state allocated
    _sync(device)
    _peak_reset(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    return {
        "T": T,
        "batch": B,
        "tokens_per_s": B * T / seconds,
        "step_ms": seconds * 1e3,
        "peak_gib": _peak_gib(device),
    }


@torch.no_grad()
def bench_decoding(model, B: int, context: int, steps: int, dtype, device) -> dict:
    """Prefill ``context`` tokens for ``B`` sequences, then time ``steps`` single-token steps."""
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (B, context), device=device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = model(ids, form="chunkwise", output_states=True)
        token = out.logits[:, -1].argmax(-1)
        states = out.states
        cache_bytes = state_bytes(states)
        out = model(token[:, None], form="recurrent", states=states, output_states=True)  # warm-up step
        states = out.states
        _sync(device)
        _peak_reset(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            token = out.logits[:, -1].argmax(-1)
            out = model(token[:, None], form="recurrent", states=out.states, output_states=True)
        _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    return {
        "B": B,
        "context": context,
        "tokens_per_s": B / seconds,
        "latency_ms": seconds * 1e3,
        "state_gib_per_sequence": cache_bytes / B / 2**30,
        "peak_gib": _peak_gib(device),
    }


def fits_in_memory(run, row_keys: dict, device: torch.device) -> dict:
    """``run()``'s row, or ``row_keys`` marked ``"oom"`` when the configuration does not fit in the device's memory
    (recorded in the table, as the paper's comparisons record it, instead of ending the benchmark)."""
    try:
        return run()
    except torch.OutOfMemoryError:
        pass  # leaving the handler frees the failed step's tensors
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**row_keys, "oom": True}


def environment(device: torch.device) -> dict:
    """Versions, device and commit of this run (:func:`retnet.utils.environment.environment_stamp`)."""
    return environment_stamp(device)


def _cell(row: dict, key: str, fmt: str) -> str:
    if row.get("oom"):
        return "out of memory"
    return "–" if row[key] is None else format(row[key], fmt)  # None: peak memory off the GPU


def _ratio(retnet_row: dict, transformer_row: dict) -> str:
    if retnet_row.get("oom") or transformer_row.get("oom"):
        return "–"
    return f"{retnet_row['tokens_per_s'] / transformer_row['tokens_per_s']:.2f}"


def write_report(results: dict, out: Path) -> str:
    """Markdown tables with RetNet / Transformer ratios; also the decode plot when matplotlib is present."""
    lines = ["## Training", "", "| T | RetNet tokens/s | Transformer tokens/s | ratio | RetNet GiB | Transformer GiB |"]
    lines.append("|---|---|---|---|---|---|")
    for r, t in zip(results["training"]["retnet"], results["training"]["transformer"]):
        lines.append(
            f"| {r['T']} | {_cell(r, 'tokens_per_s', ',.0f')} | {_cell(t, 'tokens_per_s', ',.0f')} | "
            f"{_ratio(r, t)} | {_cell(r, 'peak_gib', '.1f')} | {_cell(t, 'peak_gib', '.1f')} |"
        )
    lines += ["", "## Decoding", "", "| B | context | RetNet tokens/s | Transformer tokens/s | ratio | "
              "RetNet state GiB/seq | Transformer cache GiB/seq |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r, t in zip(results["decoding"]["retnet"], results["decoding"]["transformer"]):
        lines.append(
            f"| {r['B']} | {r['context']} | {_cell(r, 'tokens_per_s', ',.1f')} | {_cell(t, 'tokens_per_s', ',.1f')} | "
            f"{_ratio(r, t)} | {_cell(r, 'state_gib_per_sequence', '.4f')} | "
            f"{_cell(t, 'state_gib_per_sequence', '.4f')} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return text
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in results["decoding"].items():
        for B in sorted({r["B"] for r in rows}):
            pts = [(r["context"], r["tokens_per_s"]) for r in rows if r["B"] == B and not r.get("oom")]
            if not pts:
                continue
            ax.plot(*zip(*pts), marker="o", label=f"{name}, B={B}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length")
    ax.set_ylabel("decode tokens/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "decode.png", dpi=120)
    plt.close(fig)
    return text


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results dict (also written to ``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="1.3b")
    p.add_argument("--vocab-size", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--train-T", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument(
        "--tokens-per-step", type=int, default=8192, help="tokens per training step (32,768 at 1.3B exceeds an H200)"
    )
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--decode-B", type=int, nargs="+", default=[1, 64])
    p.add_argument("--decode-context", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--decode-steps", type=int, default=32)
    p.add_argument("--compile", action="store_true", help="torch.compile each model's forward")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "environment": environment(device), "training": {}, "decoding": {}}

    def save():  # after every row: a run stopped midway keeps what it measured
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    for name, model in build_models(args.preset, args.vocab_size).items():
        model.to(device)
        results.setdefault("parameters", {})[name] = sum(p.numel() for p in model.parameters())
        if args.compile:
            model.forward = torch.compile(model.forward)
        model.train()
        rows = results["training"][name] = []
        for T in args.train_T:
            run = partial(bench_training, model, T, args.tokens_per_step, args.steps, dtype, device)
            rows.append(fits_in_memory(run, {"T": T}, device))
            save()
        model.zero_grad(set_to_none=True)
        model.eval()
        rows = results["decoding"][name] = []
        for B in args.decode_B:
            for L in args.decode_context:
                run = partial(bench_decoding, model, B, L, args.decode_steps, dtype, device)
                rows.append(fits_in_memory(run, {"B": B, "context": L}, device))
                save()
        model.to("cpu")
    print(write_report(results, out))
    return results


if __name__ == "__main__":
    main()
