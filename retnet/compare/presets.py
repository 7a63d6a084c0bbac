"""Named comparison settings: model size, data and training budget (paper §3.4, Tables 5 and 6).

Each preset is a nested mapping in the layout of :class:`~retnet.compare.config.CompareConfig` (the ordinary
``retnet train`` keys plus the ``compare`` and ``baseline`` sections), applied over :data:`RECIPE`.

``tiny``: CPU, minutes for the paper's eleven models; used in tests (with smaller overrides) and for the committed
CPU run. It reads only the small corpora (sotu in-domain; shakespeare and python-docs out-of-domain, about 30 MB of
downloads in all): the Linux source (1.2 GB) is left to the larger presets.
``small``: one H200; the eleven models in one command of under ten minutes (a few million tokens each).
``medium``: one H200, one architecture per GPU command, the eleven and the Transformer++; every model 42.5M
non-embedding parameters and 151M tokens of the kernel's C (at most two epochs); its data travels as one corpus
archive (docs/compare.md).
``200m``: the paper's Table-5 setting (16 layers, d = 1024, 4 heads of 256, FFN 2d, 200M parameters, 5B tokens,
2048-token sequences, 32k BPE vocabulary), the eleven and the Transformer++, for users with a multi-GPU budget.
``scaling-tiny`` and ``scaling-gpu``: the size-scaling study (``retnet compare --scaling``,
:mod:`retnet.compare.scaling`) on a CPU and on one H200.
"""

from __future__ import annotations

from ..utils.config_loader import merge
from .archs import ENTRIES

# The recipe every preset shares (TrainConfig keys). AdamW β = (0.9, 0.98) and clip 2.0 are TrainConfig's defaults.
RECIPE: dict = dict(
    name="compare",  # each entry's run is named after its folder
    eval_every=0,  # the comparison evaluates every entry itself, after training
    eval_batches=1,  # the trainer's own end-of-run check
    log_every=5,
    sample_tokens=0,
    tensorboard=False,
    # independent windows: the baselines carry no document boundaries
    data=dict(corpus="sotu", reset_at_boundaries=False),
    optim=dict(lr=3e-3, warmup_steps=10, weight_decay=0.01, schedule="linear"),
    checkpoint=dict(every=50, keep=1),
)

COMPARE_PRESETS: dict[str, dict] = {
    "tiny": dict(
        steps=250, batch_size=8, precision="fp32",  # 512,000 tokens of 256-token windows
        model=dict(preset="tiny", hidden_size=128, num_hidden_layers=2, num_heads=2, value_dim=256, ffn_dim=256,
                   flavour="paper"),
        data=dict(tokenizer="byte", vocab_size=256, seq_len=256),
        optim=dict(lr=2e-3, warmup_steps=20),
        compare=dict(out_dir="runs/compare-tiny", out_of_domain=["shakespeare", "python-docs"],
                     ood_max_bytes=1_000_000, eval_tokens=65_536),
        baseline=dict(num_heads=2),  # attention head dim 64
    ),
    "small": dict(
        steps=128, batch_size=64, precision="bf16",  # 4,194,304 tokens of 512-token windows
        # d = 512 with 2 heads keeps the paper's head dim 256; "reduce head dimension" then gives 8 heads of 64
        model=dict(preset="small", hidden_size=512, num_hidden_layers=6, num_heads=2, value_dim=1024, ffn_dim=1024,
                   flavour="paper"),
        data=dict(tokenizer="bpe", vocab_size=8192, seq_len=512),
        optim=dict(lr=1.5e-3, warmup_steps=25),
        compare=dict(out_dir="runs/compare-small", ood_max_bytes=3_000_000, eval_tokens=262_144),
        baseline=dict(num_heads=8),  # attention head dim 64
    ),
    "200m": dict(
        # paper Table 5 / §3.4: 16 layers, d = 1024, FFN 2048, 4 heads (head dim 256), 5B tokens, T = 2048
        steps=9536, batch_size=256, precision="bf16",  # 5.0B tokens of 2048-token windows
        micro_batch_size=8,  # gradient accumulation: 32 micro-batches of 8 × 2048 tokens per step
        log_every=50,
        model=dict(preset="200m"),
        data=dict(tokenizer="bpe", vocab_size=32000, seq_len=2048),
        optim=dict(lr=6e-4, warmup_steps=375),
        checkpoint=dict(every=500),
        compare=dict(archs=list(ENTRIES), out_dir="runs/compare-200m", ood_max_bytes=50_000_000, eval_tokens=2_097_152),
        baseline=dict(num_heads=16),  # attention head dim 64
    ),
    "medium": dict(
        # one H200, a model per command (resumable): d = 768, 6 layers, 3 heads of 256 (42.5M non-embedding
        # parameters); 150,994,944 tokens of 1,024-token windows of linux-200mb (200 MB of the kernel's C in whole
        # folders, retnet.data.corpora), whose training split is 77,286,194 tokens at its BPE-16k tokenizer: 1.95
        # epochs, so no token is seen more than twice (tests/compare/test_medium_preset.py checks it). BPE trains on
        # a fixed 50 MB sample of the training files (the data is prepared in each GPU command). A four-rate sweep;
        # two seeds per architecture; bf16 autocast and compiled blocks (the fast path; compilation is not part of a
        # run's key, so an architecture that fails to compile can run with --compile=false in the same study)
        steps=2304, batch_size=64, precision="bf16", compile=True,
        log_every=25,
        model=dict(preset="small", hidden_size=768, num_hidden_layers=6, num_heads=3, value_dim=1536, ffn_dim=1536,
                   flavour="paper"),
        data=dict(corpus="linux-200mb", tokenizer="bpe", vocab_size=16384, seq_len=1024, val_fraction=0.01,
                  workers=16),
        optim=dict(lr=1e-3, warmup_steps=100),
        checkpoint=dict(every=500),  # a save takes seconds; 100 would cost a fifth of a full run
        compare=dict(archs=list(ENTRIES), out_dir="runs/compare-medium",
                     out_of_domain=["sotu", "shakespeare", "python-docs"],
                     ood_max_bytes=4_000_000, eval_tokens=1_048_576, bpe_train_bytes=50_000_000, seeds=[0, 1]),
        # attention head dim 64; Hyena's filters span T; H3 with head dim 1, the released H3 models' setting (each
        # head's state is d_h × d_h, so d_h = 8 would multiply the work of its FFT convolution by 8)
        baseline=dict(num_heads=12, max_position_embeddings=1024, h3_head_dim=1),
        # the Table-6 ablations keep RetNet's hyperparameters, as in the paper: its swept rate, no sweep of their own
        sweep=dict(lrs=[5e-4, 1e-3, 2e-3, 4e-3], fraction=0.1, ablations="retnet", extend=2),
        probes=dict(passkey_corpus="sotu", extrapolation_corpus=""),
    ),
}  # fmt: skip

