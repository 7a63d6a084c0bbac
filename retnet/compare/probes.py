"""Recall probes for the comparison's architectures: multi-query associative recall (MQAR) and passkey retrieval.

**MQAR** (Arora et al. 2023, "Zoology"). One example of ``T`` tokens over a vocabulary of ``V``::

    k1 v1 k2 v2 ... kP vP | _ _ kq vq _ _ kr vr _ ...
    '--- P key-value pairs --' '------- queries among blanks --------'

Token 0 is the blank filler, keys come from ``[1, 1 + (V - 1) // 2)`` and values from the rest. The ``P`` keys of
an example are distinct; values are drawn independently (with repeats), so chance accuracy is one over the number
of values. Each query repeats one of the keys (every key at most once) followed by its value; the only scored
targets are those values, predicted at the query key's position (the next-token convention of
:meth:`retnet.model.CausalLM.forward`, other targets -100). A model can answer only by recalling the pair from
the context, which a fixed-size state must have kept.

**Passkey retrieval** (Mohtashami and Jaggi 2023). A five-digit number is hidden at a chosen depth in filler text,
and the sequence ends by asking for it; the answer counts when every answer token is the model's most likely next
token (teacher-forced exact match, which is what greedy decoding of the answer would produce).

Training reuses the comparison recipe's pieces (:func:`retnet.training.optim.build_optimizer`,
:func:`retnet.training.schedule.lr_at`, the precision and clipping of :class:`~retnet.training.TrainConfig`), not
:func:`retnet.training.train` itself: the trainer samples windows at random offsets of a token stream and scores
every next token, while an MQAR example must start at position 0 and only its answers are scored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model.loss import IGNORE_INDEX
from ..training.config import OptimSection

logger = logging.getLogger(__name__)

BLANK = 0  # the MQAR filler token

PASSKEY_INTRO = "There is an important number hidden inside a lot of irrelevant text. Find it and remember it.\n"
PASSKEY_NEEDLE = "\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
PASSKEY_QUESTION = "\nWhat is the pass key? The pass key is"


PROBES = ("mqar", "passkey", "extrapolation")


@dataclass
class ProbeSection:
    """Recall probes and length extrapolation of a comparison (run after training, for the selected entries).

    Attributes:
        run: the probes to run, some of ``PROBES`` (``retnet compare --probes``); empty runs none.
        mqar_vocab_size: MQAR vocabulary V (the probe trains fresh models of the matched sizes at this vocabulary).
        mqar_seq_lens: sequence lengths T of the MQAR grid.
        mqar_pairs: key-value pair counts P of the grid; settings with 4P > T (not every key queried) are left out.
        mqar_steps: MQAR training steps (cycling over the grid's settings).
        mqar_batch_size: MQAR examples per step.
        mqar_examples: evaluation examples per setting.
        passkey_lengths: passkey sequence lengths (tokens).
        passkey_depths: needle depths in [0, 1].
        passkey_trials: sequences per (length, depth).
        passkey_corpus: filler: "" the in-domain held-out split, else one of ``compare.out_of_domain``.
        extrapolation_factor: windows of this many times ``data.seq_len``.
        extrapolation_windows: windows averaged per position.
        extrapolation_corpus: "" the in-domain held-out split, else one of ``compare.out_of_domain``.
    """

    run: list[str] = field(default_factory=list)
    mqar_vocab_size: int = 8192
    mqar_seq_lens: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    mqar_pairs: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    mqar_steps: int = 2000
    mqar_batch_size: int = 64
    mqar_examples: int = 256
    passkey_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768])
    passkey_depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    passkey_trials: int = 5
    passkey_corpus: str = ""
    extrapolation_factor: int = 8
    extrapolation_windows: int = 8
    extrapolation_corpus: str = ""

    def validate(self) -> None:
        """Check the values.

        Raises:
            ValueError: an unknown probe, a non-positive size, a depth outside [0, 1], or an empty MQAR grid.
        """
        unknown = [p for p in self.run if p not in PROBES]
        if unknown:
            raise ValueError(f"unknown probe(s) {unknown} in probes.run; expected some of {', '.join(PROBES)}")
        for name in ("mqar_steps", "mqar_batch_size", "mqar_examples", "passkey_trials", "extrapolation_factor",
                     "extrapolation_windows"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"config probes.{name}={getattr(self, name)!r} is invalid; it must be >= 1")
        mqar_vocabulary(self.mqar_vocab_size)
        if not self.mqar_tasks():
            raise ValueError(
                f"config probes.mqar_seq_lens={self.mqar_seq_lens} and probes.mqar_pairs={self.mqar_pairs} hold no "
                "setting with 4 × pairs <= sequence length"
            )
        if any(not 0 <= d <= 1 for d in self.passkey_depths):
            raise ValueError(f"config probes.passkey_depths={self.passkey_depths} is invalid; depths are in [0, 1]")

    def mqar_tasks(self) -> list[MQARTask]:
        """The MQAR grid: every (T, P) with room to query all P keys."""
        keys = len(mqar_vocabulary(self.mqar_vocab_size)[0])
        return [MQARTask(t, p) for t in self.mqar_seq_lens for p in self.mqar_pairs if 4 * p <= t and p <= keys]


# ---- MQAR --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MQARTask:
    """One MQAR setting: ``num_pairs`` key-value pairs in sequences of ``seq_len`` tokens."""

    seq_len: int
    num_pairs: int


@dataclass
class MQARData:
    """A batch of MQAR examples.

    Attributes:
        input_ids: ``(N, T)`` int64 token ids.
        targets: ``(N, T)`` int64 next-token targets: the paired value at every query key, -100 elsewhere.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor

    @property
    def num_queries(self) -> int:
        """Scored targets in the batch."""
        return int((self.targets != IGNORE_INDEX).sum())


def mqar_vocabulary(vocab_size: int) -> tuple[range, range]:
    """The key and value token ranges of an MQAR vocabulary of ``vocab_size`` (token 0 is the blank).

    Raises:
        ValueError: ``vocab_size`` below 3 (a blank, one key and one value).
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size={vocab_size} is too small for MQAR; it needs >= 3 (blank, keys, values)")
    split = 1 + (vocab_size - 1) // 2
    return range(1, split), range(split, vocab_size)


def make_mqar(
    num_examples: int,
    *,
    seq_len: int,
    num_pairs: int,
    vocab_size: int,
    seed: int | Sequence[int] = 0,
    num_queries: int | None = None,
) -> MQARData:
    """Deterministic MQAR examples (the layout is in the module docstring).

    Args:
        num_examples: N, examples in the batch.
        seq_len: T, tokens per example.
        num_pairs: P, key-value pairs in the context (the first ``2P`` tokens).
        vocab_size: V; keys and values split the tokens after the blank (:func:`mqar_vocabulary`).
        seed: seeds NumPy's generator (an int or a sequence of ints); equal arguments give equal examples.
        num_queries: queries per example (default: as many of the P keys as the rest of the sequence holds).

    Returns:
        :class:`MQARData` of ``(N, T)`` ids and targets.

    Raises:
        ValueError: a non-positive count, more pairs than keys, or a sequence too short for the queries.
    """
    for name, value in (("num_examples", num_examples), ("seq_len", seq_len), ("num_pairs", num_pairs)):
        if value < 1:
            raise ValueError(f"{name}={value} is invalid; it must be >= 1")
    keys_range, values_range = mqar_vocabulary(vocab_size)
    if num_pairs > len(keys_range):
        raise ValueError(
            f"num_pairs={num_pairs} exceeds the {len(keys_range)} distinct keys of vocab_size={vocab_size}"
        )
    slots = (seq_len - 2 * num_pairs) // 2  # two-token query slots after the context
    queries = min(num_pairs, slots) if num_queries is None else num_queries
    if queries < 1 or queries > num_pairs or queries > slots:
        raise ValueError(
            f"seq_len={seq_len} with num_pairs={num_pairs} leaves room for {max(slots, 0)} queries; "
            f"num_queries={queries} must be in [1, min(num_pairs, that)]"
        )
    rng = np.random.default_rng(seed)
    N, P, Q = num_examples, num_pairs, queries
    rows = np.arange(N)[:, None]
    keys = np.argsort(rng.random((N, len(keys_range))), axis=1)[:, :P] + keys_range.start  # (N, P) distinct per row
    values = rng.integers(values_range.start, values_range.stop, size=(N, P))  # (N, P)
    asked = np.argsort(rng.random((N, P)), axis=1)[:, :Q]  # (N, Q) which pairs are queried, in query order
    where = np.sort(np.argsort(rng.random((N, slots)), axis=1)[:, :Q], axis=1)  # (N, Q) slot of each query
    ids = np.full((N, seq_len), BLANK, dtype=np.int64)
    targets = np.full((N, seq_len), IGNORE_INDEX, dtype=np.int64)
    ids[:, 0 : 2 * P : 2], ids[:, 1 : 2 * P : 2] = keys, values
    pos = 2 * P + 2 * where  # (N, Q) position of each query key
    ids[rows, pos] = keys[rows, asked]
    ids[rows, pos + 1] = values[rows, asked]
    targets[rows, pos] = values[rows, asked]  # predicted at the key: the next token is its value
    return MQARData(torch.from_numpy(ids), torch.from_numpy(targets))


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """Scored targets whose most likely token is the answer, and the number scored.

    Args:
        logits: ``(N, T, V)`` next-token logits.
        targets: ``(N, T)`` int64 answers, -100 where nothing is scored.

    Returns:
        ``(correct, scored)``.

    Raises:
        ValueError: shapes that do not line up.
    """
    if logits.dim() != 3 or logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be (N, T, V) over targets {tuple(targets.shape)}")
    scored = targets != IGNORE_INDEX
    hits = (logits.argmax(-1) == targets) & scored
    return int(hits.sum()), int(scored.sum())


def _autocast(precision: str, device: torch.device):
    from ..training.trainer import autocast_context, resolve_precision

    return autocast_context(resolve_precision(precision, device), device)


@torch.no_grad()
def evaluate_mqar(
    model: nn.Module,
    tasks: Sequence[MQARTask],
    *,
    vocab_size: int,
    examples: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    precision: str = "fp32",
    form: str = "chunkwise",
    chunk_size: int = 64,
) -> list[dict]:
    """MQAR accuracy of ``model`` on fresh examples of each task (a seed stream apart from training's).

    Returns:
        One ``{"seq_len", "num_pairs", "accuracy", "queries"}`` per task, in order.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for task in tasks:
        correct = scored = 0
        for start in range(0, examples, batch_size):
            n = min(batch_size, examples - start)
            data = make_mqar(n, seq_len=task.seq_len, num_pairs=task.num_pairs, vocab_size=vocab_size,
                             seed=[seed, 1, task.seq_len, task.num_pairs, start])  # fmt: skip
            with _autocast(precision, device):
                logits = model(data.input_ids.to(device), form=form, chunk_size=chunk_size).logits  # (n, T, V)
            c, s = count_correct(logits.float(), data.targets.to(device))
            correct, scored = correct + c, scored + s
        rows.append({"seq_len": task.seq_len, "num_pairs": task.num_pairs, "accuracy": correct / scored,
                     "queries": scored})  # fmt: skip
    model.train(was_training)
    return rows


def train_mqar(
    model: nn.Module,
    tasks: Sequence[MQARTask],
    *,
    vocab_size: int,
    steps: int,
    batch_size: int,
    optim: OptimSection,
    seed: int = 0,
    precision: str = "fp32",
    form: str = "chunkwise",
    chunk_size: int = 64,
    log_every: int = 10,
) -> dict:
    """Train ``model`` in place on MQAR: step ``s`` draws a fresh batch of task ``tasks[s % len(tasks)]``.

    The loss is the mean cross-entropy of the answers; AdamW, warm-up and schedule are ``optim``'s, gradients
    are clipped at ``optim.grad_clip`` (the comparison recipe).

    Args:
        model: a RetNetForCausalLM or MixerLM with at least ``vocab_size`` tokens.
        tasks: the training settings, cycled.
        vocab_size: MQAR vocabulary (may be smaller than the model's).
        steps: optimizer steps.
        batch_size: examples per step.
        optim: the optimizer section of the recipe.
        seed: seeds the examples.
        precision: "fp32", "bf16" or "auto" (autocast; parameters stay as they are).
        form: training form.
        chunk_size: chunkwise chunk size.
        log_every: steps between loss-curve points.

    Returns:
        ``{"steps", "loss_curve": [{"step", "loss"}], "final_loss", "wall_time_s"}``.

    Raises:
        ValueError: no tasks, a non-positive ``steps``/``batch_size``, or a non-finite loss.
    """
    from ..training.optim import build_optimizer
    from ..training.schedule import lr_at

    if not tasks:
        raise ValueError("tasks is empty; give at least one MQARTask to train on")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must both be >= 1")
    device = next(model.parameters()).device
    optimizer = build_optimizer(model, optim)
    clip = optim.grad_clip if optim.grad_clip > 0 else float("inf")
    curve, start = [], time.time()
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, optim.decay_steps or steps, optim)
        task = tasks[step % len(tasks)]
        data = make_mqar(batch_size, seq_len=task.seq_len, num_pairs=task.num_pairs, vocab_size=vocab_size,
                         seed=[seed, 0, step])  # fmt: skip
        with _autocast(precision, device):
            loss = model(data.input_ids.to(device), form=form, chunk_size=chunk_size, targets=data.targets.to(device),
                         return_logits=False).loss  # fmt: skip
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"MQAR training loss is {value} at step {step + 1}; lower optim.lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "loss": value})
    return {"steps": steps, "loss_curve": curve, "final_loss": curve[-1]["loss"], "wall_time_s": time.time() - start}


# ---- passkey -----------------------------------------------------------------------------------------------------
@dataclass
class PasskeyExample:
    """One passkey sequence.

    Attributes:
        input_ids: ``(L,)`` int64: intro, filler with the needle inside, question, then the answer.
        answer_start: index of the first answer token (the prompt is ``input_ids[:answer_start]``).
        passkey: the hidden number.
        needle_start: index of the needle's first token.
    """

    input_ids: np.ndarray
    answer_start: int
    passkey: int
    needle_start: int

    @property
    def answer_ids(self) -> np.ndarray:
        """The answer tokens (the passkey after a space)."""
        return self.input_ids[self.answer_start :]


def make_passkey(
    tokenizer, filler: np.ndarray | str, *, length: int, depth: float, seed: int | Sequence[int] = 0, digits: int = 5
) -> PasskeyExample:
    """A passkey sequence of exactly ``length`` tokens with the needle ``depth`` of the way into the filler.

    Args:
        tokenizer: a :class:`retnet.data.Tokenizer`.
        filler: filler text, or its token ids (encode once with ``tokenizer.encode`` when making many);
            repeated as needed, starting at a seeded offset.
        length: total tokens, answer included.
        depth: 0 puts the needle right after the intro, 1 right before the question.
        seed: seeds the passkey and the filler offset.
        digits: digits of the passkey.

    Raises:
        ValueError: empty filler, a depth outside [0, 1], ``digits`` < 1, or a length too short for the prompt.
    """
    ids = np.asarray(tokenizer.encode(filler), dtype=np.int64) if isinstance(filler, str) else np.asarray(filler)
    if ids.size == 0:
        raise ValueError("filler is empty; give some filler text")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth={depth} is invalid; it must be in [0, 1]")
    if digits < 1:
        raise ValueError(f"digits={digits} is invalid; it must be >= 1")
    rng = np.random.default_rng(seed)
    key = int(rng.integers(10 ** (digits - 1), 10**digits))
    offset = int(rng.integers(ids.size))
    parts = [tokenizer.encode(t) for t in (PASSKEY_INTRO, PASSKEY_NEEDLE.format(key=key), PASSKEY_QUESTION, f" {key}")]
    intro, needle, question, answer = (np.asarray(p, dtype=np.int64) for p in parts)
    room = length - sum(p.size for p in (intro, needle, question, answer))
    if room < 0:
        raise ValueError(f"length={length} is too short: the passkey prompt alone takes {length - room} tokens")
    stream = np.resize(np.roll(ids, -offset), room)  # the filler from the seeded offset, repeated to fill the room
    before = int(round(depth * room))
    seq = np.concatenate([intro, stream[:before], needle, stream[before:], question, answer])
    return PasskeyExample(seq, length - answer.size, key, intro.size + before)


@torch.no_grad()
def passkey_accuracy(
    model: nn.Module,
    tokenizer,
    filler: str | np.ndarray,
    *,
    lengths: Sequence[int],
    depths: Sequence[float],
    trials: int = 5,
    seed: int = 0,
    precision: str = "fp32",
    form: str = "chunkwise",
    chunk_size: int = 64,
) -> list[dict]:
    """Passkey retrieval accuracy of a trained LM at every (length, depth).

    Args:
        model: a RetNetForCausalLM or MixerLM using ``tokenizer``'s vocabulary.
        tokenizer: the model's tokenizer.
        filler: the filler text or its token ids (e.g. held-out tokens of the training corpus).
        lengths: sequence lengths in tokens.
        depths: needle depths in [0, 1].
        trials: sequences (different passkeys and filler offsets) per cell.
        seed: seeds the sequences.
        precision: "fp32", "bf16" or "auto".
        form: forward form ("chunkwise", "parallel" or "recurrent"; baselines use their own path).
        chunk_size: chunkwise chunk size.

    Returns:
        One ``{"length", "depth", "accuracy", "trials"}`` per cell, lengths outer.
    """
    if trials < 1:
        raise ValueError(f"trials={trials} is invalid; it must be >= 1")
    if isinstance(filler, str):
        filler = np.asarray(tokenizer.encode(filler), dtype=np.int64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = []
    for length in lengths:
        for depth in depths:
            hits = 0
            for trial in range(trials):
                ex = make_passkey(tokenizer, filler, length=length, depth=depth, seed=[seed, length, trial])
                ids = torch.from_numpy(ex.input_ids[None, :-1]).to(device)  # (1, L - 1): the last token is not input
                with _autocast(precision, device):
                    logits = model(ids, form=form, chunk_size=chunk_size).logits  # (1, L - 1, vocab)
                guess = logits[0, ex.answer_start - 1 :].argmax(-1).cpu().numpy()
                hits += int(np.array_equal(guess, ex.answer_ids))
            rows.append({"length": length, "depth": depth, "accuracy": hits / trials, "trials": trials})
            logger.info("passkey length %d depth %.2f: %d/%d", length, depth, hits, trials)
    model.train(was_training)
    return rows


def accuracy_table(rows: Sequence[dict], row_key: str, col_key: str, title: str = "") -> str:
    """A Markdown table of ``accuracy`` with one row per ``row_key`` value and one column per ``col_key`` value."""
    row_vals = list(dict.fromkeys(r[row_key] for r in rows))
    col_vals = list(dict.fromkeys(r[col_key] for r in rows))
    cell = {(r[row_key], r[col_key]): r["accuracy"] for r in rows}
    lines = [f"| {title or row_key} | " + " | ".join(f"{col_key} {c}" for c in col_vals) + " |"]
    lines.append("|" + "---|" * (len(col_vals) + 1))
    for rv in row_vals:
        vals = [f"{cell[(rv, c)]:.1%}" if (rv, c) in cell else "—" for c in col_vals]
        lines.append(f"| {rv} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


# ---- running the probes of a comparison --------------------------------------------------------------------------
def _cached(results, record: dict, path: Path, key: str, compute) -> dict:
    """``compute()``'s result, kept under ``key`` in the results file (with ``record``'s fields) and in ``path``;
    reused from either while the key is the same."""
    held = results.get(key)
    if held is not None:
        return held["result"]
    doc = json.loads(path.read_text()) if path.is_file() else {}
    result = doc["result"] if doc.get("key") == key else compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "result": result}, indent=1) + "\n")
    results.add(key, {**record, "role": "probe", "result": result})
    return result


