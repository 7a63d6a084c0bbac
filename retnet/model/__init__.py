"""The language models' shared base, the RetNet language model, its config and presets (no generation here)."""

from .config import RetNetConfig
from .lm import CausalLM, CausalLMOutput, DecoderBlock
from .mixer import TokenMixer
from .modeling import RetNetBlock, RetNetForCausalLM, RetNetModel, RetNetOutput
from .presets import PRESETS

__all__ = [
    "PRESETS",
    "CausalLM",
    "CausalLMOutput",
    "DecoderBlock",
    "RetNetBlock",
    "RetNetConfig",
    "RetNetForCausalLM",
    "RetNetModel",
    "RetNetOutput",
    "TokenMixer",
]
