"""``TrainConfig``: every setting of a training run, loaded from YAML files plus ``--key=value`` overrides.

Sections are typed dataclasses (model, data, optim, parallel, checkpoint); keys are dotted on the command line
(``--optim.lr=3e-4``). The loader is :mod:`retnet.utils.config_loader`: unknown keys and values of the wrong type
fail with a one-line ``ValueError`` naming the key and the valid choices. The resolved config is written into the
run folder as ``train_config.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..utils import config_loader
from ..utils.config_loader import parse_overrides  # noqa: F401 (re-exported as retnet.training.parse_overrides)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PARAM_DTYPES = ("fp32", "bf16")
ACTIVATION_CHECKPOINTING = ("none", "selective", "full")
LOSS_IMPLS = ("auto", "fused", "plain")
TRAIN_FORMS = ("parallel", "chunkwise")
SCHEDULES = ("cosine", "linear", "constant")
STRATEGIES = ("auto", "none", "ddp", "fsdp")
NAN_POLICIES = ("stop", "skip")


@dataclass
class ModelSection:
    """The model: a preset of :mod:`retnet.model.presets` plus optional overrides (None keeps the preset's)."""

    preset: str = "tiny"
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_heads: int | None = None
    value_dim: int | None = None
    ffn_dim: int | None = None
    flavour: str | None = None
    dropout: float | None = None
    tie_word_embeddings: bool | None = None
    backend: str | None = None


@dataclass
class DataSection:
    """Corpus, tokenizer and sequence layout.

    Attributes:
        corpus: a registered corpus name (fetched on demand) or a local text/JSONL file or folder; a
            comma-separated list of them makes a mixture.
        dataset: a prepared dataset folder; empty derives one under ``cache_dir`` from corpus and tokenizer.
        tokenizer: "byte" or "bpe".
        vocab_size: BPE vocabulary size.
        seq_len: tokens per training sequence T.
        val_fraction: held-out share when preparing.
        reset_at_boundaries: pack rows into one with state resets at rows and documents (docs/spec.md §3).
        cache_dir: where corpora and prepared datasets live.
        fetch: allow downloading a registered corpus that is not cached.
        workers: tokenisation processes when preparing.
    """

    corpus: str = "shakespeare"
    dataset: str = ""
    tokenizer: str = "byte"
    vocab_size: int = 4096
    seq_len: int = 256
    val_fraction: float = 0.05
    reset_at_boundaries: bool = True
    cache_dir: str = "~/.cache/retnet"
    fetch: bool = True
    workers: int = 1


@dataclass
class OptimSection:
    """AdamW and the learning-rate schedule (paper §3.1: β = (0.9, 0.98), weight decay 0.01-0.05, clip 2.0).

    ``decay_steps`` is the length of the schedule (0: the run's ``steps``); setting it lets a run stop early
    and be resumed later with more steps on the very same schedule.
    """

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.05
    warmup_steps: int = 50
    decay_steps: int = 0
    schedule: str = "cosine"
    grad_clip: float = 2.0


@dataclass
class ParallelSection:
    """How the model is spread over ranks.

    Attributes:
        strategy: "auto" (DDP when more than one rank), "none", "ddp" or "fsdp" (FSDP2 ``fully_shard`` per block).
        backend: process-group backend; empty picks nccl on CUDA and gloo otherwise.
        context: ranks each sequence is split over (context parallelism, docs/parallel.md); the world size
            divided by it is the number of data-parallel rows the batch is divided over. 1 turns it off.
    """

    strategy: str = "auto"
    backend: str = ""
    context: int = 1


@dataclass
class CheckpointSection:
    """Checkpointing: every ``every`` steps (0: only at the end), keeping the last ``keep``."""

    every: int = 100
    keep: int = 2


@dataclass
class TrainConfig:
    """A training run.

    Attributes:
        run_dir: output folder; empty makes ``runs/<name>-<timestamp>``.
        name: run name used for the default run folder.
        seed: seeds the model init, data order and sampling.
        steps: optimizer steps.
        batch_size: global batch in sequences per optimizer step (over all ranks and micro-batches).
        micro_batch_size: sequences per forward/backward on one rank; 0 means batch_size / world size.
        precision: compute precision: "fp32", "bf16" (autocast) or "fp16" (autocast + grad scaler); "auto" is
            bf16 on a GPU that supports it, else fp32.
        param_dtype: "fp32" master weights (the default) or "bf16" parameters (and AdamW states) throughout,
            which needs ``precision`` bf16.
        form: training form, "parallel" or "chunkwise".
        chunk_size: chunk size of the chunkwise form.
        activation_checkpointing: "none"; "selective" (each block recomputes its elementwise work in the
            backward pass and keeps the matrix products' and retention's outputs); "full" (each block keeps only
            its input and recomputes everything).
        loss: next-token loss: "fused" (linear + cross-entropy without the full logits; liger-kernel, CUDA),
            "plain", or "auto" (fused where it can run).
        compile: compile every block with ``torch.compile`` (whole blocks, no graph breaks); None compiles on
            CUDA and not on CPU.
        compile_backend: the ``torch.compile`` backend ("inductor"; "aot_eager" traces without code generation).
        activation_memory_budget: with ``compile``, the share of a compiled block's activations the backward pass
            may keep, in (0, 1]; below 1 the compiler recomputes its cheapest saved values (norms, gates, casts)
            in the backward pass instead (``torch._functorch.config.activation_memory_budget``). 0.7 cut the
            1.3B model's peak memory by 18 % at T = 8,192 and 24 % at T = 32,768 for under 1 % of speed
            (docs/benchmarks/train-h200.md).
        device: "auto", "cpu" or "cuda".
        eval_every: validate every N steps (0: only at the end).
        eval_batches: validation batches (of ``batch_size`` sequences) per evaluation; 0 means all.
        log_every: steps between metric records.
        nan_policy: "stop" the run on a non-finite loss or "skip" the step.
        max_skips: stop after this many consecutive skipped steps.
        sample_tokens: tokens sampled at the end of training (0: none).
        sample_prompt: prompt of that sample; empty takes the first line of the validation text.
        threads: CPU threads for PyTorch's intra-op work, set by the ``retnet train`` entry point (0: the
            ``OMP_NUM_THREADS`` environment variable if set, else the CPUs this process may run on).
        tensorboard: also write TensorBoard events (if tensorboard is installed).
        peak_tflops: accelerator peak for MFU; 0 looks the device up.
    """

    run_dir: str = ""
    name: str = "shakespeare"
    seed: int = 0
    steps: int = 300
    batch_size: int = 16
    micro_batch_size: int = 0
    precision: str = "auto"
    param_dtype: str = "fp32"
    form: str = "chunkwise"
    chunk_size: int = 64
    activation_checkpointing: str = "none"
    loss: str = "auto"
    compile: bool | None = None
    compile_backend: str = "inductor"
    activation_memory_budget: float = 0.7
    device: str = "auto"
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    nan_policy: str = "stop"
    max_skips: int = 10
    sample_tokens: int = 200
    sample_prompt: str = ""
    threads: int = 0
    tensorboard: bool = True
    peak_tflops: float = 0.0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values.

        Raises:
            ValueError: the first bad value, named by its dotted key.
        """
        choices = {
            "precision": (self.precision, PRECISIONS),
            "param_dtype": (self.param_dtype, PARAM_DTYPES),
            "activation_checkpointing": (self.activation_checkpointing, ACTIVATION_CHECKPOINTING),
            "loss": (self.loss, LOSS_IMPLS),
            "form": (self.form, TRAIN_FORMS),
            "nan_policy": (self.nan_policy, NAN_POLICIES),
            "optim.schedule": (self.optim.schedule, SCHEDULES),
            "parallel.strategy": (self.parallel.strategy, STRATEGIES),
            "data.tokenizer": (self.data.tokenizer, ("byte", "bpe")),
            "device": (self.device, ("auto", "cpu", "cuda")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"config {key}={value!r} is invalid; expected one of {', '.join(allowed)}")
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "data.seq_len": self.data.seq_len,
            "log_every": self.log_every,
            "checkpoint.keep": self.checkpoint.keep,
            "parallel.context": self.parallel.context,
        }
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"config {key}={value!r} is invalid; it must be >= 1")
        non_negative = {
            "micro_batch_size": self.micro_batch_size,
            "eval_every": self.eval_every,
            "eval_batches": self.eval_batches,
            "threads": self.threads,
            "optim.warmup_steps": self.optim.warmup_steps,
            "optim.decay_steps": self.optim.decay_steps,
            "checkpoint.every": self.checkpoint.every,
            "optim.weight_decay": self.optim.weight_decay,
            "optim.grad_clip": self.optim.grad_clip,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ValueError(f"config {key}={value!r} is invalid; it must be >= 0")
        if self.param_dtype == "bf16" and self.precision not in ("auto", "bf16"):
            raise ValueError(f"config param_dtype=bf16 needs precision bf16 (or auto), got {self.precision!r}")
        if not self.optim.lr > 0:
            raise ValueError(f"config optim.lr={self.optim.lr!r} is invalid; it must be > 0")
        if not 0 < self.activation_memory_budget <= 1:
            raise ValueError(
                f"config activation_memory_budget={self.activation_memory_budget!r} is invalid; it must be in (0, 1]"
            )
        if not 0 < self.data.val_fraction < 1:
            raise ValueError(f"config data.val_fraction={self.data.val_fraction!r} is invalid; it must be in (0, 1)")

    def to_dict(self) -> dict:
        """Every field as nested plain dicts (the layout of the YAML files)."""
        return config_loader.to_dict(self)

    def save(self, path: str | Path) -> None:
        """Write the config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_config(paths: Sequence[str | Path] = (), overrides: dict | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from YAML files (later ones win) and then ``overrides``.

    Values are converted and checked by field type (:mod:`retnet.utils.config_loader`), then by
    :meth:`TrainConfig.validate`.

    Raises:
        FileNotFoundError: a missing YAML file.
        ValueError: unknown keys, bad values, or a YAML file that is not a mapping.
    """
    return config_loader.load(TrainConfig, paths, overrides)


def describe_keys() -> list[str]:
    """``key=default`` for every config key (dotted), for ``retnet train --help``."""
    return config_loader.describe_keys(TrainConfig())
