"""Shared validation and dtype helpers. No math of its own."""

from diffnum._core.markdown import markdown_table
from diffnum._core.validation import (
    check_finite,
    check_int_in_range,
    check_matrix,
    check_one_of,
    check_same_batch,
    real_floating_dtype,
)

__all__ = [
    "check_finite",
    "check_int_in_range",
    "check_matrix",
    "check_one_of",
    "check_same_batch",
    "markdown_table",
    "real_floating_dtype",
]
