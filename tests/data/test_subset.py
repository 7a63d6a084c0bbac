"""Subset corpora: a fixed selection of a fetched corpus's files under a byte budget, pinned by its text digest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest

from retnet.data import fetch_corpus, resolve_source
from retnet.data.corpora import CORPORA, CorpusSpec, corpus_dir, subset_files, text_digest

FILES = {  # relative path in the parent's text folder: size in bytes
    "linux/kernel/sched.c": 300,
    "linux/kernel/fork.c": 200,
    "linux/mm/slab.h": 250,
    "linux/drivers/gpu/regs.h": 5_000,  # over the per-file limit: left out
    "linux/Documentation/index.rst": 100,  # not C: left out
    "linux/lib/sort.c": 150,
    "linux/lib/list.h": 120,
}


@pytest.fixture
def parent(tmp_path):
    """A cache holding a fetched fake "linux" corpus."""
    text = corpus_dir("linux", tmp_path) / "text"
    for rel, size in FILES.items():
        (text / rel).parent.mkdir(parents=True, exist_ok=True)
        (text / rel).write_text((rel + "\n") * (size // (len(rel) + 1)) + "x" * (size % (len(rel) + 1)))
    (corpus_dir("linux", tmp_path) / "FETCHED.json").write_text(json.dumps({"name": "linux", "archive": "l.deb"}))
    return tmp_path


def spec(**kw) -> CorpusSpec:
    base = CorpusSpec("linux-test", "subset", "linux", "", r"\.[ch]$", max_bytes=700, max_file_bytes=1000)
    return replace(base, **kw)


def test_the_selection_is_a_prefix_of_the_folder_hash_order_within_the_budget(parent):
    text = corpus_dir("linux", parent) / "text"
    eligible = [r for r in FILES if r.endswith((".c", ".h")) and FILES[r] <= 1000]
    order = sorted(eligible, key=lambda r: (hashlib.sha256(r.rpartition("/")[0].encode()).hexdigest(), r))
    expected, used = [], 0
    for rel in order:
        if used + FILES[rel] > 700:
            break
        expected.append(rel)
        used += FILES[rel]
    chosen = subset_files(spec(), text)
    assert chosen == expected and 0 < len(chosen) < len(eligible)
    assert sum(FILES[r] for r in chosen) <= 700 < sum(FILES[r] for r in order[: len(chosen) + 1])
    assert subset_files(spec(max_bytes=10**6), text) == order  # the whole eligible set, in the same order
    assert "linux/drivers/gpu/regs.h" in subset_files(spec(max_bytes=10**6, max_file_bytes=0), text)
    with pytest.raises(ValueError, match="not a subset"):
        subset_files(CORPORA["sotu"], text)


def test_fetch_selects_records_and_checks_the_pinned_digest(parent):
    text = fetch_corpus("linux-test", parent, spec=spec(), downloader=None)
    chosen = subset_files(spec(), corpus_dir("linux", parent) / "text")
    assert sorted(p.relative_to(text).as_posix() for p in text.rglob("*") if p.is_file()) == sorted(chosen)
    record = json.loads((corpus_dir("linux-test", parent) / "FETCHED.json").read_text())
    assert record["source"] == "subset" and record["subset_of"] == "linux" and record["parent"]["archive"] == "l.deb"
    assert record["text_sha256"] == text_digest(text) and record["bytes"] == sum(FILES[r] for r in chosen)

    pinned = spec(name="linux-pinned", sha256=record["text_sha256"])
    assert text_digest(fetch_corpus(pinned.name, parent, spec=pinned, downloader=None)) == record["text_sha256"]
    wrong = spec(name="linux-wrong", sha256="0" * 64)
    with pytest.raises(ValueError, match="not the pinned 0{64}: the parent package is another version"):
        fetch_corpus(wrong.name, parent, spec=wrong, downloader=None)
    assert not (corpus_dir("linux-wrong", parent) / "text").exists()


def test_the_registered_kernel_subset_is_pinned_and_resolves_only_when_installed(tmp_path):
    subsets = [s for s in CORPORA.values() if s.client == "subset"]
    assert subsets and all(s.package in CORPORA and len(s.sha256) == 64 and s.max_bytes > 0 for s in subsets)
    with pytest.raises(FileNotFoundError, match="is not fetched"):
        resolve_source(subsets[0].name, tmp_path, fetch=False)
