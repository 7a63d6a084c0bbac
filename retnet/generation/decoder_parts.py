"""The pieces of a decoder-only language model that the decoding engine runs layer by layer (docs/spec.md §5).

The engine does not call the model's ``forward`` while decoding: it embeds the tokens, runs each pre-norm block
``h = x + Mixer(Norm(x)); y = h + FFN(Norm(h))`` through the mixer's static-state methods, and applies the final
norm and the LM head. :func:`decoder_parts` finds those pieces in :class:`retnet.RetNetForCausalLM` and in the
baselines' :class:`retnet.baselines.MixerLM` by their attribute names, and checks that every mixer implements the
static decoding protocol:

- ``allocate_decode_state(batch_size, max_len, device, dtype) -> state``: zeroed, preallocated buffers (a tuple
  of tensors) holding each row's position;
- ``prefill_decode_state_(x, state, rows, start, *, chunk_size) -> y``: a segment ``(n, T, D)`` for rows
  ``rows`` at common position ``start``, written into the state in place;
- ``decode_step_(x_t, state) -> y_t``: one token ``(B, D)`` for every row, in place, with no host
  synchronisation (so it can be captured in a CUDA graph).

Optionally, ``rotation_table(positions) -> table`` (RetNet): the engine then builds the rotation of q and k once per
step (and per prefill piece) for all layers and passes it to ``decode_step_`` / ``prefill_decode_state_`` as
``rotation=``.

The engine computes the evaluation-mode model (it refuses a model in training mode with dropout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DECODE_PROTOCOL = ("allocate_decode_state", "prefill_decode_state_", "decode_step_")

# (pre-mixer norm, mixer, pre-FFN norm, FFN) attribute names of a block, per model family.
_BLOCK_LAYOUTS = (
    ("retention_layer_norm", "retention", "final_layer_norm", "ffn"),  # RetNetBlock
    ("mixer_norm", "mixer", "ffn_norm", "ffn"),  # baselines' MixerBlock
)


@dataclass(frozen=True)
class Block:
    """One pre-norm block: ``h = x + mixer(mixer_norm(x)); y = h + ffn(ffn_norm(h))``."""

    mixer_norm: nn.Module
    mixer: nn.Module
    ffn_norm: nn.Module
    ffn: nn.Module


@dataclass(frozen=True)
class DecoderParts:
    """Embedding, blocks, final norm and head of a decoder-only LM.

    Attributes:
        embed_tokens: the token embedding.
        embed_scale: factor applied to the embeddings (√D or 1).
        blocks: the L blocks in order.
        final_norm: the norm before the head.
        lm_head: ``D -> vocab`` projection.
        vocab_size: number of token ids.
    """

    embed_tokens: nn.Embedding
    embed_scale: float
    blocks: tuple[Block, ...]
    final_norm: nn.Module
    lm_head: nn.Module
    vocab_size: int

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``(...)`` ids → ``(..., D)`` scaled embeddings."""
        return self.embed_tokens(ids) * self.embed_scale

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` hidden states → ``(..., vocab)`` logits."""
        return self.lm_head(self.final_norm(x))


def _block(layer: nn.Module) -> Block | None:
    for names in _BLOCK_LAYOUTS:
        if all(hasattr(layer, n) for n in names):
            return Block(*(getattr(layer, n) for n in names))
    return None


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The pieces of ``model`` the engine runs.

    Args:
        model: a :class:`retnet.RetNetForCausalLM` or a :class:`retnet.baselines.MixerLM`.

    Returns:
        :class:`DecoderParts`.

    Raises:
        TypeError: if the model's layout is not recognised, or a mixer lacks the static decoding protocol
            (the message names the architecture and the missing methods).
    """
    body = model.model if hasattr(model, "model") and hasattr(model.model, "layers") else model
    needed = ("embed_tokens", "layers", "layer_norm")
    if not all(hasattr(body, n) for n in needed) or not hasattr(model, "lm_head") or not hasattr(model, "config"):
        raise TypeError(
            f"{type(model).__name__} is not a decoder-only LM the engine knows "
            "(expected embed_tokens, layers, layer_norm, lm_head and config)"
        )
    blocks = []
    for i, layer in enumerate(body.layers):
        block = _block(layer)
        if block is None:
            raise TypeError(f"layer {i} ({type(layer).__name__}) is not a pre-norm block the engine knows")
        missing = [m for m in DECODE_PROTOCOL if not callable(getattr(block.mixer, m, None))]
        if missing:
            arch = getattr(model.config, "arch", type(model).__name__)
            raise TypeError(
                f"the decoding engine needs static decode state; architecture {arch!r} (layer {i}, "
                f"{type(block.mixer).__name__}) lacks {', '.join(missing)}"
            )
        blocks.append(block)
    return DecoderParts(
        embed_tokens=body.embed_tokens,
        embed_scale=float(getattr(body, "embed_scale", 1.0)),
        blocks=tuple(blocks),
        final_norm=body.layer_norm,
        lm_head=model.lm_head,
        vocab_size=model.config.vocab_size,
    )
