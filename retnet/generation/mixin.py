"""``GenerationMixin``: ``model.generate`` / ``model.stream_generate`` as thin delegations to :mod:`.generate`.

Dependencies point model ← generation (docs/architecture.md): the language models of :mod:`retnet.model` know
nothing about decoding, and :func:`retnet.generation.generate` works on any model that follows their forward
contract. This mixin only offers the two functions as methods; a public class lists it first among its bases,
e.g. ``class RetNetForCausalLM(GenerationMixin, retnet.model.RetNetForCausalLM)`` in :mod:`.models`, and
:class:`retnet.baselines.MixerLM`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .generate import generate, stream_generate


class GenerationMixin:
    """Adds :meth:`generate` and :meth:`stream_generate` to a causal language model."""

    def generate(self, input_ids, **kwargs) -> torch.Tensor:
        """Prompt followed by generated tokens, ``(B, T + n)``; see :func:`retnet.generation.generate`."""
        return generate(self, input_ids, **kwargs)

    def stream_generate(self, input_ids, **kwargs) -> Iterator[torch.Tensor]:
        """Yield each step's ``(B,)`` new tokens; see :func:`retnet.generation.stream_generate`."""
        return stream_generate(self, input_ids, **kwargs)
