"""The public RetNet language model: :class:`retnet.model.RetNetForCausalLM` with ``generate`` (docs/spec.md §9).

:mod:`retnet.model` may not import generation, so the class that users get as ``retnet.RetNetForCausalLM`` is
composed here, one level up: the model package's class (forms, states, loss, checkpoints, torchscale interop)
plus :class:`~retnet.generation.mixin.GenerationMixin`. It adds nothing else; checkpoints and state dicts are the
same for both classes, and ``from_pretrained`` / ``from_torchscale`` return an instance of the class they are
called on.
"""

from __future__ import annotations

from ..model import modeling
from .mixin import GenerationMixin


class RetNetForCausalLM(GenerationMixin, modeling.RetNetForCausalLM):
    """RetNet language model with an LM head, the three forms, checkpoints and generation.

    Args:
        config: the model's :class:`retnet.RetNetConfig`.
    """
