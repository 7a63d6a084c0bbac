"""``save_pretrained`` / ``from_pretrained``: safetensors + JSON config, written atomically, verified on load."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils.files import atomic_write, sha256_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKSUM_NAME = "checksums.json"


def save_pretrained(model, directory) -> None:
    """Write the config, the weights (tied weights once) and their checksum into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    seen = set()
    storages = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen and name == "lm_head.weight":
            continue  # tied to the embedding
        seen.add(tensor.data_ptr())
        tensor = tensor.detach().contiguous().cpu()
        storage = tensor.untyped_storage().data_ptr()
        # Weights packed for decoding are views of one buffer; safetensors stores each tensor on its own.
        state[name] = tensor.clone() if storage in storages else tensor
        storages.add(storage)
    meta = {"format": "pt", "library": "retnet"}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata=meta))
    checksum = {WEIGHTS_NAME: sha256_file(directory / WEIGHTS_NAME)}
    atomic_write(directory / CHECKSUM_NAME, lambda p: p.write_text(json.dumps(checksum, indent=2) + "\n"))
    atomic_write(directory / CONFIG_NAME, lambda p: model.config.save(p))


def load_pretrained(cls, directory, *, device=None, dtype=None, allow_unverified: bool = False):
    """Load and verify a checkpoint written by :func:`save_pretrained`.

    Args:
        cls: the model class.
        directory: the folder.
        device: optional device of the loaded model.
        dtype: optional dtype of the loaded model.
        allow_unverified: load weights that have no checksum (no ``checksums.json``, or no entry in it).

    Raises:
        FileNotFoundError: a missing directory, config or weights file.
        ValueError: a corrupt or truncated file, a checksum mismatch, a missing checksum (unless
            ``allow_unverified``), or weights that do not fit the config.
    """
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} not found (not a retnet checkpoint directory?)")
    config = cls.config_class.load(directory / CONFIG_NAME)
    expected = None
    if (directory / CHECKSUM_NAME).is_file():
        try:
            expected = json.loads((directory / CHECKSUM_NAME).read_text()).get(WEIGHTS_NAME)
        except (ValueError, AttributeError):
            raise ValueError(f"{directory / CHECKSUM_NAME} is not a checksum file") from None
    if expected is None and not allow_unverified:
        raise ValueError(
            f"{directory / WEIGHTS_NAME} has no checksum in {directory / CHECKSUM_NAME}, so it cannot be verified; "
            "pass --allow-unverified (allow_unverified=True) to load it anyway"
        )
    if expected is not None and sha256_file(directory / WEIGHTS_NAME) != expected:
        raise ValueError(f"{directory / WEIGHTS_NAME} does not match its checksum (corrupt or truncated)")
    try:
        state = load_file(str(directory / WEIGHTS_NAME))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"cannot read {directory / WEIGHTS_NAME}: {err}") from None
    with torch.device("meta"):
        model = cls(config)
    if config.tie_word_embeddings:
        state.setdefault("lm_head.weight", state.get(cls.embedding_weight_name()))
    expected_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected_shapes) - set(state))
    unexpected = sorted(set(state) - set(expected_shapes))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, shape in expected_shapes.items():
        if tuple(state[k].shape) != shape:
            raise ValueError(f"checkpoint tensor {k} has shape {tuple(state[k].shape)}, config expects {shape}")
    model.load_state_dict(state, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model
