"""Retention kernels at the training step's shapes: chunk 64 vs 128 (module constant patched), keep_states; profile.

Run from the repository root on the GPU machine with OUT set: ``OUT=dir python explore_kernels.py``."""

import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "benchmarks"))
import ops as bops  # noqa: E402  (benchmarks/ops.py)

from retnet.ops.retention import log_decay_schedule, retention  # noqa: E402
from retnet.ops.retention.triton import retention_tuning  # noqa: E402

tn = importlib.import_module("retnet.ops.retention.triton.tuning")

out = {}
H, K, V = 8, 256, 512
lg = log_decay_schedule(H, device="cuda")
fn = lambda q, k, v: retention(q, k, v, lg, backend="triton")[0]


def grads(B, T):
    torch.manual_seed(0)
    q, k, v = bops.make_inputs(B, T, H, K, V, True)
    o = fn(q, k, v)
    do = torch.randn_like(o)
    o.backward(do)
    return [o.detach().float()] + [x.grad.float() for x in (q, k, v)]


BLOCKSETS = {
    "table": {},
    "all64x64w4": {"blocks": {k: (64, 64, 4, 2) for k in tn.KERNELS}},
    "all64x64w8": {"blocks": {k: (64, 64, 8, 2) for k in tn.KERNELS}},
    "all64x128w8": {"blocks": {k: (64, 128, 8, 2) for k in tn.KERNELS}},
    "mixA": {
        "blocks": {
            "state_fwd": (64, 128, 4, 2),
            "output_fwd": (64, 64, 8, 2),
            "state_bwd": (64, 128, 4, 3),
            "dqk_bwd": (64, 64, 8, 2),
            "dv_bwd": (64, 64, 8, 2),
        }
    },
}
for B, T in [(1, 8192), (4, 2048), (1, 32768)]:
    for chunk in (64, 128):
        tn.CHUNK = chunk
        ref = None
        for name, tuning in BLOCKSETS.items():
            if chunk == 64 and name != "table":
                continue
            for keep in ("auto", "always") if name == "table" else ("auto",):
                key = f"B{B} T{T} chunk{chunk} {name} keep={keep}"
                try:
                    with retention_tuning(keep_states=keep, **tuning):
                        f = bops.time_op(fn, B, T, H, K, V, False)
                        fb, peak = bops.time_and_peak(fn, B, T, H, K, V, True)
                        g = grads(B, T)
                    out[key] = {"fwd_ms": f, "fwdbwd_ms": fb, "peak_gib": peak / 2**30}
                    if chunk == 64 and keep == "auto":
                        base = g
                    else:
                        out[key]["maxrel"] = [float((a - b).abs().max() / b.abs().max()) for a, b in zip(g, base)]
                except Exception as e:
                    out[key] = f"n/a {type(e).__name__}: {str(e)[:200]}"
                print(key, out[key], flush=True)
                json.dump(out, open(os.path.join(os.environ["OUT"], "kernels.json"), "w"), indent=1)
                torch.cuda.empty_cache()
    tn.CHUNK = 64
for chunk in (64, 128):
    tn.CHUNK = chunk
    print("profile chunk", chunk, flush=True)
    out[f"profile chunk{chunk}"] = bops.profile_kernels(["A"], T=8192, tokens=8192)
tn.CHUNK = 64
json.dump(out, open(os.path.join(os.environ["OUT"], "kernels.json"), "w"), indent=1)
