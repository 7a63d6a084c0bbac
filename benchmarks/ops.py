"""Benchmark of the retention op against its peers on one GPU (goals: docs/benchmarks/retention-h200.md).

Times, side by side in one run: our Triton kernels (``retention(..., backend="triton")``), our PyTorch chunkwise
reference, flash-linear-attention's ``chunk_retention`` (when ``fla`` imports), a naive parallel form in bf16
matmuls, and SDPA attention through each backend that accepts the shape; forward and forward+backward, for
cfg A (H=8, K=256, V=512) and cfg B (H=16, K=V=128) at B·T = 65,536 tokens; then the decode step under CUDA
graphs. The two ceilings (copy bandwidth, bf16 matmul rate) are measured in the same run.

    python benchmarks/ops.py --out bench_out [--quick] [--sweep]

Writes ``results.json`` and ``retention.png`` to ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from functools import partial

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retnet.ops.retention import RetentionState, log_decay_schedule, retention  # noqa: E402
from retnet.ops.retention.triton import (  # noqa: E402
    BLOCK_TABLE,
    KERNELS,
    MIN_SEGMENT_CHUNKS,
    current_tuning,
    retention_step,
    retention_tuning,
)
from retnet.utils.environment import environment_stamp  # noqa: E402

CFGS = {"A": (8, 256, 512), "B": (16, 128, 128)}
TOKENS = 65536
CHUNK = 64


def _ms(fn, rep=200):
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


def measure_ceilings():
    """Device-to-device copy bandwidth (bytes read + written) and bf16 matmul rate."""
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device="cuda").normal_()
    y = torch.empty_like(x)
    t = _ms(lambda: y.copy_(x))
    bw = 2 * x.numel() * 2 / (t * 1e-3)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t = _ms(lambda: a @ b)
    return bw, 2 * 8192**3 / (t * 1e-3)


def flops(B, T, H, K, V, backward):
    """Chunkwise-form FLOPs (C = 64): intra-chunk Q Kᵀ and A V, inter-chunk Q S and the state update."""
    fwd = 2 * CHUNK * K + 2 * CHUNK * V + 4 * K * V
    # dA = dO Vᵀ, dQ/dK intra (2), Aᵀ recompute, dV intra; dQ, dK, dV inter, dS scan, state recompute.
    bwd = 2 * CHUNK * V + 4 * CHUNK * K + 2 * CHUNK * K + 2 * CHUNK * V + 10 * K * V
    return B * T * H * (fwd + (bwd if backward else 0))


def min_bytes(B, T, H, K, V, backward, elt=2):
    fwd = B * T * H * (2 * K + 2 * V) * elt  # read q, k, v; write o
    bwd = B * T * H * (2 * K + 2 * V + 2 * K + V) * elt  # read q, k, v, do; write dq, dk, dv
    return fwd + (bwd if backward else 0)


def make_inputs(B, T, H, K, V, grad):
    q = torch.randn(B, T, H, K, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
    k = (torch.randn(B, T, H, K, device="cuda", dtype=torch.bfloat16) * K**-0.5).requires_grad_(grad)
    v = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
    return q, k, v


def peers(H, K, V, T, B):
    """name -> function(q, k, v) returning the output to time (and to backprop through)."""
    lg = log_decay_schedule(H, device="cuda")
    fns = {
        "ours": lambda q, k, v: retention(q, k, v, lg, backend="triton")[0],
        "torch_chunkwise": lambda q, k, v: retention(q, k, v, lg, backend="torch")[0],
    }
    try:
        from fla.ops.retention import chunk_retention

        fns["fla"] = lambda q, k, v: chunk_retention(q, k, v, scale=1.0)[0]
    except ImportError:
        pass
    if B * H * T * T * 2 * 3 <= 48 * 1024**3:  # naive parallel form materialises (B, H, T, T)
        idx = torch.arange(T, device="cuda")
        rel = (idx[:, None] - idx[None, :]).float()
        mask = torch.where(rel >= 0, torch.exp(lg.view(-1, 1, 1) * rel.clamp(min=0)), 0.0).to(torch.bfloat16)

        def naive(q, k, v):
            qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H, D) -> (B, H, T, D)
            return ((qh @ kh.transpose(-1, -2)) * mask) @ vh

        fns["naive_parallel"] = naive
    from torch.nn.attention import SDPBackend, sdpa_kernel

    for name, be in (
        ("sdpa_flash", SDPBackend.FLASH_ATTENTION),
        ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
        ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("sdpa_math", SDPBackend.MATH),
    ):
        if be == SDPBackend.MATH and B * H * T * T * 4 * 3 > 48 * 1024**3:
            continue

        def sdpa(q, k, v, be=be):
            with sdpa_kernel(be):
                return F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
                )

        fns[name] = sdpa
    return fns


def time_op(fn, B, T, H, K, V, backward):
    """Median ms of fn forward (no autograd) or forward+backward on fresh bf16 inputs."""
    return time_and_peak(fn, B, T, H, K, V, backward)[0]


def time_and_peak(fn, B, T, H, K, V, backward):
    """(median ms, peak bytes allocated by one call beyond what was allocated before it, inputs included)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    q, k, v = make_inputs(B, T, H, K, V, backward)
    if not backward:
        with torch.no_grad():
            fn(q, k, v)
            peak = torch.cuda.max_memory_allocated() - base
            return _ms(lambda: fn(q, k, v)), peak
    do = torch.randn_like(fn(q, k, v).detach())

    def step():
        for x in (q, k, v):
            x.grad = None
        fn(q, k, v).backward(do)

    step()
    peak = torch.cuda.max_memory_allocated() - base
    return _ms(step), peak


