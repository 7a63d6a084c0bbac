"""``benchmarks/startup.py`` times a command in a fresh interpreter and writes its table and JSON."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("bench_startup", ROOT / "benchmarks" / "startup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_startup_benchmark_writes_rows(tmp_path, capsys, monkeypatch):
    bench = _load()
    monkeypatch.setattr(bench, "time_command", _fake_import_torch(bench.time_command))
    assert bench.main(["--repeats", "1", "--out", str(tmp_path), "--", "--version", "data list"]) == 0
    saved = json.loads((tmp_path / "startup.json").read_text())
    rows = {r["command"]: r for r in saved["rows"]}
    assert list(rows) == ["retnet --version", "retnet data list", "python -c 'import torch'"]
    assert not rows["retnet --version"]["torch_loaded"] and rows["retnet --version"]["exit_code"] == 0
    assert rows["retnet data list"]["exit_code"] == 0 and "date" in saved["environment"]
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split() == ["command", "median", "(s)", "fastest", "(s)", "torch", "loaded", "exit", "code"]


def _fake_import_torch(time_command):
    """``time_command`` with the reference row (``import torch``, seconds in a fresh interpreter) faked."""

    def timed(args, repeats, env):
        if args:
            return time_command(args, repeats, env)
        return {"command": "python -c 'import torch'", "median_s": 1.0, "min_s": 1.0, "runs_s": [1.0],
                "torch_loaded": True, "exit_code": 0}  # fmt: skip

    return timed
