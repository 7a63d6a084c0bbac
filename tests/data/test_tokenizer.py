"""Tokenizer round trips, persistence, byte accounting and streaming decode."""

from __future__ import annotations

import numpy as np
import pytest

from retnet.data import BPETokenizer, ByteTokenizer, StreamDecoder, build_tokenizer, load_tokenizer

TEXTS = ["Hello, world!", "Ünïcödé — “quotes” ✓ 🎭 日本語", "", "  spaces\tand\nnewlines\n\n", "a" * 300]


@pytest.fixture(scope="module")
def bpe():
    corpus = [t * 20 for t in TEXTS] + ["To be, or not to be, that is the question."] * 50
    return BPETokenizer.train(corpus, vocab_size=400)


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.sep_id]) == text  # the separator decodes to nothing


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_round_trip_and_byte_counts(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert int(bpe.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    assert all(0 <= i < bpe.vocab_size for i in ids)


def test_bpe_compresses_and_reloads(bpe, tmp_path):
    text = "To be, or not to be, that is the question."
    assert len(bpe.encode(text)) < len(text.encode()) / 2
    bpe.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.fingerprint() == bpe.fingerprint()
    assert again.encode(text) == bpe.encode(text)
    assert bpe.vocab_size <= 400 and bpe.token_bytes()[bpe.sep_id] == 0


def test_byte_reload_and_kinds(tmp_path):
    ByteTokenizer().save(tmp_path)
    assert isinstance(load_tokenizer(tmp_path), ByteTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        build_tokenizer("wordpiece")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ValueError, match="vocab_size must be >= 257"):
        BPETokenizer.train(["abc"], vocab_size=100)


def test_stream_decoder_never_splits_characters():
    tok = ByteTokenizer()
    text = "añ🎭b"
    dec = StreamDecoder(tok)
    pieces = [dec.push([i]) for i in tok.encode(text)] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert np.array_equal(tok.token_bytes()[:256], np.ones(256))
