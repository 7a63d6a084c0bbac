"""Fixtures: one prepared byte-level dataset shared by all training tests, one thread per test."""

from __future__ import annotations

import pytest
import torch

from retnet.data import prepare_dataset

from .corpus import make_corpus


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    corpus = make_corpus(root / "corpus")
    return prepare_dataset(corpus, root / "prepared", tokenizer="byte", val_fraction=0.2)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and contention with other processes cannot slow them down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
