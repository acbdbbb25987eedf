"""root and fixed_point: agreement with scipy / closed forms, failure modes, implicit gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from diffnum.solve import (
    AndersonAcceleration,
    Broyden,
    FixedPointIteration,
    ImplicitAdjoint,
    Newton,
    Status,
    UnrollAdjoint,
    fixed_point,
    root,
)
from tests.solve._helpers import directional_fd, directional_grad, relative_error

DT = torch.float64
FD_STEP = 1e-5
# Same budget as the least-squares tests: FD truncation ~1e-10, solve error 1e-13/1e-5 = 1e-8.
GRAD_RTOL = 1e-6
A2 = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=DT)


def _cubic_system(y, c, A):
    """F(y) = A y + 0.3 y³ − c: monotone, one root per c."""
    return y @ A.T + 0.3 * y**3 - c


@pytest.mark.parametrize("solver", [Newton(rtol=1e-13, atol=1e-13),
                                    Broyden(rtol=1e-13, atol=1e-13)])
def test_root_matches_scipy(solver):
    c = torch.tensor([[1.0, 2.0], [0.5, -1.0], [2.0, 2.0]], dtype=DT)
    sol = root(_cubic_system, torch.zeros(3, 2, dtype=DT), (c, A2), solver=solver)
    assert sol.all_converged
    for i in range(3):
        ref = scipy.optimize.root(
            lambda y, i=i: _cubic_system(torch.from_numpy(y), c[i], A2).numpy(),
            np.zeros(2), tol=1e-14).x
        # Both solve to ~1e-14 a system with Jacobian condition number ~3.
        np.testing.assert_allclose(sol.value[i].numpy(), ref, rtol=1e-10, atol=1e-12)
    assert float(sol.residual_norm.max()) < 1e-12


def test_root_gradients_implicit_fd_unrolled_agree():
    # Gradients to args (c) and to a captured tensor (A) alike.
    A = A2.clone().requires_grad_(True)
    c = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=DT, requires_grad=True)

    def loss(adjoint):
        def value():
            sol = root(lambda y, c: _cubic_system(y, c, A), torch.zeros(2, 2, dtype=DT), (c,),
                       solver=Newton(rtol=1e-13, atol=1e-13), adjoint=adjoint, throw=True)
            return (sol.value * torch.tensor([1.0, -0.5], dtype=DT)).sum()
        return value

    g = torch.Generator().manual_seed(0)
    directions = [torch.randn(2, 2, dtype=DT, generator=g) for _ in range(2)]
    implicit = directional_grad(loss(ImplicitAdjoint()), [A, c], directions)
    unrolled = directional_grad(loss(UnrollAdjoint()), [A, c], directions)
    fd = directional_fd(loss(ImplicitAdjoint()), [A, c], directions, FD_STEP)
    assert relative_error(implicit, fd) < GRAD_RTOL
    assert relative_error(unrolled, fd) < GRAD_RTOL


def test_root_gradcheck():
    def solution(c):
        return root(_cubic_system, torch.zeros(2, 2, dtype=DT), (c, A2),
                    solver=Newton(rtol=1e-13, atol=1e-13)).value

    c = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(solution, (c,))


def test_root_without_solution_fails_alone():
    # Element 1: F(y) = y² + 1 has no real root; Newton's line search stalls (DIVERGED) or it
    # runs out of steps, element 0 (y² − 4) converges regardless.
    shift = torch.tensor([[-4.0], [1.0]], dtype=DT)
    sol = root(lambda y: y**2 + shift, torch.full((2, 1), 0.5, dtype=DT), max_steps=40)
    assert int(sol.status[0]) == Status.CONVERGED
    assert int(sol.status[1]) in (Status.DIVERGED, Status.MAX_STEPS)
    assert float(sol.value[0, 0]) == pytest.approx(2.0, abs=1e-10)


def test_root_rejects_non_square_fn():
    with pytest.raises(ValueError, match=r"root: fn\(y0, \*args\) must return shape"):
        root(lambda y: torch.cat([y, y], -1), torch.zeros(3, 2, dtype=DT))


@pytest.mark.parametrize("solver", [AndersonAcceleration(rtol=1e-13, atol=1e-13, memory=8),
                                    FixedPointIteration(rtol=1e-13, atol=1e-13)])
def test_fixed_point_of_affine_contraction_is_closed_form(solver):
    g = torch.Generator().manual_seed(1)
    M = 0.6 * torch.linalg.qr(torch.randn(3, 6, 6, dtype=DT, generator=g))[0]  # ‖M‖ = 0.6
    c = torch.randn(3, 6, dtype=DT, generator=g)
    sol = fixed_point(lambda y: (M @ y.unsqueeze(-1)).squeeze(-1) + c,
                      torch.zeros(3, 6, dtype=DT), solver=solver)
    assert sol.all_converged
    expected = torch.linalg.solve(torch.eye(6, dtype=DT) - M, c)
    # Residual 1e-13 and ‖(I − M)⁻¹‖ <= 2.5: error below 1e-12.
    torch.testing.assert_close(sol.value, expected, rtol=0, atol=1e-12)
    if isinstance(solver, AndersonAcceleration):
        # Anderson solves a 6-dimensional affine problem in about n + 1 steps, plain
        # iteration needs log(1e-13)/log(0.6) ≈ 60.
        assert int(sol.steps.max()) <= 12


def test_fixed_point_matches_scipy_and_gradients_agree():
    c = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=DT, requires_grad=True)
    scale = torch.tensor(0.25, dtype=DT, requires_grad=True)  # captured by the closure

    def T(y, c):
        return 0.5 * torch.cos(scale * (y @ A2.T)) + c

    sol = fixed_point(T, torch.zeros(2, 2, dtype=DT), (c,),
                      solver=AndersonAcceleration(rtol=1e-13, atol=1e-13))
    assert sol.all_converged
    for i in range(2):
        ref = scipy.optimize.fixed_point(
            lambda y, i=i: T(torch.from_numpy(y), c[i].detach()).detach().numpy(),
            np.zeros(2), xtol=1e-14)
        np.testing.assert_allclose(sol.value[i].detach().numpy(), ref, rtol=1e-10, atol=1e-12)

    def loss(adjoint):
        def value():
            s = fixed_point(T, torch.zeros(2, 2, dtype=DT), (c,), adjoint=adjoint,
                            solver=AndersonAcceleration(rtol=1e-13, atol=1e-13), throw=True)
            return (s.value ** 2).sum()
        return value

    directions = [torch.tensor([[1.0, -0.3], [0.2, 0.7]], dtype=DT), torch.tensor(0.8, dtype=DT)]
    implicit = directional_grad(loss(ImplicitAdjoint()), [c, scale], directions)
    unrolled = directional_grad(loss(UnrollAdjoint()), [c, scale], directions)
    fd = directional_fd(loss(ImplicitAdjoint()), [c, scale], directions, FD_STEP)
    assert relative_error(implicit, fd) < GRAD_RTOL
    assert relative_error(unrolled, fd) < GRAD_RTOL


def test_fixed_point_gradcheck():
    def solution(c):
        return fixed_point(lambda y, c: 0.5 * torch.tanh(y @ A2.T / 3) + c,
                           torch.zeros(2, 2, dtype=DT), (c,),
                           solver=AndersonAcceleration(rtol=1e-13, atol=1e-13)).value

    c = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(solution, (c,))


def test_diverging_fixed_point_element_leaves_others_converged():
    a = torch.tensor([[0.5], [3.0], [0.9]], dtype=DT)
    sol = fixed_point(lambda y: a * y + 1, torch.zeros(3, 1, dtype=DT),
                      solver=FixedPointIteration(rtol=1e-12, atol=1e-12), max_steps=500)
    assert sol.status.tolist() == [Status.CONVERGED, Status.DIVERGED, Status.CONVERGED]
    torch.testing.assert_close(sol.value[[0, 2], 0], torch.tensor([2.0, 10.0], dtype=DT),
                               # residual <= 1e-12 + 1e-12·|y| = 1.1e-11, error = residual/(1 − a)
                               rtol=0, atol=1.2e-10)


def test_fixed_point_bad_input():
    with pytest.raises(ValueError, match="mixing"):
        AndersonAcceleration(mixing=-1.0)
    with pytest.raises(ValueError, match="memory"):
        AndersonAcceleration(memory=-1)
    with pytest.raises(ValueError, match="y0 must be finite"):
        fixed_point(lambda y: y, torch.tensor([float("inf")], dtype=DT))
    with pytest.raises(TypeError, match="solver must be"):
        fixed_point(lambda y: y, torch.zeros(2, dtype=DT), solver=Newton())


def test_float32_root_and_fixed_point():
    # float32 default tolerances are 1e-4; compared against float64 solves.
    c64 = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=DT)
    r64 = root(_cubic_system, torch.zeros(2, 2, dtype=DT), (c64, A2)).value
    r32 = root(_cubic_system, torch.zeros(2, 2), (c64.float(), A2.float()))
    assert r32.all_converged and r32.value.dtype == torch.float32
    torch.testing.assert_close(r32.value.double(), r64, rtol=1e-3, atol=1e-3)

    def T(y, c):
        return 0.5 * torch.cos(y) + c

    f64 = fixed_point(T, torch.zeros(2, 2, dtype=DT), (c64,)).value
    f32 = fixed_point(T, torch.zeros(2, 2), (c64.float(),))
    assert f32.all_converged and f32.value.dtype == torch.float32
    torch.testing.assert_close(f32.value.double(), f64, rtol=1e-3, atol=1e-3)