_PREFIX = {"mqar": "mqar", "passkey": "passkey_", "extrapolation": "extrapolation_"}


def _mqar_key(config, model_config, lr: float) -> str:
    from .entries import run_key

    optim = dataclasses.replace(config.optim, lr=lr)
    return run_key({"model": model_config.to_dict(), "probe": _probe_fields(config.probes, "mqar"),
                    "optim": dataclasses.asdict(optim), "seed": config.seed, "precision": config.precision,
                    "form": config.form})  # fmt: skip


def finished_probes(config, results, matched: Mapping, lrs: Mapping[str, float], main_keys: Mapping) -> dict:
    """``{probe: {entry: result}}`` of every probe the results file holds for this comparison's entries.

    A passkey or extrapolation result counts when it was measured on one of the entry's full runs
    (``main_keys[entry]``, tried in order) with this config's probe settings; an MQAR result when its key is the one
    this config gives. So probes measured by separate commands (each on the models it trained) report together.
    """
    out: dict[str, dict] = {}
    probe_records = results.records(role="probe")
    for probe in PROBES:
        fields = _probe_fields(config.probes, probe)
        for name in config.compare.archs:
            if name not in matched:
                continue
            if probe == "mqar":
                record = results.get(_mqar_key(config, matched[name].config, lrs[name]))
            else:
                found = [r for r in probe_records if r.get("probe") == probe and r.get("name") == name
                         and r.get("fields") == fields]  # fmt: skip
                record = next((r for k in main_keys.get(name, ()) for r in found if r.get("run_key") == k), None)
            if record is not None:
                out.setdefault(probe, {})[name] = record["result"]
    return out


