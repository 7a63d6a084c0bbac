"""``CompareConfig``: everything one comparison run fixes (paper §3.4): the architectures, the shared data,
tokenizer and evaluation corpora, the model size and the shared training recipe.

Loaded from a preset (:mod:`retnet.compare.presets`), then a YAML file (``configs/compare/*.yaml``), then
``section.field=value`` overrides, and written into the run folder, where a resumed run must find the same one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .archs import ENTRIES, BaselineOptions
from .presets import COMPARE_PRESETS


@dataclass(kw_only=True)
class ModelSection:
    """The RetNet row's size (paper flavour: LayerNorm, GroupNorm, gelu FFN, value dim and FFN 2d).

    Attributes:
        hidden_size: D.
        num_hidden_layers: L.
        num_heads: RetNet heads (q/k head dim D / H).
        flavour: RetNet flavour (``paper`` as in the paper's comparison).
        ffn_multiple: matched FFN widths are multiples of this.
    """

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_heads: int = 2
    flavour: str = "paper"
    ffn_multiple: int = 8


@dataclass(kw_only=True)
class DataSection:
    """Training corpus, tokenizer and evaluation corpora.

    Attributes:
        in_domain: corpus name or local path trained on; its held-out split is the in-domain test set.
        out_of_domain: corpora (names or paths) only evaluated on.
        tokenizer: ``byte`` or ``bpe`` (trained on the in-domain training split).
        vocab_size: BPE vocabulary size.
        cache_dir: where corpora are fetched to.
        val_fraction: held-out share of the in-domain corpus.
        ood_max_bytes: at most this many bytes of each out-of-domain corpus are tokenised.
        eval_tokens: at most this many tokens are scored per evaluation set.
        fetch: fetch named corpora that are missing (needs the network).
    """

    in_domain: str = "sotu"
    out_of_domain: list[str] = field(default_factory=lambda: ["shakespeare", "python-docs", "linux"])
    tokenizer: str = "byte"
    vocab_size: int = 256
    cache_dir: str = "~/.cache/retnet"
    val_fraction: float = 0.05
    ood_max_bytes: int = 2_000_000
    eval_tokens: int = 32_768
    fetch: bool = True


@dataclass(kw_only=True)
class TrainSection:
    """The recipe every architecture shares.

    Attributes:
        seq_len: T.
        batch_size: sequences per optimizer step.
        tokens: training tokens per model (rounded down to whole steps).
        lr: peak learning rate (AdamW β = (0.9, 0.98), linear warm-up, then ``schedule``).
        warmup_steps: warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clip.
        schedule: learning-rate decay after warm-up (``linear``, ``cosine`` or ``constant``), to 10 % of ``lr``.
        dtype: ``float32`` or ``bfloat16`` (autocast; parameters stay float32).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        log_every: record the training loss every this many steps.
        checkpoint_every: save a resumable checkpoint every this many steps.
        seed: seeds initialisation and data order (the same for every architecture).
    """

    seq_len: int = 128
    batch_size: int = 16
    tokens: int = 204_800
    lr: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 2.0
    schedule: str = "linear"
    dtype: str = "float32"
    device: str = "auto"
    log_every: int = 5
    checkpoint_every: int = 50
    seed: int = 0

    @property
    def steps(self) -> int:
        """Optimizer steps: whole batches within the token budget."""
        return self.tokens // (self.seq_len * self.batch_size)


@dataclass(kw_only=True)
class CompareConfig:
    """A full comparison.

    Attributes:
        preset: the preset it started from (recorded).
        archs: entries to train (see :data:`retnet.compare.archs.ENTRIES`), in order.
        out_dir: the run folder (results, checkpoints, prepared data).
        model, baseline, data, train: the sections above and :class:`~retnet.compare.archs.BaselineOptions`.
        trainer: raw :class:`retnet.training.TrainConfig` overrides applied after the ``train`` section (e.g.
            ``{"micro_batch_size": 16}`` for gradient accumulation at the 200M size).
    """

    preset: str = "tiny"
    archs: list[str] = field(default_factory=lambda: list(ENTRIES))
    out_dir: str = "runs/compare-tiny"
    model: ModelSection = field(default_factory=ModelSection)
    baseline: BaselineOptions = field(default_factory=BaselineOptions)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    trainer: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = [a for a in self.archs if a not in ENTRIES]
        if unknown or not self.archs:
            raise ValueError(f"unknown architecture(s) {unknown or '(none given)'}; expected some of {ENTRIES}")
        if len(set(self.archs)) != len(self.archs):
            raise ValueError(f"archs lists an architecture twice: {self.archs}")
        if self.data.tokenizer not in ("byte", "bpe"):
            raise ValueError(f"data.tokenizer must be 'byte' or 'bpe', got {self.data.tokenizer!r}")
        if len(self.data.out_of_domain) < 1:
            raise ValueError("data.out_of_domain needs at least one corpus")
        if self.train.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"train.dtype must be 'float32' or 'bfloat16', got {self.train.dtype!r}")
        if self.train.steps < 1:
            raise ValueError(f"train.tokens {self.train.tokens} is less than one batch")
        for name in ("seq_len", "batch_size", "warmup_steps", "log_every", "checkpoint_every", "eval_tokens"):
            section = self.data if name == "eval_tokens" else self.train
            value = getattr(section, name)
            if not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CompareConfig:
        """Build from nested dicts; unknown keys raise ``ValueError``."""
        sections = {"model": ModelSection, "baseline": BaselineOptions, "data": DataSection, "train": TrainSection}
        kwargs = {}
        for key, value in data.items():
            if key in sections:
                known = {f.name for f in dataclasses.fields(sections[key])}
                bad = sorted(set(value) - known)
                if bad:
                    raise ValueError(f"unknown field(s) in {key}: {', '.join(bad)}")
                kwargs[key] = sections[key](**value)
            elif key in ("preset", "archs", "out_dir", "trainer"):
                kwargs[key] = value
            else:
                raise ValueError(f"unknown CompareConfig field {key!r}")
        return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def load_compare_config(
    preset: str = "tiny", yaml_path: str | Path | None = None, overrides: list[str] | None = None
) -> CompareConfig:
    """Preset, then YAML file, then ``section.field=value`` overrides.

    Raises:
        ValueError: unknown preset, malformed override or invalid value.
    """
    if preset not in COMPARE_PRESETS:
        raise ValueError(f"unknown compare preset {preset!r}; valid presets: {', '.join(COMPARE_PRESETS)}")
    data = _merge({"preset": preset, "out_dir": f"runs/compare-{preset}"}, COMPARE_PRESETS[preset])
    if yaml_path is not None:
        import yaml

        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path} must hold a mapping")
        if "preset" in loaded and loaded["preset"] != preset:
            data = _merge({"preset": loaded["preset"], "out_dir": f"runs/compare-{loaded['preset']}"},
                          COMPARE_PRESETS[loaded["preset"]])  # fmt: skip
        data = _merge(data, loaded)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.field=value")
        parts = key.lstrip("-").split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(value)
    return CompareConfig.from_dict(data)


def save_config(config: CompareConfig, path: Path) -> None:
    """Write the config as JSON."""
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
