"""Data: offline corpora, tokenizers, dataset preparation, windows and document packing."""

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
