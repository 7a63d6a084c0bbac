"""transformers' generate() on the wrapper equals retnet's own decoding token for token.

Greedy and seeded sampling are compared with :func:`retnet.generation.generate` (its eager loop draws with
``torch.multinomial`` from the same filtered distribution, so one seed gives the same tokens); beam search with a
brute-force beam search over the native model's full-sequence forward (no states), so the reordered states are
checked against a computation that has none.
"""

import io
from contextlib import redirect_stdout

import pytest
import torch
from transformers import GenerationConfig, TextStreamer, pipeline

from retnet.data.tokenizer import ByteTokenizer
from retnet.hf import to_hf_tokenizer


def test_greedy_equals_native(native, wrapped):
    ids = torch.randint(0, 256, (2, 7))
    out = wrapped.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(out, native.generate(ids, max_new_tokens=8))
    assert torch.equal(wrapped.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False), out)


def test_seeded_sampling_equals_native(native, wrapped):
    ids = torch.randint(0, 256, (2, 5))
    options = dict(do_sample=True, temperature=0.8, top_k=20)
    torch.manual_seed(7)
    out = wrapped.generate(ids, max_new_tokens=10, top_p=1.0, **options)
    ref = native.generate(ids, max_new_tokens=10, seed=7, **options)
    assert torch.equal(out, ref)


def test_left_padded_batch_equals_each_prompt_alone(native, wrapped):
    prompts = [torch.randint(0, 256, (n,)) for n in (3, 8, 5)]
    ids = torch.zeros(3, 8, dtype=torch.long)
    mask = torch.zeros(3, 8, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, 8 - len(p) :], mask[i, 8 - len(p) :] = p, 1
    out = wrapped.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    for row, p in zip(out, prompts):
        assert torch.equal(row[8:], native.generate(p[None], max_new_tokens=6)[0, len(p) :])
    assert torch.equal(out, wrapped.generate(ids, attention_mask=mask, max_new_tokens=6, use_cache=False))


def _brute_force_beams(native, prompt, num_beams, steps):
    """Beam search with a full forward over every candidate sequence (no states): the best ``num_beams``
    continuations by summed log-probability."""
    beams = [(0.0, prompt)]
    for _ in range(steps):
        candidates = []
        for score, seq in beams:
            logprobs = native(seq[None], form="parallel").logits[0, -1].double().log_softmax(-1)
            top = logprobs.topk(num_beams)
            candidates += [(score + v.item(), torch.cat([seq, i.view(1)])) for v, i in zip(top.values, top.indices)]
        beams = sorted(candidates, key=lambda c: -c[0])[:num_beams]
    return beams


def test_beam_search_equals_brute_force(native, wrapped):
    ids = torch.randint(0, 256, (2, 4))
    out = wrapped.generate(
        ids, num_beams=3, num_return_sequences=3, max_new_tokens=4, do_sample=False, length_penalty=0.0,
        return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    for b in range(2):
        ref = _brute_force_beams(native, ids[b], 3, 4)
        for k, (score, seq) in enumerate(ref):
            assert torch.equal(out.sequences[3 * b + k], seq)
            assert abs(out.sequences_scores[3 * b + k].item() - score) < 1e-4


@pytest.fixture
def byte_tokenizer():
    return to_hf_tokenizer(ByteTokenizer())


def test_pipeline_and_streamer_equal_native(native, wrapped, byte_tokenizer):
    byte = ByteTokenizer()
    wrapped.generation_config.eos_token_id = wrapped.generation_config.pad_token_id = byte.sep_id
    generator = pipeline("text-generation", model=wrapped, tokenizer=byte_tokenizer)
    prompts = ["the king", "a"]
    got = generator(prompts, max_new_tokens=9, do_sample=False, return_full_text=False, batch_size=2)
    for prompt, result in zip(prompts, got):
        ids = torch.tensor([byte.encode(prompt)])
        new = native.generate(ids, max_new_tokens=9, eos_token_id=byte.sep_id)[0, ids.shape[1] :].tolist()
        assert result[0]["generated_text"] == byte.decode(new)
    ids = torch.tensor([byte.encode(prompts[0])])
    text = io.StringIO()
    with redirect_stdout(text):
        wrapped.generate(
            ids, max_new_tokens=9, do_sample=False, streamer=TextStreamer(byte_tokenizer, skip_prompt=True)
        )
    assert text.getvalue() == got[0][0]["generated_text"] + "\n"


def test_generation_arguments(wrapped):
    ids = torch.randint(0, 256, (2, 5))
    eos = int(wrapped.generate(ids[:1], max_new_tokens=1, do_sample=False)[0, -1])
    config = GenerationConfig(max_length=11, do_sample=False, eos_token_id=eos, pad_token_id=0)
    assert wrapped.generate(ids[:1], generation_config=config).shape == (1, 6)  # stops at the eos token
    assert wrapped.generate(ids[:1], generation_config=config, min_new_tokens=3).shape[1] >= 8
    assert wrapped.generate(ids, max_length=9, do_sample=False).shape == (2, 9)
    out = wrapped.generate(ids, max_new_tokens=3, return_dict_in_generate=True, output_logits=True, do_sample=False)
    assert out.sequences.shape == (2, 8) and len(out.logits) == 3
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # renamed in transformers 5.24
    assert cache.get_seq_length() == 7  # the last token is never fed back
    full = torch.cat([out.sequences, torch.randint(0, 256, (2, 2))], dim=1)
    more = wrapped(full[:, 7:], cache=cache).logits  # a returned cache continues with the tokens it has not seen
    assert torch.allclose(more, wrapped(full, use_cache=False).logits[:, 7:], atol=1e-5)
    with pytest.raises(ValueError):
        wrapped.generate(ids, max_new_tokens=3, assistant_model=wrapped)
