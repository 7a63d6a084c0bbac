"""``MixerLM``: the one language-model skeleton every baseline of the comparison shares (paper §3.4).

Embedding (optionally × √D), L pre-norm blocks h = x + Mixer(Norm(x)); y = h + FFN(Norm(h)), a final norm and
an LM head, exactly RetNet's layout (SPEC §5) with the same norm and FFN factories, so that only the token
mixer differs between architectures. The forward contract is RetNet's, so :mod:`retnet.generation` decodes
every baseline through its mixer's recurrent step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..layers.ffn import build_ffn
from ..layers.norm import build_norm
from ..model.loss import next_token_loss
from ..model.modeling import RetNetOutput, next_token_targets
from ..ops.retention import FORMS
from ..utils.checks import check_token_ids
from .base import TokenMixer
from .config import MixerLMConfig
from .h3 import H3
from .hyena import Hyena
from .linear_transformer import LinearAttention
from .rwkv import RWKVTimeMix
from .transformer import CausalSelfAttention


def build_mixer(config: MixerLMConfig, layer_idx: int) -> TokenMixer:
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


class MixerBlock(nn.Module):
    """Pre-norm block of a token mixer and the shared FFN."""

    def __init__(self, config: MixerLMConfig, layer_idx: int):
        super().__init__()
        self.mixer_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.mixer = build_mixer(config, layer_idx)
        self.ffn_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.ffn = build_ffn(config.hidden_size, config.ffn_dim, config.activation, config.ffn_glu, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, state: Any = None, output_state: bool = False) -> tuple[torch.Tensor, Any]:
        """``(B, T, D) -> (B, T, D)`` and the mixer's state."""
        y, state = self.mixer(self.mixer_norm(x), state=state, output_state=output_state)
        h = x + self.dropout(y)
        return h + self.dropout(self.ffn(self.ffn_norm(h))), state


class MixerLM(nn.Module):
    """Causal language model of one token-mixer architecture.

    Args:
        config: a :class:`MixerLMConfig`.
    """

    def __init__(self, config: MixerLMConfig):
        super().__init__()
        if not isinstance(config, MixerLMConfig):
            raise TypeError(f"config must be a MixerLMConfig, got {type(config).__name__}")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_scale = math.sqrt(config.hidden_size) if config.scale_embedding else 1.0
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(MixerBlock(config, i) for i in range(config.num_hidden_layers))
        self.layer_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

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

    def _check_input_ids(self, input_ids: torch.Tensor) -> None:
        check_token_ids(input_ids, self.config.vocab_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        form: str = "chunkwise",
        chunk_size: int | None = None,
        states: list | None = None,
        output_states: bool = False,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss_reduction: str = "mean",
        loss_impl: str = "auto",
        return_logits: bool = True,
    ) -> RetNetOutput:
        """Logits for ``input_ids`` (RetNet's forward contract).

        Args:
            input_ids: ``(B, T)`` token ids.
            form: ``"parallel"`` / ``"chunkwise"`` (the mixer's training path) or ``"recurrent"`` (token by token
                through the mixer's step). With ``states`` every form continues token by token.
            chunk_size: accepted for interface compatibility; each mixer uses its own chunking.
            states: per-layer mixer states from an earlier call.
            output_states: also return the per-layer states after the segment.
            attention_mask: must be None or all ones (left padding is not supported by the baselines).
            cu_seqlens: must be None (the baselines have no document resets inside a row).
            labels: ``(B, T)`` targets aligned with ``input_ids`` (shifted inside); -100 is ignored.

        Returns:
            :class:`retnet.RetNetOutput`.

        Raises:
            ValueError: on bad ids, form, states or a padding mask.
        """
        self._check_input_ids(input_ids)
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
        if cu_seqlens is not None:
            raise ValueError("the baseline models do not support cu_seqlens (train with reset_at_boundaries=False)")
        if attention_mask is not None and not bool((attention_mask != 0).all()):
            raise ValueError("the baseline models do not support left padding; pass equal-length prompts")
        if states is not None and len(states) != len(self.layers):
            raise ValueError(f"states must hold one state per layer ({len(self.layers)}), got {len(states)}")
        B = input_ids.shape[0]
        x = self.dropout(self.embed_tokens(input_ids) * self.embed_scale)  # (B, T, D)
        if form == "recurrent" and states is None:
            states = [layer.mixer.empty_state(B, x.device, x.dtype) for layer in self.layers]
        new_states = []
        for i, layer in enumerate(self.layers):
            x, state = layer(x, None if states is None else states[i], output_states)
            new_states.append(state)
        hidden = self.layer_norm(x)
        targets = next_token_targets(labels, targets, input_ids.shape)
        loss = None
        if targets is not None:
            loss = next_token_loss(
                hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(), reduction=loss_reduction, impl=loss_impl
            )
        logits = self.lm_head(hidden) if return_logits else None  # (B, T, vocab)
        return RetNetOutput(logits=logits, loss=loss, states=new_states if output_states else None)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.embed_tokens.weight), None)
            params.pop(id(self.lm_head.weight), None)
        return sum(p.numel() for p in params.values())

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (RetNet's checkpoint format)."""
        from ..model.serialization import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, *, device=None) -> MixerLM:
        """Load a model written by :meth:`save_pretrained`."""
        from pathlib import Path

        from safetensors.torch import load_file

        directory = Path(directory)
        model = cls(MixerLMConfig.load(directory / "config.json"))
        state = load_file(str(directory / "model.safetensors"))
        if model.config.tie_word_embeddings:
            state["lm_head.weight"] = state["embed_tokens.weight"]
        model.load_state_dict(state)
        return model if device is None else model.to(device)

    def generate(self, input_ids, **kwargs) -> torch.Tensor:
        """Prompt followed by generated tokens; see :func:`retnet.generation.generate`."""
        from ..generation import generate

        return generate(self, input_ids, **kwargs)

    def stream_generate(self, input_ids, **kwargs) -> Iterator[torch.Tensor]:
        """Yield each step's ``(B,)`` new tokens; see :func:`retnet.generation.stream_generate`."""
        from ..generation import stream_generate

        return stream_generate(self, input_ids, **kwargs)
