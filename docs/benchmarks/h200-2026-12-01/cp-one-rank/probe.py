"""Where the one-rank context-parallel path spends its time (T = 32,768, bf16, H 8, K 256, V 512).

Run from the repository root on one GPU: ``python docs/benchmarks/h200-2026-12-01/cp-one-rank/probe.py``.
Prints milliseconds of forward + backward for the plain op, the split path, and the slice summary alone, with
float32 matrix products in full precision and in TF32.
"""

import os

import torch
import torch.distributed as dist
from triton.testing import do_bench

from retnet.ops.retention import log_decay_schedule, retention
from retnet.ops.retention.context_parallel import ContextParallelGroup, _slice_summary

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
dist.init_process_group("nccl", rank=0, world_size=1)
T, H, K, V = 32768, 8, 256, 512
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (
    torch.randn(1, T, H, d, device="cuda", generator=g, dtype=torch.bfloat16).requires_grad_() for d in (K, K, V)
)
lg = log_decay_schedule(H, "torchscale").cuda()
w = torch.randn(1, T, H, V, device="cuda", dtype=torch.bfloat16)
cp = ContextParallelGroup.balanced(T, dist.group.WORLD)
pos = torch.arange(T, device="cuda")[None]


def plain():
    (retention(q, k, v, lg)[0] * w).sum().backward()


def split():
    (retention(q, k, v, lg, cp_group=cp)[0] * w).sum().backward()


def summary():
    _slice_summary(k, v, lg, pos, 0).sum().backward()


def summary_forward():
    with torch.no_grad():
        _slice_summary(k, v, lg, pos, 0)


for precision in ("highest", "high"):
    torch.set_float32_matmul_precision(precision)
    cases = (("plain", plain), ("split", split), ("summary", summary), ("summary forward", summary_forward))
    print(precision, {name: round(do_bench(f, warmup=5, rep=50), 3) for name, f in cases})
dist.destroy_process_group()
