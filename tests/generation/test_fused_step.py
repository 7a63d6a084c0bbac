"""The engine's fused RetNet step: its kernels against PyTorch, the fused engine against the default one, refusals.

On CPU the kernels run through Triton's interpreter in float32 (tests/conftest.py); the GPU tests check bf16
within the reference's own bf16 error and that the captured step replays the eager one exactly.
"""

import pytest
import torch

from retnet import RetNetConfig, RetNetForCausalLM
from retnet.baselines import MixerLM, MixerLMConfig
from retnet.generation import DecodeEngine, FusedLaunches
from retnet.generation.decoder_parts import decoder_parts
from retnet.generation.engine import _block_step
from retnet.generation.fused_step import FusedDecodeStep
from retnet.layers.norm import LayerNorm, RMSNorm
from retnet.layers.position import apply_rotation, rotation_table
from retnet.ops.decode.launch import MatvecLaunch
from retnet.ops.decode.projections import paired_projection, projection
from tests.utils import assert_close, assert_within_reference_error

# Few, wide programs: the interpreter's cost is per program, and the values do not depend on the launch.
WIDE = MatvecLaunch(32, 64, 4, 1)
TEST_LAUNCHES = FusedLaunches(qkvg=WIDE, output=WIDE, ffn_in=WIDE, ffn_out=WIDE, head=WIDE)
VARIANTS = {
    "torchscale": {},
    "paper": {"flavour": "paper"},  # LayerNorm with bias, GroupNorm heads, GELU MLP (no GLU)
    "ungated_plain_heads": {"use_gate": False, "head_norm": "none", "activation": "relu"},
}


def _model(variant: str, seed: int = 0, **sizes) -> RetNetForCausalLM:
    torch.manual_seed(seed)
    dims = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_heads=2, value_dim=48, ffn_dim=40)
    cfg = RetNetConfig(**{**dims, **sizes, **VARIANTS[variant]})
    model = RetNetForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights and biases, which the default init leaves at 1 and 0
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


def _decode(model, fused, steps: int = 5):
    engine = DecodeEngine(model, max_batch=3, max_len=24, fused=fused)
    engine.add([[3, 1, 4, 1, 5], [9, 2]])  # two prompts of different lengths, one free slot
    tokens, logits = [], []
    for i in range(steps):
        if i == 2:  # continuous batching: a slot freed and refilled between steps
            engine.release([1])
            engine.add([[7, 7, 8]])
        tokens.append(engine.step().clone())
        logits.append(engine.logits.clone())
    return engine, torch.stack(tokens), torch.stack(logits)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_engine_emits_the_default_engines_tokens_and_logits(variant):
    model = _model(variant)
    default, tokens, logits = _decode(model, fused=False)
    fused, fused_tokens, fused_logits = _decode(model, fused=TEST_LAUNCHES)
    assert fused.uses_fused_step and not default.uses_fused_step
    assert torch.equal(fused_tokens, tokens)
    assert_close(fused_logits, logits, 1e-4, name=f"{variant} logits")
    for i, (a, b) in enumerate(zip(fused.states, default.states)):
        assert_close(a.S, b.S, 1e-4, name=f"layer {i} S")
        assert_close(a.z, b.z, 1e-4, name=f"layer {i} z")
        assert torch.equal(a.position, b.position)


def test_fused_step_follows_in_place_weight_updates():
    """The fused step reads the model's own (stacked) parameters, so ``load_state_dict`` after building reaches it."""
    model = _model("torchscale")
    engine = DecodeEngine(model, max_batch=1, max_len=16, fused=TEST_LAUNCHES)
    other = _model("torchscale", seed=1)
    model.load_state_dict(other.state_dict())
    expected = DecodeEngine(other, max_batch=1, max_len=16, fused=False)
    for e in (engine, expected):
        e.add([[4, 5, 6]])
        e.step()
    assert_close(engine.logits, expected.logits, 1e-4, name="logits after load_state_dict")


def _reference_projection(x, weight, norm, activation=None, residual=None):
    y = torch.nn.functional.linear(norm(x) if norm is not None else x, weight)
    y = activation(y) if activation is not None else y
    return y if residual is None else y + residual


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("kind", ["rmsnorm", "layernorm", "none"])
def test_projection_kernel_equals_its_pytorch_definition(B, kind):
    N, K = 37, 100  # neither a multiple of the launch's rows nor of its columns
    x, w, res = torch.randn(B, K), torch.randn(N, K) / K**0.5, torch.randn(B, N)
    norm = {"rmsnorm": RMSNorm(K, 1e-5), "layernorm": LayerNorm(K, eps=1e-5), "none": None}[kind]
    args = {}
    if norm is not None:
        with torch.no_grad():
            for p in norm.parameters():
                p.add_(0.3 * torch.randn_like(p))
        args = {"norm": kind, "norm_weight": norm.weight.detach(), "eps": 1e-5}
        args["norm_bias"] = norm.bias.detach() if kind == "layernorm" else None
    launch = MatvecLaunch(8, 32, 4, 1)
    for activation, fn in (("none", None), ("silu", torch.nn.functional.silu), ("gelu", torch.nn.functional.gelu)):
        got = projection(x, w, torch.empty(B, N), launch, activation=activation, **args)
        assert_close(got, _reference_projection(x, w, norm, fn), 1e-5, name=f"{kind} {activation}")
    out = res.clone()  # the residual's buffer is the output's, as the engine chains them
    projection(x, w, out, launch, residual=out, **args)
    assert_close(out, _reference_projection(x, w, norm, residual=res), 1e-5, name=f"{kind} + residual")


