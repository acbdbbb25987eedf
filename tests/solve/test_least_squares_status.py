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
