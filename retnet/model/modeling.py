"""The RetNet language model: :class:`~retnet.model.lm.CausalLM` with multi-scale retention as the mixer
(paper §2.3; docs/spec.md §5).

Module names follow torchscale (``model.layers.N.retention.*``, ``model.layers.N.retention_layer_norm``,
``model.layers.N.final_layer_norm``, ``model.layer_norm``, ``lm_head``), so official checkpoints map by prefix
(:mod:`retnet.model.torchscale`). The class here has no ``generate``: the model package does not depend on
generation. The public :class:`retnet.RetNetForCausalLM` adds it (:mod:`retnet.generation.models`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.position import RotationTable
from ..layers.retention import MultiScaleRetention, positions_for
from ..ops.retention import RetentionState
from .config import RetNetConfig
from .init import init_weights
from .lm import CausalLM, CausalLMOutput, DecoderBlock, init_trunk, run_trunk

RetNetOutput = CausalLMOutput  # the public name of the output type (docs/spec.md §9)


class RetNetBlock(DecoderBlock):
    """Pre-norm block: h = x + MSR(Norm(x)); y = h + FFN(Norm(h)). Module names follow torchscale."""

    mixer_norm_name = "retention_layer_norm"
    mixer_name = "retention"
    ffn_norm_name = "final_layer_norm"

    def __init__(self, config: RetNetConfig, layer_idx: int = 0):
        super().__init__(config, layer_idx)

    def make_mixer(self, config: RetNetConfig, layer_idx: int) -> MultiScaleRetention:
        """Multi-scale retention (docs/spec.md §4)."""
        return MultiScaleRetention(
            config.hidden_size,
            config.num_heads,
            config.value_dim,
            decay_schedule=config.decay_schedule,
            head_norm=config.head_norm,
            group_norm_eps=config.group_norm_eps,
            use_gate=config.use_gate,
            backend=config.backend,
        )


def segment_positions(input_ids: torch.Tensor, states, offset, cu_seqlens, start: int = 0) -> torch.Tensor:
    """``(B, T)`` absolute positions of a segment, computed once for all layers (see :func:`positions_for`)."""
    B, T = input_ids.shape
    state = None if states is None else states[0]
    return positions_for(B, T, input_ids.device, state=state, offset=offset, cu_seqlens=cu_seqlens, start=start)


def segment_rotation(trunk: nn.Module, positions: torch.Tensor) -> RotationTable:
    """The rotation of q and k at ``positions`` that every layer of ``trunk`` shares, built once per forward."""
    return trunk.layers[0].retention.rotation_table(positions)


class RetNetModel(nn.Module):
    """Embedding, L blocks and the final norm (no LM head): the trunk of :class:`RetNetForCausalLM`."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        init_trunk(self, config, RetNetBlock)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        form: str,
        chunk_size: int,
        states: list[RetentionState] | None,
        offset: torch.Tensor | None,
        cu_seqlens: torch.Tensor | None,
        output_states: bool,
    ) -> tuple[torch.Tensor, list[RetentionState] | None]:
        """Hidden states ``(B, T, D)`` and, if asked, the per-layer states after the segment."""
        positions = segment_positions(input_ids, states, offset, cu_seqlens)
        return run_trunk(
            self,
            input_ids,
            form=form,
            chunk_size=chunk_size,
            states=states,
            offset=offset,
            cu_seqlens=cu_seqlens,
            positions=positions,
            output_states=output_states,
            rotation=segment_rotation(self, positions),
        )


class RetNetForCausalLM(CausalLM):
    """RetNet language model with an LM head, the three forms and checkpoints (no ``generate``; see the module
    docstring).

    Args:
        config: the model's :class:`RetNetConfig`.
    """

    config_class = RetNetConfig
    block_class = RetNetBlock
    trunk_name = "model"
    supports_context_parallel = True

    def _build_trunk(self, config: RetNetConfig) -> None:
        self.model = RetNetModel(config)

    def _init_weights(self) -> None:
        init_weights(self, self.config)

    def _positions(self, input_ids, states, offset, cu_seqlens, start: int = 0) -> torch.Tensor:
        return segment_positions(input_ids, states, offset, cu_seqlens, start)

    def _rotation(self, positions: torch.Tensor) -> RotationTable:
        return segment_rotation(self.model, positions)

    @classmethod
    def from_torchscale(cls, state_dict: dict, config: RetNetConfig | dict):
        """A model holding an official torchscale RetNet state dict (see :mod:`retnet.model.torchscale`)."""
        from .torchscale import model_from_torchscale

        return model_from_torchscale(cls, state_dict, config)
