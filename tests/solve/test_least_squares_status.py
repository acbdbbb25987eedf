"""least_squares: CONVERGED means converged — not a damped step that barely moved, not a
residual that is small only in its own units, and never NONFINITE for a finite problem."""

import pytest
import torch

from diffnum.solve import LevenbergMarquardt, Status, least_squares

DT = torch.float64


def _line(scale, target):
    """r(y) = scale · (B y − target): a linear fit whose solution is known exactly."""
    B = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=DT)
    y_true = torch.tensor([0.7, -1.3], dtype=DT)
    rhs = B @ y_true + torch.tensor([0.0, 0.0, 0.3], dtype=DT) * 0  # consistent: exact fit
    return (lambda y: scale * ((y @ B.mT) - rhs)), y_true


@pytest.mark.parametrize("start", [0.0, 5.0])
def test_a_heavily_damped_first_step_is_not_convergence(start):
    fn = lambda y: y - 1.0  # noqa: E731
    out = least_squares(fn, torch.full((1, 1), start, dtype=DT),
                        solver=LevenbergMarquardt(initial_damping=1e10), max_steps=200)
    assert out.status.tolist() == [int(Status.CONVERGED)]
    assert abs(float(out.value) - 1.0) <= 1e-8
    assert int(out.steps) > 2  # it had to work the damping down first


@pytest.mark.parametrize("scale", [1e-8, 1e-160, 1.0, 1e154, 1e200])
def test_tolerances_are_relative_to_the_problem_scale(scale):
    fn, y_true = _line(scale, None)
    out = least_squares(fn, torch.zeros(1, 2, dtype=DT))
    assert out.status.tolist() == [int(Status.CONVERGED)]
    torch.testing.assert_close(out.value[0], y_true, rtol=1e-8, atol=0)
    assert torch.isfinite(out.residual_norm).all()


def test_a_nonzero_residual_minimum_converges_on_the_gradient_test():
    # Inconsistent rows: the minimum has ‖r‖ > 0 and Jᵀr = 0 there.
    B = torch.tensor([[1.0], [1.0], [2.0]], dtype=DT)
    rhs = torch.tensor([1.0, 2.0, 0.5], dtype=DT)
    out = least_squares(lambda y: torch.tanh(y @ B.mT) - rhs, torch.zeros(1, 1, dtype=DT))
    assert out.status.tolist() == [int(Status.CONVERGED)]
    y = out.value.clone().requires_grad_(True)
    r = torch.tanh(y @ B.mT) - rhs
    (g,) = torch.autograd.grad(0.5 * r.square().sum(), y)
    assert float(g.abs().max()) <= 1e-8 * float(r.norm())


def _kink(y):
    """r = (y − 2, 2 √(max(y − 1, 0) + 1e-6)): ½‖r‖² has its minimum on the kink at y = 1
    (slope −1 on the left, +1 on the right), where it is not differentiable."""
    return torch.stack([y[..., 0] - 2, 2 * torch.sqrt((y[..., 0] - 1).clamp(min=0) + 1e-6)], -1)


@pytest.mark.parametrize("start", [0.0, 0.9, 1.5, 3.0])
def test_a_minimum_on_a_kink_is_reported_diverged_instead_of_crawling(start):
    # Measured before the stall test: MAX_STEPS after all 200 steps, y within 5e-15 of 1.
    out = least_squares(_kink, torch.full((1, 1), start, dtype=DT), max_steps=200)
    assert out.status.tolist() == [int(Status.DIVERGED)]
    assert int(out.steps) < 50  # measured 10–32
    assert abs(float(out.value) - 1.0) < 1e-6  # it got to the kink before stopping
    assert "kink" in out.describe()


def test_a_stalled_element_costs_the_others_nothing():
    def fn(y):  # element 0 on the kink, element 1 a smooth nonlinear fit
        smooth = torch.stack([torch.tanh(y[..., 0]) - 0.5, y[..., 0] - 0.6], -1)
        return torch.where(torch.tensor([[True], [False]]), _kink(y), smooth)

    out = least_squares(fn, torch.tensor([[3.0], [0.0]], dtype=DT), max_steps=200)
    alone = least_squares(lambda y: torch.stack([torch.tanh(y[..., 0]) - 0.5, y[..., 0] - 0.6],
                                                -1), torch.tensor([[0.0]], dtype=DT))
    assert out.status.tolist() == [int(Status.DIVERGED), int(Status.CONVERGED)]
    assert torch.equal(out.value[1], alone.value[0])
    assert int(out.steps[1]) == int(alone.steps[0])


def _rank_deficient(dtype):
    """tanh(A y) − b with A of rank 3 in 6 columns, plus ridge rows 1e-3·y: the ridge alone
    curves the 3-dimensional null space of A, by 1e-6 against A's columns of order 1."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(20, 3, generator=g, dtype=torch.float64)
    A = torch.cat([A, A @ torch.randn(3, 3, generator=g, dtype=torch.float64)], 1).to(dtype)
    b = 0.3 * torch.randn(20, generator=g, dtype=torch.float64).to(dtype)
    return lambda y: torch.cat([torch.tanh(y @ A.mT) - b, 1e-3 * y], -1)


def test_a_null_space_below_float32_resolution_is_reported_ill_conditioned():
    # Measured before the wander test: element 0 MAX_STEPS after all 100 steps (its steps
    # kept moving y along the null space with ½‖r‖² and the gradient test settled).
    fn = _rank_deficient(torch.float32)
    start = torch.zeros(2, 6, dtype=torch.float32)
    start[1] += 0.5
    out = least_squares(fn, start, max_steps=100)
    assert out.status.tolist() == [int(Status.ILL_CONDITIONED), int(Status.CONVERGED)]
    assert int(out.steps[0]) < 20
    assert "ill-conditioned" in out.describe()
    # r is settled: both elements reach the same residual to float32 precision.
    torch.testing.assert_close(out.residual_norm[0], out.residual_norm[1], rtol=1e-5, atol=0)
    # Its neighbour's result is that of a solve of it alone, to the solver's float32 step
    # tolerance (a batch of one takes another BLAS path, and the null space amplifies its
    # rounding).
    alone = least_squares(fn, start[1:], max_steps=100)
    gap = float((alone.value[0] - out.value[1]).norm())
    assert gap <= 1e-4 * float(out.value[1].norm())


def test_the_same_null_space_is_resolved_in_float64():
    fn = _rank_deficient(torch.float64)
    start = torch.zeros(2, 6, dtype=torch.float64)
    start[1] += 0.5
    out = least_squares(fn, start, max_steps=100)
    assert out.status.tolist() == [int(Status.CONVERGED)] * 2
    torch.testing.assert_close(out.value[0], out.value[1], rtol=1e-6, atol=1e-8)
