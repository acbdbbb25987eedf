"""Batched root finding: Newton with backtracking line search, and Broyden's method."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffnum._core.validation import check_flag
from diffnum.solve._adjoint import (
    ImplicitAdjoint,
    UnrollAdjoint,
    attach_implicit,
    check_adjoint,
    reevaluate,
)
from diffnum.solve._common import (
    as_args,
    as_initial_value,
    batch_where,
    check_max_steps,
    check_tolerance,
    check_tolerances,
    evaluate_checked,
    make_jacobian_fn,
    max_abs,
    resolve_jacobian,
)
from diffnum.solve._fixed_point import checked_square
from diffnum.solve._solution import RUNNING, Solution, Status, raise_if_failed

logger = logging.getLogger(__name__)

# Armijo constant of the line search on φ = ½‖F‖²: accept y + tδ when
# φ(y + tδ) <= (1 − 2·c·t) φ(y) (the Newton direction has slope −2φ).
_ARMIJO = 1e-4
# Halvings of the step before the line search gives up (t = 2⁻³⁰ ≈ 1e-9).
_MAX_BACKTRACKS = 30


@dataclass(frozen=True)
class Newton:
    """Newton's method: J(y) δ = −F(y), y ← y + t δ with t from backtracking (Armijo on ½‖F‖²).

    An element converges when a full step satisfies ``|δ| <= atol + rtol·|y|`` componentwise,
    or when ``max |F(y)| <= atol``. A singular J or a failed line search is ``DIVERGED``;
    ``NONFINITE`` when a non-finite J or F(y + tδ) caused the failure (fn turned NaN or ±inf
    where the solver had to evaluate it).

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


