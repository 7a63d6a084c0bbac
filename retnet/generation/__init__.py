"""Generation: prefill then O(1)-per-token recurrent decoding, with sampling and streaming."""

from .generate import generate, left_pad, stream_generate
from .sampling import SamplingConfig, filter_logits, next_token

__all__ = ["SamplingConfig", "filter_logits", "generate", "left_pad", "next_token", "stream_generate"]
