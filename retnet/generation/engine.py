"""A decoding engine: static per-layer state, on-device sampling and one CUDA graph per token (docs/spec.md §5).

The model stays a module; the engine owns everything per request. At construction it preallocates, for
``max_batch`` slots, every layer's decoding state (RetNet: the retention state, constant in the length; the
Transformer baseline: a KV cache of ``max_len`` positions), a logits buffer, the token buffer and the per-slot
flags. A step then

1. picks every slot's next token from the logits buffer on the device (:func:`~.sampling.choose_tokens`: greedy,
   temperature, top-k, top-p, repetition penalty; counter-based noise per request, no generator state);
2. replaces the tokens of finished slots by the pad id and marks slots that produced a stop token as finished;
3. runs all layers on those tokens, each mixer updating its state in place (``decode_step_``), and writes the
   new logits into the buffer.

Nothing in a step reads a value back to the host or allocates buffers that depend on the data, so on CUDA the
whole step is captured once in a CUDA graph and replayed per token (``cuda_graph=False``, and every CPU run,
execute the same step eagerly). Slots are filled and released independently (continuous batching): :meth:`add`
prefills new prompts into free slots with the chunkwise form, in pieces of ``prefill_chunk`` tokens that continue
from the state, while other slots keep decoding. Each slot carries its own position, so prompts of different
lengths need no padding. The host learns about stop tokens only when it reads the tokens or flags back
(:meth:`poll`), which a caller does every few steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .decoder_parts import DecoderParts, decoder_parts
from .fused_step import AUTO_FUSED_BATCH, FusedDecodeStep, FusedLaunches, fused_step_unsupported
from .sampling import SamplingConfig, choose_tokens, sampling_key

logger = logging.getLogger(__name__)

_WARMUP_STEPS = 2


class StepBuffers(NamedTuple):
    """The engine's per-slot device buffers that a step reads and writes (fixed addresses, for the CUDA graph).

    Attributes:
        logits: ``(B, vocab)`` next-token logits of each slot.
        tokens: ``(B,)`` the last step's tokens.
        finished: ``(B,)`` bool: the slot produced a stop token, ran out of budget, or is free.
        keys: ``(B,)`` int64 noise keys of the slots' requests.
        counts: ``(B,)`` int64 tokens drawn per request.
        seen: ``(B, vocab)`` bool tokens in each sequence (repetition penalty), or None.
        eos: ``(E,)`` int64 stop tokens (E may be 0).
    """

    logits: torch.Tensor
    tokens: torch.Tensor
    finished: torch.Tensor
    keys: torch.Tensor
    counts: torch.Tensor
    seen: torch.Tensor | None
    eos: torch.Tensor


def _block_step(block, x: torch.Tensor, state, rotation=None) -> torch.Tensor:
    """One layer for one token of every slot, its state updated in place: ``(B, D) -> (B, D)``.

    The unit ``torch.compile`` compiles: every layer has the same code and shapes, so one compiled graph serves
    all of them (seconds to compile, where the unrolled step of all layers takes minutes). ``rotation`` is the
    step's shared rotation table (:func:`_rotation_builder`), an ordinary tensor input of that graph.
    """
    extra = {} if rotation is None else {"rotation": rotation}
    h = x + block.mixer.decode_step_(block.mixer_norm(x), state, **extra)
    ffn_norm = block.ffn_norm(h)
    return h + (block.ffn.decode(ffn_norm) if hasattr(block.ffn, "decode") else block.ffn(ffn_norm))


def _block_prefill(block, x: torch.Tensor, state, rows: torch.Tensor, start: int, chunk_size: int, rotation=None):
    """One layer over a prompt piece of rows ``rows`` at position ``start``, their state written in place:
    ``(n, t, D) -> (n, t, D)``.

    The unit the compiled prefill compiles (with dynamic shapes: one graph serves every layer and, past the first
    recompilation, every piece length and batch of rows; a new sequence and a continued one are two graphs).
    """
    extra = {} if rotation is None else {"rotation": rotation}
    y = block.mixer.prefill_decode_state_(block.mixer_norm(x), state, rows, start, chunk_size=chunk_size, **extra)
    h = x + y
    return h + block.ffn(block.ffn_norm(h))


def _prompt_ids(i: int, prompt, vocab: int) -> torch.Tensor:
    """Prompt ``i`` (a sequence of ints or an integer tensor) as a non-empty ``(T,)`` int64 CPU tensor."""
    if isinstance(prompt, torch.Tensor):
        ids = prompt.detach().flatten()
    else:
        try:
            items = list(prompt)
        except TypeError:
            raise ValueError(f"prompt {i} is {prompt!r}: give each prompt as a sequence of token ids") from None
        try:  # through NumPy, which infers the type several times faster than torch.as_tensor from a list
            ids = torch.from_numpy(np.asarray(items)) if items else torch.empty(0, dtype=torch.long)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"prompt {i}: token ids must be ints in [0, {vocab}), got {items[:3]}") from None
    if ids.numel() == 0:
        raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(f"prompt {i}: token ids must be ints in [0, {vocab}), got {ids.dtype} values")
    return ids.to("cpu", torch.long)


def _rotation_builder(parts: DecoderParts):
    """``positions (B, T) -> rotation table`` shared by every mixer of the model (RetNet's
    ``MultiScaleRetention.rotation_table``), or None where the mixers share none (each rotates on its own, as the
    Transformer baseline does)."""
    mixers = [block.mixer for block in parts.blocks]
    if not mixers or not all(type(m) is type(mixers[0]) for m in mixers):
        return None
    return getattr(mixers[0], "rotation_table", None)


def _engine_step(
    parts: DecoderParts,
    states: list,
    buffers: StepBuffers,
    sampling: SamplingConfig,
    pad_token_id: int,
    block_step=_block_step,
    head_step=None,
) -> None:
    """One step for every slot: pick tokens from the logits buffer, then run all layers on them, in place.

    A free function of its buffers (not a method), so that a compiled ``block_step`` guards on shapes, not on
    the engine object, and engines of one shape share the compiled code. ``head_step(x, logits)`` writes the
    final norm and LM head of ``x`` into the logits buffer (default: ``parts.head``, copied).
    """
    token = choose_tokens(buffers.logits, sampling, buffers.seen, buffers.keys, buffers.counts)  # (B,)
    token = torch.where(buffers.finished, pad_token_id, token)
    buffers.tokens.copy_(token)
    buffers.counts.add_(1)
    if buffers.seen is not None:
        buffers.seen.scatter_(1, token[:, None], True)
    if buffers.eos.numel():
        buffers.finished.logical_or_((token[:, None] == buffers.eos[None, :]).any(-1))
    x = parts.embed(token)  # (B, D)
    # Built once for all layers from the device-side positions before any layer advances them, inside the
    # captured step (not baked into it).
    build = _rotation_builder(parts)
    rotation = None if build is None else build(states[0].position[:, None])  # from (B, 1) positions
    for block, state in zip(parts.blocks, states):
        x = block_step(block, x, state, rotation)
    if head_step is None:
        buffers.logits.copy_(parts.head(x))  # (B, vocab)
    else:
        head_step(x, buffers.logits)


def _int_arg(name: str, value, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class DecodeEngine:
    """Batched decoding with static state, on-device sampling and (on CUDA) a CUDA-graph step.

    Args:
        model: a :class:`retnet.RetNetForCausalLM` or :class:`retnet.baselines.MixerLM` whose mixers implement
            the static decoding protocol (see :mod:`retnet.generation.decoder_parts`).
        max_batch: number of slots (sequences decoded together).
        max_len: longest sequence (prompt + generated tokens) a slot may hold.
        sampling: how tokens are picked (default greedy); fixed for the engine's lifetime (it is captured).
        eos_token_id: stop token(s); a slot that produced one is finished and then emits ``pad_token_id``.
        pad_token_id: filler for finished slots (default: the first stop token, else 0).
        dtype: cast the model to this dtype once, in place, before allocating (e.g. ``torch.bfloat16``);
            None keeps the model's dtype.
        chunk_size: chunk size of the chunkwise prefill (default: the model config's, else 64).
        prefill_chunk: prefill prompts in pieces of at most this many tokens, each continuing from the state
            (None: one piece).
        cuda_graph: capture the step in a CUDA graph (default: True on CUDA; must be False off CUDA).
        compile: also compile each layer's step and each layer's prefill with ``torch.compile`` (True: inductor,
            which fuses the elementwise work between the matrix products into few kernels; or the name of a
            ``torch.compile`` backend): one step graph for all layers, then captured in the CUDA graph like the
            eager step, and prefill graphs with dynamic shapes for all layers, prompt lengths and batches.
        compile_options: inductor options for those compilations (e.g. ``{"coordinate_descent_tuning": True}``,
            which also turns batch-1 matrix-vector products into tuned Triton reductions fused with their
            neighbours); None: inductor's defaults.
        pack_weights: stack the projections that read the same input (RetNet's q/k/v/g, the Transformer's q/k/v,
            a GLU's two input matrices) into one weight each, in place, so a step reads them with one product
            (the parameters become views; values and memory unchanged; see :mod:`retnet.layers.packing`).
        fused: run each RetNet layer's step as five fused Triton kernels (:mod:`retnet.generation.fused_step`;
            batches up to 4, stacked weights). None (default): on CUDA up to batch 2, where it is the faster step,
            whenever it can serve the model, else the default step (the reason is logged); True, or a
            :class:`~.fused_step.FusedLaunches` to launch its products differently: required (ValueError if it
            cannot serve); False: never. With ``compile`` the fused step itself is not compiled (its prefill
            still is).

    Raises:
        ValueError: on bad sizes, ids or dtype, ``cuda_graph=True`` off CUDA, or a model in training mode with
            dropout.
        TypeError: if the model has no static decoding protocol.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        max_batch: int,
        max_len: int,
        sampling: SamplingConfig | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        dtype: torch.dtype | None = None,
        chunk_size: int | None = None,
        prefill_chunk: int | None = None,
        cuda_graph: bool | None = None,
        compile: bool | str = False,
        compile_options: dict | None = None,
        pack_weights: bool = True,
        fused: bool | FusedLaunches | None = None,
    ):
        self.max_batch = _int_arg("max_batch", max_batch, 1)
        self.max_len = _int_arg("max_len", max_len, 1)
        self.sampling = sampling if sampling is not None else SamplingConfig()
        if not isinstance(self.sampling, SamplingConfig):
            raise TypeError(f"sampling must be a SamplingConfig, got {type(self.sampling).__name__}")
        self.parts: DecoderParts = decoder_parts(model)
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if model.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
            raise ValueError("the model is in training mode with dropout: call model.eval() before decoding")
        param = next(model.parameters())
        self.model, self.device = model, param.device
        default_chunk = getattr(model.config, "chunk_size", 64)
        self.chunk_size = _int_arg("chunk_size", default_chunk if chunk_size is None else chunk_size, 1)
        self.prefill_chunk = None if prefill_chunk is None else _int_arg("prefill_chunk", prefill_chunk, 1)
        if cuda_graph is None:
            cuda_graph = self.device.type == "cuda"
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA model, got one on {self.device}")
        eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        vocab = self.parts.vocab_size
        for name, ids in (("eos_token_id", eos), ("pad_token_id", [] if pad_token_id is None else [pad_token_id])):
            if any(not isinstance(i, int) or not 0 <= i < vocab for i in ids):
                raise ValueError(f"{name} must be token ids in [0, {vocab}), got {ids}")
        self.eos_token_ids = eos
        self.pad_token_id = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        if dtype is not None:
            model.to(dtype)  # the one explicit cast, after every argument has been checked
        self.dtype = next(model.parameters()).dtype
        if pack_weights:
            for block in self.parts.blocks:
                for module in (block.mixer, block.ffn):
                    if callable(getattr(module, "pack_decode_weights_", None)):
                        module.pack_decode_weights_()

        B, dev = self.max_batch, self.device
        self.states = [
            b.mixer.allocate_decode_state(B, self.max_len, dev, self.dtype) for b in self.parts.blocks
        ]  # one per layer, fixed addresses
        logits_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        self.logits = torch.zeros(B, vocab, device=dev, dtype=logits_dtype)  # next-token logits per slot
        self.tokens = torch.zeros(B, device=dev, dtype=torch.long)  # the last step's tokens
        self.finished = torch.ones(B, device=dev, dtype=torch.bool)  # free slots count as finished
        self.keys = torch.zeros(B, device=dev, dtype=torch.long)  # per-request noise keys
        self.counts = torch.zeros(B, device=dev, dtype=torch.long)  # tokens drawn per request
        self.seen = (
            torch.zeros(B, vocab, device=dev, dtype=torch.bool) if self.sampling.repetition_penalty != 1.0 else None
        )
        self._eos = torch.tensor(eos, device=dev, dtype=torch.long)
        # Host bookkeeping (never read from the device): per slot, None if free, else [tokens held, budget left].
        self._slots: list[list[int] | None] = [None] * B
        self._buffers = StepBuffers(
            self.logits, self.tokens, self.finished, self.keys, self.counts, self.seen, self._eos
        )
        self._block_step, self._block_prefill, self._head_step = _block_step, _block_prefill, None
        self._fused = self._fused_step(fused)
        if compile:
            backend = "inductor" if compile is True else compile
            extra = {} if compile_options is None else {"options": dict(compile_options)}
            if self._fused is None:
                self._block_step = torch.compile(_block_step, backend=backend, fullgraph=True, dynamic=False, **extra)
            self._block_prefill = torch.compile(_block_prefill, backend=backend, fullgraph=True, **extra)
        if self._fused is not None:
            self._block_step, self._head_step = self._fused.block_step, self._fused.head_step
        self._step_fn = self._step_body
        self._graph = self._capture() if cuda_graph else None

    # ---- public API ----------------------------------------------------------------------------------------
    @property
    def free_slots(self) -> list[int]:
        """Indices of the slots that hold no request."""
        return [i for i, s in enumerate(self._slots) if s is None]

    @property
    def uses_fused_step(self) -> bool:
        """Whether each step runs the fused RetNet kernels (:mod:`retnet.generation.fused_step`)."""
        return self._fused is not None

    @property
    def uses_cuda_graph(self) -> bool:
        """Whether :meth:`step` replays a captured CUDA graph."""
        return self._graph is not None

    @torch.no_grad()
    def add(
        self,
        prompts: Sequence[Sequence[int] | torch.Tensor],
        *,
        seeds: Sequence[int] | None = None,
        max_new_tokens: int | Sequence[int] | None = None,
    ) -> list[int]:
        """Prefill prompts into free slots; their first tokens come with the next :meth:`step`.

        Prompts of equal length are prefilled together; every input is validated before any kernel runs.

        Args:
            prompts: token id sequences (lists or 1-D tensors), each non-empty.
            seeds: per-prompt sampling seeds (default 0); a request's tokens depend only on its prompt and seed,
                not on its slot or on the other requests.
            max_new_tokens: tokens each request may generate (one int for all, or one per prompt); default: up
                to ``max_len``.

        Returns:
            The slot of each prompt, in order.

        Raises:
            ValueError: more prompts than free slots, an empty prompt, a prompt (plus its budget) longer than
                ``max_len``, token ids outside the vocabulary, or mismatched ``seeds`` / ``max_new_tokens``.
        """
        rows = self._validate(prompts)
        free = self.free_slots
        if len(rows) > len(free):
            raise ValueError(f"{len(rows)} prompts but only {len(free)} free slots (max_batch {self.max_batch})")
        seeds = [0] * len(rows) if seeds is None else list(seeds)
        if len(seeds) != len(rows) or any(not isinstance(s, int) for s in seeds):
            raise ValueError(f"seeds must be {len(rows)} ints, one per prompt, got {seeds!r}")
        budgets = self._budgets(rows, max_new_tokens)
        slots = free[: len(rows)]
        by_length: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            by_length.setdefault(len(r), []).append(i)
        for members in by_length.values():
            ids = torch.stack([rows[i] for i in members]).to(self.device)  # (n, T)
            index = torch.tensor([slots[i] for i in members], dtype=torch.long).to(self.device)  # (n,)
            self._prefill(ids, index)
            self.keys.index_copy_(0, index, torch.tensor([sampling_key(seeds[i]) for i in members]).to(self.device))
        index = torch.tensor(slots, dtype=torch.long).to(self.device)
        self.counts.index_fill_(0, index, 0)
        self.finished.index_fill_(0, index, False)
        for slot, r, budget in zip(slots, rows, budgets):
            self._slots[slot] = [len(r), budget]
        for slot, budget in zip(slots, budgets):
            if budget == 0:
                self.finished[slot].fill_(True)
        return slots

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Pick one token for every slot and advance every layer's state by it.

        Returns:
            The ``(max_batch,)`` token buffer (valid until the next step; clone to keep it). Free and finished
            slots hold the pad id.
        """
        if self._graph is not None:
            self._graph.replay()
        else:
            self._step_fn()
        exhausted = []
        for slot, s in enumerate(self._slots):
            if s is not None and s[1] > 0:
                s[0] += 1
                s[1] -= 1
                if s[1] == 0:
                    exhausted.append(slot)
        for slot in exhausted:  # out of budget: later steps emit the pad id there (a fill, no host-to-device copy)
            self.finished[slot].fill_(True)
        return self.tokens

    def poll(self) -> list[bool]:
        """Each slot's finished flag (reads the device: call it every few steps, not every token)."""
        return self.finished.tolist()

    def release(self, slots: Sequence[int]) -> None:
        """Free slots for new prompts (their state is overwritten by the next :meth:`add`).

        Raises:
            ValueError: an index outside ``[0, max_batch)``.
        """
        slots = list(slots)
        if any(not isinstance(s, int) or not 0 <= s < self.max_batch for s in slots):
            raise ValueError(f"slots must be ints in [0, {self.max_batch}), got {slots}")
        for s in slots:
            self._slots[s] = None
            self.finished[s].fill_(True)

    def state_bytes(self) -> int:
        """Bytes of all layers' decoding state (retention states or KV caches) for the ``max_batch`` slots."""
        return sum(t.numel() * t.element_size() for state in self.states for t in state)

    # ---- internals -----------------------------------------------------------------------------------------
    def _validate(self, prompts) -> list[torch.Tensor]:
        """Each prompt as a ``(T,)`` int64 CPU tensor, checked with tensor operations (no loop over its tokens)."""
        if isinstance(prompts, torch.Tensor):
            prompts = list(prompts) if prompts.dim() == 2 else [prompts]
        vocab = self.parts.vocab_size
        rows = []
        for i, p in enumerate(prompts):
            ids = _prompt_ids(i, p, vocab)
            out_of_range = ids[(ids < 0) | (ids >= vocab)]
            if out_of_range.numel():
                raise ValueError(f"prompt {i}: token ids must lie in [0, {vocab}), got {out_of_range[:3].tolist()}")
            if len(ids) > self.max_len:
                raise ValueError(f"prompt {i} has {len(ids)} tokens, more than max_len {self.max_len}")
            rows.append(ids)
        if not rows:
            raise ValueError("no prompts given")
        return rows

    def _budgets(self, rows: list[torch.Tensor], max_new_tokens) -> list[int]:
        if max_new_tokens is None:
            return [self.max_len - len(r) for r in rows]
        budgets = [max_new_tokens] * len(rows) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        if len(budgets) != len(rows):
            raise ValueError(f"max_new_tokens must be one int or {len(rows)} ints, got {max_new_tokens!r}")
        for i, (r, n) in enumerate(zip(rows, budgets)):
            _int_arg("max_new_tokens", n, 0)
            if len(r) + n > self.max_len:
                raise ValueError(
                    f"prompt {i} has {len(r)} tokens and max_new_tokens {n}: {len(r) + n} > max_len {self.max_len}"
                )
        return budgets

    def _prefill(self, ids: torch.Tensor, index: torch.Tensor) -> None:
        """Prefill ``ids`` ``(n, T)`` into slots ``index``, piece by piece, and store the last logits."""
        T = ids.shape[1]
        piece = T if self.prefill_chunk is None else self.prefill_chunk
        build = _rotation_builder(self.parts)
        for start in range(0, T, piece):
            x = self.parts.embed(ids[:, start : start + piece])  # (n, t, D)
            extra = {}
            if build is not None:  # the rows' common positions start .. start + t − 1, (1, t)
                extra["rotation"] = build(torch.arange(start, start + x.shape[1], device=self.device)[None])
            for block, state in zip(self.parts.blocks, self.states):
                x = self._block_prefill(block, x, state, index, start, self.chunk_size, **extra)
        self.logits.index_copy_(0, index, self.parts.head(x[:, -1]).to(self.logits.dtype))  # (n, vocab)
        if self.seen is not None:
            self.seen.index_fill_(0, index, False)
            self.seen[index] = self.seen[index].scatter(1, ids, True)

    def _fused_step(self, fused: bool | FusedLaunches | None) -> FusedDecodeStep | None:
        """The fused step if it is asked for (or, with None, if it can serve at a batch where it is the faster step
        on CUDA), else None."""
        if fused is False:
            return None
        launches = fused if isinstance(fused, FusedLaunches) else None
        if fused is not None and fused is not True and launches is None:
            raise ValueError(f"fused must be True, False, None or a FusedLaunches, got {fused!r}")
        reason = fused_step_unsupported(self.parts, self.max_batch, self.device, self.dtype)
        if reason is None and not fused and self.max_batch > AUTO_FUSED_BATCH:
            reason = f"max_batch {self.max_batch} > {AUTO_FUSED_BATCH}, where the default step is as fast or faster"
        if reason is None and (fused or self.device.type == "cuda"):
            return FusedDecodeStep(self.parts, self.max_batch, launches)
        if fused:
            raise ValueError(f"fused=True, but the fused decode step cannot serve this engine: {reason}")
        if self.device.type == "cuda":
            logger.info("decoding engine: the default step, not the fused one: %s", reason)
        return None

    def _step_body(self) -> None:
        _engine_step(
            self.parts, self.states, self._buffers, self.sampling, self.pad_token_id, self._block_step, self._head_step
        )

    @torch.no_grad()
    def _capture(self) -> torch.cuda.CUDAGraph:
        """Warm the step up on a side stream (kernels compiled, caches filled), capture it, then clear the buffers
        the warm-up steps wrote (no slot holds a request yet, so nothing is lost)."""
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(_WARMUP_STEPS):
                self._step_fn()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step_fn()
        for buffer in (*(t for state in self.states for t in state), self.logits, self.tokens, self.counts):
            buffer.zero_()
        self.finished.fill_(True)
        if self.seen is not None:
            self.seen.zero_()
        logger.info(
            "decoding engine: step captured in a CUDA graph (%d slots, max_len %d)", self.max_batch, self.max_len
        )
        return graph
