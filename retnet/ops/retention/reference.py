"""Pure-PyTorch retention in its three forms: the specification every fast path is tested against.

Paper: Sun et al. 2023, "Retentive Network", §2.1. Per (batch, head), with k already scaled by K^−½:

    S_n = γ S_{n−1} + k_nᵀ v_n,      o_n = q_n S_n                                   (Eq. 1-2, recurrent, Eq. 6)
    O = (Q Kᵀ ⊙ D) V,   D[n, m] = γ^(n−m) if m ≤ n else 0                          (Eq. 5, parallel)
    chunk i: O_i = (Q_i K_iᵀ ⊙ D) V_i + (Q_i ⊙ ξ) S_{i−1},
             S_i = γ^C S_{i−1} + (K_i ⊙ ζ)ᵀ V_i, ξ_j = γ^(j+1), ζ_j = γ^(C−1−j)      (Eq. 7, with the ζ the
                                                                                       paper's Eq. 7 omits)

Normalisation (docs/spec.md §3), identical in every form because it is a per-row scalar:
    factor 2: divide o_n by √c_n,   c_n = Σ_{i=0..n} γ^i  (n the absolute position);
    factor 3: divide by max(|s_n| / √c_n, 1),   s_n = q_n z_n,   z_n = γ z_{n−1} + k_n.
Together: o_n / max(|s_n|, √c_n), the denominator detached from autograd as in the official code.

Conventions shared by all three functions below:
    q, k: ``(B, T, H, K)``, v: ``(B, T, H, V)``, log_decay: ``(H,)``, state: :class:`RetentionState` (never
    None here; the dispatcher builds the empty one). Tokens at negative absolute positions are left padding:
    they contribute nothing and their outputs are 0. Everything is computed in float32 (float64 for float64
    inputs); the output takes v's dtype. The returned state always describes the end of the segment.

Non-finite inputs stay causal: a NaN or inf in q, k or v at position m reaches outputs at n ≥ m only, in every
form, as in the recurrence. Masks are applied with ``torch.where`` (0 · inf is NaN), and a product of masked
scores with v keeps a non-finite value of v out of earlier rows (:func:`masked_scores_times_values`); where
such a value appears the forms may differ in which non-finite value they give (NaN or ±inf), not in where.
A float16 output that overflows to inf where the float32 result was finite is logged once.
"""

from __future__ import annotations

import logging

import torch

from ...utils.checks import values_checkable
from .decay import causal_mask, compute_dtype, decay_mask, decay_powers, decay_row_norm
from .state import RetentionState

logger = logging.getLogger(__name__)
_fp16_overflow_logged = False


