"""RWKV-4's WKV on Triton against the PyTorch reference (wkv_chunked, and wkv_step token by token).

On CPU the kernels run under Triton's interpreter (tests/conftest.py selects it), which pays per program and per
token: the shapes are small (B 2, T 37, D 24; block 16 where the channel mask is under test).
"""

import pytest
import torch

from retnet.baselines.rwkv import NEG, RWKVTimeMix, wkv_chunked, wkv_step
from retnet.baselines.wkv_triton import wkv_triton
from tests.utils import RMS_TOLERANCE, assert_close

B, T, D = 2, 37, 24  # T prime, D not a multiple of the block


def inputs(dtype, key_scale=1.0):
    """k, v ``(B, T, D)``, w > 0 and u ``(D,)``, all requiring gradients."""
    k = key_scale * torch.randn(B, T, D, dtype=dtype)
    v = torch.randn(B, T, D, dtype=dtype)
    w = torch.rand(D, dtype=dtype) * 2 + 0.05  # per-token decays e^−w from 0.95 to 0.13
    u = torch.randn(D, dtype=dtype)
    return [x.requires_grad_() for x in (k, v, w, u)]


def random_state(dtype):
    """A state that earlier tokens could leave, each ``(B, D)``: a of any sign, b >= 1, p of a key's size except on
    the first 8 channels, where p ~ 40 stays the running maximum through the segment where w is small (so the
    gradient of the final p reaches the initial one)."""
    a = torch.randn(B, D, dtype=dtype)
    b = 1 + torch.rand(B, D, dtype=dtype)
    p = 2 * torch.randn(B, D, dtype=dtype)
    p[:, :8] += 40
    return [x.requires_grad_() for x in (a, b, p)]


def step_by_step(k, v, w, u, state):
    """wkv_step over the segment: ``(wkv (B, T, D), (a, b, p))``."""
    a, b, p = state
    ys = []
    for t in range(k.shape[1]):
        y, a, b, p = wkv_step(k[:, t], v[:, t], w, u, a, b, p)
        ys.append(y)
    return torch.stack(ys, dim=1), (a, b, p)


def loss_of(y, state, weights):
    """A random linear function of the output and (when ``weights`` has them) the final state."""
    return sum((x * g).sum() for x, g in zip((y, *state), weights))


def grads(loss, leaves):
    return torch.autograd.grad(loss, leaves)


def max_abs(a, b):
    return (a.detach().double() - b.detach().double()).abs().max().item()


def detached64(xs):
    return [x.detach().double().requires_grad_() for x in xs]


@pytest.mark.parametrize("key_scale", [1.0, 50.0], ids=["keys-1", "keys-50"])
def test_forward_and_final_state_match_chunked_float32(key_scale):
    """|k| ~ 50 would overflow a naive e^k in float32 (e^89 = inf); the running maximum keeps every term finite.

    Against float64, the budget is twice the float32 error of the same arithmetic run by wkv_step.
    """
    k, v, w, u = (x.detach() for x in inputs(torch.float32, key_scale))
    y, state = wkv_triton(k, v, w, u, block=16)
    chunked = wkv_chunked(k, v, w, u)
    empty = (torch.zeros(B, D), torch.zeros(B, D), torch.full((B, D), NEG))
    stepped = step_by_step(k, v, w, u, empty)
    exact = wkv_chunked(*(x.double() for x in (k, v, w, u)))
    for i, name in enumerate(("wkv", "a", "b", "p")):
        got, ref, ref_lp, ref64 = (r[0] if i == 0 else r[1][i - 1] for r in ((y, state), chunked, stepped, exact))
        assert_close(got, ref, RMS_TOLERANCE[torch.float32], name)
        budget = 2 * max_abs(ref_lp, ref64) + 1e-7 * ref64.abs().max().item()
        assert max_abs(got, ref64) <= budget, f"{name}: max err {max_abs(got, ref64):.3e} > {budget:.3e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64-output", "fp32-output+state"])
