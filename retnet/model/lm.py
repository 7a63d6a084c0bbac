"""``CausalLM``: the one causal language model that RetNet and every baseline share (paper §2.3, §3.4; docs/spec.md §5).

Embedding (× √D when ``config.scale_embedding``), L pre-norm blocks

    h = x + Mixer(Norm(x));  y = h + FFN(Norm(h))

a final norm and an LM head (untied unless ``config.tie_word_embeddings``). Only the token mixer differs
between architectures; it follows :class:`~retnet.model.mixer.TokenMixer`. This base does the rest once for
all of them: input checks, the three forms (the recurrent form advances every layer one token at a time,
paper Eq. 6), per-layer states, left-padding offsets, packed documents, the loss (:meth:`CausalLM.loss`, its
only definition), parameter counts and checkpoints through the verified loader of
:mod:`retnet.model.serialization`.

A specialisation is a config and a mixer: it sets ``config_class``, ``block_class`` (a :class:`DecoderBlock`
that builds the mixer and names the sublayers), ``_init_weights`` and what its mixers cannot do
(``supports_left_padding``, ``supports_packed_documents``). ``trunk_name`` says where the trunk
(``embed_tokens``, ``layers``, ``layer_norm``) sits, so that each family keeps the parameter names its checkpoints
already use: ``""`` (the default) on the language model itself (the baselines: ``layers.0.mixer.*``), or a
submodule that ``_build_trunk`` registers under that name (RetNet: ``"model"``, torchscale's
``model.layers.0.retention.*``).

Generation is not part of the model package (dependencies point model ← generation):
:class:`retnet.generation.GenerationMixin` adds ``generate`` / ``stream_generate`` to the public classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..layers.ffn import build_ffn
from ..layers.norm import build_norm
from ..ops.retention import FORMS
from ..utils.checks import check_token_ids, values_checkable
from .loss import next_token_loss, next_token_targets
from .mixer import TokenMixer
from .serialization import load_pretrained, save_pretrained

if TYPE_CHECKING:
    from ..ops.retention.context_parallel import ContextParallelGroup


@dataclass
class CausalLMOutput:
    """Model output.

    Attributes:
        logits: ``(B, T, vocab)``, or None when the call asked for the loss alone (``return_logits=False``).
        loss: next-token cross-entropy when labels or targets were given, else None.
        states: one state per layer (the mixer's type, e.g. :class:`retnet.RetentionState`) when asked for,
            else None.
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    states: list[Any] | None = None


class DecoderBlock(nn.Module):
    """Pre-norm block: h = x + Mixer(Norm(x)); y = h + FFN(Norm(h)).

    Subclasses implement :meth:`make_mixer` and may rename the norm and mixer submodules (the class attributes
    below) to keep their state-dict names. The FFN is always ``ffn``.

    Args:
        config: the model config (``hidden_size``, ``norm``, ``norm_eps``, ``ffn_dim``, ``activation``,
            ``ffn_glu``, ``dropout``).
        layer_idx: index of the block (some mixers initialise by depth).
    """

    mixer_norm_name: ClassVar[str] = "mixer_norm"
    mixer_name: ClassVar[str] = "mixer"
    ffn_norm_name: ClassVar[str] = "ffn_norm"

    def __init__(self, config, layer_idx: int):
        super().__init__()
        # Registration order (norm, mixer, norm, FFN) fixes the parameter order and the order of random draws.
        setattr(self, self.mixer_norm_name, build_norm(config.norm, config.hidden_size, config.norm_eps))
        setattr(self, self.mixer_name, self.make_mixer(config, layer_idx))
        setattr(self, self.ffn_norm_name, build_norm(config.norm, config.hidden_size, config.norm_eps))
        self.ffn = build_ffn(config.hidden_size, config.ffn_dim, config.activation, config.ffn_glu, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def make_mixer(self, config, layer_idx: int) -> TokenMixer:
        """The token mixer of this block."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, **mixer_kwargs) -> tuple[torch.Tensor, Any]:
        """``(B, T, D) -> (B, T, D)`` and the mixer's state; ``mixer_kwargs`` as :class:`TokenMixer`."""
        y, state = getattr(self, self.mixer_name)(getattr(self, self.mixer_norm_name)(x), **mixer_kwargs)
        h = x + self.dropout(y)
        return h + self.dropout(self.ffn(getattr(self, self.ffn_norm_name)(h))), state


def init_trunk(module: nn.Module, config, block_class: Callable[[Any, int], DecoderBlock]) -> None:
    """Give ``module`` the trunk: ``embed_tokens``, ``dropout``, ``layers`` (L blocks) and ``layer_norm``."""
    module.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
    module.embed_scale = math.sqrt(config.hidden_size) if config.scale_embedding else 1.0
    module.dropout = nn.Dropout(config.dropout)
    module.layers = nn.ModuleList(block_class(config, i) for i in range(config.num_hidden_layers))
    module.layer_norm = build_norm(config.norm, config.hidden_size, config.norm_eps)


def run_trunk(
    trunk: nn.Module,
    input_ids: torch.Tensor,
    *,
    form: str,
    chunk_size: int | None,
    states: list | None,
    offset: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    positions: torch.Tensor | None,
    output_states: bool,
    cp_group: ContextParallelGroup | None = None,
    rotation: Any | None = None,
) -> tuple[torch.Tensor, list | None]:
    """Final hidden states ``(B, T, D)`` of a module set up by :func:`init_trunk`, and the per-layer states.

    ``cp_group`` (context parallelism: ``input_ids`` is this rank's slice) and ``rotation`` (RetNet's
    :class:`~retnet.layers.position.RotationTable` of ``positions``, built once for all layers) are handed to every
    mixer when set.
    """
    x = trunk.dropout(trunk.embed_tokens(input_ids) * trunk.embed_scale)  # (B, T, D)
    extra = {} if cp_group is None else {"cp_group": cp_group}
    if rotation is not None:
        extra["rotation"] = rotation
    new_states = []
    for i, layer in enumerate(trunk.layers):
        x, state = layer(
            x,
            form=form,
            chunk_size=chunk_size,
            state=None if states is None else states[i],
            offset=offset,
            cu_seqlens=cu_seqlens,
            positions=positions,
            output_state=output_states,
            **extra,
        )
        new_states.append(state)
    return trunk.layer_norm(x), (new_states if output_states else None)


class CausalLM(nn.Module):
    """A causal language model of one token-mixer architecture (see the module docstring for the layout).

    Args:
        config: an instance of the subclass's ``config_class``.

    Raises:
        TypeError: a config of another type.
    """

    config_class: ClassVar[type]
    block_class: ClassVar[type[DecoderBlock]]
    trunk_name: ClassVar[str] = ""
    supports_left_padding: ClassVar[bool] = True
    supports_packed_documents: ClassVar[bool] = True
    supports_context_parallel: ClassVar[bool] = False

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self._build_trunk(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_word_embeddings:
            self.tie_weights()

    # ---- what a specialisation provides -------------------------------------------------------------------
    def _build_trunk(self, config) -> None:
        """Register the trunk under ``trunk_name`` (here: on the model itself)."""
        init_trunk(self, config, self.block_class)

    def _init_weights(self) -> None:
        """Initialise every parameter in place (called once, after construction, before tying)."""
        raise NotImplementedError

    def _positions(self, input_ids, states, offset, cu_seqlens, start: int = 0) -> torch.Tensor | None:
        """``(B, T)`` absolute positions handed to every mixer, or None (each mixer counts its own); ``start`` is
        the index of the first token in the sequence (a context-parallel slice)."""
        return None

    def _rotation(self, positions: torch.Tensor | None) -> Any | None:
        """What every mixer needs to rotate q and k at ``positions``, built once per forward; None (the default)
        when the mixers rotate nothing or build their own."""
        return None

    # ---- structure ----------------------------------------------------------------------------------------
    @property
    def trunk(self) -> nn.Module:
        """The module holding ``embed_tokens``, ``layers`` and ``layer_norm``."""
        return self.get_submodule(self.trunk_name)

    @classmethod
    def embedding_weight_name(cls) -> str:
        """State-dict name of the embedding matrix (the LM head's when tied)."""
        return f"{cls.trunk_name}.embed_tokens.weight" if cls.trunk_name else "embed_tokens.weight"

    def tie_weights(self) -> None:
        """Share the embedding matrix with the LM head."""
        self.lm_head.weight = self.trunk.embed_tokens.weight

    # ---- forward ------------------------------------------------------------------------------------------
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
        cp_group: ContextParallelGroup | None = None,
    ) -> CausalLMOutput:
        """Logits for ``input_ids`` in any form; all forms give the same function.

        Args:
            input_ids: ``(B, T)`` token ids in ``[0, vocab_size)``.
            form: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"`` (every layer advances one token at a time).
            chunk_size: chunk size of the chunkwise form (default: the config's ``chunk_size`` where it has one).
            states: per-layer states of an earlier segment; this call continues it exactly.
            output_states: also return the per-layer states after the segment.
            attention_mask: ``(B, T)`` 1 for tokens, 0 for left padding (padding must come first in each row).
                Without ``supports_left_padding`` only an all-ones mask is accepted.
            cu_seqlens: ``(N + 1,)`` document boundaries of one packed row (B = 1): states reset at each.
            labels: ``(B, T)`` targets aligned with ``input_ids`` (shifted inside); -100 is ignored.
            targets: ``(B, T)`` next-token targets: position t predicts ``targets[:, t]`` (-100 ignored). Give
                ``labels`` or ``targets``, not both.
            loss_reduction: ``"mean"`` or ``"sum"`` over the counted targets.
            loss_impl: ``"auto"``, ``"fused"`` or ``"plain"`` (:func:`retnet.model.loss.next_token_loss`).
            return_logits: False skips the logits when a loss is asked for (the fused loss never forms them).
            cp_group: a :class:`retnet.ops.retention.context_parallel.ContextParallelGroup`: ``input_ids`` (and the
                labels or targets) are this rank's slice of sequences split over its ranks, rotated and decayed at
                global positions; ``states`` and ``cu_seqlens`` describe the whole sequence; every rank of the
                group calls together (docs/parallel.md). Needs ``supports_context_parallel``.

        Returns:
            :class:`CausalLMOutput`.

        Raises:
            ValueError / TypeError: on bad ids, shapes, form, chunk size, mask, documents or states.
        """
        self._check_input_ids(input_ids)
        targets = next_token_targets(labels, targets, input_ids.shape)
        if not return_logits and targets is None:
            raise ValueError("return_logits=False needs labels or targets (there would be nothing to return)")
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
        if chunk_size is None:
            chunk_size = getattr(self.config, "chunk_size", None)  # mixers without a chunkwise form ignore it
        num_layers = len(self.trunk.layers)
        if states is not None and len(states) != num_layers:
            raise ValueError(f"states must hold one state per layer ({num_layers}), got {len(states)}")
        if cu_seqlens is not None and not self.supports_packed_documents:
            raise ValueError(
                f"{type(self).__name__} does not support cu_seqlens (packed documents); "
                "train with reset_at_boundaries=False"
            )
        if cp_group is not None:
            self._check_context_parallel(form, attention_mask)
        offset = self._padding_offset(attention_mask, input_ids.shape, states, cu_seqlens)
        if form == "recurrent":
            hidden, new_states = self._recurrent(input_ids, states, offset, cu_seqlens, output_states)
        else:
            hidden, new_states = self._hidden(
                input_ids, form, chunk_size, states, offset, cu_seqlens, output_states, cp_group
            )
        logits = self.lm_head(hidden) if return_logits else None  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = self.loss(hidden, targets, reduction=loss_reduction, impl=loss_impl, logits=logits)
        return CausalLMOutput(logits=logits, loss=loss, states=new_states)

    def loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        *,
        reduction: str = "mean",
        impl: str = "auto",
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token cross-entropy of the LM head over ``hidden``: the only place the model's loss is computed.

        Args:
            hidden: ``(B, T, D)`` final hidden states (after the final norm).
            targets: ``(B, T)`` next-token targets: position t is scored against ``targets[:, t]``; -100 is ignored
                (:func:`retnet.model.loss.next_token_targets` makes them from aligned labels).
            reduction: ``"mean"`` or ``"sum"`` over the counted targets.
            impl: ``"auto"``, ``"fused"`` or ``"plain"`` (:func:`retnet.model.loss.next_token_loss`).
            logits: ``(B, T, vocab)`` the head's output for ``hidden`` when the caller has it already: the plain
                loss then does not recompute it.

        Returns:
            A float32 scalar.

        Raises:
            ValueError: targets whose shape is not ``(B, T)``, or a bad ``reduction`` / ``impl``.
        """
        if targets.shape != hidden.shape[:2]:
            raise ValueError(f"targets must have the shape of input_ids {tuple(hidden.shape[:2])}")
        return next_token_loss(
            hidden.flatten(0, 1),
            self.lm_head.weight,
            targets.flatten(),
            reduction=reduction,
            impl=impl,
            logits=None if logits is None else logits.flatten(0, 1),
        )

    def _padding_offset(self, attention_mask, shape, states, cu_seqlens) -> torch.Tensor | None:
        """Per-row start positions for a left-padded batch (None without padding)."""
        if attention_mask is None:
            return None
        if not self.supports_left_padding:
            if not bool((attention_mask != 0).all()):
                raise ValueError(f"{type(self).__name__} does not support left padding; pass equal-length prompts")
            return None
        if states is not None or cu_seqlens is not None:
            raise ValueError("attention_mask (left padding) applies to a first segment without states or cu_seqlens")
        return left_padding_offset(attention_mask, shape)

    def _check_context_parallel(self, form: str, attention_mask) -> None:
        if not self.supports_context_parallel:
            raise ValueError(f"{type(self).__name__} does not support context parallelism (cp_group)")
        if form == "recurrent":
            raise ValueError("cp_group needs the parallel or chunkwise form (the recurrent form is for decoding)")
        if attention_mask is not None:
            raise ValueError("attention_mask (left padding) cannot be combined with cp_group")

    def _hidden(self, input_ids, form, chunk_size, states, offset, cu_seqlens, output_states, cp_group=None):
        """One pass of the trunk over the segment (``cp_group``: a context-parallel slice of it)."""
        start = 0 if cp_group is None else cp_group.start
        positions = self._positions(input_ids, states, offset, cu_seqlens, start)
        return run_trunk(
            self.trunk,
            input_ids,
            form=form,
            chunk_size=chunk_size,
            states=states,
            offset=offset,
            cu_seqlens=cu_seqlens,
            positions=positions,
            output_states=output_states,
            cp_group=cp_group,
            rotation=self._rotation(positions),
        )

    def _recurrent(self, input_ids, states, offset, cu_seqlens, output_states):
        """Recurrent form: every layer advances one token at a time (paper Eq. 6); documents one after another."""
        if cu_seqlens is not None:
            bounds = cu_seqlens.tolist()
            hidden, final = [], []
            for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
                doc_states = None if states is None else [_rows(s, i) for s in states]
                h, s = self._recurrent(input_ids[:, a:b], doc_states, None, None, True)
                hidden.append(h)
                final.append(s)
            merged = [_concat_rows(layer) for layer in zip(*final)]
            return torch.cat(hidden, dim=1), (merged if output_states else None)
        hidden = []
        for t in range(input_ids.shape[1]):
            h, states = self._hidden(
                input_ids[:, t : t + 1],
                "recurrent",
                1,
                states,
                None if (offset is None or states is not None) else offset + t,
                None,
                True,
            )
            hidden.append(h)
        return torch.cat(hidden, dim=1), (states if output_states else None)

    # ---- utilities ----------------------------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            params.pop(id(self.trunk.embed_tokens.weight), None)
            params.pop(id(self.lm_head.weight), None)
        return sum(p.numel() for p in params.values())

    def save_pretrained(self, directory) -> None:
        """Write ``config.json``, ``model.safetensors`` and its checksum atomically into ``directory``."""
        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, *, device=None, dtype=None, allow_unverified: bool = False):
        """Load a model written by :meth:`save_pretrained` (verified: checksum, names, shapes).

        Args:
            directory: the folder holding ``config.json``, ``model.safetensors`` and ``checksums.json``.
            device: where to put the weights.
            dtype: the weights' dtype (None: unchanged).
            allow_unverified: load weights that have no checksum (a warning is logged); off by default.

        Raises:
            FileNotFoundError: a missing directory, config or weights file.
            ValueError: a corrupt or unverifiable checkpoint, or weights that do not fit the config.
        """
        return load_pretrained(cls, directory, device=device, dtype=dtype, allow_unverified=allow_unverified)


def _rows(state, i: int):
    """Row ``i`` of a state that is a NamedTuple of ``(B, ...)`` tensors (packed documents: one row per document)."""
    return type(state)(*(x[i : i + 1] for x in state))


def _concat_rows(states):
    """Inverse of :func:`_rows`: one state whose rows are ``states``."""
    return type(states[0])(*(torch.cat(parts) for parts in zip(*states)))


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
