"""The report of a size-scaling study: ``scaling.json``, ``scaling.md`` and ``scaling.png`` in the run folder.

Built from the finished runs alone (each row's result as stored in the results file), so a partial study reports
what it has: an architecture with finished runs at fewer than two sizes gets no fit, and says so. Per architecture,
validation loss L (in-domain, nats per token) is fitted against non-embedding parameters N and against training
FLOPs C as power laws (:mod:`retnet.compare.scaling_fit`), on the per-size mean of ``log L`` over seeds.
C counts ``6 · N_mm · D`` for D training tokens, N_mm being the parameters in matrix products
(:func:`retnet.training.flops.matmul_params`: every weight but the embedding lookup), the same for every
architecture; the sequence-mixing products (retention's chunk terms, attention's scores) are left out for both.
The uncertainty is the Monte Carlo of :func:`~retnet.compare.scaling_fit.monte_carlo` with the seed spread pooled
over every (architecture, size) with two or more seeds as the noise of one run (``σ/√n`` for a mean of n seeds).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

from ..training.flops import matmul_params
from .archs import LABELS
from .scaling_fit import crossing, fit_power_law, monte_carlo, noise_from_seeds


def training_flops(result: dict) -> float:
    """``6 · N_mm · D`` of one finished run (``result`` as stored in the results file)."""
    cfg = result["config"]
    shape = SimpleNamespace(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                            tie_word_embeddings=cfg.get("tie_word_embeddings", False))  # fmt: skip
    return 6.0 * matmul_params(shape, result["total_parameters"]) * result["train"]["tokens"]


def _points(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """Per architecture, per size: N, C, tokens and the losses of the finished seeds."""
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        r = row["result"]
        if r is None:
            continue
        loss = r["eval"]["in_domain"]["loss"]
        if loss is None or not math.isfinite(loss):
            continue
        p = out.setdefault(row["arch"], {}).setdefault(row["size"], {
            "parameters": r["parameters"], "flops": training_flops(r), "tokens": r["train"]["tokens"],
            "losses": {}})  # fmt: skip
        p["losses"][row["seed"]] = loss
    return out


def _fit_arch(per_size: dict[str, dict], axis: str) -> tuple[list[float], list[float], list[int]]:
    xs, ys, counts = [], [], []
    for p in per_size.values():
        logs = [math.log(v) for v in p["losses"].values()]
        xs.append(p[axis])
        ys.append(math.exp(sum(logs) / len(logs)))  # geometric mean over seeds
        counts.append(len(logs))
    return xs, ys, counts


def analyse(rows: list[dict], scaling: dict) -> dict:
    """The fits, crossing and uncertainty of the finished rows.

    Args:
        rows: one per planned run, ``{"size", "arch", "seed", "result" (None: not finished)}``, smallest size first.
        scaling: the ``scaling`` section as a mapping (``archs``, ``crossing_max``, ``tokens_per_parameter``,
            ``mc_draws``, ``mc_seed``).

    Returns:
        ``{"points", "fits", "noise", "crossing", "uncertainty", "notes"}`` (see ``scaling.json``).
    """
    points = _points(rows)
    archs = [a for a in scaling["archs"] if a in points] + [a for a in points if a not in scaling["archs"]]
    fits, notes, fitted = {}, [], {}
    for arch in scaling["archs"]:
        per_size = points.get(arch, {})
        if len(per_size) < 2:
            notes.append(f"{LABELS.get(arch, arch)}: finished runs at {len(per_size)} size(s); no fit (two needed)")
            continue
        fitted[arch] = {}
        for axis in ("parameters", "flops"):
            xs, ys, counts = _fit_arch(per_size, axis)
            law = fit_power_law(xs, ys)
            fitted[arch][axis] = (xs, ys, counts)
            fits.setdefault(arch, {})[axis] = {"a": law.a, "alpha": law.alpha, "sizes": law.points,
                                               "rms_residual_log": law.rms_residual}  # fmt: skip
    # every (architecture, size) with two or more finished seeds: the seed spread can grow with size
    groups = {(a, size): list(p["losses"].values()) for a in archs for size, p in points[a].items()
              if len(p["losses"]) >= 2}  # fmt: skip
    sigma = noise_from_seeds(groups)
    noise_sizes = list(dict.fromkeys(size for _, size in groups))
    doc = {"points": points, "fits": fits, "noise": {"sizes": noise_sizes, "groups": len(groups),
           "sigma_log_loss": sigma}, "crossing": {}, "uncertainty": {}, "notes": notes}  # fmt: skip
    pair = [a for a in scaling["archs"] if a in fits][:2]
    if len(pair) < 2 or pair != list(scaling["archs"][:2]):
        notes.append(f"no crossing: {' and '.join(LABELS.get(a, a) for a in scaling['archs'][:2])} both need a fit")
        return doc
    n_min = min(p["parameters"] for a in pair for p in points[a].values())
    c_min = min(p["flops"] for a in pair for p in points[a].values())
    # the FLOPs of a model of crossing_max parameters under the same token rule (embeddings left out)
    bounds = {"parameters": (n_min, scaling["crossing_max"]),
              "flops": (c_min, 6.0 * scaling["tokens_per_parameter"] * scaling["crossing_max"] ** 2)}  # fmt: skip
    for axis in ("parameters", "flops"):
        laws = [fit_power_law(*fitted[a][axis][:2]) for a in pair]
        c = crossing(laws[0], laws[1], bounds[axis])
        ahead = {"first": pair[0], "second": pair[1], "equal": None}[c.ahead_beyond]
        largest = max(p[axis] for a in pair for p in points[a].values())
        doc["crossing"][axis] = {"kind": c.kind, "x": c.x, "bounds": list(c.bounds), "ahead_beyond": ahead,
                                 "largest_measured": largest}  # fmt: skip
        if sigma is None:
            continue
        mc_points = {}
        for a in pair:
            xs, ys, counts = fitted[a][axis]
            mc_points[a] = (xs, ys)
        # the noise of a mean of n seeds is σ/√n: draw each point's noise at the smallest count's level, the
        # conservative choice when counts differ (the other sizes have one seed unless more were asked for)
        per_point = sigma / math.sqrt(min(min(fitted[a][axis][2]) for a in pair))
        doc["uncertainty"][axis] = monte_carlo(mc_points, per_point, bounds[axis], draws=scaling["mc_draws"],
                                               seed=scaling["mc_seed"])  # fmt: skip
    if sigma is None:
        notes.append("no uncertainty: no architecture has two finished seeds at any size")
    else:
        worst = max(f["parameters"]["rms_residual_log"] for f in fits.values())
        if worst > 2 * sigma:
            notes.append(
                f"the fits' residuals (rms of log L up to {worst:.4f}) exceed twice the seed noise (σ = {sigma:.4f}): "
                "a pure power law does not describe these points within the noise, so the intervals, which assume "
                "it does, understate the uncertainty"
            )
    return doc


def _sci(x: float | None) -> str:
    return "—" if x is None else ("∞" if math.isinf(x) else f"{x:.3g}")


def _alpha_text(doc: dict, arch: str, axis: str) -> str:
    alpha = doc["fits"][arch][axis]["alpha"]
    u = doc["uncertainty"].get(axis, {}).get("alpha", {}).get(arch)
    return f"{alpha:.4f}" if u is None else f"{alpha:.4f} (68 %: {u['p16']:.4f} – {u['p84']:.4f})"


def crossing_text(doc: dict, axis: str, archs: list[str]) -> str:
    """One sentence on where the fitted lines of ``archs`` (the pair) meet on ``axis``, with its uncertainty."""
    c = doc["crossing"].get(axis)
    if c is None:
        return "no crossing computed (both architectures need a fit)"
    what = "parameters" if axis == "parameters" else "FLOPs"
    first, second = (LABELS.get(a, a) for a in archs[:2])
    lo, hi = c["bounds"]
    if c["kind"] == "parallel":
        text = f"parallel: equal exponents, the lines never meet ({LABELS.get(c['ahead_beyond'], 'neither')} ahead)"
    elif c["kind"] == "crossing":
        where = ("inside the measured range" if c["x"] <= c["largest_measured"]
                 else f"{c['x'] / c['largest_measured']:.3g}× the largest measured, an extrapolation")  # fmt: skip
        text = (f"the fitted lines cross at {_sci(c['x'])} {what} ({where}); beyond it "
                f"{LABELS.get(c['ahead_beyond'], c['ahead_beyond'])} is ahead")  # fmt: skip
    else:
        text = (f"no crossing within {_sci(lo)} – {_sci(hi)} {what} (the lines meet at {_sci(c['x'])}; beyond that "
                f"point {LABELS.get(c['ahead_beyond'], c['ahead_beyond'])} would be ahead)")  # fmt: skip
    u = doc["uncertainty"].get(axis)
    if u is not None:
        mc = u["crossing"]
        text += (f". Monte Carlo ({u['draws']} draws, seed {u['seed']}, σ(log L) = {u['sigma_log_loss']:.4f} per "
                 f"point): {mc['fraction_crossing']:.0%} of draws cross within the range")  # fmt: skip
        if mc["log10_x"] is not None:
            q = mc["log10_x"]
            text += (f", at {_sci(10 ** q['median'])} (68 %: {_sci(10 ** q['p16'])} – {_sci(10 ** q['p84'])}) "
                     f"{what}")  # fmt: skip
    return text + f" ({first} vs {second})."


def markdown(rows: list[dict], doc: dict, meta: dict) -> str:
    """``scaling.md``: the runs, the fits and the crossing."""
    s = meta["scaling"]
    lines = [f"# Size scaling: preset `{meta.get('preset', '?')}`", "",
             f"Validation loss (in-domain held-out, nats per token) against non-embedding parameters N and training "
             f"FLOPs C = 6 · N_mm · D (N_mm: weights in matrix products, D: tokens). Every size trains "
             f"{s['tokens_per_parameter']:g} tokens per non-embedding parameter; width = {s['aspect']} × depth.", "",
             "| Size | Arch | Seed | Non-emb. params | Tokens | FLOPs | Val loss | Perplexity |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        r = row["result"]
        if r is None:
            cells = ["—", "—", "—", "not trained yet", "—"]
        else:
            loss = r["eval"]["in_domain"]["loss"]
            cells = [f"{r['parameters']:,}", f"{r['train']['tokens']:,}", f"{training_flops(r):.3g}",
                     "—" if loss is None else f"{loss:.4f}", f"{r['eval']['in_domain']['perplexity']:.2f}"]  # fmt: skip
        lines.append(f"| {row['size']} | {LABELS.get(row['arch'], row['arch'])} | {row['seed']} | " + " | ".join(cells)
                     + " |")  # fmt: skip
    lines += ["", "## Fits: L = a · X^(−α)", ""]
    if doc["fits"]:
        lines += ["| Arch | Sizes | a (N) | α (N) | rms residual of log L (N) | a (C) | α (C) |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for arch, f in doc["fits"].items():
            lines.append(f"| {LABELS.get(arch, arch)} | {f['parameters']['sizes']} | {f['parameters']['a']:.4g} | "
                         f"{_alpha_text(doc, arch, 'parameters')} | {f['parameters']['rms_residual_log']:.4f} | "
                         f"{f['flops']['a']:.4g} | {_alpha_text(doc, arch, 'flops')} |")  # fmt: skip
        lines.append("")
    sigma = doc["noise"]["sigma_log_loss"]
    if sigma is not None:
        noise = doc["noise"]
        lines += [f"Noise of one run: σ(log L) = {sigma:.4f}, the seed spread pooled over {noise['groups']} "
                  f"(architecture, size) pairs with two or more seeds (sizes {', '.join(noise['sizes'])}; 68 % "
                  "intervals from a Monte Carlo of the fits with that noise on every point).", ""]  # fmt: skip
    lines += ["## Crossing", ""]
    for axis in ("parameters", "flops"):
        lines.append(f"- Against {'N' if axis == 'parameters' else 'C'}: {crossing_text(doc, axis, s['archs'])}")
    lines += [""] + [f"- {note}" for note in doc["notes"]]
    return "\n".join(lines) + "\n"


def write_scaling_report(run_dir: str | Path, rows: list[dict], meta: dict) -> dict:
    """Write ``scaling.json``, ``scaling.md`` and ``scaling.png`` (the plot once a point is finished).

    Args:
        run_dir: the run folder.
        rows: one per planned run (see :func:`analyse`).
        meta: run-level facts; ``meta["scaling"]`` is the scaling section as a mapping.

    Returns:
        The JSON document written.
    """
    run_dir = Path(run_dir)
    doc = analyse(rows, meta["scaling"])
    out = {"meta": meta, "runs": rows, **doc}
    (run_dir / "scaling.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    (run_dir / "scaling.md").write_text(markdown(rows, doc, meta))
    if doc["points"]:
        plot_scaling(doc, run_dir / "scaling.png")
    return out


def plot_scaling(doc: dict, path: Path) -> None:
    """Loss against parameters and against FLOPs, log-log: every finished run as a point, the fitted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.get_cmap("tab10").colors
    for ax, axis, xlabel in zip(axes, ("parameters", "flops"), ("non-embedding parameters N", "training FLOPs C")):
        for i, (arch, per_size) in enumerate(doc["points"].items()):
            xs = [p[axis] for p in per_size.values() for _ in p["losses"]]
            ys = [v for p in per_size.values() for v in p["losses"].values()]
            label = LABELS.get(arch, arch)
            fit = doc["fits"].get(arch, {}).get(axis)
            if fit is not None:
                grid = np.geomspace(min(xs) / 1.5, max(xs) * 1.5, 50)
                ax.plot(grid, fit["a"] * grid ** (-fit["alpha"]), "-", color=colors[i % 10], linewidth=1.2,
                        label=f"{label}: α = {fit['alpha']:.3f}")  # fmt: skip
            ax.plot(xs, ys, "o", color=colors[i % 10], markersize=5, label=None if fit else f"{label} (no fit)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())  # losses read as plain numbers, not powers of ten
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())  # labels at the powers of ten only: minor ones overlap
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_title("Loss against size (points: runs; lines: power-law fits)", fontsize=10)
    axes[1].set_title("Loss against training compute", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
