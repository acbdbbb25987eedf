"""Batched root finding: Newton with backtracking line search, and Broyden's method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from diffnum.solve._adjoint import ImplicitAdjoint, UnrollAdjoint
from diffnum.solve._common import (
    batch_where,
    check_tolerance,
    check_tolerances,
    max_abs,
)
from diffnum.solve._driver import Outcome, Problem, solve_square
from diffnum.solve._solution import RUNNING, Solution, Status

# Armijo constant of the line search on φ = ½‖F‖²: accept y + tδ when
# φ(y + tδ) <= (1 − 2·c·t) φ(y) (the Newton direction has slope −2φ).
_ARMIJO = 1e-4
# Halvings of the step before the line search gives up (t = 2⁻³⁰ ≈ 1e-9).
_MAX_BACKTRACKS = 30


@dataclass
class RootState:
    """Newton / Broyden state per batch element: ``y``, ``F`` = F(y), ``phi`` = ½‖F‖²,
    ``status``, ``steps``; ``J`` the (true or Broyden) Jacobian; Broyden's ``refreshed``
    (J is the true Jacobian, not an update) and ``stalled`` (the line search failed along
    the last direction)."""

    y: torch.Tensor
    F: torch.Tensor
    phi: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    J: torch.Tensor | None
    refreshed: torch.Tensor
    stalled: torch.Tensor
    function_evaluations: int
    jacobian_evaluations: int
    problem: Problem
    rtol: float
    atol: float


class _NewtonLike:
    """The iteration shared by :class:`Newton` and :class:`Broyden`: a linear solve with J
    and a backtracking line search; they differ in where J comes from (``_jacobian``) and
    what happens after the step (``_update``)."""

    problem_kind = "root"  # the solve that runs it

    rtol: float | None
    atol: float | None

    def init(self, problem: Problem, y: torch.Tensor) -> RootState:
        F = problem.start
        rtol = check_tolerance("rtol", self.rtol, y.dtype)
        atol = check_tolerance("atol", self.atol, y.dtype)
        phi = 0.5 * (F * F).sum(-1)
        status = torch.where(torch.isfinite(phi), RUNNING, int(Status.NONFINITE))
        status = torch.where(max_abs(F.detach()) <= atol, int(Status.CONVERGED), status)
        batch = y.shape[:-1]
        ones = torch.ones(batch, dtype=torch.bool, device=y.device)
        return RootState(y, F, phi, status, torch.zeros(batch, dtype=torch.int64,
                                                        device=y.device),
                         None, ones, torch.zeros_like(ones), 1, 0, problem, rtol, atol)

    def terminate(self, state: RootState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.status != RUNNING, state.status

    def postprocess(self, state: RootState) -> Outcome:
        return Outcome(state.y, state.steps, torch.linalg.vector_norm(state.F.detach(), dim=-1),
                       {"function_evaluations": state.function_evaluations,
                        "jacobian_evaluations": state.jacobian_evaluations})

    def _jacobian(self, s: RootState, active: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(J for this step, refreshed, Jacobian evaluations made)."""
        raise NotImplementedError

    def _update(self, s: RootState, J: torch.Tensor, y_new: torch.Tensor, F_new: torch.Tensor,
                accept: torch.Tensor, active: torch.Tensor, solved: torch.Tensor,
                stalled: torch.Tensor, refreshed: torch.Tensor):
        """(J, refreshed, failed elements, stalled) after the line search."""
        raise NotImplementedError

    def step(self, state: RootState) -> RootState:
        s = state
        y, dtype = s.y, s.y.dtype
        active = s.status == RUNNING
        J, refreshed, jevals = self._jacobian(s, active)
        finite_J = torch.isfinite(J.detach()).flatten(-2).all(-1)
        # Elements that met a non-finite J or F(y + tδ) in this iteration: if the iteration
        # fails for them, the cause is the non-finite value (NONFINITE), not divergence.
        nonfinite = active & ~finite_J
        eye = torch.eye(y.shape[-1], dtype=dtype, device=y.device)
        LU, pivots, info = torch.linalg.lu_factor_ex(batch_where(finite_J, J, eye))
        delta = torch.linalg.lu_solve(LU, pivots, -s.F.unsqueeze(-1)).squeeze(-1)
        solved = finite_J & (info == 0) & torch.isfinite(delta.detach()).all(-1)
        delta = batch_where(active & solved, delta, torch.zeros((), dtype=dtype,
                                                                device=y.device))
        y_new, F_new, phi_new, accept, t, nonfinite, fevals = self._line_search(
            s, delta, active & solved, nonfinite)
        step = y_new.detach() - y.detach()
        step_small = (step.abs() / (s.atol + s.rtol * y_new.detach().abs())).amax(-1) <= 1
        converged = accept & (((t == 1) & step_small) | (max_abs(F_new.detach()) <= s.atol))
        stalled = active & solved & ~accept
        J, refreshed, failed, stalled = self._update(s, J, y_new, F_new, accept, active,
                                                     solved, stalled, refreshed)
        status = torch.where(converged, int(Status.CONVERGED), s.status)
        status = torch.where(failed & ~converged,
                             torch.where(nonfinite, int(Status.NONFINITE), int(Status.DIVERGED)),
                             status)
        return replace(s, y=y_new, F=F_new, phi=phi_new, status=status,
                       steps=s.steps + active.to(torch.int64), J=J, refreshed=refreshed,
                       stalled=stalled, function_evaluations=s.function_evaluations + fevals,
                       jacobian_evaluations=s.jacobian_evaluations + jevals)

    def _line_search(self, s: RootState, delta: torch.Tensor, searching: torch.Tensor,
                     nonfinite: torch.Tensor):
        """Backtracking from t = 1 on ½‖F‖² (Armijo), per element; returns the new y, F, φ,
        which elements accepted a step, their t, the non-finite flags and the evaluations."""
        y, F, phi = s.y, s.F, s.phi
        t = torch.ones(y.shape[:-1], dtype=y.dtype, device=y.device)
        accept = torch.zeros_like(searching)
        y_new, F_new, phi_new = y, F, phi
        ynorm = y.detach().abs()
        fevals = 0
        for _ in range(_MAX_BACKTRACKS):
            y_t = y + t.unsqueeze(-1) * delta
            F_t = s.problem.fn(y_t)
            fevals += 1
            phi_t = 0.5 * (F_t * F_t).sum(-1)
            nonfinite = nonfinite | (searching & ~torch.isfinite(F_t.detach()).all(-1))
            tiny_step = ((t.unsqueeze(-1) * delta.detach()).abs() /
                         (s.atol + s.rtol * ynorm)).amax(-1) <= 1
            # A full Newton step below the step tolerance is taken even if rounding makes
            # ½‖F‖² tick up: y is then a root to working precision.
            ok = searching & torch.isfinite(phi_t.detach()) & (
                (phi_t.detach() <= (1 - 2 * _ARMIJO * t) * phi.detach()) | (tiny_step & (t == 1)))
            y_new = batch_where(ok, y_t, y_new)
            F_new = batch_where(ok, F_t, F_new)
            phi_new = torch.where(ok, phi_t, phi_new)
            accept = accept | ok
            searching = searching & ~ok
            if not bool(searching.any()):
                break
            t = torch.where(searching, t / 2, t)
        return y_new, F_new, phi_new, accept, t, nonfinite, fevals


