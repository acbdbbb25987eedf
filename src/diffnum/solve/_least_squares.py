"""Batched nonlinear least squares: Levenberg–Marquardt and Gauss–Newton."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffnum._core.validation import check_one_of
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


@dataclass(frozen=True)
class LevenbergMarquardt:
    """Levenberg–Marquardt: y ← y + δ with (JᵀJ + λD) δ = −Jᵀr, λ adapted per element.

    λ follows the trust-region gain ratio ρ = (actual decrease)/(predicted decrease) of
    ½‖r‖² (Nielsen's rule: λ ← λ·max(1/3, 1 − (2ρ − 1)³) on acceptance, λ ← λ·ν, ν ← 2ν on
    rejection). For m ≥ n residuals the step solves the n×n normal equations by Cholesky; for
    m < n it uses the Gram form δ = −D^{-½} J̃ᵀ(J̃J̃ᵀ + λI)⁻¹ r with J̃ = J D^{-½} (an m×m
    Cholesky). An element converges when an accepted step satisfies
    ``|δ| <= atol + rtol·|y|`` componentwise and ``|Δ ½‖r‖²| <= rtol·½‖r‖² + atol²``, or
    when ‖r‖ <= atol (an exact fit).

    Args:
        rtol, atol: tolerances; ``None`` gives 1e-8 in float64 and 1e-4 in float32.
        damping: ``"marquardt"`` (D = running max of diag(JᵀJ), scale invariant, as MINPACK)
            or ``"identity"`` (D = I, the textbook μI).
        initial_damping: λ₀ (relative to D).
    """

    rtol: float | None = None
    atol: float | None = None
    damping: str = "marquardt"
    initial_damping: float = 1e-3

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)
        check_one_of("damping", self.damping, ("marquardt", "identity"))
        if not (isinstance(self.initial_damping, (int, float)) and
                0 < self.initial_damping < math.inf):
            raise ValueError(
                f"initial_damping must be a finite number > 0, got {self.initial_damping!r}"
            )


@dataclass(frozen=True)
class GaussNewton:
    """Gauss–Newton: y ← y + δ with JᵀJ δ = −Jᵀr (every step taken, no damping).

    Converges fast on well-conditioned, small-residual problems; an element whose JᵀJ is
    singular is reported ``DIVERGED``. Same termination test as :class:`LevenbergMarquardt`.
    """

    rtol: float | None = None
    atol: float | None = None

    def __post_init__(self) -> None:
        check_tolerances(self.rtol, self.atol)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where`` with a batch mask broadcast over trailing dimensions of ``a``."""
    return torch.where(mask.reshape(*mask.shape, *([1] * (a.ndim - mask.ndim))), a, b)


