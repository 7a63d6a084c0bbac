"""The RetNet language model: blocks of MSR + FFN (paper §2.3; SPEC §5)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.ffn import build_ffn
from ..layers.norm import build_norm
from ..layers.retention import MultiScaleRetention, positions_for
from ..ops.retention import FORMS, RetentionState
from ..utils.checks import check_token_ids, values_checkable
from .config import RetNetConfig
from .init import init_weights
from .loss import IGNORE_INDEX, next_token_loss


@dataclass
class RetNetOutput:
    """Model output.

    Attributes:
        logits: ``(B, T, vocab)``, or None when the call asked for the loss alone (``return_logits=False``).
        loss: mean next-token cross-entropy when labels were given, else None.
        states: one :class:`RetentionState` per layer when asked for, else None.
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    states: list[RetentionState] | None = None


class RetNetBlock(nn.Module):
    """Pre-norm block: h = x + MSR(Norm(x)); y = h + FFN(Norm(h)). Module names follow torchscale."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        self.retention_layer_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.retention = MultiScaleRetention(
            config.hidden_size,
            config.num_heads,
            config.value_dim,
            decay_schedule=config.decay_schedule,
            head_norm=config.head_norm,
            group_norm_eps=config.group_norm_eps,
            use_gate=config.use_gate,
            backend=config.backend,
        )
        self.final_layer_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)
        self.ffn = build_ffn(config.hidden_size, config.ffn_dim, config.activation, config.ffn_glu, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, **retention_kwargs) -> tuple[torch.Tensor, RetentionState | None]:
        """``(B, T, D) -> (B, T, D)``; ``retention_kwargs`` go to :class:`MultiScaleRetention`."""
        y, state = self.retention(self.retention_layer_norm(x), **retention_kwargs)
        h = x + self.dropout(y)
        return h + self.dropout(self.ffn(self.final_layer_norm(h))), state


class RetNetModel(nn.Module):
    """Embedding, L blocks and the final norm (no LM head)."""

    def __init__(self, config: RetNetConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_scale = math.sqrt(config.hidden_size) if config.scale_embedding else 1.0
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(RetNetBlock(config) for _ in range(config.num_hidden_layers))
        self.layer_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)

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
        x = self.dropout(self.embed_tokens(input_ids) * self.embed_scale)  # (B, T, D)
        B, T = input_ids.shape
        positions = positions_for(
            B, T, x.device, state=None if states is None else states[0], offset=offset, cu_seqlens=cu_seqlens
        )
        new_states = []
        for i, layer in enumerate(self.layers):
            x, state = layer(
                x,
                form=form,
                chunk_size=chunk_size,
                state=None if states is None else states[i],
                offset=offset,
                cu_seqlens=cu_seqlens,
                positions=positions,
                output_state=output_states,
            )
            new_states.append(state)
        return self.layer_norm(x), (new_states if output_states else None)


class RetNetForCausalLM(nn.Module):
    """RetNet language model with an LM head, the three forms, generation and checkpoints.

    Args:
        config: the model's :class:`RetNetConfig`.
    """

    def __init__(self, config: RetNetConfig):
        super().__init__()
        if not isinstance(config, RetNetConfig):
            raise TypeError(f"config must be a RetNetConfig, got {type(config).__name__}")
        self.config = config
        self.model = RetNetModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        init_weights(self, config)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    # ---- forward ------------------------------------------------------------------------------------------
    def _check_input_ids(self, input_ids: torch.Tensor) -> None:
        check_token_ids(input_ids, self.config.vocab_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        form: str = "chunkwise",
        chunk_size: int | None = None,
        states: list[RetentionState] | None = None,
        output_states: bool = False,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        loss_reduction: str = "mean",
        loss_impl: str = "auto",
        return_logits: bool = True,
    ) -> RetNetOutput:
        """Logits for ``input_ids`` in any form; all forms give the same function.

        Args:
            input_ids: ``(B, T)`` token ids in ``[0, vocab_size)``.
            form: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"`` (token by token internally).
            chunk_size: chunk size of the chunkwise form (default ``config.chunk_size``).
            states: per-layer states of an earlier segment; this call continues it exactly.
            output_states: also return the per-layer states after the segment.
            attention_mask: ``(B, T)`` 1 for tokens, 0 for left padding (padding must come first in each row).
            cu_seqlens: ``(N + 1,)`` document boundaries of one packed row (B = 1): states reset at each.
            labels: ``(B, T)`` targets aligned with ``input_ids`` (shifted inside); -100 is ignored.
            targets: ``(B, T)`` next-token targets: position t predicts ``targets[:, t]`` (-100 ignored). Give
                ``labels`` or ``targets``, not both.
            loss_reduction: ``"mean"`` or ``"sum"`` over the counted targets.
            loss_impl: ``"auto"``, ``"fused"`` or ``"plain"`` (:func:`retnet.model.loss.next_token_loss`).
            return_logits: False skips the logits when a loss is asked for (the fused loss never forms them).

        Returns:
            :class:`RetNetOutput`.

        Raises:
            ValueError / TypeError: on bad ids, shapes, form, chunk size, mask or states.
        """
        self._check_input_ids(input_ids)
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
        chunk_size = self.config.chunk_size if chunk_size is None else chunk_size
        if states is not None and len(states) != len(self.model.layers):
            raise ValueError(f"states must hold one state per layer ({len(self.model.layers)}), got {len(states)}")
        offset = None
        if attention_mask is not None:
            if states is not None or cu_seqlens is not None:
                raise ValueError(
                    "attention_mask (left padding) applies to a first segment without states or cu_seqlens"
                )
            offset = left_padding_offset(attention_mask, input_ids.shape)
        if form == "recurrent":
            hidden, new_states = self._recurrent(input_ids, states, offset, cu_seqlens, output_states)
        else:
            hidden, new_states = self.model(
                input_ids,
                form=form,
                chunk_size=chunk_size,
                states=states,
                offset=offset,
                cu_seqlens=cu_seqlens,
                output_states=output_states,
            )
        targets = next_token_targets(labels, targets, input_ids.shape)
        loss = None
        if targets is not None:
            loss = next_token_loss(
                hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(), reduction=loss_reduction, impl=loss_impl
            )
        if not return_logits and loss is None:
            raise ValueError("return_logits=False needs labels or targets (there would be nothing to return)")
        logits = self.lm_head(hidden) if return_logits else None
        return RetNetOutput(logits=logits, loss=loss, states=new_states)

    def _recurrent(self, input_ids, states, offset, cu_seqlens, output_states):
        """Recurrent form: every layer advances one token at a time (paper Eq. 6)."""
        if cu_seqlens is not None:
            bounds = cu_seqlens.tolist()
            hidden, final = [], []
            for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
                doc_states = None if states is None else [RetentionState(*(x[i : i + 1] for x in s)) for s in states]
                h, s = self._recurrent(input_ids[:, a:b], doc_states, None, None, True)
                hidden.append(h)
                final.append(s)
            merged = [RetentionState(*(torch.cat(p) for p in zip(*layer))) for layer in zip(*final)]
            return torch.cat(hidden, dim=1), (merged if output_states else None)
        hidden = []
        for t in range(input_ids.shape[1]):
            h, states = self.model(
                input_ids[:, t : t + 1],
                form="recurrent",
                chunk_size=1,
                states=states,
                offset=None if (offset is None or states is not None) else offset + t,
                cu_seqlens=None,
                output_states=True,
            )
            hidden.append(h)
        return torch.cat(hidden, dim=1), (states if output_states else None)

    # ---- utilities ----------------------------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.model.embed_tokens.weight), None)
            params.pop(id(self.lm_head.weight), None)
        return sum(p.numel() for p in params.values())

    def generate(self, input_ids, **kwargs) -> torch.Tensor:
        """Prompt followed by generated tokens; see :func:`retnet.generation.generate`."""
        from ..generation import generate

        return generate(self, input_ids, **kwargs)

    def stream_generate(self, input_ids, **kwargs) -> Iterator[torch.Tensor]:
        """Yield each step's ``(B,)`` new tokens; see :func:`retnet.generation.stream_generate`."""
        from ..generation import stream_generate

        return stream_generate(self, input_ids, **kwargs)

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` and ``model.safetensors`` atomically into ``directory``."""
        from .serialization import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None) -> RetNetForCausalLM:
        """Load a model written by :meth:`save_pretrained` (verified: checksum, names, shapes)."""
        from .serialization import load_pretrained

        return load_pretrained(cls, directory, device=device, dtype=dtype)

    @classmethod
    def from_torchscale(cls, state_dict: dict, config: RetNetConfig | dict) -> RetNetForCausalLM:
        """A model holding an official torchscale RetNet state dict (see :mod:`retnet.model.torchscale`)."""
        from .torchscale import model_from_torchscale

        return model_from_torchscale(cls, state_dict, config)


def next_token_targets(
    labels: torch.Tensor | None, targets: torch.Tensor | None, shape: torch.Size
) -> torch.Tensor | None:
    """``(B, T)`` next-token targets from either aligned ``labels`` (shifted here; the last position is ignored)
    or ready ``targets``; None when neither is given.

    Raises:
        ValueError: both given, or a shape other than ``shape``.
    """
    if labels is not None and targets is not None:
        raise ValueError("give labels (aligned with input_ids) or targets (already shifted), not both")
    given, name = (labels, "labels") if labels is not None else (targets, "targets")
    if given is None:
        return None
    if given.shape != shape:
        raise ValueError(f"{name} must have the shape of input_ids {tuple(shape)}, got {tuple(given.shape)}")
    if labels is None:
        return targets
    return nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T): position t predicts t + 1


def left_padding_offset(attention_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Per-row offset ``−(number of pads)`` so that the first real token sits at position 0.

    Raises:
        ValueError: if the mask has the wrong shape, is not 0/1, or pads anywhere but the start of a row.
    """
    if attention_mask.shape != shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(shape)}")
    mask = attention_mask.long()
    if values_checkable():
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("attention_mask must hold only 0 and 1")
        if bool((mask[:, 1:] < mask[:, :-1]).any()):
            raise ValueError("only left padding is supported: each row's zeros must precede its ones")
        if bool((mask.sum(1) == 0).any()):
            raise ValueError("every row needs at least one real token (a row of the mask is all zeros)")
    return -(shape[1] - mask.sum(1))  # (B,)