def write_probe_reports(out: Mapping[str, dict], run_dir: Path) -> None:
    """``<run_dir>/probes/``: the accuracy tables and plots of MQAR and passkey, the extrapolation report."""
    from .extrapolation import write_extrapolation

    out_dir = run_dir / "probes"
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_probe_reports(out, out_dir)
    if out.get("extrapolation"):
        write_extrapolation(out["extrapolation"], out_dir)


def _probe_fields(section: ProbeSection, probe: str) -> dict:
    """The settings of ``probe`` (the section's fields with its prefix): part of its results' keys."""
    return {k: v for k, v in dataclasses.asdict(section).items() if k.startswith(_PREFIX[probe])}


def run_probes(
    config,
    run_dir: Path,
    matched: Mapping,
    selected: list[str],
    datasets: Mapping[str, Path],
    trained: Mapping[str, tuple[str, Path]],
    lrs: Mapping[str, float],
    results,
    main_keys: Mapping[str, list[str]],
) -> dict:
    """Run ``config.probes.run`` for the ``selected`` entries and write ``<run_dir>/probes/<probe>.{json,md}``.

    MQAR trains a fresh model of each entry's matched config (at ``probes.mqar_vocab_size`` tokens) with the
    recipe's optimizer at the entry's learning rate; passkey and extrapolation read each entry's trained model.
    Each (probe, entry) result is kept in the results file (role ``"probe"``) and in ``probes/<probe>/<entry>.json``,
    and reused while its inputs are the same; the reports list every entry whose probes the results file holds.

    Args:
        config: the comparison (a CompareConfig).
        run_dir: the run folder.
        matched: ``{entry: MatchedModel}`` of the comparison's entries.
        selected: the entries to probe in this call.
        datasets: prepared datasets by corpus: ``""`` the in-domain one, else the ``compare.out_of_domain`` names.
        trained: ``{entry: (run key, exported model folder)}`` of the entries with a trained model in the folder.
        lrs: ``{entry: learning rate}`` (the sweep's choice, or ``optim.lr``).
        results: the comparison's :class:`~retnet.compare.entries.ResultsFile`.
        main_keys: ``{entry: keys of its full runs}`` (seed order), for the report's choice among results.

    Returns:
        ``{probe: {entry: result}}`` of every entry with results.
    """
    from ..data import PreparedDataset
    from .entries import run_key
    from .extrapolation import length_extrapolation
    from .harness import load_entry_model

    p, out_dir = config.probes, run_dir / "probes"
    device = torch.device("cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu")
    for corpus in (p.passkey_corpus, p.extrapolation_corpus):
        if corpus not in datasets:
            raise ValueError(f"probe corpus {corpus!r} is not '' (in-domain) or one of compare.out_of_domain")
    if "mqar" in p.run:
        tasks = p.mqar_tasks()
        for name in selected:
            m = matched[name]
            optim = dataclasses.replace(config.optim, lr=lrs[name])

            def train_and_score(m=m, optim=optim):
                torch.manual_seed(config.seed)
                from .archs import build_model

                model = build_model(dataclasses.replace(m.config, vocab_size=p.mqar_vocab_size)).to(device)
                kwargs = dict(vocab_size=p.mqar_vocab_size, seed=config.seed, precision=config.precision,
                              form=config.form, chunk_size=config.chunk_size)  # fmt: skip
                train = train_mqar(model, tasks, steps=p.mqar_steps, batch_size=p.mqar_batch_size, optim=optim,
                                   **kwargs)  # fmt: skip
                acc = evaluate_mqar(model, tasks, examples=p.mqar_examples, batch_size=p.mqar_batch_size, **kwargs)
                return {"train": train, "accuracy": acc, "lr": optim.lr}

            record = {"name": name, "probe": "mqar", "fields": _probe_fields(p, "mqar")}
            result = _cached(results, record, out_dir / "mqar" / f"{name}.json", _mqar_key(config, m.config, optim.lr),
                             train_and_score)  # fmt: skip
            logger.info("MQAR %s: %s", name, [round(r["accuracy"], 3) for r in result["accuracy"]])
    for probe in ("passkey", "extrapolation"):
        if probe not in p.run:
            continue
        ds = PreparedDataset(datasets[p.passkey_corpus if probe == "passkey" else p.extrapolation_corpus])
        stream = ds.tokens("val")
        for name in selected:
            if name not in trained:
                logger.warning("%s: %s has no trained model in this run folder; skipped", probe, name)
                continue
            entry_key, model_dir = trained[name]
            key = run_key({"entry": entry_key, "probe": _probe_fields(p, probe), "data": str(ds.manifest["tokenizer"]),
                           "form": config.form})  # fmt: skip

            def score(probe=probe, model_dir=model_dir, name=name, ds=ds, stream=stream):
                model = load_entry_model(matched[name].config, model_dir, device)
                if probe == "passkey":
                    filler = np.asarray(stream[: 4 * max(p.passkey_lengths)], dtype=np.int64)
                    return passkey_accuracy(model, ds.tokenizer, filler[filler != ds.sep_id],
                                                lengths=p.passkey_lengths, depths=p.passkey_depths,
                                                trials=p.passkey_trials, seed=config.seed,
                                                precision=config.precision, form=config.form,
                                                chunk_size=config.chunk_size)  # fmt: skip
                return length_extrapolation(model, stream, train_len=config.data.seq_len,
                                            factor=p.extrapolation_factor, windows=p.extrapolation_windows,
                                            form=config.form, chunk_size=config.chunk_size,
                                            autocast=_autocast(config.precision, device))  # fmt: skip

            record = {"name": name, "probe": probe, "fields": _probe_fields(p, probe), "run_key": entry_key}
            _cached(results, record, out_dir / probe / f"{name}.json", key, score)
    out = finished_probes(config, results, matched, lrs, main_keys)
    write_probe_reports(out, run_dir)
    return out


