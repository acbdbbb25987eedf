"""Levenberg–Marquardt and Gauss–Newton as solver objects: ``init``, ``step``, ``terminate``.

Both iterate y ← y + δ with (JᵀJ + λD) δ = −Jᵀr (λ = 0 for Gauss–Newton) on the same
:class:`LeastSquaresState`; they differ only in three rules — which steps are accepted, how λ
changes, when an element has failed — which are the methods ``_accept``, ``_damp`` and
``_failed``. The normal equations (JᵀJ, Jᵀr and when they are rebuilt) are
:mod:`diffnum.solve._normal_equations`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffnum._core.validation import check_one_of, check_real
from diffnum.solve._common import (
    batch_where,
    check_tolerance,
    check_tolerances,
    make_jacobian_fn,
)
from diffnum.solve._driver import Outcome, Problem
from diffnum.solve._normal_equations import GramEquations, NormalEquations
from diffnum.solve._solution import RUNNING, Status

# A step is accepted when the actual decrease of ½‖r‖² is at least this fraction of the decrease
# predicted by the linear model (the usual trust-region threshold; MINPACK uses 1e-4 too).
_ACCEPT_RATIO = 1e-4
# Damping beyond this (relative to the scaling D) means no step of any length reduces the
# residual: the element is reported DIVERGED instead of spinning until max_steps.
_MAX_DAMPING = 1e16
# An element that refuses this many steps without making progress in between — no step
# lowered ½‖r‖² by more than √rtol of it, moved y by more than √rtol of it, or halved the
# smallest gradient cosine it had reached — sits where ½‖r‖² is not differentiable (a kink or
# cusp of r, where the linear model keeps promising a decrease that no step delivers) or at the
# rounding floor. It is reported DIVERGED instead of crawling until max_steps. (A smooth
# iteration converging linearly takes steps this small too, but its gradient keeps falling; a
# heavily damped start takes tiny steps too, but they are accepted.)
_STALL_STEPS = 5
# An element whose accepted steps keep moving y by more than the step test allows, along
# directions J hardly sees (δᵀJᵀJδ <= rtol·δᵀdiag(JᵀJ)δ), while the gradient and cost tests
# hold — ½‖r‖² flat to rtol, J orthogonal to r to rtol — wanders in a null space of J that only
# the ridge (or nothing) curves, below the working precision's resolution of JᵀJ (float32 with
# a rank-deficient basis). After this many such steps in a row it is reported
# ILL_CONDITIONED: r is settled, y is not determined to rtol at this precision. (A smooth
# iteration converging along a direction J sees is not counted, however slowly it goes.)
_WANDER_STEPS = 5
# Beyond 2^±400 (about 1e±120) squares of residuals and Jacobian entries leave the range.
_RANGE_EXPONENT = 400


class Compactor:
    """``fn`` and its Jacobian evaluated on the running elements only (``compact=True``).

    Tensors in ``args`` whose leading dimensions are the batch shape are indexed by the
    running mask; the indexed copies are made again only when the mask changes, which it does
    only when elements finish (running elements never restart)."""

    def __init__(self, fn: Callable, args: tuple, mode: str | Callable,
                 batch: tuple[int, ...], m: int) -> None:
        self.fn, self.args, self.mode, self.batch, self.m = fn, args, mode, batch, m
        self._mask: torch.Tensor | None = None
        self._subset_args = args
        self.inv_scale: torch.Tensor | None = None  # 1/σ per element (see _range_scale)

    def subset(self, mask: torch.Tensor) -> tuple:
        """The arguments of the elements of ``mask``, cached for the iteration (made without
        autograd there): the adjoint takes :meth:`fresh_subset` instead."""
        if self._mask is None or not torch.equal(self._mask, mask):
            self._subset_args = self.fresh_subset(mask)
            self._mask = mask
        return self._subset_args

    def fresh_subset(self, mask: torch.Tensor) -> tuple:
        """The arguments of the elements of ``mask``, indexed now (so that, with autograd on,
        they keep their link to the caller's tensors)."""
        return tuple(a[mask] if isinstance(a, torch.Tensor)
                     and tuple(a.shape[:len(self.batch)]) == self.batch else a
                     for a in self.args)

    def residual(self, y: torch.Tensor, mask: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """r(y) where ``mask`` is set, ``r`` (the residual at the unchanged point) elsewhere."""
        inv = self.inv_scale
        if bool(mask.all()):
            out = self.fn(y, *self.args)
            return out if inv is None else out * inv
        out = self.fn(y[mask], *self.subset(mask))
        return r.index_put((mask,), out if inv is None else out * inv[mask])

    def jacobian_rows(self, y: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor
                      ) -> torch.Tensor:
        """J(y) of the elements where ``rows`` is set (a subset of ``mask``), ``(count, m, n)``;
        evaluated on the elements of ``mask``, whose indexed arguments are cached."""
        inv = self.inv_scale
        if bool(mask.all()):
            J = make_jacobian_fn(self.fn, self.args, self.mode, self.m)(y)
            return (J if inv is None else J * inv.unsqueeze(-1))[rows]
        J = make_jacobian_fn(self.fn, self.subset(mask), self.mode, self.m)(y[mask])
        J = J if inv is None else J * inv[mask].unsqueeze(-1)
        return J[rows[mask]]


@dataclass
class LeastSquaresProblem(Problem):
    """A least-squares problem: besides ``fn`` (r) and ``jacobian`` (J), ``fused(y) -> (r, J)``
    when ``fn`` returns both, ``start_jacobian`` J(y0) when already at hand, ``compact`` the
    running-elements-only evaluation, and ``keep_jacobian`` (report J(y*) when at hand).
    ``init`` takes ``start`` and ``start_jacobian`` out, so that no one else holds the start
    Jacobian while the iteration evaluates the next."""

    fused: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    start_jacobian: torch.Tensor | None = None
    compact: Compactor | None = None
    keep_jacobian: bool = False

    def take_start(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        r, J = self.start, self.start_jacobian
        self.start = self.start_jacobian = None
        return r, J


def _half_square_norm(r: torch.Tensor) -> torch.Tensor:
    """½‖r‖² over the last dimension (one kernel, no m-sized temporary)."""
    return 0.5 * torch.linalg.vecdot(r, r)


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Whether every entry of each row (last dimension) of ``x`` is finite."""
    return torch.isfinite(x.detach()).all(-1)


def _range_scale(r: torch.Tensor) -> torch.Tensor | None:
    """σ = 2^k per element with |r/σ| near 1 where max|r| is outside 2^±400, else 1; None
    when no element needs it."""
    size = r.detach().abs().amax(-1)
    exponent = torch.where(torch.isfinite(size) & (size > 0), torch.log2(size), 0.0).round()
    if not bool((exponent.abs() > _RANGE_EXPONENT).any()):
        return None
    exponent = torch.where(exponent.abs() > _RANGE_EXPONENT, exponent, 0.0)
    return torch.pow(torch.full_like(size, 2.0), exponent)  # exact powers of two


def _sanitized(t: torch.Tensor | None, batch_ndim: int
               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(t with every batch element that holds a non-finite entry zeroed, which elements were
    finite). Used when the iteration is recorded (unrolled adjoint): a NaN that only a
    ``where`` masks still reaches shared tensors' gradients as NaN·0 through the products
    it enters; zeroed first, a failed element adds exact zeros."""
    if t is None:
        return None, None
    ok = torch.isfinite(t.detach()).flatten(batch_ndim).all(-1)
    shape = (*ok.shape, *([1] * (t.ndim - batch_ndim)))
    return torch.where(ok.reshape(shape), t, torch.zeros((), dtype=t.dtype)), ok


@dataclass(frozen=True)
class _Frame:
    """What stays fixed while one least-squares batch iterates: the evaluations (of r/σ when
    rescaled, see :func:`_range_scale`), the cost unit S per element, the tolerances."""

    fn: Callable | None
    jacobian: Callable | None
    fused: Callable | None
    compact: Compactor | None
    sigma: torch.Tensor | None  # residuals are divided by σ (None: not rescaled)
    S: torch.Tensor  # every cost is ½‖r/S‖², S = max|r₀| per element
    inv_S: torch.Tensor
    exact_fit: torch.Tensor  # ½‖r/S‖² of an exact fit, ‖r‖ <= atol + rtol ‖r₀‖
    g_start: torch.Tensor  # ‖Jᵀr₀‖∞, for the relative form of the gradient test
    rtol: float
    atol: float
    guard: bool  # recorded by autograd (unrolled): non-finite elements zeroed, see _sanitized
    keep_jacobian: bool
    zero: torch.Tensor
    codes: dict[Status, torch.Tensor]  # status codes as 0-dim tensors, for torch.where

    def half_square(self, residual: torch.Tensor) -> torch.Tensor:
        return _half_square_norm(residual * self.inv_S)


@dataclass
class LeastSquaresState:
    """Levenberg–Marquardt / Gauss–Newton state per batch element.

    ``y``, ``r`` (= r(y)/σ), ``f`` (= ½‖r/S‖²), ``status``, ``steps``; damping ``lam`` and its
    growth factor ``nu``; Marquardt's running max ``D`` of diag(JᵀJ) and the scaling it
    gives; the normal ``equations``. ``fresh``: the equations changed since the last step (the
    finiteness test and D are redone then, and at every step once an element is non-finite,
    ``all_finite`` False). ``finite``: elements whose numbers are all finite so far.
    ``idle``: refused steps since the last progress, ``best_cosine`` the smallest gradient
    cosine reached (see ``_STALL_STEPS``); ``wander``: accepted steps in a row that moved y
    with the gradient and cost tests holding (see ``_WANDER_STEPS``).
    """

    y: torch.Tensor
    r: torch.Tensor
    f: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    lam: torch.Tensor
    nu: torch.Tensor
    D: torch.Tensor
    scale: torch.Tensor | None
    equations: NormalEquations | GramEquations
    finite: torch.Tensor
    idle: torch.Tensor
    best_cosine: torch.Tensor
    wander: torch.Tensor
    fresh: bool
    all_finite: bool
    function_evaluations: int
    jacobian_evaluations: int
    frame: _Frame


class _NormalEquationSolver:
    """The iteration shared by :class:`LevenbergMarquardt` and :class:`GaussNewton`."""

    problem_kind = "least_squares"  # the solve that runs it

    rtol: float | None
    atol: float | None

    def _initial_damping(self) -> float:
        raise NotImplementedError

    def _marquardt(self) -> bool:
        raise NotImplementedError

    def _accept(self, moving: torch.Tensor, finite_try: torch.Tensor, f: torch.Tensor,
                pred: torch.Tensor, actual: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(accepted elements, whatever ``_damp`` needs of the decision)."""
        raise NotImplementedError

    def _damp(self, lam: torch.Tensor, nu: torch.Tensor, accept: torch.Tensor,
              refused: torch.Tensor, decision: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _failed(self, active: torch.Tensor, converged: torch.Tensor, solved: torch.Tensor,
                finite_try: torch.Tensor, lam: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(DIVERGED elements, NONFINITE elements or None) among those not converged."""
        raise NotImplementedError

    def _reported_damping(self, lam: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    # -- the solver interface ---------------------------------------------------------------

    def init(self, problem: LeastSquaresProblem, y: torch.Tensor) -> LeastSquaresState:
        r, J = problem.take_start()
        dtype, device = y.dtype, y.device
        fn, jacobian, fused, compact = (problem.fn, problem.jacobian, problem.fused,
                                        problem.compact)
        # Residuals near the ends of the float range (|r| ~ 1e154 makes JᵀJ overflow, ~1e-160
        # makes it subnormal) are divided by an exact power of two σ per element: the
        # iterates are those of r/σ, and the reported norm is σ‖r/σ‖. In range, nothing is
        # rescaled.
        sigma = _range_scale(r)
        if sigma is not None:
            fn, jacobian, fused = _rescaled(sigma, fn, jacobian, fused, compact)
            r = r / sigma.unsqueeze(-1)
            J = None if J is None else J / sigma[..., None, None]
        batch, m, n = y.shape[:-1], r.shape[-1], y.shape[-1]
        gram = m < n
        if gram:
            compact = None  # the Gram form steps with J itself, kept for every element
        status = torch.full(batch, RUNNING, dtype=torch.int64, device=device)
        S = r.detach().abs().amax(-1)
        S = torch.where(torch.isfinite(S) & (S > 0), S, 1.0)
        inv_S = (1 / S).unsqueeze(-1)
        guard = torch.is_grad_enabled()
        bad_start = None
        if guard:
            r, bad_r = _sanitized(r, len(batch))
            J, bad_J = _sanitized(J, len(batch))
            bad_start = ~bad_r if bad_J is None else ~(bad_r & bad_J)
        f = _half_square_norm(r * inv_S)
        rtol = check_tolerance("rtol", self.rtol, dtype)
        # No absolute floor unless the user sets one: tolerances are relative to the problem.
        atol = 0.0 if self.atol is None else check_tolerance("atol", self.atol, dtype)
        # An exact fit: ‖r‖ <= atol + rtol ‖r₀‖ (rounding of r, not of ½‖r‖², then limits the
        # gain ratio, and no step or gradient test can be met reliably).
        exact_fit = 0.5 * (atol / S + rtol * torch.sqrt(2 * f)) ** 2
        if J is None:
            J = jacobian(y)
            if guard:
                J, ok_J = _sanitized(J, len(batch))
                bad_start = bad_start | ~ok_J
        # Finiteness of J is checked through diag(JᵀJ) and Jᵀr in the loop (a NaN or inf in J
        # reaches them), which is far cheaper than scanning the m×n Jacobian.
        finite = torch.isfinite(f) if bad_start is None else torch.isfinite(f) & ~bad_start
        status = torch.where(finite, status, int(Status.NONFINITE))
        equations = (GramEquations if gram else NormalEquations).build(J, r)
        J = None
        frame = _Frame(fn, jacobian, fused, compact, sigma, S, inv_S, exact_fit,
                       equations.g.detach().abs().amax(-1), rtol, atol, guard,
                       problem.keep_jacobian, torch.zeros((), dtype=dtype, device=device),
                       {code: torch.tensor(int(code), dtype=torch.int64, device=device)
                        for code in Status})
        return LeastSquaresState(
            y=y, r=r, f=f, status=status, steps=torch.zeros(batch, dtype=torch.int64,
                                                            device=device),
            lam=torch.full(batch, float(self._initial_damping()), dtype=dtype, device=device),
            nu=torch.full(batch, 2.0, dtype=dtype, device=device),
            D=torch.zeros((*batch, n), dtype=dtype, device=device),
            scale=None if self._marquardt() else torch.ones((*batch, n), dtype=dtype,
                                                            device=device),
            equations=equations, finite=finite,
            idle=torch.zeros(batch, dtype=torch.int64, device=device),
            best_cosine=torch.full(batch, torch.inf, dtype=dtype, device=device),
            wander=torch.zeros(batch, dtype=torch.int64, device=device), fresh=True,
            all_finite=True,
            function_evaluations=1, jacobian_evaluations=1, frame=frame)

    def terminate(self, state: LeastSquaresState) -> tuple[torch.Tensor, torch.Tensor]:
        return state.status != RUNNING, state.status

    def postprocess(self, state: LeastSquaresState) -> Outcome:
        s, frame = state, state.frame
        # ‖r‖ = S √(2 f), in the residual's own unit (inf only when it truly overflows).
        norm = frame.S * torch.sqrt(2 * s.f)
        if frame.sigma is not None:
            norm = frame.sigma * norm
        stats = {"function_evaluations": s.function_evaluations,
                 "jacobian_evaluations": s.jacobian_evaluations,
                 "damping": self._reported_damping(s.lam)}
        return Outcome(s.y, s.steps, norm, stats)

    def final_jacobian(self, state: LeastSquaresState) -> torch.Tensor | None:
        """J(y*) of every element when the iteration has it at hand and was asked to keep
        it (``keep_jacobian``), else ``None``."""
        return state.equations.jacobian_at_y() if state.frame.keep_jacobian else None

    def step(self, state: LeastSquaresState) -> LeastSquaresState:
        # A shallow copy whose fields are reassigned (no tensor is modified in place): the
        # state passed in is left as it was.
        s = copy.copy(state)
        frame = s.frame
        active = s.status == RUNNING
        if s.fresh or not s.all_finite:
            active = self._refresh(s, active)
        delta, pred, info = s.equations.solve(s.lam, s.scale, s.r, frame.inv_S)
        solved = (info == 0) & _finite_rows(delta)
        moving = active & solved
        delta = batch_where(moving, delta, frame.zero)
        # Finished elements get δ = 0: their trial point is y itself.
        y_try = s.y + delta
        r_try, J_try, f_try, counts = self._trial(s, y_try, active)
        fd, ftd, pd = s.f.detach(), f_try.detach(), pred.detach()
        actual = fd - ftd
        finite_try = torch.isfinite(ftd)
        accept, decision = self._accept(moving, finite_try, fd, pd, actual)
        cosine = self._gradient_cosine(s, fd)
        gradient_small = (cosine <= frame.rtol) | (
            s.equations.g.detach().abs().amax(-1) <= frame.rtol * frame.g_start)
        converged = active & (
            (accept & gradient_small & self._small_step(s, delta, y_try, actual, ftd))
            | (torch.where(accept, ftd, fd) <= frame.exact_fit))
        y = batch_where(accept, y_try, s.y)
        # Elements that did not accept a step either finished (δ = 0, so r_try = r) or were
        # rejected; without rejections r_try is the new r as it stands (no m-sized select).
        refused = active & ~accept
        rejected = bool(refused.any())
        s.r = batch_where(accept, r_try, s.r) if rejected else r_try
        s.y, s.f = y, torch.where(accept, f_try, s.f)
        s.lam, s.nu = self._damp(s.lam, s.nu, accept, refused, decision)
        stuck, nonfinite = self._failed(active, converged, solved, finite_try, s.lam)
        s.idle, s.best_cosine = self._idle(s, active & ~converged & ~gradient_small, accept,
                                           actual, fd, delta, cosine)
        stuck = stuck | (s.idle >= _STALL_STEPS)
        s.wander = self._wander(s, active & ~converged & gradient_small, accept, actual, fd,
                                delta, y_try)
        codes = frame.codes
        status = torch.where(converged, codes[Status.CONVERGED], s.status)
        status = torch.where(s.wander >= _WANDER_STEPS, codes[Status.ILL_CONDITIONED], status)
        status = torch.where(stuck, codes[Status.DIVERGED], status)
        if nonfinite is not None:
            status = torch.where(nonfinite, codes[Status.NONFINITE], status)
        s.status, s.steps = status, s.steps + active
        s.function_evaluations += counts[0]
        s.jacobian_evaluations += counts[1]
        if bool(accept.any()):
            self._relinearize(s, accept, refused, rejected, J_try)
        return s

    def _refresh(self, s: LeastSquaresState, active: torch.Tensor) -> torch.Tensor:
        """Finiteness of g, diag(JᵀJ) and ½‖r‖² (non-finite elements are NONFINITE and kept
        out of the batched linear algebra) and Marquardt's scaling D from diag(JᵀJ), set on
        ``s``; returns the active elements."""
        eqs = s.equations
        finite_J = _finite_rows(torch.cat((eqs.colsq, eqs.g, s.f.unsqueeze(-1)), dim=-1))
        ok = s.finite & finite_J
        if not bool(ok.all()):
            bad = active & ~finite_J
            s.status = torch.where(bad, s.frame.codes[Status.NONFINITE], s.status)
            active = active & ~bad
            s.finite = s.finite & ~bad
            s.all_finite = False
            s.equations, s.r = eqs.masked(ok, s.r, s.frame.zero)
        if self._marquardt():
            eps, tiny = torch.finfo(s.y.dtype).eps, torch.finfo(s.y.dtype).tiny
            s.D = torch.maximum(s.D, s.equations.colsq.detach())
            s.scale = s.D + (eps * s.D.amax(-1, keepdim=True) + tiny)
        s.fresh = False
        return active

    def _trial(self, s: LeastSquaresState, y_try: torch.Tensor, active: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        """r, J (fused only) and ½‖r/S‖² at the trial points, and the evaluations counted."""
        frame = s.frame
        jevals = 0
        if frame.compact is not None:
            r_try, J_try = frame.compact.residual(y_try, active, s.r), None
        elif frame.fused is None:
            r_try, J_try = frame.fn(y_try), None
        else:
            r_try, J_try = frame.fused(y_try)
            jevals = 1
        if frame.guard:
            batch_ndim = s.y.ndim - 1
            r_try, ok_try = _sanitized(r_try, batch_ndim)
            J_try, ok_J_try = _sanitized(J_try, batch_ndim)
            if ok_J_try is not None:
                ok_try = ok_try & ok_J_try
        f_try = frame.half_square(r_try)
        if frame.guard:  # a non-finite trial point is rejected, as without the guard
            f_try = torch.where(ok_try, f_try, torch.full((), torch.nan, dtype=f_try.dtype))
        return r_try, J_try, f_try, (1, jevals)

    @staticmethod
    def _idle(s: LeastSquaresState, running: torch.Tensor, accept: torch.Tensor,
              actual: torch.Tensor, fd: torch.Tensor, delta: torch.Tensor,
              cosine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(``idle``, ``best_cosine``) after this step. ``idle`` counts the refused steps of a
        running element since it last made progress — lowered ½‖r‖² by more than √rtol of it,
        tried a step longer than atol + √rtol·‖y‖, or halved its smallest gradient cosine.
        Accepted steps without progress leave the count as it is: a heavily damped start
        takes many tiny accepted steps while the damping falls, and is not stuck."""
        root, atol = s.frame.rtol**0.5, s.frame.atol
        lowered = accept & (actual > root * fd)
        moved = torch.linalg.vector_norm(delta.detach(), dim=-1) > (
            atol + root * torch.linalg.vector_norm(s.y.detach(), dim=-1))
        progress = ~running | lowered | moved | (cosine < 0.5 * s.best_cosine)
        idle = torch.where(progress, 0, s.idle + (~accept).long())
        return idle, torch.minimum(s.best_cosine, cosine)

    @staticmethod
    def _wander(s: LeastSquaresState, flat_gradient: torch.Tensor, accept: torch.Tensor,
                actual: torch.Tensor, fd: torch.Tensor, delta: torch.Tensor,
                y_try: torch.Tensor) -> torch.Tensor:
        """``wander`` after this step: +1 for an accepted step of a running element whose
        gradient test holds (``flat_gradient``) and whose cost changed by at most rtol of it
        while y moved by more than atol + rtol·‖y‖ along a direction J hardly sees,
        δᵀJᵀJδ <= rtol·δᵀdiag(JᵀJ)δ (with the normal equations at hand; the Gram form has no
        JᵀJ and never counts); back to 0 on any other accepted step or once the gradient test
        fails; refused steps leave it as it is."""
        A = getattr(s.equations, "A", None)
        if A is None:
            return s.wander
        rtol, atol = s.frame.rtol, s.frame.atol
        flat = accept & flat_gradient & (actual.abs() <= rtol * fd)
        if bool(flat.any()):  # (rare: the products below are skipped on most steps)
            d = delta.detach()
            moved = torch.linalg.vector_norm(d, dim=-1) > (
                atol + rtol * torch.linalg.vector_norm(y_try.detach(), dim=-1))
            seen = (d.unsqueeze(-2) @ A.detach() @ d.unsqueeze(-1)).squeeze(-1).squeeze(-1)
            flat = flat & moved & (seen <= rtol * (s.equations.colsq.detach() * d.square()
                                                   ).sum(-1))
        return torch.where(flat, s.wander + 1,
                           torch.where(accept | ~flat_gradient, 0, s.wander))

    @staticmethod
    def _gradient_cosine(s: LeastSquaresState, fd: torch.Tensor) -> torch.Tensor:
        """MINPACK's scale-free gradient measure at y: max_j |J_jᵀ r| / (‖J_j‖ ‖r‖) (0 where
        a column or r vanishes)."""
        eqs = s.equations
        cosine = (eqs.g.detach().abs() * s.frame.inv_S) / (
            eqs.colsq.detach().sqrt() * torch.sqrt(2 * fd).unsqueeze(-1))
        return torch.nan_to_num(cosine, nan=0.0).amax(-1)

    def _small_step(self, s: LeastSquaresState, delta: torch.Tensor, y_try: torch.Tensor,
                    actual: torch.Tensor, ftd: torch.Tensor) -> torch.Tensor:
        """The step and cost half of the termination test of an accepted step. They are not
        enough alone (a heavily damped step barely moves): ``step`` also asks the gradient to
        vanish, in MINPACK's scale-free form — the cosine between r and every column of J at
        most rtol (or ‖Jᵀr‖∞ <= rtol·‖Jᵀr₀‖∞, which a zero-residual problem meets at
        rounding)."""
        frame = s.frame
        rtol, atol = frame.rtol, frame.atol
        step_small = torch.linalg.vector_norm(delta.detach(), dim=-1) <= (
            atol + rtol * torch.linalg.vector_norm(y_try.detach(), dim=-1))
        cost_small = actual.abs() <= rtol * ftd + 0.5 * (atol / frame.S) ** 2
        return step_small & cost_small

    def _relinearize(self, s: LeastSquaresState, accept: torch.Tensor, refused: torch.Tensor,
                     rejected: bool, J_try: torch.Tensor | None) -> None:
        """Rebuild the equations of the elements that accepted a step and still run (set on
        ``s``)."""
        frame = s.frame
        running = s.status == RUNNING
        rebuild = accept & running
        count = int(rebuild.sum())
        status, jevals = s.status, s.jacobian_evaluations

        def fetch() -> tuple[torch.Tensor, bool]:
            nonlocal status, jevals
            jevals += 1
            if frame.compact is not None:
                return frame.compact.jacobian_rows(s.y, running, rebuild), True
            J = frame.jacobian(s.y)
            if frame.guard:
                J, ok_J = _sanitized(J, s.y.ndim - 1)
                status = torch.where(rebuild & ~ok_J, frame.codes[Status.NONFINITE], status)
            return J, False

        s.equations = s.equations.relinearized(J_try, rejected, refused, rebuild, count, s.r,
                                               fetch, lambda: bool(running.any()))
        s.status, s.jacobian_evaluations = status, jevals
        s.fresh = s.fresh or bool(count)


def _rescaled(sigma: torch.Tensor, fn: Callable | None, jacobian: Callable | None,
              fused: Callable | None, compact: Compactor | None
              ) -> tuple[Callable | None, Callable | None, Callable | None]:
    """The evaluation functions of the iteration for r/σ (and the compactor's 1/σ)."""
    inv = (1 / sigma).unsqueeze(-1)
    scaled_fn = None if fn is None else (lambda y: fn(y) * inv)
    scaled_jac = None if jacobian is None else (lambda y: jacobian(y) * inv.unsqueeze(-1))

    def scaled_fused(y):
        r, J = fused(y)
        return r * inv, J * inv.unsqueeze(-1)

    if compact is not None:
        compact.inv_scale = inv
    return scaled_fn, scaled_jac, None if fused is None else scaled_fused


@dataclass(frozen=True)
class LevenbergMarquardt(_NormalEquationSolver):
    """Levenberg–Marquardt: y ← y + δ with (JᵀJ + λD) δ = −Jᵀr, λ adapted per element.

    λ follows the trust-region gain ratio ρ = (actual decrease)/(predicted decrease) of
    ½‖r‖² (Nielsen's rule: λ ← λ·max(1/3, 1 − (2ρ − 1)³) on acceptance, λ ← λ·ν, ν ← 2ν on
    rejection). For m ≥ n residuals the step solves the n×n normal equations by Cholesky; for
    m < n it uses the Gram form δ = −D^{-½} J̃ᵀ(J̃J̃ᵀ + λI)⁻¹ r with J̃ = J D^{-½} (an m×m
    Cholesky). An element converges when an accepted step satisfies all of
    ``‖δ‖ <= atol + rtol·‖y‖``, ``|Δ ½‖r‖²| <= rtol·½‖r‖² + ½atol²`` and the first-order
    test ``max_j |J_jᵀ r| / (‖J_j‖ ‖r‖) <= rtol`` (MINPACK's gradient cosine: a heavily damped
    step that barely moves is not convergence; or ‖Jᵀr‖∞ <= rtol·‖Jᵀr₀‖∞, which a
    zero-residual problem meets at the rounding floor), or when ``‖r‖ <= atol + rtol·‖r₀‖``
    (an exact fit, relative to the starting residual). An element whose steps keep being
    refused without measurable progress (5 refusals with no step lowering ½‖r‖² or moving y
    by more than √rtol of them and no halving of the gradient cosine in between) is reported
    ``DIVERGED``: it sits on a kink or cusp of r, where ½‖r‖² is not differentiable, or at
    the rounding floor, and would otherwise crawl until ``max_steps``. An element whose
    accepted steps keep moving y along directions J hardly sees (δᵀJᵀJδ <= rtol·δᵀdiag(JᵀJ)δ)
    with ½‖r‖² flat and the gradient test holding, 5 in a row, is reported
    ``ILL_CONDITIONED``: r is settled but y is not determined to rtol at this precision (a
    null space curved only by a ridge below float32's resolution). Costs are computed as
    ½‖r/S‖², S = max|r₀| per element, and residuals beyond 2^±400 are divided by an exact
    power of two, so residuals of any magnitude neither overflow nor underflow.

    A solver object of the driver (``init``, ``step``, ``terminate``, ``postprocess``; see
    :mod:`diffnum.solve`): ``least_squares`` runs it, and the state it iterates is a
    ``LeastSquaresState`` holding the normal equations.

    Args:
        rtol: relative tolerance; ``None`` gives 1e-8 in float64 and 1e-4 in float32.
        atol: absolute floor; ``None`` is 0 — every test relative to the problem's own
            scale — unless set.
        damping: ``"marquardt"`` (D = running max of diag(JᵀJ), scale invariant, as MINPACK)
            or ``"identity"`` (D = I, the textbook μI).
        initial_damping: λ₀ (relative to D), 0 < λ₀ < 1e16.

    Example::

        >>> from diffnum.solve import LevenbergMarquardt
        >>> LevenbergMarquardt(rtol=1e-10, damping="identity")
        LevenbergMarquardt(rtol=1e-10, atol=None, damping='identity', initial_damping=0.001)
    """

    rtol: float | None = None
    atol: float | None = None
    damping: str = "marquardt"
    initial_damping: float = 1e-3

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)
        check_one_of("damping", self.damping, ("marquardt", "identity"))
        # At _MAX_DAMPING every element would be reported DIVERGED before its first step.
        check_real("initial_damping", self.initial_damping, low=0.0, high=_MAX_DAMPING,
                   low_open=True, high_open=True)

    def _initial_damping(self) -> float:
        return self.initial_damping

    def _marquardt(self) -> bool:
        return self.damping == "marquardt"

    def _accept(self, moving, finite_try, f, pred, actual):
        # Below this the decrease of ½‖r‖² is lost in rounding and the gain ratio is noise.
        noise = (64 * torch.finfo(f.dtype).eps) * f
        rho = actual / torch.where(pred > 0, pred, 1.0)
        ratio_ok = rho > _ACCEPT_RATIO
        # Near the minimum the model's predicted decrease drops below rounding; such a step is
        # taken if it does not increase the cost beyond rounding, so that the iteration keeps
        # converging in y instead of stalling on noisy gain ratios.
        accept = moving & finite_try & (
            ((pred > 0) & ratio_ok) | ((pred.abs() <= noise) & (actual >= -noise)))
        return accept, (rho, ratio_ok)

    def _damp(self, lam, nu, accept, refused, decision):
        rho, ratio_ok = decision
        # Nielsen's factor 1 − (2ρ − 1)³ lies in [1/3, 2] for ρ in [0, 1]; steps taken on the
        # rounding rule (noisy ρ) count as well-modelled ones (factor 1/3).
        rho_c = torch.where(ratio_ok, rho.clamp(max=1), 1.0)
        gain = (1 - (2 * rho_c - 1) ** 3).clamp_min(1 / 3)
        eps = torch.finfo(lam.dtype).eps
        lam = (lam * torch.where(accept, gain, torch.where(refused, nu, 1.0))).clamp_min(eps)
        nu = torch.where(accept, 2.0, torch.where(refused, 2 * nu, nu))
        return lam, nu

    def _failed(self, active, converged, solved, finite_try, lam):
        return active & ~converged & (lam > _MAX_DAMPING), None

    def _reported_damping(self, lam):
        return lam.detach()


@dataclass(frozen=True)
class GaussNewton(_NormalEquationSolver):
    """Gauss–Newton: y ← y + δ with JᵀJ δ = −Jᵀr (every step taken, no damping).

    Converges fast on well-conditioned, small-residual problems; an element whose JᵀJ is
    singular is reported ``DIVERGED``. Same termination test and solver interface as
    :class:`LevenbergMarquardt`.

    Example::

        >>> import torch
        >>> from diffnum.solve import GaussNewton, least_squares
        >>> sol = least_squares(lambda y: y - 3.0, torch.zeros(2, dtype=torch.float64),
        ...                     solver=GaussNewton())
        >>> sol.value.tolist()
        [3.0, 3.0]
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)

    def _initial_damping(self) -> float:
        return 0.0

    def _marquardt(self) -> bool:
        return False

    def _accept(self, moving, finite_try, f, pred, actual):
        return moving & finite_try, None

    def _damp(self, lam, nu, accept, refused, decision):
        return lam, nu

    def _failed(self, active, converged, solved, finite_try, lam):
        return (active & ~converged & ~solved,
                active & ~converged & solved & ~finite_try)

    def _reported_damping(self, lam):
        return None
