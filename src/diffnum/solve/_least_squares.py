"""Batched nonlinear least squares: the front end of :func:`least_squares` and its adjoint.

The iteration itself is a solver object (:class:`LevenbergMarquardt`, :class:`GaussNewton`
in :mod:`diffnum.solve._levenberg_marquardt`) run by the shared driver
(:mod:`diffnum.solve._driver`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffnum._core.validation import check_flag
from diffnum.solve._adjoint import ImplicitAdjoint, UnrollAdjoint, attach_implicit, reevaluate
from diffnum.solve._common import (
    evaluate_checked,
    make_jacobian_fn,
    resolve_jacobian,
    unit_basis,
)
from diffnum.solve._driver import check_call, run, start_point
from diffnum.solve._levenberg_marquardt import (
    Compactor,
    GaussNewton,
    LeastSquaresProblem,
    LevenbergMarquardt,
    _NormalEquationSolver,
)
from diffnum.solve._solution import Solution, Status

__all__ = ["GaussNewton", "LevenbergMarquardt", "least_squares"]

# The full Hessian for the implicit adjoint is one batched backward pass over the n unit
# cotangents while batch·m·n² stays below this, and n separate backward passes beyond it.
_BATCHED_HESSIAN_MAX = 1 << 22


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
        solver: :class:`LevenbergMarquardt` (default), :class:`GaussNewton`, or any solver
            object with ``init``/``step``/``terminate``/``postprocess`` (see
            :mod:`diffnum.solve`), which iterates on the problem's ``fn`` (residuals) and
            ``jacobian``.
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
    solver, adjoint, y0, args = check_call(
        "least_squares", fn, y0, args, solver, LevenbergMarquardt,
        (LevenbergMarquardt, GaussNewton), adjoint, max_steps, throw)
    _check_options(jacobian, hessian, compact, fused)
    problem, mode, residual_fn, attach = _problem(fn, y0, args, adjoint, jacobian, fused,
                                                  compact)
    if not attach:
        return run("least_squares", solver, problem, y0, max_steps, adjoint, throw, None)
    compactor = problem.compact

    def attach_gradient(y: torch.Tensor, status: torch.Tensor, state: Any) -> torch.Tensor:
        valid = status != int(Status.NONFINITE)
        if compactor is not None and not bool(valid.all()):
            # Failed elements are left out of the adjoint's evaluation altogether, so they
            # contribute exact zeros to the backward pass (not NaN·0) of anything shared.
            # Indexed afresh: the iteration's cached subset was made without autograd.
            y_valid = _attach(residual_fn, compactor.fresh_subset(valid), y[valid], None,
                              status[valid], adjoint, mode, hessian)
            return y.detach().index_put((valid,), y_valid)
        J = (solver.final_jacobian(state) if isinstance(solver, _NormalEquationSolver)
             else None)
        return _attach(residual_fn, args, y, J, status, adjoint, mode, hessian)

    return run("least_squares", solver, problem, y0, max_steps, adjoint, throw,
               attach_gradient)


def _check_options(jacobian: Any, hessian: Any, compact: Any, fused: Any) -> None:
    check_flag("compact", compact)
    check_flag("fused", fused)
    if hessian is not None and not callable(hessian):
        raise TypeError(f"hessian must be None or a callable hessian(y, *args) -> (*batch, n, n), "
                        f"got {type(hessian).__name__}")
    if isinstance(jacobian, str) and jacobian not in ("auto", "forward", "reverse"):
        raise ValueError(
            f"jacobian must be 'auto', 'forward', 'reverse' or a callable "
            f"jacobian(y, *args) -> (*batch, m, n), got {jacobian!r}"
        )
    if fused and not (isinstance(jacobian, str) and jacobian == "auto"):
        raise ValueError(f"fused=True takes J from fn itself; leave jacobian at 'auto', got "
                         f"jacobian={jacobian!r}")


def _problem(fn: Callable, y0: torch.Tensor, args: tuple,
             adjoint: ImplicitAdjoint | UnrollAdjoint, jacobian: Any, fused: bool,
             compact: bool) -> tuple[LeastSquaresProblem, Any, Callable, bool]:
    """The problem the solver iterates on; the Jacobian mode, the residual function and
    whether the implicit derivative is to be attached, for the adjoint."""
    unroll = isinstance(adjoint, UnrollAdjoint)
    if fused:
        (r0, J0), attach = start_point(lambda y: _evaluate_fused(fn, y, args), y0, adjoint)

        def residual_fn(y: torch.Tensor, *a: Any) -> torch.Tensor:  # for the adjoint
            return fn(y, *a)[0]

        def mode(y: torch.Tensor, *a: Any) -> torch.Tensor:  # the Jacobian part
            return fn(y, *a)[1]

        def fused1(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            r, J = fn(y, *args)
            return r, J

        problem = LeastSquaresProblem(lambda y: fused1(y)[0], lambda y: fused1(y)[1], r0,
                                      fused=fused1, start_jacobian=J0)
    else:
        r0, attach = start_point(lambda y: evaluate_checked("least_squares", fn, y, args),
                                 y0, adjoint)
        mode = resolve_jacobian(jacobian, r0.shape[-1], y0.shape[-1])
        residual_fn = fn
        problem = LeastSquaresProblem(lambda y: fn(y, *args),
                                      make_jacobian_fn(fn, args, mode, r0.shape[-1]), r0)
        if compact and not unroll:
            problem.compact = Compactor(fn, args, mode, tuple(y0.shape[:-1]), r0.shape[-1])
    r0 = J0 = None
    if unroll and torch.is_grad_enabled():  # the start point recorded by autograd
        if fused:
            problem.start, problem.start_jacobian = problem.fused(y0)
        else:
            problem.start = problem.fn(y0)
    problem.keep_jacobian = attach and adjoint.hessian == "gauss_newton"
    return problem, mode, residual_fn, attach


def _attach(fn: Callable, args: tuple, y: torch.Tensor, J: torch.Tensor | None,
            status: torch.Tensor, adjoint: ImplicitAdjoint, mode: str | Callable,
            hessian: Callable | None = None) -> torch.Tensor:
    """Attach the implicit derivative to y* (see :mod:`diffnum.solve._adjoint`); called only
    when the start point showed that something ``fn`` reaches requires grad."""
    valid = status != int(Status.NONFINITE)
    if adjoint.hessian == "gauss_newton":
        r = reevaluate(fn, y, args)
        if r is None:  # nothing fn depends on requires grad at y*
            return y
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
            # g = Jᵀr as the VJP of r with cotangent r itself (r not detached: g keeps its
            # dependence on θ through both J and r), without forming ½‖r‖².
            g = torch.autograd.grad(rv, yv, grad_outputs=rv, create_graph=True)[0]
        if hessian is not None:
            with torch.no_grad():
                H = _checked_hessian(hessian, y.detach(), args)
        else:
            H = _autograd_hessian(g, yv, rv.numel())
    return attach_implicit(y, g, H, valid, symmetric=True, solver=adjoint.linear_solver)


def _autograd_hessian(g: torch.Tensor, yv: torch.Tensor, size: int) -> torch.Tensor:
    """H = ∂_y g column by column, symmetrized and detached: one batched backward pass through
    g's graph with the unit cotangents e_j (elements independent, so e_j broadcast over the
    batch gives column j of every element's Hessian); ``size`` is the number of residuals."""
    with torch.enable_grad():
        n = yv.shape[-1]
        basis = unit_basis(n, yv.shape[:-1], yv)
        if size * n * n <= _BATCHED_HESSIAN_MAX:
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
        return 0.5 * (H + H.mT)


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
