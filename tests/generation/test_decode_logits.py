"""Decoding at the level of logits: at every step, the logits a decoder picks from equal the parallel forward's.

Comparing greedy tokens of a random model is weak (a logit error below the top-two gap changes no token), so
these tests record the logits each loop hands to its token chooser and compare them, in float64 with a tight
tolerance, with the parallel forward of the row's real prefix (its prompt without padding plus the tokens
decoded so far): a single prompt, a left-padded batch of different lengths and prompts continued from a state,
for the eager loop and for the :class:`~retnet.generation.DecodeEngine` on CPU.
"""

import importlib

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.generation import DecodeEngine
from tests.utils import assert_close

# The modules, not the functions of the same names that retnet.generation re-exports.
generate_module = importlib.import_module("retnet.generation.generate")
engine_module = importlib.import_module("retnet.generation.engine")

STEPS = 5
RTOL = 1e-10


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RetNetForCausalLM(RetNetConfig.from_preset("debug", chunk_size=4)).double().eval()


def _parallel_logits(model, prefix: list[int]) -> torch.Tensor:
    """``(vocab,)`` next-token logits of the parallel forward over ``prefix`` (no padding, no state)."""
    return model(torch.tensor([prefix]), form="parallel").logits[0, -1]


def _check_steps(model, prompts: list[list[int]], logits_per_step: list[torch.Tensor], tokens: torch.Tensor):
    """Every step's ``(B, vocab)`` logits equal the parallel forward of each row's prompt and tokens so far."""
    assert len(logits_per_step) == tokens.shape[1] == STEPS
    for step, logits in enumerate(logits_per_step):
        for row, prompt in enumerate(prompts):
            prefix = prompt + tokens[row, :step].tolist()
            assert_close(logits[row], _parallel_logits(model, prefix), RTOL, name=f"row {row} step {step}")


def _record(monkeypatch, module, name: str) -> list[torch.Tensor]:
    """Wrap ``module.name`` (a token chooser taking logits first) to record a copy of the logits it is given."""
    seen_logits = []
    original = getattr(module, name)

    def recording(logits, *args, **kwargs):
        seen_logits.append(logits.detach().clone())
        return original(logits, *args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return seen_logits


PROMPTS = {
    "single": [[5, 6, 7, 8, 9, 10, 11]],
    "padded batch": [[5, 6, 7], [9, 8, 7, 6, 5, 4, 3, 2, 1], [42], [17, 3, 250, 8, 8]],
}


@pytest.mark.parametrize("prefill_form", ["chunkwise", "parallel", "recurrent"])
@pytest.mark.parametrize("case", list(PROMPTS))
def test_eager_loop_logits_equal_the_parallel_forward(model, monkeypatch, case, prefill_form):
    prompts = PROMPTS[case]
    recorded = _record(monkeypatch, generate_module, "next_token")
    out = model.generate(
        prompts, max_new_tokens=STEPS, pad_token_id=0, use_engine=False, prefill_form=prefill_form, chunk_size=3
    )
    _check_steps(model, prompts, recorded, out[:, -STEPS:])


@pytest.mark.parametrize("prefill_chunk", [None, 2])
@pytest.mark.parametrize("case", list(PROMPTS))
def test_engine_logits_equal_the_parallel_forward(model, monkeypatch, case, prefill_chunk):
    """Through ``generate``: padded prompts reach the engine unpadded; ``prefill_chunk=2`` continues from states."""
    prompts = PROMPTS[case]
    recorded = _record(monkeypatch, engine_module, "choose_tokens")
    out = model.generate(prompts, max_new_tokens=STEPS, pad_token_id=0, use_engine=True, prefill_chunk=prefill_chunk)
    _check_steps(model, prompts, recorded, out[:, -STEPS:])


def test_engine_slot_reused_after_release_starts_a_fresh_sequence(model):
    """A released slot refilled with a new prompt decodes from position 0 (the old state and position are gone)."""
    engine = DecodeEngine(model, max_batch=2, max_len=24)
    engine.add([[1, 2, 3, 4, 5, 6], [7, 8]])
    for _ in range(3):
        engine.step()
    engine.release([0])
    (slot,) = engine.add([[30, 31, 32]])
    assert slot == 0
    prefix = [30, 31, 32]
    for _ in range(STEPS):
        logits = engine.logits[slot].clone()
        assert_close(logits, _parallel_logits(model, prefix), RTOL, name=f"refilled slot at length {len(prefix)}")
        prefix.append(int(engine.step()[slot]))


@pytest.mark.parametrize("first_form", ["parallel", "chunkwise", "recurrent"])
def test_prompt_continued_from_a_state_then_decoded(model, first_form):
    """A left-padded first segment, a second segment continuing from its states, then the eager loop's decode
    calls (one recurrent token at a time): each row's logits at every step equal the parallel forward."""
    firsts = [[4, 5, 6, 7], [8, 9], [10]]
    seconds = [[11, 12, 13], [14, 15, 16], [17, 18, 19]]  # the continuation has one length for all rows
    ids, mask = generate_module.left_pad(firsts, 0, "cpu")
    out = model(ids, form=first_form, chunk_size=3, attention_mask=mask, output_states=True)
    out = model(torch.tensor(seconds), form="chunkwise", chunk_size=2, states=out.states, output_states=True)
    prefixes = [f + s for f, s in zip(firsts, seconds)]
    logits, states = out.logits[:, -1], out.states
    for step in range(STEPS):
        for row, prefix in enumerate(prefixes):
            assert_close(logits[row], _parallel_logits(model, prefix), RTOL, name=f"row {row} step {step}")
        token = logits.argmax(-1)  # (B,)
        for prefix, t in zip(prefixes, token.tolist()):
            prefix.append(t)
        out = model(token[:, None], form="recurrent", states=states, output_states=True)
        logits, states = out.logits[:, -1], out.states
