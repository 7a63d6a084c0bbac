"""Training and evaluation of one comparison entry through the shared trainer (:mod:`retnet.training`).

Every architecture goes through the same :func:`retnet.training.train` call with the comparison's own
:class:`~retnet.training.TrainConfig` (:meth:`CompareConfig.train_config`) — same prepared dataset and
tokenizer, same seeded window order (a pure function of the step), same AdamW, warm-up, schedule, clipping,
precision and step count — with only the model differing, passed through the trainer's ``model_factory``
hook. Sequences are independent windows without state resets inside them (``data.reset_at_boundaries`` is
false), since the baselines carry no document boundaries. Evaluation is :func:`retnet.training.evaluate` on the
held-out split of each prepared dataset, with the training form and precision. Training is resumable through the
trainer's checkpoints.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from .config import CompareConfig

logger = logging.getLogger(__name__)


def train_entry(model: nn.Module, config: CompareConfig, dataset_dir: Path, run_dir: Path) -> dict:
    """Train ``model`` with the shared recipe, resuming from ``run_dir``'s last checkpoint if there is one.

    Args:
        model: a RetNetForCausalLM or MixerLM (float32 parameters, any device); trained in place.
        config: the comparison.
        dataset_dir: the in-domain prepared dataset.
        run_dir: the trainer's run folder for this entry.

    Returns:
        ``{"steps", "tokens", "wall_time_s", "tokens_per_s", "loss_curve": [{"step", "tokens", "loss"}],
        "final_loss", "device"}``; the wall time sums the calls that trained this entry, up to the checkpoint each
        later one resumed from.
    """
    from ..training import train
    from ..training.checkpoint import latest_checkpoint
    from ..training.metrics import read_metrics

    cfg = config.train_config(run_dir, dataset_dir)
    resume = str(run_dir) if latest_checkpoint(run_dir) is not None else None
    result = train(cfg, resume=resume, model_factory=lambda vocab_size: model)
    wall = result.total_wall_s  # also the time of a call cut off after a checkpoint this one resumed from
    tokens_per_step = cfg.batch_size * cfg.data.seq_len
    curve = [
        {"step": r["step"], "tokens": r["step"] * tokens_per_step, "loss": r["loss"]}
        for r in read_metrics(result.run_dir)
        if r["kind"] == "train"
    ]
    return {
        "steps": result.steps,
        "tokens": result.steps * tokens_per_step,
        "wall_time_s": wall,
        "tokens_per_s": result.steps * tokens_per_step / max(wall, 1e-9),
        "loss_curve": curve,
        "final_loss": curve[-1]["loss"] if curve else float("nan"),
        "device": str(next(model.parameters()).device),
    }


def evaluate_entry(model: nn.Module, dataset_dir: Path, config: CompareConfig, *, second_half: bool = False) -> dict:
    """Loss, perplexity and bits per byte on the held-out split of a prepared dataset.

    Windows of ``seq_len`` tokens in stream order, at most ``compare.eval_tokens`` scored tokens; from the split's
    start, or with ``second_half`` from its middle (the learning-rate sweep's scores, apart from the reported ones).

    Returns:
        ``{"loss", "perplexity", "bits_per_byte", "tokens"}``.
    """
    from ..data import PreparedDataset
    from ..training import evaluate
    from ..training.trainer import autocast_context, resolve_precision

    ds = PreparedDataset(dataset_dir)
    stream = ds.tokens("val")
    if second_half:
        stream = stream[len(stream) // 2 :]
    seq_len = min(config.data.seq_len, len(stream) - 1)
    max_windows = max(config.compare.eval_tokens // seq_len, 1)
    device = next(model.parameters()).device
    autocast = autocast_context(resolve_precision(config.precision, device), device)
    r = evaluate(
        model, stream, seq_len=seq_len, batch_size=config.batch_size, token_bytes=ds.tokenizer.token_bytes(),
        sep_id=ds.sep_id, form=config.form, chunk_size=config.chunk_size, reset_at_boundaries=False,
        max_windows=max_windows, device=device, autocast=autocast,
    )  # fmt: skip
    return {"loss": r.loss, "perplexity": r.perplexity, "bits_per_byte": r.bits_per_byte, "tokens": r.tokens}


def load_entry_model(model_config, model_dir: Path, device) -> nn.Module:
    """The trained model an entry exported (``<entry>/train/model``), as the class its config builds."""
    from ..generation import RetNetForCausalLM
    from ..model import RetNetConfig

    if isinstance(model_config, RetNetConfig):
        return RetNetForCausalLM.from_pretrained(model_dir, device=device)
    from ..baselines import MixerLM

    return MixerLM.from_pretrained(model_dir, device=device)