def _iterate(fn1: Callable, jac1: Callable, y: torch.Tensor, r: torch.Tensor,
             solver: LevenbergMarquardt | GaussNewton, max_steps: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                        torch.Tensor | None, dict[str, Any]]:
    """The batched LM / GN loop. Returns y, status, steps, ½‖r‖², J(y) or None, stats."""
    dtype, device = y.dtype, y.device
    eps = torch.finfo(dtype).eps
    rtol = check_tolerance("rtol", solver.rtol, dtype)
    atol = check_tolerance("atol", solver.atol, dtype)
    damped = isinstance(solver, LevenbergMarquardt)
    marquardt = damped and solver.damping == "marquardt"
    batch = y.shape[:-1]
    m, n = r.shape[-1], y.shape[-1]
    gram = m < n

    status = torch.full(batch, RUNNING, dtype=torch.int64, device=device)
    steps = torch.zeros(batch, dtype=torch.int64, device=device)
    f = 0.5 * (r * r).sum(-1)
    J = jac1(y)
    # Finiteness of J is checked through diag(JᵀJ) and Jᵀr in the loop (a NaN or inf in J
    # reaches them), which is far cheaper than scanning the m×n Jacobian.
    finite = torch.isfinite(f)
    status = torch.where(finite, status, int(Status.NONFINITE))
    lam = torch.full(batch, float(solver.initial_damping) if damped else 0.0,
                     dtype=dtype, device=device)
    nu = torch.full(batch, 2.0, dtype=dtype, device=device)
    D = torch.zeros((*batch, n), dtype=dtype, device=device)
    fevals, jevals = 1, 1
    zero = torch.zeros((), dtype=dtype, device=device)
    fresh = True

    for _ in range(max_steps):
        active = status == RUNNING
        if not bool(active.any()):
            break
        if fresh:  # J and r changed: rebuild the normal equations (skipped after rejections)
            # rᵀJ as a row-vector product: the same numbers as Jᵀr, but one contiguous pass
            # over J in its natural layout (about 4× faster than J.mT @ r for m ≫ n).
            g = (r.unsqueeze(-2) @ J).squeeze(-2)
            if gram:
                colsq = (J * J).sum(-2)
            else:
                A = J.mT @ J
                colsq = A.diagonal(dim1=-2, dim2=-1)
            fresh = False
        finite_J = (torch.isfinite(colsq.detach()).all(-1) & torch.isfinite(g.detach()).all(-1)
                    & torch.isfinite(f.detach()))
        bad = active & ~finite_J
        if bool(bad.any()):
            status = torch.where(bad, int(Status.NONFINITE), status)
            active = active & ~bad
            finite = finite & ~bad
        if not bool(finite.all()):
            # Keep non-finite elements from poisoning the batched linear algebra.
            ok = finite & finite_J
            g = _where(ok, g, zero)
            colsq = _where(ok, colsq, zero)
            if gram:
                J = _where(ok, J, zero)
                r = _where(ok, r, zero)
            else:
                A = _where(ok, A, torch.eye(n, dtype=dtype, device=device))
        if marquardt:
            D = torch.maximum(D, colsq.detach())
            scale = D + (eps * D.amax(-1, keepdim=True) + torch.finfo(dtype).tiny)
        else:
            scale = torch.ones_like(D)
        lam_scale = lam.unsqueeze(-1) * scale
        if not gram:
            L, info = torch.linalg.cholesky_ex(A + torch.diag_embed(lam_scale))
            delta = torch.cholesky_solve(-g.unsqueeze(-1), L).squeeze(-1)
            pred = 0.5 * ((lam_scale * delta * delta).sum(-1) - (g * delta).sum(-1))
        else:
            inv_sqrt = scale.rsqrt()
            Js = J * inv_sqrt.unsqueeze(-2)
            K = Js @ Js.mT + torch.diag_embed(lam.unsqueeze(-1).expand(*batch, m))
            L, info = torch.linalg.cholesky_ex(K)
            z = -(Js.mT @ torch.cholesky_solve(r.unsqueeze(-1), L)).squeeze(-1)
            delta = z * inv_sqrt
            Jd = (J @ delta.unsqueeze(-1)).squeeze(-1)
            pred = -(r * Jd).sum(-1) - 0.5 * (Jd * Jd).sum(-1)
        solved = (info == 0) & torch.isfinite(delta.detach()).all(-1)
        delta = _where(active & solved, delta, zero)
        y_try = y + delta
        r_try = fn1(y_try)
        fevals += 1
        f_try = 0.5 * (r_try * r_try).sum(-1)

        fd, ftd, pd = f.detach(), f_try.detach(), pred.detach()
        actual = fd - ftd
        finite_try = torch.isfinite(ftd)
        # Below this the decrease of ½‖r‖² is lost in rounding and the gain ratio is noise.
        noise = 64 * eps * fd
        small_model = solved & (pd.abs() <= noise)
        if damped:
            rho = actual / torch.where(pd > 0, pd, 1.0)
            # Near the minimum the model's predicted decrease drops below rounding; such a
            # step is taken if it does not increase the cost beyond rounding, so that the
            # iteration keeps converging in y instead of stalling on noisy gain ratios.
            accept = active & solved & finite_try & (
                ((pd > 0) & (rho > _ACCEPT_RATIO)) | (small_model & (actual >= -noise)))
        else:
            accept = active & solved & finite_try
        ytd = y_try.detach()
        step_small = ((delta.detach().abs() / (atol + rtol * ytd.abs())).amax(-1) <= 1)
        cost_small = actual.abs() <= rtol * ftd + atol * atol
        # ‖r‖ <= atol also counts: an exact fit, where rounding of r (not of ½‖r‖²) limits the
        # gain ratio and no step test can be met reliably.
        exact = torch.where(accept, 2 * ftd, 2 * fd) <= atol * atol
        converged = active & ((accept & step_small & cost_small) | exact)

        y = _where(accept, y_try, y)
        r = _where(accept, r_try, r)
        f = torch.where(accept, f_try, f)
        steps = steps + active.to(torch.int64)
        if damped:
            # Nielsen's factor lies in [1/3, 2] for ρ in [0, 1]; steps taken on the rounding
            # rule (noisy ρ) count as well-modelled ones.
            gain = torch.clamp(1 - (2 * rho.clamp(0, 1) - 1) ** 3, min=1 / 3)
            gain = torch.where(rho > _ACCEPT_RATIO, gain, 1 / 3)
            lam = torch.where(accept, lam * gain, torch.where(active, lam * nu, lam))
            lam = lam.clamp_min(eps)
            nu = torch.where(accept, 2.0, torch.where(active, nu * 2, nu))
            stuck = active & ~converged & (lam > _MAX_DAMPING)
        else:
            stuck = active & ~converged & ~solved
        status = torch.where(converged, int(Status.CONVERGED), status)
        status = torch.where(stuck, int(Status.DIVERGED), status)
        if not damped:
            status = torch.where(active & ~converged & solved & ~finite_try,
                                 int(Status.NONFINITE), status)
        if bool(accept.any()):
            if bool((status == RUNNING).any()):
                J = jac1(y)
                jevals += 1
                fresh = True
            else:  # all done: skip the Jacobian at the final point unless the adjoint asks
                J = None

    status = torch.where(status == RUNNING, int(Status.MAX_STEPS), status)
    stats = {"function_evaluations": fevals, "jacobian_evaluations": jevals,
             "damping": lam.detach() if damped else None}
    return y, status, steps, f, J, stats


