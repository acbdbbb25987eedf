"""The driver runs any solver object (init / step / terminate / postprocess), built-in or
custom; linear solver objects (LU, Cholesky, CG, GMRES) and their argument checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from diffnum.solve import (
    CG,
    GMRES,
    LU,
    Cholesky,
    LevenbergMarquardt,
    Newton,
    Status,
    UnrollAdjoint,
    fixed_point,
    least_squares,
    linear_solve,
    root,
)
from diffnum.solve._driver import Outcome, Problem, iterate
from diffnum.solve._solution import RUNNING

DT = torch.float64


@dataclass
class _ChordState:
    y: torch.Tensor
    F: torch.Tensor
    J0: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    problem: Problem


@dataclass(frozen=True)
class Chord:
    """The chord method: Newton steps with the Jacobian of the starting point, y ← y − J₀⁻¹F."""

    atol: float = 1e-12

    def init(self, problem, y0):
        F = problem.start
        status = torch.where(F.abs().amax(-1) <= self.atol, int(Status.CONVERGED), RUNNING)
        return _ChordState(y0, F, problem.jacobian(y0), status,
                           torch.zeros(y0.shape[:-1], dtype=torch.int64), problem)

    def step(self, state):
        active = state.status == RUNNING
        delta = torch.linalg.solve(state.J0, -state.F.unsqueeze(-1)).squeeze(-1)
        y = torch.where(active.unsqueeze(-1), state.y + delta, state.y)
        F = state.problem.fn(y)
        done = active & (F.abs().amax(-1) <= self.atol)
        status = torch.where(done, int(Status.CONVERGED), state.status)
        status = torch.where(active & ~torch.isfinite(F).all(-1), int(Status.NONFINITE), status)
        return replace(state, y=y, F=F, status=status, steps=state.steps + active)

    def terminate(self, state):
        return state.status != RUNNING, state.status

    def postprocess(self, state):
        return Outcome(state.y, state.steps, state.F.norm(dim=-1), {"chord": True})


def _sqrt_problem():
    c = torch.tensor([[4.0], [2.0], [9.0]], dtype=DT, requires_grad=True)
    return (lambda y, c: y * y - c), c, torch.tensor([[1.5], [1.5], [2.5]], dtype=DT)


def test_a_custom_solver_runs_in_root_with_the_implicit_gradient():
    fn, c, y0 = _sqrt_problem()
    sol = root(fn, y0, (c,), solver=Chord(), max_steps=100)
    assert sol.all_converged and sol.stats == {"chord": True}
    torch.testing.assert_close(sol.value.detach(), c.detach().sqrt(), rtol=0, atol=1e-12)
    # Elements converge at different steps (the chord rate depends on the start).
    assert len(set(sol.steps.tolist())) > 1
    (grad,) = torch.autograd.grad(sol.value.sum(), c)
    torch.testing.assert_close(grad, 0.5 / c.detach().sqrt(), rtol=1e-10, atol=0)


def test_a_custom_solver_unrolled_and_cut_by_max_steps():
    fn, c, y0 = _sqrt_problem()
    sol = root(fn, y0, (c,), solver=Chord(), adjoint=UnrollAdjoint(), max_steps=100)
    (grad,) = torch.autograd.grad(sol.value.sum(), c)
    torch.testing.assert_close(grad, 0.5 / c.detach().sqrt(), rtol=1e-8, atol=0)
    short = root(fn, y0, (c,), solver=Chord(), max_steps=2)
    assert short.status.tolist() == [int(Status.MAX_STEPS)] * 3
    assert short.steps.tolist() == [2, 2, 2]


@dataclass(frozen=True)
class Relaxed:
    """y ← y + ω (T(y) − y): a custom fixed-point solver."""

    omega: float = 0.5

    def init(self, problem, y0):
        status = torch.full(y0.shape[:-1], RUNNING, dtype=torch.int64)
        return _ChordState(y0, problem.start - y0, None, status,
                           torch.zeros(y0.shape[:-1], dtype=torch.int64), problem)

    def step(self, state):
        active = state.status == RUNNING
        y = torch.where(active.unsqueeze(-1), state.y + self.omega * state.F, state.y)
        G = state.problem.fn(y) - y
        status = torch.where(active & (G.abs().amax(-1) <= 1e-12), int(Status.CONVERGED),
                             state.status)
        return replace(state, y=y, F=G, status=status, steps=state.steps + active)

    def terminate(self, state):
        return state.status != RUNNING, state.status

    def postprocess(self, state):
        return Outcome(state.y, state.steps, state.F.norm(dim=-1), {})


def test_a_custom_solver_runs_in_fixed_point_and_least_squares():
    c = torch.tensor([[1.0], [2.0]], dtype=DT, requires_grad=True)
    sol = fixed_point(lambda y, c: 0.5 * y + c, torch.zeros(2, 1, dtype=DT), (c,),
                      solver=Relaxed())
    assert sol.all_converged
    torch.testing.assert_close(sol.value.detach(), 2 * c.detach(), rtol=0, atol=1e-11)
    (grad,) = torch.autograd.grad(sol.value.sum(), c)  # y* = 2c
    torch.testing.assert_close(grad, torch.full_like(c, 2.0), rtol=1e-12, atol=0)
    # In least squares the problem's fn is the residual: here a square linear system.
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=DT)
    b = torch.tensor([1.0, 2.0], dtype=DT)
    sol = least_squares(lambda y: A @ y - b, torch.zeros(2, dtype=DT), solver=Chord())
    assert sol.all_converged and sol.stats == {"chord": True}
    torch.testing.assert_close(sol.value, torch.linalg.solve(A, b), rtol=0, atol=1e-12)


def test_the_driver_runs_a_built_in_solver_as_the_front_end_does():
    t = torch.linspace(0, 1, 20, dtype=DT)
    target = 2.0 * torch.exp(-1.5 * t)

    def r(w):
        return w[..., :1] * torch.exp(w[..., 1:] * t) - target

    y0 = torch.zeros(3, 2, dtype=DT)
    from diffnum.solve._common import make_jacobian_fn
    from diffnum.solve._levenberg_marquardt import LeastSquaresProblem

    solver = LevenbergMarquardt(rtol=1e-12)
    with torch.no_grad():
        problem = LeastSquaresProblem(r, make_jacobian_fn(lambda y: r(y), (), "forward", 20),
                                      r(y0))
        state, status = iterate(solver, problem, y0, 100)
        outcome = solver.postprocess(state)
    sol = least_squares(r, y0, solver=solver)
    assert torch.equal(outcome.value, sol.value) and torch.equal(status, sol.status)
    assert torch.equal(outcome.steps, sol.steps)


@pytest.mark.parametrize("solve", [least_squares, root, fixed_point])
def test_a_solver_of_another_problem_or_a_class_is_refused_naming_solver(solve):
    other = Newton() if solve is not root else LevenbergMarquardt()
    y0 = torch.zeros(2, dtype=DT)
    with pytest.raises(TypeError, match="solver must be"):
        solve(lambda y: y - 1, y0, solver=other)
    with pytest.raises(TypeError, match="solver must be"):
        solve(lambda y: y - 1, y0, solver=Chord)  # the class, not an object
    with pytest.raises(TypeError, match="solver must be"):
        solve(lambda y: y - 1, y0, solver=CG())


# -- linear solver objects -------------------------------------------------------------------

def _spd(seed: int, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3, n, n, dtype=DT, generator=g)
    return X, torch.randn(3, n, dtype=DT, generator=g)


def test_cholesky_statuses_are_per_element():
    X, b = _spd(0)
    A = X @ X.mT / 8 + torch.eye(8, dtype=DT)
    A[1] = -A[1]  # negative definite
    A[2, 0, 0] = float("nan")
    sol = linear_solve(A, b, solver=Cholesky())
    assert sol.status.tolist() == [int(Status.CONVERGED), int(Status.DIVERGED),
                                   int(Status.NONFINITE)]
    torch.testing.assert_close(sol.value[0], torch.linalg.solve(A[0], b[0]), rtol=0,
                               atol=1e-12)


def test_cholesky_gradients_match_dense_solve_and_failed_elements_add_zeros():
    X, b = _spd(1)
    X.requires_grad_(True)
    b.requires_grad_(True)
    w = torch.randn(3, 8, dtype=DT, generator=torch.Generator().manual_seed(2))

    def A_of(X):
        return X @ X.mT / 8 + torch.eye(8, dtype=DT)

    sol = linear_solve(A_of(X), b, solver=Cholesky())
    got = torch.autograd.grad((sol.value * w).sum(), (X, b))
    ref = torch.autograd.grad((torch.linalg.solve(A_of(X), b) * w).sum(), (X, b))
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)
    shared = torch.tensor(1.0, dtype=DT, requires_grad=True)
    A = A_of(X.detach()) * shared
    A = torch.cat([A[:2], -A[2:]])  # element 2 is not positive definite
    sol = linear_solve(A, b.detach(), solver=Cholesky())
    (grad,) = torch.autograd.grad(torch.nan_to_num(sol.value[:2]).sum(), shared)
    assert torch.isfinite(grad)


@pytest.mark.parametrize("solver", [LU(), Cholesky(), CG(rtol=1e-12), GMRES(rtol=1e-12)])
def test_every_solver_object_solves_a_batch(solver):
    X, b = _spd(3)
    A = X @ X.mT / 8 + torch.eye(8, dtype=DT)
    sol = linear_solve(A, b, solver=solver)
    assert sol.all_converged and sol.stats == {"solver": type(solver).__name__}
    torch.testing.assert_close(sol.value, torch.linalg.solve(A, b), rtol=0, atol=1e-10)


def test_gmres_restart_bounds_the_krylov_basis():
    g = torch.Generator().manual_seed(4)
    A = torch.randn(2, 12, 12, dtype=DT, generator=g) / 12**0.5 + 2 * torch.eye(12, dtype=DT)
    b = torch.randn(2, 12, dtype=DT, generator=g)
    full = linear_solve(A, b, solver=GMRES(rtol=1e-12, restart=12))
    short = linear_solve(A, b, solver=GMRES(rtol=1e-12, restart=2))
    assert full.all_converged and short.all_converged
    assert int(short.steps.max()) > int(full.steps.max())


@pytest.mark.parametrize(("make", "error", "name"), [
    (lambda: CG(preconditioner=3), TypeError, "preconditioner"),
    (lambda: GMRES(preconditioner="jacobi"), TypeError, "preconditioner"),
    (lambda: GMRES(restart=0), ValueError, "restart"),
    (lambda: GMRES(restart=2.5), TypeError, "restart"),
    (lambda: CG(rtol=1.0), ValueError, "rtol"),
    (lambda: CG(rtol=0.0), ValueError, "rtol"),
    (lambda: GMRES(atol=-1.0), ValueError, "atol"),
    (lambda: LU(rtol=1e-8), TypeError, "rtol"),
    (lambda: linear_solve(torch.eye(2, dtype=DT), torch.ones(2, dtype=DT), solver="cg"),
     TypeError, "solver"),
    (lambda: linear_solve(torch.eye(2, dtype=DT), torch.ones(2, dtype=DT), solver=CG),
     TypeError, "solver"),
    (lambda: linear_solve(lambda v: v, torch.ones(2, dtype=DT), solver=LU()),
     ValueError, "A"),
])
def test_bad_linear_solver_arguments_are_named(make, error, name):
    with pytest.raises(error, match=rf"(?<![\w.]){name}(?!\w)"):
        make()
