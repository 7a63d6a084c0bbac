"""Named model sizes. Each paper preset cites its source; ``from_preset`` needs an exact name.

``NAME`` presets are the torchscale flavour with the official code's dimensions (value dim = FFN dim ≈ 5/3·d,
K = 256, so 12·d² per layer); ``NAME-paper`` presets are the paper flavour with the paper's Table 2/7
dimensions (value dim 2d, FFN 2d, also 12·d² per layer). Vocabulary 32,000 unless overridden.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # Small models for tests and CPU runs.
    "debug": dict(hidden_size=64, num_hidden_layers=2, num_heads=2, value_dim=128, ffn_dim=128, vocab_size=256),
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_heads=4, value_dim=256, ffn_dim=256, vocab_size=256),
    "small": dict(hidden_size=256, num_hidden_layers=6, num_heads=4, value_dim=512, ffn_dim=512, vocab_size=8192),
    # Paper Table 5 / §3.4: 200M comparison model (16 layers, d 1024, FFN 2048, 4 heads; value dim 2d).
    "200m": dict(hidden_size=1024, num_hidden_layers=16, num_heads=4, value_dim=2048, ffn_dim=2048, vocab_size=32000),
    # Paper Table 2/7 sizes with the official code's value/FFN dims (torchscale retnet_base/medium/xl configs).
    "1.3b": dict(hidden_size=2048, num_hidden_layers=24, num_heads=8, value_dim=3456, ffn_dim=3456, vocab_size=32000),
    "2.7b": dict(hidden_size=2560, num_hidden_layers=32, num_heads=10, value_dim=4280, ffn_dim=4280, vocab_size=32000),
    "6.7b": dict(hidden_size=4096, num_hidden_layers=32, num_heads=16, value_dim=6912, ffn_dim=6912, vocab_size=32000),
}
# Paper Table 2/7 geometry in the paper flavour: value dim 2d, FFN 2d.
for _name in ("1.3b", "2.7b", "6.7b"):
    _p = PRESETS[_name]
    PRESETS[f"{_name}-paper"] = dict(
        _p, value_dim=2 * _p["hidden_size"], ffn_dim=2 * _p["hidden_size"], flavour="paper"
    )
PRESETS["200m"]["flavour"] = "paper"

# Sizes the paper names, for the parameter-count check (embeddings included; 200m counts non-embedding params).
PAPER_SIZES = {"1.3b": 1.3e9, "2.7b": 2.7e9, "6.7b": 6.7e9, "200m": 2.0e8}
