"""``retnet data prepare``: documents -> tokenizer -> memory-mapped token files + manifest.

Layout of a prepared dataset folder::

    manifest.json      # tokenizer kind/hash/vocab, dtype, separator id, token/byte/document counts, source
    tokenizer/         # the tokenizer (see :mod:`retnet.data.tokenizer`)
    train.bin val.bin  # flat uint16 (vocab <= 65536) or uint32 token streams; each document ends with the separator

The train/validation split is by document and deterministic: a document goes to validation when a hash of
(seed, document id) falls below ``val_fraction``. A corpus with too few documents for that to leave both
sides non-empty instead gives the last ``val_fraction`` of the token stream to validation. A BPE tokenizer is
trained on the training documents, or, past ``bpe_train_bytes`` of them, on a fixed sample spread over the corpus
(:func:`bpe_sample`; the manifest records its size). Tokenisation runs
in ``workers`` processes for large corpora. Files are written under temporary names and the manifest last, so
an interrupted run leaves no folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .corpora import iter_documents
from .tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, build_tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def is_validation(doc_id: str, val_fraction: float, seed: int) -> bool:
    """Deterministic document-level split."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def bpe_sample(docs: list[tuple[str, int]], max_bytes: int, seed: int) -> list[bool]:
    """Which of the training documents ``docs`` (``(doc_id, bytes)``) train the BPE tokenizer.

    All of them when they hold at most ``max_bytes``; otherwise the documents in the order of a hash of
    (seed, document id), taken while their bytes add up to at most ``max_bytes`` (the first document always): a
    deterministic sample spread over the whole corpus rather than its first files.

    Args:
        docs: ``(document id, size in UTF-8 bytes)`` of each training document, in corpus order.
        max_bytes: the sample's budget.
        seed: seeds the order (the split seed).

    Returns:
        One flag per document of ``docs``: True for the documents that train BPE.
    """
    if sum(n for _, n in docs) <= max_bytes:
        return [True] * len(docs)
    order = sorted(range(len(docs)), key=lambda i: hashlib.sha256(f"{seed}:bpe:{docs[i][0]}".encode()).digest())
    chosen, used = [False] * len(docs), 0
    for i in order:
        if used + docs[i][1] > max_bytes and used > 0:
            break
        chosen[i] = True
        used += docs[i][1]
    return chosen


_worker_tok: Tokenizer | None = None


def _init_worker(kind: str, tok_json: str) -> None:
    global _worker_tok  # per-process tokenizer of the tokenisation pool
    _worker_tok = ByteTokenizer() if kind == "byte" else BPETokenizer.from_json(tok_json)


def _encode(text: str) -> list[int]:
    return _worker_tok.encode(text)


def _encode_all(tokenizer: Tokenizer, texts: Iterable[str], workers: int) -> Iterator[list[int]]:
    if workers <= 1:
        for text in texts:
            yield tokenizer.encode(text)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer.kind, tokenizer.to_json())) as pool:
        yield from pool.imap(_encode, texts, chunksize=4)


