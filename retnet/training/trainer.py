"""The training loop of ``retnet train``: one CPU to many GPUs, exact resume, NaN guard, metrics.

Per optimizer step: the rank's share of the global batch (a pure function of the step, see
:mod:`retnet.data.dataset`) is split into micro-batches; each contributes its summed next-token cross-entropy
divided by the global token count (times the world size, because DDP and FSDP average gradients over ranks),
so the gradient is the same for any rank count and accumulation split. Then the loss is all-reduced, gradients
are unscaled (fp16), clipped and applied where the loss and the norm are finite, decided on the device
(:mod:`retnet.training.step_stats`); the host reads each step's numbers while the next one runs and applies the
non-finite policy (stop or skip, never saved). The learning rate is a function of the step. Checkpoints
(:mod:`retnet.training.checkpoint`) hold everything needed to continue bit-for-bit on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch import nn
from torch._functorch import config as functorch_config
from tqdm import tqdm

from ..data import PreparedDataset, WindowSampler, make_batch
from ..model import RetNetConfig, RetNetForCausalLM
from . import checkpoint as ckpt_io
from .activation_checkpointing import checkpoint_blocks
from .artifacts import prompt_from_text
from .build import ensure_dataset, model_config, pick_device
from .config import TrainConfig
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    parallel_layout,
    resolve_strategy,
    teardown,
    wrap_model,
)
from .evaluate import EvalResult, evaluate
from .flops import matmul_params, peak_flops, train_flops_per_token
from .loss import lm_loss_sum
from .metrics import MetricsLogger, plot_loss_curve
from .optim import build_optimizer
from .run_lock import lock_run_dir
from .schedule import lr_at
from .step_stats import StepStats, step_if_finite

logger = logging.getLogger(__name__)

# The checkpoint file with the wall seconds the run had taken when it was saved (all calls that led to it).
ELAPSED_FILE = "elapsed.json"
# Steps after the first (which compiles and allocates) whose speed predicts the run's duration.
ESTIMATE_AFTER_STEPS = 10


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient and the policy says stop."""


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    val: EvalResult | None = None
    wall_s: float = 0.0
    total_wall_s: float = 0.0  # wall_s plus the earlier calls' time up to the checkpoint this call resumed from
    tokens_per_s: float = 0.0
    mfu: float | None = None
    skipped: int = 0
    rank: int = 0
    first_step_s: float = 0.0
    sample_prompt: str = ""  # the end-of-run sample's prompt (``cfg.sample_prompt`` or from the validation text)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` becomes bf16 on a GPU that supports it and fp32 elsewhere; other values pass through."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast_context(precision: str, device: torch.device):
    """The autocast context of a resolved precision (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def prepare_model(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """Parameter dtype, activation checkpointing and compilation of a freshly built model, in place.

    This is the fast training path of ``retnet train`` (and of ``benchmarks/train.py``, which times it): bf16
    parameters when ``cfg.param_dtype`` says so, per-block activation checkpointing, and every block compiled as
    one graph (``fullgraph``: a graph break is an error, not a silent slowdown) under the process-wide
    ``torch._functorch.config.activation_memory_budget``, set from ``cfg`` (read when each graph is built). Packed
    documents (``data.reset_at_boundaries``) are the exception: the op groups documents by length on the host, so
    each block compiles into graphs around that step instead of one.
    """
    if cfg.param_dtype == "bf16":
        model.to(torch.bfloat16)
    blocks = model.trunk.layers
    checkpoint_blocks(blocks, cfg.activation_checkpointing)
    if resolve_compile(cfg.compile, device):
        whole = not cfg.data.reset_at_boundaries and cfg.parallel.context == 1
        if not whole:
            logger.info("packed documents or context parallelism: compiled blocks break their graphs around that step")
        functorch_config.activation_memory_budget = cfg.activation_memory_budget
        for block in blocks:
            block.compile(backend=cfg.compile_backend, fullgraph=whole)
    return model


def resolve_compile(compile: bool | None, device: torch.device) -> bool:
    """``None`` compiles on CUDA and not on CPU (where compiling costs more than it saves at test sizes)."""
    return device.type == "cuda" if compile is None else compile


def resolve_run_dir(cfg: TrainConfig, resume: str | None, info: DistInfo) -> Path:
    """The run folder: from ``resume``, ``cfg.run_dir``, or ``runs/<name>-<timestamp>`` (chosen by rank 0).

    Raises:
        ValueError: ``cfg.run_dir`` already holds checkpoints and no resume was asked for.
    """
    if resume:
        path = Path(resume)
        return path.parent.parent if (path / ckpt_io.MANIFEST).is_file() else path
    if cfg.run_dir:
        path = Path(cfg.run_dir)
        if ckpt_io.list_checkpoints(path):
            raise ValueError(f"run folder {path} already has checkpoints; pass --resume {path} or another --run_dir")
        return path
    stamp = broadcast_object(datetime.now().strftime("%Y%m%d-%H%M%S"))
    return Path("runs") / f"{cfg.name}-{stamp}"


def train(
    cfg: TrainConfig, *, resume: str | None = None, model_factory=None, trust_checkpoint: bool = False
) -> TrainResult:
    """Run training as described by ``cfg`` (every rank of a ``torchrun`` job calls this).

    Args:
        cfg: the run's configuration.
        resume: a run folder (its latest valid checkpoint) or a checkpoint folder to continue from.
        model_factory: optional ``f(vocab_size) -> model`` replacing the RetNet built from ``cfg.model``; the
            model must follow RetNet's forward contract and carry a ``config`` with ``to_dict``/``save`` (the
            architecture comparison, :mod:`retnet.compare`, trains its baselines through this hook).
        trust_checkpoint: resume from a checkpoint in DCP's pickled format too (``docs/security.md``).

    Raises:
        NonFiniteLossError: a NaN/inf loss with ``nan_policy="stop"`` (or too many skipped steps).
        ValueError / FileNotFoundError: bad configuration, data or checkpoint.
    """
    device_type = "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"
    info = init_distributed(cfg.parallel.backend, device_type)
    try:
        return _Trainer(cfg, info, resume, model_factory, trust_checkpoint).run()
    finally:
        teardown()


class _Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo, resume: str | None, model_factory=None, trust=False) -> None:
        self.cfg, self.info, self.trust_checkpoint = cfg, info, trust
        self.device = pick_device(cfg, info)
        self.run_dir = resolve_run_dir(cfg, resume, info)
        self.resume_from = ckpt_io.resolve_checkpoint(resume) if resume else None
        # Sequences go to the data-parallel rows of the (dp, cp) mesh; a row's cp ranks split each sequence.
        self.layout = parallel_layout(info, cfg.parallel.context, self.device.type)
        per_rank, rem = divmod(cfg.batch_size, self.layout.dp_size)
        if rem:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {self.layout.dp_size} data ranks")
        self.micro = cfg.micro_batch_size or per_rank
        if per_rank % self.micro:
            raise ValueError(f"micro_batch_size {self.micro} does not divide the per-rank batch {per_rank}")
        self.data = PreparedDataset(ensure_dataset(cfg.data, info, cfg.seed))
        self.tokenizer = self.data.tokenizer
        self.sampler = WindowSampler(self.data.tokens("train"), cfg.data.seq_len, seed=cfg.seed)
        torch.manual_seed(cfg.seed)  # identical initialisation on every rank
        if model_factory is None:
            self.model_cfg = model_config(cfg.model, self.tokenizer.vocab_size)
            base = RetNetForCausalLM(self.model_cfg).to(self.device)
        else:
            base = model_factory(self.tokenizer.vocab_size).to(self.device)
            self.model_cfg = base.config
        self.model_cls = type(base)
        self.num_params = base.num_parameters()
        self.precision = resolve_precision(cfg.precision, self.device)
        if cfg.param_dtype == "bf16" and self.precision != "bf16":
            raise ValueError(f"param_dtype bf16 needs bf16 compute; {self.device.type} resolved to {self.precision}")
        self.compiled = resolve_compile(cfg.compile, self.device)
        prepare_model(base, cfg, self.device)
        self.strategy = resolve_strategy(cfg.parallel.strategy, info)
        self.model = wrap_model(base, self.strategy, info, self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.autocast = autocast_context(self.precision, self.device)
        self.step, self.tokens_seen, self.skipped, self.consecutive_skips = 0, 0, 0, 0
        # wall seconds of earlier calls up to the resumed checkpoint; the clock of this call starts in _run
        self.earlier_wall_s, self.started_at = 0.0, time.time()
        if isinstance(self.model_cfg, RetNetConfig):
            self.flops_per_token = train_flops_per_token(
                self.model_cfg, self.num_params, cfg.data.seq_len, cfg.form, cfg.chunk_size
            )
        else:  # another architecture (model_factory): the 6·N matrix-product estimate only
            self.flops_per_token = 6.0 * matmul_params(self.model_cfg, self.num_params)
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.peak = peak_flops(name, self.precision, cfg.peak_tflops)

    # ---- state -------------------------------------------------------------------------------------------
    def _write_extras(self, folder: Path) -> None:
        self.cfg.save(folder / "train_config.yaml")
        self.tokenizer.save(folder / "tokenizer")
        # kept beside trainer.json, not in it: a resumed run's loop state equals an unbroken run's, its clock does not
        elapsed = {"wall_s": self.earlier_wall_s + time.time() - self.started_at}
        (folder / ELAPSED_FILE).write_text(json.dumps(elapsed) + "\n")

    def _trainer_state(self) -> dict:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "skipped": self.skipped,
            "consecutive_skips": self.consecutive_skips,
            "scaler": self.scaler.state_dict(),
            "data": {"sampler_seed": self.cfg.seed, "windows_served": self.step * self.cfg.batch_size},
            "tokenizer_hash": self.tokenizer.fingerprint(),
        }

    def _save(self) -> None:
        ckpt_io.save_checkpoint(
            self.run_dir,
            self.step,
            self.model,
            self.optimizer,
            self._trainer_state(),
            info=self.info,
            model_config=self.model_cfg,
            write_extras=self._write_extras,
            keep=self.cfg.checkpoint.keep,
        )

    def _load(self, path: Path) -> None:
        state = ckpt_io.load_checkpoint(
            path,
            self.model,
            self.optimizer,
            info=self.info,
            model_config=self.model_cfg,
            trust_checkpoint=self.trust_checkpoint,
        )
        if state.get("tokenizer_hash") != self.tokenizer.fingerprint():
            raise ValueError(f"checkpoint {path} was trained with another tokenizer than dataset {self.data.path}")
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.skipped, self.consecutive_skips = state["skipped"], state["consecutive_skips"]
        elapsed = path / ELAPSED_FILE
        self.earlier_wall_s = json.loads(elapsed.read_text())["wall_s"] if elapsed.is_file() else 0.0
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        logger.info("resumed from %s at step %d", path, self.step)

    # ---- one step ----------------------------------------------------------------------------------------
    def _train_step(self) -> StepStats:
        """Queue one optimizer step; its numbers come back as :class:`StepStats`, read by :meth:`_book`."""
        cfg, info = self.cfg, self.info
        lr = lr_at(self.step, cfg.optim.decay_steps or cfg.steps, cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        windows = self.sampler.batch(self.step, cfg.batch_size, self.layout.dp_rank, self.layout.dp_size)
        scale = info.world_size / (cfg.batch_size * cfg.data.seq_len)
        n_micro = len(windows) // self.micro
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(n_micro):
            part = windows[i * self.micro : (i + 1) * self.micro]
            batch = make_batch(part, self.data.sep_id, cfg.data.reset_at_boundaries).to(self.device)
            batch, cp_group = self.layout.shard(batch)  # this rank's slice of the sequences
            last = i == n_micro - 1
            with self._sync_context(last), self.autocast:
                loss_sum = lm_loss_sum(self.model, batch, cfg.form, cfg.chunk_size, cfg.loss, cp_group)
            self.scaler.scale(loss_sum * scale).backward()
            total += loss_sum.detach().double()
        all_reduce_sum(total)
        loss = total / (cfg.batch_size * cfg.data.seq_len)
        if self.scaler.is_enabled():
            norm, taken = self._scaled_update(loss)
        else:  # no host read: the update is skipped on the device where the loss or the norm is not finite
            norm = self._clip()
            taken = step_if_finite(self.optimizer, loss, norm)
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats.start(self.step + 1, loss, norm, taken)

    def _clip(self) -> torch.Tensor:
        """Clip the gradients to ``optim.grad_clip`` (0: no clipping) and return their norm, 0-d."""
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def _scaled_update(self, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp16: a finite loss's gradients are unscaled, clipped and applied by the grad scaler, which skips the
        update on inf/NaN gradients itself and adjusts its scale; a non-finite loss skips the step before the
        scaler sees it (read on the host). Returns the norm and whether the step counts as taken."""
        finite = math.isfinite(loss.item())
        flag = torch.tensor(finite, device=loss.device)
        if not finite:
            return torch.full_like(loss, math.nan), flag
        self.scaler.unscale_(self.optimizer)
        norm = self._clip()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return norm, flag

    def _book(self, stats: StepStats) -> tuple[float, float]:
        """Count a step whose numbers have reached the host: a skipped one under ``nan_policy`` (stop: raise;
        skip: count it), a taken one ends a run of skips. Returns its loss and gradient norm (NaN for a
        non-finite loss, whose norm is not reported)."""
        loss, norm, taken = stats.read()
        if not math.isfinite(loss):
            self._non_finite(f"loss {loss}", stats.step)
            return loss, math.nan
        if not taken:
            self._non_finite(f"gradient norm {norm}", stats.step)
        else:
            self.consecutive_skips = 0
        return loss, norm

    def _non_finite(self, what: str, step: int) -> None:
        """A NaN/inf loss, or NaN/inf gradients without a grad scaler (which handles fp16 overflow itself): the
        step's update was not applied."""
        if self.cfg.nan_policy == "stop":
            raise NonFiniteLossError(
                f"non-finite {what} at step {step}; stopped without saving (last checkpoint kept). "
                "Lower optim.lr, use precision=fp32/bf16, or set nan_policy=skip"
            )
        self.skipped += 1
        self.consecutive_skips += 1
        logger.warning("skipping step %d: non-finite %s", step, what)
        if self.consecutive_skips > self.cfg.max_skips:
            raise NonFiniteLossError(f"{self.consecutive_skips} consecutive non-finite steps; stopping")

    def _sync_context(self, last: bool):
        if last:
            return contextlib.nullcontext()
        if self.strategy == "ddp":
            return self.model.no_sync()
        if self.strategy == "fsdp":
            return _fsdp_no_sync(self.model)
        return contextlib.nullcontext()

    def _evaluate(self) -> EvalResult:
        cfg = self.cfg
        return evaluate(
            self.model,
            self.data.tokens("val"),
            seq_len=cfg.data.seq_len,
            batch_size=max(self.micro, 1),
            token_bytes=self.tokenizer.token_bytes(),
            sep_id=self.data.sep_id,
            form=cfg.form,
            chunk_size=cfg.chunk_size,
            reset_at_boundaries=cfg.data.reset_at_boundaries,
            max_windows=cfg.eval_batches * cfg.batch_size,
            device=self.device,
            autocast=self.autocast,
            info=self.info,
        )

    # ---- loop --------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        with lock_run_dir(self.run_dir, self.info):  # one writer per run folder
            return self._run()

    def _run(self) -> TrainResult:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt_io.clean_partial(self.run_dir)
            cfg.save(self.run_dir / "train_config.yaml")
            self.tokenizer.save(self.run_dir / "tokenizer")
        barrier()
        if self.resume_from is not None:
            self._load(self.resume_from)
        metrics = MetricsLogger(self.run_dir, cfg.tensorboard, self.step) if info.is_main else None
        if info.is_main:
            logger.info(
                "run %s: %.2fM parameters, %d ranks (%s), %s on %s, %d steps of %d x %d tokens",
                self.run_dir, self.num_params / 1e6, info.world_size, self.strategy, cfg.precision,
                self.device.type, cfg.steps, cfg.batch_size, cfg.data.seq_len,
            )  # fmt: skip
        result = TrainResult(self.run_dir, cfg.steps, rank=info.rank)
        result.sample_prompt = cfg.sample_prompt or prompt_from_text(self.data.tokens("val")[:512], self.tokenizer)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not info.is_main)
        start, window_t, window_tokens = time.time(), time.time(), 0
        self.started_at = start
        train_time, train_tokens = 0.0, 0
        step_tokens = cfg.batch_size * cfg.data.seq_len
        self.model.train()
        first, estimate_at, estimate_t = True, -1, 0.0
        pending: list[StepStats] = []  # steps queued on the device whose numbers have not been read
        while self.step < cfg.steps:
            pending.append(self._train_step())
            self.step += 1
            end = self.step == cfg.steps
            log_now = self.step % cfg.log_every == 0 or end
            eval_now = bool(cfg.eval_every and self.step % cfg.eval_every == 0) or end
            save_now = bool(cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or end
            # The steps before this one are read while it runs; this one too where its numbers are used.
            read_all = first or log_now or eval_now or save_now or self.step == estimate_at
            for stats in pending if read_all else pending[:-1]:
                loss, grad_norm = self._book(stats)
                result.losses.append((stats.step, loss))
            pending = [] if read_all else pending[-1:]
            if first:  # compilation and the optimizer's state allocation happen in the first step
                first, result.first_step_s = False, time.time() - start
                estimate_at, estimate_t = self.step + ESTIMATE_AFTER_STEPS, time.time()
                if info.is_main:
                    extra = " (compilation included)" if self.compiled else ""
                    logger.info("first step took %.1f s%s", result.first_step_s, extra)
            if self.step == estimate_at and info.is_main:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                now = time.time()
                per_step = (now - estimate_t) / ESTIMATE_AFTER_STEPS
                total = now - start + per_step * (cfg.steps - self.step)
                logger.info("%.2f s/step: about %s min for the run at this speed", per_step, format_minutes(total))
            self.tokens_seen += step_tokens
            window_tokens += step_tokens
            if log_now:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                elapsed = max(time.time() - window_t, 1e-9)
                tok_s = window_tokens / elapsed
                train_time, train_tokens = train_time + elapsed, train_tokens + window_tokens
                mfu = tok_s * self.flops_per_token / (self.peak * info.world_size) if self.peak else None
                window_t, window_tokens = time.time(), 0
                if metrics:
                    extra = {"mfu": mfu} if mfu is not None else {}
                    lr = self.optimizer.param_groups[0]["lr"]
                    metrics.log("train", self.step, loss=loss, lr=lr, grad_norm=grad_norm, tok_per_s=tok_s, **extra)
                post = {"loss": f"{loss:.4f}", "tok/s": f"{tok_s:,.0f}"}
                if mfu is not None:
                    post["mfu"] = f"{100 * mfu:.1f}%"
                bar.set_postfix(post)
            bar.update(1)
            if eval_now:
                result.val = self._evaluate()
                if metrics:
                    metrics.log("val", self.step, **result.val.as_dict())
                    bar.write(
                        f"step {self.step}: val loss {result.val.loss:.4f}, ppl {result.val.perplexity:.2f}, "
                        f"bpb {result.val.bits_per_byte:.3f}"
                    )
            if save_now:
                self._save()
            if window_tokens == 0:
                window_t = time.time()  # tokens/s and MFU measure training only, not validation or saving
        bar.close()
        result.wall_s, result.skipped = time.time() - start, self.skipped
        result.total_wall_s = self.earlier_wall_s + result.wall_s
        # Throughput over the whole run, training steps only (validation and checkpoint time excluded).
        result.tokens_per_s = train_tokens / max(train_time, 1e-9)
        if self.peak:
            result.mfu = result.tokens_per_s * self.flops_per_token / (self.peak * info.world_size)
        self._export()
        if metrics:
            metrics.close()
            plot_loss_curve(self.run_dir)
        return result

    def _export(self) -> None:
        """Write the final weights as ``<run>/model`` (safetensors + config.json) for eval and generate."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.info.is_main:
            export = self.model_cls(self.model_cfg)
            export.load_state_dict(full)
            export.save_pretrained(self.run_dir / "model")
            self.tokenizer.save(self.run_dir / "model" / "tokenizer")
        barrier()


def format_minutes(seconds: float) -> str:
    """Minutes with one decimal below ten minutes, whole minutes above (``0.4``, ``3.5``, ``26``)."""
    minutes = seconds / 60
    return f"{minutes:.1f}" if minutes < 10 else f"{minutes:.0f}"


@contextlib.contextmanager
def _fsdp_no_sync(model: nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
