"""Model FLOPs per token and MFU.

Training FLOPs per token = 6·N (N = parameters used in matrix products: every weight except the embedding
lookup; a tied LM head counts once) + 3 × the retention forward per token, summed over layers. The retention
forward counts only causal work in the chunkwise form with chunk size C (the parallel form is C = T): inside a
chunk token n meets on average (C + 1) / 2 keys, each costing 2·K for the score and 2·V for the value product
per head, i.e. (C + 1)(D + H·V) in all; across chunks the state read q·S and the state update kᵀv cost
2·K·V each per head, 4·D·H·V / H in all.
"""

from __future__ import annotations

from ..model import RetNetConfig

# Dense bf16/fp16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 125.0, "4090": 165.2}


def retention_flops_per_token(cfg: RetNetConfig, chunk: int) -> float:
    """Forward FLOPs of the retention operator per token, all layers."""
    d, hv, h = cfg.hidden_size, cfg.value_dim, cfg.num_heads
    per_layer = (chunk + 1) * (d + hv) + 4 * d * hv / h
    return per_layer * cfg.num_hidden_layers


def matmul_params(cfg: RetNetConfig, num_parameters: int) -> int:
    """Parameters used in matrix products: all but the embedding table (unless tied to the LM head)."""
    embedding = cfg.vocab_size * cfg.hidden_size
    return num_parameters if cfg.tie_word_embeddings else num_parameters - embedding


def train_flops_per_token(cfg: RetNetConfig, num_parameters: int, seq_len: int, form: str, chunk_size: int) -> float:
    """Training (forward + backward) model FLOPs per token."""
    chunk = seq_len if form == "parallel" else min(chunk_size, seq_len)
    return 6.0 * matmul_params(cfg, num_parameters) + 3.0 * retention_flops_per_token(cfg, chunk)


def peak_flops(device_name: str, precision: str, override_tflops: float = 0.0) -> float | None:
    """The device's peak FLOP/s for ``precision``, or None when unknown (CPU, fp32, unlisted GPU)."""
    if override_tflops > 0:
        return override_tflops * 1e12
    if precision not in ("bf16", "fp16"):
        return None
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None