def _write_probe_reports(out: Mapping[str, dict], out_dir: Path) -> None:
    from .archs import LABELS

    for probe, key_row, key_col in (("mqar", "seq_len", "num_pairs"), ("passkey", "length", "depth")):
        results = out.get(probe)
        if not results:
            continue
        (out_dir / f"{probe}.json").write_text(json.dumps(results, indent=1) + "\n")
        parts = [f"# {'MQAR' if probe == 'mqar' else 'Passkey retrieval'} accuracy", ""]
        for name, r in results.items():
            rows = r["accuracy"] if probe == "mqar" else r
            parts += [f"## {LABELS.get(name, name)}", "", accuracy_table(rows, key_row, key_col), ""]
        (out_dir / f"{probe}.md").write_text("\n".join(parts))
        _plot_accuracy(results, probe, out_dir / f"{probe}.png")


def _plot_accuracy(results: Mapping[str, dict], probe: str, path: Path) -> None:
    """MQAR: accuracy against pairs, one panel per sequence length; passkey: accuracy against length (mean over
    depths); a line per entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .archs import LABELS

    rows = {name: (r["accuracy"] if probe == "mqar" else r) for name, r in results.items()}
    x_key, panel_key = ("num_pairs", "seq_len") if probe == "mqar" else ("length", None)
    panels = sorted({r[panel_key] for rs in rows.values() for r in rs}) if panel_key else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for name, rs in rows.items():
            xs = sorted({r[x_key] for r in rs if panel is None or r[panel_key] == panel})
            ys = [np.mean([r["accuracy"] for r in rs if r[x_key] == x and (panel is None or r[panel_key] == panel)])
                  for x in xs]  # fmt: skip
            ax.plot(xs, ys, marker="o", label=LABELS.get(name, name), linewidth=1.2)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("key-value pairs" if probe == "mqar" else "sequence length (tokens)")
        ax.set_title(f"T = {panel}" if panel is not None else "passkey retrieval (mean over depths)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
