"""The paper's Table 4 on one GPU: training tokens/s, peak memory and MFU of RetNet against its peers.

Every model is timed in this one process, in the same precision mode, on random token ids, with the same step:
forward, next-token loss, backward, fused AdamW, zeroed gradients. Models (``--models``):

- ``retnet``: this library through the code path ``retnet train`` uses (:func:`retnet.training.trainer.prepare_model`:
  compiled blocks, the fused linear cross-entropy where liger-kernel is installed, activation checkpointing per
  ``--activation-checkpointing``);
- ``fla`` / ``fla-compiled``: flash-linear-attention's ``RetNetForCausalLM`` at the same geometry (its fused norm,
  SwiGLU and cross-entropy), eager as shipped, and under ``torch.compile``;
- ``transformer``: a Llama-style Transformer of the same width and depth (RMSNorm, SwiGLU, heads of 128, rotary
  positions) without fused attention (SDPA's math backend) and without compilation;
- ``transformer-opt``: the same Transformer equally optimised: compiled blocks, the fused loss, the fastest SDPA
  backend (cuDNN, else flash).

``--trainer-step`` adds to every model's step what ``retnet train``'s step does beyond it
(:meth:`retnet.training.trainer.Trainer._train_step`): the gradient norm clipped at ``--grad-clip`` (the trainer's
default 2.0), the update taken only where the loss and the norm are finite (decided on the device,
:func:`retnet.training.step_stats.step_if_finite`), and the loss and the norm copied to the host and read one step
later (:class:`retnet.training.step_stats.StepStats`).

``--documents L`` (retnet only) times ``retnet train``'s default data layout instead of rows of random ids: each
row holds documents of about L tokens (a separator after each), the rows are packed into one with the state reset
at every row and document start (``data.reset_at_boundaries``), and the batch is built on the host and moved to
the GPU every step, as the trainer does.

``--precision bf16`` keeps bf16 parameters and AdamW states for every model (flash-linear-attention's own mode);
``--precision mixed`` keeps fp32 master weights under bf16 autocast (``retnet train``'s default). MFU counts
6·N FLOPs per token for every model (N: parameters in matrix products, embedding excluded), over the GPU's
datasheet peak and over the bf16 matrix-product rate measured in the same run.

    python benchmarks/train.py --out bench_train                                   # 1.3B, T 2k/8k/32k
    python benchmarks/train.py --T 8192 --models retnet fla --profile retnet --out b   # one length, a profile
    python benchmarks/train.py --preset debug --device cpu --models retnet transformer --T 64 --out /tmp/bt
    python benchmarks/train.py --from-json a/results.json b/results.json --out merged   # one table, no GPU

Writes ``results.json`` (after every row), ``results.md`` and ``train.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (benchmarks/common.py: the compared Transformer, out-of-memory rows)

from retnet import RetNetConfig, RetNetForCausalLM  # noqa: E402
from retnet.baselines import MixerLM  # noqa: E402
from retnet.data import make_batch  # noqa: E402
from retnet.model.loss import fused_loss_available  # noqa: E402
from retnet.training.config import DataSection, TrainConfig  # noqa: E402
from retnet.training.flops import PEAK_TFLOPS  # noqa: E402
from retnet.training.loss import lm_loss_sum  # noqa: E402
from retnet.training.step_stats import StepStats, step_if_finite  # noqa: E402
from retnet.training.trainer import prepare_model  # noqa: E402
from retnet.utils.environment import environment_stamp, package_version  # noqa: E402

MODELS = ("retnet", "fla", "fla-compiled", "transformer", "transformer-opt")


def environment(device: torch.device, argv: list[str]) -> dict:
    """The run's stamp (:func:`retnet.utils.environment.environment_stamp`), the peers' versions and the command."""
    return {
        **environment_stamp(device),
        "fla": package_version("fla-core"),
        "liger_kernel": package_version("liger-kernel"),
        "command": "python benchmarks/train.py " + " ".join(argv),
    }


# ---- models ------------------------------------------------------------------------------------------------------
def retnet_config(preset: str) -> RetNetConfig:
    return RetNetConfig.from_preset(preset)


def fla_model(cfg: RetNetConfig):
    """flash-linear-attention's RetNet at this preset's geometry (value dim 2d as the paper; FFN ratio 2)."""
    from fla.models import RetNetConfig as FLAConfig
    from fla.models import RetNetForCausalLM as FLAModel

    fla_cfg = FLAConfig(
        attn_mode="chunk", hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_heads=cfg.num_heads, expand_k=1.0, expand_v=2.0, hidden_ratio=2, use_output_gate=True,
        hidden_act="swish", fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True, tie_word_embeddings=False,
        vocab_size=cfg.vocab_size,
    )  # fmt: skip
    return FLAModel(fla_cfg)


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters used in matrix products: every matrix but the input embedding (the LM head counts)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    heads = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2 and (id(p) not in embeddings or id(p) in heads))


def sdpa_context(name: str, device: torch.device):
    """SDPA backend of a model: math for the unfused Transformer, cuDNN then flash for the optimised one."""
    if device.type != "cuda" or not name.startswith("transformer"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "transformer":
        return sdpa_kernel([SDPBackend.MATH])
    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION], set_priority=True)


def build(name: str, cfg: RetNetConfig, args, device: torch.device):
    """The model and its step's forward-and-loss function ``loss(ids) -> scalar``."""
    torch.manual_seed(0)
    with torch.device(device):
        if name == "retnet":
            model = RetNetForCausalLM(cfg)
        elif name.startswith("fla"):
            model = fla_model(cfg)
        else:
            model = MixerLM(common.transformer_config(cfg))
    if args.precision == "bf16":
        model.to(torch.bfloat16)
    if name in ("retnet", "transformer-opt"):
        train_cfg = TrainConfig(
            compile=device.type == "cuda" or args.compile_cpu,
            compile_backend="inductor" if device.type == "cuda" else "aot_eager",
            activation_checkpointing=args.activation_checkpointing,
            activation_memory_budget=args.activation_memory_budget,
            data=DataSection(reset_at_boundaries=bool(args.documents)),
        )
        prepare_model(model, train_cfg, device)
    elif name == "fla-compiled":
        model = torch.compile(model)
    model.train()
    if name.startswith("fla"):

        def loss(ids):
            return model(input_ids=ids, labels=ids).loss

    else:
        impl = "plain" if name == "transformer" else "auto"

        def loss(ids):
            return model(ids, labels=ids, loss_impl=impl, return_logits=False).loss

    return model, loss


