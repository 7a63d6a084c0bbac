"""Generation: greedy = argmax of the parallel forward, padding is exact, sampling options, streaming, stops."""

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.generation import filter_logits


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RetNetForCausalLM(RetNetConfig.from_preset("debug")).double().eval()


@pytest.mark.parametrize("prefill_form", ["chunkwise", "parallel", "recurrent"])
def test_greedy_equals_argmax_of_parallel_forward(model, prefill_form):
    ids = torch.randint(0, 256, (2, 7))
    out = model.generate(ids, max_new_tokens=8, prefill_form=prefill_form, chunk_size=3)
    assert out.shape == (2, 15) and torch.equal(out[:, :7], ids)
    seq = ids
    for _ in range(8):
        nxt = model(seq, form="parallel").logits[:, -1].argmax(-1)
        seq = torch.cat([seq, nxt[:, None]], 1)
    assert torch.equal(out, seq)


def test_padded_batch_equals_each_prompt_alone(model):
    prompts = [[5, 6, 7], [9, 8, 7, 6, 5, 4, 3], [42]]
    batch = model.generate(prompts, max_new_tokens=6, pad_token_id=0)
    for row, p in zip(batch, prompts):
        alone = model.generate([p], max_new_tokens=6)
        assert torch.equal(row[-6:], alone[0, -6:])
    sampled = model.generate(prompts, max_new_tokens=6, do_sample=True, top_k=1, seed=3, pad_token_id=0)
    assert torch.equal(sampled, batch)  # the sampling path with padding: top-1 sampling is greedy


def test_attention_mask_prompt(model):
    ids = torch.tensor([[0, 0, 11, 12], [13, 14, 15, 16]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4)
    assert torch.equal(out[0, -4:], model.generate([[11, 12]], max_new_tokens=4)[0, -4:])


def test_stop_tokens_and_streaming(model):
    ids = torch.randint(0, 256, (1, 5))
    free = model.generate(ids, max_new_tokens=6)
    stop = free[0, 7].item()  # the third generated token
    first = free[0, 5:].tolist().index(stop)  # it may occur earlier
    stopped = model.generate(ids, max_new_tokens=6, eos_token_id=stop)
    assert torch.equal(stopped, free[:, : 5 + first + 1])  # up to and including the first stop token
    steps = list(model.stream_generate(ids, max_new_tokens=6))
    assert len(steps) == 6 and torch.equal(torch.stack(steps, 1), free[:, 5:])
    assert model.generate(ids, max_new_tokens=0).shape == (1, 5)


def test_finished_rows_are_padded(model):
    prompts = torch.randint(0, 256, (2, 4))
    free = model.generate(prompts, max_new_tokens=5)
    stop = free[0, 4].item()  # row 0 stops at once
    out = model.generate(prompts, max_new_tokens=5, eos_token_id=stop, pad_token_id=1)
    new = free[1, 4:].tolist()
    row1_len = new.index(stop) + 1 if stop in new else 5  # row 1 runs until its own stop token or the budget
    assert row1_len > 1  # so row 0 has finished positions to pad
    assert torch.equal(out[1], free[1, : 4 + row1_len])
    assert torch.equal(out[0], torch.cat([free[0, :5], torch.ones(row1_len - 1, dtype=torch.long)]))


def test_sampling_is_seeded_and_filters_work(model):
    ids = torch.randint(0, 256, (2, 4))
    a = model.generate(ids, max_new_tokens=6, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    b = model.generate(ids, max_new_tokens=6, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    assert torch.equal(a, b)
    one = model.generate(ids, max_new_tokens=4, do_sample=True, top_k=1, seed=1)
    assert torch.equal(one, model.generate(ids, max_new_tokens=4))
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.isinf(filter_logits(logits, 2, None)[0, 2:]).all()
    kept = filter_logits(logits, None, 0.7)  # probabilities ≈ .64, .24, .09, .03
    assert torch.isfinite(kept[0, :2]).all() and torch.isinf(kept[0, 2:]).all()


def test_repetition_penalty_avoids_repeats(model):
    ids = torch.randint(0, 256, (1, 3))
    out = model.generate(ids, max_new_tokens=20, repetition_penalty=1e6)
    new = out[0, 3:].tolist()
    assert len(set(new)) == len(new) and not set(new) & set(ids[0].tolist())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_ids=[[]]), "empty prompt"),
        (dict(input_ids=[]), "no prompts"),
        (dict(input_ids=torch.tensor([[300]])), "outside|0, 256"),
        (dict(input_ids=torch.tensor([[1]]), temperature=0.0, do_sample=True), "temperature"),
        (dict(input_ids=torch.tensor([[1]]), top_p=1.5), "top_p"),
        (dict(input_ids=torch.tensor([[1]]), max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_bad_generation_input(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.generate(**kwargs)
