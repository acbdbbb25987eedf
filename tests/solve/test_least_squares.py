"""least_squares: closed forms, per-element status, implicit = FD = unrolled gradients."""

from __future__ import annotations

import weakref
from functools import partial

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffnum.solve import (
    GaussNewton,
    ImplicitAdjoint,
    LevenbergMarquardt,
    SolveError,
    Status,
    UnrollAdjoint,
    least_squares,
)
from tests.solve._helpers import directional_fd, directional_grad, relative_error

DT = torch.float64
# Solves inside gradient tests run to 1e-13 so that the finite-difference quotient (step 1e-5)
# carries a solve error of about 1e-13/1e-5 = 1e-8 relative, well under the 1e-6 asserted.
TIGHT = LevenbergMarquardt(rtol=1e-13, atol=1e-13)
FD_STEP = 1e-5
# Implicit vs finite differences vs unrolled: the brief's float64 agreement target. Truncation
# error of central differences (h² ≈ 1e-10) and solve error (≈ 1e-8) sit well below it.
GRAD_RTOL = 1e-6


def _exponential_problem(seed: int = 0):
    """Fit a·exp(−b t) to noisy data made from θ; two independent problems in a batch."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 2, 30, dtype=DT)
    theta = torch.tensor([[2.0, 0.7], [1.0, 1.3]], dtype=DT, requires_grad=True)
    noise = 0.05 * torch.randn(2, 30, dtype=DT, generator=g)

    def solve(adjoint, solver=TIGHT):
        data = theta[:, :1] * torch.exp(-theta[:, 1:] * t) + noise

        def fn(y, data):
            return y[..., :1] * torch.exp(-y[..., 1:] * t) - data

        return least_squares(fn, torch.ones(2, 2, dtype=DT), (data,), solver=solver,
                             adjoint=adjoint)

    return theta, solve


def test_linear_problem_gives_closed_form_least_squares_solution():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 40, 6, dtype=DT, generator=g)
    b = torch.randn(3, 40, dtype=DT, generator=g)
    expected = torch.linalg.lstsq(A, b.unsqueeze(-1)).solution.squeeze(-1)
    for solver in (LevenbergMarquardt(rtol=1e-12, atol=1e-12), GaussNewton(rtol=1e-12, atol=1e-12)):
        sol = least_squares(lambda y: (A @ y.unsqueeze(-1)).squeeze(-1) - b,
                            torch.zeros(3, 6, dtype=DT), solver=solver)
        assert sol.all_converged
        # cond(A) ≈ 3 for a 40×6 Gaussian matrix: the 1e-12 step tolerance gives ~1e-11.
        torch.testing.assert_close(sol.value, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sol.residual_norm,
                                   torch.linalg.norm(A @ expected.unsqueeze(-1) - b.unsqueeze(-1),
                                                     dim=(-2, -1)), rtol=1e-10, atol=0)


def test_underdetermined_gram_step_gives_minimum_norm_solution():
    # m = 4 < n = 9: Gram-form steps from y0 = 0 with identity damping stay in the row space of
    # A, so the limit is the minimum-norm solution pinv(A) b.
    g = torch.Generator().manual_seed(2)
    A = torch.randn(2, 4, 9, dtype=DT, generator=g)
    b = torch.randn(2, 4, dtype=DT, generator=g)
    sol = least_squares(lambda y: (A @ y.unsqueeze(-1)).squeeze(-1) - b,
                        torch.zeros(2, 9, dtype=DT),
                        solver=LevenbergMarquardt(rtol=1e-12, atol=1e-12, damping="identity"))
    assert sol.all_converged
    expected = (torch.linalg.pinv(A) @ b.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(sol.value, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_autodiff_and_analytic_jacobians_agree(mode):
    g = torch.Generator().manual_seed(3)
    B = torch.randn(4, 50, 3, dtype=DT, generator=g) / 3**0.5
    w_true = torch.randn(4, 3, dtype=DT, generator=g)
    data = torch.tanh((B @ w_true.unsqueeze(-1)).squeeze(-1))

    def fn(w):
        return torch.tanh((B @ w.unsqueeze(-1)).squeeze(-1)) - data

    def jac(w):
        z = (B @ w.unsqueeze(-1)).squeeze(-1)
        return (1 - torch.tanh(z) ** 2).unsqueeze(-1) * B

    y0 = torch.zeros(4, 3, dtype=DT)
    a = least_squares(fn, y0, solver=TIGHT, jacobian=mode)
    b = least_squares(fn, y0, solver=TIGHT, jacobian=jac)
    assert a.all_converged and b.all_converged
    # Zero-residual problem: both reach w_true to the 1e-13 step tolerance (× conditioning).
    torch.testing.assert_close(a.value, w_true, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b.value, w_true, rtol=1e-10, atol=1e-10)


def test_exponential_fit_gradients_implicit_fd_unrolled_agree():
    theta, solve = _exponential_problem()
    direction = torch.randn(2, 2, dtype=DT, generator=torch.Generator().manual_seed(4))
    weights = torch.randn(2, 2, dtype=DT, generator=torch.Generator().manual_seed(5))

    def loss(adjoint):
        return lambda: (solve(adjoint).value * weights).sum()

    implicit = directional_grad(loss(ImplicitAdjoint()), [theta], [direction])
    unrolled = directional_grad(loss(UnrollAdjoint()), [theta], [direction])
    fd = directional_fd(loss(ImplicitAdjoint()), [theta], [direction], FD_STEP)
    assert relative_error(implicit, fd) < GRAD_RTOL
    assert relative_error(unrolled, fd) < GRAD_RTOL
    assert relative_error(implicit, unrolled) < GRAD_RTOL


def test_gauss_newton_hessian_is_exact_only_at_zero_residual():
    g = torch.Generator().manual_seed(6)
    t = torch.linspace(0, 2, 25, dtype=DT)
    theta = torch.tensor([1.5, 0.8], dtype=DT, requires_grad=True)
    noise = 0.1 * torch.randn(25, dtype=DT, generator=g)

    def grad(hessian, with_noise):
        data = theta[0] * torch.exp(-theta[1] * t) + (noise if with_noise else 0)
        sol = least_squares(lambda y: y[:1] * torch.exp(-y[1:] * t) - data,
                            torch.ones(2, dtype=DT), solver=TIGHT,
                            adjoint=ImplicitAdjoint(hessian=hessian))
        return torch.autograd.grad(sol.value.sum(), theta)[0]

    # Zero residual: the dropped Σ rᵢ∇²rᵢ terms vanish, both Hessians give the same gradient.
    torch.testing.assert_close(grad("gauss_newton", False), grad("full", False),
                               rtol=1e-9, atol=1e-12)
    # Non-zero residual: Gauss–Newton is an approximation, and visibly so (> 1e-3 here).
    diff = (grad("gauss_newton", True) - grad("full", True)).abs().max()
    assert diff > 1e-3


def test_rosenbrock_type_residual_gradients_to_args():
    # r(y; a, c) = (a (y₂ − y₁²), c − y₁, 0.3 (y₁ y₂ − 1)): a Rosenbrock valley with a third,
    # conflicting term so the minimum has a non-zero residual; batched over three (a, c).
    a = torch.tensor([10.0, 5.0, 2.0], dtype=DT, requires_grad=True)
    c = torch.tensor([1.0, 0.5, -0.7], dtype=DT, requires_grad=True)

    def fn(y, a, c):
        y1, y2 = y[..., 0], y[..., 1]
        return torch.stack([a * (y2 - y1**2), c - y1, 0.3 * (y1 * y2 - 1)], dim=-1)

    def loss(adjoint):
        def value():
            sol = least_squares(fn, torch.tensor([[-1.2, 1.0]] * 3, dtype=DT), (a, c),
                                solver=TIGHT, adjoint=adjoint, max_steps=200, throw=True)
            return (sol.value * torch.tensor([1.0, -2.0], dtype=DT)).sum()
        return value

    directions = [torch.tensor([0.3, -1.0, 0.5], dtype=DT), torch.tensor([1.0, 0.2, -0.4],
                                                                            dtype=DT)]
    implicit = directional_grad(loss(ImplicitAdjoint()), [a, c], directions)
    unrolled = directional_grad(loss(UnrollAdjoint()), [a, c], directions)
    fd = directional_fd(loss(ImplicitAdjoint()), [a, c], directions, FD_STEP)
    assert relative_error(implicit, fd) < GRAD_RTOL
    assert relative_error(unrolled, fd) < GRAD_RTOL


class _Basis(torch.nn.Module):
    """A small network producing n basis functions on a grid (the hard-constraint setting)."""

    def __init__(self, n: int):
        super().__init__()
        self.layer = torch.nn.Linear(1, n, dtype=DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layer(x.unsqueeze(-1)))


def test_basis_fit_gradients_flow_to_closure_parameters_and_args():
    # u = B_θ w on a grid; r(w) = u + 0.1 u³ − f plus a ridge term 1e-2 w (as in the spec's
    # hard-constraint layer). B_θ is computed upstream and captured by the closure; f is in
    # args. Two experts (batch elements) with their own f.
    torch.manual_seed(7)
    basis = _Basis(5)
    x = torch.linspace(-1, 1, 40, dtype=DT)
    f = torch.stack([torch.sin(3 * x), torch.cos(2 * x)]).requires_grad_(True)

    def loss(adjoint):
        def value():
            B = basis(x)  # (40, 5), depends on the module's parameters

            def fn(w, f):
                u = w @ B.T
                return torch.cat([u + 0.1 * u**3 - f, 1e-2 * w], dim=-1)

            sol = least_squares(fn, torch.zeros(2, 5, dtype=DT), (f,), solver=TIGHT,
                                adjoint=adjoint, throw=True)
            return (sol.value ** 2).sum() + (sol.value @ B.T).sum()
        return value

    params = [*basis.parameters(), f]
    g = torch.Generator().manual_seed(8)
    directions = [torch.randn(p.shape, dtype=DT, generator=g) for p in params]
    implicit = directional_grad(loss(ImplicitAdjoint()), params, directions)
    unrolled = directional_grad(loss(UnrollAdjoint()), params, directions)
    fd = directional_fd(loss(ImplicitAdjoint()), params, directions, FD_STEP)
    assert relative_error(implicit, fd) < GRAD_RTOL
    assert relative_error(unrolled, fd) < GRAD_RTOL
    # Each parameter separately receives a gradient (closure and args alike).
    grads = torch.autograd.grad(loss(ImplicitAdjoint())(), params)
    assert all(bool(gr.abs().sum() > 0) for gr in grads)


def test_gradcheck_through_implicit_adjoint():
    t = torch.linspace(0, 1, 12, dtype=DT)
    noise = 0.02 * torch.randn(12, dtype=DT, generator=torch.Generator().manual_seed(9))

    def solution(theta):
        data = theta[0] * torch.exp(-theta[1] * t) + noise
        return least_squares(lambda y: y[:1] * torch.exp(-y[1:] * t) - data,
                             torch.ones(2, dtype=DT), solver=TIGHT).value

    theta = torch.tensor([1.3, 0.9], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(solution, (theta,))


def test_failing_elements_leave_others_converged():
    g = torch.Generator().manual_seed(10)
    t = torch.linspace(0, 2, 20, dtype=DT)
    data = torch.stack([2 * torch.exp(-0.5 * t), 1 * torch.exp(-1.5 * t),
                        3 * torch.exp(-0.2 * t)]) + 0.01 * torch.randn(3, 20, dtype=DT, generator=g)
    data[1, 4] = float("nan")  # element 1: non-finite residual

    def fn(y, data):
        return y[..., :1] * torch.exp(-y[..., 1:] * t) - data

    y0 = torch.ones(3, 2, dtype=DT)
    sol = least_squares(fn, y0, (data,), solver=TIGHT)
    assert sol.status.tolist() == [Status.CONVERGED, Status.NONFINITE, Status.CONVERGED]
    assert torch.isfinite(sol.value).all()
    for i in (0, 2):
        alone = least_squares(fn, y0[i], (data[i],), solver=TIGHT)
        assert alone.all_converged
        # Same iteration sequence up to rounding of batched vs. unbatched linear algebra.
        torch.testing.assert_close(sol.value[i], alone.value, rtol=1e-10, atol=1e-12)
        assert int(sol.steps[i]) == int(alone.steps[0] if alone.steps.ndim else alone.steps)


def test_element_without_minimum_runs_out_of_steps_and_others_stop_early():
    # r(y) = exp(−y) has no minimizer (y → ∞); the other element is linear and converges in
    # a few steps, after which it stops changing.
    def fn(y):
        return torch.stack([torch.exp(-y[0, :1]), y[1, :1] - 3.0])

    sol = least_squares(fn, torch.zeros(2, 1, dtype=DT), max_steps=30)
    assert sol.status.tolist() == [Status.MAX_STEPS, Status.CONVERGED]
    assert int(sol.steps[0]) == 30 and int(sol.steps[1]) < 10
    # Default tolerance 1e-8 on the step; LM with λ > 0 approaches 3 linearly from below.
    assert float(sol.value[1, 0]) == pytest.approx(3.0, abs=1e-7)


def test_gauss_newton_singular_normal_equations_are_reported_diverged():
    # y₂ never enters the residual: JᵀJ is singular. Gauss–Newton reports DIVERGED while
    # Levenberg–Marquardt's damping still solves for y₁.
    def fn(y):
        return torch.stack([y[..., 0] - 1, y[..., 0] - 2], dim=-1)

    y0 = torch.zeros(2, dtype=DT)
    assert int(least_squares(fn, y0, solver=GaussNewton()).status) == Status.DIVERGED
    sol = least_squares(fn, y0)
    assert sol.all_converged and float(sol.value[0]) == pytest.approx(1.5, abs=1e-7)


def test_throw_names_the_failing_element():
    data = torch.ones(2, 3, 4, dtype=DT)
    data[1, 2, 0] = float("inf")
    with pytest.raises(SolveError, match=r"\(1, 2\): NONFINITE"):
        least_squares(lambda y, d: y.sum(-1, keepdim=True) - d, torch.zeros(2, 3, 2, dtype=DT),
                      (data,), throw=True)


def test_float32_close_to_float64():
    g = torch.Generator().manual_seed(11)
    A = torch.randn(30, 3, dtype=DT, generator=g)
    b = torch.randn(30, dtype=DT, generator=g)

    def fn(y, A, b):
        return A @ y + 0.1 * (A @ y) ** 2 - b

    y64 = least_squares(fn, torch.zeros(3, dtype=DT), (A, b)).value
    sol32 = least_squares(fn, torch.zeros(3), (A.float(), b.float()))
    assert sol32.all_converged and sol32.value.dtype == torch.float32
    # float32 default tolerances are 1e-4.
    torch.testing.assert_close(sol32.value.double(), y64, rtol=1e-3, atol=1e-3)


def test_bad_input_raises_clear_errors():
    fn = lambda y: y  # noqa: E731
    y0 = torch.zeros(3, 2, dtype=DT)
    with pytest.raises(ValueError, match=r"fn\(y0, \*args\) must return shape"):
        least_squares(lambda y: y.sum(0), y0)
    with pytest.raises(ValueError, match="y0 must be finite"):
        least_squares(fn, torch.tensor([1.0, float("nan")], dtype=DT))
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0, got -1"):
        LevenbergMarquardt(rtol=-1.0)
    with pytest.raises(ValueError, match="atol"):
        GaussNewton(atol=float("nan"))
    with pytest.raises(ValueError, match="must not both be 0"):
        LevenbergMarquardt(rtol=0.0, atol=0.0)
    with pytest.raises(TypeError, match="rtol must be a float"):
        LevenbergMarquardt(rtol="tight")
    with pytest.raises(ValueError, match="max_steps"):
        least_squares(fn, y0, max_steps=0)
    with pytest.raises(TypeError, match="solver must be"):
        least_squares(fn, y0, solver="lm")
    with pytest.raises(TypeError, match="adjoint must be"):
        least_squares(fn, y0, adjoint="implicit")
    with pytest.raises(ValueError, match="hessian"):
        ImplicitAdjoint(hessian="exact")
    with pytest.raises(ValueError, match="jacobian must be"):
        least_squares(fn, y0, jacobian="numeric")
    with pytest.raises(TypeError, match="y0 must be float32 or float64"):
        least_squares(fn, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="dtype"):
        least_squares(lambda y: y.float(), y0)


def test_two_batch_dimensions_match_separate_solves_and_gradients():
    # batch × experts = 2 × 3 independent problems in one call, with an analytic Jacobian for
    # the iterations; gradients (from autograd of fn) match solving each problem alone.
    g = torch.Generator().manual_seed(12)
    B = torch.randn(2, 3, 30, 4, dtype=DT, generator=g)
    target = torch.randn(2, 3, 30, dtype=DT, generator=g).requires_grad_(True)

    def fn(w, target):
        u = (B @ w.unsqueeze(-1)).squeeze(-1)
        return u + 0.2 * torch.sin(u) - target

    def jac(w, target):
        u = (B @ w.unsqueeze(-1)).squeeze(-1)
        return (1 + 0.2 * torch.cos(u)).unsqueeze(-1) * B

    sol = least_squares(fn, torch.zeros(2, 3, 4, dtype=DT), (target,), solver=TIGHT,
                        jacobian=jac, throw=True)
    (grad,) = torch.autograd.grad(sol.value.pow(2).sum(), target)
    for i, j in [(0, 0), (1, 2)]:
        alone = least_squares(
            lambda w, t, i=i, j=j: (B[i, j] @ w) + 0.2 * torch.sin(B[i, j] @ w) - t,
            torch.zeros(4, dtype=DT), (target[i, j],), solver=TIGHT)
        (grad_alone,) = torch.autograd.grad(alone.value.pow(2).sum(), target)
        # Both solved to 1e-13 on a well-conditioned 30×4 problem.
        torch.testing.assert_close(sol.value[i, j], alone.value, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad[i, j], grad_alone[i, j], rtol=1e-8, atol=1e-11)


@given(m=st.integers(3, 12), n=st.integers(1, 3), batch=st.integers(1, 3),
       seed=st.integers(0, 10_000))
def test_property_linear_fits_equal_lstsq(m, n, batch, seed):
    # Any full-rank linear residual A y − b: LM returns the least-squares solution, in both
    # the normal-equation (m >= n) regime drawn here and for every batch size.
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batch, m, n, dtype=DT, generator=g) + 3 * torch.eye(m, n, dtype=DT)
    b = torch.randn(batch, m, dtype=DT, generator=g)
    sol = least_squares(lambda y: (A @ y.unsqueeze(-1)).squeeze(-1) - b,
                        torch.zeros(batch, n, dtype=DT),
                        solver=LevenbergMarquardt(rtol=1e-12, atol=1e-12))
    assert sol.all_converged
    expected = torch.linalg.lstsq(A, b.unsqueeze(-1)).solution.squeeze(-1)
    # The added 3·I keeps cond(A) small (<~10): 1e-12 step tolerance gives ~1e-10 at worst.
    torch.testing.assert_close(sol.value, expected, rtol=1e-8, atol=1e-9)


def _saved_bytes(run) -> int:
    """Bytes of tensors saved for backward while ``run()`` builds its graph."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.nelement() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


