"""How gradients of a solve are taken: :class:`ImplicitAdjoint` and :class:`UnrollAdjoint`.

Design of the implicit adjoint (one mechanism for every solver). A solve finds y* with
g(y*, θ) = 0, where θ is everything ``fn`` depends on: tensors in ``args`` *and* tensors it
closes over (``nn.Module`` parameters, a basis computed upstream). The implicit function
theorem gives dy*/dθ = −H⁻¹ ∂_θ g with H = ∂_y g(y*, θ). The solve itself runs under
``torch.no_grad``; afterwards, with gradients enabled, g is re-evaluated once at the detached
y* — this records a graph to every θ that ``fn`` touches, whatever route it reaches them by —
and the returned value is

    y_out = y* + (s − stop_gradient(s)),    s = −H⁻¹ g(y*, θ),   H detached.

Its value is exactly y* and its derivative is −H⁻¹ ∂_θ g, the implicit-function-theorem
derivative. Backward therefore costs one solve with Hᵀ (through a factorization made in the
forward pass) and one vector–Jacobian product through g; memory holds one evaluation of g,
independent of the number of iterations. No custom ``autograd.Function`` is needed: the solve
with the constant H is ``cholesky_solve``/``lu_solve`` whose own backward is the transposed
solve, and closure tensors need no registration because the graph of g finds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffnum._core.validation import check_one_of


@dataclass(frozen=True)
class ImplicitAdjoint:
    """Gradients by the implicit function theorem at the solution (default).

    For ``least_squares`` the optimality condition is g(y, θ) = J(y, θ)ᵀ r(y, θ) = 0 and

        ∂L/∂θ = −uᵀ ∂_θ g,   H u = ∂L/∂y*,   H = ∂_y g = JᵀJ + Σᵢ rᵢ ∇²_y rᵢ.

    Args:
        hessian: ``"full"`` (default) uses the exact H and the exact ∂_θ g (one double-backward
            through ``fn``); ``"gauss_newton"`` uses H ≈ JᵀJ and ∂_θ g ≈ Jᵀ ∂_θ r, dropping the
            terms proportional to the residual — exact for zero-residual problems, an
            approximation otherwise, and cheaper (one ordinary VJP through ``fn``).
            Ignored by ``root`` and ``fixed_point`` (their H is the Jacobian of g).
        linear_solver: how H u = v is solved, a solver object of :func:`linear_solve`:
            ``None`` (default: :class:`Cholesky` for a symmetric H, :class:`LU` otherwise),
            ``Cholesky()`` (LU for a non-symmetric H), ``LU()``, or ``Pinv(rtol)`` (the
            minimum-norm solution, for a singular H such as an underdetermined fit's). If a
            factorization fails for any element the batch falls back to the pseudoinverse.

    Elements that stopped without converging (``MAX_STEPS``, ``DIVERGED``) get the same
    formula evaluated at their last iterate — check ``Solution.status`` before trusting their
    gradient; ``NONFINITE`` elements get zero. If any element's H cannot be factorized the
    whole batch falls back to the pseudoinverse.

    Example::

        >>> import torch
        >>> from diffnum.solve import ImplicitAdjoint, least_squares
        >>> c = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        >>> sol = least_squares(lambda y, c: y * y - c, torch.ones(2, dtype=torch.float64), (c,),
        ...                     adjoint=ImplicitAdjoint(hessian="gauss_newton"))
        >>> sol.value.sum().backward()  # y = √c, dy/dc = 1 / (2√c)
        >>> c.grad.round(decimals=6).tolist()
        [0.5, 0.353553]
    """

    hessian: str = "full"
    linear_solver: object = None

    def __post_init__(self) -> None:
        check_one_of("hessian", self.hessian, ("full", "gauss_newton"))
        from diffnum.solve._linear import LU, Cholesky, Pinv  # _linear imports this module

        if self.linear_solver is not None and not isinstance(self.linear_solver,
                                                             (LU, Cholesky, Pinv)):
            raise TypeError(f"linear_solver must be None, LU(), Cholesky() or Pinv() (direct "
                            f"solvers of diffnum.solve), got {self.linear_solver!r}")


@dataclass(frozen=True)
class UnrollAdjoint:
    """Gradients by backpropagating through every iteration of the solver.

    Memory grows linearly with the number of iterations (each keeps its Jacobian and
    factorization); gradients equal the implicit ones only once the iteration has converged.
    Kept for comparison and for problems where H is singular at the solution. The iteration's
    discrete decisions (step acceptance, damping, line-search lengths) are treated as
    constants.

    Example::

        >>> import torch
        >>> from diffnum.solve import UnrollAdjoint, least_squares
        >>> c = torch.tensor([4.0], dtype=torch.float64, requires_grad=True)
        >>> sol = least_squares(lambda y, c: y * y - c, torch.ones(1, dtype=torch.float64), (c,),
        ...                     adjoint=UnrollAdjoint())
        >>> sol.value.backward()  # through every iteration; equals 1/(2√c) once converged
        >>> round(float(c.grad), 6)
        0.25
    """


def check_adjoint(adjoint: object) -> None:
    if not isinstance(adjoint, (ImplicitAdjoint, UnrollAdjoint)):
        raise TypeError(
            f"adjoint must be ImplicitAdjoint(...) or UnrollAdjoint(), got {type(adjoint).__name__}"
        )


def _solve_detached(H: torch.Tensor, b: torch.Tensor, symmetric: bool,
                    solver: object) -> torch.Tensor:
    """Solve H s = b per batch element, H constant (detached) and b differentiable, with
    ``ImplicitAdjoint.linear_solver`` (the pseudoinverse when a factorization fails)."""
    from diffnum.solve._linear import LU, Pinv

    rhs = b.unsqueeze(-1)
    if isinstance(solver, Pinv):
        return (solver.pinv(H, hermitian=symmetric) @ rhs).squeeze(-1)
    if symmetric and not isinstance(solver, LU):
        L, info = torch.linalg.cholesky_ex(H)
        if bool((info == 0).all()):
            return torch.cholesky_solve(rhs, L).squeeze(-1)
    if not symmetric or isinstance(solver, LU) or solver is None:
        LU_, pivots, info = torch.linalg.lu_factor_ex(H)
        if bool((info == 0).all()):
            return torch.linalg.lu_solve(LU_, pivots, rhs).squeeze(-1)
    return (torch.linalg.pinv(H, hermitian=symmetric) @ rhs).squeeze(-1)


def attach_implicit(y_star: torch.Tensor, g: torch.Tensor, H: torch.Tensor,
                    valid: torch.Tensor, *, symmetric: bool, solver: object) -> torch.Tensor:
    """Return y* with the derivative −H⁻¹ ∂_θ g attached (value unchanged).

    ``g`` carries the graph to θ, ``H`` is detached. Elements that stopped without converging
    (``MAX_STEPS``, ``DIVERGED``) still get the formula evaluated at their last iterate —
    check ``Solution.status``; elements outside ``valid`` (non-finite) or with a non-finite H
    get a zero gradient, since no derivative exists there.
    """
    n = H.shape[-1]
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    ok = valid & torch.isfinite(H).flatten(-2).all(-1)
    H = torch.where(ok[..., None, None], H.detach(), eye)
    g = torch.where(ok[..., None], g, torch.zeros((), dtype=g.dtype, device=g.device))
    s = _solve_detached(H, -g, symmetric, solver)
    return y_star.detach() + (s - s.detach())


def reevaluate(fn: Callable, y: torch.Tensor, args: tuple) -> torch.Tensor | None:
    """``fn(y*, *args)`` with gradients on; ``None`` when nothing in it requires grad."""
    with torch.enable_grad():
        out = fn(y.detach(), *args)
    return out if out.requires_grad else None
