"""Release files: pyproject metadata, CITATION.cff (this software and the paper) and CHANGELOG.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_pyproject_metadata(project):
    assert project["authors"] == [{"name": "retnet developers"}]
    classifiers = project["classifiers"]
    assert all(" :: " in c for c in classifiers) and len(set(classifiers)) == len(classifiers)
    assert "Topic :: Scientific/Engineering :: Artificial Intelligence" in classifiers
    # Classifiers name no Python older than requires-python allows.
    oldest = tuple(int(x) for x in project["requires-python"].removeprefix(">=").split("."))
    for c in classifiers:
        m = re.fullmatch(r"Programming Language :: Python :: (\d+)\.(\d+)", c)
        assert m is None or (int(m[1]), int(m[2])) >= oldest, c
    assert "License ::" not in " ".join(classifiers), "the licence is the SPDX 'license' field"


def test_citation_cites_software_and_paper(project):
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    for key in ("cff-version", "message", "title", "authors", "type", "version"):
        assert cff.get(key), key
    assert cff["type"] == "software" and str(cff["version"]) == project["version"]
    assert cff["authors"] == [{"name": "retnet developers"}]
    (paper,) = cff["references"]
    assert paper["year"] == 2023 and paper["authors"][0]["family-names"] == "Sun"
    assert "Retentive Network" in paper["title"]
    assert any(i["value"] == "arXiv:2307.08621" for i in paper["identifiers"])


def test_changelog_unreleased_section():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog") and "keepachangelog.com" in text
    sections = re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)
    assert sections and sections[0] == "Unreleased"
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert set(re.findall(r"^### (\w+)", unreleased, flags=re.MULTILINE)) <= {
        "Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"
    }  # fmt: skip
    for item in ("CausalLM", "TrainConfig", "torch.compile", "fused", "precision", "activation checkpointing",
                 "DecodeEngine", "KernelTuning", "pickle", "run folder", "content", "Checksums",
                 "benchmarks/train.py", "benchmarks/decode.py"):  # fmt: skip
        assert item in unreleased, item
