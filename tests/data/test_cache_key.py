"""Cached datasets are keyed by content: an edited corpus, another seed or tokenizer setting is re-prepared."""

from __future__ import annotations

import logging
import os

from retnet.data import read_manifest
from retnet.data.corpora import iter_documents
from retnet.training.build import ensure_dataset
from retnet.training.config import DataSection
from retnet.training.distributed import DistInfo

from ..training.corpus import make_corpus


def _prepare(cfg, caplog, seed=0):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="retnet"):
        path = ensure_dataset(cfg, DistInfo(), seed)
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("re-preparing")]
    prepared = any(r.getMessage().startswith("preparing") for r in caplog.records)
    return path, prepared, reasons


def _tokens(path):
    return read_manifest(path)["splits"]["train"]["tokens"] + read_manifest(path)["splits"]["val"]["tokens"]


def test_edited_corpus_is_re_prepared(tmp_path, caplog):
    corpus = make_corpus(tmp_path / "docs", docs=12, words=60)
    cfg = DataSection(corpus=str(corpus), cache_dir=str(tmp_path / "cache"), val_fraction=0.2)
    path, prepared, reasons = _prepare(cfg, caplog)
    assert prepared and reasons == []
    before = _tokens(path)

    path, prepared, reasons = _prepare(cfg, caplog)  # nothing changed: reused
    assert not prepared and reasons == []

    doc = corpus / "doc003.txt"
    os.utime(doc, ns=(doc.stat().st_atime_ns, doc.stat().st_mtime_ns + 10**9))  # touched, same content: reused
    path, prepared, reasons = _prepare(cfg, caplog)
    assert not prepared and reasons == []

    doc.write_text(doc.read_text() + "a new line of verse\n" * 50)  # the corpus grew
    path, prepared, reasons = _prepare(cfg, caplog)
    assert prepared and len(reasons) == 1 and "corpus file doc003.txt changed" in reasons[0], reasons
    assert _tokens(path) == before + len("a new line of verse\n") * 50

    stat = doc.stat()  # same size, same time, other bytes: the hash is consulted only when size or time differ,
    text = doc.read_text()  # so this edit also moves the time, as every editor does
    doc.write_text(text.replace("the", "eht", 1))
    os.utime(doc, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    _, prepared, reasons = _prepare(cfg, caplog)
    assert prepared and "doc003.txt changed" in reasons[0]

    (corpus / "doc100.txt").write_text("one more document\n")
    _, prepared, reasons = _prepare(cfg, caplog)
    assert prepared and reasons == ["re-preparing " + str(path) + ": corpus file doc100.txt was added"]

    _, prepared, reasons = _prepare(cfg, caplog, seed=1)
    assert prepared and reasons == [f"re-preparing {path}: seed changed (0 -> 1)"]
    assert read_manifest(path)["seed"] == 1


def test_binary_corpus_warns(tmp_path, caplog):
    binary = tmp_path / "weights.txt"
    binary.write_bytes(bytes(range(256)) * 8)
    with caplog.at_level(logging.WARNING, logger="retnet"):
        docs = list(iter_documents(binary))
    assert len(docs) == 1 and "\ufffd" in docs[0][1]
    assert "is not valid UTF-8 text" in caplog.text and "binary" in caplog.text
    caplog.clear()
    (tmp_path / "good.txt").write_text("plain text é\n")
    with caplog.at_level(logging.WARNING, logger="retnet"):
        list(iter_documents(tmp_path / "good.txt"))
    assert caplog.text == ""
