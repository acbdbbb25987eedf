"""Shared validation helpers."""

import pytest
import torch

from diffnum._core import check_finite, check_int_in_range, check_matrix, markdown_table


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    x = torch.full((4,), 3e38, dtype=torch.float32)  # each finite, the sum is inf
    check_finite("x", x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_counts_bad_entries(bad):
    x = torch.ones(5, dtype=torch.float64)
    x[[1, 3]] = bad
    with pytest.raises(ValueError, match="x must be finite, got 2 non-finite entries"):
        check_finite("x", x)


def test_matrix_and_int_checks_name_the_argument():
    with pytest.raises(ValueError, match=r"A must have non-empty matrix dimensions"):
        check_matrix("A", torch.ones(0, 3))
    with pytest.raises(TypeError, match="k must be an int, got bool"):
        check_int_in_range("k", True, 1, 3)


def test_markdown_table_formats_numbers():
    table = markdown_table(["a", "b"], [[1.23456, 1e-9], ["x", float("nan")]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1.235 | 1.00e-09 |",
                                  "| x | nan |"]
