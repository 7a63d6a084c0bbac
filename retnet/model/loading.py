"""Reading official torchscale checkpoints from disk (the library side of ``retnet convert torchscale``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import RetNetConfig
from .modeling import RetNetForCausalLM


def _find_official_args(ckpt: dict) -> dict | None:
    """The model arguments stored in a fairseq/torchscale checkpoint, if any."""
    cfg = ckpt.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        return dict(cfg["model"])
    args = ckpt.get("args")
    if args is not None and hasattr(args, "__dict__"):
        return dict(vars(args))
    return None


def load_torchscale_checkpoint(
    path: str | Path, *, config_path: str | Path | None = None, trust_pickle: bool = False
) -> RetNetForCausalLM:
    """A model from an official checkpoint file: a bare state dict or a fairseq-style ``{"model": ...}`` dict.

    Args:
        path: the ``.pt`` file.
        config_path: JSON file of official config keys; needed when the checkpoint carries none.
        trust_pickle: allow arbitrary pickled objects (fairseq checkpoints store their arguments that way);
            only for files from a trusted source.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: an unreadable checkpoint, no config, or weights that do not match the config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # torch raises several types for pickles it refuses or cannot parse
        hint = "" if trust_pickle else " (if it stores pickled arguments and you trust it, pass --trust-pickle)"
        raise ValueError(f"cannot read {path}: {str(err).splitlines()[0]}{hint}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} does not hold a state dict")
    state_dict = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    if config_path is not None:
        args = json.loads(Path(config_path).read_text())
    else:
        args = _find_official_args(ckpt)
        if args is None:
            raise ValueError(f"{path} carries no model config; pass the official config keys as JSON (--config)")
    if not isinstance(args, dict):
        raise ValueError(f"the model config must be a JSON object of official keys, got {type(args).__name__}")
    vocab = args.get("vocab_size")
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1:
        embedding = next((k for k in state_dict if k.endswith("embed_tokens.weight")), None)
        if embedding is None:
            raise ValueError(
                f"the config gives no vocab_size and {path} has no embed_tokens.weight to read it from; "
                "add vocab_size to the --config JSON"
            )
        args = dict(args, vocab_size=int(state_dict[embedding].shape[0]))
    return RetNetForCausalLM.from_torchscale(state_dict, RetNetConfig.from_torchscale(args))