def test_implicit_graph_does_not_grow_with_iterations():
    # Structural check of "memory independent of the iteration count" (the size goal itself is
    # in benchmarks/bench_adjoint_memory.py): the implicit adjoint saves the same tensors
    # after 3 or 12 iterations, the unrolled one saves more with each iteration.
    g = torch.Generator().manual_seed(13)
    B = torch.randn(2, 40, 3, dtype=DT, generator=g).requires_grad_(True)
    data = torch.randn(2, 40, dtype=DT, generator=g)
    unreachable = LevenbergMarquardt(rtol=1e-300, atol=1e-300)  # run exactly max_steps

    def run(adjoint, steps):
        def go():
            sol = least_squares(lambda w: torch.tanh(B @ w.unsqueeze(-1)).squeeze(-1) - data,
                                torch.zeros(2, 3, dtype=DT), solver=unreachable,
                                max_steps=steps, adjoint=adjoint)
            assert int(sol.steps.min()) == steps
        return go

    assert _saved_bytes(run(ImplicitAdjoint(), 3)) == _saved_bytes(run(ImplicitAdjoint(), 12))
    assert _saved_bytes(run(UnrollAdjoint(), 12)) > 3 * _saved_bytes(run(UnrollAdjoint(), 3))


def _tanh_basis_problem(batch: int = 5, m: int = 60, n: int = 4, seed: int = 14):
    """r(w) = tanh(Bw)(1 + 0.1 (Bw)²) − y as residual, Jacobian, and fused (r, J)."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(batch, m, n, dtype=DT, generator=g) / n**0.5
    z = (B @ torch.randn(batch, n, 1, dtype=DT, generator=g)).squeeze(-1)
    y = torch.tanh(z) * (1 + 0.1 * z * z) + 0.05 * torch.randn(batch, m, dtype=DT, generator=g)
    y.requires_grad_(True)

    def residual(w, y):
        z = (B @ w.unsqueeze(-1)).squeeze(-1)
        return torch.tanh(z) * (1 + 0.1 * z * z) - y

    def jac(w, y):
        z = (B @ w.unsqueeze(-1)).squeeze(-1)
        t = torch.tanh(z)
        return ((1 - t * t) * (1 + 0.1 * z * z) + 0.2 * t * z).unsqueeze(-1) * B

    def fused(w, y):
        z = (B @ w.unsqueeze(-1)).squeeze(-1)
        t = torch.tanh(z)
        q = 1 + 0.1 * z * z
        return t * q - y, ((1 - t * t) * q + 0.2 * t * z).unsqueeze(-1) * B

    return B, y, residual, jac, fused


@pytest.mark.parametrize("solver", [TIGHT, LevenbergMarquardt(damping="identity"),
                                    LevenbergMarquardt(initial_damping=1e3),
                                    GaussNewton(rtol=1e-12, atol=1e-12)])
def test_fused_jacobian_gives_identical_iterates_to_separate_callable(solver):
    # Same formulas for r and J: the fused form must reproduce the separate one bit for bit
    # (values, steps, statuses, residuals), rejected steps included (λ₀ = 1e3 starts with
    # heavy damping; a start far from the data gives rejections).
    _, y, residual, jac, fused = _tanh_basis_problem()
    y0 = 3 * torch.randn(5, 4, dtype=DT, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        a = least_squares(residual, y0, (y,), solver=solver, jacobian=jac, max_steps=200)
        b = least_squares(fused, y0, (y,), solver=solver, fused=True, max_steps=200)
    assert torch.equal(a.value, b.value)
    assert torch.equal(a.steps, b.steps) and torch.equal(a.status, b.status)
    assert torch.equal(a.residual_norm, b.residual_norm)
    assert a.stats["function_evaluations"] == b.stats["function_evaluations"]
    assert torch.equal(a.stats["damping"], b.stats["damping"]) if a.stats["damping"] is not None \
        else b.stats["damping"] is None


def test_fused_jacobian_with_rejections_and_a_nonfinite_element():
    # Rosenbrock-type valleys (rejected steps in some elements while others accept) plus an
    # element whose residual becomes NaN: fused and separate agree exactly, status included.
    a = torch.tensor([10.0, 5.0, 2.0, 4.0], dtype=DT)
    c = torch.tensor([1.0, 0.5, -0.7, float("nan")], dtype=DT)

    def residual(y):
        y1, y2 = y[..., 0], y[..., 1]
        return torch.stack([a * (y2 - y1**2), c - y1, 0.3 * (y1 * y2 - 1)], dim=-1)

    def jac(y):
        y1, y2 = y[..., 0], y[..., 1]
        zero, one = torch.zeros_like(y1), torch.ones_like(y1)
        return torch.stack([torch.stack([-2 * a * y1, a], -1), torch.stack([-one, zero], -1),
                            torch.stack([0.3 * y2, 0.3 * y1], -1)], dim=-2)

    y0 = torch.tensor([[-1.2, 1.0]] * 4, dtype=DT)
    sep = least_squares(residual, y0, solver=TIGHT, jacobian=jac, max_steps=200)
    fus = least_squares(lambda y: (residual(y), jac(y)), y0, solver=TIGHT, fused=True,
                        max_steps=200)
    assert sep.status.tolist() == [Status.CONVERGED] * 3 + [Status.NONFINITE]
    assert torch.equal(sep.value, fus.value) and torch.equal(sep.steps, fus.steps)
    assert torch.equal(sep.status, fus.status)
    assert sep.stats["function_evaluations"] == fus.stats["function_evaluations"]


def test_fused_jacobian_in_gram_form_matches_separate():
    # m = 4 < n = 9 uses the Gram form, which keeps J (rejected elements keep their own).
    g = torch.Generator().manual_seed(16)
    A = torch.randn(3, 4, 9, dtype=DT, generator=g)
    b = torch.randn(3, 4, dtype=DT, generator=g)

    def residual(y):
        return torch.tanh((A @ y.unsqueeze(-1)).squeeze(-1)) - 0.5 * b

    def jac(y):
        t = torch.tanh((A @ y.unsqueeze(-1)).squeeze(-1))
        return (1 - t * t).unsqueeze(-1) * A

    y0 = torch.zeros(3, 9, dtype=DT)
    sep = least_squares(residual, y0, jacobian=jac, max_steps=200)
    fus = least_squares(lambda y: (residual(y), jac(y)), y0, fused=True, max_steps=200)
    assert sep.all_converged
    assert torch.equal(sep.value, fus.value) and torch.equal(sep.steps, fus.steps)


@pytest.mark.parametrize("adjoint", [ImplicitAdjoint(), ImplicitAdjoint(hessian="gauss_newton"),
                                     UnrollAdjoint()])
def test_fused_jacobian_gradients_match_separate_callable(adjoint):
    _, y, residual, jac, fused = _tanh_basis_problem(seed=17)
    y0 = torch.zeros(5, 4, dtype=DT)
    weights = torch.randn(5, 4, dtype=DT, generator=torch.Generator().manual_seed(18))
    grads = []
    for fn, kw in ((residual, {"jacobian": jac}), (fused, {"fused": True})):
        sol = least_squares(fn, y0, (y,), solver=TIGHT, adjoint=adjoint, throw=True, **kw)
        grads.append(torch.autograd.grad((sol.value * weights).sum(), y)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)


def test_fused_jacobian_bad_output_raises_clear_errors():
    y0 = torch.zeros(3, 2, dtype=DT)
    with pytest.raises(TypeError, match=r"must return a pair \(r, J\)"):
        least_squares(lambda y: y, y0, fused=True)
    with pytest.raises(TypeError, match=r"pair \(r, J\)"):
        least_squares(lambda y: (y, y, y), y0, fused=True)
    with pytest.raises(ValueError, match=r"shape \(\*batch, m, n\) = \(3, 2, 2\)"):
        least_squares(lambda y: (y, y), y0, fused=True)
    with pytest.raises(TypeError, match="dtype"):
        least_squares(lambda y: (y, torch.zeros(3, 2, 2)), y0, fused=True)
    with pytest.raises(ValueError, match="'reverse' or a callable"):
        least_squares(lambda y: y, y0, jacobian="numeric")
    with pytest.raises(ValueError, match="leave jacobian at 'auto'"):
        least_squares(lambda y: (y, y), y0, fused=True, jacobian="forward")
    with pytest.raises(TypeError, match="fused"):
        least_squares(lambda y: y, y0, fused="yes")


def _plain_tanh_problem(batch: int = 6, m: int = 50, n: int = 3, seed: int = 19):
    """The tanh-basis fit with nothing requiring grad, and start points spread out so that
    the elements converge after different numbers of steps."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(batch, m, n, dtype=DT, generator=g) / n**0.5
    z = (B @ torch.randn(batch, n, 1, dtype=DT, generator=g)).squeeze(-1)
    data = torch.tanh(z) + 0.05 * torch.randn(batch, m, dtype=DT, generator=g)
    y0 = torch.randn(batch, n, dtype=DT, generator=g) * torch.linspace(0, 2, batch,
                                                                        dtype=DT)[:, None]

    def residual(w, B, data):
        return torch.tanh((B @ w.unsqueeze(-1)).squeeze(-1)) - data

    def jac(w, B, data):
        t = torch.tanh((B @ w.unsqueeze(-1)).squeeze(-1))
        return (1 - t * t).unsqueeze(-1) * B

    return (B, data), y0, residual, jac


