"""The second sweep of batch-1 matrix-vector products: the reduction split into partial sums, as a copy splits bytes.

``OUT=dir python explore_gemv2.py`` on a GPU, beside ``explore_gemv.py`` (whose harness it uses: one CUDA graph of
96 products over 8 distinct weights per shape). The first sweep split the reduction in at most 4 and combined the
parts with fp32 atomics after zeroing the output, one more kernel per product. Here each program reduces one
``BN × KS`` block and stores its partial sums to an ``(S, N)`` fp32 buffer, with no zeroing: the sum over S is
the consumer's (the kernel that adds the residual or applies the next norm would read the S partials instead of
one vector). Each configuration is timed alone and with ``partials.sum(0)`` after it, an upper bound of what the
consumer pays. Splits up to one block of columns per program (``split = K / BK``). Writes ``sweep2.json`` and
prints the best of each shape.
"""

import itertools
import json
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from explore_gemv import COPIES, SHAPES, graph_time  # noqa: E402


@triton.jit
def _gemv_partials(x_ptr, w_ptr, p_ptr, N, K, KS, BN: tl.constexpr, BK: tl.constexpr):
    # p[pid_k, n] = sum over k in [pid_k·KS, (pid_k+1)·KS) of w[n, k] x[k], for this program's BN rows
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
    tl.store(p_ptr + pid_k * N + rows, tl.sum(acc, axis=1), mask=rows < N)


def partial_gemv(x, w, partials, BN, BK, warps, stages, split):
    """``partials (split, N)`` fp32: the split reduction of ``w @ x``; ``split`` programs per row block."""
    N, K = w.shape
    ks = triton.cdiv(triton.cdiv(K, split), BK) * BK
    _gemv_partials[(triton.cdiv(N, BN), split)](x, w, partials, N, K, ks, BN=BN, BK=BK, num_warps=warps,
                                                num_stages=stages)  # fmt: skip


def sweep_shape(name: str, N: int, K: int, grid, rows: list) -> dict:
    ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K**0.5 for _ in range(COPIES)]
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    nbytes = N * K * 2
    ref = F.linear(x.float(), ws[0].float())[0]  # (N,)
    best = None
    for BN, BK, warps, stages, split in grid:
        split = triton.cdiv(K, BK) if split == "max" else split
        if BN * BK > 16384 or triton.cdiv(K, split) < BK:
            continue
        partials = torch.empty(split, N, device="cuda", dtype=torch.float32)
        cfg = dict(BN=BN, BK=BK, warps=warps, stages=stages, split=split)
        try:
            partial_gemv(x, ws[0], partials, **cfg)
            torch.cuda.synchronize()
            err = (partials.sum(0) - ref).abs().max().item() / ref.abs().max().item()
            alone = graph_time(lambda i, p=partials, cfg=cfg: partial_gemv(x, ws[i], p, **cfg))
            summed = graph_time(lambda i, p=partials, cfg=cfg: (partial_gemv(x, ws[i], p, **cfg), p.sum(0)))
        except Exception as e:  # noqa: BLE001 - a config the compiler refuses is recorded, not fatal
            rows.append({"shape": name, **cfg, "error": repr(e)[:200]})
            continue
        row = {"shape": name, "N": N, "K": K, **cfg, "us": alone, "TBps": nbytes / alone / 1e6, "us_with_sum": summed,
               "rel_err": err}  # fmt: skip
        rows.append(row)
        if best is None or alone < best["us"]:
            best = row
    print(f"{name:8s} partials best {best['us']:7.2f} us {best['TBps']:5.2f} TB/s {best}", flush=True)
    return best


def main():
    out = os.environ.get("OUT", ".")
    torch.manual_seed(0)
    rows, report = [], []
    grid = list(itertools.product((1, 2, 4, 8, 16), (128, 256, 512, 1024), (4, 8), (2, 3), (1, 2, 4, 8, "max")))
    for name, (N, K) in SHAPES.items():
        report.append(sweep_shape(name, N, K, grid, rows))
        torch.cuda.empty_cache()
    meta = {"torch": torch.__version__, "triton": triton.__version__, "gpu": torch.cuda.get_device_name(),
            "argv": sys.argv}  # fmt: skip
    with open(os.path.join(out, "sweep2.json"), "w") as f:
        json.dump({"meta": meta, "best": report, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
