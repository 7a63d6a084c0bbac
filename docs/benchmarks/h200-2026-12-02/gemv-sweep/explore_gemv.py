"""Batch-1 matrix-vector products of the 1.3B decode step: how close to the copy bandwidth can one kernel get?

``OUT=dir python explore_gemv.py`` on a GPU. For each weight shape of a 1.3B layer (stacked q/k/v/g, the GLU's
stacked input matrices, the output projection and the FFN's second matrix; bf16, ``(N, K)`` row-major as
``nn.Linear`` holds them) it times, inside one CUDA graph of 96 back-to-back products over 8 distinct weights (so
that L2 serves none of them, as in a 24-layer step): cuBLAS (``F.linear``), inductor's reduction with
coordinate-descent tuning, a device copy of the same bytes, and a Triton kernel over a grid of launch parameters
(rows per program, columns per load, warps, pipeline stages, split of the reduction with fp32 atomics). Writes
``sweep.json`` and prints a table of the best of each.
"""

import itertools
import json
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

SHAPES = {"o_proj": (2048, 3456), "qkvg": (11008, 2048), "glu_in": (6912, 2048)}  # FFN output: o_proj's shape
COPIES = 8  # distinct weights per shape: 8 × 14-45 MB, beyond the 50 MB L2
CALLS = 96  # products per graph
REPLAYS = 10


@triton.jit
def _gemv(x_ptr, w_ptr, y_ptr, N, K, KS, BN: tl.constexpr, BK: tl.constexpr, SPLIT: tl.constexpr):
    # y[n] (+)= sum_k w[n, k] x[k] over this program's rows and its slice [pid_k·KS, (pid_k+1)·KS) of k
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    rows = pid_n * BN + tl.arange(0, BN)
    acc = tl.zeros((BN, BK), tl.float32)
    k_start = pid_k * KS
    for k0 in range(0, KS, BK):
        cols = k_start + k0 + tl.arange(0, BK)
        col_ok = cols < K
        x = tl.load(x_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=(rows[:, None] < N) & col_ok[None, :], other=0.0)
        acc += w.to(tl.float32) * x[None, :]
    y = tl.sum(acc, axis=1)
    if SPLIT == 1:
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=rows < N)
    else:
        tl.atomic_add(y_ptr + rows, y, mask=rows < N, sem="relaxed")


def triton_gemv(x, w, y, BN, BK, warps, stages, split):
    N, K = w.shape
    ks = triton.cdiv(triton.cdiv(K, split), BK) * BK
    if split > 1:
        y.zero_()
    _gemv[(triton.cdiv(N, BN), split)](x, w, y, N, K, ks, BN=BN, BK=BK, SPLIT=split, num_warps=warps,
                                       num_stages=stages)  # fmt: skip


def graph_time(fn) -> float:
    """µs per call of ``fn(i)`` (i: which weight copy), CALLS calls captured in one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(CALLS):
            fn(i % COPIES)
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(REPLAYS):
        start.record()
        g.replay()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) * 1e3 / CALLS)
    return best


def sweep_shape(name: str, N: int, K: int, grid, inductor_mm, rows: list) -> dict:
    """Time the peers and every launch configuration at one weight shape; append rows; return the best Triton row."""
    ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K**0.5 for _ in range(COPIES)]
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    src = [torch.empty(N * K, device="cuda", dtype=torch.bfloat16) for _ in range(COPIES)]
    dst = torch.empty(N * K, device="cuda", dtype=torch.bfloat16)
    nbytes = N * K * 2
    ref = F.linear(x.float(), ws[0].float())  # (1, N)
    yb = torch.empty(1, N, device="cuda", dtype=torch.bfloat16)
    y32 = torch.empty(1, N, device="cuda", dtype=torch.float32)
    peers = {
        "copy": lambda i: dst.copy_(src[i]),
        "cublas": lambda i: torch.mm(x, ws[i].t(), out=yb),
        "inductor-cdt": lambda i: yb.copy_(inductor_mm(x, ws[i])),
    }
    for peer, fn in peers.items():
        us = graph_time(fn)
        rows.append({"shape": name, "N": N, "K": K, "kernel": peer, "us": us, "TBps": nbytes / us / 1e6})
        print(f"{name:8s} {peer:14s} {us:7.2f} us {nbytes / us / 1e6:5.2f} TB/s", flush=True)
    best = None
    for BN, BK, warps, stages, split in grid:
        if BN * BK > 16384 or K % split or (K // split) < BK:
            continue
        y = y32 if split > 1 else yb
        cfg = dict(BN=BN, BK=BK, warps=warps, stages=stages, split=split)
        try:
            triton_gemv(x, ws[0], y, **cfg)
            torch.cuda.synchronize()
            err = (y.float() - ref).abs().max().item() / ref.abs().max().item()
            us = graph_time(lambda i, y=y, cfg=cfg: triton_gemv(x, ws[i], y, **cfg))
        except Exception as e:  # noqa: BLE001 - a config the compiler refuses is recorded, not fatal
            rows.append({"shape": name, "kernel": "triton", **cfg, "error": repr(e)[:200]})
            continue
        row = {"shape": name, "N": N, "K": K, "kernel": "triton", **cfg, "us": us, "TBps": nbytes / us / 1e6,
               "rel_err": err}  # fmt: skip
        rows.append(row)
        if best is None or us < best["us"]:
            best = row
    print(f"{name:8s} triton best    {best['us']:7.2f} us {best['TBps']:5.2f} TB/s {best}", flush=True)
    return best


def main():
    out = os.environ.get("OUT", ".")
    torch.manual_seed(0)
    rows, report = [], []
    inductor_mm = torch.compile(lambda x, w: F.linear(x, w), dynamic=False,
                                options={"coordinate_descent_tuning": True})  # fmt: skip
    grid = list(itertools.product((8, 16, 32), (256, 512), (4, 8), (2, 3, 4), (1, 2, 4)))
    for name, (N, K) in SHAPES.items():
        report.append(sweep_shape(name, N, K, grid, inductor_mm, rows))
        torch.cuda.empty_cache()
    meta = {"torch": torch.__version__, "triton": triton.__version__, "gpu": torch.cuda.get_device_name(),
            "calls_per_graph": CALLS, "copies": COPIES, "argv": sys.argv}  # fmt: skip
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"meta": meta, "best": report, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
