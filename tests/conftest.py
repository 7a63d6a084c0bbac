"""Shared fixtures: seeding and the device to test on.

Without CUDA, the Triton kernels run through Triton's CPU interpreter, which must be selected before anything
imports Triton (some libraries, transformers among them, import it during collection); so it is set here, at
conftest import, and only when no GPU is present.
"""

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test (restored afterwards): the test models are tiny, and on a busy 2-core machine
    spinning OpenMP threads made them several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def exact_fp32_dots():
    """Exact float32 dots in the Triton kernels, which follow torch's float32 matmul precision (restored after)."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(old)


@pytest.fixture
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
