"""lm-evaluation-harness model ``retnet``: the native model behind lm-eval's ``LM`` interface (needs ``lm-eval``).

Importing this module registers ``retnet`` in lm-eval's model registry, so that
``lm_eval.simple_evaluate(model="retnet", model_args="pretrained=DIR")`` and
``python -m retnet.evaluation.lm_eval_cli --model retnet ...`` (lm-eval's own command line with this module imported)
find it. The stock ``lm_eval`` command cannot: lm-eval reads no plugin entry points for models (docs/evaluation.md).

- ``loglikelihood``: batched scoring of (context, continuation) pairs (:mod:`.scoring`), in the chosen form.
- ``loglikelihood_rolling``: a document's total log-likelihood, predicted from the separator token, in disjoint
  windows of ``max_length`` tokens each started from an empty state; for a document that fills whole windows, the
  summed loss of the perplexity path (:func:`retnet.training.evaluate.evaluate`) over the stream
  ``[separator] + document`` without resets.
- ``generate_until``: batched decoding (prefill, then the recurrent form) that stops a row at the separator, at
  ``max_gen_toks`` or once its text holds one of the ``until`` strings; the text is cut before that string.

Model arguments (``--model_args key=value,...``): ``pretrained`` (required: any folder
:func:`retnet.training.artifacts.load_trained` reads, a Hugging Face directory included), ``form`` (``chunkwise``),
``chunk_size`` (the model's), ``max_length`` (2048), ``device`` (``cpu``; lm-eval's default ``cuda:0`` runs on the CPU
when there is no GPU), ``batch_size`` (also ``--batch_size``; ``auto`` means ``max_batch_size``, 64 unless given),
``trust_checkpoint`` and ``allow_unverified`` (docs/security.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

# lm-eval adds its own models (hf, vllm, ...) to its registry only while the registry is empty at the first lookup:
# added here before ``retnet`` is registered, or ``--model hf`` would be unknown in this process.
import lm_eval.models  # noqa: F401
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from .scoring import FORMS, encode_pair, score_tokens

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048  # the paper's training length (docs/spec.md §6)
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p", "seed")


def _flag(value: bool | str, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _positive(value: int | str, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _batch_size(value: int | str, max_batch_size: int | str | None) -> int:
    if isinstance(value, str) and value.startswith("auto"):
        return _positive(max_batch_size if max_batch_size is not None else 64, "max_batch_size")
    return _positive(value, "batch_size")


@register_model("retnet")
class RetNetLM(LM):
    """The native retnet model as an lm-eval ``LM`` (arguments in the module docstring).

    Args:
        pretrained: run folder, checkpoint folder, exported model folder or Hugging Face directory, or an already
            loaded :class:`retnet.training.artifacts.Trained`.

    Raises:
        ValueError: a bad form, batch size, chunk size or max length.
        FileNotFoundError: nothing loadable at ``pretrained``.
    """

    def __init__(
        self,
        pretrained,
        *,
        form: str = "chunkwise",
        chunk_size: int | str | None = None,
        max_length: int | str = DEFAULT_MAX_LENGTH,
        batch_size: int | str = 8,
        max_batch_size: int | str | None = None,
        device: str = "cpu",
        trust_checkpoint: bool | str = False,
        allow_unverified: bool | str = False,
    ) -> None:
        super().__init__()
        from ..training.artifacts import Trained, load_trained

        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line passes cuda:0 unless told otherwise; its hf model runs on the CPU then too.
            logger.warning("CUDA is not available; running on the CPU")
            device = "cpu"
        if isinstance(pretrained, Trained):
            trained = pretrained
        else:
            trained = load_trained(
                str(pretrained),
                device=device,
                trust_checkpoint=_flag(trust_checkpoint, "trust_checkpoint"),
                allow_unverified=_flag(allow_unverified, "allow_unverified"),
            )
        self.model = trained.model.eval()
        self.tokenizer = trained.tokenizer
        self.form = form
        self.chunk_size = None if chunk_size is None else _positive(chunk_size, "chunk_size")
        self.max_length = _positive(max_length, "max_length")
        self.batch_size = _batch_size(batch_size, max_batch_size)
        self._device = next(self.model.parameters()).device

    # ---- log-likelihoods --------------------------------------------------------------------------------------
    def _score(self, pairs: Sequence[tuple[list[int], list[int]]], disable_tqdm: bool, desc: str):
        with tqdm(total=len(pairs), desc=desc, disable=disable_tqdm or self.rank != 0) as bar:
            return score_tokens(
                self.model,
                pairs,
                form=self.form,
                chunk_size=self.chunk_size,
                batch_size=self.batch_size,
                max_length=self.max_length,
                on_batch=bar.update,
            )

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), is_greedy)`` of each request's ``(context, continuation)``."""
        pairs = [encode_pair(self.tokenizer, *req.args) for req in requests]
        out = []
        for req, score in zip(requests, self._score(pairs, disable_tqdm, "loglikelihood")):
            answer = (score.logprob, score.is_greedy)
            self.cache_hook.add_partial("loglikelihood", req.args, answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each request's ``(string,)`` total log-likelihood from the separator, in ``max_length`` windows."""
        pairs, owner = [], []
        for i, req in enumerate(requests):
            (text,) = req.args
            windows = get_rolling_token_windows(
                token_list=self.tokenizer.encode(text),
                prefix_token=self.tokenizer.sep_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for window in windows:
                pairs.append(make_disjoint_window(window))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, score in zip(owner, self._score(pairs, disable_tqdm, "loglikelihood_rolling")):
            totals[i] += score.logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation -------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Each request's ``(context, gen_kwargs)`` continuation, cut before the first ``until`` string.

        ``gen_kwargs`` may hold ``until`` (a string or list), ``max_gen_toks`` (256), ``do_sample``,
        ``temperature`` (0 means greedy), ``top_k``, ``top_p`` and ``seed``.

        Raises:
            ValueError: an unknown generation argument.
        """
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            kwargs = dict(req.args[1] or {})
            unknown = sorted(set(kwargs) - set(GEN_KWARGS))
            if unknown:
                raise ValueError(f"unknown generation argument(s) {unknown}; supported: {GEN_KWARGS}")
            groups.setdefault(json.dumps(kwargs, sort_keys=True), []).append(i)
        out = [""] * len(requests)
        with tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm or self.rank != 0) as bar:
            for key, members in groups.items():
                kwargs = json.loads(key)
                for start in range(0, len(members), self.batch_size):
                    batch = members[start : start + self.batch_size]
                    texts = self._generate([requests[i].args[0] for i in batch], **kwargs)
                    for i, text in zip(batch, texts):
                        out[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(batch))
        return out

    @torch.no_grad()
    def _generate(
        self,
        contexts: list[str],
        *,
        until: str | list[str] | None = None,
        max_gen_toks: int = 256,
        do_sample: bool = False,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> list[str]:
        stops = [until] if isinstance(until, str) else list(until or [])
        max_gen_toks = _positive(max_gen_toks, "max_gen_toks")
        sample = bool(do_sample) and float(temperature) > 0
        sep = self.tokenizer.sep_id
        keep = max(self.max_length - max_gen_toks, 1)
        prompts = [(self.tokenizer.encode(c) or [sep])[-keep:] for c in contexts]
        generated: list[list[int]] = [[] for _ in contexts]
        finished = [False] * len(contexts)
        steps = self.model.stream_generate(
            prompts,
            max_new_tokens=max_gen_toks,
            do_sample=sample,
            temperature=float(temperature) if sample else 1.0,
            top_k=top_k,
            top_p=top_p,
            eos_token_id=sep,
            seed=seed,
            prefill_form="parallel" if self.form == "parallel" else "chunkwise",
            chunk_size=self.chunk_size,
        )
        for new in steps:
            for r, token in enumerate(new.tolist()):
                if finished[r]:
                    continue
                if token == sep:
                    finished[r] = True
                    continue
                generated[r].append(token)
                if stops and any(s in self.tokenizer.decode(generated[r]) for s in stops):
                    finished[r] = True
            if all(finished):
                break  # every row hit a stop: no more decoding steps
        return [cut_at_stops(self.tokenizer.decode(ids), stops) for ids in generated]


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any of ``stops``."""
    cut = len(text)
    for s in stops:
        if s:
            at = text.find(s)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]