@pytest.mark.parametrize("batch_table", [True, False])
def test_paired_projection_rotates_q_and_k_and_scales_k(batch_table):
    B, D, H, K, V = 3, 24, 2, 8, 6
    N = 2 * H * K + 2 * H * V
    x, w = torch.randn(B, D), torch.randn(N, D)
    positions = torch.tensor([[5], [0], [17]]) if batch_table else torch.tensor([[11]])
    table = rotation_table(positions, K)
    got = paired_projection(
        x, w, torch.empty(B, N), MatvecLaunch(4, 16, 4, 1), rotation=table, rotated_rows=2 * H * K,
        key_rows_from=H * K, head_dim=K, key_scale=K**-0.5,
    )  # fmt: skip
    y = x @ w.T
    q, k = y[:, : H * K].view(B, 1, H, K), y[:, H * K : 2 * H * K].view(B, 1, H, K)
    expected = torch.cat(
        [apply_rotation(q, table).flatten(1), apply_rotation(k * K**-0.5, table).flatten(1), y[:, 2 * H * K :]], 1
    )
    assert_close(got, expected, 1e-5, name="rotated stacked projection")


def test_paired_projection_glu():
    B, D, F = 2, 40, 23
    x, w = torch.randn(B, D), torch.randn(2 * F, D) / D**0.5
    got = paired_projection(x, w, torch.empty(B, F), MatvecLaunch(4, 16, 4, 1), glu_activation="silu")
    a, b = (x @ w.T).split(F, dim=1)
    assert_close(got, torch.nn.functional.silu(a) * b, 1e-5, name="GLU")


def test_the_fused_step_is_refused_with_its_reason():
    model = _model("torchscale")
    with pytest.raises(ValueError, match="max_batch 5 > 4"):
        DecodeEngine(model, max_batch=5, max_len=8, fused=True)
    with pytest.raises(ValueError, match="not stacked"):
        DecodeEngine(_model("torchscale"), max_batch=1, max_len=8, fused=True, pack_weights=False)
    with pytest.raises(ValueError, match="fused must be"):
        DecodeEngine(model, max_batch=1, max_len=8, fused="yes")
    cfg = MixerLMConfig(arch="transformer", vocab_size=61, hidden_size=32, num_hidden_layers=1, ffn_dim=64)
    transformer = MixerLM(cfg).eval()
    with pytest.raises(ValueError, match="not multi-scale retention"):
        DecodeEngine(transformer, max_batch=1, max_len=8, fused=True)
    assert not DecodeEngine(transformer, max_batch=1, max_len=8).uses_fused_step
    # On CPU the default step stays the default (the interpreter would be far slower).
    assert not DecodeEngine(model, max_batch=1, max_len=8).uses_fused_step
    with pytest.raises(ValueError, match="power of two"):
        MatvecLaunch(3, 64)
    with pytest.raises(ValueError, match="rows >= 2"):
        FusedDecodeStep(decoder_parts(model), 1, FusedLaunches(qkvg=MatvecLaunch(1, 64))).block_step(
            decoder_parts(model).blocks[0], torch.zeros(1, 32), model.model.layers[0].retention.allocate_decode_state(
                1, 8, torch.device("cpu"), torch.float32
            )
        )  # fmt: skip