# The size-scaling study (retnet compare --scaling): RetNet against the Transformer++ (the harness's Transformer with
# the torchscale flavour's RMSNorm and SwiGLU FFN copied from the RetNet row; rotary positions, no biases).
COMPARE_PRESETS["scaling-tiny"] = dict(
    # CPU: depths 1-4 at width 16 per layer (3.6k to 230k non-embedding parameters, 63x), 4 tokens per parameter
    # (14,336 to 919,552 byte tokens); about 2.9M tokens for the whole study, 12.5 minutes on a shared 2-core CPU
    steps=1, batch_size=8, precision="fp32",
    model=dict(preset="tiny", hidden_size=32, num_hidden_layers=2, num_heads=2, value_dim=64, ffn_dim=64,
               flavour="torchscale"),  # RetNet head dim 16 (value head dim 32)
    data=dict(tokenizer="byte", vocab_size=256, seq_len=256),
    optim=dict(lr=2e-3),
    compare=dict(out_dir="runs/compare-scaling-tiny", out_of_domain=["shakespeare"], ood_max_bytes=1_000_000,
                 eval_tokens=65_536, ffn_multiple=2),  # FFN steps of 2 keep the smallest size within 2 %
    baseline=dict(num_heads=2),  # attention head dim 16
    scaling=dict(sizes=[1, 2, 3, 4], aspect=16, tokens_per_parameter=4.0),
)  # fmt: skip
COMPARE_PRESETS["scaling-gpu"] = merge(COMPARE_PRESETS["medium"], dict(
    # one H200, the medium preset's data and recipe, a run per (architecture, size, seed): depths 2-5 at width 128
    # per layer (1.84M, 6.20M, 14.7M and 28.7M non-embedding parameters, 15.6x), 5 tokens per parameter (9.2M to
    # 143M tokens of 1,024-token windows). The corpus bounds the ratio: the largest run sees its 77.3M training
    # tokens 1.86 times, and more than 5.4 per parameter would show it some tokens more than twice. Throughput
    # assumed: 2.5e14 FLOP/s of 6 * N_mm per token, what compiled RetNet reached in the medium study (760k tokens/s
    # at 42.5M + 12.6M head parameters); an architecture's ladder (4.65e16 FLOPs) then trains in about 190 s, one
    # command with its data preparation, compilations and evaluations.
    steps=1,
    model=dict(hidden_size=256, num_hidden_layers=2, num_heads=2, value_dim=512, ffn_dim=512,
               flavour="torchscale"),  # RetNet head dim 128 (value head dim 256)
    compare=dict(out_dir="runs/compare-scaling-gpu"),
    baseline=dict(num_heads=4),  # attention head dim 64
    sweep=dict(lrs=[]),  # one learning rate (optim.lr) for every size and architecture
    scaling=dict(sizes=[2, 3, 4, 5], aspect=128, tokens_per_parameter=5.0),
))  # fmt: skip
