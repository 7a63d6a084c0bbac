"""Weight initialisation (docs/spec.md §4: torchscale's Xavier gains for retention)."""

from __future__ import annotations

from torch import nn

from ..layers.retention import MultiScaleRetention


def init_weights(model: nn.Module, config) -> None:
    """Initialise a RetNet in place.

    Retention projections: Xavier-uniform with gain 2^−2.5 (q, k, v, g) and 2^−1 (out); other linear layers:
    Xavier-uniform; embeddings and the LM head: normal with std D^−½.
    """
    std = config.hidden_size**-0.5
    for module in model.modules():
        if isinstance(module, MultiScaleRetention):
            for proj in (module.q_proj, module.k_proj, module.v_proj, module.g_proj):
                if proj is not None:
                    nn.init.xavier_uniform_(proj.weight, gain=2**-2.5)
            nn.init.xavier_uniform_(module.out_proj.weight, gain=2**-1)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and ".retention." not in f".{name}.":
            if name == "lm_head":
                nn.init.normal_(module.weight, mean=0.0, std=std)
            else:
                nn.init.xavier_uniform_(module.weight)
