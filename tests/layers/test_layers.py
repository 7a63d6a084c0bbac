"""Rotation (docs/spec.md §2), head-wise norm and FFN (docs/spec.md §4, §5)."""

import pytest
import torch

from retnet.layers import FeedForward, HeadNorm, MultiScaleRetention, apply_rotation, rotation_frequencies
from tests.utils import assert_close


def test_rotation_frequencies():
    theta = rotation_frequencies(256, dtype=torch.float64)
    assert theta.shape == (128,)
    assert theta[0].item() == 1.0
    assert abs(theta[-1].item() - 1e-4) < 1e-18
    assert rotation_frequencies(2).tolist() == [1.0]
    with pytest.raises(ValueError):
        rotation_frequencies(5)


def test_rotation_is_complex_multiplication_on_interleaved_pairs():
    x = torch.randn(2, 5, 3, 8, dtype=torch.float64)
    pos = torch.arange(5).expand(2, 5) + torch.tensor([[0], [100]])
    theta = rotation_frequencies(8, dtype=torch.float64)
    as_complex = torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())  # pairs (2i, 2i+1) = a + ib
    expected = torch.view_as_real(
        as_complex * torch.polar(torch.ones((), dtype=torch.float64), pos[..., None, None] * theta)
    )
    assert_close(apply_rotation(x, pos), expected.flatten(-2), 1e-14, "rotation")


def test_rotation_preserves_relative_scores():
    q, k = torch.randn(2, 1, 4, 1, 16, dtype=torch.float64)
    s1 = (apply_rotation(q, torch.tensor([[7]])) * apply_rotation(k, torch.tensor([[3]]))).sum()
    s2 = (apply_rotation(q, torch.tensor([[104]])) * apply_rotation(k, torch.tensor([[100]]))).sum()
    assert abs(s1 - s2) < 1e-12


@pytest.mark.parametrize("kind", ["rms", "groupnorm"])
def test_head_norm_normalises_each_head_alone(kind):
    norm = HeadNorm(3, 4, eps=1e-12, kind=kind).double()
    o = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    scaled = o * torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)[:, None]
    assert_close(norm(scaled), norm(o), 1e-9, "per-head scale invariance")
    assert norm(o).shape == (2, 5, 12)


def test_head_norm_equals_the_torch_definitions():
    """groupnorm is ``F.group_norm`` with H groups over the H·V channels (mean and variance, affine); rms is
    ``F.rms_norm`` over each head's V channels without affine parameters."""
    H, V, eps = 3, 4, 1e-5
    o = torch.randn(2, 5, H, V, dtype=torch.float64) + 0.7  # a nonzero mean, so mean subtraction matters
    group = HeadNorm(H, V, eps=eps, kind="groupnorm").double()
    with torch.no_grad():
        group.weight.copy_(torch.randn(H * V))
        group.bias.copy_(torch.randn(H * V))
    flat = o.reshape(-1, H * V)  # (B·T, H·V): group_norm's (N, C)
    expected = torch.nn.functional.group_norm(flat, H, group.weight, group.bias, eps).reshape(2, 5, H * V)
    assert_close(group(o), expected, 1e-13, "groupnorm")
    expected = torch.nn.functional.rms_norm(o, (V,), eps=eps).flatten(-2)
    assert_close(HeadNorm(H, V, eps=eps, kind="rms")(o), expected, 1e-13, "rms")


def test_glu_ffn_activation_on_fc1():
    ffn = FeedForward(4, 6, "swish", glu=True).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    expected = ffn.fc2(torch.nn.functional.silu(ffn.fc1(x)) * ffn.gate(x))
    assert_close(ffn(x), expected, 1e-15, "glu")
    with pytest.raises(ValueError, match="unknown activation"):
        FeedForward(4, 6, "tanhh")


def test_msr_forms_agree_and_validate():
    msr = MultiScaleRetention(16, 2, 24).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    y_p, s_p = msr(x, form="parallel", output_state=True)
    y_r, s_r = msr(x, form="recurrent", output_state=True)
    assert_close(y_r, y_p, 1e-10, "MSR recurrent")
    assert_close(s_r.S, s_p.S, 1e-10, "MSR state")
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleRetention(16, 3, 24)
    with pytest.raises(ValueError, match="unknown decay schedule"):
        MultiScaleRetention(16, 2, 24, decay_schedule="fast")