def prepare_dataset(
    source: str | Path | list[str | Path],
    out_dir: str | Path,
    *,
    tokenizer: str = "byte",
    vocab_size: int = 4096,
    tokenizer_dir: str | Path | None = None,
    val_fraction: float = 0.05,
    seed: int = 0,
    workers: int = 1,
    bpe_train_bytes: int = 200_000_000,
    source_name: str | None = None,
    cache_key: dict | None = None,
) -> Path:
    """Tokenise the documents under ``source`` into ``out_dir``; returns ``out_dir``.

    Args:
        source: a text/JSONL file or folder of documents, or a list of them (a mixture).
        out_dir: the dataset folder to create (replaced if present).
        tokenizer: "byte" or "bpe" (trained on the training documents).
        vocab_size: BPE vocabulary size.
        tokenizer_dir: reuse this saved tokenizer instead of building one.
        val_fraction: share of documents (or tokens, see module docstring) held out for validation.
        seed: seeds the split.
        workers: tokenisation processes.
        bpe_train_bytes: at most this many bytes of training text train BPE (:func:`bpe_sample`).
        source_name: name recorded in the manifest (defaults to the path).
        cache_key: what the dataset is made from (:mod:`retnet.data.fingerprint`), recorded in the manifest so
            that a cached copy is reused only while it still matches.

    Raises:
        ValueError: bad fraction or an empty corpus.
        FileNotFoundError: missing source.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    sources = [Path(p) for p in (source if isinstance(source, (list, tuple)) else [source])]
    for path in sources:
        if not path.exists():
            raise FileNotFoundError(f"corpus not found: {path}")
    source = sources[0] if len(sources) == 1 else sources
    out_dir = Path(out_dir)
    start = time.time()
    docs = [(doc_id, len(text.encode("utf-8"))) for doc_id, text in _documents(sources, warn=True)]
    if not docs:
        raise ValueError(f"no documents under {source}")
    in_val = [is_validation(d, val_fraction, seed) for d, _ in docs]
    by_document = 0 < sum(in_val) < len(in_val)

    bpe_trained = None
    if tokenizer_dir is not None:
        tok = load_tokenizer(tokenizer_dir)
    elif tokenizer == "bpe":
        train_docs = [i for i, val in enumerate(in_val) if not (by_document and val)]
        picked = bpe_sample([docs[i] for i in train_docs], bpe_train_bytes, seed)
        for_bpe = set(i for i, pick in zip(train_docs, picked) if pick)
        bpe_trained = {"documents": len(for_bpe), "bytes": sum(docs[i][1] for i in for_bpe)}

        def train_texts() -> Iterator[str]:
            for i, (_, text) in enumerate(_documents(sources)):
                if i in for_bpe:
                    yield text

        logger.info("training BPE tokenizer (vocab %d) on %s (%d documents, %d bytes)", vocab_size, source,
                    bpe_trained["documents"], bpe_trained["bytes"])  # fmt: skip
        tok = build_tokenizer("bpe", train_texts(), vocab_size)
    else:
        tok = build_tokenizer(tokenizer)

    dtype = token_dtype(tok.vocab_size)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok.save(tmp / "tokenizer")
    counts = {s: {"documents": 0, "tokens": 0, "bytes": 0} for s in SPLITS}
    total_bytes = sum(f.stat().st_size for p in sources for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    files = {s: open(tmp / f"{s}.bin", "wb") for s in SPLITS}
    sep = np.array([tok.sep_id], dtype=dtype)
    tok_bytes = tok.token_bytes()
    try:
        texts = (text for _, text in _documents(sources))
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", leave=False)
        for ids, val in zip(_encode_all(tok, texts, workers), in_val):
            split = "val" if (by_document and val) else "train"
            arr = np.asarray(ids, dtype=dtype)
            files[split].write(arr.tobytes())
            files[split].write(sep.tobytes())
            counts[split]["documents"] += 1
            counts[split]["tokens"] += len(arr) + 1
            nbytes = int(tok_bytes[arr].sum())
            counts[split]["bytes"] += nbytes
            bar.update(nbytes)
        bar.close()
    finally:
        for f in files.values():
            f.close()
    if not by_document:
        _split_tail(tmp, dtype, val_fraction, counts, tok)
    if counts["train"]["tokens"] < 2 or counts["val"]["tokens"] < 2:
        raise ValueError(f"corpus {source} is too small to split into train and validation")
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": source_name or ",".join(str(p) for p in sources),
        "tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "hash": tok.fingerprint()}
        | ({"trained_on": bpe_trained} if bpe_trained is not None else {}),
        "separator_id": tok.sep_id,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "split": "document" if by_document else "token-tail",
        "seed": seed,
        "splits": counts,
    }
    if cache_key is not None:
        manifest["cache_key"] = cache_key
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    logger.info(
        "prepared %s: %d train / %d val tokens (%s split) in %.1fs",
        out_dir,
        counts["train"]["tokens"],
        counts["val"]["tokens"],
        manifest["split"],
        time.time() - start,
    )
    return out_dir


def _documents(sources: list[Path], warn: bool = False) -> Iterator[tuple[str, str]]:
    """Documents of every source in order; ids carry the source's name when there are several."""
    for path in sources:
        for doc_id, text in iter_documents(path, warn=warn):
            yield (f"{path.name}/{doc_id}" if len(sources) > 1 else doc_id), text


def _split_tail(folder: Path, dtype: np.dtype, val_fraction: float, counts: dict, tok: Tokenizer) -> None:
    """Move the last ``val_fraction`` of the train stream into val (corpora with too few documents)."""
    train = np.fromfile(folder / "train.bin", dtype=dtype)
    cut = int(len(train) * (1.0 - val_fraction))
    train[cut:].tofile(folder / "val.bin")
    train[:cut].tofile(folder / "train.bin")
    nbytes = tok.token_bytes()
    for name, arr in (("train", train[:cut]), ("val", train[cut:])):
        counts[name] = {
            "documents": int((arr == tok.sep_id).sum()),
            "tokens": int(len(arr)),
            "bytes": int(nbytes[arr.astype(np.int64)].sum()),
        }


def read_manifest(dataset_dir: str | Path) -> dict:
    """The manifest of a prepared dataset.

    Raises:
        FileNotFoundError: the folder is not a (complete) prepared dataset.
    """
    path = Path(dataset_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"not a prepared dataset: {dataset_dir} (no {MANIFEST}; run 'retnet data prepare')")
    return json.loads(path.read_text())


def encode_documents(tokenizer: Tokenizer, source: str | Path) -> np.ndarray:
    """Tokenize the documents under ``source`` in memory (each followed by the separator): ``(N,)`` int64."""
    parts = []
    for _, text in iter_documents(Path(source)):
        parts.append(np.asarray(tokenizer.encode(text), dtype=np.int64))
        parts.append(np.array([tokenizer.sep_id], dtype=np.int64))
    return np.concatenate(parts)
