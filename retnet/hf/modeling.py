"""``RetNetHFForCausalLM``: retnet's model behind the ``transformers`` ``PreTrainedModel`` interface.

Saving/loading, ``AutoModelForCausalLM`` and the forward signature (``input_ids``, ``attention_mask``,
``labels``, ``cache`` — also accepted as ``past_key_values`` — and ``use_cache``) follow ``transformers``;
``generate`` is retnet's own prefill + recurrent decoding (O(1) per token), with the usual sampling arguments.
"""

from __future__ import annotations

import dataclasses

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..generation import RetNetForCausalLM
from .configuration import RetNetHFConfig

# Newer transformers name the output's cache field ``cache``; older ones ``past_key_values``.
_CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class RetNetHFForCausalLM(PreTrainedModel):
    """A ``transformers`` model wrapping :class:`retnet.RetNetForCausalLM` (weights under ``retnet.``)."""

    config_class = RetNetHFConfig
    base_model_prefix = "retnet"
    main_input_name = "input_ids"

    def __init__(self, config: RetNetHFConfig):
        super().__init__(config)
        self.retnet = RetNetForCausalLM(config.to_retnet_config())
        if config.tie_word_embeddings:
            self._tied_weights_keys = {"retnet.lm_head.weight": "retnet.model.embed_tokens.weight"}
        self.post_init()

    def _init_weights(self, module):
        """Weights are initialised by retnet itself (``retnet.model.init``)."""

    def get_input_embeddings(self):
        return self.retnet.model.embed_tokens

    def get_output_embeddings(self):
        return self.retnet.lm_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache=None,
        use_cache: bool = False,
        form: str = "chunkwise",
        chunk_size: int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (and loss with ``labels``); the cache is retnet's list of per-layer retention states."""
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        mask = None
        if attention_mask is not None and cache is None and not bool(attention_mask.all()):
            mask = attention_mask
        out = self.retnet(
            input_ids,
            form=form,
            chunk_size=chunk_size,
            states=cache,
            output_states=use_cache,
            attention_mask=mask,
            labels=labels,
        )
        return CausalLMOutputWithPast(loss=out.loss, logits=out.logits, **{_CACHE_FIELD: out.states})

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Prompt + new tokens via retnet's recurrent decoding (kwargs as :func:`retnet.generation.generate`)."""
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        kwargs.setdefault("max_new_tokens", 20)
        return self.retnet.generate(input_ids, attention_mask=attention_mask, **kwargs)


def register_auto_classes() -> None:
    """Register ``"retnet"`` with ``AutoConfig`` and ``AutoModelForCausalLM`` (idempotent)."""
    try:
        AutoConfig.register("retnet", RetNetHFConfig)
    except ValueError:
        pass  # already registered
    try:
        AutoModelForCausalLM.register(RetNetHFConfig, RetNetHFForCausalLM)
    except ValueError:
        pass
