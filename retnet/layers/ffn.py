"""Feed-forward networks of the RetNet block (paper §2.3; docs/spec.md §5)."""

from __future__ import annotations

import torch
from torch import nn

from .packing import PackedProjection, current_packing, pack_linears_

ACTIVATIONS = {"swish": nn.functional.silu, "silu": nn.functional.silu, "gelu": nn.functional.gelu, "relu": torch.relu}


def activation_fn(name: str):
    """The activation function called ``name`` (swish/silu, gelu or relu)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


class FeedForward(nn.Module):
    """The block's FFN.

    ``glu=True`` (torchscale): (act(z W_fc1) ⊙ (z W_gate)) W_fc2 — the activation is on fc1, the gate is linear.
    ``glu=False`` (paper): act(z W_fc1) W_fc2.

    Args:
        hidden_size: D.
        ffn_dim: inner width.
        activation: activation name.
        glu: gated linear unit or plain MLP.
        dropout: dropout on the inner activation.
    """

    def __init__(self, hidden_size: int, ffn_dim: int, activation: str = "swish", glu: bool = True, dropout=0.0):
        super().__init__()
        self.act = activation_fn(activation)
        self.fc1 = nn.Linear(hidden_size, ffn_dim, bias=False)
        self.gate = nn.Linear(hidden_size, ffn_dim, bias=False) if glu else None
        self.fc2 = nn.Linear(ffn_dim, hidden_size, bias=False)
        self.dropout = nn.Dropout(dropout)
        self._packed_decode: PackedProjection | None = None  # set by pack_decode_weights_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``."""
        h = self.act(self.fc1(x))  # (B, T, F)
        if self.gate is not None:
            h = h * self.gate(x)
        return self.fc2(self.dropout(h))

    def pack_decode_weights_(self) -> None:
        """Stack fc1 and the gate so that :meth:`decode` reads them with one matrix product (GLU only; the
        parameters become views of one buffer, values unchanged; moving or casting the module drops it)."""
        if self.gate is not None:
            self._packed_decode = pack_linears_([self.fc1, self.gate])

    def _apply(self, fn, recurse=True):
        self._packed_decode = None  # the parameters get new storage: the stacked buffer would go stale
        return super()._apply(fn, recurse)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The forward of decoding, ``(..., D) -> (..., D)``: one product for fc1 and the gate when packed (then
        with no gradient to the weights), else :meth:`forward`."""
        packed = current_packing(self._packed_decode, self.fc1)
        if packed is None:
            return self.forward(x)
        a, b = packed(x)  # (..., F) each
        return self.fc2(self.act(a) * b)


def build_ffn(hidden_size: int, ffn_dim: int, activation: str, glu: bool, dropout: float = 0.0) -> FeedForward:
    """Construct the FFN of a block (kept as a factory so baselines share it)."""
    return FeedForward(hidden_size, ffn_dim, activation, glu, dropout)
