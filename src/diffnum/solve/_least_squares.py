"""Batched nonlinear least squares: Levenberg–Marquardt and Gauss–Newton."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffnum._core.validation import check_flag, check_one_of, check_real
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
    resolve_jacobian,
    unit_basis,
)
from diffnum.solve._solution import RUNNING, Solution, Status, raise_if_failed

logger = logging.getLogger(__name__)

# A step is accepted when the actual decrease of ½‖r‖² is at least this fraction of the decrease
# predicted by the linear model (the usual trust-region threshold; MINPACK uses 1e-4 too).
_ACCEPT_RATIO = 1e-4
# Damping beyond this (relative to the scaling D) means no step of any length reduces the
# residual: the element is reported DIVERGED instead of spinning until max_steps.
_MAX_DAMPING = 1e16
# The full Hessian for the implicit adjoint is one batched backward pass over the n unit
# cotangents while batch·m·n² stays below this, and n separate backward passes beyond it.
_BATCHED_HESSIAN_MAX = 1 << 22


@dataclass(frozen=True)
class LevenbergMarquardt:
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
    (an exact fit, relative to the starting residual). Costs are computed as ½‖r/S‖²,
    S = max|r₀| per element, and residuals beyond 2^±400 are divided by an exact power of two,
    so residuals of any magnitude neither overflow nor underflow.

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


@dataclass(frozen=True)
class GaussNewton:
    """Gauss–Newton: y ← y + δ with JᵀJ δ = −Jᵀr (every step taken, no damping).

    Converges fast on well-conditioned, small-residual problems; an element whose JᵀJ is
    singular is reported ``DIVERGED``. Same termination test as :class:`LevenbergMarquardt`.

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


