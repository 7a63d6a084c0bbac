"""Baseline architectures of the paper's comparison (Tables 5 and 6) as token mixers on the shared LM base.

Transformer (:mod:`.transformer`), Linear Transformer (:mod:`.linear_transformer`), RWKV-4 (:mod:`.rwkv`),
H3 (:mod:`.h3`) and Hyena (:mod:`.hyena`), each with a parallel training path and recurrent decoding, in
:class:`MixerLM` (:class:`retnet.model.CausalLM` with their mixer). RetNet itself is :class:`retnet.RetNetForCausalLM`.
"""

from .config import ARCHS, MixerLMConfig
from .model import MixerLM, build_mixer

__all__ = ["ARCHS", "MixerLM", "MixerLMConfig", "build_mixer"]
