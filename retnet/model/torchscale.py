"""Interop with the official torchscale RetNet (docs/spec.md §7 "Interop"): its config keys and state-dict names.

retnet's module names follow torchscale's, so a state dict maps by prefix only: ``embed_tokens`` →
``model.embed_tokens``, ``layers.N.*`` → ``model.layers.N.*``, ``layer_norm`` → ``model.layer_norm`` and
``output_projection`` → ``lm_head``. The official rotation/decay buffers (``retnet_rel_pos.*``) are recomputed.
"""

from __future__ import annotations

import torch

from .config import RetNetConfig

# Official defaults (torchscale/architecture/config.py, RetNetConfig) for keys a dict may leave out.
TORCHSCALE_DEFAULTS = {
    "decoder_embed_dim": 768,
    "decoder_value_embed_dim": 1280,
    "decoder_retention_heads": 3,
    "decoder_ffn_embed_dim": 1280,
    "decoder_layers": 12,
    "activation_fn": "gelu",
    "dropout": 0.0,
    "no_scale_embedding": True,
    "layernorm_eps": 1e-6,
    "share_decoder_input_output_embed": False,
    "decoder_normalize_before": True,
    "layernorm_embedding": False,
    "deepnorm": False,
    "moe_freq": 0,
    "vocab_size": -1,
}
# Official options whose non-default values retnet does not implement.
_UNSUPPORTED = {"decoder_normalize_before": True, "layernorm_embedding": False, "deepnorm": False, "moe_freq": 0}
_PREFIXES = ("module.", "model.decoder.", "decoder.", "model.")


def config_from_torchscale(args) -> RetNetConfig:
    """A torchscale-flavour :class:`RetNetConfig` from the official config keys (a dict or an object).

    Unrelated keys are ignored and missing ones take the official defaults.

    Raises:
        ValueError: for a missing/invalid vocabulary size, an unsupported activation or official option.
    """
    get = (
        (lambda k: args.get(k, TORCHSCALE_DEFAULTS[k]))
        if isinstance(args, dict)
        else (lambda k: getattr(args, k, TORCHSCALE_DEFAULTS[k]))
    )
    for key, supported in _UNSUPPORTED.items():
        if get(key) != supported:
            raise ValueError(f"torchscale option {key}={get(key)!r} is not supported (only {supported!r})")
    activation = get("activation_fn")
    if activation not in ("swish", "gelu", "relu"):
        raise ValueError(f"unsupported torchscale activation_fn {activation!r} (swish, gelu or relu)")
    vocab = get("vocab_size")
    if not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"the torchscale config needs a positive vocab_size, got {vocab!r}")
    return RetNetConfig(
        vocab_size=vocab,
        hidden_size=get("decoder_embed_dim"),
        value_dim=get("decoder_value_embed_dim"),
        num_heads=get("decoder_retention_heads"),
        ffn_dim=get("decoder_ffn_embed_dim"),
        num_hidden_layers=get("decoder_layers"),
        flavour="torchscale",
        activation=activation,
        dropout=float(get("dropout")),
        scale_embedding=not get("no_scale_embedding"),
        norm_eps=float(get("layernorm_eps")),
        group_norm_eps=float(get("layernorm_eps")),
        tie_word_embeddings=bool(get("share_decoder_input_output_embed")),
    )


def config_to_torchscale(config: RetNetConfig) -> dict:
    """The official config keys describing ``config`` (torchscale flavour only)."""
    if (config.flavour, config.head_norm, config.decay_schedule, config.use_gate) != (
        "torchscale", "rms", "torchscale", True,
    ):  # fmt: skip
        raise ValueError("only torchscale-flavour models with the official decay, head norm and gate can be exported")
    return {
        "vocab_size": config.vocab_size,
        "decoder_embed_dim": config.hidden_size,
        "decoder_value_embed_dim": config.value_dim,
        "decoder_retention_heads": config.num_heads,
        "decoder_ffn_embed_dim": config.ffn_dim,
        "decoder_layers": config.num_hidden_layers,
        "activation_fn": config.activation if config.activation != "silu" else "swish",
        "dropout": config.dropout,
        "no_scale_embedding": not config.scale_embedding,
        "layernorm_eps": config.norm_eps,
        "share_decoder_input_output_embed": config.tie_word_embeddings,
    }


def _strip_prefix(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def state_dict_from_torchscale(state_dict: dict) -> dict:
    """Rename an official state dict to retnet's names (buffers ``retnet_rel_pos.*`` dropped)."""
    out = {}
    for name, tensor in state_dict.items():
        name = _strip_prefix(name)
        if name.startswith("retnet_rel_pos.") or name == "version" or name.endswith("._float_tensor"):
            continue
        if name.startswith("output_projection."):
            out["lm_head." + name[len("output_projection.") :]] = tensor
        else:
            out["model." + name] = tensor
    return out


def state_dict_to_torchscale(model) -> dict:
    """retnet's state dict with the official names."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("lm_head."):
            out["output_projection." + name[len("lm_head.") :]] = tensor
        else:
            out[name[len("model.") :]] = tensor
    return out


def model_from_torchscale(cls, state_dict: dict, config) -> torch.nn.Module:
    """Build ``cls(config)`` holding an official state dict's tensors (names and shapes checked strictly).

    Raises:
        ValueError: if the state dict does not match the config.
    """
    if not isinstance(config, RetNetConfig):
        config = config_from_torchscale(config)
    state = state_dict_from_torchscale(state_dict)
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state.get("model.embed_tokens.weight"))
    with torch.device("meta"):
        model = cls(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"torchscale state dict does not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(
                f"torchscale tensor {k} has shape {tuple(state[k].shape)}, config expects {tuple(v.shape)}"
            )
    model.load_state_dict(state, assign=True)  # keeps the checkpoint's dtype, as the official model would
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model
