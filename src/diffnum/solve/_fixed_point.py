"""Batched fixed points y = T(y): Anderson acceleration and plain iteration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffnum._core.validation import check_flag, check_int_in_range, check_real
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
    check_max_steps,
    check_tolerance,
    check_tolerances,
    evaluate_checked,
    make_jacobian_fn,
    max_abs,
)
from diffnum.solve._solution import RUNNING, Solution, Status, raise_if_failed

# An element whose residual ‖T(y) − y‖∞ grows beyond this multiple of its first one is
# reported DIVERGED: a contraction never does that, and continuing only risks overflow.
_DIVERGENCE_RATIO = 1e8


@dataclass(frozen=True)
class AndersonAcceleration:
    """Anderson acceleration (type II) with ``memory`` past residuals.

    With residuals G_k = T(y_k) − y_k and differences ΔG, ΔY of the last ``memory`` iterates,

        γ = argmin_γ ‖G_k − ΔG γ‖² + reg·‖ΔG‖²_F ‖γ‖²,
        y_{k+1} = y_k + β G_k − (ΔY + β ΔG) γ.

    An element converges when ``max |G_k| <= atol + rtol·max |y_k|``.

    Args:
        rtol: relative tolerance (``None``: 1e-8 float64, 1e-4 float32).
        atol: absolute tolerance (``None``: as ``rtol``).
        memory: number of past differences (0 gives damped plain iteration).
        mixing: β ∈ (0, 2), the relaxation of the plain step.
        regularization: Tikhonov weight in [0, 1] keeping the small least-squares problem well
            posed.

    Example::

        >>> import torch
        >>> from diffnum.solve import AndersonAcceleration, fixed_point
        >>> sol = fixed_point(torch.cos, torch.zeros(3, dtype=torch.float64),
        ...                   solver=AndersonAcceleration(memory=3))
        >>> sol.value.round(decimals=6).tolist()
        [0.739085, 0.739085, 0.739085]
    """

    rtol: float | None = None
    atol: float | None = None
    memory: int = 5
    mixing: float = 1.0
    regularization: float = 1e-10

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)
        check_int_in_range("memory", self.memory, 0, 1000)
        # β >= 2 turns even the contraction T = const into an oscillation that never settles.
        check_real("mixing", self.mixing, low=0.0, high=2.0, low_open=True, high_open=True)
        # Relative to ‖ΔG‖²_F: beyond 1 the Anderson correction is damped away entirely.
        check_real("regularization", self.regularization, low=0.0, high=1.0)


@dataclass(frozen=True)
class FixedPointIteration:
    """Plain iteration y ← T(y) (converges when T is a contraction); same tests as Anderson.

    Example::

        >>> import torch
        >>> from diffnum.solve import FixedPointIteration, fixed_point
        >>> sol = fixed_point(torch.cos, torch.zeros(1, dtype=torch.float64),
        ...                   solver=FixedPointIteration(), max_steps=200)
        >>> round(float(sol.value), 6), bool(sol.converged)
        (0.739085, True)
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)


