"""The language model against an independent oracle (docs/spec.md §5, §7): the two flavours and every decay
schedule, computed by hand from the model's weights in float64, in the three forms.

Embedding (× √D in the torchscale flavour), pre-norm blocks h = x + MSR(Norm(x)), y = h + FFN(Norm(h)) with the
block norm as a formula (RMS with weight) or ``torch.nn.functional.layer_norm``, the FFN as its definition (GLU with
the swish on fc1, or a gelu MLP), MSR by ``tests/layers/test_msr_oracle.py``, the final norm and the LM head.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from retnet import RetNetConfig, RetNetForCausalLM
from tests.layers.test_msr_oracle import msr_oracle
from tests.ops.test_retention_oracle import schedule_gammas
from tests.utils import assert_close

F64 = torch.float64
# (flavour, decay schedule override): each flavour with its own schedule, and the two ablation schedules.
CASES = [("torchscale", None), ("paper", None), ("torchscale", "single"), ("paper", "none")]


def block_norm(norm, x, kind, eps):
    if kind == "rmsnorm":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight.to(F64)
    return F.layer_norm(x, x.shape[-1:], norm.weight.to(F64), norm.bias.to(F64), eps)


def ffn_oracle(ffn, z, glu):
    fc1 = z @ ffn.fc1.weight.to(F64).T
    h = F.silu(fc1) * (z @ ffn.gate.weight.to(F64).T) if glu else F.gelu(fc1)
    return h @ ffn.fc2.weight.to(F64).T


def lm_oracle(model, ids, cfg):
    """Logits ``(B, T, vocab)`` of ``model`` for ``ids`` by the definitions."""
    B, T = ids.shape
    x = model.model.embed_tokens.weight.to(F64)[ids] * (math.sqrt(cfg.hidden_size) if cfg.scale_embedding else 1.0)
    start = torch.zeros(B, dtype=torch.long)
    for layer in model.model.layers:
        y, _, _ = msr_oracle(layer.retention, block_norm(layer.retention_layer_norm, x, cfg.norm, cfg.norm_eps), start,
                             cfg.decay_schedule, cfg.head_norm)  # fmt: skip
        h = x + y
        x = h + ffn_oracle(layer.ffn, block_norm(layer.final_layer_norm, h, cfg.norm, cfg.norm_eps), cfg.ffn_glu)
    return block_norm(model.model.layer_norm, x, cfg.norm, cfg.norm_eps) @ model.lm_head.weight.to(F64).T


@pytest.mark.parametrize("flavour,schedule", CASES, ids=[f"{f}-{s or 'own'}" for f, s in CASES])
def test_model_matches_the_oracle(flavour, schedule):
    overrides = {} if schedule is None else {"decay_schedule": schedule}
    cfg = RetNetConfig.from_preset("debug", flavour=flavour, num_hidden_layers=2, chunk_size=4, **overrides)
    expected_schedule = schedule or flavour
    assert cfg.decay_schedule == expected_schedule
    assert cfg.head_norm == ("rms" if flavour == "torchscale" else "groupnorm")
    torch.manual_seed(0)
    model = RetNetForCausalLM(cfg).double().eval()
    with torch.no_grad():  # affine parameters other than their initial values, so that they are checked too
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm.bias", "layer_norm.weight", "layer_norm.bias")):
                p.add_(0.2 * torch.randn_like(p))
    for layer in model.model.layers:
        gammas = layer.retention.log_decay(torch.device("cpu"), F64).exp()
        assert_close(gammas, torch.tensor(schedule_gammas(expected_schedule, cfg.num_heads), dtype=F64), 1e-14, "γ")
    ids = torch.randint(0, cfg.vocab_size, (2, 10))
    expected = lm_oracle(model, ids, cfg)
    for form in ("parallel", "recurrent", "chunkwise"):
        logits = model(ids, form=form).logits
        assert_close(logits.reshape(-1, cfg.vocab_size), expected.reshape(-1, cfg.vocab_size), 1e-10, f"{form} logits")
