"""Recognising a Hugging Face RetNet directory without importing ``transformers`` (the CLI asks for every model)."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_TYPE = "retnet"


def is_hf_directory(path) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` is a ``transformers`` RetNet config (``model_type`` retnet;
    retnet's own ``config.json`` has no ``model_type``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (ValueError, OSError):
        return False
    return isinstance(data, dict) and data.get("model_type") == MODEL_TYPE
