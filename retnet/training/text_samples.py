"""Text samples from a trained model: many prompts, several samples each, stop strings, one seed per sample.

What ``retnet generate`` runs. Every sample is a request of the :class:`~retnet.generation.engine.DecodeEngine`
(continuous batching: a finished sample frees its slot for the next one), so a sample's tokens depend only on its
prompt, the sampling settings and its own seed, never on the batch or slot it ran in. A model whose layers lack
the engine's static decoding protocol decodes each sample alone with the eager loop instead (the same
reproducibility per seed, other random numbers). The seeds are derived from one
base seed by :func:`sample_seeds`: distinct for every (prompt, sample) pair by construction, so two prompts never
share their random numbers (they did when every prompt reused the base seed).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields

from ..data import StreamDecoder
from ..generation.decoder_parts import decoder_parts
from ..generation.engine import DecodeEngine
from ..generation.sampling import SamplingConfig
from .artifacts import Trained

SEED_RANGE = 2**32  # seeds are 32-bit: the engine's noise key is a bijection of a 32-bit seed (no two seeds collide)
STOP_REASONS = ("stop_string", "end_of_text", "max_new_tokens")


@dataclass(frozen=True)
class Sample:
    """One generated continuation.

    Attributes:
        prompt: the prompt text.
        prompt_index: the prompt's position among the prompts (0-based).
        sample_index: which sample of that prompt (0-based).
        seed: the seed this sample was drawn with; ``retnet generate MODEL PROMPT --seed SEED`` repeats it.
        text: the continuation (without the prompt), cut before the first stop string.
        tokens: tokens generated for it (the end-of-text token or the token completing a stop string included).
        stop_reason: ``"stop_string"``, ``"end_of_text"`` (the model ended the document) or ``"max_new_tokens"``.
    """

    prompt: str
    prompt_index: int
    sample_index: int
    seed: int
    text: str
    tokens: int
    stop_reason: str

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def sample_seeds(seed: int, num_prompts: int, num_samples: int, first_prompt: int = 0) -> list[list[int]]:
    """The seed of every sample: sample j of prompt p gets ``(seed + p * num_samples + j) mod 2**32``.

    Distinct for all ``num_prompts * num_samples`` pairs as long as there are at most 2**32 of them, and the
    engine's noise key is a bijection of the seed, so no two samples share random numbers.

    Args:
        seed: the base seed, in ``[0, 2**32)``.
        num_prompts: how many prompts.
        num_samples: samples per prompt (≥ 1).
        first_prompt: the index of the first prompt (``retnet generate -i`` numbers its lines as they come).

    Returns:
        ``num_prompts`` lists of ``num_samples`` seeds.

    Raises:
        ValueError: a seed outside ``[0, 2**32)`` or a count below its minimum.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < SEED_RANGE:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    _check_int("num_prompts", num_prompts, 0)
    _check_int("num_samples", num_samples, 1)
    _check_int("first_prompt", first_prompt, 0)
    return [
        [(seed + (first_prompt + p) * num_samples + j) % SEED_RANGE for j in range(num_samples)]
        for p in range(num_prompts)
    ]


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def random_seed() -> int:
    """A fresh base seed from the operating system (reported with each sample, so any sample can be repeated)."""
    return random.SystemRandom().randrange(SEED_RANGE)


