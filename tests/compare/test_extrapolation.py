"""Length extrapolation: per-position losses equal a direct computation, in every form, for RetNet and a baseline."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retnet import RetNetConfig
from retnet.compare.archs import BaselineSettings, build_model, match_parameters
from retnet.compare.extrapolation import bucket_losses, length_extrapolation, position_losses, write_extrapolation

VOCAB = 23


@pytest.fixture(scope="module")
def models():
    base = RetNetConfig(flavour="paper", hidden_size=32, num_hidden_layers=1, num_heads=2, vocab_size=VOCAB,
                        value_dim=64, ffn_dim=64)  # fmt: skip
    matched = match_parameters(["retnet", "transformer"], base, BaselineSettings(num_heads=2))
    torch.manual_seed(0)
    return {name: build_model(m.config).double() for name, m in matched.items()}


def direct_losses(model, tokens, length, windows):
    """The loss at each position, window by window, with plain indexing."""
    rows = []
    for w in range(windows):
        chunk = torch.from_numpy(np.asarray(tokens[w * length : w * length + length + 1], dtype=np.int64))
        logits = model(chunk[None, :-1], form="parallel").logits[0]  # (T, vocab)
        rows.append([F.cross_entropy(logits[t], chunk[t + 1]).item() for t in range(length)])
    return np.mean(rows, axis=0)


@pytest.mark.parametrize("name", ["retnet", "transformer"])
def test_position_losses_equal_a_direct_computation(models, name):
    model = models[name]
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=200)
    expected = direct_losses(model, tokens, length=48, windows=3)
    got = position_losses(model, tokens, length=48, windows=3, batch_size=2, form="chunkwise", chunk_size=16)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    if name == "retnet":  # the recurrent form gives the same function (docs/spec.md §3)
        rec = position_losses(model, tokens, length=48, windows=3, form="recurrent")
        np.testing.assert_allclose(rec, expected, rtol=1e-9, atol=1e-9)


def test_buckets_and_report(models, tmp_path):
    losses = np.arange(10, dtype=float)
    rows = bucket_losses(losses, 4)
    assert [(r["start"], r["end"], r["loss"]) for r in rows] == [(0, 4, 1.5), (4, 8, 5.5), (8, 10, 8.5)]
    assert rows[0]["perplexity"] == pytest.approx(math.exp(1.5))
    tokens = np.random.default_rng(1).integers(0, VOCAB, size=300)
    results = {
        name: length_extrapolation(m, tokens, train_len=16, factor=4, buckets_per_train_len=2, windows=2)
        for name, m in models.items()
    }
    r = results["retnet"]
    assert (r["eval_len"], len(r["buckets"]), r["buckets"][-1]["end"]) == (64, 8, 64)
    per_position = position_losses(models["retnet"], tokens, length=64, windows=2)
    assert r["buckets"][3]["loss"] == pytest.approx(per_position[24:32].mean())
    assert r["beyond"] == pytest.approx(per_position[16:].mean()) and r["in_range"] == pytest.approx(
        per_position[:16].mean()
    )
    path = write_extrapolation(results, tmp_path)
    assert json.loads(path.read_text())["transformer"]["eval_len"] == 64
    table = (tmp_path / "extrapolation.md").read_text()
    assert "| Positions | RetNet | Transformer |" in table and "| 56–63 (beyond T) |" in table
    within, beyond = (math.exp(results["retnet"][k]) for k in ("in_range", "beyond"))
    assert f"| RetNet | {within:.2f} | {beyond:.2f} | {beyond / within:.2f}× |" in table
    assert "| 0–7 |" in table and (tmp_path / "extrapolation.png").stat().st_size > 0
    with pytest.raises(ValueError, match="holds 4 windows"):
        position_losses(models["retnet"], tokens, length=64, windows=5)