def _teacher_forced(model, tokens: torch.Tensor, step=None) -> torch.Tensor:
    """Logits ``(T, B, vocab)`` of stepping every layer over ``tokens`` ``(T, B)`` from empty states, with the
    default block step or a fused one (its head too)."""
    parts = decoder_parts(model)
    dtype = next(model.parameters()).dtype
    B = tokens.shape[1]
    states = [b.mixer.allocate_decode_state(B, 1, tokens.device, dtype) for b in parts.blocks]
    block_step = _block_step if step is None else step.block_step
    out = []
    for token in tokens:
        rotation = parts.blocks[0].mixer.rotation_table(states[0].position[:, None])
        x = parts.embed(token)
        for block, state in zip(parts.blocks, states):
            x = block_step(block, x, state, rotation)
        if step is None:
            out.append(parts.head(x).double())
        else:
            logits = torch.empty(B, parts.vocab_size, device=x.device)
            step.head_step(x, logits)
            out.append(logits.double())
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_fused_step_is_within_the_references_error(dtype):
    """16-bit weights under the interpreter: the fused logits as close to float64 as the default step's are."""
    model = _model("paper")
    tokens = torch.randint(0, 61, (5, 2))
    ref64 = _teacher_forced(model.double(), tokens)
    model = model.to(dtype)
    ref_lp = _teacher_forced(model, tokens)
    parts = decoder_parts(model)
    for block in parts.blocks:
        block.mixer.pack_decode_weights_()
        block.ffn.pack_decode_weights_()
    got = _teacher_forced(model, tokens, FusedDecodeStep(parts, 2, TEST_LAUNCHES))
    assert_within_reference_error(f"{dtype} logits", got, ref64, ref_lp, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("B", [1, 4])
def test_bf16_fused_step_is_within_the_references_bf16_error(variant, B):
    """At the 1.3B preset's head geometry (K 256, V 432, FFN 3456; two layers), bf16 weights."""
    sizes = dict(vocab_size=4096, hidden_size=2048, num_heads=8, value_dim=3456, ffn_dim=3456)
    model = _model(variant, **sizes).cuda()
    tokens = torch.randint(0, 4096, (8, B), device="cuda")
    ref64 = _teacher_forced(model.double(), tokens)
    model = model.to(torch.bfloat16)
    ref_bf16 = _teacher_forced(model, tokens)
    parts = decoder_parts(model)
    for block in parts.blocks:
        block.mixer.pack_decode_weights_()
        block.ffn.pack_decode_weights_()
    got = _teacher_forced(model, tokens, FusedDecodeStep(parts, B))
    assert_within_reference_error(f"{variant} logits", got, ref64, ref_bf16, torch.bfloat16)


@pytest.mark.gpu
def test_captured_fused_step_replays_the_eager_one():
    torch.manual_seed(0)
    model = RetNetForCausalLM(RetNetConfig.from_preset("tiny")).cuda().eval()
    runs = []
    for graph in (True, False):
        engine = DecodeEngine(model, max_batch=2, max_len=48, dtype=torch.bfloat16, cuda_graph=graph, fused=True)
        assert engine.uses_fused_step and engine.uses_cuda_graph == graph
        engine.add([[1, 2, 3], list(range(20))])
        steps = [(engine.step().clone(), engine.logits.clone()) for _ in range(10)]
        runs.append([torch.stack(t) for t in zip(*steps)])
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_dependent_launch_is_refused_where_it_cannot_run():
    from retnet.ops.decode.dependent import dependent_launch_available, launch_options

    assert not dependent_launch_available(torch.device("cpu"))
    assert launch_options(False, torch.device("cpu")) == {}
    with pytest.raises(ValueError, match="compute capability"):
        launch_options(True, torch.device("cpu"))
    x, w = torch.randn(1, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="compute capability"):
        projection(x, w, torch.empty(1, 4), WIDE, dependent=True)
    # The engine's step asks for it by default and uses it only where it can run.
    parts = decoder_parts(_model("torchscale"))
    for block in parts.blocks:
        block.mixer.pack_decode_weights_()
        block.ffn.pack_decode_weights_()
    assert FusedLaunches().dependent and not FusedDecodeStep(parts, 1, TEST_LAUNCHES).dependent


@pytest.mark.gpu
@pytest.mark.parametrize("B", [1, 2])
def test_dependent_launches_compute_what_serial_launches_do(B):
    """Programmatic dependent launch changes when each kernel starts, never what it computes: captured runs with
    and without it emit bitwise the same logits over many steps (a kernel that read a buffer before its producer
    finished, or wrote one its predecessor still read, would not). 1.3B head geometry, four layers, bf16."""
    from retnet.ops.decode.dependent import dependent_launch_available

    if not dependent_launch_available(torch.device("cuda")):
        pytest.skip("needs a GPU of compute capability 9.0 or newer")
    sizes = dict(vocab_size=4096, hidden_size=2048, num_heads=8, value_dim=3456, ffn_dim=3456, num_hidden_layers=4)
    model = _model("torchscale", **sizes).cuda().to(torch.bfloat16)
    runs = []
    for dependent in (True, False):
        engine = DecodeEngine(model, max_batch=B, max_len=96, fused=FusedLaunches(dependent=dependent))
        assert engine.uses_cuda_graph and engine._fused.dependent == dependent
        engine.add([list(range(1, 12)), [5, 6, 7]][:B], max_new_tokens=80)
        steps = [(engine.step().clone(), engine.logits.clone()) for _ in range(64)]
        runs.append([torch.stack(t) for t in zip(*steps)])
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
