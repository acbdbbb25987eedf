"""linear_solve: LU / Cholesky / CG / GMRES against torch.linalg.solve, gradients, custom
backward."""

from __future__ import annotations

import pytest
import torch

from diffnum.solve import CG, GMRES, LU, Cholesky, Status, UnrollAdjoint, linear_solve
from diffnum.solve._linear import operator_solve

DT = torch.float64
N = 20


def _spd(seed: int, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3, N, N, dtype=DT, generator=g).requires_grad_(requires_grad)
    b = torch.randn(3, N, dtype=DT, generator=g)
    return X, b


def _spd_matrix(X):
    return X @ X.mT / N + torch.eye(N, dtype=DT)  # eigenvalues in [1, ~5]


def _nonsymmetric(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, N, N, dtype=DT, generator=g) / N**0.5 + 2 * torch.eye(N, dtype=DT)


@pytest.mark.parametrize("solver", [LU(), Cholesky(), CG(rtol=1e-13, atol=1e-14),
                                    GMRES(rtol=1e-13, atol=1e-14)])
def test_solutions_match_dense_solve(solver):
    X, b = _spd(0)
    A = _spd_matrix(X) if not isinstance(solver, GMRES) else _nonsymmetric(1)
    sol = linear_solve(A, b, solver=solver)
    assert sol.all_converged
    # cond(A) <= ~5: a relative residual of 1e-13 bounds the error by ~1e-12.
    torch.testing.assert_close(sol.value, torch.linalg.solve(A, b), rtol=0, atol=1e-11)
    assert float(sol.residual_norm.max()) <= 1e-12


def test_jacobi_preconditioner_helps_cg_on_badly_scaled_matrix():
    X, b = _spd(2)
    d = torch.logspace(0, 4, N, dtype=DT)
    A = d.sqrt()[:, None] * _spd_matrix(X) * d.sqrt()[None, :]  # diagonal scaling: cond ~ 1e4+
    plain = linear_solve(A, b, solver=CG(rtol=1e-10), max_steps=400)
    diag = A.diagonal(dim1=-2, dim2=-1)
    pre = linear_solve(A, b, solver=CG(rtol=1e-10, preconditioner=lambda r: r / diag))
    assert pre.all_converged
    assert int(pre.steps.max()) < int(plain.steps.max())
    # Relative residual 1e-10 times cond(A) <= ~1e5 for the scaled matrix.
    torch.testing.assert_close(pre.value, torch.linalg.solve(A, b), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("adjoint", [None, UnrollAdjoint()])
def test_cg_gradients_match_dense_solve(adjoint):
    # A = XXᵀ/N + I is parametrized by X, so only symmetric perturbations of A occur, the
    # ones CG (which assumes symmetry) is differentiable along.
    X, b = _spd(3, requires_grad=True)
    b.requires_grad_(True)
    w = torch.randn(3, N, dtype=DT, generator=torch.Generator().manual_seed(4))
    sol = linear_solve(_spd_matrix(X), b, solver=CG(rtol=1e-13, atol=1e-14), adjoint=adjoint)
    got = torch.autograd.grad((sol.value * w).sum(), (X, b))
    ref = torch.autograd.grad((torch.linalg.solve(_spd_matrix(X), b) * w).sum(), (X, b))
    for a, r in zip(got, ref):
        # Forward and backward CG solves to relative residual 1e-13 (cond ~5).
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


def test_gmres_with_matvec_closure_gradients_reach_captured_matrix():
    A = _nonsymmetric(5).requires_grad_(True)
    b = torch.randn(3, N, dtype=DT, generator=torch.Generator().manual_seed(6),
                    requires_grad=True)
    w = torch.randn(3, N, dtype=DT, generator=torch.Generator().manual_seed(7))
    sol = linear_solve(lambda y: (A @ y.unsqueeze(-1)).squeeze(-1), b,
                       solver=GMRES(rtol=1e-13, atol=1e-14, preconditioner=lambda r: r / 2))
    assert sol.all_converged
    got = torch.autograd.grad((sol.value * w).sum(), (A, b))
    ref = torch.autograd.grad((torch.linalg.solve(A, b) * w).sum(), (A, b))
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)  # 1e-13 solves, cond ~3


def test_gradcheck_operator_solve_custom_backward():
    A = _nonsymmetric(8)[0]

    def solve(rhs):
        return torch.linalg.solve(A, rhs.unsqueeze(-1)).squeeze(-1)

    def solve_t(rhs):
        return torch.linalg.solve(A.mT, rhs.unsqueeze(-1)).squeeze(-1)

    rhs = torch.randn(2, N, dtype=DT, generator=torch.Generator().manual_seed(9),
                      requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: operator_solve(r, solve, solve_t), (rhs,))


def test_gradcheck_gmres_end_to_end():
    A0 = _nonsymmetric(10)[:1, :6, :6] + 0.0
    A = A0.clone().requires_grad_(True)
    b = torch.randn(1, 6, dtype=DT, generator=torch.Generator().manual_seed(11),
                    requires_grad=True)
    # The backward is itself a GMRES solve; gradcheck's repeated backward passes feed it
    # cotangents with different memory layouts, which changes rounding (not the math): a
    # nondeterminism tolerance at rounding level, far below gradcheck's atol of 1e-5.
    assert torch.autograd.gradcheck(
        lambda A, b: linear_solve(lambda y: (A @ y.unsqueeze(-1)).squeeze(-1), b,
                                  solver=GMRES(rtol=1e-14, atol=1e-15)).value, (A, b),
        nondet_tol=1e-12)


def test_failures_are_per_element():
    X, b = _spd(12)
    A = _spd_matrix(X)
    A[1] = -A[1]  # negative definite: CG's curvature test fails for element 1 only
    sol = linear_solve(A, b, solver=CG(rtol=1e-12))
    assert sol.status.tolist() == [Status.CONVERGED, Status.DIVERGED, Status.CONVERGED]
    S = _spd_matrix(X)
    S[2] = 0.0  # singular: the direct solve reports it
    assert linear_solve(S, b).status.tolist() == [Status.CONVERGED, Status.CONVERGED,
                                                  Status.DIVERGED]


def test_bad_input():
    X, b = _spd(13)
    with pytest.raises(ValueError, match="A must have shape"):
        linear_solve(torch.zeros(3, N, N + 1, dtype=DT), b)
    with pytest.raises(TypeError, match="solver must be LU"):
        linear_solve(_spd_matrix(X), b, solver="qr")
    with pytest.raises(ValueError, match="needs A as a tensor"):
        linear_solve(lambda y: y, b)
    with pytest.raises(ValueError, match="needs A as a tensor"):
        linear_solve(lambda y: y, b, solver=Cholesky())
    with pytest.raises(ValueError, match="b must be finite"):
        linear_solve(_spd_matrix(X), torch.full((3, N), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match="rtol"):
        CG(rtol=-1.0)


@pytest.mark.parametrize("solver", [LU(), Cholesky(), CG(), GMRES()])
def test_float32(solver):
    X, b = _spd(14)
    A = _spd_matrix(X)
    sol = linear_solve(A.float(), b.float(), solver=solver)
    assert sol.all_converged and sol.value.dtype == torch.float32
    # float32 default rtol 1e-4 on the residual, cond(A) <= ~5.
    torch.testing.assert_close(sol.value.double(), torch.linalg.solve(A, b), rtol=1e-3,
                               atol=1e-3)
