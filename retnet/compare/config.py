"""``CompareConfig``: everything one comparison run fixes (paper §3.4): the ordinary training config every entry
shares, plus what is compared and how it is scored.

A comparison config is a :class:`~retnet.training.TrainConfig` (same keys, same YAML layout, same
``--optim.lr=3e-4`` overrides as ``retnet train``) with more sections:

- ``compare``: the entries, the run folder and the out-of-domain evaluation (:class:`CompareSection`);
- ``baseline``: the baselines' own :class:`~retnet.baselines.MixerLMConfig` fields
  (:class:`~retnet.compare.archs.BaselineSettings`);
- ``sweep``: the learning-rate sweep (:class:`~retnet.compare.sweep.SweepSection`);
- ``probes``: the recall probes and length extrapolation (:class:`~retnet.compare.probes.ProbeSection`);
- ``scaling``: the size-scaling study of ``retnet compare --scaling`` (:class:`~retnet.compare.scaling.ScalingSection`).

The RetNet row is the model ``retnet train`` would build from the same config (``model.*``,
:func:`retnet.training.build.model_config`); the baselines copy its width, depth, norm and FFN kind and add the
``baseline`` fields. ``data.corpus`` is the in-domain corpus. Each entry trains with the same config, its
``run_dir`` and ``name`` set to the entry's folder and ``data.dataset`` to the prepared in-domain dataset.

Loaded with :mod:`retnet.utils.config_loader` from a preset (:mod:`retnet.compare.presets`), then a YAML file
(``configs/compare/*.yaml``), then overrides, and written into the run folder, where a resumed run must find the
same one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..training.config import TrainConfig
from ..utils import config_loader
from .archs import ENTRIES, PAPER_ENTRIES, BaselineSettings
from .presets import COMPARE_PRESETS, RECIPE
from .probes import ProbeSection
from .scaling import ScalingSection
from .sweep import SweepSection

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class CompareSection:
    """What is compared and how it is scored.

    Attributes:
        preset: the preset the config started from (recorded in the results).
        archs: entries to train (see :data:`retnet.compare.archs.ENTRIES`), in order.
        out_dir: the run folder (results, checkpoints, prepared data).
        out_of_domain: corpora (names or paths) only evaluated on.
        ood_max_bytes: at most this many bytes of each out-of-domain corpus are tokenised.
        eval_tokens: at most this many tokens are scored per evaluation set.
        ffn_multiple: matched FFN widths are multiples of this.
        small_head_factor: the "reduce head dimension" ablation divides RetNet's q/k head dim by this.
        bpe_train_bytes: a BPE tokenizer trains on at most this many bytes of the in-domain training documents (a
            fixed sample spread over the corpus past it; :func:`retnet.data.prepare.bpe_sample`).
        seeds: seeds trained for every architecture (empty: the config's ``seed`` only); the ``seed`` run lives in
            ``<out_dir>/<arch>/``, any other in ``<out_dir>/<arch>/seed-<k>/``.
        results_file: the file of finished model runs keyed by their config (:mod:`retnet.compare.entries`);
            empty is ``<out_dir>/entries.json``. Runs found there are skipped, on any machine.
    """

    preset: str = "tiny"
    archs: list[str] = field(default_factory=lambda: list(PAPER_ENTRIES))
    out_dir: str = "runs/compare-tiny"
    out_of_domain: list[str] = field(default_factory=lambda: ["shakespeare", "python-docs", "linux"])
    ood_max_bytes: int = 2_000_000
    eval_tokens: int = 32_768
    ffn_multiple: int = 8
    small_head_factor: int = 4
    bpe_train_bytes: int = 200_000_000
    seeds: list[int] = field(default_factory=list)
    results_file: str = ""


@dataclass
class CompareConfig(TrainConfig):
    """A full comparison: the shared :class:`~retnet.training.TrainConfig` plus ``compare`` and ``baseline``.

    Unlike ``retnet train``, a comparison does not compile by default: every architecture runs the same eager
    code path unless ``--compile=true`` asks for compiled blocks for all of them.
    """

    compile: bool | None = False
    compare: CompareSection = field(default_factory=CompareSection)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    sweep: SweepSection = field(default_factory=SweepSection)
    probes: ProbeSection = field(default_factory=ProbeSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)

    def validate(self) -> None:
        """Check the training values (:meth:`TrainConfig.validate`), then the comparison's.

        Raises:
            ValueError: the first bad value, named by its dotted key.
        """
        super().validate()
        c = self.compare
        unknown = [a for a in c.archs if a not in ENTRIES]
        if unknown or not c.archs:
            raise ValueError(
                f"unknown architecture(s) {unknown or '(none given)'} in compare.archs; "
                f"expected some of {', '.join(ENTRIES)}"
            )
        if len(set(c.archs)) != len(c.archs):
            raise ValueError(f"compare.archs lists an architecture twice: {c.archs}")
        if not c.out_of_domain:
            raise ValueError("compare.out_of_domain needs at least one corpus")
        if not c.out_dir:
            raise ValueError("compare.out_dir is empty; name the run folder")
        for name in ("ood_max_bytes", "eval_tokens", "ffn_multiple", "small_head_factor", "bpe_train_bytes"):
            if getattr(c, name) < 1:
                raise ValueError(f"config compare.{name}={getattr(c, name)!r} is invalid; it must be >= 1")
        if len(set(c.seeds)) != len(c.seeds) or any(s < 0 for s in c.seeds):
            raise ValueError(f"config compare.seeds={c.seeds} is invalid; give distinct seeds >= 0")
        self.sweep.validate()
        self.probes.validate()
        self.scaling.validate()
        for key in ("passkey_corpus", "extrapolation_corpus"):
            corpus = getattr(self.probes, key)
            if corpus and corpus not in c.out_of_domain:
                raise ValueError(
                    f"config probes.{key}={corpus!r} is invalid; give '' (in-domain) or one of compare.out_of_domain"
                )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"config precision={self.precision!r} is invalid for a comparison; expected one of "
                f"{', '.join(PRECISIONS)}"
            )
        if self.data.reset_at_boundaries:
            raise ValueError(
                "config data.reset_at_boundaries=True is invalid for a comparison: the baselines carry no document "
                "boundaries, so every entry trains on plain windows"
            )
        if self.run_dir or self.data.dataset:
            raise ValueError(
                "config run_dir and data.dataset are set per entry by the comparison; leave them empty "
                "(compare.out_dir is the run folder, data.corpus the in-domain corpus)"
            )

    def train_config(self, run_dir: str | os.PathLike, dataset_dir: str | os.PathLike) -> TrainConfig:
        """The ordinary :class:`TrainConfig` of one entry: this recipe with the entry's run folder and dataset.

        Args:
            run_dir: the trainer's run folder of the entry (its parent folder's name becomes the run name).
            dataset_dir: the prepared in-domain dataset.
        """
        values = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(TrainConfig)}
        values["run_dir"] = str(run_dir)
        values["name"] = Path(run_dir).parent.name
        values["data"] = dataclasses.replace(self.data, dataset=str(dataset_dir))
        return TrainConfig(**values)

    @property
    def seeds(self) -> list[int]:
        """The seeds every architecture trains with: ``compare.seeds``, or ``[seed]``."""
        return list(self.compare.seeds) or [self.seed]

    @property
    def tokens(self) -> int:
        """Training tokens per entry: ``steps × batch_size × data.seq_len``."""
        return self.steps * self.batch_size * self.data.seq_len


def load_compare_config(
    preset: str = "tiny",
    yaml_path: str | os.PathLike | None = None,
    overrides: Mapping | Sequence[str] | None = None,
) -> CompareConfig:
    """The shared recipe, then a preset, then a YAML file, then overrides.

    The preset is ``compare.preset`` of the overrides or of the YAML file when they name one, else ``preset``.

    Args:
        preset: preset name (see :data:`retnet.compare.presets.COMPARE_PRESETS`).
        yaml_path: optional YAML file in the layout of :class:`CompareConfig`.
        overrides: ``["--optim.lr=1e-3", ...]`` (as on the command line) or the nested mapping
            :func:`~retnet.utils.config_loader.parse_overrides` makes of them.

    Raises:
        FileNotFoundError: a missing YAML file.
        ValueError: an unknown preset, a malformed override, an unknown key or an invalid value.
    """
    if overrides is None:
        overrides = {}
    elif not isinstance(overrides, Mapping):
        overrides = config_loader.parse_overrides(list(overrides))
    loaded = config_loader.read_yaml(yaml_path) if yaml_path is not None else {}
    chosen = config_loader.merge(loaded, overrides).get("compare", {})
    name = chosen.get("preset", preset) if isinstance(chosen, Mapping) else preset
    if name not in COMPARE_PRESETS:
        raise ValueError(f"unknown compare preset {name!r}; valid presets: {', '.join(COMPARE_PRESETS)}")
    base = config_loader.merge(RECIPE, COMPARE_PRESETS[name])
    base = config_loader.merge(base, {"compare": {"preset": name}})
    return config_loader.build(CompareConfig, config_loader.merge(config_loader.merge(base, loaded), overrides))


def save_config(config: CompareConfig, path: str | os.PathLike) -> None:
    """Write the config as JSON."""
    Path(path).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
