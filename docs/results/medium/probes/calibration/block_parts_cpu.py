"""Which part of the comparison's attention model slows its MQAR learning (``block-parts.log``; CPU, minutes).

``[LR=1e-3] [WD=0.1] python block_parts_cpu.py STEPS POSITIONS BIASES [PARTS]``: a small causal Transformer written
here (2 pre-LayerNorm blocks of width 128 and 2 heads, FFN 4d) trained with plain AdamW on MQAR with 4 pairs at
T = 64 (vocabulary 512, 64 examples per step, the probes' generator) and scored on 256 validation examples every
200 steps. POSITIONS is ``rope`` (the harness's rotation applied to q and k) or ``learned`` (absolute position
embeddings); BIASES is ``bias`` or ``nobias`` (the linear layers); PARTS joins with "+" ``gelu`` (the FFN's
activation, else ReLU), ``final`` (a LayerNorm before the LM head, as every model of the harness has), ``rmsfinal``
(an RMSNorm there instead), ``plainfinal`` (a LayerNorm without gain and bias there), ``harnessinit`` (the
harness's initialisation: Xavier-uniform linears, zero biases, N(0, 1/d) embeddings and head), its pieces
``xavier`` (Xavier-uniform linears and zero biases, the head included), ``smallembed`` (N(0, 1/d) embeddings) and
``smallhead`` (an N(0, 1/d) head), and ``tied`` (the LM head shares the embedding matrix; with ``bias`` it keeps
its own bias).
"""

import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from retnet.compare.mqar import make_mqar
from retnet.layers.position import apply_rotation

VOCAB, SEQ_LEN, PAIRS, WIDTH, HEADS = 512, 64, 4, 128, 2


class Block(nn.Module):
    def __init__(self, width: int, heads: int, bias: bool, rope: bool, gelu: bool):
        super().__init__()
        self.heads, self.rope, self.act = heads, rope, F.gelu if gelu else F.relu
        self.mixer_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.out = nn.Linear(width, width, bias=bias)
        self.ffn_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width, bias=bias)
        self.fc2 = nn.Linear(4 * width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.mixer_norm(x)).view(B, T, 3, self.heads, D // self.heads).unbind(2)  # (B, T, H, K)
        if self.rope:
            positions = torch.arange(T).expand(B, T)
            q, k = apply_rotation(q, positions), apply_rotation(k, positions)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.out(o.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(self.act(self.fc1(self.ffn_norm(x))))


class Model(nn.Module):
    def __init__(self, positions: str, bias: bool, parts: set[str]):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Embedding(SEQ_LEN, WIDTH) if positions == "learned" else None
        rope, gelu = positions == "rope", "gelu" in parts
        self.blocks = nn.ModuleList([Block(WIDTH, HEADS, bias, rope, gelu) for _ in range(2)])
        self.head = nn.Linear(WIDTH, VOCAB, bias=bias)
        final_norms = {"final": lambda: nn.LayerNorm(WIDTH), "rmsfinal": lambda: nn.RMSNorm(WIDTH),
                       "plainfinal": lambda: nn.LayerNorm(WIDTH, elementwise_affine=False)}  # fmt: skip
        chosen = [make for name, make in final_norms.items() if name in parts]
        self.final_norm = chosen[0]() if chosen else nn.Identity()
        if "harnessinit" in parts:
            parts = parts | {"xavier", "smallembed", "smallhead"}
        for module in self.modules():
            if isinstance(module, nn.Linear) and "xavier" in parts:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding) and "smallembed" in parts:
                nn.init.normal_(module.weight, std=WIDTH**-0.5)
        if "smallhead" in parts:
            nn.init.normal_(self.head.weight, std=WIDTH**-0.5)
        if "tied" in parts:
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) + (self.position(torch.arange(ids.shape[1])) if self.position is not None else 0)
        for block in self.blocks:
            h = block(h)
        return self.head(self.final_norm(h))  # (B, T, V)


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    steps, positions, bias = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "bias"
    parts = set(sys.argv[4].split("+")) if len(sys.argv) > 4 else set()
    lr, wd = float(os.environ.get("LR", "1e-3")), float(os.environ.get("WD", "0.1"))
    model = Model(positions, bias, parts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    start = time.time()
    for step in range(steps):
        data = make_mqar(64, seq_len=SEQ_LEN, num_pairs=PAIRS, vocab_size=VOCAB, seed=[0, 0, step])
        loss = F.cross_entropy(model(data.input_ids).reshape(-1, VOCAB), data.targets.reshape(-1), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 200 == 0 or step == steps - 1:
            with torch.no_grad():
                val = make_mqar(256, seq_len=SEQ_LEN, num_pairs=PAIRS, vocab_size=VOCAB, seed=[0, 2, 1])
                scored = val.targets != -100
                hits = (model(val.input_ids).argmax(-1) == val.targets) & scored
            print(f"{positions} {sys.argv[3]} {'+'.join(sorted(parts)) or '-'} lr {lr:g} wd {wd:g} step {step} "
                  f"loss {loss.item():.3f} accuracy {hits.sum().item() / scored.sum().item():.3f} "
                  f"{time.time() - start:.0f}s", flush=True)  # fmt: skip
