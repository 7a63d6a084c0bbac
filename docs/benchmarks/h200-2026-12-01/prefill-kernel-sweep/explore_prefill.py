"""Sweep the chunkwise retention kernels' launches at the prefill shape (B 1, forward with the final state, T 16k
and 64k) and at the training shape (B 1, T 8192, forward + backward); 1.3B head geometry (H 8, K 256, V 432).

    python explore_prefill.py OUT_DIR      # on a GPU, from the repository root on PYTHONPATH; writes sweep.json
"""

import functools
import json
import os
import sys

import torch
from triton.testing import do_bench

from retnet.ops.retention.triton import chunk_retention
from retnet.ops.retention.triton.tuning import retention_tuning

H, K, V = 8, 256, 432
DEVICE = "cuda"
LOG_DECAY = torch.log(1 - 2.0 ** (-5 - torch.arange(H, dtype=torch.float32, device=DEVICE)))


def inputs(B: int, T: int, grad: bool):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q = torch.randn(B, T, H, K, device=DEVICE, generator=g, dtype=torch.bfloat16)
    k = (torch.randn(B, T, H, K, device=DEVICE, generator=g) * K**-0.5).bfloat16()
    v = torch.randn(B, T, H, V, device=DEVICE, generator=g, dtype=torch.bfloat16)
    for x in (q, k, v):
        x.requires_grad_(grad)
    return q, k, v, torch.zeros(B, dtype=torch.long, device=DEVICE)


def forward(q, k, v, position):
    with torch.no_grad():
        return chunk_retention(q, k, v, LOG_DECAY, None, None, position, True, True)


def forward_backward(q, k, v, position, do):
    o, _, _ = chunk_retention(q, k, v, LOG_DECAY, None, None, position, True, False)
    o.backward(do)


def bench(rows: list, case: str, fn, **tuning) -> None:
    row = {"case": case, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in tuning.items()}}
    try:
        with retention_tuning(**tuning):
            fn()
            torch.cuda.synchronize()
            row["ms"] = do_bench(fn, warmup=10, rep=60)
    except Exception as err:  # a launch the kernels refuse is a row, not the end of the sweep
        row["ms"], row["error"] = None, f"{type(err).__name__}: {str(err)[:120]}"
    print(json.dumps(row), flush=True)
    rows.append(row)


def main(out: str) -> None:
    rows: list[dict] = []
    for T in (16384, 65536):
        fn = functools.partial(forward, *inputs(1, T, False))
        bench(rows, f"prefill T{T}", fn)
        for seg in (128, 64, 32, 16):
            bench(rows, f"prefill T{T}", fn, segment_chunks=seg)
        for launch in ((64, 64, 4, 2), (128, 64, 4, 2), (64, 128, 8, 2), (128, 128, 8, 2), (64, 256, 8, 2)):
            for seg in (None, 32):
                bench(rows, f"prefill T{T}", fn, segment_chunks=seg, blocks={"state_fwd": launch})
        for launch in ((64, 64, 4, 2), (128, 64, 4, 2), (64, 128, 8, 2), (128, 128, 8, 2), (256, 64, 8, 2),
                       (64, 256, 8, 2)):  # fmt: skip
            bench(rows, f"prefill T{T}", fn, blocks={"output_fwd": launch})
    q, k, v, position = inputs(1, 8192, True)
    fn = functools.partial(forward_backward, q, k, v, position, torch.randn_like(v))
    bench(rows, "train T8192", fn, keep_states="never")
    for seg in (64, 32, 16):
        bench(rows, "train T8192", fn, keep_states="never", segment_chunks=seg)
    bench(rows, "train T8192", fn, keep_states="always")
    bench(rows, "train T8192", fn, keep_states="always", segment_chunks=32)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
