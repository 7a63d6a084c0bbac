"""The rotation table: the same cos and sin, and the same rotated q and k, as the per-call formula; bad tables fail."""

import pytest
import torch

from retnet.layers import MultiScaleRetention, RotationTable, apply_rotation, rotation_frequencies, rotation_table


def rotation_by_formula(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The rotation as each layer computed it before the shared table (docs/spec.md §2), op for op."""
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = rotation_frequencies(x.shape[-1], dtype=dt, device=x.device)  # (K/2,)
    angle = positions.to(dt)[..., None] * theta  # (B, T, K/2)
    cos, sin = angle.cos()[:, :, None, :], angle.sin()[:, :, None, :]  # (B, T, 1, K/2)
    pairs = x.to(dt).unflatten(-1, (-1, 2))  # (B, T, H, K/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_table_rotates_bit_identically_to_the_formula(dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 37, 2, 16).to(dtype)
    padded = torch.arange(37)[None] - torch.tensor([[0], [5], [36]])  # (3, 37): left padding, negative positions
    shared = torch.arange(100, 137).expand(3, 37)  # one row expanded (no state): computed once
    dt = torch.float64 if dtype == torch.float64 else torch.float32
    for positions in (padded, shared):
        table = rotation_table(positions, 16, dtype=dt)
        assert isinstance(table, RotationTable) and table.cos.dtype == dt
        assert table.cos.shape == ((1 if positions is shared else 3), 37, 1, 8)
        assert torch.equal(apply_rotation(x, table), rotation_by_formula(x, positions))
        assert torch.equal(apply_rotation(x, positions), rotation_by_formula(x, positions))


def test_compiled_rotation_with_symbolic_sizes():
    """A block compiled once for other shapes recompiles with symbolic sizes; the table (a new input) keeps static
    ones, and the shape check must still pass."""
    x = torch.randn(4, 32, 2, 32)
    table = rotation_table(torch.arange(32).expand(4, 32), 32)
    for dim in range(4):
        torch._dynamo.maybe_mark_dynamic(x, dim)
    torch._dynamo.reset()
    compiled = torch.compile(apply_rotation, backend="eager", fullgraph=True)
    assert torch.equal(compiled(x, table), apply_rotation(x, table))


def test_a_layer_called_alone_builds_its_own_table():
    torch.manual_seed(0)
    layer = MultiScaleRetention(32, 2, 64, backend="torch").double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    offset = torch.tensor([0, -3])
    alone, _ = layer(x, offset=offset)
    positions = torch.arange(9)[None] + offset[:, None]  # (2, 9)
    given, _ = layer(x, offset=offset, rotation=layer.rotation_table(positions))
    assert torch.equal(alone, given)
    assert layer.rotation_table(positions).cos.dtype == torch.float64


def test_bad_tables_are_refused():
    x = torch.randn(2, 5, 2, 8)
    positions = torch.arange(5).expand(2, 5)
    with pytest.raises(ValueError, match="rotation is torch.float64"):
        apply_rotation(x, rotation_table(positions, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="rotation must be"):
        apply_rotation(x, rotation_table(positions, 16))  # another head dim
    with pytest.raises(ValueError, match="rotation must be"):
        apply_rotation(x, rotation_table(torch.arange(4)[None], 8))  # another length
    with pytest.raises(ValueError, match="positions must be a"):
        rotation_table(positions.float(), 8)
    with pytest.raises(ValueError, match="positions must be a"):
        rotation_table(torch.arange(5), 8)
    with pytest.raises(ValueError, match="float32 or float64"):
        rotation_table(positions, 8, dtype=torch.bfloat16)
