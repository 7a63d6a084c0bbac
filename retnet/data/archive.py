"""Corpus archives: the fetched text of named corpora in one ``.tar.xz``, to install on a machine without network.

``pack_corpora(names, cache_dir, out)`` writes one archive of the corpora's text folders (as
:func:`~retnet.data.corpora.fetch_corpus` left them); ``unpack_corpora(archive, cache_dir)`` installs them into another
cache, where :func:`~retnet.data.corpora.resolve_source` (and so ``retnet train`` / ``retnet compare``) finds them
with ``fetch=False``. Layout of an archive::

    CORPORA.json                     # first member: format, and per corpus its file count, bytes, text digest and
                                     # the FETCHED.json record of the cache it was packed from
    corpora/<name>/text/<path>       # the documents, sorted by path

Packing is reproducible: members carry no owner, time or mode of the packing machine, so the same text gives the
same archive bytes (and sha256). Unpacking trusts nothing in the archive: it accepts only regular files at
``corpora/<name>/text/<relative path>`` of corpora the first member lists (no links, no absolute paths, no ``..``),
writes them into a staging folder inside the cache, and installs a corpus only when the text it got has the digest
the first member records (and, for a registered subset, the digest its spec pins). The installed corpus's
``FETCHED.json`` says it came from an archive, with the archive's name and sha256.
"""

from __future__ import annotations

import io
import json
import logging
import lzma
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from .corpora import CORPORA, corpus_dir, list_files, sha256_file, text_digest

logger = logging.getLogger(__name__)

INDEX = "CORPORA.json"
FORMAT = "retnet-corpora"
FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STAGING = ".unpack.partial"


def _filters(preset: int, total_bytes: int) -> list[dict]:
    # A dictionary as large as the text (up to 256 MiB: the ~200 MB kernel subset fits) finds repeats across files
    # that the default 64 MiB misses; the compressor needs about ten times that in memory, the decompressor once.
    dict_size = min(256 << 20, max(1 << 20, 1 << max(total_bytes - 1, 1).bit_length()))
    return [{"id": lzma.FILTER_LZMA2, "preset": preset | lzma.PRESET_EXTREME, "dict_size": dict_size}]


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_corpora(names: list[str], cache_dir: str | Path, out: str | Path, *, preset: int = 9) -> dict:
    """Write the fetched text of corpora ``names`` from ``cache_dir`` into the archive ``out``.

    Args:
        names: corpus names (each fetched into ``cache_dir`` already; ``retnet data fetch``).
        cache_dir: the cache root the corpora are read from.
        out: the ``.tar.xz`` to write (replaced if present; written under a temporary name first).
        preset: the xz preset (0-9; ``extreme`` is always on).

    Returns:
        The archive's index (what its first member holds) plus ``"archive"`` (path), ``"sha256"`` and ``"bytes"``.

    Raises:
        ValueError: no names, a name given twice, or a name that is not a plain corpus name.
        FileNotFoundError: a corpus that is not fetched into ``cache_dir``.
    """
    if not names or len(set(names)) != len(names):
        raise ValueError(f"names must list distinct corpora, got {names}")
    index = {"format": FORMAT, "format_version": FORMAT_VERSION, "corpora": {}}
    files = {}
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"names: {name!r} is not a corpus name")
        root = corpus_dir(name, cache_dir)
        if not (root / "FETCHED.json").is_file() or not (root / "text").is_dir():
            raise FileNotFoundError(f"corpus {name!r} is not fetched into {cache_dir}; run 'retnet data fetch {name}'")
        text = root / "text"
        files[name] = [(f.relative_to(text).as_posix(), f) for f in list_files(text)]
        index["corpora"][name] = {
            "files": len(files[name]),
            "bytes": sum(f.stat().st_size for _, f in files[name]),
            "text_sha256": text_digest(text),
            "fetched": json.loads((root / "FETCHED.json").read_text()),
        }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    blob = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
    total = sum(record["bytes"] for record in index["corpora"].values())
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, filters=_filters(preset, total)) as xz:
        with tarfile.open(fileobj=xz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_member(INDEX, len(blob)), io.BytesIO(blob))
            for name in names:
                for rel, path in files[name]:
                    with open(path, "rb") as f:
                        tar.addfile(_member(f"corpora/{name}/text/{rel}", path.stat().st_size), f)
    tmp.replace(out)
    logger.info("packed %s into %s (%d bytes)", ", ".join(names), out, out.stat().st_size)
    return index | {"archive": str(out), "sha256": sha256_file(out), "bytes": out.stat().st_size}


def _safe_target(member: tarfile.TarInfo, corpora: dict) -> tuple[str, PurePosixPath]:
    """``(corpus, relative path)`` of a document member; anything else is refused."""
    if not member.isfile():
        raise ValueError(f"archive member {member.name!r} is not a regular file (links and devices are refused)")
    path = PurePosixPath(member.name)
    parts = path.parts
    if path.is_absolute() or "\\" in member.name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"archive member {member.name!r} is not a plain relative path")
    if len(parts) < 4 or parts[0] != "corpora" or parts[2] != "text" or parts[1] not in corpora:
        raise ValueError(f"archive member {member.name!r} is outside corpora/<listed corpus>/text/")
    return parts[1], PurePosixPath(*parts[3:])


