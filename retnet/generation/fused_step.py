"""The decoding engine's fused step for RetNet at batch 1 to 4: five Triton launches per layer (docs/inference.md).

The default step (:func:`~.engine._block_step`) runs a layer as PyTorch operations: four matrix-vector products and
about a dozen small kernels between them (norms, casts, the rotation, the step kernel's bookkeeping, the head-wise
norm, the gate, the residual adds). At batch 1 each of those small kernels costs a launch the products cannot hide.
:class:`FusedDecodeStep` runs the same block with the kernels of :mod:`retnet.ops.decode` instead:

1. block norm + stacked q/k/v/g product + rotation of q and k + K^−½ (:func:`~retnet.ops.decode.paired_projection`);
2. the retention step, which also writes the partial sums of the head-wise norm
   (:func:`~retnet.ops.decode.retention_step_with_stats`);
3. head-wise norm + swish gate + output projection + residual, and the step's bookkeeping
   (:func:`~retnet.ops.decode.gated_output_residual`);
4. FFN norm + input product + GLU or activation;
5. FFN output product + residual;

and the final norm with the LM head as one more product, written straight into the logits buffer. The weights
are the model's own (the stacked buffers of :mod:`retnet.layers.packing`, which the engine makes); the scratch
buffers are allocated once and shared by all layers. Arithmetic is float32 inside the kernels, so results agree
with the eager step to its own rounding (tested against it under the Triton interpreter and on the GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers.ffn import FeedForward
from ..layers.norm import LayerNorm, RMSNorm
from ..layers.packing import current_packing
from ..layers.retention import MultiScaleRetention
from ..ops.decode.launch import MAX_BATCH, MatvecLaunch
from ..ops.retention import RetentionState
from ..ops.triton_utils import triton_runtime_available
from .decoder_parts import DecoderParts

AUTO_FUSED_BATCH = 2
"""Largest number of slots for which the engine picks the fused step by itself (``fused=None``). On the H200 at
1.3B it is 1.41× the compiled default step at batch 1, 1.11× at 2 and 0.73× at 4 (each batch row streams the
weights through its own programs), docs/benchmarks/decode-h200.md."""

_ACTIVATION_NAMES = {nn.functional.silu: "silu", nn.functional.gelu: "gelu", torch.relu: "relu"}


@dataclass(frozen=True)
class FusedLaunches:
    """The program shape of each product of the fused step (:class:`~retnet.ops.decode.launch.MatvecLaunch`). The
    values computed do not depend on them. Defaults: the fastest whole step at batch 1 of the 1.3B preset on an H200
    in a coordinate sweep with dependent launch (docs/benchmarks/decode-h200.md, "Dependent launch").

    Attributes:
        qkvg: the stacked q/k/v/g product.
        output: the output projection (one head of V columns at a time; ``cols`` unused).
        ffn_in: the FFN's input product (GLU: fc1 and gate together).
        ffn_out: the FFN's output product.
        head: the LM head.
        dependent: launch each kernel as a programmatic dependent of the one before, so that it streams its first
            weights while that one finishes (:mod:`retnet.ops.decode.dependent`; used where the GPU supports it).
    """

    qkvg: MatvecLaunch = MatvecLaunch(16, 256, 4, 3)
    output: MatvecLaunch = MatvecLaunch(8, 128, 8, 2)
    ffn_in: MatvecLaunch = MatvecLaunch(8, 1024, 4, 3)
    ffn_out: MatvecLaunch = MatvecLaunch(4, 1024, 8, 2)
    head: MatvecLaunch = MatvecLaunch(8, 1024, 4, 3)
    dependent: bool = True


@dataclass(frozen=True)
class _Norm:
    """A block norm as the kernels take it: kind, weight and bias (zeros for a LayerNorm without one)."""

    kind: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float

    def args(self) -> dict:
        """The norm as the product kernels' keyword arguments."""
        return {"norm": self.kind, "norm_weight": self.weight, "norm_bias": self.bias, "eps": self.eps}


@dataclass(frozen=True)
class _LayerPlan:
    """One RetNet block's weights and sizes for the fused step."""

    mixer_norm: _Norm
    qkvg: torch.Tensor  # (2·H·K + H·V (+ H·V), D) stacked weight
    heads: int
    key_dim: int
    value_dim: int  # V per head
    key_scale: float
    log_decay: torch.Tensor  # (H,) float32
    gate_from: int | None  # first column of g in the stacked output
    head_norm: str
    head_weight: torch.Tensor | None
    head_bias: torch.Tensor | None
    head_eps: float
    out_proj: torch.Tensor  # (D, H·V)
    ffn_norm: _Norm
    ffn_in: torch.Tensor  # (2F, D) stacked fc1 and gate, or (F, D) fc1
    ffn_glu: bool
    ffn_activation: str
    ffn_out: torch.Tensor  # (D, F)