def test_gradients_match_autograd_through_chunked(dtype):
    """float64: the loss reads the output only; float32: the final state (a, b, p) too."""
    leaves = inputs(dtype)
    y, state = wkv_triton(*leaves)
    weights = [torch.randn_like(y)] + (
        [torch.randn(B, D, dtype=dtype) for _ in range(3)] if dtype == torch.float32 else []
    )
    got = grads(loss_of(y, state, weights), leaves)
    ref_leaves = [x.detach().clone().requires_grad_() for x in leaves]
    ref = grads(loss_of(*wkv_chunked(*ref_leaves), weights), ref_leaves)
    for name, g, r in zip("kvwu", got, ref):
        assert_close(g, r, 2 * RMS_TOLERANCE[dtype], f"d{name}")
    if dtype == torch.float32:  # and against float64: within 4x the float32 reference's own error
        leaves64 = detached64(leaves)
        exact = grads(loss_of(*wkv_chunked(*leaves64), [g.double() for g in weights]), leaves64)
        for name, g, r, e in zip("kvwu", got, ref, exact):
            budget = 4 * max_abs(r, e) + 1e-6 * e.abs().max().item()
            assert max_abs(g, e) <= budget, f"d{name}: max err {max_abs(g, e):.3e} > {budget:.3e}"


def test_initial_state_matches_step_by_step_float64():
    """Outputs, final state and the gradients of every input and of the initial state, as wkv_step gives them."""
    leaves = inputs(torch.float64) + random_state(torch.float64)
    k, v, w, u, *state0 = leaves
    y, state = wkv_triton(k, v, w, u, tuple(state0))
    ref_leaves = [x.detach().clone().requires_grad_() for x in leaves]
    ref_y, ref_state = step_by_step(*ref_leaves[:4], ref_leaves[4:])
    for name, got, ref in zip(("wkv", "a", "b", "p"), (y, *state), (ref_y, *ref_state)):
        assert_close(got, ref, RMS_TOLERANCE[torch.float64], name)
    weights = [torch.randn_like(y)] + [torch.randn(B, D, dtype=torch.float64) for _ in range(3)]
    got = grads(loss_of(y, state, weights), leaves)
    ref = grads(loss_of(ref_y, ref_state, weights), ref_leaves)
    for name, g, r in zip(("k", "v", "w", "u", "a0", "b0", "p0"), got, ref):
        assert_close(g, r, 2 * RMS_TOLERANCE[torch.float64], f"d{name}")


def test_compiled_fullgraph_gives_the_same_values_and_gradients():
    """The mixer's training path (token shift, projections, the op with its final state) compiled as one graph."""
    _, mix = mixers(16)
    x = torch.randn(2, 11, 16)

    def f(x):
        y, state = mix.parallel(x, output_state=True)
        return y, state.a + state.b, state.p

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got, ref = compiled(x), f(x)
    for name, g, r in zip(("y", "a + b", "p"), got, ref):
        assert torch.equal(g, r), f"{name}: compiled differs by {max_abs(g, r):.3e}"
    weights = [torch.randn_like(t) for t in got]
    params = list(mix.parameters())
    g_got = grads(loss_of(got[0], got[1:], weights), params)
    g_ref = grads(loss_of(ref[0], ref[1:], weights), params)
    for (name, _), g, r in zip(mix.named_parameters(), g_got, g_ref):
        assert torch.equal(g, r), f"grad {name}: compiled differs by {max_abs(g, r):.3e}"


def test_bad_inputs_raise_before_any_kernel_runs():
    k, v, w, u = (x.detach() for x in inputs(torch.float32))
    a, b, p = (x.detach() for x in random_state(torch.float32))
    cases = {
        "v must have k's shape": (k, v[:, :-1], w, u, None),
        "k must be \\(B, T, D\\)": (k[0], v[0], w, u, None),
        "B, T >= 1": (k[:, :0], v[:, :0], w, u, None),
        "w and u must be \\(D,\\)": (k, v, w[:-1], u, None),
        "initial_state.b must be \\(B, D\\)": (k, v, w, u, (a, b[:1], p)),
        "initial_state must be \\(a, b, p\\)": (k, v, w, u, (a, b)),
        "float32 or float64": (k.half(), v.half(), w.half(), u.half(), None),
        "k's dtype": (k, v.double(), w, u, None),
        "initial_state.p": (k, v, w, u, (a, b, p.double())),
        "k's device": (k, v.to("meta"), w, u, None),
    }
    for message, (k_, v_, w_, u_, state) in cases.items():
        with pytest.raises(ValueError, match=message):
            wkv_triton(k_, v_, w_, u_, state)
    with pytest.raises(ValueError, match="block"):
        wkv_triton(k, v, w, u, block=24)
    with pytest.raises(TypeError, match="u must be a tensor"):
        wkv_triton(k, v, w, u.tolist())