@dataclass(frozen=True)
class Newton(_NewtonLike):
    """Newton's method: J(y) δ = −F(y), y ← y + t δ with t from backtracking (Armijo on ½‖F‖²).

    An element converges when a full step satisfies ``|δ| <= atol + rtol·|y|`` componentwise,
    or when ``max |F(y)| <= atol``. A singular J or a failed line search is ``DIVERGED``;
    ``NONFINITE`` when a non-finite J or F(y + tδ) caused the failure (fn turned NaN or ±inf
    where the solver had to evaluate it). A solver object of the driver (``init``, ``step``,
    ``terminate``, ``postprocess``).

    Example::

        >>> import torch
        >>> from diffnum.solve import Newton, root
        >>> x0 = torch.tensor([1.0], dtype=torch.float64)
        >>> root(lambda x: x**3 - 8, x0, solver=Newton()).value
        tensor([2.], dtype=torch.float64)
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)

    def _jacobian(self, s, active):
        return s.problem.jacobian(s.y), torch.ones_like(s.refreshed), 1

    def _update(self, s, J, y_new, F_new, accept, active, solved, stalled, refreshed):
        return J, refreshed, active & (~solved | stalled), stalled


@dataclass(frozen=True)
class Broyden(_NewtonLike):
    """Broyden's ("good") method: Newton steps with a rank-one updated Jacobian estimate.

    B ← B + (ΔF − B s) sᵀ / (sᵀ s) after each step s; B starts as the true Jacobian and is
    recomputed when the line search fails along its direction. Same tests and solver
    interface as :class:`Newton`.

    Example::

        >>> import torch
        >>> from diffnum.solve import Broyden, root
        >>> x0 = torch.tensor([1.5], dtype=torch.float64)
        >>> sol = root(lambda x: x**3 - 8, x0, solver=Broyden())
        >>> round(float(sol.value.detach()), 8)
        2.0
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)

    def _jacobian(self, s, active):
        if s.J is None:
            return s.problem.jacobian(s.y), torch.ones_like(s.refreshed), 1
        if bool((active & ~s.refreshed & s.stalled).any()):
            # Broyden's estimate gave no descent: restart those elements from the true J.
            J = batch_where(active & s.stalled, s.problem.jacobian(s.y), s.J)
            return J, s.refreshed | s.stalled, 1
        return s.J, s.refreshed, 0

    def _update(self, s, J, y_new, F_new, accept, active, solved, stalled, refreshed):
        step = y_new - s.y
        ss = (step * step).sum(-1, keepdim=True)
        upd = ((F_new - s.F) - (J @ step.unsqueeze(-1)).squeeze(-1)) / torch.where(ss > 0, ss, 1)
        J = batch_where(accept & (ss.squeeze(-1) > 0),
                        J + upd.unsqueeze(-1) * step.unsqueeze(-2), J)
        refreshed = refreshed & ~accept
        failed = (active & ~solved & refreshed) | (stalled & refreshed)
        # A singular Broyden estimate is retried from the true Jacobian.
        return J, refreshed, failed, stalled | (active & ~solved)


