"""One intra-op thread for these tests (restored afterwards): the models are tiny, and on a busy 2-core
machine two spinning OpenMP threads made them up to 8× slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
