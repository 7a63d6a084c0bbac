"""Registers, spills and shared memory of the retention kernels on sm90, compiled on a machine without a GPU.

The host wrappers run on CPU tensors with every kernel launch intercepted, so each kernel is compiled with
exactly the block sizes, warps and stages the GPU would get for that shape; Triton then compiles it for
sm90 (Hopper) with its bundled ptxas, and the cubin's resource usage is read with its bundled cuobjdump.
Spilled registers (a non-zero stack) are the first thing that makes a kernel slow; this shows them
without device time. Each row also carries a fingerprint of the kernel's machine code (its SASS instructions
without addresses), so a refactor can be shown to leave the compiled kernels unchanged.

    python benchmarks/kernel_resources.py [--cfg A B] [--dtype bf16] [--kernels output_fwd dqk_bwd] [--out DIR]

Prints a table and writes ``kernel_resources.json`` to ``--out``. Run with ``TRITON_INTERPRET`` unset.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retnet.ops.retention.triton import backward, forward, step  # noqa: E402
from retnet.ops.retention.triton.tuning import KernelTuning, chunk_len, chunk_plan  # noqa: E402

CFGS = {"A": (8, 256, 512), "B": (16, 128, 128), "torchscale-1.3b": (8, 256, 432)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.int64: "i64"}
KERNELS = {
    "state_fwd": (forward, "_state_fwd_kernel"),
    "segment_state": (forward, "_segment_state_kernel"),
    "output_fwd": (forward, "_output_fwd_kernel"),
    "state_bwd": (backward, "_state_bwd_kernel"),
    "dstate_segment": (backward, "_dstate_segment_kernel"),
    "dqk_bwd": (backward, "_dqk_bwd_kernel"),
    "dv_bwd": (backward, "_dv_bwd_kernel"),
    "decode_step": (step, "_recurrent_step_kernel"),
    "decode_finish": (step, "_step_finish_kernel"),
}
SM90 = GPUTarget("cuda", 90, 32)


class _LaunchRecorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records instead of running."""

    def __init__(self, fn):
        self.fn = fn
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, num_warps=4, num_stages=3, **kwargs):
            self.launches.append((args, kwargs, num_warps, num_stages))

        return launch


def _capture(cfg: str, dtype: torch.dtype, T: int = 1024) -> dict[str, tuple]:
    """Run forward, backward and one decode step on CPU tensors with every launch recorded (first per kernel;
    the state scan's first launch is the forward's, with the key sums stored). A second run of 2T tokens cut
    into two segments records the segment pre-passes."""
    H, K, V = CFGS[cfg]
    B = 1
    recorders = {}
    saved = {}
    for name, (module, attr) in KERNELS.items():
        saved[name] = getattr(module, attr)
        recorders[name] = _LaunchRecorder(saved[name])
        setattr(module, attr, recorders[name])
    try:
        for length, segment_chunks in ((T, None), (2 * T, T // chunk_len(T))):
            plan = chunk_plan(K, V, dtype, KernelTuning(segment_chunks=segment_chunks))
            q, k = (torch.zeros(B, length, H, K, dtype=dtype) for _ in range(2))
            v = torch.zeros(B, length, H, V, dtype=dtype)
            lg = torch.full((H,), -0.01)
            pos = torch.zeros(B, dtype=torch.long)
            o, rden, _, _, _ = forward.chunk_retention_fwd(q, k, v, lg, None, None, pos, True, False, plan)
            backward.chunk_retention_bwd(q, k, v, lg, None, pos, rden, o, None, None, plan)
        S = torch.zeros(B, H, K, V)
        z = torch.zeros(B, H, K)
        step._step_op(q[:, :1], k[:, :1], v[:, :1], lg, S, z, pos, True, KernelTuning().to_ints())
    finally:
        for name, (module, attr) in KERNELS.items():
            setattr(module, attr, saved[name])
    return {name: (rec.fn, rec.launches[0]) for name, rec in recorders.items() if rec.launches}


def _signature(fn, args, kwargs):
    """Triton signature, constexprs and specialisation attributes of one launch, as the JIT would build them.

    The JIT marks a pointer argument 16-byte aligned when its address is (the GPU's allocator always gives
    such addresses) and an integer argument when it is a multiple of 16. Without these marks the loads cannot
    be vectorised, so loops are not software-pipelined and the register counts differ from the GPU's.
    """
    constexprs = {p.name for p in fn.params if p.is_constexpr}
    runtime = [n for n in fn.arg_names if n not in constexprs]
    index = {p.name: i for i, p in enumerate(fn.params)}
    sig, attrs = {}, {}
    aligned = [["tt.divisibility", 16]]
    for name, value in zip(runtime, args):
        if isinstance(value, torch.Tensor):
            sig[name] = "*" + TRITON_TYPES[value.dtype]
            attrs[(index[name],)] = aligned
        else:
            sig[name] = "i32" if abs(int(value)) < 2**31 else "i64"
            if int(value) % 16 == 0:
                attrs[(index[name],)] = aligned
    for name in constexprs:
        sig[name] = "constexpr"
    return sig, {name: kwargs[name] for name in constexprs}, attrs


def _cuobjdump(cubin: bytes, flag: str) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool, flag, f.name], capture_output=True, text=True, check=True).stdout