def root(fn: Callable[..., torch.Tensor], y0: Any, args: Any = (), *,
         solver: Newton | Broyden | None = None, max_steps: int = 50,
         adjoint: ImplicitAdjoint | UnrollAdjoint | None = None, throw: bool = False,
         jacobian: str | Callable[..., torch.Tensor] = "forward") -> Solution:
    """Solve F(y; θ) = 0 per batch element, F = ``fn(y, *args)`` square ``(*batch, n)``.

    Gradients by :class:`ImplicitAdjoint` (default): dy*/dθ = −(∂_y F)⁻¹ ∂_θ F at y*, one
    n×n LU solve and one VJP through ``fn``; they reach ``args`` and tensors ``fn`` closes
    over. ``hessian`` of the adjoint is ignored (H = ∂_y F).

    Args:
        fn: ``fn(y, *args) -> F`` with the shape of y; batch elements independent.
        y0: initial guess ``(*batch, n)``.
        args: extra arguments of ``fn``.
        solver: :class:`Newton` (default), :class:`Broyden`, or any solver object with
            ``init``/``step``/``terminate``/``postprocess`` (see :mod:`diffnum.solve`).
        max_steps: iteration limit per element.
        adjoint: :class:`ImplicitAdjoint` (default) or :class:`UnrollAdjoint`.
        throw: raise :class:`SolveError` naming every element that did not converge.
        jacobian: ``"forward"`` (default), ``"reverse"`` or a callable
            ``jacobian(y, *args) -> (*batch, n, n)``.

    Returns:
        :class:`Solution` with ``residual_norm`` = ‖F(y*)‖₂.

    Example::

        >>> import torch
        >>> from diffnum.solve import root
        >>> a = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
        >>> sol = root(lambda x, a: x * x - a, torch.tensor([1.0], dtype=torch.float64), (a,))
        >>> sol.value.backward()  # implicit gradient: dx/da = 1 / (2x)
        >>> round(float(sol.value.detach()), 10), round(float(a.grad), 10)
        (2.0, 0.25)
    """
    return solve_square("root", fn, y0, args, solver, Newton, (Newton, Broyden), adjoint,
                        max_steps, throw, jacobian=jacobian)