def _half_square_norm(r: torch.Tensor) -> torch.Tensor:
    """½‖r‖² over the last dimension (one kernel, no m-sized temporary)."""
    return 0.5 * torch.linalg.vecdot(r, r)


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Whether every entry of each row (last dimension) of ``x`` is finite."""
    return torch.isfinite(x.detach()).all(-1)


def _normal_equations(J: torch.Tensor, r: torch.Tensor, gram: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """g = Jᵀr, A = JᵀJ (``None`` in the Gram form) and the column sums of squares diag(JᵀJ)."""
    # rᵀJ as a row-vector product: the same numbers as Jᵀr, but one contiguous pass over J in
    # its natural layout (about 4× faster than J.mT @ r for m ≫ n).
    g = (r.unsqueeze(-2) @ J).squeeze(-2)
    if gram:
        return g, None, (J * J).sum(-2)
    A = J.mT @ J
    return g, A, A.diagonal(dim1=-2, dim2=-1)


def _rebuild(J: torch.Tensor, r: torch.Tensor, gram: bool, rebuild: torch.Tensor, count: int,
             g: torch.Tensor, A: torch.Tensor | None, colsq: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """g, A, colsq from J(y), r(y) where ``rebuild`` is set (``count`` elements), else kept."""
    if count == rebuild.numel():
        return _normal_equations(J, r, gram)
    if 2 * count >= rebuild.numel() and not torch.is_grad_enabled():
        # Most elements moved: the products over the whole batch and a select of their small
        # results cost less than first gathering most of J into a new m×n tensor. (Not when
        # recording a graph: a non-finite J of an unselected element would give NaN·0 = NaN
        # in the backward pass of the product.)
        g_all, A_all, colsq_all = _normal_equations(J, r, gram)
        g = batch_where(rebuild, g_all, g)
        if gram:
            return g, None, batch_where(rebuild, colsq_all, colsq)
        A = batch_where(rebuild, A_all, A)
        return g, A, A.diagonal(dim1=-2, dim2=-1)
    g_rows, A_rows, colsq_rows = _normal_equations(J[rebuild], r[rebuild], gram)
    g = g.index_put((rebuild,), g_rows)
    if gram:
        return g, None, colsq.index_put((rebuild,), colsq_rows)
    A = A.index_put((rebuild,), A_rows)
    return g, A, A.diagonal(dim1=-2, dim2=-1)


class _Compactor:
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
        if self._mask is None or not torch.equal(self._mask, mask):
            self._subset_args = tuple(
                a[mask] if isinstance(a, torch.Tensor)
                and tuple(a.shape[:len(self.batch)]) == self.batch else a
                for a in self.args)
            self._mask = mask
        return self._subset_args

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


# Beyond 2^±400 (about 1e±120) squares of residuals and Jacobian entries leave the range.
_RANGE_EXPONENT = 400


def _range_scale(r: torch.Tensor) -> torch.Tensor | None:
    """σ = 2^k per element with |r/σ| near 1 where max|r| is outside 2^±400, else 1; None
    when no element needs it."""
    size = r.detach().abs().amax(-1)
    exponent = torch.where(torch.isfinite(size) & (size > 0), torch.log2(size), 0.0).round()
    if not bool((exponent.abs() > _RANGE_EXPONENT).any()):
        return None
    exponent = torch.where(exponent.abs() > _RANGE_EXPONENT, exponent, 0.0)
    return torch.pow(torch.full_like(size, 2.0), exponent)  # exact powers of two


def _rescaled(sigma: torch.Tensor, fn1, jac1, fused1, compact):
    """The evaluation functions of :func:`_iterate` for r/σ."""
    inv = (1 / sigma).unsqueeze(-1)
    scaled_fn = None if fn1 is None else (lambda y: fn1(y) * inv)
    scaled_jac = None if jac1 is None else (lambda y: jac1(y) * inv.unsqueeze(-1))

    def scaled_fused(y):
        r, J = fused1(y)
        return r * inv, J * inv.unsqueeze(-1)

    if compact is not None:
        compact.inv_scale = inv
    return scaled_fn, scaled_jac, None if fused1 is None else scaled_fused, compact


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


def _iterate(fn1: Callable | None, jac1: Callable | None, fused1: Callable | None,
             y: torch.Tensor, start: list, solver: LevenbergMarquardt | GaussNewton,
             max_steps: int, keep_jacobian: bool = False, compact: _Compactor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                        torch.Tensor | None, dict[str, Any]]:
    """The batched LM / GN loop. Returns y, status, steps, ‖r‖, J(y) or None, stats.

    ``start`` is the list ``[r, J or None]`` of the residuals (and Jacobian) at the starting
    point; it is emptied here, so that the caller holds no reference to the start Jacobian
    once the normal equations are built from it. Trial points are evaluated with ``fn1``
    (residuals only; ``jac1`` gives the Jacobian after an accepted step) or, when ``fused1``
    is given, with ``fused1(y) -> (r, J)`` in one call. J(y) at the final point is returned
    only with ``keep_jacobian`` (and only where the iteration has it at hand).
    """
    r, J = start
    start.clear()
    dtype, device = y.dtype, y.device
    # Residuals near the ends of the float range (|r| ~ 1e154 makes JᵀJ overflow, ~1e-160
    # makes it subnormal) are divided by an exact power of two σ per element: the iterates
    # are those of r/σ, and the reported norm is σ‖r/σ‖. In range, nothing is rescaled.
    sigma = _range_scale(r)
    if sigma is not None:
        fn1, jac1, fused1, compact = _rescaled(sigma, fn1, jac1, fused1, compact)
        r = r / sigma.unsqueeze(-1)
        J = None if J is None else J / sigma[..., None, None]
    eps = torch.finfo(dtype).eps
    tiny = torch.finfo(dtype).tiny
    rtol = check_tolerance("rtol", solver.rtol, dtype)
    # No absolute floor unless the user sets one: tolerances are relative to the problem.
    atol = 0.0 if solver.atol is None else check_tolerance("atol", solver.atol, dtype)
    damped = isinstance(solver, LevenbergMarquardt)
    marquardt = damped and solver.damping == "marquardt"
    batch = y.shape[:-1]
    m, n = r.shape[-1], y.shape[-1]
    gram = m < n
    if gram:
        compact = None  # the Gram form steps with J itself, kept for every element

    def code(value: int) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.int64, device=device)

    nonfinite, converged_code, diverged = (code(int(Status.NONFINITE)),
                                           code(int(Status.CONVERGED)),
                                           code(int(Status.DIVERGED)))
    zero = torch.zeros((), dtype=dtype, device=device)
    status = torch.full(batch, RUNNING, dtype=torch.int64, device=device)
    steps = torch.zeros(batch, dtype=torch.int64, device=device)
    # Every cost is ½‖r/S‖² with S = max|r₀| per element: the same iterates, no overflow for
    # residuals ~1e154 and no underflow for ~1e-160, and tolerances in the problem's own unit.
    S = r.detach().abs().amax(-1)
    S = torch.where(torch.isfinite(S) & (S > 0), S, 1.0)
    inv_S = (1 / S).unsqueeze(-1)

    def half_square(residual: torch.Tensor) -> torch.Tensor:
        return _half_square_norm(residual * inv_S)

    # Recorded by autograd (unrolled adjoint): non-finite elements are zeroed at every
    # evaluation and flagged (see _sanitized).
    guard = torch.is_grad_enabled()
    bad_start = None
    if guard:
        r, bad_r = _sanitized(r, len(batch))
        J, bad_J = _sanitized(J, len(batch))
        bad_start = ~bad_r if bad_J is None else ~(bad_r & bad_J)
    f = half_square(r)
    # An exact fit: ‖r‖ <= atol + rtol ‖r₀‖ (rounding of r, not of ½‖r‖², then limits the gain
    # ratio, and no step or gradient test can be met reliably).
    exact_fit = 0.5 * (atol / S + rtol * torch.sqrt(2 * f)) ** 2
    if J is None:
        J = jac1(y)
        if guard:
            J, ok_J = _sanitized(J, len(batch))
            bad_start = bad_start | ~ok_J
    # Finiteness of J is checked through diag(JᵀJ) and Jᵀr in the loop (a NaN or inf in J
    # reaches them), which is far cheaper than scanning the m×n Jacobian.
    finite = torch.isfinite(f) if bad_start is None else torch.isfinite(f) & ~bad_start
    status = torch.where(finite, status, nonfinite)
    lam = torch.full(batch, float(solver.initial_damping) if damped else 0.0,
                     dtype=dtype, device=device)
    nu = torch.full(batch, 2.0, dtype=dtype, device=device)
    D = torch.zeros((*batch, n), dtype=dtype, device=device)
    scale = None if marquardt else torch.ones((*batch, n), dtype=dtype, device=device)
    fevals, jevals = 1, 1
    # The normal equations are built as soon as a Jacobian arrives, and then only where J and
    # r changed: for elements that accepted a step and are still running. Elements whose step
    # was rejected, or that have finished, keep theirs (the numbers a rebuild from their
    # unchanged J would give) without the O(m n²) product. With A = JᵀJ and g = Jᵀr built, the
    # normal-equation form needs J no more: it is released before the next evaluation, so
    # that at most one m×n Jacobian is alive at a time.
    g, A, colsq = _normal_equations(J, r, gram)
    g_start = g.detach().abs().amax(-1)  # for the relative form of the gradient test
    if not gram:
        J = None
    # The finiteness test of g, diag(JᵀJ) and ½‖r‖², and the scaling D built from diag(JᵀJ),
    # change only when the normal equations (or J) do: they are redone then ("fresh"), and in
    # every step once some element is non-finite (its entries must stay masked).
    fresh, all_finite = True, True
    jacobian_at_y = J is not None  # whether J, when kept, is J(y) for every element

    for _ in range(max_steps):
        active = status == RUNNING
        if not bool(active.any()):
            break
        if fresh or not all_finite:
            finite_J = _finite_rows(torch.cat((colsq, g, f.unsqueeze(-1)), dim=-1))
            ok = finite & finite_J
            if not bool(ok.all()):
                bad = active & ~finite_J
                status = torch.where(bad, nonfinite, status)
                active = active & ~bad
                finite = finite & ~bad
                all_finite = False
                # Keep non-finite elements from poisoning the batched linear algebra.
                g = batch_where(ok, g, zero)
                colsq = batch_where(ok, colsq, zero)
                if gram:
                    J = batch_where(ok, J, zero)
                    r = batch_where(ok, r, zero)
                else:
                    A = batch_where(ok, A, torch.eye(n, dtype=dtype, device=device))
            if marquardt:
                D = torch.maximum(D, colsq.detach())
                scale = D + (eps * D.amax(-1, keepdim=True) + tiny)
            fresh = False
        lam_scale = lam.unsqueeze(-1) * scale
        if not gram:
            L, info = torch.linalg.cholesky_ex(A + torch.diag_embed(lam_scale))
            delta = torch.cholesky_solve(-g.unsqueeze(-1), L).squeeze(-1)
            # ½(δᵀλDδ − gᵀδ)/S²: the decrease of ½‖r/S‖² predicted by the linear model.
            scaled = delta * inv_S
            pred = 0.5 * ((lam_scale * scaled - g * inv_S) * scaled).sum(-1)
        else:
            inv_sqrt = scale.rsqrt()
            Js = J * inv_sqrt.unsqueeze(-2)
            K = Js @ Js.mT + torch.diag_embed(lam.unsqueeze(-1).expand(*batch, m))
            L, info = torch.linalg.cholesky_ex(K)
            z = -(Js.mT @ torch.cholesky_solve(r.unsqueeze(-1), L)).squeeze(-1)
            delta = z * inv_sqrt
            Jd = (J @ delta.unsqueeze(-1)).squeeze(-1) * inv_S
            pred = -(r * inv_S * Jd).sum(-1) - 0.5 * (Jd * Jd).sum(-1)
        solved = (info == 0) & _finite_rows(delta)
        moving = active & solved
        delta = batch_where(moving, delta, zero)
        # Finished elements get δ = 0: their trial point is y itself.
        y_try = y + delta
        if compact is not None:
            r_try, J_try = compact.residual(y_try, active, r), None
        elif fused1 is None:
            r_try, J_try = fn1(y_try), None
        else:
            r_try, J_try = fused1(y_try)
            jevals += 1
        fevals += 1
        if guard:
            r_try, ok_try = _sanitized(r_try, len(batch))
            J_try, ok_J_try = _sanitized(J_try, len(batch))
            if ok_J_try is not None:
                ok_try = ok_try & ok_J_try
        f_try = half_square(r_try)
        if guard:  # a non-finite trial point is rejected, as without the guard
            f_try = torch.where(ok_try, f_try, torch.full((), torch.nan, dtype=dtype))

        fd, ftd, pd = f.detach(), f_try.detach(), pred.detach()
        actual = fd - ftd
        finite_try = torch.isfinite(ftd)
        if damped:
            # Below this the decrease of ½‖r‖² is lost in rounding and the gain ratio is noise.
            noise = (64 * eps) * fd
            rho = actual / torch.where(pd > 0, pd, 1.0)
            ratio_ok = rho > _ACCEPT_RATIO
            # Near the minimum the model's predicted decrease drops below rounding; such a
            # step is taken if it does not increase the cost beyond rounding, so that the
            # iteration keeps converging in y instead of stalling on noisy gain ratios.
            accept = moving & finite_try & (
                ((pd > 0) & ratio_ok) | ((pd.abs() <= noise) & (actual >= -noise)))
        else:
            accept = moving & finite_try
        # A small step and a small change of cost are not enough (a heavily damped step barely
        # moves): the gradient must vanish too, in MINPACK's scale-free form — the cosine
        # between r and every column of J at most rtol.
        step_small = torch.linalg.vector_norm(delta.detach(), dim=-1) <= (
            atol + rtol * torch.linalg.vector_norm(y_try.detach(), dim=-1))
        cost_small = actual.abs() <= rtol * ftd + 0.5 * (atol / S) ** 2
        cosine = (g.detach().abs() * inv_S) / (colsq.detach().sqrt() * torch.sqrt(2 * fd)
                                                .unsqueeze(-1))
        gradient_small = (torch.nan_to_num(cosine, nan=0.0).amax(-1) <= rtol) | (
            g.detach().abs().amax(-1) <= rtol * g_start)
        exact = torch.where(accept, ftd, fd) <= exact_fit
        converged = active & ((accept & step_small & cost_small & gradient_small) | exact)

        y = batch_where(accept, y_try, y)
        # Elements that did not accept a step either finished (δ = 0, so r_try = r) or were
        # rejected; without rejections r_try is the new r as it stands (no m-sized select).
        refused = active & ~accept
        rejected = bool(refused.any())
        r = batch_where(accept, r_try, r) if rejected else r_try
        f = torch.where(accept, f_try, f)
        steps = steps + active
        if damped:
            # Nielsen's factor 1 − (2ρ − 1)³ lies in [1/3, 2] for ρ in [0, 1]; steps taken on
            # the rounding rule (noisy ρ) count as well-modelled ones (factor 1/3).
            rho_c = torch.where(ratio_ok, rho.clamp(max=1), 1.0)
            gain = (1 - (2 * rho_c - 1) ** 3).clamp_min(1 / 3)
            lam = (lam * torch.where(accept, gain, torch.where(refused, nu, 1.0))).clamp_min(eps)
            nu = torch.where(accept, 2.0, torch.where(refused, 2 * nu, nu))
            stuck = active & ~converged & (lam > _MAX_DAMPING)
        else:
            stuck = active & ~converged & ~solved
        status = torch.where(converged, converged_code, status)
        status = torch.where(stuck, diverged, status)
        if not damped:
            status = torch.where(active & ~converged & solved & ~finite_try, nonfinite, status)
        if bool(accept.any()):
            running = status == RUNNING
            rebuild = accept & running
            count = int(rebuild.sum())
            if J_try is not None:
                # J_try is J(y) for every element that moved and for every finished one (δ = 0
                # there); a rejected element's Jacobian is that of its unchanged point, needed
                # only in the Gram form (the normal equations keep their A and g).
                if not rejected:
                    J = J_try
                elif gram:
                    J = batch_where(refused, J, J_try)
                else:
                    J = None
            elif count and compact is not None:
                J = None
                J_rows = compact.jacobian_rows(y, running, rebuild)
                jevals += 1
            elif count:
                J = None  # release the old Jacobian before evaluating the new one
                J = jac1(y)
                jevals += 1
                if guard:
                    J, ok_J = _sanitized(J, len(batch))
                    status = torch.where(rebuild & ~ok_J, nonfinite, status)
            elif gram and bool(running.any()):
                # Every element that moved has finished; the rest keep their point, and in
                # the Gram form their J, which is stale only for the finished ones.
                jacobian_at_y = False
            else:  # nothing left to step from: skip the Jacobian at the new point
                J = None
            if J_try is not None or count:
                jacobian_at_y = J is not None
            if count and compact is not None:
                g_rows, A_rows, _ = _normal_equations(J_rows, r[rebuild], gram)
                J_rows = None
                g = g.index_put((rebuild,), g_rows)
                A = A.index_put((rebuild,), A_rows)
                colsq = A.diagonal(dim1=-2, dim2=-1)
                fresh = True
            elif count:
                J_new = J if J_try is None else J_try  # J(y) wherever rebuild is set
                g, A, colsq = _rebuild(J_new, r, gram, rebuild, count, g, A, colsq)
                J_new = None
                fresh = True
                if not gram:
                    J = None
        J_try = None

    status = torch.where(status == RUNNING, int(Status.MAX_STEPS), status)
    stats = {"function_evaluations": fevals, "jacobian_evaluations": jevals,
             "damping": lam.detach() if damped else None}
    # ‖r‖ = S √(2 f), in the residual's own unit (inf only when it truly overflows).
    norm = S * torch.sqrt(2 * f) if sigma is None else sigma * (S * torch.sqrt(2 * f))
    return y, status, steps, norm, (
        J if keep_jacobian and jacobian_at_y else None), stats


def least_squares(fn: Callable[..., torch.Tensor], y0: Any, args: Any = (), *,
                  solver: LevenbergMarquardt | GaussNewton | None = None,
                  max_steps: int = 100,
                  adjoint: ImplicitAdjoint | UnrollAdjoint | None = None,
                  throw: bool = False,
                  jacobian: str | Callable[..., torch.Tensor] = "auto",
                  hessian: Callable[..., torch.Tensor] | None = None,
                  compact: bool = False, fused: bool = False) -> Solution:
    """Solve min_y ½‖r(y)‖² per batch element, r = ``fn(y, *args)``; differentiable in θ.

    ``fn`` maps y of shape ``(*batch, n)`` to residuals ``(*batch, m)``; batch elements must
    be independent (row b of the output depends only on row b of y) — e.g. batch × experts,
    each its own problem. Every element converges or fails on its own; converged elements stop
    changing. Gradients of ``Solution.value`` flow to tensors in ``args`` and to everything
    ``fn`` closes over (module parameters, captured tensors), through ``adjoint``:
    :class:`ImplicitAdjoint` (default; dy*/dθ = −H⁻¹ ∂_θ(Jᵀr), H = ∂_y(Jᵀr)) or
    :class:`UnrollAdjoint`. With the implicit adjoint and gradients enabled, the evaluation
    of ``fn`` at ``y0`` is recorded by autograd (same values); if its residual requires no
    gradient, nothing ``fn`` reaches does, and the solution is returned without the
    re-evaluation at y* that attaching the gradient costs. (``fn`` is taken to reach the same
    tensors at every y, as any function without value-dependent Python branches does.)

    Args:
        fn: residual function ``fn(y, *args) -> r``.
        y0: initial guess ``(*batch, n)``; its dtype is used (float64 recommended).
        args: extra arguments passed to ``fn`` (and to ``jacobian`` if callable).
        solver: :class:`LevenbergMarquardt` (default) or :class:`GaussNewton`.
        max_steps: iteration limit per element.
        adjoint: :class:`ImplicitAdjoint` (default) or :class:`UnrollAdjoint`.
        throw: raise :class:`SolveError` naming every element that did not converge.
        jacobian: ``"auto"`` (forward mode when m ≥ n, reverse otherwise), ``"forward"``,
            ``"reverse"``, or a callable ``jacobian(y, *args) -> (*batch, m, n)`` (analytic;
            used in the iterations, autodiff is still used for gradients). Forward mode costs
            n JVPs of ``fn`` per Jacobian; for residuals dominated by a matmul with a captured
            basis an analytic Jacobian is typically several times faster. Ignored with
            ``fused=True``.
        hessian: optional ``hessian(y, *args) -> (*batch, n, n)``, the exact Hessian
            H = ∂_y(Jᵀr) = JᵀJ + Σᵢ rᵢ ∇²rᵢ of ½‖r‖² at y, for the full-Hessian implicit adjoint.
            It is called once, at y* and without gradients, in place of the n autograd
            backward passes that otherwise build H (for a residual F(Tw) that acts pointwise on
            linear maps T of y, H is a few batched products; see ``diffnum.constrain``).
            Ignored by ``ImplicitAdjoint(hessian="gauss_newton")`` and ``UnrollAdjoint``.
        compact: evaluate ``fn`` and the Jacobian only on the elements still running, so
            that finished ones cost nothing (a batch of experts of which most converge early
            pays for the slow ones only). Tensors in ``args`` whose leading dimensions are the
            batch shape are indexed along them; ``fn`` must not close over batched tensors.
            The iterates are bitwise those of ``compact=False``, except that vectorized
            elementwise functions (``pow``, ``exp``) may round an element's last bit
            differently in a batch of another size (measured for ``pow`` on the same values:
            the vectorized loop lays the data out differently): an element whose iteration
            amplifies that can reach its solution along
            another path, equal within the tolerances. Used in the normal-equation
            form (m ≥ n), without ``fused`` and with the implicit adjoint; ignored otherwise.
            With it, ``NONFINITE`` elements are also left out of the implicit adjoint, so they
            add exact zeros (never NaN) to gradients of tensors shared by the batch.
        fused: ``fn`` itself returns the pair ``(r, J)`` with J of shape ``(*batch, m, n)``,
            so that residual and Jacobian share work (e.g. ``z = B w`` and ``tanh(z)``);
            every trial point then costs one call, and a rejected step also computes a
            Jacobian that is not used (``stats`` counts each call as one function and one
            Jacobian evaluation). The iterates are the same as with ``fn`` returning ``r`` and
            a separate ``jacobian`` callable returning the same J. Gradients use autodiff of
            the residual part ``fn(y, *args)[0]`` (the J part is evaluated but not used).

    Returns:
        :class:`Solution` with ``residual_norm`` = ‖r(y*)‖₂ per element and ``stats``
        (function and Jacobian evaluations, final damping λ).

    Example::

        >>> import torch
        >>> from diffnum.solve import least_squares
        >>> t = torch.linspace(0, 1, 20, dtype=torch.float64)
        >>> y = 2.0 * torch.exp(-1.5 * t)
        >>> def r(w, t, y):  # residuals of the model a·exp(b t)
        ...     return w[..., :1] * torch.exp(w[..., 1:] * t) - y
        >>> sol = least_squares(r, torch.tensor([1.0, 0.0], dtype=torch.float64), (t, y))
        >>> sol.value.round(decimals=6).tolist(), bool(sol.converged)
        ([2.0, -1.5], True)
    """
    solver = LevenbergMarquardt() if solver is None else solver
    if not isinstance(solver, (LevenbergMarquardt, GaussNewton)):
        raise TypeError(
            f"solver must be LevenbergMarquardt(...) or GaussNewton(...), got "
            f"{type(solver).__name__}"
        )
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    check_adjoint(adjoint)
    check_max_steps(max_steps)
    check_flag("throw", throw)
    check_flag("compact", compact)
    if hessian is not None and not callable(hessian):
        raise TypeError(f"hessian must be None or a callable hessian(y, *args) -> (*batch, n, n), "
                        f"got {type(hessian).__name__}")
    if not callable(fn):
        raise TypeError(f"fn must be callable fn(y, *args) -> residuals, got {type(fn).__name__}")
    y0 = as_initial_value(y0)
    args = as_args(args)
    unroll = isinstance(adjoint, UnrollAdjoint)

    check_flag("fused", fused)
    if isinstance(jacobian, str) and jacobian not in ("auto", "forward", "reverse"):
        raise ValueError(
            f"jacobian must be 'auto', 'forward', 'reverse' or a callable "
            f"jacobian(y, *args) -> (*batch, m, n), got {jacobian!r}"
        )
    if fused and not (isinstance(jacobian, str) and jacobian == "auto"):
        raise ValueError(f"fused=True takes J from fn itself; leave jacobian at 'auto', got "
                         f"jacobian={jacobian!r}")

    # With gradients on (and the implicit adjoint), the start point is evaluated with autograd
    # recording — the same values — and tells whether anything fn depends on requires grad:
    # if its residual does not, there is nothing to differentiate and the re-evaluation at the
    # solution that the implicit adjoint needs is skipped.
    probe = torch.is_grad_enabled() and not unroll
    J0 = None
    if fused:
        with torch.set_grad_enabled(probe):
            r0, J0 = _evaluate_fused(fn, y0.detach(), args)
        if J0.requires_grad:
            J0 = J0.detach()
        fused_fn = fn

        def residual_fn(y: torch.Tensor, *a: Any) -> torch.Tensor:  # for the adjoint
            return fused_fn(y, *a)[0]

        def mode(y: torch.Tensor, *a: Any) -> torch.Tensor:  # the Jacobian part
            return fused_fn(y, *a)[1]

        def fused1(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            r, J = fused_fn(y, *args)
            return r, J

        fn1 = jac1 = None
    else:
        with torch.set_grad_enabled(probe):
            r0 = evaluate_checked("least_squares", fn, y0.detach(), args)
        m, n = r0.shape[-1], y0.shape[-1]
        mode = resolve_jacobian(jacobian, m, n)
        jac1 = make_jacobian_fn(fn, args, mode, m)
        fused1 = None
        residual_fn = fn

        def fn1(y: torch.Tensor) -> torch.Tensor:
            return fn(y, *args)
    attach = probe and r0.requires_grad
    if attach:
        r0 = r0.detach()

    # The start point travels in a list that _iterate empties: no reference to the start
    # Jacobian stays here while the iteration evaluates the next one.
    if unroll and torch.is_grad_enabled():
        start = list(fused1(y0)) if fused else [fn1(y0), None]
    else:
        start = [r0, J0]
    r0 = J0 = None
    if unroll:
        y, status, steps, norm, J, stats = _iterate(fn1, jac1, fused1, y0, start, solver,
                                                 max_steps)
    else:
        compactor = None
        if compact and not fused:
            compactor = _Compactor(fn, args, mode, tuple(y0.shape[:-1]), start[0].shape[-1])
        with torch.no_grad():
            y, status, steps, norm, J, stats = _iterate(
                fn1, jac1, fused1, y0, start, solver, max_steps,
                keep_jacobian=attach and adjoint.hessian == "gauss_newton",
                compact=compactor)
        if attach:
            valid = status != int(Status.NONFINITE)
            if compactor is not None and not bool(valid.all()):
                # Failed elements are left out of the adjoint's evaluation altogether, so they
                # contribute exact zeros to the backward pass (not NaN·0) of anything shared.
                y_valid = _attach(residual_fn, compactor.subset(valid), y[valid], None,
                                  status[valid], adjoint, mode, hessian)
                y = y.detach().index_put((valid,), y_valid)
            else:
                y = _attach(residual_fn, args, y, J, status, adjoint, mode, hessian)
        J = None
    solution = Solution(value=y, status=status, steps=steps,
                        residual_norm=norm.detach(), stats=stats)
    if not solution.all_converged:
        logger.info("least_squares: %d of %d elements did not converge",
                    int((~solution.converged).sum()), status.numel())
    if throw:
        raise_if_failed("least_squares", solution)
    return solution


def _attach(fn: Callable, args: tuple, y: torch.Tensor, J: torch.Tensor | None,
            status: torch.Tensor, adjoint: ImplicitAdjoint, mode: str | Callable,
            hessian: Callable | None = None) -> torch.Tensor:
    """Attach the implicit derivative to y* (see :mod:`diffnum.solve._adjoint`)."""
    r = reevaluate(fn, y, args)
    if r is None:  # nothing fn depends on requires grad
        return y
    valid = status != int(Status.NONFINITE)
    if adjoint.hessian == "gauss_newton":
        if J is None:
            with torch.no_grad():
                J = make_jacobian_fn(fn, args, mode, r.shape[-1])(y.detach())
        Jd = J.detach()
        g = (Jd.mT @ r.unsqueeze(-1)).squeeze(-1)  # ∂_θ g ≈ Jᵀ ∂_θ r
        H = Jd.mT @ Jd
    else:
        with torch.enable_grad():
            yv = y.detach().requires_grad_(True)
            rv = fn(yv, *args)
            g = torch.autograd.grad(0.5 * (rv * rv).sum(), yv, create_graph=True)[0]
        if hessian is not None:
            with torch.no_grad():
                H = _checked_hessian(hessian, y.detach(), args)
            return attach_implicit(y, g, H, valid, symmetric=True,
                                   method=adjoint.linear_solver)
        with torch.enable_grad():
            # H = ∂_y g column by column: one batched backward pass through g's graph with
            # the unit cotangents e_j (elements independent, so e_j broadcast over the batch
            # gives column j of every element's Hessian).
            n = y.shape[-1]
            basis = unit_basis(n, y.shape[:-1], y)
            if rv.numel() * n * n <= _BATCHED_HESSIAN_MAX:
                H = torch.autograd.grad(g, yv, grad_outputs=basis, retain_graph=True,
                                        is_grads_batched=True)[0].movedim(0, -1)
            else:
                # vmap's rule for a product with a captured (unbatched) matrix, such as u = Bw
                # with B of batch × m × n, materializes that matrix once per cotangent: beyond
                # a few million entries n plain backward passes are faster (measured 96 ms vs
                # 578 ms for 32 × 4096 × 16, one thread; 24 vs 49 ms for 2 × 512 × 64).
                H = torch.stack([torch.autograd.grad(g, yv, grad_outputs=basis[j],
                                                     retain_graph=True)[0]
                                 for j in range(n)], dim=-1)
            H = H.detach()
            H = 0.5 * (H + H.mT)
    return attach_implicit(y, g, H, valid, symmetric=True, method=adjoint.linear_solver)


def _checked_hessian(hessian: Callable, y: torch.Tensor, args: tuple) -> torch.Tensor:
    """``hessian(y, *args)``, checked for shape and dtype and symmetrized."""
    H = hessian(y, *args)
    want = (*y.shape, y.shape[-1])
    if not isinstance(H, torch.Tensor) or tuple(H.shape) != want or H.dtype != y.dtype:
        got = (f"{tuple(H.shape)} {H.dtype}" if isinstance(H, torch.Tensor)
               else type(H).__name__)
        raise ValueError(f"least_squares: hessian(y, *args) must return a tensor of shape "
                         f"(*batch, n, n) = {want} and dtype {y.dtype}, got {got}")
    H = H.detach()
    return 0.5 * (H + H.mT)


def _evaluate_fused(fn: Callable, y0: torch.Tensor, args: tuple
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(y0, *args) -> (r, J)`` for ``fused=True``, with shapes and dtypes checked."""
    out = fn(y0, *args)
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)):
        got = (f"{type(out).__name__} of length {len(out)}" if isinstance(out, (tuple, list))
               else type(out).__name__)
        raise TypeError(
            f"least_squares: with jacobian='fused', fn(y0, *args) must return a pair (r, J) "
            f"of tensors, got {got}"
        )
    r = evaluate_checked("least_squares", lambda y, *a: out[0], y0, args)
    J = out[1]
    want = (*y0.shape[:-1], r.shape[-1], y0.shape[-1])
    if tuple(J.shape) != want:
        raise ValueError(
            f"least_squares: with jacobian='fused', the J returned by fn(y0, *args) must have "
            f"shape (*batch, m, n) = {want}, got {tuple(J.shape)}"
        )
    if J.dtype != y0.dtype:
        raise TypeError(
            f"least_squares: with jacobian='fused', J must have dtype {y0.dtype} like y0, "
            f"got {J.dtype}"
        )
    return r, J