def _resources(cubin: bytes) -> dict:
    out = _cuobjdump(cubin, "--dump-resource-usage")
    field = lambda key: int(re.search(rf"{key}:(\d+)", out).group(1))  # noqa: E731
    return {"registers": field("REG"), "stack_bytes": field("STACK"), "local_bytes": field("LOCAL")}


def sass_fingerprint(cubin: bytes) -> str:
    """Hash of the SASS instruction stream, without addresses and encodings (line info does not change it)."""
    lines = _cuobjdump(cubin, "--dump-sass").splitlines()
    instructions = [
        re.sub(r"/\*[^*]*\*/", "", line).strip() for line in lines if re.match(r"\s*/\*[0-9a-f]{4}\*/", line)
    ]
    return hashlib.sha1("\n".join(instructions).encode()).hexdigest()[:12]


def compile_report(name: str, fn, launch) -> dict:
    """Compile one recorded launch for sm90; registers, spill stack, shared memory and wgmma count."""
    args, kwargs, warps, stages = launch
    sig, constexprs, attrs = _signature(fn, args, kwargs)
    kernel = triton.compile(
        ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
        target=SM90,
        options={"num_warps": warps, "num_stages": stages},
    )
    row = {"kernel": name, "num_warps": warps, "num_stages": stages, "shared_bytes": kernel.metadata.shared}
    row.update(_resources(kernel.asm["cubin"]))
    row["sass_fingerprint"] = sass_fingerprint(kernel.asm["cubin"])
    row["wgmma"] = kernel.asm["ptx"].count("wgmma.mma_async")
    row["async_copies"] = kernel.asm["ttgir"].count("async_copy_global_to_local")
    row["blocks"] = {k: v for k, v in constexprs.items() if k in ("BT", "BK", "BV")}
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", nargs="+", default=["A", "B"], choices=sorted(CFGS))
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--kernels", nargs="+", default=None, choices=sorted(KERNELS))
    ap.add_argument("--out", default=None, help="folder for kernel_resources.json")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled for a GPU")
    rows = []
    print(f"{'cfg':16s} {'kernel':15s} {'blocks':26s} {'warps':>5s} {'stages':>6s} {'regs':>4s} {'spill B':>7s} "
          f"{'smem B':>7s} {'wgmma':>5s} {'async':>5s} sass")  # fmt: skip
    for cfg in args.cfg:
        for name, (fn, launch) in _capture(cfg, DTYPES[args.dtype]).items():
            if args.kernels and name not in args.kernels:
                continue
            row = {"cfg": cfg, "dtype": args.dtype, **compile_report(name, fn, launch)}
            rows.append(row)
            print(f"{cfg:16s} {name:15s} {str(row['blocks']):26s} {row['num_warps']:5d} {row['num_stages']:6d} "
                  f"{row['registers']:4d} {row['stack_bytes']:7d} {row['shared_bytes']:7d} {row['wgmma']:5d} "
                  f"{row['async_copies']:5d} {row['sass_fingerprint']}",
                  flush=True)  # fmt: skip
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "kernel_resources.json"), "w") as f:
            json.dump({"triton": triton.__version__, "target": "sm90", "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