def causal_scores(q: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``(q kᵀ) ⊙ D`` with the entries above the diagonal set to 0 by ``torch.where``, not by D's zeros.

    Args:
        q: ``(..., T, K)``.
        k: ``(..., T, K)``.
        D: ``(..., T, T)`` decay mask broadcastable to the scores.

    Returns:
        ``(..., T, T)`` scores; a non-finite key at m leaves rows n < m finite.
    """
    T = q.shape[-2]
    return torch.where(causal_mask(T, q.device), (q @ k.transpose(-1, -2)) * D, 0.0)


def masked_scores_times_values(scores: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``scores @ v`` for causally masked scores, with non-finite values of v reaching later rows only.

    A matrix product multiplies the masked zeros with every value (0 · inf = NaN in rows before the value), so
    non-finite values are left out of the product, and the rows at or after one (per channel) are set to NaN:
    what the recurrence gives there is non-finite too.

    Args:
        scores: ``(..., T, T)`` with zeros above the diagonal.
        v: ``(..., T, V)``.

    Returns:
        ``(..., T, V)``.
    """
    finite = torch.isfinite(v)
    o = scores @ torch.where(finite, v, 0.0)
    reached = (~finite).cumsum(-2) > 0  # (..., T, V): a non-finite value at or before this row
    return torch.where(reached, torch.full((), float("nan"), dtype=o.dtype, device=o.device), o)


def _warn_fp16_overflow(o: torch.Tensor, o_lp: torch.Tensor) -> None:
    global _fp16_overflow_logged  # log once per process, like the backend fallback in dispatch.py
    if _fp16_overflow_logged or o_lp.dtype != torch.float16 or not values_checkable():
        return
    if bool((torch.isinf(o_lp) & torch.isfinite(o)).any()):
        logger.warning(
            "retention: float16 output overflowed to inf (|o| > 65504); use bfloat16 or float32, or keep normalize=True"
        )
        _fp16_overflow_logged = True


def normalize_rows(
    o_BHTV: torch.Tensor, s_BHT: torch.Tensor, positions_BT: torch.Tensor, log_decay: torch.Tensor
) -> torch.Tensor:
    """Apply normalisation factors 2 and 3 (docs/spec.md §3): o_n / max(|s_n|, √c_n), denominator detached.

    Args:
        o_BHTV: ``(B, H, T, V)`` raw retention output.
        s_BHT: ``(B, H, T)`` raw scores s_n (retention with v ≡ 1).
        positions_BT: ``(B, T)`` absolute positions.
        log_decay: ``(H,)`` log γ in the compute dtype.

    Returns:
        ``(B, H, T, V)`` normalised output.
    """
    sqrt_c = decay_row_norm(log_decay, positions_BT).sqrt()  # (B, H, T)
    denom = torch.maximum(s_BHT.abs(), sqrt_c).detach()
    return o_BHTV / denom[..., None]


def _prepare(q, k, v, log_decay, state):
    """Cast to the compute dtype, move heads first and zero the padded (negative-position) tokens."""
    dt = compute_dtype(v.dtype)
    T = q.shape[1]
    positions = state.position[:, None] + torch.arange(T, device=q.device)  # (B, T)
    valid = (positions >= 0)[:, None, :, None]  # (B, 1, T, 1)
    q_BHTK = q.to(dt).transpose(1, 2)  # (B, T, H, K) -> (B, H, T, K)
    k_BHTK = torch.where(valid, k.to(dt).transpose(1, 2), 0.0)
    v_BHTV = torch.where(valid, v.to(dt).transpose(1, 2), 0.0)
    S0 = state.S.to(dt)
    z0 = state.z.to(dt)
    return q_BHTK, k_BHTK, v_BHTV, log_decay.to(dt), S0, z0, positions, valid


def _finish(o_BHTV, s_BHT, positions, valid, log_decay, normalize, v_dtype, S, z, state, T):
    if normalize:
        o_BHTV = normalize_rows(o_BHTV, s_BHT, positions, log_decay)
    o_BHTV = torch.where(valid, o_BHTV, 0.0)
    o_BTHV = o_BHTV.transpose(1, 2)  # (B, H, T, V) -> (B, T, H, V)
    o = o_BTHV.to(v_dtype)
    _warn_fp16_overflow(o_BTHV, o)
    return o, RetentionState(S, z, state.position + T)


def parallel_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: RetentionState,
    normalize: bool = True,
) -> tuple[torch.Tensor, RetentionState]:
    """Parallel form (Eq. 5): the full T×T decay mask, O(T²) memory. See the module docstring for shapes."""
    q_BHTK, k_BHTK, v_BHTV, lg, S0, z0, positions, valid = _prepare(q, k, v, log_decay, state)
    T = q.shape[1]
    D_HTT = decay_mask(lg, T)
    scores_BHTT = causal_scores(q_BHTK, k_BHTK, D_HTT)  # (B, H, T, T)
    xi_HT = decay_powers(lg, torch.arange(1, T + 1, device=q.device))  # γ^(n+1): decay of the initial state
    q_xi = q_BHTK * xi_HT[None, :, :, None]
    o_BHTV = masked_scores_times_values(scores_BHTT, v_BHTV) + q_xi @ S0  # (B, H, T, V)
    s_BHT = scores_BHTT.sum(-1) + (q_xi @ z0[..., None]).squeeze(-1)
    # Final state: S_T = γ^T S_0 + Σ_m γ^(T−1−m) k_mᵀ v_m.
    zeta_HT = decay_powers(lg, torch.arange(T - 1, -1, -1, device=q.device))
    k_zeta = k_BHTK * zeta_HT[None, :, :, None]
    gamma_T = decay_powers(lg, torch.full((), T, device=q.device))  # (H,)
    S = gamma_T[None, :, None, None] * S0 + k_zeta.transpose(-1, -2) @ v_BHTV
    z = gamma_T[None, :, None] * z0 + k_zeta.sum(-2)
    return _finish(o_BHTV, s_BHT, positions, valid, lg, normalize, v.dtype, S, z, state, T)


