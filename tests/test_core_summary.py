"""Every result dataclass prints as one short line, whatever the size of its tensors."""

from __future__ import annotations

import torch

import diffnum.factor as df
from diffnum.pde import uniform_grid
from diffnum.solve import least_squares


def _check(obj, name: str, *must: str) -> None:
    text = repr(obj)
    assert "\n" not in text and len(text) < 400, text
    assert text.startswith(f"{name}(") and all(m in text for m in must), text


def test_results_print_on_one_line():
    sol = least_squares(lambda y: y - 1, torch.zeros(64, 3, dtype=torch.float64))
    _check(sol, "Solution", "value=tensor(64×3, float64)", "converged 64/64")
    A, _ = df.synthetic_matrix(300, 200, "low_rank", rank=10)
    _check(df.cur(A, 10), "MetaFactorization", "A=tensor(300×200, float64)")
    grid = uniform_grid({"x": (0.0, 1.0, 200), "t": (0.0, 1.0, 100)})
    _check(grid, "Grid", "coordinates=(tensor(200, float64), tensor(100, float64))")
