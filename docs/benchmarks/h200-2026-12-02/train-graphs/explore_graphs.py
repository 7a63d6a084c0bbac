"""retnet's training step (benchmarks/train.py's build and timing) under compiler variants, one process per row.

``OUT=dir python explore_graphs.py T TOKENS VARIANT [VARIANT ...]`` from the repository root. A VARIANT joins
with "+" any of ``graphs`` (inductor's CUDA graphs for every compiled block, forward and backward, with a step
boundary marked before each step), ``cdt`` (coordinate-descent tuning of the generated kernels) and ``prof``
(a profile of one step: GPU kernel time against the step's wall time); ``base`` is the path as it is. Each row
is appended to ``rows.jsonl``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))


def kernel_ms(step) -> float:
    """GPU kernel time of one step in ms (every kernel, from the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time_total for e in events) / 1e3


def row(T: int, tokens: int, variant: str) -> dict:
    import train as btrain

    parts = set(variant.split("+"))
    if "graphs" in parts:
        torch._inductor.config.triton.cudagraphs = True
    if "cdt" in parts:
        torch._inductor.config.coordinate_descent_tuning = True
    args = argparse.Namespace(
        activation_memory_budget=0.7, precision="bf16", activation_checkpointing="none", compile_cpu=False
    )
    device = torch.device("cuda")
    cfg = btrain.retnet_config("1.3b")
    model, loss_fn = btrain.build("retnet", cfg, args, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), fused=True)
    ids = torch.randint(0, cfg.vocab_size, (max(1, tokens // T), T), device=device)

    def step():
        if "graphs" in parts:
            torch.compiler.cudagraph_mark_step_begin()
        loss = loss_fn(ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    losses = [float(step()) for _ in range(3)]
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(8):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / 8 * 1e3
    out = {
        "variant": variant, "T": T, "tokens_per_step": ids.numel(), "step_ms": ms,
        "tokens_per_s": ids.numel() / ms * 1e3, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "warmup_s": warmup_s, "first_losses": losses,
    }  # fmt: skip
    if "prof" in parts:
        out["kernel_ms"] = kernel_ms(step)
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--row":
        print("ROW " + json.dumps(row(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])), flush=True)
        sys.exit(0)
    T, tokens = int(sys.argv[1]), int(sys.argv[2])
    for variant in sys.argv[3:]:
        env = dict(os.environ)
        if "graphs" in variant:  # inductor says here why it skips a graph
            env["TORCH_LOGS"] = "perf_hints"
        proc = subprocess.run(
            [sys.executable, __file__, "--row", str(T), str(tokens), variant],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        lines = [x for x in proc.stdout.splitlines() if x.startswith("ROW ")]
        result = json.loads(lines[-1][4:]) if lines else {"variant": variant, "T": T, "failed": proc.stderr[-3000:]}
        hints = [x for x in proc.stderr.splitlines() if "cudagraph" in x.lower()]
        result["cudagraph_hints"] = hints[:20]
        print(json.dumps(result), flush=True)
        with open(os.path.join(os.environ["OUT"], "rows.jsonl"), "a") as f:
            f.write(json.dumps(result) + "\n")