def recurrent_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: RetentionState,
    normalize: bool = True,
) -> tuple[torch.Tensor, RetentionState]:
    """Recurrent form (Eq. 6): one token at a time, O(1) memory in T. See the module docstring for shapes."""
    q_BHTK, k_BHTK, v_BHTV, lg, S, z, positions, valid = _prepare(q, k, v, log_decay, state)
    T = q.shape[1]
    gamma = lg.exp()
    o_steps, s_steps = [], []
    for t in range(T):
        S = gamma[None, :, None, None] * S + k_BHTK[:, :, t, :, None] * v_BHTV[:, :, t, None, :]  # (B, H, K, V)
        z = gamma[None, :, None] * z + k_BHTK[:, :, t]  # (B, H, K)
        o_steps.append((q_BHTK[:, :, t, None, :] @ S).squeeze(-2))  # (B, H, V)
        s_steps.append((q_BHTK[:, :, t] * z).sum(-1))  # (B, H)
    o_BHTV = torch.stack(o_steps, dim=2)
    s_BHT = torch.stack(s_steps, dim=2)
    return _finish(o_BHTV, s_BHT, positions, valid, lg, normalize, v.dtype, S, z, state, T)


def chunkwise_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    state: RetentionState,
    normalize: bool = True,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, RetentionState]:
    """Chunkwise recurrent form (Eq. 7 with ζ): parallel inside chunks of C, recurrent across them.

    All chunks' intra-chunk work is batched; only the state scan loops over the N = ⌈T / C⌉ chunks, so this
    is also the CPU training path. The last chunk may be shorter; its ζ and γ^C use its own length.
    """
    q_BHTK, k_BHTK, v_BHTV, lg, S, z, positions, valid = _prepare(q, k, v, log_decay, state)
    B, H, T, K = q_BHTK.shape
    V = v_BHTV.shape[-1]
    C = min(chunk_size, T)
    N = -(-T // C)
    pad = N * C - T
    if pad:
        q_BHTK, k_BHTK, v_BHTV = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (q_BHTK, k_BHTK, v_BHTV))
    q_c = q_BHTK.view(B, H, N, C, K)
    k_c = k_BHTK.view(B, H, N, C, K)
    v_c = v_BHTV.view(B, H, N, C, V)
    dev = q.device

    lengths = torch.full((N,), C, device=dev, dtype=torch.long)
    lengths[-1] = T - (N - 1) * C
    j = torch.arange(C, device=dev)
    # ζ_ij = γ^(L_i − 1 − j) inside the chunk, 0 on the padded tail of a short last chunk.
    zeta_exp = lengths[:, None] - 1 - j[None, :]  # (N, C)
    zeta_HNC = torch.where(zeta_exp >= 0, decay_powers(lg, zeta_exp.clamp(min=0)), 0.0)
    chunk_decay_HN = decay_powers(lg, lengths)  # γ^(L_i)
    xi_HC = decay_powers(lg, j + 1)  # ξ_j = γ^(j+1)
    D_HCC = decay_mask(lg, C)

    scores = causal_scores(q_c, k_c, D_HCC[None, :, None])  # (B, H, N, C, C)
    o_inner = masked_scores_times_values(scores, v_c)  # (B, H, N, C, V)
    s_inner = scores.sum(-1)  # (B, H, N, C)
    k_zeta = k_c * zeta_HNC[None, :, :, :, None]  # (B, H, N, C, K)
    chunk_kv = k_zeta.transpose(-1, -2) @ v_c  # (B, H, N, K, V)
    chunk_k = k_zeta.sum(-2)  # (B, H, N, K)

    states_before, keysums_before = [], []
    for i in range(N):
        states_before.append(S)
        keysums_before.append(z)
        S = chunk_decay_HN[None, :, i, None, None] * S + chunk_kv[:, :, i]
        z = chunk_decay_HN[None, :, i, None] * z + chunk_k[:, :, i]
    S_prev = torch.stack(states_before, dim=2)  # (B, H, N, K, V)
    z_prev = torch.stack(keysums_before, dim=2)  # (B, H, N, K)

    q_xi = q_c * xi_HC[None, :, None, :, None]  # (B, H, N, C, K)
    o_BHTV = (o_inner + q_xi @ S_prev).reshape(B, H, N * C, V)[:, :, :T]
    s_BHT = (s_inner + (q_xi @ z_prev[..., None]).squeeze(-1)).reshape(B, H, N * C)[:, :, :T]
    return _finish(o_BHTV, s_BHT, positions, valid, lg, normalize, v.dtype, S, z, state, T)


REFERENCE_FORMS = {"parallel": parallel_ref, "recurrent": recurrent_ref, "chunkwise": chunkwise_ref}
