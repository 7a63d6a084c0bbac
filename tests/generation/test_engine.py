"""DecodeEngine: the tokens and logits of the reference generation, continuous batching, sampling, bad input."""

import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.baselines import MixerLM, MixerLMConfig
from retnet.generation import DecodeEngine, SamplingConfig, choose_tokens, filter_logits, gumbel_noise, sampling_key
from retnet.generation import engine as engine_module
from retnet.generation.decoder_parts import decoder_parts
from tests.utils import assert_close

VOCAB = 256


@pytest.fixture(scope="module")
def retnet64():
    torch.manual_seed(0)
    return RetNetForCausalLM(RetNetConfig.from_preset("debug", chunk_size=4)).double().eval()


@pytest.fixture(scope="module")
def transformer64():
    torch.manual_seed(0)
    cfg = MixerLMConfig(arch="transformer", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, ffn_dim=64)
    return MixerLM(cfg).double().eval()


def _run(engine: DecodeEngine, steps: int, slots: list[int]) -> list[list[int]]:
    out = [engine.step()[slots].clone() for _ in range(steps)]
    return torch.stack(out, 1).tolist()


def _greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    """Argmax of the parallel forward over the growing sequence (the definition of greedy decoding)."""
    seq = torch.tensor([prompt])
    for _ in range(n):
        seq = torch.cat([seq, model(seq, form="parallel").logits[:, -1].argmax(-1, keepdim=True)], 1)
    return seq[0, len(prompt) :].tolist()


@pytest.mark.parametrize("arch", ["retnet", "transformer"])
def test_greedy_tokens_and_logits_equal_the_parallel_forward(arch, retnet64, transformer64):
    model = retnet64 if arch == "retnet" else transformer64
    prompts = [[5, 6, 7, 8, 9, 10, 11], [42], [3, 1, 4, 1, 5]]  # different lengths, no padding needed
    engine = DecodeEngine(model, max_batch=4, max_len=16, prefill_chunk=3)
    slots = engine.add(prompts)
    seqs = [list(p) for p in prompts]
    for _ in range(6):
        logits = engine.logits[slots].clone()
        tokens = engine.step()[slots].tolist()
        for i, (seq, tok) in enumerate(zip(seqs, tokens)):
            expected = model(torch.tensor([seq]), form="parallel").logits[0, -1]
            assert_close(logits[i], expected, 1e-10, name=f"{arch} row {i} logits at length {len(seq)}")
            assert tok == int(expected.argmax())
            seq.append(tok)
    assert engine.free_slots == [3]


def test_generate_with_the_engine_equals_the_eager_loop(retnet64):
    ids = torch.randint(0, VOCAB, (2, 7))
    for penalty, engine_options in ((1.0, {}), (1.3, {}), (1.0, dict(prefill_chunk=2, sync_every=3))):
        eager = retnet64.generate(ids, max_new_tokens=9, repetition_penalty=penalty, use_engine=False)
        engine = retnet64.generate(ids, max_new_tokens=9, repetition_penalty=penalty, use_engine=True, **engine_options)
        assert torch.equal(engine, eager), (penalty, engine_options)
    prompts = [[5, 6, 7], [9, 8, 7, 6, 5, 4, 3], [42]]  # left-padded by generate, per-slot positions in the engine
    eager = retnet64.generate(prompts, max_new_tokens=6, pad_token_id=0, use_engine=False)
    assert torch.equal(retnet64.generate(prompts, max_new_tokens=6, pad_token_id=0, use_engine=True), eager)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    masked = torch.tensor([[0, 0, 11, 12], [13, 14, 15, 16]])
    eager = retnet64.generate(masked, attention_mask=mask, max_new_tokens=4, use_engine=False)
    assert torch.equal(retnet64.generate(masked, attention_mask=mask, max_new_tokens=4, use_engine=True), eager)


