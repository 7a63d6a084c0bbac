"""What the whole-model benchmarks share: the Transformer they compare against, dtypes, out-of-memory rows.

The Transformer is the comparison harness's (``retnet.baselines``, SDPA attention, rotary positions) with
Llama-style choices: RMSNorm, a SwiGLU FFN of width ≈ 8/3·D, heads of 128 (or RetNet's head count when D is
small), at RetNet's width, depth and vocabulary.
"""

from __future__ import annotations

import gc
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retnet import RetNetConfig  # noqa: E402
from retnet.baselines import MixerLMConfig  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def transformer_config(cfg: RetNetConfig) -> MixerLMConfig:
    """The Llama-style Transformer of RetNet ``cfg``'s width, depth and vocabulary."""
    d = cfg.hidden_size
    heads = d // 128 if d >= 256 and d % 128 == 0 else cfg.num_heads
    return MixerLMConfig(
        arch="transformer", vocab_size=cfg.vocab_size, hidden_size=d, num_hidden_layers=cfg.num_hidden_layers,
        ffn_dim=max(64, round(8 * d / 3 / 64) * 64), num_heads=heads, norm="rmsnorm", ffn_glu=True,
        activation="swish", max_position_embeddings=1 << 20,
    )  # fmt: skip


def fits_in_memory(run, row_keys: dict, device: torch.device) -> dict:
    """``run()``'s row, or ``row_keys`` marked ``"oom"`` when the configuration does not fit in the device's memory
    (recorded in the table, as the paper's comparisons record it, instead of ending the benchmark)."""
    try:
        return run()
    except torch.OutOfMemoryError:
        pass  # leaving the handler frees the failed step's tensors
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**row_keys, "oom": True}