def checked_square(name: str, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` wrapped to check every evaluation returns a tensor of the shape and dtype of y.

    The first evaluation is checked in full by ``evaluate_checked``; this catches an ``fn``
    whose output changes later (a shape that would silently broadcast against y, one more
    entry, another dtype) at the cost of a shape comparison per call.
    """
    def checked(y: torch.Tensor, *args: Any) -> torch.Tensor:
        out = fn(y, *args)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name}: fn must return a tensor, got {type(out).__name__}")
        if out.shape != y.shape:
            raise ValueError(
                f"{name}: fn(y, *args) must return the shape of y, {tuple(y.shape)} = "
                f"(*batch, n), got {tuple(out.shape)} during the solve"
            )
        if out.dtype != y.dtype:
            raise TypeError(
                f"{name}: fn(y, *args) must return dtype {y.dtype} like y, got {out.dtype} "
                f"during the solve"
            )
        return out
    return checked


def _iterate(fn1: Callable, y: torch.Tensor, Ty: torch.Tensor,
             solver: AndersonAcceleration | FixedPointIteration, max_steps: int):
    dtype, device = y.dtype, y.device
    rtol = check_tolerance("rtol", solver.rtol, dtype)
    atol = check_tolerance("atol", solver.atol, dtype)
    memory = solver.memory if isinstance(solver, AndersonAcceleration) else 0
    beta = solver.mixing if isinstance(solver, AndersonAcceleration) else 1.0
    reg = solver.regularization if isinstance(solver, AndersonAcceleration) else 0.0
    batch = y.shape[:-1]
    zero = torch.zeros((), dtype=dtype, device=device)

    G = Ty - y
    first = max_abs(G.detach())
    status = torch.where(torch.isfinite(first), RUNNING, int(Status.NONFINITE))
    steps = torch.zeros(batch, dtype=torch.int64, device=device)
    ys, gs = [y], [G]
    fevals = 1
    for _ in range(max_steps + 1):
        res = max_abs(G.detach())
        finite = torch.isfinite(res) & torch.isfinite(y.detach()).all(-1)
        running = status == RUNNING
        converged = running & finite & (res <= atol + rtol * max_abs(y.detach()))
        status = torch.where(converged, int(Status.CONVERGED), status)
        status = torch.where(running & ~finite, int(Status.NONFINITE), status)
        status = torch.where(running & finite & ~converged &
                             (res > _DIVERGENCE_RATIO * (first + atol)),
                             int(Status.DIVERGED), status)
        active = status == RUNNING
        if not bool(active.any()) or int(steps.max()) >= max_steps:
            break
        Gs = torch.where(active.unsqueeze(-1), G, zero)
        step = beta * Gs
        k = len(gs) - 1
        if memory > 0 and k > 0:
            dG = torch.stack([gs[i + 1] - gs[i] for i in range(k)], dim=-1)  # (*batch, n, k)
            dY = torch.stack([ys[i + 1] - ys[i] for i in range(k)], dim=-1)
            dG = torch.where(active[..., None, None], dG, zero)
            dY = torch.where(active[..., None, None], dY, zero)
            gram = dG.mT @ dG
            scale = gram.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(torch.finfo(dtype).tiny)
            eye = torch.eye(k, dtype=dtype, device=device)
            L, info = torch.linalg.cholesky_ex(gram + (reg * scale)[..., None, None] * eye)
            gamma = torch.cholesky_solve((dG.mT @ Gs.unsqueeze(-1)), L)
            gamma = torch.where((info == 0)[..., None, None], gamma, zero)
            step = step - ((dY + beta * dG) @ gamma).squeeze(-1)
        y = y + torch.where(active.unsqueeze(-1), step, zero)
        G = fn1(y) - y
        fevals += 1
        ys.append(y)
        gs.append(G)
        if len(gs) > memory + 1:
            ys.pop(0)
            gs.pop(0)
        steps = steps + active.to(torch.int64)

    status = torch.where(status == RUNNING, int(Status.MAX_STEPS), status)
    return y, status, steps, G, {"function_evaluations": fevals}


def fixed_point(fn: Callable[..., torch.Tensor], y0: Any, args: Any = (), *,
                solver: AndersonAcceleration | FixedPointIteration | None = None,
                max_steps: int = 200,
                adjoint: ImplicitAdjoint | UnrollAdjoint | None = None,
                throw: bool = False) -> Solution:
    """Find y* = T(y*; θ) per batch element, T = ``fn(y, *args)`` of the shape of y.

    Gradients by :class:`ImplicitAdjoint` (default): with g = T(y, θ) − y,
    dy*/dθ = (I − ∂_y T)⁻¹ ∂_θ T at y* (one n×n LU solve with the forward-mode Jacobian of T,
    one VJP through ``fn``); they reach ``args`` and tensors ``fn`` closes over.

    Args:
        fn: the map ``T(y, *args)``; batch elements independent.
        y0: initial guess ``(*batch, n)``.
        args: extra arguments of ``fn``.
        solver: :class:`AndersonAcceleration` (default) or :class:`FixedPointIteration`.
        max_steps: iteration limit per element.
        adjoint: :class:`ImplicitAdjoint` (default) or :class:`UnrollAdjoint`.
        throw: raise :class:`SolveError` naming every element that did not converge.

    Returns:
        :class:`Solution` with ``residual_norm`` = ‖T(y*) − y*‖₂.

    Example::

        >>> import torch
        >>> from diffnum.solve import fixed_point
        >>> sol = fixed_point(torch.cos, torch.zeros(1, dtype=torch.float64))  # x = cos x
        >>> round(float(sol.value), 6), sol.status.item()
        (0.739085, 0)
    """
    solver = AndersonAcceleration() if solver is None else solver
    if not isinstance(solver, (AndersonAcceleration, FixedPointIteration)):
        raise TypeError("solver must be AndersonAcceleration(...) or FixedPointIteration(...), "
                        f"got {type(solver).__name__}")
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    check_adjoint(adjoint)
    check_max_steps(max_steps)
    check_flag("throw", throw)
    if not callable(fn):
        raise TypeError(f"fn must be callable fn(y, *args) -> T(y), got {type(fn).__name__}")
    y0 = as_initial_value(y0)
    args = as_args(args)
    with torch.no_grad():
        T0 = evaluate_checked("fixed_point", fn, y0, args, square=True)
    fn = checked_square("fixed_point", fn)

    def fn1(y: torch.Tensor) -> torch.Tensor:
        return fn(y, *args)

    if isinstance(adjoint, UnrollAdjoint):
        T_start = fn1(y0) if torch.is_grad_enabled() else T0
        y, status, steps, G, stats = _iterate(fn1, y0, T_start, solver, max_steps)
    else:
        with torch.no_grad():
            y, status, steps, G, stats = _iterate(fn1, y0, T0, solver, max_steps)
        if torch.is_grad_enabled():
            T = reevaluate(fn, y, args)
            if T is not None:
                n = y.shape[-1]
                with torch.no_grad():
                    JT = make_jacobian_fn(fn, args, "forward", n)(y.detach())
                H = JT - torch.eye(n, dtype=y.dtype, device=y.device)
                y = attach_implicit(y, T - y.detach(), H, status != int(Status.NONFINITE),
                                    symmetric=False, method=adjoint.linear_solver)
    solution = Solution(value=y, status=status, steps=steps,
                        residual_norm=torch.linalg.vector_norm(G.detach(), dim=-1), stats=stats)
    if throw:
        raise_if_failed("fixed_point", solution)
    return solution