def test_the_paper_flavour_with_tied_embeddings():
    torch.manual_seed(0)
    config = RetNetConfig.from_preset("debug", flavour="paper", tie_word_embeddings=True)
    model = RetNetForCausalLM(config).double().eval()  # LayerNorm, GroupNorm head norm, gelu FFN
    ids = torch.randint(0, VOCAB, (2, 6))
    eager = model.generate(ids, max_new_tokens=8, use_engine=False)
    assert torch.equal(model.generate(ids, max_new_tokens=8, use_engine=True, prefill_chunk=4), eager)


def test_seeded_sampling_through_generate(retnet64):
    ids = torch.randint(0, VOCAB, (2, 5))
    options = dict(max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.95, use_engine=True)
    a, b = retnet64.generate(ids, seed=7, **options), retnet64.generate(ids, seed=7, **options)
    assert torch.equal(a, b) and not torch.equal(a, retnet64.generate(ids, seed=8, **options))
    twins = retnet64.generate(ids[:1].expand(2, 5), seed=7, **options)
    assert not torch.equal(twins[0], twins[1])  # each row draws its own noise
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(retnet64.generate(ids, generator=g1, **options), retnet64.generate(ids, generator=g2, **options))
    top1 = retnet64.generate(ids, seed=1, **{**options, "top_k": 1})
    assert torch.equal(top1, retnet64.generate(ids, max_new_tokens=8, use_engine=False))  # top-1 sampling is greedy


def test_stop_tokens_match_the_eager_loop(retnet64):
    ids = torch.randint(0, VOCAB, (2, 4))
    free = retnet64.generate(ids, max_new_tokens=8, use_engine=False)
    for stop in (free[0, 5].item(), free[1, 4].item()):
        for sync_every in (1, 3, 8):
            kwargs = dict(max_new_tokens=8, eos_token_id=stop, pad_token_id=1)
            eager = retnet64.generate(ids, use_engine=False, **kwargs)
            engine = retnet64.generate(ids, use_engine=True, sync_every=sync_every, **kwargs)
            assert torch.equal(engine, eager), (stop, sync_every)
    steps = list(retnet64.stream_generate(ids, max_new_tokens=5, use_engine=True, sync_every=2))
    assert len(steps) == 5 and torch.equal(torch.stack(steps, 1), free[:, 4:9])


@pytest.mark.parametrize("arch", ["retnet", "transformer"])
def test_piecewise_prefill_equals_one_prefill(arch, retnet64, transformer64):
    model = retnet64 if arch == "retnet" else transformer64
    prompt = torch.randint(0, VOCAB, (11,)).tolist()
    whole = DecodeEngine(model, max_batch=1, max_len=16)
    pieces = DecodeEngine(model, max_batch=1, max_len=16, prefill_chunk=4)
    whole.add([prompt])
    pieces.add([prompt])
    assert_close(pieces.logits, whole.logits, 1e-10, name="logits after the prompt")
    for a, b in zip(pieces.states, whole.states):
        for x, y, name in zip(a, b, a._fields):
            assert_close(x.double(), y.double(), 1e-10, name=f"state {name}")
    assert _run(pieces, 5, [0]) == _run(whole, 5, [0]) == [_greedy_reference(model, prompt, 5)]


