"""The RetNet language model, its config and presets."""

from .config import RetNetConfig
from .modeling import RetNetBlock, RetNetForCausalLM, RetNetModel, RetNetOutput
from .presets import PRESETS

__all__ = ["PRESETS", "RetNetBlock", "RetNetConfig", "RetNetForCausalLM", "RetNetModel", "RetNetOutput"]
