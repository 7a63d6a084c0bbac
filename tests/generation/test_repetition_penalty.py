"""The repetition penalty with left-padded prompts: padding is never a seen token, and seen sets are exact."""

import importlib

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.generation.sampling import apply_repetition_penalty, seen_tokens

generate_module = importlib.import_module("retnet.generation.generate")  # the module, not the function

VOCAB = 256
PENALTY = 1e3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RetNetForCausalLM(RetNetConfig.from_preset("debug", chunk_size=4)).double().eval()


def _expected_seen(rows: list[list[int]], vocab: int) -> torch.Tensor:
    seen = torch.zeros(len(rows), vocab, dtype=torch.bool)
    for i, row in enumerate(rows):
        seen[i, sorted(set(row))] = True
    return seen


def test_seen_tokens_are_the_real_tokens_only():
    pad = 3
    rows = [[7, 7, 9], [3, 5, 3, 3], [8]]  # row 1 holds the pad id as a real token, several times
    ids, mask = generate_module.left_pad(rows, pad, "cpu")
    assert int((ids == pad).sum()) > 3  # padding writes the pad id too: the duplicate index
    assert torch.equal(seen_tokens(ids, mask, 12), _expected_seen(rows, 12))
    assert torch.equal(seen_tokens(ids, None, 12), _expected_seen(ids.tolist(), 12))


def test_seen_tokens_do_not_depend_on_where_padding_sits():
    """The same real tokens give the same set whether the pad id's writes come before or after them."""
    ids = torch.tensor([[4, 4, 6, 4], [6, 4, 4, 4]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])  # not left padding: only the set arithmetic is tested here
    assert torch.equal(seen_tokens(ids, mask, 8), _expected_seen([[4, 6, 4], [6, 4]], 8))
    assert torch.equal(seen_tokens(ids, torch.zeros_like(mask), 8), torch.zeros(2, 8, dtype=torch.bool))


def test_eager_loop_seen_sets_exclude_padding(model, monkeypatch):
    """At every step the penalty's seen set is the row's real prompt tokens plus its decoded tokens."""
    recorded = []
    original = generate_module.next_token

    def recording(logits, config, seen, generator):
        recorded.append(seen.clone())
        return original(logits, config, seen, generator)

    monkeypatch.setattr(generate_module, "next_token", recording)
    prompts = [[5, 6, 7], [9, 8, 7, 6, 5, 4, 3], [42]]
    pad = 200  # in no prompt
    out = model.generate(prompts, max_new_tokens=4, pad_token_id=pad, repetition_penalty=1.5, use_engine=False)
    new = out[:, -4:].tolist()
    assert len(recorded) == 4
    for step, seen in enumerate(recorded):
        expected = _expected_seen([p + n[:step] for p, n in zip(prompts, new)], VOCAB)
        assert torch.equal(seen, expected), f"step {step}"


def test_padding_is_not_penalised(model):
    """With the pad id chosen as the token a short prompt decodes first (alone, under the penalty), the padded
    batch decodes that token too; counting the padding as seen would penalise it away."""
    short, long = [11, 12], [13, 14, 15, 16, 17, 18]
    alone = model.generate([short], max_new_tokens=3, repetition_penalty=PENALTY, use_engine=False)[0, -3:]
    pad = int(alone[0])
    assert pad not in short
    logits = model(torch.tensor([short]), form="parallel").logits[:, -1]  # (1, vocab)
    pad_seen = _expected_seen([short + [pad]], VOCAB)
    assert int(apply_repetition_penalty(logits, pad_seen, PENALTY).argmax()) != pad  # the test can fail
    for use_engine in (False, True):
        batch = model.generate(
            [short, long], max_new_tokens=3, pad_token_id=pad, repetition_penalty=PENALTY, use_engine=use_engine
        )
        assert torch.equal(batch[0, -3:], alone), use_engine


def test_the_engine_penalises_the_prompts_tokens(model):
    """The engine's seen set starts with the prompt: with a penalty strong enough to forbid a token, its first
    greedy token is the argmax of the logits with every prompt token penalised (and the model's own favourite,
    placed in the prompt, is never chosen)."""
    from retnet.generation import DecodeEngine, SamplingConfig

    probe = [5, 6, 7]
    favourite = int(model(torch.tensor([probe]), form="parallel").logits[0, -1].argmax())
    prompt = [favourite, *probe]  # the favourite is in the prompt, not just among the next choices
    logits = model(torch.tensor([prompt]), form="parallel").logits[0, -1]
    seen = torch.zeros(1, VOCAB, dtype=torch.bool)
    seen[0, prompt] = True
    expected = int(apply_repetition_penalty(logits[None].float(), seen, PENALTY)[0].argmax())
    engine = DecodeEngine(model, max_batch=1, max_len=8, sampling=SamplingConfig(repetition_penalty=PENALTY))
    engine.add([prompt])
    first = int(engine.step()[0])
    assert first == expected and first not in prompt
