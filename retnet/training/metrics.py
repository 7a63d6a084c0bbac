"""Run metrics: JSONL records (always), TensorBoard events (when installed), a loss-curve PNG at the end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Writes records of one run (use on rank 0 only).

    Args:
        run_dir: the run folder.
        tensorboard: also write TensorBoard events under ``run_dir/tensorboard``.
        resume_step: drop records past this step (left by a run that was killed after its last checkpoint).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed; metrics go to %s only", self.path)

    def log(self, kind: str, step: int, **values: float) -> None:
        """Append one record (``kind`` is "train" or "val")."""
        self._file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError):
        return 1 << 62


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All records of a run."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_loss_curve(run_dir: str | Path) -> Path | None:
    """Write ``loss_curve.png`` (train and validation loss against step); None without matplotlib or data."""
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    val = [(r["step"], r["loss"]) for r in records if r["kind"] == "val"]
    if not train:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no loss curve")
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*train), label="training (the batch loss at each logged step)")
    if val:
        ax.plot(*zip(*val), "o-", label="validation (held-out windows)")
    ax.set_title(f"Training run {Path(run_dir).resolve().name}: loss against step")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    out = Path(run_dir) / "loss_curve.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
