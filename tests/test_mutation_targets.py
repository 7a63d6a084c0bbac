"""scripts/mutation.py stays in step with the code: every mutant still plants in its file, and its tests exist."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mutation_module():
    spec = importlib.util.spec_from_file_location("retnet_mutation_script", ROOT / "scripts" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


MUTATION = _mutation_module()


@pytest.mark.parametrize("mutant", MUTATION.MUTANTS, ids=lambda m: m.id)
def test_every_mutant_plants_once_and_names_existing_tests(mutant):
    text = (ROOT / mutant.path).read_text()
    planted = MUTATION.plant(text, mutant)  # raises when the line moved on
    assert planted != text
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).exists(), f"{mutant.id} names a missing test {test}"


def test_mutant_ids_are_unique():
    ids = [m.id for m in MUTATION.MUTANTS]
    assert len(ids) == len(set(ids))