def _norm_reason(name: str, module: nn.Module) -> str | None:
    if not isinstance(module, (RMSNorm, LayerNorm)):
        return f"{name} is {type(module).__name__}, not the library's RMSNorm or LayerNorm"
    if module.weight is None:
        return f"{name} has no affine weight"
    return None


def _norm(module: RMSNorm | LayerNorm) -> _Norm:
    weight = module.weight.detach()
    if isinstance(module, RMSNorm):
        return _Norm("rmsnorm", weight, None, module.eps)
    bias = module.bias.detach() if module.bias is not None else torch.zeros_like(weight)
    return _Norm("layernorm", weight, bias, module.eps)


def fused_step_unsupported(
    parts: DecoderParts, batch_size: int, device: torch.device, dtype: torch.dtype
) -> str | None:
    """Why the fused step cannot serve this model and engine, or None if it can.

    Args:
        parts: the model's pieces (with the engine's stacked weights already made).
        batch_size: the engine's slots.
        device: the model's device.
        dtype: the model's dtype.
    """
    if not triton_runtime_available(device):
        return f"the Triton kernels cannot run on {device}"
    from ..ops.retention.triton.tuning import MAX_K  # imports Triton, which is available here

    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"the model's dtype is {dtype} (the fused step takes float32, bfloat16 and float16)"
    if batch_size > MAX_BATCH:  # the kernels' limit: larger batches are the default step's matrix products
        return f"max_batch {batch_size} > {MAX_BATCH}"
    if parts.lm_head.bias is not None:
        return "the LM head has a bias"
    for i, block in enumerate(parts.blocks):
        mixer, ffn = block.mixer, block.ffn
        if not isinstance(mixer, MultiScaleRetention):
            return f"layer {i}'s mixer is {type(mixer).__name__}, not multi-scale retention"
        if mixer.backend == "torch":
            return f"layer {i} asks for the PyTorch retention backend"
        if mixer.key_dim > MAX_K:
            return f"the key head dim {mixer.key_dim} is above {MAX_K}"
        if current_packing(mixer._packed_decode, mixer.q_proj) is None:
            return f"layer {i}'s q/k/v/g weights are not stacked (pack_weights=False)"
        if not isinstance(ffn, FeedForward) or ffn.act not in _ACTIVATION_NAMES:
            return f"layer {i}'s FFN is not a FeedForward with silu, gelu or relu"
        if ffn.gate is not None and current_packing(ffn._packed_decode, ffn.fc1) is None:
            return f"layer {i}'s GLU weights are not stacked (pack_weights=False)"
        for name, norm in (("mixer norm", block.mixer_norm), ("FFN norm", block.ffn_norm)):
            reason = _norm_reason(f"layer {i}'s {name}", norm)
            if reason:
                return reason
    return _norm_reason("the final norm", parts.final_norm)


def _plan(block, device: torch.device) -> _LayerPlan:
    mixer, ffn = block.mixer, block.ffn
    H, K, V = mixer.num_heads, mixer.key_dim, mixer.head_value_dim
    head = mixer.group_norm
    glu = ffn.gate is not None
    return _LayerPlan(
        mixer_norm=_norm(block.mixer_norm),
        qkvg=mixer._packed_decode.weight,
        heads=H,
        key_dim=K,
        value_dim=V,
        key_scale=mixer.scaling,
        log_decay=mixer.log_decay(device, mixer.q_proj.weight.dtype).float().contiguous(),
        gate_from=None if mixer.g_proj is None else 2 * H * K + H * V,
        head_norm="none" if head is None else head.kind,
        head_weight=None if head is None or head.kind != "groupnorm" else head.weight.detach(),
        head_bias=None if head is None or head.kind != "groupnorm" else head.bias.detach(),
        head_eps=0.0 if head is None else head.eps,
        out_proj=mixer.out_proj.weight.detach(),
        ffn_norm=_norm(block.ffn_norm),
        ffn_in=ffn._packed_decode.weight if glu else ffn.fc1.weight.detach(),
        ffn_glu=glu,
        ffn_activation=_ACTIVATION_NAMES[ffn.act],
        ffn_out=ffn.fc2.weight.detach(),
    )