@dataclass(frozen=True)
class Broyden:
    """Broyden's ("good") method: Newton steps with a rank-one updated Jacobian estimate.

    B ← B + (ΔF − B s) sᵀ / (sᵀ s) after each step s; B starts as the true Jacobian and is
    recomputed when the line search fails along its direction. Same tests as :class:`Newton`.

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


def _iterate(fn1: Callable, jac1: Callable, y: torch.Tensor, F: torch.Tensor,
             solver: Newton | Broyden, max_steps: int):
    dtype, device = y.dtype, y.device
    rtol = check_tolerance("rtol", solver.rtol, dtype)
    atol = check_tolerance("atol", solver.atol, dtype)
    broyden = isinstance(solver, Broyden)
    batch, n = y.shape[:-1], y.shape[-1]
    eye = torch.eye(n, dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)

    phi = 0.5 * (F * F).sum(-1)
    status = torch.where(torch.isfinite(phi), RUNNING, int(Status.NONFINITE))
    status = torch.where(max_abs(F.detach()) <= atol, int(Status.CONVERGED), status)
    steps = torch.zeros(batch, dtype=torch.int64, device=device)
    fevals, jevals = 1, 0
    J = None
    refreshed = torch.ones(batch, dtype=torch.bool, device=device)
    stalled = torch.zeros(batch, dtype=torch.bool, device=device)

    for _ in range(max_steps):
        active = status == RUNNING
        if not bool(active.any()):
            break
        if J is None or not broyden:
            J = jac1(y)
            jevals += 1
            refreshed = torch.ones_like(refreshed)
        elif bool((active & ~refreshed & stalled).any()):
            # Broyden's estimate gave no descent: restart those elements from the true J.
            J = batch_where(active & stalled, jac1(y), J)
            jevals += 1
            refreshed = refreshed | stalled
        finite_J = torch.isfinite(J.detach()).flatten(-2).all(-1)
        # Elements that met a non-finite J or F(y + tδ) in this iteration: if the iteration
        # fails for them, the cause is the non-finite value (NONFINITE), not divergence.
        nonfinite = active & ~finite_J
        Js = batch_where(finite_J, J, eye)
        LU, pivots, info = torch.linalg.lu_factor_ex(Js)
        delta = torch.linalg.lu_solve(LU, pivots, -F.unsqueeze(-1)).squeeze(-1)
        solved = finite_J & (info == 0) & torch.isfinite(delta.detach()).all(-1)
        delta = batch_where(active & solved, delta, zero)

        t = torch.ones(batch, dtype=dtype, device=device)
        searching = active & solved
        accept = torch.zeros_like(searching)
        y_new, F_new, phi_new = y, F, phi
        ynorm = y.detach().abs()
        for _ in range(_MAX_BACKTRACKS):
            y_t = y + t.unsqueeze(-1) * delta
            F_t = fn1(y_t)
            fevals += 1
            phi_t = 0.5 * (F_t * F_t).sum(-1)
            nonfinite = nonfinite | (searching & ~torch.isfinite(F_t.detach()).all(-1))
            tiny_step = ((t.unsqueeze(-1) * delta.detach()).abs() /
                         (atol + rtol * ynorm)).amax(-1) <= 1
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

        step = y_new.detach() - y.detach()
        step_small = (step.abs() / (atol + rtol * y_new.detach().abs())).amax(-1) <= 1
        converged = accept & (((t == 1) & step_small) | (max_abs(F_new.detach()) <= atol))
        stalled = active & solved & ~accept
        if broyden:
            s = (y_new - y)
            ss = (s * s).sum(-1, keepdim=True)
            upd = ((F_new - F) - (J @ s.unsqueeze(-1)).squeeze(-1)) / torch.where(ss > 0, ss, 1)
            J = batch_where(accept & (ss.squeeze(-1) > 0),
                            J + upd.unsqueeze(-1) * s.unsqueeze(-2), J)
            refreshed = refreshed & ~accept
            failed = (active & ~solved & refreshed) | (stalled & refreshed)
        else:
            failed = active & (~solved | stalled)
        y, F, phi = y_new, F_new, phi_new
        steps = steps + active.to(torch.int64)
        status = torch.where(converged, int(Status.CONVERGED), status)
        status = torch.where(failed & ~converged,
                             torch.where(nonfinite, int(Status.NONFINITE), int(Status.DIVERGED)),
                             status)
        if broyden:
            # A singular Broyden estimate is retried from the true Jacobian.
            stalled = stalled | (active & ~solved)

    status = torch.where(status == RUNNING, int(Status.MAX_STEPS), status)
    return y, status, steps, F, {"function_evaluations": fevals, "jacobian_evaluations": jevals}


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
        solver: :class:`Newton` (default) or :class:`Broyden`.
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
    solver = Newton() if solver is None else solver
    if not isinstance(solver, (Newton, Broyden)):
        raise TypeError(f"solver must be Newton(...) or Broyden(...), got {type(solver).__name__}")
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    check_adjoint(adjoint)
    check_max_steps(max_steps)
    check_flag("throw", throw)
    if not callable(fn):
        raise TypeError(f"fn must be callable fn(y, *args) -> F, got {type(fn).__name__}")
    y0 = as_initial_value(y0)
    args = as_args(args)
    with torch.no_grad():
        F0 = evaluate_checked("root", fn, y0, args, square=True)
    fn = checked_square("root", fn)
    n = y0.shape[-1]
    mode = resolve_jacobian(jacobian, n, n)
    jac1 = make_jacobian_fn(fn, args, mode, n)

    def fn1(y: torch.Tensor) -> torch.Tensor:
        return fn(y, *args)

    if isinstance(adjoint, UnrollAdjoint):
        F_start = fn1(y0) if torch.is_grad_enabled() else F0
        y, status, steps, F, stats = _iterate(fn1, jac1, y0, F_start, solver, max_steps)
    else:
        with torch.no_grad():
            y, status, steps, F, stats = _iterate(fn1, jac1, y0, F0, solver, max_steps)
        if torch.is_grad_enabled():
            g = reevaluate(fn, y, args)
            if g is not None:
                with torch.no_grad():
                    H = jac1(y.detach())
                y = attach_implicit(y, g, H, status != int(Status.NONFINITE), symmetric=False,
                                    method=adjoint.linear_solver)
    solution = Solution(value=y, status=status, steps=steps,
                        residual_norm=torch.linalg.vector_norm(F.detach(), dim=-1), stats=stats)
    if throw:
        raise_if_failed("root", solution)
    return solution
