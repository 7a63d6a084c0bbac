"""Optional Hugging Face ``transformers`` adapters (``pip install 'retnet[hf]'``); guide: docs/hf.md.

Call :func:`register_auto_classes` once to make ``AutoConfig`` / ``AutoModelForCausalLM`` know ``"retnet"``; saved
directories also load with ``trust_remote_code=True`` and no retnet import. The names below are imported on first
use, so ``import retnet.hf`` (and :func:`is_hf_directory`) does not load ``transformers``.
"""

from __future__ import annotations

import importlib

from .directory import is_hf_directory as is_hf_directory

_LAZY = {
    "RetNetCache": "cache",
    "RetNetHFConfig": "configuration",
    "RetNetHFForCausalLM": "modeling",
    "register_auto_classes": "modeling",
    "from_hf_tokenizer": "tokenization",
    "to_hf_tokenizer": "tokenization",
    "convert_from_hf": "export",
    "convert_to_hf": "export",
    "load_hf_trained": "export",
    "native_to_hf": "export",
}

__all__ = sorted([*_LAZY, "is_hf_directory"])


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