class FusedDecodeStep:
    """The fused block step and head of a RetNet model for an engine of ``batch_size`` slots.

    Its :meth:`block_step` and :meth:`head_step` take the places of the engine's default ones
    (:func:`~.engine._engine_step`); nothing in them allocates or synchronises, so the engine captures them in its
    CUDA graph.

    Args:
        parts: the model's pieces; check :func:`fused_step_unsupported` first.
        batch_size: the engine's slots (≤ 4).
        launches: the products' program shapes (default :class:`FusedLaunches`).
    """

    def __init__(self, parts: DecoderParts, batch_size: int, launches: FusedLaunches | None = None):
        from ..ops.decode.dependent import dependent_launch_available
        from ..ops.decode.retention import head_stat_blocks

        weight = parts.lm_head.weight
        device, dtype = weight.device, weight.dtype
        reason = fused_step_unsupported(parts, batch_size, device, dtype)
        if reason is not None:
            raise ValueError(f"the fused decode step cannot serve this model: {reason}")
        self.parts = parts
        self.launches = launches if launches is not None else FusedLaunches()
        self.dependent = self.launches.dependent and dependent_launch_available(device)
        self._plans = {id(block.mixer): _plan(block, device) for block in parts.blocks}
        self._final_norm = _norm(parts.final_norm)
        first = next(iter(self._plans.values()))
        B, H, K, V = batch_size, first.heads, first.key_dim, first.value_dim
        D = weight.shape[1]
        f32 = {"device": device, "dtype": torch.float32}
        widths = {(p.heads, p.key_dim, p.value_dim, p.qkvg.shape[0], p.ffn_out.shape[1]) for p in self._plans.values()}
        if len(widths) != 1:
            raise ValueError("the fused decode step needs every layer to have the same head and FFN sizes")
        (_, _, _, qkvg_rows, ffn_dim) = widths.pop()
        # Scratch shared by every layer: (B, N_qkvg), (B, H, V), (B, H, NVB, 2), (B, H, K), (B, F); the residual
        # stream (B, D) in the model's dtype.
        self.qkvg = torch.empty(B, qkvg_rows, **f32)
        self.o = torch.empty(B, H, V, **f32)
        self.stats = torch.empty(B, H, head_stat_blocks(B, H, K, V), 2, **f32)
        self.z_new = torch.empty(B, H, K, **f32)
        self.ffn_hidden = torch.empty(B, ffn_dim, **f32)
        self.hidden = torch.empty(B, D, device=device, dtype=dtype)

    def block_step(self, block, x: torch.Tensor, state: RetentionState, rotation=None) -> torch.Tensor:
        """One RetNet layer for one token of every slot, its state advanced in place: ``(B, D) -> (B, D)``.

        The result is the step's residual-stream buffer (overwritten by the next layer: the engine chains layers).
        ``rotation`` is the step's rotation table (built here from the state's positions when None).
        """
        from ..ops.decode.projections import gated_output_residual, paired_projection, projection
        from ..ops.decode.retention import retention_step_with_stats

        plan = self._plans[id(block.mixer)]
        L, H, K, dep = self.launches, plan.heads, plan.key_dim, self.dependent
        if rotation is None:
            rotation = block.mixer.rotation_table(state.position[:, None])
        paired_projection(
            x, plan.qkvg, self.qkvg, L.qkvg, rotation=rotation, rotated_rows=2 * H * K, key_rows_from=H * K,
            head_dim=K, key_scale=plan.key_scale, dependent=dep, **plan.mixer_norm.args(),
        )  # fmt: skip
        retention_step_with_stats(self.qkvg, plan.log_decay, state, self.o, self.stats, self.z_new, dependent=dep)
        gated_output_residual(
            self.o, self.stats, self.qkvg, plan.gate_from, plan.out_proj, x, self.hidden, L.output,
            head_norm=plan.head_norm, head_weight=plan.head_weight, head_bias=plan.head_bias, eps=plan.head_eps,
            z=state.z, z_new=self.z_new, position=state.position, dependent=dep,
        )  # fmt: skip
        ffn_args = {"dependent": dep, **plan.ffn_norm.args()}
        if plan.ffn_glu:
            paired_projection(
                self.hidden, plan.ffn_in, self.ffn_hidden, L.ffn_in, glu_activation=plan.ffn_activation, **ffn_args
            )
        else:
            projection(self.hidden, plan.ffn_in, self.ffn_hidden, L.ffn_in, activation=plan.ffn_activation, **ffn_args)
        projection(self.ffn_hidden, plan.ffn_out, self.hidden, L.ffn_out, residual=self.hidden, dependent=dep)
        return self.hidden

    def head_step(self, x: torch.Tensor, logits: torch.Tensor) -> None:
        """Final norm and LM head of ``x`` ``(B, D)`` into ``logits`` ``(B, vocab)`` float32, in place."""
        from ..ops.decode.projections import projection

        weight = self.parts.lm_head.weight
        projection(x, weight, logits, self.launches.head, dependent=self.dependent, **self._final_norm.args())
