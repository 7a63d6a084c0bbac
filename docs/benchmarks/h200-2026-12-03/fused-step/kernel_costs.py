"""What each piece fused into the decode step's products costs, kernel by kernel, at the 1.3B preset's shapes.

``OUT=dir python docs/benchmarks/h200-2026-12-03/fused-step/kernel_costs.py`` from the repository root, on a GPU.
Each kernel of ``retnet/ops/decode/`` at batch 1 with the launches of ``FusedLaunches``, timed in the gemv sweep's
harness (``h200-2026-12-02/gemv-sweep/explore_gemv.py``: 96 calls over 8 distinct bf16 weights in one CUDA graph,
so L2 holds none of them), with and without its fused parts (the RMSNorm before it, the rotation, the GLU, the
head norm and the gate), beside cuBLAS's bare product of the same weight. Writes ``kernel_costs.json``.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "docs/benchmarks/h200-2026-12-02/gemv-sweep"))
sys.path.insert(0, str(ROOT))
from explore_gemv import COPIES, graph_time  # noqa: E402

from retnet.generation import FusedLaunches  # noqa: E402
from retnet.layers.position import rotation_table  # noqa: E402
from retnet.ops.decode.projections import gated_output_residual, paired_projection, projection  # noqa: E402

D, H, K, V, F_DIM = 2048, 8, 256, 432, 3456  # the 1.3B preset


def weights(n: int, k: int) -> list[torch.Tensor]:
    return [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5 for _ in range(COPIES)]


def main() -> None:
    out = Path(os.environ.get("OUT", "."))
    launches = FusedLaunches()
    x = torch.randn(1, D, device="cuda", dtype=torch.bfloat16)
    norm_w = torch.rand(D, device="cuda", dtype=torch.bfloat16) + 0.5
    rms = {"norm": "rmsnorm", "norm_weight": norm_w, "eps": 1e-6}
    rows: dict[str, float] = {}

    def time(name: str, fn, nbytes: int) -> None:
        us = graph_time(fn)
        rows[name] = us
        print(f"{name:52s} {us:7.2f} us  {nbytes / us / 1e6:5.2f} TB/s", flush=True)

    n_qkvg = 2 * H * K + 2 * H * V
    w = weights(n_qkvg, D)
    y = torch.empty(1, n_qkvg, device="cuda")
    table = rotation_table(torch.tensor([[123]], device="cuda"), K)
    rot = {"rotation": table, "rotated_rows": 2 * H * K, "key_rows_from": H * K, "head_dim": K, "key_scale": K**-0.5}
    nbytes = n_qkvg * D * 2
    time("qkvg: cuBLAS", lambda i: F.linear(x, w[i]), nbytes)
    time("qkvg: bare product", lambda i: projection(x, w[i], y, launches.qkvg), nbytes)
    time("qkvg: + RMSNorm", lambda i: projection(x, w[i], y, launches.qkvg, **rms), nbytes)
    time("qkvg: paired rows + rotation", lambda i: paired_projection(x, w[i], y, launches.qkvg, **rot), nbytes)
    time("qkvg: paired + rotation + RMSNorm (the step's)",
         lambda i: paired_projection(x, w[i], y, launches.qkvg, **rot, **rms), nbytes)  # fmt: skip

    w = weights(2 * F_DIM, D)
    y = torch.empty(1, F_DIM, device="cuda")
    nbytes = 2 * F_DIM * D * 2
    time("GLU input: cuBLAS", lambda i: F.linear(x, w[i]), nbytes)
    time("GLU input: bare product", lambda i: projection(x, w[i], torch.empty(1, 2 * F_DIM, device="cuda"),
                                                          launches.ffn_in), nbytes)  # fmt: skip
    time("GLU input: paired + GLU", lambda i: paired_projection(x, w[i], y, launches.ffn_in, glu_activation="silu"),
         nbytes)  # fmt: skip
    time("GLU input: paired + GLU + RMSNorm (the step's)",
         lambda i: paired_projection(x, w[i], y, launches.ffn_in, glu_activation="silu", **rms), nbytes)  # fmt: skip

    w = weights(D, H * V)
    u = torch.randn(1, H * V, device="cuda")
    res = torch.randn(1, D, device="cuda", dtype=torch.bfloat16)
    nbytes = D * H * V * 2
    time("FFN output / output projection: cuBLAS", lambda i: F.linear(u.bfloat16(), w[i]), nbytes)
    time("FFN output: product + residual (the step's)",
         lambda i: projection(u, w[i], res, launches.ffn_out, residual=res), nbytes)  # fmt: skip
    o = torch.randn(1, H, V, device="cuda")
    nvb = 27
    stats = torch.rand(1, H, nvb, 2, device="cuda")
    qkvg = torch.randn(1, n_qkvg, device="cuda")
    z, z_new = torch.zeros(1, H, K, device="cuda"), torch.zeros(1, H, K, device="cuda")
    position = torch.zeros(1, device="cuda", dtype=torch.long)
    for head_norm, gate in (("none", None), ("rms", None), ("rms", 2 * H * K + H * V)):
        time(f"output projection: head norm {head_norm}, gate {gate is not None}",
             lambda i, hn=head_norm, g=gate: gated_output_residual(
                 o, stats, qkvg, g, w[i], res, res, launches.output, head_norm=hn, head_weight=None, head_bias=None,
                 eps=1e-6, z=z, z_new=z_new, position=position), nbytes)  # fmt: skip
    meta = {"torch": torch.__version__, "triton": triton.__version__, "gpu": torch.cuda.get_device_name()}
    (out / "kernel_costs.json").write_text(json.dumps({"meta": meta, "us": rows}, indent=1))


if __name__ == "__main__":
    main()
