"""ImplicitAdjoint(linear_solver=...) takes the direct solver objects of linear_solve, and
Pinv solves singular systems by the minimum-norm least-squares solution."""

import pytest
import torch

from diffnum.solve import (
    CG,
    LU,
    Cholesky,
    ImplicitAdjoint,
    LevenbergMarquardt,
    Pinv,
    Status,
    least_squares,
    linear_solve,
)

DT = torch.float64


def _gradients(linear_solver, A, b, v):
    """∂(v·y*)/∂(A, b) for y* = argmin ½‖tanh(A y) − b‖² through the implicit adjoint."""
    A, b = A.clone().requires_grad_(True), b.clone().requires_grad_(True)
    sol = least_squares(lambda y, A, b: torch.tanh(y @ A.mT) - b,
                        torch.zeros(A.shape[-1], dtype=DT), (A, b),
                        adjoint=ImplicitAdjoint(linear_solver=linear_solver))
    assert bool(sol.converged.all())
    return torch.autograd.grad((sol.value * v).sum(), (A, b))


def test_every_direct_solver_gives_the_same_implicit_gradient():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(12, 4, dtype=DT, generator=g) / 4
    b = 0.5 * torch.tanh(torch.randn(12, dtype=DT, generator=g))  # a nonzero-residual fit
    v = torch.randn(4, dtype=DT, generator=g)
    reference = _gradients(None, A, b, v)
    for solver in (LU(), Cholesky(), Pinv()):
        for got, want in zip(_gradients(solver, A, b, v), reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_pinv_gives_the_minimum_norm_derivative_of_an_underdetermined_fit():
    # y* = A⁺b from y₀ = 0 (Levenberg's steps −(JᵀJ + λI)⁻¹Jᵀr stay in the row space of A;
    # Marquardt's scaling would leave it), so ∂(v·y*)/∂b = A⁺ᵀv:
    # H = AᵀA is singular and only the pseudoinverse gives the derivative of that solution.
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 5, dtype=DT, generator=g)
    b = torch.randn(3, dtype=DT, generator=g)
    v = torch.randn(5, dtype=DT, generator=g)
    b_ = b.clone().requires_grad_(True)
    sol = least_squares(lambda y, b: y @ A.mT - b, torch.zeros(5, dtype=DT), (b_,),
                        solver=LevenbergMarquardt(rtol=1e-14, damping="identity"),
                        adjoint=ImplicitAdjoint(linear_solver=Pinv()))
    torch.testing.assert_close(sol.value, torch.linalg.pinv(A) @ b, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad((sol.value * v).sum(), b_)
    torch.testing.assert_close(grad, torch.linalg.pinv(A).mT @ v, rtol=0, atol=1e-12)


def test_linear_solve_with_pinv_is_the_minimum_norm_least_squares_solution():
    A = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 3.0]], dtype=DT)  # rank 2
    b = torch.tensor([1.0, 0.0, 3.0], dtype=DT)  # not in the range of A
    sol = linear_solve(A, b, solver=Pinv())
    torch.testing.assert_close(sol.value, torch.linalg.pinv(A) @ b, rtol=0, atol=1e-15)
    assert sol.status.tolist() == int(Status.CONVERGED)
    torch.testing.assert_close(sol.residual_norm, torch.linalg.vector_norm(b - A @ sol.value),
                               rtol=1e-14, atol=0)
    assert float(sol.residual_norm) > 0.5  # b is not in the range: a least-squares answer
    assert sol.stats["solver"] == "Pinv"


def test_linear_solve_with_pinv_is_differentiable_at_full_rank():
    g = torch.Generator().manual_seed(2)
    A = (torch.randn(2, 3, 3, dtype=DT, generator=g) + 3 * torch.eye(3, dtype=DT)).requires_grad_()
    b = torch.randn(2, 3, dtype=DT, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, b: linear_solve(A, b, solver=Pinv()).value, (A, b))


def test_pinv_cutoff_drops_small_singular_values():
    A = torch.diag(torch.tensor([1.0, 1e-10], dtype=DT))
    b = torch.ones(2, dtype=DT)
    torch.testing.assert_close(linear_solve(A, b, solver=Pinv(rtol=1e-6)).value,
                               torch.tensor([1.0, 0.0], dtype=DT), rtol=0, atol=0)
    torch.testing.assert_close(linear_solve(A, b, solver=Pinv()).value,
                               torch.tensor([1.0, 1e10], dtype=DT), rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", ["auto", "pinv", CG(), LU, 1.0])
def test_linear_solver_must_be_a_direct_solver_object(bad):
    with pytest.raises(TypeError, match=r"linear_solver must be None, LU\(\), Cholesky\(\) or "
                                        r"Pinv\(\).*got"):
        ImplicitAdjoint(linear_solver=bad)


@pytest.mark.parametrize("rtol", [-1.0, 1.0, float("nan")])
def test_pinv_rtol_is_checked(rtol):
    with pytest.raises(ValueError, match="rtol"):
        Pinv(rtol=rtol)