def least_squares(fn: Callable[..., torch.Tensor], y0: Any, args: Any = (), *,
                  solver: LevenbergMarquardt | GaussNewton | None = None,
                  max_steps: int = 100,
                  adjoint: ImplicitAdjoint | UnrollAdjoint | None = None,
                  throw: bool = False,
                  jacobian: str | Callable[..., torch.Tensor] = "auto") -> Solution:
    """Solve min_y ½‖r(y)‖² per batch element, r = ``fn(y, *args)``; differentiable in θ.

    ``fn`` maps y of shape ``(*batch, n)`` to residuals ``(*batch, m)``; batch elements must
    be independent (row b of the output depends only on row b of y) — e.g. batch × experts,
    each its own problem. Every element converges or fails on its own; converged elements stop
    changing. Gradients of ``Solution.value`` flow to tensors in ``args`` and to everything
    ``fn`` closes over (module parameters, captured tensors), through ``adjoint``:
    :class:`ImplicitAdjoint` (default; dy*/dθ = −H⁻¹ ∂_θ(Jᵀr), H = ∂_y(Jᵀr)) or
    :class:`UnrollAdjoint`.

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
            basis an analytic Jacobian is typically several times faster.

    Returns:
        :class:`Solution` with ``residual_norm`` = ‖r(y*)‖₂ per element and ``stats``
        (function and Jacobian evaluations, final damping λ).
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
    if not callable(fn):
        raise TypeError(f"fn must be callable fn(y, *args) -> residuals, got {type(fn).__name__}")
    y0 = as_initial_value(y0)
    args = as_args(args)
    unroll = isinstance(adjoint, UnrollAdjoint)

    with torch.no_grad():
        r0 = evaluate_checked("least_squares", fn, y0, args)
    m, n = r0.shape[-1], y0.shape[-1]
    mode = resolve_jacobian(jacobian, m, n)
    jac1 = make_jacobian_fn(fn, args, mode, m)

    def fn1(y: torch.Tensor) -> torch.Tensor:
        return fn(y, *args)

    if unroll:
        r_start = fn1(y0) if torch.is_grad_enabled() else r0
        y, status, steps, f, J, stats = _iterate(fn1, jac1, y0, r_start, solver, max_steps)
    else:
        with torch.no_grad():
            y, status, steps, f, J, stats = _iterate(fn1, jac1, y0, r0, solver, max_steps)
        if torch.is_grad_enabled():
            y = _attach(fn, args, y, J, status, adjoint, mode)
    solution = Solution(value=y, status=status, steps=steps,
                        residual_norm=torch.sqrt(2 * f.detach()), stats=stats)
    if not solution.all_converged:
        logger.info("least_squares: %d of %d elements did not converge",
                    int((~solution.converged).sum()), status.numel())
    if throw:
        raise_if_failed("least_squares", solution)
    return solution


def _attach(fn: Callable, args: tuple, y: torch.Tensor, J: torch.Tensor | None,
            status: torch.Tensor, adjoint: ImplicitAdjoint, mode: str | Callable
            ) -> torch.Tensor:
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
            # H = ∂_y g column by column: one batched backward pass through g's graph with
            # the unit cotangents e_j (elements independent, so e_j broadcast over the batch
            # gives column j of every element's Hessian).
            n = y.shape[-1]
            basis = unit_basis(n, y.shape[:-1], y)
            H = torch.autograd.grad(g, yv, grad_outputs=basis, retain_graph=True,
                                    is_grads_batched=True)[0].movedim(0, -1).detach()
            H = 0.5 * (H + H.mT)
    return attach_implicit(y, g, H, valid, symmetric=True, method=adjoint.linear_solver)
