"""The documentation site's configuration: every guide and API page is in the nav, every nav entry exists, and
the API reference covers every module of the package except the few listed here (``mkdocs build --strict``
itself runs in CI, .ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Modules without an API section, and why.
UNDOCUMENTED = {
    "retnet.__main__": "python -m retnet",
    "retnet.generation.demo": "what retnet demo prints",
    "retnet.ops.retention.triton.forward": "Triton kernels (documented in the source)",
    "retnet.ops.retention.triton.backward": "Triton kernels (documented in the source)",
    "retnet.ops.retention.triton.tiles": "Triton device helpers",
    "retnet.ops.retention.triton.dispatch": "internal routing of the Triton backend",
}


def nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_nav_entries_exist_and_cover_the_guides_and_api_pages():
    pages = nav_pages(config()["nav"])
    assert len(pages) == len(set(pages)), pages
    assert [p for p in pages if not (DOCS / p).is_file()] == []
    guides = {p.name for p in DOCS.glob("*.md")}
    api = {f"api/{p.name}" for p in (DOCS / "api").glob("*.md")}
    assert guides | api <= set(pages), sorted((guides | api) - set(pages))


def test_api_reference_covers_every_module():
    directives = set()
    for page in (DOCS / "api").glob("*.md"):
        directives |= set(re.findall(r"^::: (\S+)$", page.read_text(), flags=re.MULTILINE))
    modules = set()
    for path in (ROOT / "retnet").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[1:2] == ("cli",):  # the command line documents itself (retnet COMMAND --help)
            continue
        if parts[-1] == "__init__" and len(parts) > 2:  # a subpackage's __init__ re-exports its modules
            continue
        modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert sorted(directives - modules) == []  # every directive names a module of the package
    assert sorted(modules - directives - set(UNDOCUMENTED)) == []
    assert sorted(set(UNDOCUMENTED) & directives) == []
