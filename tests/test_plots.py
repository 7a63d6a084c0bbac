"""Every plot explains itself: a title, axis labels with units, and a legend naming each line in words.

The figures are caught at ``savefig`` (nothing is written), so each plot function runs as it does in a real run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

from retnet.compare.report import plot_loss_curves, plot_perplexity  # noqa: E402
from retnet.training.metrics import plot_loss_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UNDEFINED_LABEL = re.compile(r"\bcfg [A-Z]\b")  # names that only the code defines


@pytest.fixture
def figures(monkeypatch):
    caught: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: caught.append(fig))
    return caught


def assert_explains_itself(fig: Figure) -> None:
    """A title on the figure or on every panel; x and y labels, the y label with its unit; legends in words."""
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.has_data()]
    assert panels, "the figure has no data"
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    texts = [suptitle]
    for ax in panels:
        assert ax.get_title() or suptitle, "a panel without a title"
        assert ax.get_xlabel(), f"panel {ax.get_title()!r}: no x label"
        assert "(" in ax.get_ylabel(), f"y label without a unit: {ax.get_ylabel()!r}"
        series = len(ax.lines) + len(ax.containers)
        legend = ax.get_legend()
        if series > 1:
            assert legend is not None, f"panel {ax.get_title()!r}: {series} series and no legend"
        if legend is not None:
            labels = [t.get_text() for t in legend.get_texts()]
            assert all(labels) and len(labels) == len(set(labels)), labels
            texts += labels
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    assert not [t for t in texts if UNDEFINED_LABEL.search(t)], texts


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_loss_curve(tmp_path, figures):
    run = tmp_path / "shakespeare-20261201"
    run.mkdir()
    records = [{"kind": "train", "step": s, "loss": 4 - s / 10} for s in (1, 2, 3)]
    records.append({"kind": "val", "step": 3, "loss": 3.9})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_loss_curve(run)
    (fig,) = figures
    assert_explains_itself(fig)
    assert "shakespeare-20261201" in fig.axes[0].get_title()


def test_comparison_plots(tmp_path, figures):
    def entry(loss):
        curve = [{"tokens": t, "loss": loss - t / 1000} for t in (100, 200)]
        ev = {"in_domain": {"perplexity": 10.0}, "out_of_domain": {"shakespeare": {"perplexity": 30.0}}}
        return {"train": {"loss_curve": curve}, "eval": ev}

    results = {"retnet": entry(3.0), "transformer": entry(3.2)}
    plot_loss_curves(results, tmp_path / "loss.png")
    plot_perplexity(results, ["shakespeare"], tmp_path / "ppl.png", in_domain="sotu")
    for fig in figures:
        assert_explains_itself(fig)
    labels = [t.get_text() for t in figures[1].axes[0].get_legend().get_texts()]
    assert labels == ["in-domain (sotu, held out)", "shakespeare"]


def test_benchmark_plots(tmp_path, figures):
    pytest.importorskip("triton")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ops  # the module tests/benchmarks/test_ops_bench.py imports (loaded once per session)

    rows = [
        {"cfg": cfg, "pass": p, "op": op, "T": T, "ms": ms, "floor_ms": 0.1}
        for cfg in ("A", "B") for p in ("fwd", "fwd+bwd") for op, ms in (("ours", 1.0), ("fla", 2.0))
        for T in (1024, 2048)
    ]  # fmt: skip
    ops.plot(rows, tmp_path / "retention.png")
    train = _load("train")
    rows = [{"model": m, "T": T, "tokens_per_step": 65536, "tokens_per_s": 1e5, "peak_gib": 3.0}
            for m in ("retnet", "transformer") for T in (2048, 8192)]  # fmt: skip
    train.plot(rows, tmp_path, setting="precision bf16, NVIDIA H200")
    decode = _load("decode")
    sweep = [{"context": c, "B": 1, "memory_gib": 1.0, "tokens_per_s": 100.0} for c in (1024, 4096)]
    batch = [{"context": 1024, "B": b, "latency_ms": 2.0} for b in (1, 8)]
    results = {
        "context_sweep": {"retnet": sweep, "transformer": sweep},
        "batch_sweep": {"retnet": batch, "transformer": batch},
        "environment": {"device": "NVIDIA H200"},
    }
    decode._plot(results, tmp_path)
    assert len(figures) == 3
    for fig in figures:
        assert_explains_itself(fig)
    assert "8 heads, K = 256, V = 512" in figures[0].axes[0].get_title()