class StopText:
    """A sample's text as it streams in, cut before the first stop string.

    Text is released only once no stop string can still start in it, so what was released is never taken back.

    Args:
        stop: the stop strings (none: everything is released as it comes).
    """

    def __init__(self, stop: Sequence[str]):
        self.stop = list(stop)
        self._hold = max((len(s) for s in self.stop), default=1) - 1  # chars that may begin a stop string
        self.text = ""
        self._released = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        """Add ``piece``; return the newly released text (all of what precedes a stop string once one appears)."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self._hold)
        self.text += piece
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[: min(hits)], True
            return self._release(len(self.text))
        return self._release(max(self._released, len(self.text) - self._hold))

    def finish(self) -> str:
        """The text still held back (no stop string came)."""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        new = self.text[self._released : end]
        self._released = end
        return new


@dataclass
class _Request:
    number: int  # position in the output order
    prompt_index: int
    sample_index: int
    seed: int
    prompt: str
    ids: list[int]


class _Running:
    """A request in an engine slot: its decoder, its stop-string filter and its token count."""

    def __init__(self, request: _Request, trained: Trained, stop: Sequence[str]):
        self.request = request
        self.decoder = StreamDecoder(trained.tokenizer)
        self.text = StopText(stop)
        self.tokens = 0


def generate_samples(
    trained: Trained,
    prompts: Sequence[str],
    *,
    num_samples: int = 1,
    seed: int | None = None,
    first_prompt: int = 0,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    greedy: bool = False,
    stop: Sequence[str] = (),
    batch_size: int = 8,
    stop_at_separator: bool = True,
    on_text: Callable[[int, int, str], None] | None = None,
) -> Iterator[Sample]:
    """Generate ``num_samples`` continuations of every prompt, batched; yield them in (prompt, sample) order.

    Args:
        trained: the model and tokenizer (:func:`~retnet.training.artifacts.load_trained`).
        prompts: prompt texts, each non-empty.
        num_samples: continuations per prompt.
        seed: base seed in ``[0, 2**32)`` (:func:`sample_seeds`); None draws one (:func:`random_seed`).
        first_prompt: index of the first prompt, for seeds and ``prompt_index`` (prompts that arrive one by one).
        max_new_tokens: most tokens per sample (≥ 0).
        temperature: logits are divided by it before sampling (> 0; :class:`SamplingConfig`).
        top_k: keep only the k most likely tokens (None: all).
        top_p: keep the smallest set of tokens whose probability reaches p (None: all).
        repetition_penalty: > 1 discourages tokens already in the sequence.
        greedy: argmax decoding instead of sampling (the seeds then change nothing).
        stop: stop strings: a sample ends at the first one and its text is cut before it.
        batch_size: samples decoded together (engine slots).
        stop_at_separator: end a sample when the model emits the tokenizer's document separator.
        on_text: called as ``on_text(prompt_index, sample_index, piece)`` with each piece of final text as it is
            generated (for streaming); samples run interleaved, so pieces of different samples interleave.

    Yields:
        One :class:`Sample` per (prompt, sample), in order, each as soon as it and those before it are done.

    Raises:
        ValueError: no prompts, an empty prompt or stop string, or a bad count, seed or sampling value.
    """
    sampling = SamplingConfig(
        do_sample=not greedy, temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty
    )
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, got one string")
    _check_int("max_new_tokens", max_new_tokens, 0)
    _check_int("batch_size", batch_size, 1)
    stop = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError(f"stop strings must be non-empty strings, got {stop!r}")
    if not prompts:
        raise ValueError("no prompts given")
    seeds = sample_seeds(random_seed() if seed is None else seed, len(prompts), num_samples, first_prompt)
    requests = []
    tok = trained.tokenizer
    for p, (prompt, row_seeds) in enumerate(zip(prompts, seeds)):
        ids = tok.encode(prompt)
        if not ids:
            raise ValueError(f"prompt {first_prompt + p} is empty; give at least one character")
        for j, s in enumerate(row_seeds):
            requests.append(_Request(len(requests), first_prompt + p, j, s, prompt, ids))
    return _generate(trained, requests, sampling, max_new_tokens, stop, batch_size, stop_at_separator, on_text)


def _generate(trained, requests, sampling, max_new_tokens, stop, batch_size, stop_at_separator, on_text):
    """The decoding loop of :func:`generate_samples` (a generator; the checks above run at call time)."""
    if max_new_tokens == 0:
        for r in requests:
            yield Sample(r.prompt, r.prompt_index, r.sample_index, r.seed, "", 0, "max_new_tokens")
        return
    sep = trained.tokenizer.sep_id if stop_at_separator else None
    try:
        decoder_parts(trained.model)
    except TypeError:
        yield from _generate_alone(trained, requests, sampling, max_new_tokens, stop, sep, on_text)
        return
    engine = DecodeEngine(
        trained.model,
        max_batch=min(batch_size, len(requests)),
        max_len=max(len(r.ids) for r in requests) + max_new_tokens,
        sampling=sampling,
        eos_token_id=sep,
    )
    pending = iter(requests)
    running: dict[int, _Running] = {}  # slot -> request
    done: dict[int, Sample] = {}  # request number -> sample, until it is yielded
    next_out = 0
    while next_out < len(requests):
        free = engine.free_slots
        batch = [r for _, r in zip(free, pending)]
        if batch:
            slots = engine.add([r.ids for r in batch], seeds=[r.seed for r in batch], max_new_tokens=max_new_tokens)
            running.update({slot: _Running(r, trained, stop) for slot, r in zip(slots, batch)})
        tokens = engine.step().tolist()
        finished = []
        for slot, run in running.items():
            reason = _advance(run, tokens[slot], sep, max_new_tokens, on_text)
            if reason is not None:
                r = run.request
                done[r.number] = Sample(
                    r.prompt, r.prompt_index, r.sample_index, r.seed, run.text.text, run.tokens, reason
                )
                finished.append(slot)
        if finished:
            engine.release(finished)
            for slot in finished:
                del running[slot]
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1


def _generate_alone(trained, requests, sampling, max_new_tokens, stop, sep, on_text):
    """One request after another through the model's eager ``stream_generate`` (models the engine cannot run)."""
    settings = {f.name: getattr(sampling, f.name) for f in fields(sampling)}
    for r in requests:
        run = _Running(r, trained, stop)
        reason = None
        tokens = trained.model.stream_generate(
            [r.ids], max_new_tokens=max_new_tokens, eos_token_id=sep, seed=r.seed, use_engine=False, **settings
        )
        for token in tokens:
            reason = _advance(run, int(token[0]), sep, max_new_tokens, on_text)
            if reason is not None:
                break
        yield Sample(r.prompt, r.prompt_index, r.sample_index, r.seed, run.text.text, run.tokens, reason)


def _advance(run: _Running, token: int, sep: int | None, max_new_tokens: int, on_text) -> str | None:
    """Feed one token to a running request; return its stop reason once it is finished, else None."""
    run.tokens += 1
    r = run.request
    reason = None
    if token == sep:
        piece, reason = run.text.push(run.decoder.flush()), "end_of_text"
    else:
        piece = run.text.push(run.decoder.push([token]))
        if not run.text.stopped and run.tokens == max_new_tokens:
            piece, reason = piece + run.text.push(run.decoder.flush()), "max_new_tokens"
    if run.text.stopped:
        reason = "stop_string"
    elif reason is not None:
        piece += run.text.finish()
    if piece and on_text is not None:
        on_text(r.prompt_index, r.sample_index, piece)
    return reason