@pytest.mark.parametrize("arch", ["retnet", "transformer"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_a_refilled_slot_gives_the_tokens_of_its_prompt_alone(arch, do_sample, retnet64, transformer64):
    model = retnet64 if arch == "retnet" else transformer64
    sampling = SamplingConfig(do_sample=do_sample, temperature=1.5, top_k=50)
    a, b, c = [7, 8, 9], [1, 2, 3, 4, 5, 6], [200, 100]
    alone = DecodeEngine(model, max_batch=1, max_len=12, sampling=sampling)
    alone.add([c], seeds=[11])
    expected = _run(alone, 6, [0])[0]
    engine = DecodeEngine(model, max_batch=2, max_len=12, sampling=sampling)
    slot_a, slot_b = engine.add([a, b], seeds=[3, 4])
    first_b = _run(engine, 3, [slot_b])[0]
    engine.release([slot_a])
    assert engine.add([c], seeds=[11]) == [slot_a]  # prefilled while b is mid-sequence
    rows = _run(engine, 6, [slot_a, slot_b])
    assert rows[0] == expected
    b_alone = DecodeEngine(model, max_batch=1, max_len=12, sampling=sampling)
    b_alone.add([b], seeds=[4])
    assert first_b + rows[1] == _run(b_alone, 9, [0])[0]


def test_sampled_tokens_equal_a_direct_computation(retnet64):
    """Each sampled token is choose_tokens of the parallel forward's logits with the request's key and index."""
    sampling = SamplingConfig(do_sample=True, temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.2)
    prompt = [10, 20, 30, 40]
    engine = DecodeEngine(retnet64, max_batch=1, max_len=16, sampling=sampling)
    engine.add([prompt], seeds=[123])
    tokens = _run(engine, 8, [0])[0]
    seq = list(prompt)
    key = torch.tensor([sampling_key(123)])
    for i, tok in enumerate(tokens):
        logits = retnet64(torch.tensor([seq]), form="parallel").logits[:, -1]
        seen = torch.zeros(1, VOCAB, dtype=torch.bool)
        seen[0, seq] = True
        assert tok == int(choose_tokens(logits, sampling, seen, key, torch.tensor([i]))[0]), i
        seq.append(tok)
    engine.release([0])
    engine.add([prompt], seeds=[124])
    assert _run(engine, 8, [0])[0] != tokens  # another seed, other tokens


def _mix32_python(x: int) -> int:
    for _ in range(2):
        x ^= x >> 16
        x = (x * 0x45D9F3B) % 2**32
    return x ^ (x >> 16)


def test_gumbel_noise_is_the_documented_hash_and_sampling_follows_the_probabilities():
    keys, counts = torch.tensor([sampling_key(5), sampling_key(5, 1)]), torch.tensor([0, 7])
    noise = gumbel_noise(keys, counts, 10)
    for b in range(2):
        row = _mix32_python(int(keys[b]) ^ _mix32_python(int(counts[b])))
        for col in (0, 3, 9):
            u = ((_mix32_python(row ^ col) >> 8) + 0.5) / 2**24
            expected = -torch.log(-torch.log(torch.tensor(u, dtype=torch.float32)))
            assert_close(noise[b, col], expected, 1e-6, name=f"noise[{b}, {col}]")
    # Gumbel-max over many requests reproduces softmax(logits / T) after top-k / top-p.
    n = 20000
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).expand(n, 5)
    sampling = SamplingConfig(do_sample=True, temperature=0.8, top_k=4)
    keys = torch.tensor([sampling_key(9, i) for i in range(n)])
    tokens = choose_tokens(logits, sampling, None, keys, torch.zeros(n, dtype=torch.long))
    freq = torch.bincount(tokens, minlength=5).double() / n
    probs = filter_logits(logits[:1] / 0.8, 4, None).softmax(-1)[0].double()
    assert freq[4] == 0 and (freq - probs).abs().max() < 0.015, (freq, probs)
    greedy = choose_tokens(logits[:2], SamplingConfig(), None, keys[:2], torch.zeros(2, dtype=torch.long))
    assert greedy.tolist() == [0, 0]


def test_stop_tokens_budgets_and_padding_on_the_device(retnet64):
    prompt = [3, 4, 5]
    free = _greedy_reference(retnet64, prompt, 6)
    stop = free[2]
    engine = DecodeEngine(retnet64, max_batch=2, max_len=12, eos_token_id=stop, pad_token_id=0)
    engine.add([prompt, prompt], max_new_tokens=[6, 2])
    rows = _run(engine, 6, [0, 1])
    first_stop = free.index(stop)
    assert rows[0] == free[: first_stop + 1] + [0] * (5 - first_stop)
    assert rows[1] == free[:2] + [0] * 4  # budget of 2 tokens
    assert engine.poll() == [True, True]


def test_bad_input_is_refused_before_any_kernel_runs(retnet64):
    engine = DecodeEngine(retnet64, max_batch=2, max_len=8)
    before = [t.clone() for s in engine.states for t in s]
    cases = [
        (dict(prompts=[list(range(9))]), "more than max_len 8"),
        (dict(prompts=[[1, 2, 3]], max_new_tokens=6), "9 > max_len 8"),
        (dict(prompts=[[1], [2], [3]]), "3 prompts but only 2 free slots"),
        (dict(prompts=[[1, 256]]), r"\[0, 256\)"),
        (dict(prompts=[[1, -1]]), r"\[0, 256\)"),
        (dict(prompts=[[]]), "empty"),
        (dict(prompts=torch.zeros(1, 0, dtype=torch.long)), "empty"),
        (dict(prompts=[[1, 2.5]]), "must be ints"),
        (dict(prompts=[[1, "a"]]), "must be ints"),
        (dict(prompts=[1, 2]), "a sequence of token ids"),
        (dict(prompts=torch.tensor([[1.0, 2.0]])), "torch.float32"),
        (dict(prompts=torch.tensor([[3, 300, -2, 5]])), r"\[0, 256\), got \[300, -2\]"),
        (dict(prompts=[[1]], seeds=[1, 2]), "seeds"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            engine.add(**kwargs)
    assert engine.free_slots == [0, 1]
    assert all(torch.equal(a, b) for a, b in zip(before, (t for s in engine.states for t in s)))
    with pytest.raises(ValueError, match="cuda_graph"):
        DecodeEngine(retnet64, max_batch=1, max_len=8, cuda_graph=True)
    with pytest.raises(ValueError, match="max_batch"):
        DecodeEngine(retnet64, max_batch=0, max_len=8)
    with pytest.raises(ValueError, match="dtype"):
        DecodeEngine(retnet64, max_batch=1, max_len=8, dtype=torch.int8)
    with pytest.raises(ValueError, match="eos_token_id"):
        DecodeEngine(retnet64, max_batch=1, max_len=8, eos_token_id=VOCAB)
    assert next(retnet64.parameters()).dtype == torch.float64  # nothing was cast by the refused engines
    dropout = RetNetForCausalLM(RetNetConfig.from_preset("debug", dropout=0.1))  # training mode
    with pytest.raises(ValueError, match="model.eval"):
        DecodeEngine(dropout, max_batch=1, max_len=8)
    with pytest.raises(ValueError, match="input_ids|0, 256"):
        retnet64.generate(torch.tensor([[300]]), use_engine=True)


def test_architectures_without_static_state_get_a_clear_error():
    model = MixerLM(MixerLMConfig(arch="rwkv", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, ffn_dim=64))
    with pytest.raises(TypeError, match="architecture 'rwkv'.*decode_step_"):
        DecodeEngine(model, max_batch=1, max_len=8)
    with pytest.raises(TypeError, match="rwkv"):
        model.generate(torch.tensor([[1, 2]]), max_new_tokens=2, use_engine=True)
    assert model.generate(torch.tensor([[1, 2]]), max_new_tokens=2).shape == (1, 4)  # the eager loop


def test_dtype_cast_is_explicit():
    model = RetNetForCausalLM(RetNetConfig.from_preset("debug")).eval()
    engine = DecodeEngine(model, max_batch=1, max_len=8, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16 and engine.dtype == torch.bfloat16
    assert engine.states[0].S.dtype == torch.float32  # the retention state stays float32
    engine.add([[1, 2, 3]])
    assert 0 <= int(engine.step()[0]) < VOCAB


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_in_place_torch_step_is_the_recurrent_reference_bit_for_bit(dtype):
    from retnet.layers.retention import _recurrent_step_
    from retnet.ops.retention import RetentionState, recurrent_ref

    B, H, K, V = 3, 2, 8, 16
    S, z, position = torch.randn(B, H, K, V, dtype=dtype), torch.randn(B, H, K, dtype=dtype), torch.tensor([5, -1, 0])
    q, k, v = (torch.randn(B, 1, H, d, dtype=dtype) for d in (K, K, V))
    log_decay = torch.tensor([0.9, 0.999], dtype=dtype).log()
    o_ref, s_ref = recurrent_ref(q, k, v, log_decay, RetentionState(S.clone(), z.clone(), position.clone()))
    state = RetentionState(S, z, position)
    o = _recurrent_step_(q[:, 0], k[:, 0], v[:, 0], log_decay, state)
    assert torch.equal(o, o_ref[:, 0]) and torch.equal(o[1], torch.zeros_like(o[1]))  # row 1 is left padding
    assert all(torch.equal(a, b) for a, b in zip(state, s_ref))


def test_triton_step_equals_the_torch_step():
    """The fused step kernel (Triton's interpreter on CPU) against the in-place PyTorch step, float32."""
    from retnet.layers.retention import MultiScaleRetention

    torch.manual_seed(1)
    fast = MultiScaleRetention(32, 2, 64, backend="triton")
    slow = MultiScaleRetention(32, 2, 64, backend="torch")
    slow.load_state_dict(fast.state_dict())
    states = [m.allocate_decode_state(3, 8, torch.device("cpu"), torch.float32) for m in (fast, slow)]
    x = torch.randn(3, 5, 32)
    rows = torch.arange(3)
    for m, s in zip((fast, slow), states):
        m.prefill_decode_state_(x, s, rows, 0, chunk_size=4)
    for t in range(3):
        x_t = torch.randn(3, 32)
        assert_close(fast.decode_step_(x_t, states[0]), slow.decode_step_(x_t, states[1]), 1e-5, name=f"step {t}")
    for a, b, name in zip(*states, states[0]._fields):
        assert_close(a.double(), b.double(), 1e-5, name=name)


@pytest.mark.parametrize("arch", ["retnet", "transformer"])
def test_a_compiled_step_traces_whole_and_gives_the_same_tokens(arch, retnet64, transformer64):
    """``compile=`` traces a layer's step as one graph (fullgraph) that serves every layer, and changes nothing;
    ``aot_eager`` keeps CPU time low."""
    model = retnet64 if arch == "retnet" else transformer64
    assert len(decoder_parts(model).blocks) > 1
    sampling = SamplingConfig(do_sample=True, top_k=20, top_p=0.9, repetition_penalty=1.2)
    runs = []
    torch._dynamo.reset()
    for compile in (False, "aot_eager"):
        engine = DecodeEngine(model, max_batch=2, max_len=16, sampling=sampling, eos_token_id=7, compile=compile)
        engine.add([[1, 2, 3], [4, 5, 6, 7, 8]], seeds=[1, 2])
        runs.append((_run(engine, 6, [0, 1]), engine.logits.clone()))
    assert len(_debug_get_cache_entry_list(engine_module._block_step.__code__)) == 1  # one graph for all layers
    assert runs[0][0] == runs[1][0]
    assert_close(runs[1][1], runs[0][1], 1e-12, name="logits after the last step")


@pytest.mark.parametrize("arch", ["retnet", "transformer"])
def test_a_compiled_prefill_in_pieces_gives_the_same_logits(arch, transformer64):
    """Prompts of several lengths prefilled in pieces through the compiled prefill end with the eager prefill's
    logits. RetNet runs its Triton kernels (the GPU's path, here under the interpreter), whose custom ops keep the
    sequence length out of the graph: after the first piece length one dynamic graph serves every length, so a
    new sequence, a continued one and a one-token piece take four graphs in all, however many lengths follow."""
    if arch == "retnet":
        torch.manual_seed(0)
        model = RetNetForCausalLM(RetNetConfig.from_preset("debug", backend="triton", chunk_size=16)).eval()
    else:
        model = transformer64
    prompts = [list(range(1, 4)), list(range(2, 42)), list(range(5, 46)), list(range(7, 40))]
    torch._dynamo.reset()
    logits = []
    for compile in (False, "aot_eager"):
        engine = DecodeEngine(model, max_batch=4, max_len=64, prefill_chunk=20, compile=compile)
        engine.add(prompts)
        logits.append(engine.logits.clone())
    graphs = len(_debug_get_cache_entry_list(engine_module._block_prefill.__code__))
    if arch == "retnet":
        assert graphs == 4, graphs
    tol = 1e-12 if logits[0].dtype == torch.float64 else 1e-6
    assert_close(logits[1], logits[0], tol, name="logits after the prefill")


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["retnet", "transformer"])
def test_graph_step_equals_the_eager_step(arch):
    """The captured step replays exactly what the eager step computes; the compiled step stays within bf16 error."""
    torch.manual_seed(0)
    if arch == "retnet":
        model = RetNetForCausalLM(RetNetConfig.from_preset("tiny"))
    else:
        model = MixerLM(MixerLMConfig(arch="transformer", vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2))
    model = model.cuda().eval()
    sampling = SamplingConfig(do_sample=True, top_p=0.95, repetition_penalty=1.1)
    runs = {}
    for graph, compile in ((True, False), (False, False), (True, True)):
        engine = DecodeEngine(
            model, max_batch=4, max_len=64, sampling=sampling, dtype=torch.bfloat16, cuda_graph=graph,
            compile=compile,
        )  # fmt: skip
        assert engine.uses_cuda_graph == graph
        engine.add([[1, 2, 3], list(range(20)), [7]], seeds=[1, 2, 3])
        logits, tokens = [], []
        for i in range(12):
            if i == 5:
                engine.release([1])
                engine.add([[9, 9, 9, 9]], seeds=[4])
            tokens.append(engine.step().clone())
            logits.append(engine.logits.clone())
        runs[graph, compile] = (torch.stack(tokens), torch.stack(logits))
    graphed, eager, compiled = runs[True, False], runs[False, False], runs[True, True]
    assert torch.equal(graphed[0], eager[0]) and torch.equal(graphed[1], eager[1])
    # After one step both saw the same tokens (sampled from the same prefill logits); later tokens may differ.
    assert torch.equal(compiled[0][0], eager[0][0])
    assert_close(compiled[1][0].float(), eager[1][0].float(), 2e-2, name="compiled step's logits")


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["retnet", "transformer"])
@pytest.mark.parametrize("graph", [False, True])
def test_steps_never_synchronise_with_the_host(arch, graph):
    """Eager or replayed, a step (sampling, stop tokens, budgets included) makes no host synchronisation."""
    torch.manual_seed(0)
    if arch == "retnet":
        model = RetNetForCausalLM(RetNetConfig.from_preset("debug"))
    else:
        model = MixerLM(MixerLMConfig(arch="transformer", vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2))
    sampling = SamplingConfig(do_sample=True, top_k=30, top_p=0.9, repetition_penalty=1.2)
    engine = DecodeEngine(
        model.cuda().eval(), max_batch=3, max_len=32, sampling=sampling, eos_token_id=[5, 6], cuda_graph=graph,
        dtype=torch.bfloat16,
    )  # fmt: skip
    engine.add([[1, 2, 3], [4]], max_new_tokens=[8, 3])
    engine.step()  # first eager call: lazy initialisations may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(6):
            engine.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert engine.poll()[1]  # its budget of 3 tokens is spent