SLOW_MS = 100.0
"""A peer slower than this at some T is not timed at longer T (its cost only grows with T)."""


def bench_chunkwise(cfgs, Ts, bw, mm, only=None, save=None):
    rows = []
    slow = set()
    for cfg in cfgs:
        H, K, V = CFGS[cfg]
        for T in Ts:
            B = TOKENS // T
            for backward in (False, True):
                floor = max(min_bytes(B, T, H, K, V, backward) / bw, flops(B, T, H, K, V, backward) / mm) * 1e3
                for name, fn in peers(H, K, V, T, B).items():
                    if only and name not in only:
                        continue
                    if name == "torch_chunkwise" and T > (2048 if backward else 8192):
                        continue  # Python loop over chunks: minutes at long T, and nothing new to learn
                    if (cfg, backward, name) in slow:
                        print(f"  {cfg} T={T} {name}: skipped (over {SLOW_MS:.0f} ms at a shorter T)")
                        continue
                    try:
                        ms, peak = time_and_peak(fn, B, T, H, K, V, backward)
                    except Exception as e:  # a backend that rejects the shape or runs out of memory
                        print(f"  {cfg} T={T} {name} {'fwd+bwd' if backward else 'fwd'}: n/a ({type(e).__name__})")
                        torch.cuda.empty_cache()
                        continue
                    rows.append(
                        {
                            "cfg": cfg, "T": T, "B": B, "H": H, "K": K, "V": V,
                            "pass": "fwd+bwd" if backward else "fwd",
                            "op": name, "ms": ms, "floor_ms": floor, "peak_gib": peak / 2**30,
                            "tflops": flops(B, T, H, K, V, backward) / (ms * 1e-3) / 1e12,
                            "tokens_per_s": B * T / (ms * 1e-3),
                        }
                    )  # fmt: skip
                    print(f"  {cfg} T={T:6d} {rows[-1]['pass']:8s} {name:16s} {ms:9.3f} ms  {peak / 2**30:6.2f} GiB")
                    if ms > SLOW_MS:
                        slow.add((cfg, backward, name))
                    if save:
                        save(rows)
                torch.cuda.empty_cache()
    return rows


def _decode_inputs(B, H, K, V):
    state = RetentionState.zeros(B, H, K, V, device="cuda")
    state.S.normal_()
    q, k, v = (torch.randn(B, 1, H, d, device="cuda", dtype=torch.bfloat16) for d in (K, K, V))
    return state, q, k, v


def _time_graphed_step(q, k, v, lg, state, steps=1):
    """ms per decode step, ``steps`` steps captured in one CUDA graph and replayed (compiled on a side stream
    first). One step per graph also pays the graph's launch; a model's decode graph holds every layer's step."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        retention_step(q, k, v, lg, state)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(steps):
            retention_step(q, k, v, lg, state)
    return _ms(g.replay, rep=500) / steps


GRAPH_STEPS = 16
"""Decode steps per CUDA graph in the decode benchmark's second timing."""


def _decode_bytes(B, H, K, V):
    return B * H * (K * V * 4 * 2 + K * 4 * 2 + (2 * K + 2 * V) * 2)


