"""One loader for the settings dataclasses: YAML files, then ``--a.b=value`` overrides, checked by field type.

A config is a ``@dataclass`` (sections are nested dataclasses). :func:`load` merges YAML mappings (later ones
win, key by key) and command-line overrides (:func:`parse_overrides`) into one nested dict, then
:func:`build` turns it into the dataclass, converting every value to its field's type:

- ``bool``: a YAML boolean, or the text ``true`` / ``false`` (any case); nothing else (not ``1``, not ``yes``).
- ``int``: an integer, or a float without fraction (``5.0e9``); never a bool.
- ``float``: a number or its text (``3e-4``, which YAML reads as text).
- ``str``: text; a YAML number is kept as text.
- ``X | None``: ``None`` from YAML ``null`` or the text ``none`` / ``null``; otherwise as ``X``.
- ``Literal[...]``: one of the listed values.
- ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``: a YAML sequence, or on the command line ``[a, b]`` or ``a,b``.
- a nested dataclass: a mapping of its own keys.

Unknown keys and values of the wrong type raise :class:`ConfigError` (a ``ValueError``) with a one-line message
naming the dotted key and the valid keys or the expected type. Keys left out keep the dataclass defaults, and
each dataclass's ``__post_init__`` runs as usual, so range and consistency checks stay with the dataclass.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_NONE_WORDS = ("none", "null", "~")


class ConfigError(ValueError):
    """A config key or value that does not fit its dataclass; the message names the dotted key."""


def parse_overrides(args: Sequence[str]) -> dict:
    """``["--optim.lr=3e-4", "--steps", "10"]`` -> ``{"optim": {"lr": "3e-4"}, "steps": "10"}``.

    Dashes in keys become underscores (``--data.seq-len`` is ``data.seq_len``). Values stay text; :func:`build`
    converts them by field type.

    Raises:
        ConfigError: an argument that is not ``--key=value`` or ``--key value``.
    """
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) <= 2:
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --key=value (e.g. --optim.lr=3e-4)")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = arg[2:], args[i + 1]
            i += 1
        else:
            raise ConfigError(f"override {arg!r} has no value; write --key=value")
        *parents, leaf = key.replace("-", "_").split(".")
        if not leaf or not all(parents):
            raise ConfigError(f"override {arg!r} has an empty key part; write --section.key=value")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {arg!r} sets a key inside {part!r}, which is also given a value")
            node = child
        node[leaf] = value
        i += 1
    return out


def merge(base: Mapping, update: Mapping) -> dict:
    """A copy of ``base`` with ``update`` applied key by key (nested mappings are merged, other values replaced)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping held by a YAML file (an empty file is an empty mapping).

    Raises:
        FileNotFoundError: a missing file.
        ConfigError: invalid YAML, or a document that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def load(
    cls: type[T],
    paths: Sequence[str | os.PathLike] = (),
    overrides: Mapping | None = None,
    *,
    base: Mapping | None = None,
) -> T:
    """Build ``cls`` from ``base``, then each YAML file of ``paths`` in order, then ``overrides``.

    Args:
        cls: a dataclass type.
        paths: YAML files; later files win key by key.
        overrides: nested mapping applied last (e.g. from :func:`parse_overrides`).
        base: nested mapping applied first, over the dataclass defaults (e.g. a preset).

    Raises:
        FileNotFoundError: a missing YAML file.
        ConfigError: unknown keys, values of the wrong type, or a file that is not a mapping.
        ValueError: a value the dataclass itself rejects.
    """
    data = dict(base or {})
    for path in paths:
        data = merge(data, read_yaml(path))
    if overrides:
        data = merge(data, overrides)
    return build(cls, data)


def build(cls: type[T], data: Mapping, prefix: str = "") -> T:
    """An instance of the dataclass ``cls`` from a nested mapping, each value converted to its field's type.

    Args:
        cls: a dataclass type; fields missing from ``data`` keep their defaults.
        data: ``{field: value}``; a nested dataclass field takes a mapping.
        prefix: dotted path of ``cls`` inside the root config, for messages (``"optim."``).

    Raises:
        ConfigError: an unknown key, a missing required key, or a value of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config {prefix.rstrip('.') or cls.__name__} must be a mapping of its keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            valid = ", ".join(prefix + name for name in fields)
            raise ConfigError(f"unknown config key {prefix + str(key)!r}; valid keys: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"config key {key!r} is required")
            continue
        value, typ = data[name], hints[name]
        if _is_dataclass_type(typ):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config {key} must be a mapping of its keys, got {value!r}")
            kwargs[name] = build(typ, value, key + ".")
        else:
            kwargs[name] = coerce(key, value, typ)
    return cls(**kwargs)


def coerce(key: str, value: Any, typ: Any) -> Any:
    """``value`` (from YAML, or command-line text) as type ``typ``; see the module docstring for the rules.

    Raises:
        ConfigError: ``value`` does not fit ``typ`` (the message names ``key``).
        TypeError: ``typ`` is a kind of annotation the loader does not handle.
    """
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and _is_none(value):
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return coerce(key, value, option)
            except ConfigError:
                if len(options) == 1:
                    raise
        raise _invalid(key, value, " or ".join(_type_name(a) for a in args))
    if origin is typing.Literal:
        for choice in args:
            try:
                if coerce(key, value, type(choice)) == choice:
                    return choice
            except ConfigError:
                continue
        raise ConfigError(f"config {key}={value!r} is invalid; expected one of {', '.join(map(str, args))}")
    if origin in (list, tuple) or typ in (list, tuple):
        return _coerce_sequence(key, value, origin or typ, args)
    if typ is Any:
        return value
    if typ in _SCALARS:
        return _SCALARS[typ](key, value)
    raise TypeError(f"config {key}: fields of type {typ!r} are not supported by the config loader")


def to_dict(config: Any) -> dict:
    """A dataclass as nested plain dicts and lists (what :func:`build` reads back)."""
    return _plain(dataclasses.asdict(config))


def describe_keys(config: Any, prefix: str = "") -> list[str]:
    """``key=default`` for every (dotted) key of a dataclass instance, for ``--help`` texts."""
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += describe_keys(value, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}={value!r}")
    return out


# ---- scalars and sequences -------------------------------------------------------------------------------------


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _invalid(key, value, "bool (true or false)")


def _to_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _invalid(key, value, "int")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise _invalid(key, value, "int") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _invalid(key, value, "int")


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _invalid(key, value, "float")


def _to_str(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _invalid(key, value, "str")


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _coerce_sequence(key: str, value: Any, kind: type, args: tuple) -> list | tuple:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise _invalid(key, value, "a list such as [a, b]") from None
        else:
            value = [part.strip() for part in text.split(",")] if text else []
    if not isinstance(value, (list, tuple)):
        raise _invalid(key, value, "a list")
    if kind is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _invalid(key, value, f"{len(args)} items")
        return tuple(coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args)))
    item_type = args[0] if args else Any
    items = [coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    return tuple(items) if kind is tuple else items


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)


def _is_dataclass_type(typ: Any) -> bool:
    return isinstance(typ, type) and dataclasses.is_dataclass(typ)


def _type_name(typ: Any) -> str:
    return "None" if typ is type(None) else getattr(typ, "__name__", str(typ))


def _invalid(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config {key}={value!r} is invalid; expected {expected}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
