"""``MixerLM``: the baselines of the comparison on the shared language-model base (paper §3.4).

:class:`~retnet.model.lm.CausalLM` with the mixer of ``config.arch`` (:func:`build_mixer`): the same embedding,
pre-norm blocks, norm and FFN factories, final norm, head, loss and checkpoints as RetNet (docs/spec.md §5), so
that only the token mixer differs between architectures. The baselines keep their own parameter names
(``embed_tokens``, ``layers.N.mixer_norm``, ``layers.N.mixer``, ``layers.N.ffn_norm``, ``layer_norm``, ``lm_head``)
and support neither left padding nor packed documents. :mod:`retnet.generation` decodes every baseline through
its mixer's recurrent step; :class:`~retnet.generation.GenerationMixin` provides ``generate``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..generation.mixin import GenerationMixin
from ..model.lm import CausalLM, DecoderBlock
from .base import RecurrentMixer
from .config import MixerLMConfig
from .h3 import H3
from .hyena import Hyena
from .linear_transformer import LinearAttention
from .rwkv import RWKVTimeMix
from .transformer import CausalSelfAttention


def build_mixer(config: MixerLMConfig, layer_idx: int) -> RecurrentMixer:
    """The token mixer of layer ``layer_idx`` for ``config.arch``."""
    D = config.hidden_size
    if config.arch == "transformer":
        return CausalSelfAttention(D, config.num_heads)
    if config.arch == "linear_transformer":
        return LinearAttention(D, config.num_heads)
    if config.arch == "rwkv":
        return RWKVTimeMix(D, layer_idx, config.num_hidden_layers)
    if config.arch == "h3":
        return H3(D, config.h3_head_dim, config.ssm_state_size)
    if config.arch == "hyena":
        return Hyena(
            D,
            config.hyena_order,
            config.hyena_filter_size,
            config.hyena_emb_dim,
            config.hyena_short_filter,
            config.max_position_embeddings,
        )
    raise ValueError(f"unknown arch {config.arch!r}")


class MixerBlock(DecoderBlock):
    """Pre-norm block of a token mixer and the shared FFN (names ``mixer_norm``, ``mixer``, ``ffn_norm``, ``ffn``)."""

    def make_mixer(self, config: MixerLMConfig, layer_idx: int) -> RecurrentMixer:
        """The mixer of ``config.arch`` (see :func:`build_mixer`)."""
        return build_mixer(config, layer_idx)


class MixerLM(GenerationMixin, CausalLM):
    """Causal language model of one token-mixer architecture.

    The forward contract is :meth:`retnet.model.CausalLM.forward`'s; ``chunk_size`` is ignored (each mixer chunks
    its own way), ``attention_mask`` must be all ones and ``cu_seqlens`` None.

    Args:
        config: a :class:`MixerLMConfig`.
    """

    config_class = MixerLMConfig
    block_class = MixerBlock
    supports_left_padding = False
    supports_packed_documents = False

    @torch.no_grad()
    def _init_weights(self) -> None:
        """RetNet's generic initialisation (Xavier-uniform linears, N(0, D^−1) embeddings and head), then each
        mixer's own (SSM and filter parameters)."""
        std = self.config.hidden_size**-0.5
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=std)
        for layer in self.layers:
            if hasattr(layer.mixer, "reset_parameters"):
                layer.mixer.reset_parameters()