def test_empty_state_is_what_wkv_triton_starts_from():
    """An explicit empty state (p = NEG, a = b = 0) gives exactly the run without one."""
    k, v, w, u = (x.detach()[:1, :5] if x.dim() == 3 else x.detach() for x in inputs(torch.float32))
    zeros = torch.zeros(1, D)
    y, state = wkv_triton(k, v, w, u)
    y0, state0 = wkv_triton(k, v, w, u, (zeros, zeros, torch.full_like(zeros, NEG)))
    assert torch.equal(y, y0) and all(torch.equal(s, s0) for s, s0 in zip(state, state0))


def mixers(D_model, **kwargs):
    torch.manual_seed(1)
    torch_mix = RWKVTimeMix(D_model, layer_idx=1, num_layers=3, backend="torch", **kwargs)
    triton_mix = RWKVTimeMix(D_model, layer_idx=1, num_layers=3, backend="triton", **kwargs)
    triton_mix.load_state_dict(torch_mix.state_dict())
    return torch_mix, triton_mix


def test_mixer_triton_backend_matches_torch_backend():
    """The module's output, final state and every parameter's gradient on a tiny size (float32)."""
    torch_mix, triton_mix = mixers(16)
    x = torch.randn(2, 11, 16)
    (y_ref, s_ref), (y, s) = (m.parallel(x, output_state=True) for m in (torch_mix, triton_mix))
    assert_close(y, y_ref, RMS_TOLERANCE[torch.float32], "y")
    for name in ("a", "b", "p"):
        assert_close(getattr(s, name), getattr(s_ref, name), RMS_TOLERANCE[torch.float32], name)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    (y_ref * dy).sum().backward()
    for (name, p), p_ref in zip(triton_mix.named_parameters(), torch_mix.parameters()):
        assert_close(p.grad, p_ref.grad, 2 * RMS_TOLERANCE[torch.float32], f"grad {name}")


def test_mixer_backend_choice():
    with pytest.raises(ValueError, match="backend must be one of"):
        RWKVTimeMix(8, 0, 2, backend="cuda")
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    mix = RWKVTimeMix(8, 0, 2, backend="triton").double()
    assert not mix._uses_triton(x) and mix._uses_triton(x.float())  # float64 always takes the reference
    assert not RWKVTimeMix(8, 0, 2)._uses_triton(x.float())  # "auto" on CPU: the reference


@pytest.mark.gpu
def test_cuda_op_matches_reference(device):
    """fp32 on CUDA at a larger size, forward and gradients against float64 autograd through wkv_chunked."""
    torch.manual_seed(0)
    k = 5 * torch.randn(4, 300, 200, device=device)
    v, w, u = torch.randn_like(k), torch.rand(200, device=device) + 0.01, torch.randn(200, device=device)
    leaves = [x.requires_grad_() for x in (k, v, w, u)]
    y, state = wkv_triton(*leaves)
    leaves64 = detached64(leaves)
    y64, state64 = wkv_chunked(*leaves64)
    for name, got, ref in zip(("wkv", "a", "b", "p"), (y, *state), (y64, *state64)):
        assert_close(got, ref, RMS_TOLERANCE[torch.float32], name)
    dy = torch.randn_like(y)
    for name, g, r in zip("kvwu", grads((y * dy).sum(), leaves), grads((y64 * dy.double()).sum(), leaves64)):
        assert_close(g, r, 2 * RMS_TOLERANCE[torch.float32], f"d{name}")


@pytest.mark.gpu
def test_cuda_mixer_bf16_autocast_matches_torch_backend(device):
    torch_mix, triton_mix = (m.to(device) for m in mixers(64))
    x = torch.randn(2, 100, 64, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y_ref, _ = torch_mix.parallel(x)
        y, _ = triton_mix.parallel(x)
    assert_close(y.float(), y_ref.float(), RMS_TOLERANCE[torch.bfloat16], "y")
    dy = torch.randn_like(y)
    (y * dy).float().sum().backward()
    (y_ref * dy).float().sum().backward()
    for (name, p), p_ref in zip(triton_mix.named_parameters(), torch_mix.parameters()):
        assert_close(p.grad, p_ref.grad, 2 * RMS_TOLERANCE[torch.bfloat16], f"grad {name}")