def _read_index(tar: tarfile.TarFile, first: tarfile.TarInfo | None) -> dict:
    if first is None or first.name != INDEX or not first.isfile():
        raise ValueError(f"not a corpus archive: its first member is not {INDEX}")
    index = json.loads(tar.extractfile(first).read())
    if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("corpora"), dict):
        raise ValueError(f"not a corpus archive: {INDEX} is not a {FORMAT} index")
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"corpus archive format {index.get('format_version')}; this version reads {FORMAT_VERSION}")
    bad = [name for name in index["corpora"] if not _NAME.match(name)]
    if bad or not index["corpora"]:
        raise ValueError(f"corpus archive lists no corpora or bad corpus names: {bad}")
    return index


def unpack_corpora(
    archive: str | Path, cache_dir: str | Path, *, sha256: str = "", overwrite: bool = False
) -> dict[str, Path]:
    """Install the corpora of ``archive`` (written by :func:`pack_corpora`) into ``cache_dir``.

    A corpus the cache already holds with the same text digest is left as it is.

    Args:
        archive: the ``.tar.xz``.
        cache_dir: the cache root to install into.
        sha256: refuse the archive unless its sha256 is this (hex; empty: not checked).
        overwrite: replace a corpus the cache holds with different text (otherwise that is an error).

    Returns:
        ``{name: text folder}`` for every corpus of the archive.

    Raises:
        ValueError: a sha256 mismatch, an archive that is not a corpus archive, a member outside its corpus's text
            folder, text whose digest differs from the archive's record or from a registered subset's pin, or a
            different corpus already in the cache without ``overwrite``.
    """
    archive = Path(archive)
    digest = sha256_file(archive)
    if sha256 and digest != sha256.lower():
        raise ValueError(f"archive {archive} has sha256 {digest}, not the expected {sha256}")
    cache = Path(cache_dir).expanduser()
    staging = cache / "corpora" / _STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive, mode="r|xz") as tar:
            members = iter(tar)
            index = _read_index(tar, next(members, None))
            for member in members:
                name, rel = _safe_target(member, index["corpora"])
                target = staging / name / "text" / rel
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "xb") as dst:
                        shutil.copyfileobj(src, dst)
                except (FileExistsError, NotADirectoryError) as err:
                    raise ValueError(f"archive member {member.name!r} clashes with an earlier member") from err
        for name, record in index["corpora"].items():
            _check_text(name, staging / name / "text", record)
        return {name: _install(name, staging / name, record, cache, archive, digest, overwrite)
                for name, record in index["corpora"].items()}  # fmt: skip
    except (tarfile.TarError, lzma.LZMAError, EOFError, json.JSONDecodeError) as err:
        raise ValueError(f"{archive} is not a readable corpus archive: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_text(name: str, text: Path, record: dict) -> None:
    got = text_digest(text) if text.is_dir() else None
    if got != record.get("text_sha256"):
        raise ValueError(f"corpus {name!r} in the archive has text digest {got}, not the {record.get('text_sha256')} "
                         "its index records: the archive was altered or is damaged")  # fmt: skip
    spec = CORPORA.get(name)
    if spec is not None and spec.client == "subset" and spec.sha256 and got != spec.sha256:
        raise ValueError(f"corpus {name!r} in the archive has text digest {got}, not the {spec.sha256} its registered "
                         "spec pins")  # fmt: skip


def _install(name: str, staged: Path, record: dict, cache: Path, archive: Path, digest: str, overwrite: bool) -> Path:
    root = corpus_dir(name, cache)
    done = root / "FETCHED.json"
    if done.is_file() and (root / "text").is_dir():
        held = json.loads(done.read_text()).get("text_sha256") or text_digest(root / "text")
        if held == record["text_sha256"]:
            logger.info("%s: the cache holds this text already", name)
            return root / "text"
        if not overwrite:
            raise ValueError(f"{root} holds another {name!r} (text digest {held}); pass overwrite to replace it")
    root.mkdir(parents=True, exist_ok=True)
    done.unlink(missing_ok=True)  # no FETCHED.json while the text is being replaced
    shutil.rmtree(root / "text", ignore_errors=True)
    (staged / "text").rename(root / "text")
    meta = {"name": name, "source": "archive", "archive": archive.name, "archive_sha256": digest}
    meta.update({k: record[k] for k in ("files", "bytes", "text_sha256")} | {"packed_from": record.get("fetched")})
    done.write_text(json.dumps(meta, indent=1) + "\n")
    logger.info("installed %s from %s into %s", name, archive.name, root / "text")
    return root / "text"
