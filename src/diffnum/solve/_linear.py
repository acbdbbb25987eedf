"""Batched linear solves: direct (LU), conjugate gradients, restarted GMRES."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import vjp

from diffnum._core.validation import check_finite, check_one_of, real_floating_dtype
from diffnum.solve._adjoint import ImplicitAdjoint, UnrollAdjoint, check_adjoint
from diffnum.solve._common import check_max_steps, check_tolerance, check_tolerances
from diffnum.solve._solution import RUNNING, Solution, Status, raise_if_failed

Matvec = Callable[[torch.Tensor], torch.Tensor]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=-1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def _cg(matvec: Matvec, b: torch.Tensor, x: torch.Tensor, precondition: Matvec, tol: torch.Tensor,
        max_steps: int):
    """Preconditioned conjugate gradients for SPD A, per element; frozen once converged."""
    zero = torch.zeros((), dtype=b.dtype, device=b.device)
    r = b - matvec(x)
    z = precondition(r)
    p = z
    rz = _dot(r, z)
    res = _norm(r.detach())
    status = torch.full(b.shape[:-1], RUNNING, dtype=torch.int64, device=b.device)
    steps = torch.zeros_like(status)
    for _ in range(max_steps):
        status = torch.where((status == RUNNING) & (res <= tol), int(Status.CONVERGED), status)
        status = torch.where((status == RUNNING) & ~torch.isfinite(res), int(Status.NONFINITE),
                             status)
        active = status == RUNNING
        if not bool(active.any()):
            break
        Ap = matvec(p)
        pAp = _dot(p, Ap)
        # p·Ap <= 0 means A (or the preconditioner) is not positive definite: CG's
        # assumptions fail for that element.
        breakdown = active & ~(pAp.detach() > 0)
        status = torch.where(breakdown, int(Status.DIVERGED), status)
        active = active & ~breakdown
        alpha = torch.where(active, rz / torch.where(active, pAp, 1.0), zero)
        x = x + alpha.unsqueeze(-1) * p
        r = r - alpha.unsqueeze(-1) * Ap
        z = precondition(r)
        rz_new = _dot(r, z)
        beta = torch.where(active, rz_new / torch.where(active, rz, 1.0), zero)
        p = torch.where(active.unsqueeze(-1), z + beta.unsqueeze(-1) * p, p)
        rz = torch.where(active, rz_new, rz)
        res = torch.where(active, _norm(r.detach()), res)
        steps = steps + active.to(torch.int64)
    status = torch.where((status == RUNNING) & (res <= tol), int(Status.CONVERGED), status)
    status = torch.where(status == RUNNING, int(Status.MAX_STEPS), status)
    return x, status, steps, res


def _gmres(matvec: Matvec, b: torch.Tensor, x: torch.Tensor, precondition: Matvec,
           tol: torch.Tensor, max_steps: int, restart: int):
    """Right-preconditioned restarted GMRES(restart), per element (A M u = b, x = x₀ + M u)."""
    batch, n = b.shape[:-1], b.shape[-1]
    dtype, device = b.dtype, b.device
    m = min(restart, n)
    zero = torch.zeros((), dtype=dtype, device=device)
    status = torch.full(batch, RUNNING, dtype=torch.int64, device=device)
    steps = torch.zeros_like(status)
    res = _norm((b - matvec(x)).detach())
    while True:
        status = torch.where((status == RUNNING) & (res <= tol), int(Status.CONVERGED), status)
        status = torch.where((status == RUNNING) & ~torch.isfinite(res), int(Status.NONFINITE),
                             status)
        status = torch.where((status == RUNNING) & (steps >= max_steps), int(Status.MAX_STEPS),
                             status)
        active = status == RUNNING
        if not bool(active.any()):
            break
        r = b - matvec(x)
        beta = _norm(r)
        safe_beta = torch.where(beta.detach() > 0, beta, 1.0)
        V = [r / safe_beta.unsqueeze(-1)]
        columns: list[torch.Tensor] = []  # columns of the (m+1)×m Hessenberg matrix
        best = torch.zeros((*batch, m), dtype=dtype, device=device)
        done = ~active
        e1 = torch.zeros((*batch, m + 1), dtype=dtype, device=device)
        e1 = torch.cat([beta.unsqueeze(-1), e1[..., 1:]], dim=-1)
        for j in range(m):
            w = matvec(precondition(V[j]))
            h = []
            for i in range(j + 1):  # modified Gram–Schmidt
                hij = _dot(w, V[i])
                w = w - hij.unsqueeze(-1) * V[i]
                h.append(hij)
            hnext = _norm(w)
            h.append(hnext)
            columns.append(torch.cat([torch.stack(h, -1),
                                      torch.zeros((*batch, m - j - 1), dtype=dtype,
                                                  device=device)], -1))
            V.append(w / torch.where(hnext.detach() > 0, hnext, 1.0).unsqueeze(-1))
            Hj = torch.stack(columns, -1)[..., : j + 2, :]  # (*batch, j+2, j+1)
            rhs = e1[..., : j + 2]
            y = torch.linalg.lstsq(Hj, rhs.unsqueeze(-1)).solution.squeeze(-1)
            est = _norm((rhs - (Hj @ y.unsqueeze(-1)).squeeze(-1)).detach())
            take = ~done
            padded = torch.cat([y, torch.zeros((*batch, m - j - 1), dtype=dtype,
                                               device=device)], -1)
            best = torch.where(take.unsqueeze(-1), padded, best)
            steps = steps + take.to(torch.int64)
            finished = take & ((est <= tol) | (steps >= max_steps) | (hnext.detach() <= 0))
            done = done | finished
            if bool(done.all()):
                break
        basis = torch.stack(V[: len(columns)], dim=-1)  # (*batch, n, k)
        update = precondition((basis @ best[..., : len(columns)].unsqueeze(-1)).squeeze(-1))
        x = x + torch.where(active.unsqueeze(-1), update, zero)
        res = torch.where(active, _norm((b - matvec(x)).detach()), res)
    return x, status, steps, res


class _OperatorSolve(torch.autograd.Function):
    """s = A⁻¹ ρ for a constant operator A; backward solves Aᵀ u = v with the same method."""

    @staticmethod
    def forward(ctx, rhs, solve, solve_transposed):
        ctx.solve_transposed = solve_transposed
        return solve(rhs)

    @staticmethod
    def backward(ctx, grad):
        return ctx.solve_transposed(grad), None, None


def linear_solve(A: torch.Tensor | Matvec, b: torch.Tensor, *, method: str = "direct",
                 preconditioner: Matvec | None = None, rtol: float | None = None,
                 atol: float | None = None, max_steps: int | None = None, restart: int = 30,
                 x0: torch.Tensor | None = None,
                 adjoint: ImplicitAdjoint | UnrollAdjoint | None = None,
                 throw: bool = False) -> Solution:
    """Solve A y = b per batch element; differentiable in A (or what its matvec captures) and b.

    Methods: ``"direct"`` (LU; A must be a tensor ``(*batch, n, n)``), ``"cg"`` (preconditioned
    conjugate gradients; A symmetric positive definite), ``"gmres"`` (right-preconditioned
    GMRES(restart)). ``A`` is a tensor or a batched matvec ``y -> A y``; ``preconditioner`` is
    a batched ``r -> M r`` with M ≈ A⁻¹ (SPD for CG). Iterative methods stop when
    ‖b − A y‖₂ <= max(atol, rtol·‖b‖₂).

    Gradients with :class:`ImplicitAdjoint` (default): y* + (s − stop_gradient(s)) with
    s = A⁻¹(b − A_θ y*), so ∂L/∂θ = uᵀ ∂_θ(b − A_θ y*) with Aᵀ u = ∂L/∂y*, one more iterative
    solve in backward, to the same tolerances (the transposed matvec of a callable A comes from
    its VJP; GMRES's backward runs without the preconditioner, whose transpose is unknown).
    ``"direct"`` differentiates the LU solve itself.

    Returns:
        :class:`Solution` with ``residual_norm`` = ‖b − A y*‖₂; ``status`` DIVERGED marks a
        singular matrix (direct) or a non-positive curvature pᵀAp (CG).
    """
    check_one_of("method", method, ("direct", "cg", "gmres"))
    real_floating_dtype("b", b)
    if b.ndim == 0:
        raise ValueError(f"b must have shape (*batch, n), got {tuple(b.shape)}")
    check_finite("b", b)
    n = b.shape[-1]
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    check_adjoint(adjoint)
    check_tolerances(rtol, atol)
    rtol_v = check_tolerance("rtol", rtol, b.dtype)
    atol_v = check_tolerance("atol", atol, b.dtype)
    max_steps = check_max_steps(10 * n if max_steps is None else max_steps)
    if isinstance(A, torch.Tensor):
        real_floating_dtype("A", A)
        if A.ndim < 2 or A.shape[-1] != n or A.shape[-2] != n:
            raise ValueError(f"A must have shape (*batch, n, n) with n = {n} from b, "
                             f"got {tuple(A.shape)}")
        check_finite("A", A)
        matrix = A
        matvec: Matvec = lambda y: (matrix @ y.unsqueeze(-1)).squeeze(-1)  # noqa: E731
    elif callable(A):
        matrix = None
        matvec = A
        if method == "direct":
            raise ValueError("method='direct' needs A as a tensor (*batch, n, n); for a matvec "
                             "use method='cg' or 'gmres'")
    else:
        raise TypeError(f"A must be a tensor or a callable matvec, got {type(A).__name__}")
    if preconditioner is not None and not callable(preconditioner):
        raise TypeError(f"preconditioner must be a callable r -> M r, got "
                        f"{type(preconditioner).__name__}")

    if method == "direct":
        batch = torch.broadcast_shapes(matrix.shape[:-2], b.shape[:-1])
        y, info = torch.linalg.solve_ex(matrix.expand(*batch, n, n),
                                        b.expand(*batch, n).unsqueeze(-1))
        y = y.squeeze(-1)
        res = _norm((b - matvec(y)).detach())
        status = torch.where(torch.isfinite(res), int(Status.CONVERGED), int(Status.NONFINITE))
        status = torch.where(info == 0, status, int(Status.DIVERGED))
        steps = torch.ones_like(status)
        solution = Solution(y, status, steps, res, {"method": method})
        if throw:
            raise_if_failed("linear_solve", solution)
        return solution

    precondition = preconditioner if preconditioner is not None else (lambda r: r)
    x0 = torch.zeros_like(b) if x0 is None else x0
    if isinstance(x0, torch.Tensor):
        check_finite("x0", x0)
    tol = torch.clamp(rtol_v * _norm(b.detach()), min=atol_v)

    def run(mv: Matvec, rhs: torch.Tensor, start: torch.Tensor, pre: Matvec, tolerance):
        if method == "cg":
            return _cg(mv, rhs, start, pre, tolerance, max_steps)
        return _gmres(mv, rhs, start, pre, tolerance, max_steps, restart)

    if isinstance(adjoint, UnrollAdjoint):
        y, status, steps, res = run(matvec, b, x0, precondition, tol)
    else:
        with torch.no_grad():
            y, status, steps, res = run(matvec, b.detach(), x0.detach(), precondition, tol)
        if torch.is_grad_enabled():
            with torch.enable_grad():
                residual = b - matvec(y.detach())
            if residual.requires_grad:
                y = _attach(residual, matvec, matrix, y, method, precondition, max_steps,
                            restart, rtol_v, atol_v)
    solution = Solution(y, status, steps, res, {"method": method})
    if throw:
        raise_if_failed("linear_solve", solution)
    return solution


def _attach(residual: torch.Tensor, matvec: Matvec, matrix: torch.Tensor | None,
            y: torch.Tensor, method: str, precondition: Matvec, max_steps: int, restart: int,
            rtol: float, atol: float) -> torch.Tensor:
    """y* + (s − stop_gradient(s)), s = A⁻¹ ρ(θ), A applied as a constant operator."""

    def tolerance(rhs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(rtol * _norm(rhs), min=atol)

    def const_matvec(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return matvec(v)

    if matrix is not None:
        At = matrix.detach().mT

        def const_rmatvec(v: torch.Tensor) -> torch.Tensor:
            return (At @ v.unsqueeze(-1)).squeeze(-1)
    else:
        def const_rmatvec(v: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return vjp(matvec, torch.zeros_like(v))[1](v)[0]

    def solve(rhs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if method == "cg":
                return _cg(const_matvec, rhs, torch.zeros_like(rhs), precondition,
                           tolerance(rhs), max_steps)[0]
            return _gmres(const_matvec, rhs, torch.zeros_like(rhs), precondition,
                          tolerance(rhs), max_steps, restart)[0]

    def solve_transposed(rhs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if method == "cg":  # A symmetric: Aᵀ = A
                return _cg(const_matvec, rhs, torch.zeros_like(rhs), precondition,
                           tolerance(rhs), max_steps)[0]
            return _gmres(const_rmatvec, rhs, torch.zeros_like(rhs), lambda r: r,
                          tolerance(rhs), max_steps, restart)[0]

    s = _OperatorSolve.apply(residual, solve, solve_transposed)
    return y.detach() + (s - s.detach())


def operator_solve(rhs: torch.Tensor, solve: Callable, solve_transposed: Callable) -> Any:
    """``_OperatorSolve`` for tests (gradcheck of the custom backward)."""
    return _OperatorSolve.apply(rhs, solve, solve_transposed)
