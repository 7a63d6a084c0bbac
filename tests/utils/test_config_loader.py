"""The typed dataclass loader: nested sections, YAML then overrides, type conversion, one-line errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from retnet.utils.config_loader import (
    ConfigError,
    build,
    coerce,
    describe_keys,
    load,
    merge,
    parse_overrides,
    to_dict,
)


@dataclass
class Inner:
    width: int = 4
    scale: float = 1.0
    name: str | None = None


@dataclass
class Outer:
    flag: bool = False
    mode: Literal["fast", "exact"] = "fast"
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[int, str] = (0, "a")
    names: list[str] = field(default_factory=list)
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.inner.width < 1:
            raise ValueError(f"config inner.width={self.inner.width} is invalid; it must be >= 1")


@dataclass
class Required:
    vocab_size: int
    depth: int = 2


def message(text: str) -> str:
    return re.escape(text)


def test_nested_yaml_files_then_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("flag: true\ninner:\n  width: 8\n  scale: 3e-4\nnames: [x, y]\n")
    (tmp_path / "b.yaml").write_text("inner: {name: second}\n")
    cfg = load(Outer, [tmp_path / "a.yaml", tmp_path / "b.yaml"], parse_overrides(["--inner.width=16", "--limit", "5"]))
    assert cfg == Outer(flag=True, names=["x", "y"], limit=5, inner=Inner(width=16, scale=3e-4, name="second"))
    assert load(Outer, [], None, base={"inner": {"width": 2}}).inner == Inner(width=2)
    assert build(Outer, to_dict(cfg)) == cfg


def test_parse_overrides_nests_and_rejects_malformed():
    got = parse_overrides(["--a.b=1", "--a.c", "x=y", "--top-level=3", "--a.d="])
    assert got == {"a": {"b": "1", "c": "x=y", "d": ""}, "top_level": "3"}
    for args, text in [
        (["steps=3"], "unexpected argument 'steps=3'; overrides look like --key=value"),
        (["--steps"], "override '--steps' has no value; write --key=value"),
        (["--a..b=1"], "has an empty key part"),
        (["--a=1", "--a.b=2"], "sets a key inside 'a', which is also given a value"),
    ]:
        with pytest.raises(ConfigError, match=message(text)):
            parse_overrides(args)


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        build(Outer, {"inner": {"widht": 3}})
    assert str(err.value) == "unknown config key 'inner.widht'; valid keys: inner.width, inner.scale, inner.name"
    with pytest.raises(ConfigError, match=message("unknown config key 'bogus'; valid keys: flag, mode, sizes")):
        build(Outer, {"bogus": 1})
    with pytest.raises(ConfigError, match=message("config inner must be a mapping of its keys, got '3'")):
        build(Outer, {"inner": "3"})
    with pytest.raises(ConfigError, match=message("config key 'vocab_size' is required")):
        build(Required, {"depth": 3})


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("false", False), ("True", True), ("FALSE", False), (True, True), (False, False)],
)
def test_bool_from_true_or_false(text, value):
    assert coerce("flag", text, bool) is value


@pytest.mark.parametrize("text", ["1", "0", "yes", "no", "on", "", 1, None])
def test_bool_rejects_everything_else(text):
    with pytest.raises(ConfigError, match=message(f"config flag={text!r} is invalid; expected bool (true or false)")):
        coerce("flag", text, bool)


def test_numbers_and_strings():
    assert coerce("k", "12", int) == 12 and coerce("k", 5.0e9, int) == 5_000_000_000 and coerce("k", "5e3", int) == 5000
    assert (
        coerce("k", "3e-4", float) == 3e-4 and coerce("k", 2, float) == 2.0 and isinstance(coerce("k", 2, float), float)
    )
    assert coerce("k", "200m", str) == "200m" and coerce("k", 1024, str) == "1024"
    for value, typ, expected in [
        ("1.5", int, "config k=1.5 is invalid; expected int"),
        (True, int, "config k=True is invalid; expected int"),
        ("abc", float, "config k='abc' is invalid; expected float"),
        (False, float, "config k=False is invalid; expected float"),
        (None, str, "config k=None is invalid; expected str"),
        (True, str, "config k=True is invalid; expected str"),
    ]:
        with pytest.raises(ConfigError, match=message(expected)):
            coerce("k", value, typ)


def test_none_for_optional_fields_only():
    for value in (None, "none", "None", "null"):
        assert coerce("limit", value, int | None) is None
    assert coerce("limit", "7", int | None) == 7
    assert coerce("name", "none", str | None) is None and coerce("name", "x", str | None) == "x"
    with pytest.raises(ConfigError, match=message("config limit='seven' is invalid; expected int")):
        coerce("limit", "seven", int | None)
    with pytest.raises(ConfigError, match=message("config inner.width='none' is invalid; expected int")):
        build(Outer, {"inner": {"width": "none"}})
    assert coerce("k", "3", int | str) == 3 and coerce("k", "x", int | str) == "x"
    with pytest.raises(ConfigError, match=message("config k=[1] is invalid; expected int or str")):
        coerce("k", [1], int | str)


def test_sequences():
    assert coerce("sizes", "[1, 2, 3]", tuple[int, ...]) == (1, 2, 3)
    assert coerce("sizes", "4,5", tuple[int, ...]) == (4, 5)
    assert coerce("sizes", [6], tuple[int, ...]) == (6,)
    assert coerce("names", "a, b", list[str]) == ["a", "b"] and coerce("names", "", list[str]) == []
    assert coerce("names", "[/tmp/x, y-z]", list[str]) == ["/tmp/x", "y-z"]
    assert coerce("pair", "[3, b]", tuple[int, str]) == (3, "b")
    with pytest.raises(ConfigError, match=message("config sizes[1]='x' is invalid; expected int")):
        coerce("sizes", "1,x", tuple[int, ...])
    with pytest.raises(ConfigError, match=message("config pair=[1, 'a', 2] is invalid; expected 2 items")):
        coerce("pair", [1, "a", 2], tuple[int, str])
    with pytest.raises(ConfigError, match=message("config names=3 is invalid; expected a list")):
        coerce("names", 3, list[str])


def test_literal_choices():
    assert coerce("mode", "exact", Literal["fast", "exact"]) == "exact"
    assert coerce("level", "2", Literal[1, 2]) == 2
    with pytest.raises(ConfigError, match=message("config mode='slow' is invalid; expected one of fast, exact")):
        build(Outer, {"mode": "slow"})


def test_dataclass_checks_run_and_unsupported_types_are_a_type_error():
    with pytest.raises(ValueError, match=message("config inner.width=0 is invalid; it must be >= 1")):
        build(Outer, {"inner": {"width": 0}})
    with pytest.raises(TypeError, match="not supported"):
        coerce("k", {"a": 1}, dict)


def test_files_merge_and_describe(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load(Outer, [tmp_path / "missing.yaml"])
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping of keys, not list"):
        load(Outer, [tmp_path / "list.yaml"])
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load(Outer, [tmp_path / "bad.yaml"])
    (tmp_path / "empty.yaml").write_text("")
    assert load(Outer, [tmp_path / "empty.yaml"]) == Outer()
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert merge(base, {"a": {"b": 5}, "d": {"e": 1}}) == {"a": {"b": 5, "c": 2}, "d": {"e": 1}}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}  # not modified
    assert describe_keys(Outer())[-3:] == ["inner.width=4", "inner.scale=1.0", "inner.name=None"]
