"""linear_solve reports CONVERGED only when converged: tolerances relative to ‖b‖ (atol 0 by
default), b ~ 1e±200 without overflow, b = 0 gives y = 0, NaN makes one element NONFINITE."""

from __future__ import annotations

import pytest
import torch

from diffnum.solve import CG, GMRES, LU, Status, linear_solve

DT = torch.float64
N = 12
OK, BAD = int(Status.CONVERGED), int(Status.NONFINITE)
SOLVERS = {"direct": LU, "cg": CG, "gmres": GMRES}


def _solver(method: str, **options):
    """The solver object of a method name; tolerances only where the solver has them."""
    return SOLVERS[method](**({} if method == "direct" else options))


def _problem(method: str, seed: int = 0):
    """Three well-conditioned systems (cond <= ~5): SPD for CG, nonsymmetric otherwise."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3, N, N, dtype=DT, generator=g)
    eye = torch.eye(N, dtype=DT)
    A = X @ X.mT / N + eye if method == "cg" else X / N**0.5 + 2 * eye
    return A, torch.randn(3, N, dtype=DT, generator=g)


def _matvec(A: torch.Tensor, nan_from_call: int | None = None):
    """y -> A y; from call number ``nan_from_call`` on, batch element 1's output is NaN."""
    calls = 0

    def matvec(y: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        out = (A @ y.unsqueeze(-1)).squeeze(-1)
        if nan_from_call is not None and calls >= nan_from_call:
            out[1] = float("nan")
        return out

    return matvec


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((y - ref).norm(dim=-1) / ref.norm(dim=-1)).max())


@pytest.mark.parametrize("scale", [1e-12, 1e-200, 1e200])
@pytest.mark.parametrize("method", ["direct", "cg", "gmres"])
def test_tiny_and_huge_b_are_solved_relative_to_b(method, scale):
    # Before: the absolute atol default (1e-8) accepted y = 0 for b = 1e-12·b₀, ‖b‖
    # underflowed to 0 for 1e-200 and overflowed to inf (tolerance inf) for 1e200.
    A, b0 = _problem(method)
    sol = linear_solve(A, scale * b0, solver=_solver(method, rtol=1e-12))  # atol: default
    assert sol.status.tolist() == [OK] * 3
    # Relative residual 1e-12, cond(A) <= ~5: y = scale·y₀ to ~1e-11.
    assert _relative_error(sol.value / scale, torch.linalg.solve(A, b0)) <= 1e-8
    assert bool((sol.residual_norm <= 1e-12 * scale * b0.norm(dim=-1)).all())


@pytest.mark.parametrize("method", ["direct", "cg", "gmres"])
def test_zero_b_gives_exactly_zero(method):
    A, b = _problem(method)
    b[1] = 0.0
    sol = linear_solve(A, b, solver=_solver(method), x0=torch.ones_like(b))  # x0: not by LU
    assert sol.status.tolist() == [OK] * 3
    assert bool((sol.value[1] == 0).all()) and float(sol.residual_norm[1]) == 0
    # Default rtol 1e-8, cond(A) <= ~5.
    assert _relative_error(sol.value[0::2], torch.linalg.solve(A, b)[0::2]) <= 1e-6


def test_rtol_zero_needs_an_absolute_tolerance():
    A, b = _problem("cg")
    with pytest.raises(ValueError, match="rtol = 0 needs atol > 0"):
        linear_solve(A, b, solver=CG(rtol=0.0))
    assert linear_solve(A, b, solver=CG(rtol=0.0, atol=1e-10)).all_converged


@pytest.mark.parametrize("nan_from_call", [1, 3])  # from the start / within the iteration
@pytest.mark.parametrize("method", ["cg", "gmres"])
def test_nan_matvec_fails_only_its_element(method, nan_from_call):
    A, b = _problem(method)
    sol = linear_solve(_matvec(A, nan_from_call), b, solver=_solver(method, rtol=1e-12))
    assert sol.status.tolist() == [OK, BAD, OK]
    for i in (0, 2):
        alone = linear_solve(_matvec(A[i]), b[i], solver=_solver(method, rtol=1e-12))
        assert int(alone.status) == OK and int(sol.steps[i]) == int(alone.steps)
        torch.testing.assert_close(sol.value[i], alone.value, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_matrix_direct_fails_only_its_element(bad):
    A, b = _problem("direct")
    A[1, 2, 3] = bad
    sol = linear_solve(A, b)
    assert sol.status.tolist() == [OK, BAD, OK]
    for i in (0, 2):
        alone = linear_solve(A[i], b[i])
        assert int(alone.status) == OK
        torch.testing.assert_close(sol.value[i], alone.value, rtol=1e-12, atol=1e-14)
