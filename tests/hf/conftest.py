"""Fixtures of the transformers adapter tests: one small native model (byte vocabulary) and its wrapper."""

import pytest
import torch

pytest.importorskip("transformers")

from retnet import RetNetConfig, RetNetForCausalLM  # noqa: E402
from retnet.hf import RetNetHFForCausalLM, register_auto_classes  # noqa: E402

VOCAB = 257  # the byte tokenizer's: 256 bytes and the separator


@pytest.fixture
def native():
    torch.manual_seed(0)
    return RetNetForCausalLM(RetNetConfig.from_preset("debug", vocab_size=VOCAB)).eval()


@pytest.fixture
def wrapped(native):
    register_auto_classes()
    return RetNetHFForCausalLM.from_native(native).eval()
