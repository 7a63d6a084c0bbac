"""Writing a comparison's results: the Markdown tables (the paper's Table-5 and Table-6 layouts), one JSON,
and the loss-curve and perplexity bar plots.

Each trained entry leaves ``<run>/<name>/result.json``; :func:`write_report` gathers those into
``results.json``, ``results.md``, ``loss_curves.png`` and ``perplexity.png`` in the run folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .archs import LABELS, TABLE5, TABLE6

PAPER_TABLE5 = {  # paper Table 5: in-domain perplexity, 200M parameters, 16 layers, d = 1024, 5B tokens
    "retnet": 26.05, "h3": 29.97, "rwkv": 30.92, "hyena": 32.08, "linear_transformer": 40.24,
}  # fmt: skip


def load_results(run_dir: Path) -> dict[str, dict]:
    """Every finished entry's ``result.json`` under ``run_dir``, by entry name."""
    results = {}
    for path in sorted(Path(run_dir).glob("*/result.json")):
        data = json.loads(path.read_text())
        results[data["name"]] = data
    return results


def _fmt_ppl(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.2f}"


def markdown_table(results: dict[str, dict], names, ood: list[str], in_domain: str) -> str:
    """One table: a row per entry present in ``results``, in ``names`` order."""
    header = ["Method", "Non-emb. params", f"In-domain ({in_domain})", *ood, "Tokens", "Train time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        r = results.get(name)
        if r is None:
            continue
        ev = r["eval"]
        row = [
            LABELS.get(name, name),
            f"{r['parameters']:,} ({r['parameters'] / r['target_parameters'] - 1:+.2%})",
            _fmt_ppl(ev["in_domain"]["perplexity"]),
            *(_fmt_ppl(ev["out_of_domain"].get(c, {}).get("perplexity")) for c in ood),
            f"{r['train']['tokens']:,}",
            f"{r['train']['wall_time_s']:.0f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_report(run_dir: str | Path, meta: dict) -> dict:
    """Gather the finished entries of ``run_dir`` into ``results.{json,md}`` and the two plots.

    Args:
        run_dir: the comparison's run folder.
        meta: run-level facts written into the JSON (command, preset, data, device, ...).

    Returns:
        The JSON document written.
    """
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    ood = list(meta.get("out_of_domain", []))
    in_domain = meta.get("in_domain", "held-out")
    doc = {"meta": meta, "results": results}
    (run_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    parts = [f"# Architecture comparison: preset `{meta.get('preset', '?')}`", ""]
    parts.append("Perplexity (lower is better); in-domain is the held-out split of the training corpus.")
    parts.append("")
    if any(n in results for n in TABLE5):
        parts += ["## Table 5 layout: architectures", "", markdown_table(results, TABLE5, ood, in_domain), ""]
    if any(n in results for n in TABLE6[1:]):
        parts += ["## Table 6 layout: RetNet ablations", "", markdown_table(results, TABLE6, ood, in_domain), ""]
    (run_dir / "results.md").write_text("\n".join(parts))
    if results:
        plot_loss_curves(results, run_dir / "loss_curves.png")
        plot_perplexity(results, ood, run_dir / "perplexity.png", in_domain=meta.get("in_domain"))
    return doc


def plot_loss_curves(results: dict[str, dict], path: Path) -> None:
    """Training loss against tokens, one line per entry (Table-5 entries solid, ablations dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab20").colors  # 11+ distinguishable lines (the default cycle has 10)
    names = [n for n in (*TABLE5, *TABLE6[1:]) if n in results]
    for i, name in enumerate(names):
        curve = results[name]["train"]["loss_curve"]
        if not curve:
            continue
        tokens = [p["tokens"] for p in curve]
        losses = [p["loss"] for p in curve]
        style = "-" if name in TABLE5 else "--"
        ax.plot(tokens, losses, style, color=colors[(2 * i) % 20 + (i >= 10)], label=LABELS.get(name, name),
                linewidth=1.2)  # fmt: skip
    ax.set_title(
        "Training loss of each architecture\n(the same data and recipe; dashed lines: RetNet ablations)", fontsize=10
    )
    ax.set_xlabel("training tokens")
    ax.set_ylabel("training loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="architecture", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_perplexity(results: dict[str, dict], ood: list[str], path: Path, in_domain: str | None = None) -> None:
    """Grouped bars: in-domain and each out-of-domain perplexity per entry.

    Args:
        results: per entry, its ``"eval"`` record (``in_domain`` and ``out_of_domain`` perplexities).
        ood: the out-of-domain corpora, in column order.
        path: the PNG to write.
        in_domain: the in-domain corpus's name, for the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in (*TABLE5, *TABLE6[1:]) if n in results]
    groups = ["in-domain", *ood]
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(names)), 4.5))
    for g, group in enumerate(groups):
        vals = []
        for n in names:
            ev = results[n]["eval"]
            entry = ev["in_domain"] if group == "in-domain" else ev["out_of_domain"].get(group, {})
            vals.append(entry.get("perplexity", float("nan")))
        label = (f"in-domain ({in_domain}, held out)" if in_domain else "in-domain (held out)") if g == 0 else group
        ax.bar([i + (g - (len(groups) - 1) / 2) * width for i in range(len(names))], vals, width, label=label)
    ax.set_xticks(range(len(names)), [LABELS.get(n, n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_title("Perplexity after training, per evaluation corpus (lower is better)", pad=28)
    ax.set_xlabel("architecture")
    ax.set_ylabel("perplexity (per token, log scale)")
    ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(groups), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
