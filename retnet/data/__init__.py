"""Data: offline corpora, tokenizers, dataset preparation, windows and document packing.

The names are imported on first use (:mod:`retnet.utils.lazy`): listing and preparing corpora loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .corpora import CORPORA, DEFAULT_CORPUS, fetch_corpus, iter_documents, resolve_source
    from .dataset import PreparedDataset, WindowSampler
    from .packing import Batch, make_batch, segment_boundaries
    from .prepare import prepare_dataset, read_manifest
    from .tokenizer import BPETokenizer, ByteTokenizer, StreamDecoder, Tokenizer, build_tokenizer, load_tokenizer

__all__ = [
    "BPETokenizer",
    "Batch",
    "ByteTokenizer",
    "CORPORA",
    "DEFAULT_CORPUS",
    "PreparedDataset",
    "StreamDecoder",
    "Tokenizer",
    "WindowSampler",
    "build_tokenizer",
    "fetch_corpus",
    "iter_documents",
    "load_tokenizer",
    "make_batch",
    "prepare_dataset",
    "read_manifest",
    "resolve_source",
    "segment_boundaries",
]

lazy_exports(
    __name__,
    {
        "CORPORA": ".corpora",
        "DEFAULT_CORPUS": ".corpora",
        "fetch_corpus": ".corpora",
        "iter_documents": ".corpora",
        "resolve_source": ".corpora",
        "PreparedDataset": ".dataset",
        "WindowSampler": ".dataset",
        "Batch": ".packing",
        "make_batch": ".packing",
        "segment_boundaries": ".packing",
        "prepare_dataset": ".prepare",
        "read_manifest": ".prepare",
        "BPETokenizer": ".tokenizer",
        "ByteTokenizer": ".tokenizer",
        "StreamDecoder": ".tokenizer",
        "Tokenizer": ".tokenizer",
        "build_tokenizer": ".tokenizer",
        "load_tokenizer": ".tokenizer",
    },
)
