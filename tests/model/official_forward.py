"""An independent float64 forward of the official torchscale RetNet algorithm (parallel form), for interop tests.

Written from the official algorithm, on an official-format state dict: decay mask rows divided by √(row sum),
scores divided by clamp(Σ|scores|, 1, 5e4), RMS head norm without affine, swish gate, GLU FFN with the
activation on fc1, pre-norm RMSNorm blocks.
"""

import math

import torch
import torch.nn.functional as F

ACT = {"swish": F.silu, "gelu": F.gelu, "relu": F.relu}


def rms(x, weight, eps):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def rotate(x, n, K):
    angle = 1.0 / (10000 ** torch.linspace(0, 1, K // 2, dtype=torch.float64))
    angle = angle.repeat_interleave(2)  # (K,) each frequency twice, for the pair (2i, 2i+1)
    sin, cos = torch.sin(n[:, None] * angle), torch.cos(n[:, None] * angle)
    rot = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
    return x * cos + rot * sin


def official_logits(sd, args, tokens):
    d, H, L = args["decoder_embed_dim"], args["decoder_retention_heads"], args["decoder_layers"]
    eps = args["layernorm_eps"]
    K = d // H
    B, T = tokens.shape
    x = sd["embed_tokens.weight"][tokens] * (1.0 if args["no_scale_embedding"] else math.sqrt(d))
    n = torch.arange(T, dtype=torch.float64)
    decay = torch.log(1 - 2 ** (-5 - torch.arange(H, dtype=torch.float64)))
    rel = n[:, None] - n[None, :]
    mask = torch.where(rel >= 0, torch.exp(rel.clamp(min=0) * decay[:, None, None]), 0.0)  # (H, T, T)
    mask = mask / mask.sum(-1, keepdim=True).sqrt()
    for i in range(L):
        p = f"layers.{i}."
        h = rms(x, sd[p + "retention_layer_norm.weight"], eps)
        q = (h @ sd[p + "retention.q_proj.weight"].T).view(B, T, H, K).transpose(1, 2)
        k = (h @ sd[p + "retention.k_proj.weight"].T * K**-0.5).view(B, T, H, K).transpose(1, 2)
        v = (h @ sd[p + "retention.v_proj.weight"].T).view(B, T, H, -1).transpose(1, 2)
        g = h @ sd[p + "retention.g_proj.weight"].T
        qk = (rotate(q, n, K) @ rotate(k, n, K).transpose(-1, -2)) * mask
        qk = qk / qk.abs().sum(-1, keepdim=True).clamp(min=1, max=5e4)
        o = rms(qk @ v, None, eps).transpose(1, 2).reshape(B, T, -1)
        x = x + (F.silu(g) * o) @ sd[p + "retention.out_proj.weight"].T
        h = rms(x, sd[p + "final_layer_norm.weight"], eps)
        act = ACT[args["activation_fn"]]
        ffn = (act(h @ sd[p + "ffn.fc1.weight"].T) * (h @ sd[p + "ffn.gate.weight"].T)) @ sd[p + "ffn.fc2.weight"].T
        x = x + ffn
    x = rms(x, sd["layer_norm.weight"], eps)
    return x @ sd["output_projection.weight"].T
