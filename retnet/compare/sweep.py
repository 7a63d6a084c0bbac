"""The learning-rate sweep of a comparison: one rule, the same for every architecture.

For each architecture, every learning rate of ``sweep.lrs`` (at least three) trains a shortened copy of the
recipe — ``steps`` and ``optim.warmup_steps`` (and ``optim.decay_steps`` when set) times ``sweep.fraction``, the
same schedule shape, seed and data order — and is scored by its in-domain validation loss on the second half of
the held-out split (the reported evaluation reads windows from its start, so the two do not overlap unless
``compare.eval_tokens`` exceeds half the split). :func:`pick_learning_rate` takes the lowest loss; a diverged run
scores infinity. Where the best rate is the grid's largest or smallest, up to ``sweep.extend`` further rates are tried
beyond that end, one at a time, each a step of the grid's own ratio there (:func:`next_rate`), until the best lies
inside. The full-budget runs of that architecture then use the chosen rate. With ``sweep.ablations``
``"retnet"`` the Table-6 ablations take RetNet's rate instead (:func:`rate_source`). Every sweep run is a model run
of the results file (:mod:`retnet.compare.entries`), so a finished one is never repeated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

RULE = "lowest in-domain validation loss (second half of the held-out split) after a fraction of the budget"
ABLATION_RATES = ("own", "retnet")  # sweep.ablations


@dataclass
class SweepSection:
    """The learning-rate sweep.

    Attributes:
        lrs: candidate peak learning rates; empty trains every architecture at ``optim.lr`` without a sweep.
        fraction: share of the budget (steps and warm-up) that each sweep run trains.
        ablations: ``"own"``: the Table-6 ablations sweep like every architecture; ``"retnet"``: they train at the
            rate RetNet's sweep chose and sweep nothing themselves (the paper's ablations keep RetNet's
            hyperparameters), which saves their sweep runs.
        extend: further rates an architecture's sweep may try beyond the end of ``lrs`` where its best rate lies
            (:func:`next_rate`); 0 keeps to ``lrs``.
    """

    lrs: list[float] = field(default_factory=list)
    fraction: float = 0.1
    ablations: str = "own"
    extend: int = 0

    def validate(self) -> None:
        """Check the values.

        Raises:
            ValueError: fewer than three or repeated rates, a rate that is not positive, or a fraction outside (0, 1].
        """
        if self.ablations not in ABLATION_RATES:
            raise ValueError(f"config sweep.ablations={self.ablations!r} is invalid; expected one of {ABLATION_RATES}")
        if not self.lrs:
            return
        if len(self.lrs) < 3 or len(set(self.lrs)) != len(self.lrs):
            raise ValueError(f"config sweep.lrs={self.lrs} is invalid; give at least three distinct rates (or none)")
        if any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"config sweep.lrs={self.lrs} is invalid; every rate must be > 0")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"config sweep.fraction={self.fraction!r} is invalid; it must be in (0, 1]")
        if not isinstance(self.extend, int) or self.extend < 0:
            raise ValueError(f"config sweep.extend={self.extend!r} is invalid; it must be an int >= 0")


def rate_source(config, name: str) -> str:
    """The entry whose sweep picks ``name``'s learning rate: RetNet for a Table-6 ablation under
    ``sweep.ablations="retnet"``, else ``name`` itself."""
    from .archs import TABLE6

    return "retnet" if config.sweep.ablations == "retnet" and name in TABLE6[1:] else name


def sweep_config(config, lr: float):
    """The shortened copy of ``config`` (a CompareConfig) that a sweep run at ``lr`` trains."""
    f = config.sweep.fraction
    optim = dataclasses.replace(
        config.optim, lr=lr, warmup_steps=round(config.optim.warmup_steps * f),
        decay_steps=round(config.optim.decay_steps * f),
    )  # fmt: skip
    return dataclasses.replace(config, steps=max(1, round(config.steps * f)), optim=optim)


def pick_learning_rate(losses: Mapping[float, float]) -> float:
    """The rate with the lowest loss (ties: the smaller rate); NaN counts as diverged.

    Args:
        losses: ``{learning rate: validation loss}``.

    Raises:
        ValueError: no rates, or every run diverged.
    """
    finite = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    if not finite:
        raise ValueError(f"every sweep run diverged or none ran ({dict(losses)}); try lower sweep.lrs")
    return min(finite, key=lambda lr: (finite[lr], lr))


def next_rate(losses: Mapping[float, float]) -> float | None:
    """The rate to try next where the best of ``losses`` is an end of the tried rates, else None.

    Beyond the largest rate ``r_n`` it is ``r_n · r_n / r_(n-1)``, below the smallest ``r_1 · r_1 / r_2`` (the grid's
    ratio at that end, three significant digits); None when the best lies inside or every run diverged.

    Args:
        losses: ``{learning rate: validation loss}`` of at least two rates (NaN or infinity: diverged).
    """
    rates = sorted(losses)
    if len(rates) < 2 or not any(math.isfinite(loss) for loss in losses.values()):
        return None
    best = pick_learning_rate(losses)
    if best == rates[-1]:
        return float(f"{rates[-1] * rates[-1] / rates[-2]:.3g}")
    if best == rates[0]:
        return float(f"{rates[0] * rates[0] / rates[1]:.3g}")
    return None


def sweep_table(sweeps: Mapping[str, dict]) -> str:
    """Markdown: a row per architecture, its validation loss at each rate (None: diverged), the chosen one in bold."""
    from .archs import LABELS

    lrs = sorted({float(lr) for s in sweeps.values() for lr in s["losses"]})
    lines = ["| Method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |", "|" + "---|" * (len(lrs) + 2)]
    for name, s in sweeps.items():
        by_lr = {float(lr): loss for lr, loss in s["losses"].items()}
        cells = []
        for lr in lrs:
            loss = by_lr.get(lr, "missing")
            if loss == "missing":
                text = "—"
            else:
                text = "diverged" if loss is None or not math.isfinite(loss) else f"{loss:.4f}"
            cells.append(f"**{text}**" if lr == s["chosen"] else text)
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + f" | {s['chosen']:g} |")
    return "\n".join(lines)
