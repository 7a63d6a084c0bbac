"""The size-scaling study (the paper's Figure 5): RetNet and the Transformer++ at several sizes, one token rule.

**The ladder.** ``scaling.sizes`` lists depths L; the width is ``d = scaling.aspect × L`` (a fixed aspect ratio d/L,
so width and depth grow together and non-embedding parameters grow about as L³). Heads keep the head dims of the
config's rows: RetNet's q/k head dim is ``model.hidden_size / model.num_heads`` and the attention head dim is
``model.hidden_size / baseline.num_heads``; ``model.value_dim`` and ``model.ffn_dim`` keep their ratio to the width.
Each size is an ordinary comparison at that shape: :func:`~retnet.compare.archs.match_parameters` matches the
Transformer's non-embedding parameters to RetNet's by its FFN width (within 2 %).

**The token rule.** Every size trains ``scaling.tokens_per_parameter × N`` tokens (N: RetNet's non-embedding
parameters at that size, the count both architectures are matched to), rounded to whole steps of
``batch_size × data.seq_len``. Warm-up is ``scaling.warmup_fraction`` of the steps; the schedule, learning rate
and data are the config's (``optim.lr`` for every size).

**Seeds.** Every size trains the config's seeds (``compare.seeds`` or ``[seed]``); the smallest size trains at
least ``scaling.seeds_at_smallest`` of them (the config's, then the next unused integers). The seed spread of every
size with two or more seeds, pooled, is the noise of the fits (:mod:`retnet.compare.scaling_report`).

**Runs.** Each (architecture, size, seed) is a model run of the results file (:mod:`retnet.compare.entries`), keyed
by its own resolved config (the size's model and step count included, the ``scaling`` section itself not), so a
study spreads over several commands and finished runs are skipped; ``only`` selects architectures and
``only_sizes`` sizes for one call. The compiler's cache is cleared before each size trains: compiled blocks of
earlier sizes never run again, and every size adds graphs of new shapes to the same functions, so a ladder in one
process would otherwise run into the compiler's recompilation limit (8 per function). Folders:
``<out_dir>/scaling/L<depth>-d<width>/<arch>/`` (``seed-<k>/`` for another seed). The report
(:mod:`retnet.compare.scaling_report`) is rebuilt from the results file after every call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .archs import ENTRIES, MatchedModel, match_parameters

logger = logging.getLogger(__name__)

EMPTY_LADDER = "config scaling.sizes is empty; name the depths of the ladder (e.g. --scaling.sizes=[1,2,3,4])"


@dataclass
class ScalingSection:
    """The size-scaling study (``retnet compare --scaling``).

    Attributes:
        sizes: depths L of the ladder, increasing (at least two; four or more for the study proper).
        aspect: width per layer: each size's width is ``aspect × L``.
        tokens_per_parameter: training tokens per non-embedding parameter, the same at every size.
        archs: the architectures compared (the first two are the crossing's pair).
        seeds_at_smallest: at least this many seeds at the smallest size.
        warmup_fraction: warm-up steps as a share of each size's steps.
        crossing_max: the largest parameter count (and FLOPs, scaled alike) at which a meeting point of the fitted
            lines still counts as a crossing; the smallest is the ladder's smallest size.
        mc_draws: Monte Carlo draws of the fits' uncertainty.
        mc_seed: the seed of those draws.
    """

    sizes: list[int] = field(default_factory=list)
    aspect: int = 64
    tokens_per_parameter: float = 20.0
    archs: list[str] = field(default_factory=lambda: ["transformer", "retnet"])
    seeds_at_smallest: int = 2
    warmup_fraction: float = 0.05
    crossing_max: float = 1e12
    mc_draws: int = 2000
    mc_seed: int = 0

    def validate(self) -> None:
        """Check the values (an empty ``sizes`` is allowed: no study).

        Raises:
            ValueError: the first bad value, named by its dotted key.
        """
        if self.sizes and (any(s < 1 for s in self.sizes) or sorted(set(self.sizes)) != list(self.sizes)):
            raise ValueError(f"config scaling.sizes={self.sizes} is invalid; give increasing depths >= 1")
        if len(self.sizes) == 1:
            raise ValueError(f"config scaling.sizes={self.sizes} is invalid; a ladder needs two or more sizes")
        unknown = [a for a in self.archs if a not in ENTRIES]
        if unknown or len(self.archs) < 2 or len(set(self.archs)) != len(self.archs):
            raise ValueError(
                f"config scaling.archs={self.archs} is invalid; give two or more distinct of {', '.join(ENTRIES)}"
            )
        for name in ("aspect", "seeds_at_smallest", "mc_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"config scaling.{name}={getattr(self, name)!r} is invalid; it must be >= 1")
        if not (self.tokens_per_parameter > 0 and math.isfinite(self.tokens_per_parameter)):
            raise ValueError(f"config scaling.tokens_per_parameter={self.tokens_per_parameter!r} is invalid; "
                             "it must be > 0")  # fmt: skip
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(
                f"config scaling.warmup_fraction={self.warmup_fraction!r} is invalid; it must be in [0, 1)"
            )
        if not self.crossing_max > 1:
            raise ValueError(f"config scaling.crossing_max={self.crossing_max!r} is invalid; it must be > 1")


@dataclass
class Size:
    """One rung of the ladder.

    Attributes:
        label: ``L<depth>-d<width>`` (its folder).
        depth: L.
        width: d.
        config: the comparison config of this size (its model, heads, steps and warm-up).
        matched: the architectures at this size, matched to RetNet's non-embedding parameters.
        parameters: RetNet's non-embedding parameters N (the tokens rule's N).
        tokens: training tokens, ``steps × batch_size × seq_len``.
    """

    label: str
    depth: int
    width: int
    config: object
    matched: dict[str, MatchedModel]
    parameters: int
    tokens: int


def steps_for(parameters: int, tokens_per_parameter: float, tokens_per_step: int) -> int:
    """Steps that train ``tokens_per_parameter × parameters`` tokens, rounded to whole steps (at least one)."""
    return max(1, round(tokens_per_parameter * parameters / tokens_per_step))


def _shape(config, depth: int) -> dict:
    """The model and baseline fields of the rung of depth ``depth`` (the aspect and head rules of the docstring)."""
    s, m = config.scaling, config.model
    if m.hidden_size is None or m.num_heads is None:
        raise ValueError("a scaling study needs model.hidden_size and model.num_heads set (they fix the head dims)")
    head_dim = m.hidden_size // m.num_heads
    attention_dim = m.hidden_size // config.baseline.num_heads
    width = s.aspect * depth
    if width % head_dim or width % attention_dim:
        raise ValueError(
            f"config scaling.aspect={s.aspect}: width {width} (depth {depth}) is not a multiple of RetNet's head dim "
            f"{head_dim} and the attention head dim {attention_dim}; pick an aspect that is"
        )
    heads = width // head_dim
    fields = {"hidden_size": width, "num_hidden_layers": depth, "num_heads": heads}
    for name in ("value_dim", "ffn_dim"):
        value = getattr(m, name)
        if value is not None:
            scaled = value * width / m.hidden_size
            if scaled != int(scaled) or int(scaled) % heads:
                raise ValueError(f"model.{name}={value} does not scale to width {width} in {heads} heads")
            fields[name] = int(scaled)
    return {"model": fields, "baseline": {"num_heads": width // attention_dim}, "width": width}


def ladder(config, vocab_size: int) -> list[Size]:
    """The sizes of ``config.scaling``, each with its matched models and token budget.

    Args:
        config: a :class:`~retnet.compare.CompareConfig` with ``scaling.sizes`` set.
        vocab_size: the tokenizer's vocabulary size.

    Raises:
        ValueError: an empty ladder, a width the head dims do not divide, or sizes that cannot be matched.
    """
    import torch

    from ..training.build import model_config

    s = config.scaling
    if not s.sizes:
        raise ValueError(EMPTY_LADDER)
    tokens_per_step = config.batch_size * config.data.seq_len
    out = []
    for depth in s.sizes:
        shape = _shape(config, depth)
        sized = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, **shape["model"]),
            baseline=dataclasses.replace(config.baseline, **shape["baseline"]),
        )
        with torch.device("meta"):
            matched = match_parameters(
                s.archs, model_config(sized.model, vocab_size), sized.baseline,
                ffn_multiple=config.compare.ffn_multiple, small_head_factor=config.compare.small_head_factor,
            )  # fmt: skip
        n = next(iter(matched.values())).target
        steps = steps_for(n, s.tokens_per_parameter, tokens_per_step)
        optim = dataclasses.replace(config.optim, warmup_steps=round(s.warmup_fraction * steps))
        sized = dataclasses.replace(sized, steps=steps, optim=optim)
        out.append(Size(f"L{depth}-d{shape['width']}", depth, shape["width"], sized, matched, n, sized.tokens))
    return out


def _recorded_vocab(results, default: int) -> int:
    """The vocabulary of the scaling runs a results file holds (their data's tokenizer), else ``default``."""
    record = next(iter(results.records(role="scaling")), None)
    return default if record is None else int(record["run"]["model_config"]["vocab_size"])


def seeds_at(config, smallest: bool) -> list[int]:
    """The seeds of a size: the config's, and at the smallest size more up to ``scaling.seeds_at_smallest``."""
    seeds = list(config.seeds)
    if smallest:
        k = 0
        while len(seeds) < config.scaling.seeds_at_smallest:
            if k not in seeds:
                seeds.append(k)
            k += 1
    return seeds


def run_scaling(
    config,
    *,
    only: list[str] | None = None,
    only_sizes: list[int] | None = None,
    command: str = "",
    prepare_only: bool = False,
    report_only: bool = False,
) -> dict:
    """Run (or resume) the scaling study of ``config.scaling`` and write its report; returns the report document.

    Args:
        config: the comparison config (``scaling.sizes`` set).
        only: train only these of ``scaling.archs`` in this call (the report lists every finished run).
        only_sizes: train only the sizes of these depths (of ``scaling.sizes``) in this call.
        command: the command line, recorded in the report.
        prepare_only: stop after preparing the data.
        report_only: train nothing; rebuild the report from the runs the results file holds.

    Raises:
        ValueError: an empty ladder, ``only`` naming an architecture outside ``scaling.archs``, a run folder holding
            a different recipe, or sizes that cannot be matched.
    """
    from ..data import PreparedDataset
    from ..utils.environment import environment_stamp
    from .entries import ResultsFile
    from .runner import _check_resume, _corpus_slug, _Entries, _variant, prepare_data
    from .scaling_report import write_scaling_report

    s = config.scaling
    if not s.sizes:
        raise ValueError(EMPTY_LADDER)
    outside = [a for a in only or [] if a not in s.archs]
    if outside:
        raise ValueError(f"--only names {outside}, which scaling.archs ({', '.join(s.archs)}) does not hold")
    outside = [d for d in only_sizes or [] if d not in s.sizes]
    if outside:
        raise ValueError(f"--sizes names depths {outside}, which scaling.sizes ({s.sizes}) does not hold")
    run_dir = Path(config.compare.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(config.compare.results_file or run_dir / "entries.json")
    meta = {"preset": config.compare.preset, "command": command, "in_domain": _corpus_slug(config.data.corpus),
            "scaling": dataclasses.asdict(s)}  # fmt: skip
    if report_only:  # nothing is read but the results file (and the last report's environment and command)
        in_dir = ood_dirs = None
        vocab = _recorded_vocab(results, config.data.vocab_size)
        old = run_dir / "scaling.json"
        kept = json.loads(old.read_text()).get("meta", {}) if old.is_file() else {}
        meta = {**meta, **{k: v for k, v in kept.items() if k in ("command", "environment")}, "report_command": command}
    else:
        _check_resume(config, run_dir)  # the shared recipe and data must not change under a run folder
        in_dir, ood_dirs = prepare_data(config, run_dir)
        meta["environment"] = environment_stamp()
        if prepare_only:
            return {"meta": meta, "sizes": []}
        vocab = PreparedDataset(in_dir).tokenizer.vocab_size
    sizes = ladder(config, vocab)
    selected = [a for a in s.archs if a in only] if only else list(s.archs)
    plan = []  # (size, arch, seed, key)
    for i, size in enumerate(sizes):
        entries = _Entries(size.config, run_dir / "scaling" / size.label, size.matched, in_dir, ood_dirs)
        entries.results = results  # one file for every size (and for the comparison's own runs)
        trains = not report_only and (not only_sizes or size.depth in only_sizes)
        if trains:
            torch._dynamo.reset()  # the earlier sizes' compiled graphs (see the module docstring)
        for arch in s.archs:
            for seed in seeds_at(size.config, smallest=i == 0):
                variant = _variant(size.config, seed, size.config.optim.lr)
                plan.append((size, arch, seed, entries.key(variant, arch)[0]))
                if trains and arch in selected:
                    entries.run(variant, arch, "scaling")
    planned = [{"size": z.label, "depth": z.depth, "width": z.width, "parameters": z.parameters, "tokens": z.tokens,
                "steps": z.config.steps, "arch": a, "seed": seed, "key": key} for z, a, seed, key in plan]  # fmt: skip
    (run_dir / "scaling_plan.json").write_text(json.dumps(planned, indent=1) + "\n")
    rows = []
    for size, arch, seed, key in plan:
        record = results.get(key)
        rows.append({"size": size.label, "depth": size.depth, "width": size.width, "arch": arch, "seed": seed,
                     "key": key, "result": None if record is None else record["result"]})  # fmt: skip
    return write_scaling_report(run_dir, rows, meta)
