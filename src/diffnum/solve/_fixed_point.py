"""Batched fixed points y = T(y): Anderson acceleration and plain iteration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from diffnum._core.validation import check_int_in_range, check_real
from diffnum.solve._adjoint import ImplicitAdjoint, UnrollAdjoint
from diffnum.solve._common import (
    check_tolerance,
    check_tolerances,
    max_abs,
)
from diffnum.solve._driver import Outcome, Problem, solve_square
from diffnum.solve._solution import RUNNING, Solution, Status

# An element whose residual ‖T(y) − y‖∞ grows beyond this multiple of its first one is
# reported DIVERGED: a contraction never does that, and continuing only risks overflow.
_DIVERGENCE_RATIO = 1e8


@dataclass
class FixedPointState:
    """Anderson / plain iteration state per batch element: ``y``, ``G`` = T(y) − y, the
    first ‖G‖∞ (for the divergence test), ``status``, ``steps`` and the last iterates and
    residuals (``ys``, ``gs``, at most memory + 1 of each)."""

    y: torch.Tensor
    G: torch.Tensor
    first: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    problem: Problem
    rtol: float
    atol: float
    function_evaluations: int = 1
    ys: list = field(default_factory=list)
    gs: list = field(default_factory=list)


class _FixedPointSolver:
    """Type-II Anderson acceleration with (memory, β, regularization) from ``_anderson``."""

    problem_kind = "fixed_point"  # the solve that runs it

    rtol: float | None
    atol: float | None

    def _anderson(self) -> tuple[int, float, float]:
        raise NotImplementedError

    def init(self, problem: Problem, y: torch.Tensor) -> FixedPointState:
        rtol = check_tolerance("rtol", self.rtol, y.dtype)
        atol = check_tolerance("atol", self.atol, y.dtype)
        G = problem.start - y
        first = max_abs(G.detach())
        status = torch.where(torch.isfinite(first), RUNNING, int(Status.NONFINITE))
        steps = torch.zeros(y.shape[:-1], dtype=torch.int64, device=y.device)
        state = FixedPointState(y, G, first, status, steps, problem, rtol, atol, 1, [y], [G])
        return replace(state, status=_checked(state))

    def terminate(self, state: FixedPointState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.status != RUNNING, state.status

    def postprocess(self, state: FixedPointState) -> Outcome:
        return Outcome(state.y, state.steps, torch.linalg.vector_norm(state.G.detach(), dim=-1),
                       {"function_evaluations": state.function_evaluations})

    def step(self, state: FixedPointState) -> FixedPointState:
        s = state
        memory, beta, reg = self._anderson()
        dtype, device = s.y.dtype, s.y.device
        zero = torch.zeros((), dtype=dtype, device=device)
        active = s.status == RUNNING
        Gs = torch.where(active.unsqueeze(-1), s.G, zero)
        step = beta * Gs
        ys, gs = s.ys, s.gs
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
        y = s.y + torch.where(active.unsqueeze(-1), step, zero)
        G = s.problem.fn(y) - y
        ys, gs = [*ys, y], [*gs, G]
        if len(gs) > memory + 1:
            ys, gs = ys[1:], gs[1:]
        s = replace(s, y=y, G=G, ys=ys, gs=gs, steps=s.steps + active.to(torch.int64),
                    function_evaluations=s.function_evaluations + 1)
        s.status = _checked(s)  # s is the new state
        return s


def _checked(s: FixedPointState) -> torch.Tensor:
    """The status after the tests at the current iterate: CONVERGED when
    ‖G‖∞ <= atol + rtol‖y‖∞, NONFINITE, or DIVERGED when ‖G‖∞ grew beyond
    _DIVERGENCE_RATIO times its first value."""
    res = max_abs(s.G.detach())
    finite = torch.isfinite(res) & torch.isfinite(s.y.detach()).all(-1)
    running = s.status == RUNNING
    converged = running & finite & (res <= s.atol + s.rtol * max_abs(s.y.detach()))
    status = torch.where(converged, int(Status.CONVERGED), s.status)
    status = torch.where(running & ~finite, int(Status.NONFINITE), status)
    return torch.where(running & finite & ~converged &
                       (res > _DIVERGENCE_RATIO * (s.first + s.atol)),
                       int(Status.DIVERGED), status)


@dataclass(frozen=True)
class AndersonAcceleration(_FixedPointSolver):
    """Anderson acceleration (type II) with ``memory`` past residuals.

    With residuals G_k = T(y_k) − y_k and differences ΔG, ΔY of the last ``memory`` iterates,

        γ = argmin_γ ‖G_k − ΔG γ‖² + reg·‖ΔG‖²_F ‖γ‖²,
        y_{k+1} = y_k + β G_k − (ΔY + β ΔG) γ.

    An element converges when ``max |G_k| <= atol + rtol·max |y_k|``. A solver object of the
    driver (``init``, ``step``, ``terminate``, ``postprocess``), as is
    :class:`FixedPointIteration`, which is the same iteration with memory 0 and β = 1.

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

    def _anderson(self) -> tuple[int, float, float]:
        return self.memory, self.mixing, self.regularization


@dataclass(frozen=True)
class FixedPointIteration(_FixedPointSolver):
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

    def _anderson(self) -> tuple[int, float, float]:
        return 0, 1.0, 0.0


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
        solver: :class:`AndersonAcceleration` (default), :class:`FixedPointIteration`, or any
            solver object with ``init``/``step``/``terminate``/``postprocess`` (see
            :mod:`diffnum.solve`); its problem's ``fn`` is T.
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
    return solve_square("fixed_point", fn, y0, args, solver, AndersonAcceleration,
                        (AndersonAcceleration, FixedPointIteration), adjoint, max_steps, throw,
                        fixed_point=True)
