"""JSON round trip for the model config dataclasses (``to_dict`` / ``from_dict`` / ``save`` / ``load``)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TypeVar

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """Mixin for ``@dataclass`` configs: JSON serialisation with unknown keys rejected."""

    def to_dict(self) -> dict:
        """All fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict) -> C:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        """Read a config written by :meth:`save`.

        Raises:
            ValueError: if the file is not a JSON object of known fields.
        """
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a config object")
        return cls.from_dict(data)


def require_positive_ints(config, names) -> None:
    """Raise ``ValueError`` unless every field in ``names`` is an int ≥ 1 (bools rejected)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def require_special_ids_in_vocab(config) -> None:
    """Raise ``ValueError`` if a pad/bos/eos id is set outside ``[0, config.vocab_size)``."""
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(config, name)
        if value is not None and not (0 <= value < config.vocab_size):
            raise ValueError(f"{name} = {value} is outside the vocabulary [0, {config.vocab_size})")
