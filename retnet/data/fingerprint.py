"""What a prepared dataset was made from: corpus files (size, modification time, content hash) and settings.

A prepared dataset records this *cache key* in its manifest; a cached dataset is reused only while the key
still matches, so an edited corpus, another tokenizer setting, split seed or fraction re-prepares it. Checking
is cheap when nothing changed: a file whose size and modification time match its record is taken as unchanged
(as ``make`` and ``rsync`` do); a file whose size or time differs is hashed (streaming sha256, about a second per
GB), and only a different hash counts as a change.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..utils.files import sha256_file
from .corpora import list_files


def file_records(path: str | os.PathLike) -> list[dict]:
    """``[{"file", "size", "mtime_ns", "sha256"}]`` for every document file under ``path`` (sorted).

    Raises:
        FileNotFoundError: ``path`` does not exist or holds no document files.
    """
    path = Path(path)
    out = []
    for f in list_files(path):
        st = f.stat()
        rel = f.name if path.is_file() else str(f.relative_to(path))
        out.append({"file": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": None})
    return out


def _same_or_hash(path: Path, now: dict, before: dict) -> bool:
    """Fill ``now["sha256"]``; True when the file's content is what ``before`` recorded."""
    if now["size"] == before.get("size") and now["mtime_ns"] == before.get("mtime_ns"):
        now["sha256"] = before.get("sha256")
        return True
    now["sha256"] = sha256_file(path)
    return now["sha256"] == before.get("sha256")


def corpus_key(path: str | os.PathLike, recorded: dict | None = None) -> dict:
    """The key of one local corpus: its files' records, hashed where they differ from ``recorded`` (or all)."""
    path = Path(path)
    records = file_records(path)
    before = {r["file"]: r for r in (recorded or {}).get("files", [])}
    for rec in records:
        target = path if path.is_file() else path / rec["file"]
        if rec["file"] in before:
            _same_or_hash(target, rec, before[rec["file"]])
        else:
            rec["sha256"] = sha256_file(target)
    return {"path": str(path.resolve()), "files": records}


def key_change(old: dict | None, new: dict) -> str | None:
    """A short human reason why ``new`` differs from ``old`` (None when they match)."""
    if old is None:
        return "the cached dataset records no cache key (prepared by an older version)"
    for name in sorted(set(old) | set(new)):
        if name == "corpora":
            continue
        if old.get(name) != new.get(name):
            return f"{name} changed ({old.get(name)!r} -> {new.get(name)!r})"
    old_c, new_c = old.get("corpora", []), new.get("corpora", [])
    if len(old_c) != len(new_c):
        return "the list of corpora changed"
    for a, b in zip(old_c, new_c):
        if "files" not in b or "files" not in a:
            if a != b:
                return f"corpus {b.get('name')} changed ({a.get('version')!r} -> {b.get('version')!r})"
            continue
        fa = {r["file"]: r for r in a["files"]}
        fb = {r["file"]: r for r in b["files"]}
        for name in sorted(set(fa) | set(fb)):
            if name not in fa:
                return f"corpus file {name} was added"
            if name not in fb:
                return f"corpus file {name} was removed"
            if fa[name]["sha256"] != fb[name]["sha256"]:
                return f"corpus file {name} changed ({fa[name]['size']:,} -> {fb[name]['size']:,} bytes)"
    return None
