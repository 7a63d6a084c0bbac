"""Dataset preparation, the deterministic sampler and document packing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from retnet.data import PreparedDataset, WindowSampler, make_batch, prepare_dataset, segment_boundaries

from ..training.corpus import make_corpus, make_jsonl


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("c") / "docs", docs=20, words=120)


def test_prepare_byte_layout_and_determinism(corpus, tmp_path):
    a = prepare_dataset(corpus, tmp_path / "a", tokenizer="byte", val_fraction=0.2)
    b = prepare_dataset(corpus, tmp_path / "b", tokenizer="byte", val_fraction=0.2)
    ds = PreparedDataset(a)
    m = ds.manifest
    assert m["split"] == "document" and m["dtype"] == "uint16"
    total_bytes = sum(len(p.read_bytes()) for p in corpus.iterdir())
    assert m["splits"]["train"]["bytes"] + m["splits"]["val"]["bytes"] == total_bytes
    assert m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"] == 20
    for split in ("train", "val"):
        toks = ds.tokens(split)
        assert len(toks) == m["splits"][split]["tokens"]
        assert int((toks == ds.sep_id).sum()) == m["splits"][split]["documents"]
        assert toks[-1] == ds.sep_id
        assert (a / f"{split}.bin").read_bytes() == (b / f"{split}.bin").read_bytes()
    first = ds.tokenizer.decode(ds.tokens("train")[:4])
    assert first == "ACT "


def test_prepare_bpe_multiprocess_matches_single(corpus, tmp_path):
    one = prepare_dataset(corpus, tmp_path / "one", tokenizer="bpe", vocab_size=300, workers=1)
    two = prepare_dataset(corpus, tmp_path / "two", tokenizer="bpe", vocab_size=300, workers=2)
    for split in ("train", "val"):
        assert (one / f"{split}.bin").read_bytes() == (two / f"{split}.bin").read_bytes()
    m1, m2 = (json.loads((p / "manifest.json").read_text()) for p in (one, two))
    assert m1 == m2 and m1["tokenizer"]["kind"] == "bpe"
    ds = PreparedDataset(one)
    assert ds.manifest["splits"]["train"]["tokens"] < ds.manifest["splits"]["train"]["bytes"]


def test_prepare_jsonl_and_single_document_tail_split(tmp_path):
    jsonl = make_jsonl(tmp_path / "docs.jsonl", docs=12)
    ds = PreparedDataset(prepare_dataset(jsonl, tmp_path / "j", val_fraction=0.3))
    assert "é ✓" in ds.tokenizer.decode(ds.tokens("train")[:1000])
    single = tmp_path / "one.txt"
    single.write_text("word " * 2000)
    m = PreparedDataset(prepare_dataset(single, tmp_path / "s", val_fraction=0.1)).manifest
    assert m["split"] == "token-tail"
    assert abs(m["splits"]["val"]["tokens"] - 1000) <= 2


def test_prepare_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        prepare_dataset(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no text files"):
        prepare_dataset(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_dataset(tmp_path, tmp_path / "out", val_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        PreparedDataset(tmp_path / "empty")


def test_sampler_is_a_function_of_step_and_splits_across_ranks():
    tokens = np.arange(1000, dtype=np.uint16)
    s = WindowSampler(tokens, seq_len=16, seed=3)
    full = s.batch(5, 8)
    parts = np.concatenate([WindowSampler(tokens, 16, seed=3).batch(5, 8, r, 4) for r in range(4)])
    assert np.array_equal(full, parts)
    assert np.array_equal(full, WindowSampler(tokens, 16, seed=3).batch(5, 8))
    assert full.shape == (8, 17) and np.all(np.diff(full, axis=1) == 1)
    # one epoch visits every window once
    seen = np.concatenate([s.batch(i, 4)[:, 0] for i in range(s.num_windows // 4)])
    assert len(set(seen.tolist())) == len(seen)
    with pytest.raises(ValueError, match="not divisible"):
        s.batch(0, 6, 0, 4)


def test_packing_boundaries():
    sep = 9
    windows = np.array([[1, 2, 9, 3, 4], [5, 9, 9, 6, 7]])
    b = make_batch(windows, sep)
    assert b.input_ids.shape == (1, 8) and b.targets.tolist() == [[2, 9, 3, 4, 9, 9, 6, 7]]
    assert b.cu_seqlens.tolist() == [0, 3, 4, 6, 7, 8]
    assert segment_boundaries(np.array([[9, 1]]), sep).tolist() == [0, 1, 2]
    rows = make_batch(windows, sep, reset_at_boundaries=False)
    assert rows.input_ids.shape == (2, 4) and rows.cu_seqlens is None
    no_docs = make_batch(np.array([[1, 2, 3], [4, 5, 9]]), sep)  # a separator only as the last target
    assert no_docs.input_ids.shape == (2, 2) and no_docs.cu_seqlens is None


def test_token_dtype_widens_past_uint16():
    from retnet.data.prepare import token_dtype

    assert token_dtype(257) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_bpe_trains_on_a_fixed_sample_spread_over_the_corpus_past_its_budget(corpus, tmp_path):
    from retnet.data.prepare import bpe_sample

    docs = [(f"d{i:02d}", 100 + i) for i in range(20)]
    assert bpe_sample(docs, 10**6, seed=0) == [True] * 20
    picked = bpe_sample(docs, 1000, seed=0)
    assert picked == bpe_sample(docs, 1000, seed=0) and picked != bpe_sample(docs, 1000, seed=1)
    assert 0 < sum(n for (_, n), p in zip(docs, picked) if p) <= 1000 and not all(picked[: sum(picked)])
    assert bpe_sample(docs, 1, seed=0).count(True) == 1  # never an empty sample

    full = json.loads((prepare_dataset(corpus, tmp_path / "f", tokenizer="bpe", vocab_size=300) / "manifest.json")
                      .read_text())  # fmt: skip
    part = prepare_dataset(corpus, tmp_path / "p", tokenizer="bpe", vocab_size=300, bpe_train_bytes=2000)
    m = json.loads((part / "manifest.json").read_text())
    assert full["tokenizer"]["trained_on"]["documents"] == full["splits"]["train"]["documents"]
    assert 0 < m["tokenizer"]["trained_on"]["bytes"] <= 2000 < full["tokenizer"]["trained_on"]["bytes"]
    assert m["tokenizer"]["hash"] != full["tokenizer"]["hash"]
