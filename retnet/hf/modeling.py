"""``RetNetHFForCausalLM``: retnet's model as a ``transformers`` causal LM with ``GenerationMixin`` (docs/spec.md §5).

The native :class:`retnet.RetNetForCausalLM` sits under ``retnet`` (weights ``retnet.model.layers.N.*``,
``retnet.lm_head.weight``); this class adds nothing to the network. Its forward follows ``transformers``:
``input_ids``, ``attention_mask`` (left padding becomes the native per-row position offsets), ``cache`` (also
accepted as ``past_key_values``, the name before transformers 5.24), ``use_cache``, ``labels``, ``return_dict``
and ``logits_to_keep``; an unknown argument is a ``TypeError``. With a cache, the prompt is prefilled in the
chunkwise form and each later single token runs the recurrent form, exactly as :func:`retnet.generation.generate`
does, so ``transformers``' ``generate`` (greedy, sampling, beam search, logits processors, streamers, pipelines)
produces the same logits as retnet's own decoder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect

import torch
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..generation import RetNetForCausalLM
from ..model.lm import left_padding_offset
from ..model.loss import next_token_targets
from ..ops.retention import FORMS
from ..utils.checks import check_token_ids, values_checkable
from .cache import RetNetCache
from .configuration import RetNetHFConfig

# transformers 5.24 renamed the output's cache field from ``past_key_values`` to ``cache``.
_CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class RetNetHFForCausalLM(PreTrainedModel, GenerationMixin):
    """A ``transformers`` model wrapping :class:`retnet.RetNetForCausalLM` (weights under ``retnet.``).

    Args:
        config: the :class:`RetNetHFConfig`.
    """

    config_class = RetNetHFConfig
    base_model_prefix = "retnet"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RetNetBlock"]
    _is_stateful = True  # a state cannot be rolled back: no assisted decoding
    _supported_generation_modes = ("greedy_search", "sample", "beam_search", "beam_sample")

    def __init__(self, config: RetNetHFConfig):
        super().__init__(config)
        self.retnet = RetNetForCausalLM(config.to_retnet_config())
        if config.tie_word_embeddings:
            self._tied_weights_keys = {"retnet.lm_head.weight": "retnet.model.embed_tokens.weight"}
        self.gradient_checkpointing = False  # transformers' checkpointing switch (see _checkpointed_blocks)
        self.post_init()

    @classmethod
    def from_native(cls, model: RetNetForCausalLM) -> RetNetHFForCausalLM:
        """Wrap an existing native model (its parameters are shared, not copied).

        Raises:
            TypeError: ``model`` is not a :class:`retnet.RetNetForCausalLM`.
        """
        if not isinstance(model, RetNetForCausalLM):
            raise TypeError(f"model must be a retnet.RetNetForCausalLM, got {type(model).__name__}")
        with torch.device("meta"):
            wrapped = cls(RetNetHFConfig.from_retnet_config(model.config))
        wrapped.retnet = model
        return wrapped.train(model.training)

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModelForCausalLM"):
        """Keep the fixed ``auto_map`` (see :meth:`RetNetHFConfig.register_for_auto_class`)."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate must not build a key/value cache; forward makes a RetNetCache

    def prepare_inputs_for_generation(self, *args, **kwargs) -> dict:
        """``GenerationMixin``'s inputs without what earlier 5.x releases add for every model: ``cache_position``
        (a retention state carries each row's position itself; the cache's length already sliced ``input_ids``) and
        arguments this forward does not take that are None (``inputs_embeds=None``). Any other argument reaches the
        forward, which rejects what it does not know."""
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        accepted = inspect.signature(self.forward).parameters
        for key in [k for k, v in inputs.items() if k not in accepted and (v is None or k == "cache_position")]:
            del inputs[key]
        return inputs

    def _init_weights(self, module):
        """Weights are initialised by retnet itself (``retnet.model.init``)."""

    def get_input_embeddings(self):
        return self.retnet.model.embed_tokens

    def set_input_embeddings(self, value):
        self.retnet.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.retnet.lm_head

    def set_output_embeddings(self, value):
        self.retnet.lm_head = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: RetNetCache | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: RetNetCache | None = None,
        form: str | None = None,
        chunk_size: int | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (and the loss with ``labels``) of a segment, continuing ``cache`` when given.

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)`` (or ``(B, past + T)`` with a cache) 1 for tokens, 0 for left padding; padding
                may only precede the first segment's tokens.
            cache: the :class:`RetNetCache` of the earlier segments; updated in place when ``use_cache``.
            labels: ``(B, T)`` targets aligned with ``input_ids`` (shifted inside; -100 ignored).
            use_cache: return (and update) the cache; default ``config.use_cache``.
            return_dict: a :class:`CausalLMOutputWithPast` (default) or a tuple.
            logits_to_keep: 0 for every position's logits, N for the last N, or a 1-D tensor of positions.
            past_key_values: the name of ``cache`` before transformers 5.24.
            form: ``"parallel"``, ``"chunkwise"`` or ``"recurrent"``; default recurrent for one token after a cache,
                chunkwise otherwise (as :func:`retnet.generation.generate`).
            chunk_size: chunk size of the chunkwise form (default ``config.chunk_size``).

        Returns:
            ``CausalLMOutputWithPast`` with ``loss``, ``logits`` ``(B, T', vocab)`` and the cache.

        Raises:
            ValueError: missing or bad ids, a bad mask, form or ``logits_to_keep``, or two caches.
            TypeError: a cache that is not a :class:`RetNetCache`.
        """
        if input_ids is None:
            raise ValueError("input_ids is required (RetNet embeds token ids itself; inputs_embeds is not supported)")
        if past_key_values is not None:
            if cache is not None and cache is not past_key_values:
                raise ValueError("give cache or past_key_values, not both")
            cache = past_key_values
        if cache is not None and not isinstance(cache, RetNetCache):
            raise TypeError(f"cache must be a RetNetCache, got {type(cache).__name__}")
        native = self.retnet
        check_token_ids(input_ids, native.config.vocab_size)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return_dict = self.config.return_dict if return_dict is None else return_dict
        states = None if cache is None else cache.states
        if states is not None and len(states) != len(native.model.layers):
            raise ValueError(f"cache holds {len(states)} layers, the model has {len(native.model.layers)}")
        T = input_ids.shape[1]
        if form is None:
            form = "recurrent" if states is not None and T == 1 else "chunkwise"
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
        offset = self._padding_offset(attention_mask, input_ids.shape, states)
        with self._checkpointed_blocks():
            hidden, new_states = self._run_trunk(input_ids, form, chunk_size, states, offset, use_cache)
        logits = native.lm_head(_kept(hidden, logits_to_keep))  # (B, T', vocab)
        loss = None
        if labels is not None:
            targets = next_token_targets(labels, None, input_ids.shape)
            every_position = isinstance(logits_to_keep, int) and (logits_to_keep == 0 or logits_to_keep >= T)
            loss = native.loss(hidden, targets, logits=logits if every_position else None)
        if use_cache:
            cache = RetNetCache(len(native.model.layers)) if cache is None else cache
            cache.advance(new_states, T)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache if use_cache else None})
        return out if return_dict else out.to_tuple()

    def _padding_offset(self, attention_mask, shape, states) -> torch.Tensor | None:
        """Native per-row start offsets of a left-padded first segment; later segments must be all tokens."""
        if attention_mask is None:
            return None
        if attention_mask.dim() != 2 or attention_mask.shape[0] != shape[0] or attention_mask.shape[1] < shape[1]:
            raise ValueError(
                f"attention_mask must be (B, T) or, with a cache, (B, past + T); got {tuple(attention_mask.shape)} "
                f"for input_ids {tuple(shape)}"
            )
        mask = attention_mask[:, -shape[1] :]  # (B, T): this segment's columns
        if states is None:
            if attention_mask.shape[1] != shape[1]:
                raise ValueError("attention_mask is longer than input_ids but there is no cache to continue")
            return None if (values_checkable() and bool((mask == 1).all())) else left_padding_offset(mask, shape)
        if values_checkable() and not bool((mask == 1).all()):
            raise ValueError("only left padding is supported: tokens after the first segment must all be real (1)")
        return None

    def _run_trunk(self, input_ids, form, chunk_size, states, offset, output_states):
        """Final hidden states ``(B, T, D)`` and new states; the recurrent form advances one token at a time."""
        trunk = self.retnet.model
        if chunk_size is None:
            chunk_size = self.retnet.config.chunk_size
        if form != "recurrent":
            return trunk(
                input_ids, form=form, chunk_size=chunk_size, states=states, offset=offset, cu_seqlens=None,
                output_states=output_states,
            )  # fmt: skip
        hidden = []
        for t in range(input_ids.shape[1]):
            step_offset = None if (offset is None or states is not None) else offset + t
            h, states = trunk(
                input_ids[:, t : t + 1], form="recurrent", chunk_size=1, states=states, offset=step_offset,
                cu_seqlens=None, output_states=True,
            )  # fmt: skip
            hidden.append(h)
        return torch.cat(hidden, dim=1), (states if output_states else None)  # (B, T, D)

    @contextlib.contextmanager
    def _checkpointed_blocks(self):
        """While training with ``gradient_checkpointing`` on, run every block through the checkpoint function.

        ``transformers`` switches checkpointing by setting ``gradient_checkpointing`` and
        ``_gradient_checkpointing_func`` on modules that have the flag; the native blocks are called from the
        native trunk, so their ``forward`` is wrapped for the duration of this forward only.
        """
        if not (self.gradient_checkpointing and self.training and torch.is_grad_enabled()):
            yield
            return
        func = getattr(self, "_gradient_checkpointing_func", functools.partial(checkpoint, use_reentrant=False))
        blocks = list(self.retnet.model.layers)
        for block in blocks:
            block.forward = functools.partial(func, type(block).forward.__get__(block))
        try:
            yield
        finally:
            for block in blocks:
                del block.forward

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus the files of :func:`retnet.hf.export.write_directory_extras`
        (the ``trust_remote_code`` entry points and the model card)."""
        from .export import write_directory_extras

        out = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_directory_extras(self, save_directory)
        return out


def _kept(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions of ``hidden`` ``(B, T, D)`` whose logits are asked for.

    Raises:
        ValueError: a negative count or an index tensor that is not 1-D.
        TypeError: anything but an int or a tensor.
    """
    if isinstance(logits_to_keep, torch.Tensor):
        if logits_to_keep.dim() != 1:
            raise ValueError(
                f"logits_to_keep as a tensor must be 1-D positions, got shape {tuple(logits_to_keep.shape)}"
            )
        return hidden[:, logits_to_keep.to(hidden.device)]  # (B, N, D)
    if not isinstance(logits_to_keep, int) or isinstance(logits_to_keep, bool):
        raise TypeError(f"logits_to_keep must be an int or a tensor of positions, got {type(logits_to_keep).__name__}")
    if logits_to_keep < 0:
        raise ValueError(f"logits_to_keep must be >= 0 (0 keeps all), got {logits_to_keep}")
    return hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]  # (B, N, D)


def register_auto_classes() -> None:
    """Register ``"retnet"`` with ``AutoConfig`` and ``AutoModelForCausalLM`` (idempotent)."""
    AutoConfig.register("retnet", RetNetHFConfig, exist_ok=True)
    AutoModelForCausalLM.register(RetNetHFConfig, RetNetHFForCausalLM, exist_ok=True)
