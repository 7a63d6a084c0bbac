"""Named comparison settings: model size, data and training budget (paper §3.4, Tables 5 and 6).

``tiny``: CPU, minutes for all eleven models; used in tests (with smaller overrides) and for the committed CPU run.
``small``: one H200; all eleven models in one command of under ten minutes (a few million tokens each).
``200m``: the paper's Table-5 setting (16 layers, d = 1024, 4 heads of 256, FFN 2d, 200M parameters, 5B tokens,
2048-token sequences, 32k BPE vocabulary) for users with a multi-GPU budget.
"""

from __future__ import annotations

COMPARE_PRESETS: dict[str, dict] = {
    "tiny": dict(
        model=dict(hidden_size=128, num_hidden_layers=2, num_heads=2),
        baseline=dict(attention_head_dim=64, ssm_state_size=64, max_position_embeddings=2048),
        data=dict(tokenizer="byte", vocab_size=256, ood_max_bytes=1_000_000, eval_tokens=65_536),
        train=dict(seq_len=256, batch_size=8, tokens=512_000, lr=2e-3, warmup_steps=20, log_every=5),
    ),
    "small": dict(
        # d = 512 with 2 heads keeps the paper's head dim 256; "reduce head dimension" then gives 8 heads of 64
        model=dict(hidden_size=512, num_hidden_layers=6, num_heads=2),
        baseline=dict(attention_head_dim=64, ssm_state_size=64, max_position_embeddings=2048),
        data=dict(tokenizer="bpe", vocab_size=8192, ood_max_bytes=3_000_000, eval_tokens=262_144),
        train=dict(
            seq_len=512, batch_size=64, tokens=4_194_304, lr=1.5e-3, warmup_steps=25, log_every=5, dtype="bfloat16"
        ),
    ),
    "200m": dict(
        # paper Table 5 / §3.4: 16 layers, d = 1024, FFN 2048, 4 heads (head dim 256), 5B tokens, T = 2048
        model=dict(hidden_size=1024, num_hidden_layers=16, num_heads=4),
        baseline=dict(attention_head_dim=64, ssm_state_size=64, max_position_embeddings=2048),
        data=dict(tokenizer="bpe", vocab_size=32000, ood_max_bytes=50_000_000, eval_tokens=2_097_152),
        train=dict(
            seq_len=2048, batch_size=256, tokens=5_000_000_000, lr=6e-4, warmup_steps=375, log_every=50,
            dtype="bfloat16", checkpoint_every=500,
        ),
        trainer=dict(micro_batch_size=8),  # gradient accumulation: 32 micro-batches of 8 × 2048 tokens per step
    ),
}  # fmt: skip