def _graphed_bw_frac(q, k, v, lg, state, bw):
    """Fraction of copy bandwidth ``bw`` of one decode step, ``GRAPH_STEPS`` steps per CUDA graph."""
    B, _, H, K = q.shape
    ms = _time_graphed_step(q, k, v, lg, state, steps=GRAPH_STEPS)
    return _decode_bytes(B, H, K, v.shape[-1]) / (ms * 1e-3) / bw


def sweep_decode(bw, batches=(1, 16, 128), launches=((16, 4), (32, 4), (64, 4), (32, 2), (32, 8), (64, 8), (128, 8))):
    """Time the decode step's (BV, num_warps) choices at cfg A (``GRAPH_STEPS`` one-token steps per CUDA
    graph); returns the fraction of copy bandwidth of each."""
    H, K, V = CFGS["A"]
    lg = log_decay_schedule(H, device="cuda")
    out = {}
    for B in batches:
        state, q, k, v = _decode_inputs(B, H, K, V)
        out[str(B)] = time_variants(
            f"decode sweep B={B:4d} (BV, warps):", {str(c): {"step_launch": c} for c in launches},
            partial(_graphed_bw_frac, q, k, v, lg, state, bw), higher_is_better=True, show="{:.1%}",
        )  # fmt: skip
    return out


def bench_decode(bw, batches=(1, 16, 128)):
    H, K, V = CFGS["A"]
    lg = log_decay_schedule(H, device="cuda")
    rows = []
    for B in batches:
        state, q, k, v = _decode_inputs(B, H, K, V)
        ms = _time_graphed_step(q, k, v, lg, state)
        ms_n = _time_graphed_step(q, k, v, lg, state, steps=GRAPH_STEPS)
        nbytes = _decode_bytes(B, H, K, V)
        row = {"op": "ours_step", "B": B, "ms": ms, "bytes": nbytes, "bw_frac": nbytes / (ms * 1e-3) / bw}
        row |= {"graph_steps": GRAPH_STEPS, "ms_per_step_in_graph": ms_n}
        row["bw_frac_in_graph"] = nbytes / (ms_n * 1e-3) / bw
        try:
            from fla.ops.retention import fused_recurrent_retention

            S0 = state.S.clone()
            fla_fn = lambda q=q, k=k, v=v, S0=S0: fused_recurrent_retention(
                q, k, v, scale=1.0, initial_state=S0, output_final_state=True
            )
            fla_fn()
            row["fla_ms"] = _ms(fla_fn, rep=500)
        except Exception as e:
            print(f"  decode B={B} fla: n/a ({type(e).__name__})")
        rows.append(row)
        print(f"  decode B={B:4d} ours {ms * 1e3:8.1f} us  {row['bw_frac'] * 100:5.1f}% of copy bw  "
              f"({GRAPH_STEPS} per graph: {ms_n * 1e3:6.1f} us, {row['bw_frac_in_graph'] * 100:5.1f}%)  "
              f"fla {row.get('fla_ms', float('nan')) * 1e3:8.1f} us")  # fmt: skip
    return rows


SWEEP_VARIANTS: dict[str, list[tuple[int, int, int, int]]] = {
    # (BK, BV, num_warps, num_stages) per kernel; the set that chose the kernels' BLOCK_TABLE (docs/benchmarks).
    "state_fwd": [(64, 64, 4, 3), (64, 128, 4, 2), (64, 128, 4, 3), (128, 128, 4, 2), (128, 128, 8, 2),
                  (128, 128, 8, 3), (64, 256, 8, 2), (128, 64, 4, 3)],
    "output_fwd": [(64, 64, 4, 2), (64, 128, 4, 2), (64, 128, 4, 3), (128, 128, 8, 2), (128, 64, 4, 2),
                   (64, 256, 8, 2), (128, 128, 4, 2)],
    "state_bwd": [(64, 64, 4, 3), (64, 128, 8, 3), (128, 128, 8, 2), (128, 128, 4, 2), (64, 128, 4, 3)],
    "dqk_bwd": [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 4, 2), (128, 64, 8, 2), (128, 64, 8, 3), (64, 128, 4, 2),
                (128, 128, 8, 2)],
    "dv_bwd": [(64, 64, 4, 3), (64, 128, 4, 2), (64, 128, 4, 3), (128, 128, 8, 2), (128, 64, 4, 3), (64, 256, 8, 2)],
}  # fmt: skip
SWEEP_KERNELS = KERNELS


