"""``RetNetHFForCausalLM``: retnet's model behind the ``transformers`` ``PreTrainedModel`` interface.

Saving/loading, ``AutoModelForCausalLM`` and the forward signature (``input_ids``, ``attention_mask``,
``labels``, ``past_key_values``, ``use_cache``) follow ``transformers``; ``generate`` is retnet's own
prefill + recurrent decoding (O(1) per token), which takes the usual sampling arguments.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..model.modeling import RetNetForCausalLM
from .configuration import RetNetHFConfig


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
        past_key_values=None,
        use_cache: bool = False,
        form: str = "chunkwise",
        chunk_size: int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (and loss with ``labels``); ``past_key_values`` are retnet's per-layer retention states."""
        mask = None
        if attention_mask is not None and past_key_values is None and not bool(attention_mask.all()):
            mask = attention_mask
        out = self.retnet(
            input_ids,
            form=form,
            chunk_size=chunk_size,
            states=past_key_values,
            output_states=use_cache,
            attention_mask=mask,
            labels=labels,
        )
        return CausalLMOutputWithPast(loss=out.loss, logits=out.logits, past_key_values=out.states)

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
