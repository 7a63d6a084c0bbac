"""The repository explains itself: no citations of documents it does not hold, no broken relative links in its
Markdown, and the dependency table of docs/architecture.md equal to the package's imports."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve().relative_to(ROOT).as_posix()

# Citations of documents that are not in the repository (the spec is docs/spec.md, the layering docs/architecture.md).
FOREIGN_CITATION = re.compile(r"\bSPEC(?:\.md)?\s*§|\b(?:SPEC|STYLE|TARGETS)\.md\b|\bTARGETS\b")

# Docstrings inside @triton.jit functions stay byte-identical (the GPU-verified kernels are identified by their
# source), so the citations there are allowed, by file and exact line.
JIT_DOCSTRING_LINES = {
    (
        "retnet/ops/retention/triton/tiles.py",
        '    """1 / max(|s_n|, √c_n) (SPEC §3 factors 2 and 3), or 1 without normalisation; 0 on padded rows.',
    ),
}

MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def tracked_files() -> list[str]:
    """Paths of the files git tracks, relative to the repository root (skips outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout: {e}")
    return [p for p in out.split("\0") if p]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def foreign_citations(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line citing SPEC §N, SPEC.md, STYLE.md or TARGETS."""
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if FOREIGN_CITATION.search(line)]


def test_citation_pattern_catches_what_it_should():
    cited = ["see SPEC §3", "SPEC.md says", "(STYLE.md)", "TARGETS.md, goal 1", "TARGETS goals 2-3", "SPEC§4"]
    clean = ["docs/spec.md §3", "RETNET_TORCH_SPEC", "_SPECIAL", "docs/architecture.md", "targets"]
    assert all(foreign_citations(t) for t in cited)
    assert not any(foreign_citations(t) for t in clean)


def test_no_citations_of_documents_outside_the_repository():
    found = []
    for name in tracked_files():
        if name == THIS_FILE or not (ROOT / name).is_file():
            continue
        text = read_text(ROOT / name)
        if text is None:
            continue
        found += [
            f"{name}:{i}: {line.strip()}"
            for i, line in foreign_citations(text)
            if (name, line) not in JIT_DOCSTRING_LINES
        ]
    assert not found, "cite docs/spec.md §N or docs/architecture.md instead:\n" + "\n".join(found)


def _jit_function_lines(path: Path) -> set[int]:
    """Line numbers inside functions decorated with ``triton.jit``."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in node.decorator_list):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


@pytest.mark.parametrize("name, line", sorted(JIT_DOCSTRING_LINES))
def test_allowed_citations_exist_and_sit_in_jit_functions(name, line):
    path = ROOT / name
    lines = path.read_text().splitlines()
    assert line in lines, f"{name}: allow-listed line is gone; remove it from JIT_DOCSTRING_LINES"
    assert lines.index(line) + 1 in _jit_function_lines(path), f"{name}: allow-listed line is not in a jit function"


def markdown_files() -> list[Path]:
    """README.md, benchmarks/README.md and every Markdown file under docs/."""
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets that are paths in the repository (no URL scheme, no pure anchor), anchors removed."""
    targets = MARKDOWN_LINK.findall(text) + REFERENCE_LINK.findall(text)
    paths = [t.split("#", 1)[0] for t in targets if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", t)]
    return [p for p in paths if p]


def test_link_parser_finds_relative_links():
    text = "[a](docs/x.md) ![b](img.png) [c](https://example.com) [d](#top) [e](y.md#part)\n[f]: ref/z.md\n"
    assert relative_links(text) == ["docs/x.md", "img.png", "y.md", "ref/z.md"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files(path):
    broken = [t for t in relative_links(path.read_text()) if not (path.parent / t).exists()]
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def _group(module: str) -> str | None:
    """The subpackage of ``retnet`` a module belongs to (``"retnet"`` for the top level), None outside it."""
    parts = module.split(".")
    if parts[0] != "retnet":
        return None
    return parts[1] if len(parts) > 1 and (ROOT / "retnet" / parts[1]).is_dir() else "retnet"


def code_dependencies() -> dict[str, set[str]]:
    """Subpackage -> the other subpackages it imports (lazy imports included), from every module's AST."""
    deps: dict[str, set[str]] = {}
    for path in sorted((ROOT / "retnet").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
        source = _group(module) if path.parent != ROOT / "retnet" else "retnet"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(parent + ([node.module] if node.module else []))
                # `from retnet import data` imports a subpackage; `from retnet import RetNetConfig` the top level.
                names = [f"{base}.{a.name}" for a in node.names] if base == "retnet" else [base]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("benchmarks", "tests"), f"{path}: imports {name}"
                group = _group(name)
                if group is not None and group != source:
                    targets.add(group)
        deps.setdefault(source, set()).update(targets)
    return deps


def documented_dependencies() -> dict[str, set[str]]:
    """The dependency table of docs/architecture.md: package -> the packages it imports from."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers and the dependency rule", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in re.findall(r"^\| `(\w+)` \|([^|]*)\|", section, re.MULTILINE):
        table[row[0]] = set(re.findall(r"`(\w+)`", row[1]))
    return table


def test_architecture_dependency_table_matches_the_imports():
    documented, actual = documented_dependencies(), code_dependencies()
    assert set(documented) == set(actual), f"packages: documented {sorted(documented)}, in code {sorted(actual)}"
    wrong = {p: (sorted(documented[p]), sorted(actual[p])) for p in actual if documented[p] != actual[p]}
    assert not wrong, f"docs/architecture.md table differs from the code (documented, actual): {wrong}"


def test_core_layers_never_import_upwards():
    deps = code_dependencies()
    assert deps["utils"] == set()
    assert deps["ops"] <= {"utils"}
    assert deps["layers"] <= {"ops", "utils"}
    assert not deps["model"] & {"generation", "training", "baselines", "compare", "cli", "hf"}
    assert not deps["generation"] & {"training", "baselines", "compare", "cli", "hf"}
