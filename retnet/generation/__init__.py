"""Generation: prefill then O(1)-per-token recurrent decoding, with sampling and streaming.

:class:`GenerationMixin` gives a language model ``generate`` / ``stream_generate``; :class:`RetNetForCausalLM`
is the public RetNet model composed with it (the model package itself does not depend on generation).
"""

from .generate import generate, left_pad, stream_generate
from .mixin import GenerationMixin
from .models import RetNetForCausalLM
from .sampling import SamplingConfig, filter_logits, next_token

__all__ = [
    "GenerationMixin",
    "RetNetForCausalLM",
    "SamplingConfig",
    "filter_logits",
    "generate",
    "left_pad",
    "next_token",
    "stream_generate",
]