@pytest.mark.parametrize("fused_form", [False, True])
def test_at_most_one_jacobian_is_alive_when_the_next_is_evaluated(fused_form):
    # The normal-equation form keeps JᵀJ and Jᵀr, not J: every Jacobian handed to the solver
    # (the start one included) must be released before the next one is asked for.
    args, y0, residual, jac = _plain_tanh_problem()
    alive: list[weakref.ref] = []

    def tracked(J):
        assert all(ref() is None for ref in alive), "an earlier Jacobian is still referenced"
        alive.append(weakref.ref(J))
        return J

    if fused_form:
        def fn(w, *a):
            r = residual(w, *a)
            return r, tracked(jac(w, *a))
        sol = least_squares(fn, y0, args, solver=TIGHT, fused=True)
    else:
        sol = least_squares(residual, y0, args, solver=TIGHT,
                            jacobian=lambda w, *a: tracked(jac(w, *a)))
    assert sol.all_converged and len(alive) == sol.stats["jacobian_evaluations"] >= 3


def test_no_reevaluation_when_nothing_requires_grad():
    # With gradients enabled but nothing fn reaches requiring grad, the start-point evaluation
    # shows it and the solution comes back without the adjoint's re-evaluation; once a tensor
    # fn uses requires grad, the gradient is attached (and costs more evaluations).
    (B, data), y0, residual, jac = _plain_tanh_problem()
    calls = []

    def counted(w, B, data):
        calls.append(1)
        return residual(w, B, data)

    sol = least_squares(counted, y0, (B, data), solver=TIGHT, jacobian=jac)
    assert not sol.value.requires_grad
    assert len(calls) == sol.stats["function_evaluations"]
    calls.clear()
    data_g = data.clone().requires_grad_(True)
    sol_g = least_squares(counted, y0, (B, data_g), solver=TIGHT, jacobian=jac)
    assert sol_g.value.requires_grad and len(calls) > sol_g.stats["function_evaluations"]
    assert torch.equal(sol.value, sol_g.value.detach())
    grad = torch.autograd.grad(sol_g.value.sum(), data_g)[0]
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


