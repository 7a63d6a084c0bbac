"""The comparison helper itself: an error confined to one row is not diluted, and the message names the row."""

import pytest
import torch

from tests.utils import assert_close, rel_error, row_errors


def test_one_bad_row_of_a_long_tensor_fails():
    expected = torch.randn(4096, 8, dtype=torch.float64)
    actual = expected.clone()
    actual[17] *= 1.01  # 1 % in one row: about 1.6e-4 over the whole tensor
    assert rel_error(actual, expected) < 1e-3
    with pytest.raises(AssertionError, match=r"worst row 17 at 1\.000e-02"):
        assert_close(actual, expected, 1e-3, name="x")


def test_rows_near_zero_are_judged_against_the_typical_row():
    expected = torch.randn(64, 8, dtype=torch.float64)
    expected[3] = 0.0  # a row that is zero by construction
    actual = expected.clone()
    actual[3] = 1e-12  # rounding noise: 1e-10 of a typical row (relative to its own zero norm: infinite)
    assert_close(actual, expected, 1e-9)
    assert row_errors(actual, expected)[3] > 0


def test_whole_tensor_error_and_shape_still_checked():
    expected = torch.ones(5, dtype=torch.float64)
    with pytest.raises(AssertionError, match="relative error 1.000e-01"):
        assert_close(expected * 1.1, expected, 1e-2)
    with pytest.raises(AssertionError, match="shape"):
        assert_close(torch.ones(4), torch.ones(5), 1e-2)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close(torch.tensor([float("nan")]), torch.ones(1), 1e-2)
    assert_close(torch.ones(0, 3), torch.ones(0, 3), 1e-12)
