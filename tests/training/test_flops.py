"""Model FLOPs per token and MFU."""

from __future__ import annotations

import pytest

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.training import load_config, train
from retnet.training.artifacts import load_trained
from retnet.training.flops import peak_flops, retention_flops_per_token, train_flops_per_token

from .corpus import fast_overrides


def test_flops_per_token_counts_matmuls_and_causal_retention():
    cfg = RetNetConfig.from_preset("debug", vocab_size=300)
    n = RetNetForCausalLM(cfg).num_parameters()
    d, hv, h, layers = cfg.hidden_size, cfg.value_dim, cfg.num_heads, cfg.num_hidden_layers
    matmul = n - cfg.vocab_size * d  # the embedding lookup is not a matrix product
    per_layer_chunk = (64 + 1) * (d + hv) + 4 * d * hv / h
    assert retention_flops_per_token(cfg, 64) == pytest.approx(layers * per_layer_chunk)
    expected = 6 * matmul + 3 * layers * per_layer_chunk
    assert train_flops_per_token(cfg, n, 512, "chunkwise", 64) == pytest.approx(expected)
    # the parallel form is one chunk of the whole sequence
    assert train_flops_per_token(cfg, n, 128, "parallel", 64) == pytest.approx(
        6 * matmul + 3 * retention_flops_per_token(cfg, 128)
    )


def test_peaks():
    assert peak_flops("NVIDIA H200", "bf16") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp16") == pytest.approx(312e12)
    assert peak_flops("NVIDIA H200", "fp32") is None
    assert peak_flops("cpu", "bf16") is None
    assert peak_flops("cpu", "fp32", override_tflops=2.0) == pytest.approx(2e12)


def test_trainer_reports_mfu(dataset, tmp_path):
    cfg = load_config([], fast_overrides(dataset, tmp_path / "r", steps=2, peak_tflops=1.0))
    res = train(cfg)
    model = load_trained(tmp_path / "r" / "model").model
    per_token = train_flops_per_token(model.config, model.num_parameters(), cfg.data.seq_len, cfg.form, cfg.chunk_size)
    assert res.tokens_per_s > 0
    assert res.mfu == pytest.approx(res.tokens_per_s * per_token / 1e12, rel=1e-12)  # achieved / peak FLOP/s
    assert train(load_config([], fast_overrides(dataset, tmp_path / "s", steps=2))).mfu is None
