"""Tokenizers: byte-level (no training) and byte-level BPE trained with the ``tokenizers`` library.

Both share one small interface (:class:`Tokenizer`): ``encode``, ``decode``, ``vocab_size``, the document
separator id ``sep_id``, per-token byte lengths (for bits per byte), ``save(dir)`` and a content hash that
prepared datasets and checkpoints record so that a mismatch is caught. Every run and checkpoint stores its
tokenizer with :func:`save_tokenizer` and reloads it with :func:`load_tokenizer`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

CONFIG_NAME = "tokenizer_config.json"
BPE_FILE = "tokenizer.json"
SEPARATOR = "<|endoftext|>"
TOKENIZER_KINDS = ("byte", "bpe")


class Tokenizer:
    """Common interface of the retnet tokenizers."""

    kind: str
    vocab_size: int
    sep_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no separator added)."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; the separator decodes to nothing and invalid UTF-8 to U+FFFD."""
        raise NotImplementedError

    def token_bytes(self) -> np.ndarray:
        """``(vocab_size,)`` int64: the number of UTF-8 bytes each token stands for (0 for the separator)."""
        raise NotImplementedError

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer files into ``directory`` (created if needed)."""
        raise NotImplementedError

    def to_json(self) -> str:
        """A canonical serialisation; the basis of :meth:`fingerprint`."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short sha256 of the tokenizer's full definition."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens 0..255, plus the separator as token 256."""

    kind = "byte"

    def __init__(self) -> None:
        self.vocab_size = 257
        self.sep_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        out = np.ones(self.vocab_size, dtype=np.int64)
        out[self.sep_id] = 0
        return out

    def to_json(self) -> str:
        return json.dumps({"kind": "byte", "vocab_size": self.vocab_size, "sep_id": self.sep_id}, sort_keys=True)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(self.to_json() + "\n")


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style pre-tokenisation) backed by ``tokenizers.Tokenizer``.

    Args:
        tokenizer: a trained ``tokenizers.Tokenizer`` whose vocabulary contains :data:`SEPARATOR`.
    """

    kind = "bpe"

    def __init__(self, tokenizer) -> None:
        sep = tokenizer.token_to_id(SEPARATOR)
        if sep is None:
            raise ValueError(f"BPE tokenizer has no separator token {SEPARATOR!r}")
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.sep_id = sep

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Train byte-level BPE on ``texts``.

        Args:
            texts: an iterable of documents.
            vocab_size: the target vocabulary size (>= 257: 256 bytes, the separator and merges).

        Raises:
            ValueError: for a vocabulary too small to hold the byte alphabet.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"bpe vocab_size must be >= 257 (256 bytes + separator), got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[SEPARATOR],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(text))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_bytes(self) -> np.ndarray:
        # Byte-level BPE spells every byte as one character, so a token's byte length is its string length.
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for token, idx in self._tok.get_vocab().items():
            out[idx] = 0 if token == SEPARATOR else len(token)
        return out

    def to_json(self) -> str:
        return self._tok.to_str()

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / BPE_FILE).write_text(self.to_json())
        meta = {"kind": "bpe", "vocab_size": self.vocab_size, "sep_id": self.sep_id}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, sort_keys=True) + "\n")


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> None:
    """Write ``tokenizer`` into ``directory``."""
    tokenizer.save(directory)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load a tokenizer written by :func:`save_tokenizer`.

    Raises:
        FileNotFoundError: when ``directory`` holds no tokenizer.
        ValueError: for an unknown tokenizer kind.
    """
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no tokenizer in {directory} (missing {CONFIG_NAME})")
    meta = json.loads(cfg_path.read_text())
    kind = meta.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.from_json((directory / BPE_FILE).read_text())
    raise ValueError(f"unknown tokenizer kind {kind!r} in {cfg_path}; expected one of {TOKENIZER_KINDS}")


def build_tokenizer(kind: str, texts: Iterable[str] | None = None, vocab_size: int = 4096) -> Tokenizer:
    """Make a tokenizer of ``kind`` ("byte" or "bpe"; "bpe" trains on ``texts``).

    Raises:
        ValueError: for an unknown kind, or "bpe" without texts.
    """
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        if texts is None:
            raise ValueError("training a bpe tokenizer needs texts")
        return BPETokenizer.train(texts, vocab_size)
    raise ValueError(f"unknown tokenizer {kind!r}; expected one of {TOKENIZER_KINDS}")


class StreamDecoder:
    """Incremental decoding for streaming output: feed ids, get the newly completed text.

    Text is held back while it ends in an incomplete UTF-8 sequence (decoded as U+FFFD), so multi-byte
    characters are never printed half-way.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._emitted = 0

    def push(self, ids: Iterable[int]) -> str:
        """Add ``ids``; return the text that became final."""
        self._ids.extend(int(i) for i in ids)
        text = self._tok.decode(self._ids)
        end = len(text)
        while end > self._emitted and text[end - 1] == "\ufffd" and len(text) - end < 3:
            end -= 1
        new = text[self._emitted : end]
        self._emitted = end
        return new

    def flush(self) -> str:
        """Return whatever is left, incomplete characters included."""
        text = self._tok.decode(self._ids)
        new = text[self._emitted :]
        self._emitted = len(text)
        return new
