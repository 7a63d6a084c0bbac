"""Generation: prefill then O(1)-per-token recurrent decoding, with sampling and streaming.

:class:`GenerationMixin` gives a language model ``generate`` / ``stream_generate``; :class:`RetNetForCausalLM`
is the public RetNet model composed with it (the model package itself does not depend on generation).
:class:`DecodeEngine` is the fast loop (static state, on-device sampling, a CUDA graph per token);
:func:`generate` / :func:`stream_generate` use it on CUDA and the eager loop elsewhere.
"""

from .engine import DecodeEngine
from .fused_step import FusedLaunches
from .generate import generate, left_pad, stream_generate
from .mixin import GenerationMixin
from .models import RetNetForCausalLM
from .sampling import SamplingConfig, choose_tokens, filter_logits, gumbel_noise, next_token, sampling_key

__all__ = [
    "DecodeEngine",
    "FusedLaunches",
    "GenerationMixin",
    "RetNetForCausalLM",
    "SamplingConfig",
    "choose_tokens",
    "filter_logits",
    "generate",
    "gumbel_noise",
    "left_pad",
    "next_token",
    "sampling_key",
    "stream_generate",
]