def time_variants(label, variants, measure, higher_is_better=False, show="{:.3f}"):
    """Run ``measure()`` once per variant, each inside ``retention_tuning(**variant)``; prints them and returns
    ``{"results": {name: value or "n/a Error"}, "best": name}``.

    Args:
        variants: ``{name: overrides}``, each a dict of ``KernelTuning`` fields (``{}``: the library's choice); a
            variant whose launch fails (out of registers or shared memory) is recorded as "n/a" and skipped.
        higher_is_better: pick the largest value (a bandwidth fraction) instead of the smallest (ms).
        show: format of each value in the printed line.
    """
    res = {}
    for name, overrides in variants.items():
        try:
            with retention_tuning(**overrides):
                res[name] = measure()
        except Exception as e:
            res[name] = f"n/a {type(e).__name__}"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    ok = {k: v for k, v in res.items() if isinstance(v, float)}
    best = (max if higher_is_better else min)(ok, key=ok.get) if ok else None
    print(f"  {label} best {best}  " + "  ".join(
        f"{k}:{show.format(v)}" if isinstance(v, float) else f"{k}:{v}" for k, v in res.items()))  # fmt: skip
    return {"results": res, "best": best}


def sweep(cfgs, kernels=SWEEP_KERNELS, T=8192, tokens=TOKENS):
    """Time launch configurations per kernel (others at their table value) at one T and B·T = ``tokens``; returns
    every timing.

    Forward kernels are timed forward only, backward kernels forward+backward (their share is the difference).
    """
    out = {}
    for cfg in cfgs:
        H, K, V = CFGS[cfg]
        B = max(1, tokens // T)
        lg = log_decay_schedule(H, device="cuda")
        fn = lambda q, k, v, lg=lg: retention(q, k, v, lg, backend="triton")[0]
        shape = (B, T, H, K, V)
        for kern in kernels:
            backward = kern not in ("state_fwd", "output_fwd")
            out[f"{cfg}/{kern}"] = time_variants(
                f"sweep {cfg} {kern} (BK,BV,w,st)", {str(c): {"blocks": {kern: c}} for c in SWEEP_VARIANTS[kern]},
                partial(time_op, fn, *shape, backward),
            )  # fmt: skip
    return out


SEGMENT_SWEEP = {"A": (32768, 65536), "B": (8192, 32768, 65536)}
"""T per cfg at which ``--sweep-segments`` times segment counts (where the scans have few programs)."""


def sweep_segments(cfgs, counts=(1, 2, 3, 4, 6, 8, 12, 16), tokens=TOKENS, lengths=None):
    """Time forward and forward+backward with the state scans cut into each of ``counts`` segments (both
    directions; ``retention_tuning(segment_chunks=...)``) against the planner's own choice, at B·T = ``tokens`` and
    each of ``lengths`` (default ``SEGMENT_SWEEP[cfg]``); returns every timing."""
    out = {}
    for cfg in cfgs:
        H, K, V = CFGS[cfg]
        lg = log_decay_schedule(H, device="cuda")
        fn = lambda q, k, v, lg=lg: retention(q, k, v, lg, backend="triton")[0]
        for T in lengths or SEGMENT_SWEEP[cfg]:
            B, NT = max(1, tokens // T), triton.cdiv(T, CHUNK)
            for backward in (False, True):
                chunks = {"planner": {}}
                chunks |= {
                    str(n): {"segment_chunks": triton.cdiv(NT, n)} for n in counts if NT // n >= MIN_SEGMENT_CHUNKS
                }
                label = f"{cfg} T={T} {'fwd+bwd' if backward else 'fwd'}"
                out[label] = time_variants(
                    f"segments {label}", chunks, partial(time_op, fn, B, T, H, K, V, backward)
                )  # fmt: skip
    return out


def profile_kernels(cfgs, T=8192, tokens=TOKENS):
    """CUDA time per kernel of our forward+backward (torch.profiler) at B·T = ``tokens``, averaged over 5 steps."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for cfg in cfgs:
        H, K, V = CFGS[cfg]
        B = max(1, tokens // T)
        lg = log_decay_schedule(H, device="cuda")
        q, k, v = make_inputs(B, T, H, K, V, True)
        do = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16)

        def step(q=q, k=k, v=v, lg=lg, do=do):
            for x in (q, k, v):
                x.grad = None  # no gradient accumulation kernels in the profile
            retention(q, k, v, lg, backend="triton")[0].backward(do)

        step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        per = {}
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
            if t:
                per[e.key] = t / 5 / 1e3  # ms per step
        per = dict(sorted(per.items(), key=lambda kv: -kv[1])[:12])
        print(f"  profile {cfg} T={T} fwd+bwd (ms per step): " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()))
        out[cfg] = per
    return out


def env_stamp():
    """The shared environment stamp of the CUDA device, with flash-linear-attention's version and the tuning tables."""
    try:
        import fla

        fla_version = getattr(fla, "__version__", "unknown")
    except ImportError:
        fla_version = None
    return {**environment_stamp("cuda"), "fla": fla_version, "tables": _tables()}


def _tables():
    """The kernels' launch table and keep-states policy in effect (``retention_tuning`` overrides included)."""
    tuning = current_tuning()
    return {"blocks": {**BLOCK_TABLE, **dict(tuning.blocks)}, "keep_states": tuning.keep_states}


def print_table(rows, bw, mm):
    print(f"\nceilings: copy {bw / 1e12:.2f} TB/s, bf16 matmul {mm / 1e12:.0f} TFLOP/s")
    by = {}
    for r in rows:
        by.setdefault((r["cfg"], r["T"], r["pass"]), {})[r["op"]] = r
    hdr = (
        f"{'cfg':3s} {'T':>6s} {'pass':8s} {'ours ms':>8s} {'TFLOP/s':>7s} {'Mtok/s':>7s} {'floor':>7s} {'x floor':>7s}"
    )
    hdr += f" {'fla ms':>7s} {'fla/ours':>8s} {'sdpa best':>16s} {'sdpa/ours':>9s} {'naive/ours':>10s}"
    hdr += f" {'GiB ours':>8s} {'GiB fla':>7s}"
    print(hdr)
    for (cfg, T, p), ops in by.items():
        o = ops.get("ours")
        if o is None:
            continue
        sd = {k: v["ms"] for k, v in ops.items() if k.startswith("sdpa")}
        sb = min(sd, key=sd.get) if sd else None
        fla = ops.get("fla", {}).get("ms", math.nan)
        nv = ops.get("naive_parallel", {}).get("ms", math.nan)
        print(
            f"{cfg:3s} {T:6d} {p:8s} {o['ms']:8.3f} {o['tflops']:7.0f} {o['tokens_per_s'] / 1e6:7.1f} "
            f"{o['floor_ms']:7.3f} {o['ms'] / o['floor_ms']:7.2f} {fla:7.3f} {fla / o['ms']:8.2f} "
            f"{(sb or '-')[5:] + ' ' + (f'{sd[sb]:.3f}' if sb else ''):>16s} "
            f"{(sd[sb] / o['ms'] if sb else math.nan):9.2f} {nv / o['ms']:10.2f}"
            f" {o.get('peak_gib', math.nan):8.2f} {ops.get('fla', {}).get('peak_gib', math.nan):7.2f}"
        )


_OP_ORDER = (
    "ours", "fla", "torch_chunkwise", "naive_parallel", "sdpa_flash", "sdpa_cudnn", "sdpa_efficient", "sdpa_math",
)  # fmt: skip


def _op_color(op):
    """One colour per op in every panel."""
    return f"C{_OP_ORDER.index(op) if op in _OP_ORDER else len(_OP_ORDER)}"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    passes = {"fwd": "forward", "fwd+bwd": "forward + backward"}
    for ax, (cfg, p) in zip(axes.flat, [("A", "fwd"), ("A", "fwd+bwd"), ("B", "fwd"), ("B", "fwd+bwd")]):
        sel = [r for r in rows if r["cfg"] == cfg and r["pass"] == p]
        if not sel:  # a run of one cfg or pass
            ax.set_visible(False)
            continue
        for op in sorted({r["op"] for r in sel}):
            pts = sorted((r["T"], r["ms"]) for r in sel if r["op"] == op)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=op, color=_op_color(op))
        fl = sorted({(r["T"], r["floor_ms"]) for r in sel})
        ax.plot([x for x, _ in fl], [y for _, y in fl], "k--", label="floor (bytes / bandwidth or FLOPs / peak)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        H, K, V = CFGS[cfg]
        ax.set_title(f"{passes.get(p, p)}: {H} heads, K = {K}, V = {V}")
        ax.set_xlabel("sequence length T (tokens; batch B = 65,536 / T)")
        ax.set_ylabel("time per call (ms, median)")
        ax.legend(fontsize=7, title="implementation", title_fontsize=7)
    fig.suptitle(f"Retention op time in bf16 on one GPU, B·T = {TOKENS:,} tokens per call (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def replot(paths, out):
    """Merge the chunkwise rows of several runs (keyed by cfg, T, pass, op; later files win), print, plot."""
    merged, runs = {}, []
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        runs.append({"path": path, "env": res.get("env"), "command": res.get("command")})
        for row in res.get("chunkwise", []):
            merged[(row["cfg"], row["T"], row["pass"], row["op"])] = row
        bw, mm = res["copy_bw_Bps"], res["matmul_flops"]
    rows = sorted(merged.values(), key=lambda r: (r["cfg"], r["T"], r["pass"], r["op"]))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"runs": runs, "copy_bw_Bps": bw, "matmul_flops": mm, "chunkwise": rows}, f, indent=1)
    plot(rows, os.path.join(out, "retention.png"))
    print_table(rows, bw, mm)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--cfg", nargs="+", default=["A", "B"])
    ap.add_argument("--T", nargs="+", type=int, default=[2048, 4096, 8192, 16384, 32768, 65536])
    ap.add_argument("--ops", nargs="+", default=None, help="time only these ops (e.g. ours fla sdpa_cudnn)")
    ap.add_argument(
        "--sweep", nargs="*", choices=SWEEP_KERNELS, default=None,
        help="time launch variants of these kernels first (all when none is named; at --sweep-T)",
    )  # fmt: skip
    ap.add_argument("--profile", action="store_true", help="per-kernel CUDA times of ours at T = --sweep-T")
    ap.add_argument("--sweep-T", type=int, default=8192, help="T of --sweep, --profile (and --sweep-segments)")
    ap.add_argument(
        "--tokens", type=int, default=TOKENS,
        help="B·T of --sweep, --sweep-segments and --profile (a training step's tokens; the table keeps 65,536)",
    )  # fmt: skip
    ap.add_argument("--no-decode", action="store_true", help="skip the decode-step benchmark")
    ap.add_argument("--no-chunkwise", action="store_true", help="skip the chunkwise benchmark")
    ap.add_argument(
        "--from-json", nargs="+", default=None, metavar="RESULTS",
        help="no GPU: merge these results.json files (later rows win) and redo the table and the plot",
    )  # fmt: skip
    ap.add_argument("--sweep-decode", action="store_true", help="time the decode step's launch choices first")
    ap.add_argument(
        "--sweep-segments", action="store_true",
        help="time segment counts of the state scans first (long T, few programs: SEGMENT_SWEEP)",
    )  # fmt: skip
    ap.add_argument(
        "--keep-states", choices=("auto", "always", "never"), default=None,
        help="whether the backward reuses the forward's per-chunk states (default: the library's policy)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.from_json:
        replot(args.from_json, args.out)
        return
    with retention_tuning(**({"keep_states": args.keep_states} if args.keep_states else {})):
        run(args)


def run(args):
    """The GPU part of :func:`main`: ceilings, sweeps, profile, decode and chunkwise benchmarks, as ``args`` asks."""
    bw, mm = measure_ceilings()
    print(f"ceilings: copy {bw / 1e12:.2f} TB/s, bf16 matmul {mm / 1e12:.0f} TFLOP/s")
    result = {"env": env_stamp(), "copy_bw_Bps": bw, "matmul_flops": mm, "command": " ".join(sys.argv)}
    path = os.path.join(args.out, "results.json")

    def save(rows=None):
        if rows is not None:
            result["chunkwise"] = rows
        result["env"]["tables"] = _tables()
        with open(path, "w") as f:
            json.dump(result, f, indent=1)

    if args.sweep is not None:
        result["sweep"] = sweep(args.cfg, args.sweep or SWEEP_KERNELS, args.sweep_T, args.tokens)
        save()
    if args.sweep_decode:
        result["decode_sweep"] = sweep_decode(bw)
        save()
    if args.sweep_segments:
        lengths = None if args.sweep_T == 8192 else [args.sweep_T]
        result["segment_sweep"] = sweep_segments(args.cfg, tokens=args.tokens, lengths=lengths)
        save()
    if args.profile:
        result["profile"] = profile_kernels(args.cfg, args.sweep_T, args.tokens)
        save()
    if not args.no_decode:
        result["decode"] = bench_decode(bw)
        save()
    if not args.no_chunkwise:
        rows = bench_chunkwise(args.cfg, args.T, bw, mm, only=args.ops, save=save)
        save(rows)
        plot(rows, os.path.join(args.out, "retention.png"))
        print_table(rows, bw, mm)


if __name__ == "__main__":
    main()