SEPARATOR = 0  # the token id that ends a document in --documents batches


def documents(B: int, T: int, mean_length: int, vocab_size: int) -> np.ndarray:
    """``(B, T + 1)`` windows of random ids with a separator after each document of about ``mean_length`` tokens
    (lengths drawn geometrically; seeded)."""
    rng = np.random.default_rng(0)
    windows = rng.integers(1, vocab_size, size=(B, T + 1), dtype=np.int64)
    windows[rng.random((B, T + 1)) < 1 / mean_length] = SEPARATOR
    return windows


def packed_documents_loss(model, windows: np.ndarray, device: torch.device):
    """The trainer's forward-and-loss on packed documents: ``loss(_) -> mean loss`` of ``windows``, whose batch is
    built on the host and moved to ``device`` at every call."""
    cfg = TrainConfig()

    def loss(_ids):
        batch = make_batch(windows, SEPARATOR, reset_at_boundaries=True).to(device)
        return lm_loss_sum(model, batch, cfg.form, cfg.chunk_size) / batch.targets.numel()

    return loss


# ---- timing ------------------------------------------------------------------------------------------------------
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(name: str, cfg: RetNetConfig, T: int, tokens_per_step: int, args, device) -> dict:
    """Tokens/s and peak memory of full training steps of ``name`` at sequence length T."""
    B = max(1, tokens_per_step // T)
    model, loss_fn = build(name, cfg, args, device)
    n_matmul = matmul_parameters(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=device.type == "cuda")
    ids = torch.randint(0, cfg.vocab_size, (B, T), device=device)
    if args.documents:
        loss_fn = packed_documents_loss(model, documents(B, T, args.documents, cfg.vocab_size), device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "mixed")

    pending: list[StepStats] = []  # --trainer-step: the previous step's numbers, read after this one is queued

    def step():
        with autocast, sdpa_context(name, device):
            loss = loss_fn(ids)
        loss.backward()
        if args.trainer_step:  # as the trainer: clip, update where finite, read the previous step's numbers
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            taken = step_if_finite(opt, loss.detach(), norm)
            if pending:
                pending.pop().read()
            pending.append(StepStats.start(0, loss.detach(), norm, taken))
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(args.warmup):  # compilation, autotuning and the optimizer's state happen here
        step()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    row = {
        "model": name, "T": T, "batch": B, "tokens_per_step": B * T, "tokens_per_s": B * T / seconds,
        "step_ms": seconds * 1e3, "warmup_s": warmup_s, "matmul_params": n_matmul, "trainer_step": args.trainer_step,
        "documents": args.documents,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "loss": _loss_used(name, ids),
    }  # fmt: skip
    if args.profile == name:
        row["profile"] = profile_step(step, device)
    return row


def _loss_used(name: str, ids: torch.Tensor) -> str:
    if name.startswith("fla"):
        return "flash-linear-attention fused cross-entropy"
    probe = torch.zeros(1, device=ids.device, dtype=torch.bfloat16)
    fused = name != "transformer" and fused_loss_available(probe)
    return "fused linear cross-entropy (liger-kernel)" if fused else "plain cross-entropy"


def profile_step(step, device, top: int = 30) -> list[dict]:
    """CUDA time per kernel of one step (the largest ``top``), in ms and as a share of the step's kernel time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        _sync(device)
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0]
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA] or events
    total = sum(e.device_time_total for e in kernels) or 1.0
    kernels.sort(key=lambda e: e.device_time_total, reverse=True)
    return [
        {"kernel": e.key[:120], "calls": e.count, "ms": e.device_time_total / 1e3, "share": e.device_time_total / total}
        for e in kernels[:top]
    ]


def matmul_tflops(device) -> float | None:
    """Measured bf16 matrix-product rate (8192³, median of 10 after 3 warm-ups), TFLOP/s."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / sorted(times)[len(times) // 2] / 1e12


def run_row(name, cfg, T, tokens, args, device) -> dict:
    """One row, or the row marked as out of memory / failed / crashed (recorded, not fatal).

    On CUDA each row runs in a fresh process: a peer that crashes the interpreter (a compiler segfault) is
    recorded as such, and no row inherits another's cached allocations, compiled graphs or autotuning.
    """
    if device.type == "cuda":
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            pending = pool.apply_async(_row_or_outcome, (name, cfg, T, tokens, args, device))
            try:
                outcome = pending.get(timeout=args.row_timeout)
            except multiprocessing.TimeoutError:
                outcome = {"error": f"no result within {args.row_timeout} s"}
            except Exception as err:  # the worker died (a signal) or could not send its row
                outcome = {"error": f"process failed: {type(err).__name__}: {err}"}
    else:
        outcome = _row_or_outcome(name, cfg, T, tokens, args, device)
    if "tokens_per_s" in outcome:
        return outcome
    return {"model": name, "T": T, "tokens_per_step": max(1, tokens // T) * T, **outcome}


def _row_or_outcome(name, cfg, T, tokens, args, device) -> dict:
    try:
        return time_training(name, cfg, T, tokens, args, device)
    except torch.OutOfMemoryError:
        return {"oom": True}
    except ImportError as err:
        return {"error": f"not installed: {err}"}
    except Exception as err:  # a peer that fails to compile or run is recorded as such
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()


# ---- report ------------------------------------------------------------------------------------------------------
def _fmt(row: dict, key: str, spec: str) -> str:
    if row.get("oom"):
        return "OOM"
    if row.get("error"):
        return "failed"
    return "–" if row.get(key) is None else format(row[key], spec)


def write_report(results: dict, out: Path) -> str:
    """Table-4 layout: per (tokens per step, T) the tokens/s, memory and MFU of each model, with ratios."""
    rows = results["rows"]
    peak = results.get("datasheet_tflops")
    trainer = results["args"].get("trainer_step")
    step = "retnet train's (clipped, the update decided on the device, loss and norm read a step later)"
    step = step if trainer else "bare"
    mean = results["args"].get("documents")
    layout = f"packed documents of about {mean} tokens, state reset at each" if mean else "rows of random ids"
    lines = [
        f"Precision: {results['args']['precision']}; step: {step}; data: {layout}; "
        f"GPU: {results['environment']['device']}.",
        "",
    ]
    lines += ["| tokens/step | T | model | tokens/s | step ms | peak GiB | MFU | retnet / model |", "|" + "---|" * 8]
    for tokens, T in sorted({(r["tokens_per_step"], r["T"]) for r in rows}):
        group = [r for r in rows if r["tokens_per_step"] == tokens and r["T"] == T]
        ours = next((r for r in group if r["model"] == "retnet" and "tokens_per_s" in r), None)
        for r in group:
            mfu = "–"
            if "tokens_per_s" in r and peak:
                mfu = f"{100 * 6 * r['matmul_params'] * r['tokens_per_s'] / (peak * 1e12):.1f}%"
            ratio = "–"
            if ours and "tokens_per_s" in r and r is not ours:
                ratio = f"{ours['tokens_per_s'] / r['tokens_per_s']:.2f}x"
            lines.append(
                f"| {tokens:,} | {T:,} | {r['model']} | {_fmt(r, 'tokens_per_s', ',.0f')} | "
                f"{_fmt(r, 'step_ms', '.1f')} | {_fmt(r, 'peak_gib', '.1f')} | {mfu} | {ratio} |"
            )
    for r in rows:
        if r.get("error"):
            lines.append(f"\n{r['model']} at T = {r['T']}: {r['error']}")
        if r.get("profile"):
            lines += ["", f"Profile of one {r['model']} step at T = {r['T']} (CUDA time per kernel):", ""]
            lines += ["| kernel | calls | ms | share |", "|---|---|---|---|"]
            for p in r["profile"]:
                lines.append(f"| `{p['kernel']}` | {p['calls']} | {p['ms']:.2f} | {100 * p['share']:.1f}% |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    plot(rows, out, setting=f"precision {results['args']['precision']}, {results['environment']['device']}")
    return text


def plot(rows: list[dict], out: Path, setting: str = "") -> None:
    """Tokens/s and peak memory against T, one line per model and tokens-per-step setting; ``setting`` (precision,
    device) goes into the figure's title."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for model, tokens in sorted({(r["model"], r["tokens_per_step"]) for r in rows}):
        pts = sorted((r["T"], r) for r in rows if r["model"] == model and r["tokens_per_step"] == tokens)
        ok = [(T, r) for T, r in pts if "tokens_per_s" in r]
        if not ok:
            continue
        label = f"{model} ({tokens:,} tokens/step)"
        ax1.plot([T for T, _ in ok], [r["tokens_per_s"] for _, r in ok], marker="o", label=label)
        if ok[0][1]["peak_gib"] is not None:
            ax2.plot([T for T, _ in ok], [r["peak_gib"] for _, r in ok], marker="o", label=label)
    for ax, ylabel in ((ax1, "training throughput (tokens/s)"), (ax2, "peak GPU memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax1.set_title("Training throughput (higher is better)")
    ax2.set_title("Peak training memory (lower is better)")
    for ax in (ax1, ax2):
        if ax.lines:
            ax.legend(fontsize=7, title="model (tokens per optimizer step)", title_fontsize=7)
    fig.suptitle("Training speed and memory against sequence length" + (f" ({setting})" if setting else ""))
    fig.tight_layout()
    fig.savefig(out / "train.png", dpi=120)
    plt.close(fig)


def merge_results(paths: list[str], out: Path) -> dict:
    """One report of the rows of several runs (one GPU, precision mode and step; each run's stamp is kept).

    Raises:
        ValueError: runs of different precision modes, steps (``--trainer-step``), data layouts (``--documents``) or
            devices (their rows would not compare).
    """
    runs = [json.loads(Path(p).read_text()) for p in paths]
    modes = {
        (r["args"]["precision"], r["args"].get("trainer_step", False), r["args"].get("documents", 0),
         r["environment"]["device"])
        for r in runs
    }  # fmt: skip
    if len(modes) != 1:
        raise ValueError(f"cannot merge runs of different precision modes, steps, layouts or devices: {sorted(modes)}")
    merged = {**runs[0], "rows": [row for r in runs for row in r["rows"]], "runs": [r["environment"] for r in runs]}
    (out / "results.json").write_text(json.dumps(merged, indent=2) + "\n")
    print(write_report(merged, out))
    return merged


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the results dict (also written to ``--out``)."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="1.3b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--T", type=int, nargs="+", default=[2048, 8192, 32768])
    p.add_argument("--tokens-per-step", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--precision", choices=("bf16", "mixed"), default="bf16")
    p.add_argument("--activation-checkpointing", choices=("none", "selective", "full"), default="none")
    p.add_argument(
        "--activation-memory-budget", type=float, default=TrainConfig.activation_memory_budget,
        help="share of each compiled block's activations its backward may keep (retnet train's default)",
    )  # fmt: skip
    p.add_argument(
        "--trainer-step", action="store_true",
        help="also clip the gradient norm and read the loss and the norm back every step, as retnet train does",
    )  # fmt: skip
    p.add_argument("--grad-clip", type=float, default=TrainConfig().optim.grad_clip, help="with --trainer-step")
    p.add_argument(
        "--documents", type=int, default=0, metavar="L",
        help="retnet only: packed documents of about L tokens with state resets, the batch moved to the GPU each step",
    )  # fmt: skip
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--profile", choices=MODELS, default=None, help="profile one step of this model at every row")
    p.add_argument("--compile-cpu", action="store_true", help="on CPU, compile with aot_eager (a smoke test)")
    p.add_argument("--row-timeout", type=float, default=900.0, help="seconds one row may take on CUDA")
    p.add_argument("--from-json", nargs="+", default=None, help="merge these results.json files (no timing)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.documents and (args.documents < 2 or set(args.models) != {"retnet"}):
        p.error(
            f"--documents needs a mean length of at least 2 and --models retnet, got {args.documents}, {args.models}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        return merge_results(args.from_json, out)
    device = torch.device(args.device)
    cfg = retnet_config(args.preset)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    datasheet = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    results = {
        "args": vars(args), "environment": environment(device, argv), "datasheet_tflops": datasheet,
        "measured_matmul_tflops": matmul_tflops(device), "rows": [],
    }  # fmt: skip
    for tokens in args.tokens_per_step:
        for T in args.T:
            if tokens < T:
                continue
            for model in args.models:
                row = run_row(model, cfg, T, tokens, args, device)
                results["rows"].append(row)
                (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
                speed, memory = _fmt(row, "tokens_per_s", ",.0f"), _fmt(row, "peak_gib", ".1f")
                print(f"{tokens:>6} tok/step  T {T:>6}  {model:<16} {speed:>10} tok/s  {memory} GiB", flush=True)
    text = write_report(results, out)
    print(text)
    return results


if __name__ == "__main__":
    main()
