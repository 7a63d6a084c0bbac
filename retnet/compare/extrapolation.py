"""Length extrapolation: next-token loss against position, up to ``factor`` times the training length.

A model trained on windows of ``T`` tokens is run on longer windows of held-out text (``factor × T`` tokens, each
window starting at a document-agnostic stream offset, in stream order) and the loss at every position is
averaged over the windows, then over position buckets. RetNet's decay forgets beyond its longest horizon, so its
loss stays flat past ``T`` (docs/spec.md §1); a Transformer with rotary positions meets relative distances it
never trained on. RetNet runs in the chunkwise form by default (``"recurrent"`` gives the same values token by
token, docs/spec.md §3); the other architectures run their own forward whatever form is named, except
``"recurrent"``, which steps them too.

:func:`write_extrapolation` writes ``extrapolation.json``, ``extrapolation.md`` (a row per model with its
perplexity up to and past ``T``, then a row per bucket with a column per model) and ``extrapolation.png``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import WindowSampler
from .archs import LABELS


@torch.no_grad()
def position_losses(
    model: nn.Module,
    tokens: np.ndarray,
    *,
    length: int,
    windows: int,
    batch_size: int = 1,
    form: str = "chunkwise",
    chunk_size: int = 64,
    autocast: contextlib.AbstractContextManager | None = None,
) -> np.ndarray:
    """Mean next-token loss at each position of the first ``windows`` windows of ``length`` tokens of a stream.

    Args:
        model: a RetNetForCausalLM or MixerLM.
        tokens: the token stream (e.g. a prepared dataset's ``val`` split).
        length: tokens per window (the model predicts ``length`` targets from ``length`` inputs).
        windows: windows to average over (consecutive, from the stream's start).
        batch_size: windows per forward pass.
        form: forward form.
        chunk_size: chunkwise chunk size.
        autocast: a mixed-precision context (none: the parameters' dtype).

    Returns:
        ``(length,)`` float64 losses in nats.

    Raises:
        ValueError: a stream shorter than ``windows`` windows, or a non-positive count.
    """
    for name, value in (("length", length), ("windows", windows), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}={value} is invalid; it must be >= 1")
    sampler = WindowSampler(tokens, length, shuffle=False)
    if sampler.num_windows < windows:
        raise ValueError(
            f"the stream of {len(tokens)} tokens holds {sampler.num_windows} windows of {length + 1}; {windows} asked"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros(length, dtype=torch.float64, device=device)
    for start in range(0, windows, batch_size):
        batch = np.stack([sampler.window(i) for i in range(start, min(start + batch_size, windows))])  # (B, T + 1)
        ids = torch.from_numpy(batch).to(device)
        with autocast or contextlib.nullcontext():
            logits = model(ids[:, :-1], form=form, chunk_size=chunk_size).logits  # (B, T, vocab)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits scored in float32
        nats = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T)
        total += nats.double().sum(0)
    model.train(was_training)
    return (total / windows).cpu().numpy()


def bucket_losses(losses: np.ndarray, bucket: int) -> list[dict]:
    """Average per-position losses over consecutive buckets of ``bucket`` positions (the last may be shorter).

    Returns:
        ``[{"start", "end", "loss", "perplexity"}]`` with ``end`` exclusive.
    """
    if bucket < 1:
        raise ValueError(f"bucket={bucket} is invalid; it must be >= 1")
    rows = []
    for start in range(0, len(losses), bucket):
        loss = float(np.mean(losses[start : start + bucket]))
        rows.append({"start": start, "end": min(start + bucket, len(losses)), "loss": loss,
                     "perplexity": math.exp(min(loss, 700.0))})  # fmt: skip
    return rows


def length_extrapolation(
    model: nn.Module,
    tokens: np.ndarray,
    *,
    train_len: int,
    factor: int = 8,
    buckets_per_train_len: int = 4,
    windows: int = 8,
    batch_size: int = 1,
    form: str = "chunkwise",
    chunk_size: int = 64,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict:
    """Loss against position on windows of ``factor × train_len`` tokens.

    Args:
        model: the trained model.
        tokens: held-out token stream.
        train_len: the training sequence length T.
        factor: windows are ``factor × T`` tokens.
        buckets_per_train_len: buckets of ``T / buckets_per_train_len`` positions.
        windows: see :func:`position_losses`.
        batch_size: see :func:`position_losses`.
        form: see :func:`position_losses`.
        chunk_size: see :func:`position_losses`.
        autocast: see :func:`position_losses`.

    Returns:
        ``{"train_len", "eval_len", "windows", "form", "buckets": [...]}`` (:func:`bucket_losses`), with
        ``"in_range"`` and ``"beyond"``: the mean loss up to T and past T.
    """
    if factor < 1 or buckets_per_train_len < 1 or train_len < buckets_per_train_len:
        raise ValueError(
            f"factor={factor}, buckets_per_train_len={buckets_per_train_len} and train_len={train_len} must be >= 1, "
            "with train_len >= buckets_per_train_len"
        )
    length = factor * train_len
    losses = position_losses(model, tokens, length=length, windows=windows, batch_size=batch_size, form=form,
                             chunk_size=chunk_size, autocast=autocast)  # fmt: skip
    beyond = float(np.mean(losses[train_len:])) if factor > 1 else float("nan")
    return {
        "train_len": train_len,
        "eval_len": length,
        "windows": windows,
        "form": form,
        "buckets": bucket_losses(losses, train_len // buckets_per_train_len),
        "in_range": float(np.mean(losses[:train_len])),
        "beyond": beyond,
    }


def extrapolation_table(results: Mapping[str, dict]) -> str:
    """Markdown: a row per position bucket, a column of perplexities per model (buckets past T marked)."""
    names = list(results)
    first = results[names[0]]
    lines = ["| Positions | " + " | ".join(LABELS.get(n, n) for n in names) + " |", "|" + "---|" * (len(names) + 1)]
    for i, b in enumerate(first["buckets"]):
        mark = " (beyond T)" if b["start"] >= first["train_len"] else ""
        cells = [f"{results[n]['buckets'][i]['perplexity']:.2f}" for n in names]
        lines.append(f"| {b['start']}–{b['end'] - 1}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def extrapolation_summary(results: Mapping[str, dict]) -> str:
    """Markdown: a row per model with its perplexity up to T and past T and their ratio, best past T first."""
    lines = ["| Model | perplexity up to T | perplexity past T | past / up to |", "|---|---|---|---|"]
    for name in sorted(results, key=lambda n: results[n]["beyond"]):
        within, beyond = (math.exp(min(results[name][k], 700.0)) for k in ("in_range", "beyond"))
        lines.append(f"| {LABELS.get(name, name)} | {within:.2f} | {beyond:.2f} | {beyond / within:.2f}× |")
    return "\n".join(lines)


def write_extrapolation(results: Mapping[str, dict], out_dir: str | Path) -> Path:
    """Write ``extrapolation.{json,md,png}`` into ``out_dir``; returns the JSON path.

    Args:
        results: ``{entry name: length_extrapolation(...)}``; every entry evaluated with the same lengths.

    Raises:
        ValueError: no results, or entries evaluated at different lengths.
    """
    if not results:
        raise ValueError("results is empty; evaluate at least one model")
    if len({(r["train_len"], r["eval_len"], len(r["buckets"])) for r in results.values()}) != 1:
        raise ValueError("every entry must be evaluated with the same train_len, factor and buckets")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "extrapolation.json").write_text(json.dumps(dict(results), indent=2) + "\n")
    first = next(iter(results.values()))
    text = [
        "# Length extrapolation",
        "",
        f"Perplexity by position on held-out windows of {first['eval_len']:,} tokens ({first['windows']} windows), "
        f"{first['eval_len'] // first['train_len']}× the training length T = {first['train_len']:,}.",
        "",
        extrapolation_summary(results),
        "",
        "By position:",
        "",
        extrapolation_table(results),
        "",
    ]
    (out / "extrapolation.md").write_text("\n".join(text))
    _plot(results, out / "extrapolation.png")
    return out / "extrapolation.json"


def _plot(results: Mapping[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        mids = [(b["start"] + b["end"]) / 2 for b in r["buckets"]]
        ax.plot(mids, [b["loss"] for b in r["buckets"]], marker=".", label=LABELS.get(name, name), linewidth=1.2)
    ax.axvline(next(iter(results.values()))["train_len"], color="gray", linestyle=":", label="training length")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("position")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