@pytest.mark.parametrize("fused_form", [False, True])
def test_batched_solve_with_staggered_convergence_matches_solving_each_element(fused_form):
    # Elements converge after different numbers of steps, so the normal equations are rebuilt
    # for a varying subset (most of the batch, then a few): each element must follow the
    # iterates it follows when solved alone.
    args, y0, residual, jac = _plain_tanh_problem()
    if fused_form:
        def fn(w, *a):
            return residual(w, *a), jac(w, *a)
        solve = partial(least_squares, fn, solver=TIGHT, fused=True)
    else:
        solve = partial(least_squares, residual, solver=TIGHT, jacobian=jac)
    batched = solve(y0, args)
    assert batched.all_converged and len(set(batched.steps.tolist())) >= 3
    for b in range(y0.shape[0]):
        alone = solve(y0[b:b + 1], tuple(a[b:b + 1] for a in args))
        assert torch.equal(alone.steps[0], batched.steps[b])
        torch.testing.assert_close(alone.value[0], batched.value[b], rtol=1e-12, atol=1e-14)


def test_full_hessian_by_separate_backward_passes_matches_the_batched_pass(monkeypatch):
    # Large problems build the implicit adjoint's Hessian column by column instead of in one
    # batched backward pass: the gradients must not depend on which way it was built.
    import diffnum.solve._least_squares as module

    _, y, residual, jac, _ = _tanh_basis_problem(seed=20)
    weights = torch.randn(5, 4, dtype=DT, generator=torch.Generator().manual_seed(21))

    def gradient():
        sol = least_squares(residual, torch.zeros(5, 4, dtype=DT), (y,), solver=TIGHT,
                            jacobian=jac, throw=True)
        return torch.autograd.grad((sol.value * weights).sum(), y)[0]

    batched = gradient()
    monkeypatch.setattr(module, "_BATCHED_HESSIAN_MAX", 0)
    separate = gradient()
    assert batched.abs().max() > 0
    torch.testing.assert_close(separate, batched, rtol=1e-12, atol=1e-14)
