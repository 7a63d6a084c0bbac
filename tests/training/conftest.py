"""Fixtures: one prepared byte-level dataset shared by all training tests."""

from __future__ import annotations

import pytest

from retnet.data import prepare_dataset

from .corpus import make_corpus


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    corpus = make_corpus(root / "corpus")
    return prepare_dataset(corpus, root / "prepared", tokenizer="byte", val_fraction=0.2)
