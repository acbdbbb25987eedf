"""Batched linear solves: direct (LU), conjugate gradients, restarted GMRES."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import vjp

from diffnum._core.validation import (
    check_count,
    check_finite,
    check_flag,
    check_one_of,
    check_same_dtype_device,
    real_floating_dtype,
)
from diffnum.solve._adjoint import ImplicitAdjoint, UnrollAdjoint, check_adjoint
from diffnum.solve._common import (
    MAX_STEPS_LIMIT,
    check_max_steps,
    check_tolerance,
    check_tolerances,
)
from diffnum.solve._solution import RUNNING, Solution, Status, raise_if_failed

Matvec = Callable[[torch.Tensor], torch.Tensor]

# Largest Krylov basis of GMRES (it holds restart + 1 vectors of length n per element).
_MAX_RESTART = 10**4


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _checked_operator(name: str, op: Matvec) -> Matvec:
    """``op`` wrapped to check that every output has the shape and dtype of its input (a
    matvec returning ``(n,)`` for ``(batch, n)`` would otherwise broadcast silently)."""
    def checked(v: torch.Tensor) -> torch.Tensor:
        out = op(v)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
        if out.shape != v.shape or out.dtype != v.dtype:
            raise ValueError(f"{name} must map a {tuple(v.shape)} {v.dtype} tensor to one of the "
                             f"same shape and dtype, got {tuple(out.shape)} {out.dtype}")
        return out
    return checked


def _norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖₂ over the last dimension as s·‖x/s‖, s = max|x|: no overflow or underflow of the
    squares (1e200 or 1e-200 entries are fine); 0 stays 0, NaN and ±inf propagate."""
    s = x.detach().abs().amax(dim=-1)
    s = torch.where((s > 0) & torch.isfinite(s), s, 1.0)
    return s * torch.linalg.vector_norm(x / s.unsqueeze(-1), dim=-1)


def _power_of_two_scale(v: torch.Tensor) -> torch.Tensor:
    """Per element the power of two σ with max|v| ∈ [σ, 2σ) (1 where v = 0 or max|v| is not
    finite): v/σ is exact and of order one."""
    s = v.detach().abs().amax(dim=-1)
    s = torch.where((s > 0) & torch.isfinite(s), s, 1.0)
    mantissa = torch.frexp(s).mantissa  # s = mantissa·2^e, mantissa ∈ [0.5, 1)
    return s / (2 * mantissa)  # 2^(e−1), exact (2^e itself overflows for s near the max)


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
        # A NaN/inf curvature is NONFINITE; a finite p·Ap <= 0 means A (or the
        # preconditioner) is not positive definite: CG's assumptions fail for that element.
        nonfinite = active & ~torch.isfinite(pAp.detach())
        breakdown = active & ~nonfinite & ~(pAp.detach() > 0)
        status = torch.where(nonfinite, int(Status.NONFINITE), status)
        status = torch.where(breakdown, int(Status.DIVERGED), status)
        active = active & ~breakdown & ~nonfinite
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
    status = torch.where((status == RUNNING) & ~torch.isfinite(res), int(Status.NONFINITE),
                         status)
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
        nonfinite = torch.zeros_like(done)
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
            # An element whose Arnoldi step produced NaN/inf stops here (NONFINITE below);
            # zeroing its least-squares problem keeps LAPACK from failing the whole batch.
            bad = ~(torch.isfinite(Hj.detach()).flatten(-2).all(-1)
                    & torch.isfinite(rhs.detach()).all(-1))
            Hj = torch.where(bad[..., None, None], zero, Hj)
            rhs = torch.where(bad.unsqueeze(-1), zero, rhs)
            y = torch.linalg.lstsq(Hj, rhs.unsqueeze(-1)).solution.squeeze(-1)
            est = _norm((rhs - (Hj @ y.unsqueeze(-1)).squeeze(-1)).detach())
            nonfinite = nonfinite | (~done & bad)
            done = done | bad
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
        status = torch.where(nonfinite, int(Status.NONFINITE), status)
    return x, status, steps, res


def _krylov(method: str, matvec: Matvec, b: torch.Tensor, x0: torch.Tensor,
            precondition: Matvec, rtol: float, atol: float, max_steps: int, restart: int):
    """CG or GMRES to ‖b − A y‖ <= max(atol, rtol·‖b‖), run on b/σ (σ a power of two near
    max|b|, per element) so that no norm or dot product over- or underflows for b ~ 1e±200;
    y = σ·y', residual = σ·res'. An element with b = 0 starts, and so ends, at y = 0."""
    scale = _power_of_two_scale(b)
    zero_b = (b.detach() == 0).all(dim=-1, keepdim=True)
    b = b / scale.unsqueeze(-1)
    x0 = torch.where(zero_b, 0.0, x0 / scale.unsqueeze(-1))
    tol = torch.maximum(rtol * _norm(b.detach()), atol / scale)
    if method == "cg":
        y, status, steps, res = _cg(matvec, b, x0, precondition, tol, max_steps)
    else:
        y, status, steps, res = _gmres(matvec, b, x0, precondition, tol, max_steps, restart)
    return y * scale.unsqueeze(-1), status, steps, res * scale


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
    a batched ``r -> M r`` with M ≈ A⁻¹ (SPD for CG).

    Tolerances (iterative methods): an element is CONVERGED when ‖b − A y‖₂ <=
    max(atol, rtol·‖b‖₂), i.e. relative to ‖b‖. ``rtol=None`` is the dtype default (1e-8 for
    float64, 1e-4 for float32); ``atol=None`` is 0, no absolute floor (as scipy >= 1.12), so a
    tiny b is solved to the same relative accuracy as any other. rtol and atol must not both
    be 0. Norms are computed with scaling, and the iteration runs on b divided by a power of
    two near max|b|, so b ~ 1e±200 solves as accurately as b ~ 1. An element with b = 0 gets
    y = 0 exactly (CONVERGED, whatever ``x0``). ``"direct"`` ignores the tolerances.

    Status is per batch element: NaN or ±inf in A (or from the matvec or preconditioner) makes
    that element NONFINITE while the others are solved exactly as they would be alone; no
    torch/LAPACK error is raised for it. b and x0 must be finite.

    Gradients with :class:`ImplicitAdjoint` (default): y* + (s − stop_gradient(s)) with
    s = A⁻¹(b − A_θ y*), so ∂L/∂θ = uᵀ ∂_θ(b − A_θ y*) with Aᵀ u = ∂L/∂y*, one more iterative
    solve in backward, to the same tolerances (the transposed matvec of a callable A comes from
    its VJP; GMRES's backward runs without the preconditioner, whose transpose is unknown).
    ``"direct"`` differentiates the LU solve itself.

    Returns:
        :class:`Solution` with ``residual_norm`` = ‖b − A y*‖₂; ``status`` DIVERGED marks a
        singular matrix (direct) or a non-positive curvature pᵀAp (CG), NONFINITE a NaN/inf
        in the element's A, matvec or iterates (its ``value`` is then NaN or meaningless).

    Example::

        >>> import torch
        >>> from diffnum.solve import linear_solve
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> sol = linear_solve(A, b, method="cg")
        >>> torch.allclose(sol.value, torch.linalg.solve(A, b)), bool(sol.converged)
        (True, True)
    """
    check_one_of("method", method, ("direct", "cg", "gmres"))
    real_floating_dtype("b", b)
    if b.ndim == 0 or b.shape[-1] == 0:
        raise ValueError(f"b must have shape (*batch, n) with n >= 1 unknowns, "
                         f"got {tuple(b.shape)}")
    check_finite("b", b)
    n = b.shape[-1]
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    check_adjoint(adjoint)
    check_tolerances(rtol, atol)
    rtol_v = check_tolerance("rtol", rtol, b.dtype)
    atol_v = 0.0 if atol is None else check_tolerance("atol", atol, b.dtype)
    if method != "direct" and rtol_v == 0 and atol_v == 0:
        raise ValueError("rtol = 0 needs atol > 0 (atol defaults to 0): with both 0 the "
                         "solve could never converge")
    max_steps = (min(10 * n, MAX_STEPS_LIMIT) if max_steps is None
                 else check_max_steps(max_steps))
    check_count("restart", restart, high=_MAX_RESTART)
    check_flag("throw", throw)
    if isinstance(A, torch.Tensor):
        real_floating_dtype("A", A)
        check_same_dtype_device({"b": b, "A": A})
        if A.ndim < 2 or A.shape[-1] != n or A.shape[-2] != n:
            raise ValueError(f"A must have shape (*batch, n, n) with n = {n} from b, "
                             f"got {tuple(A.shape)}")
        matrix = A  # NaN/inf in A is not an input error: that element is NONFINITE
        matvec: Matvec = lambda y: (matrix @ y.unsqueeze(-1)).squeeze(-1)  # noqa: E731
    elif callable(A):
        matrix = None
        matvec = _checked_operator("A", A)
        if method == "direct":
            raise ValueError("method='direct' needs A as a tensor (*batch, n, n); for a matvec "
                             "use method='cg' or 'gmres'")
    else:
        raise TypeError(f"A must be a tensor or a callable matvec, got {type(A).__name__}")
    if preconditioner is not None and not callable(preconditioner):
        raise TypeError(f"preconditioner must be a callable r -> M r, got "
                        f"{type(preconditioner).__name__}")
    if x0 is not None:
        real_floating_dtype("x0", x0)
        check_same_dtype_device({"b": b, "x0": x0})
        if not _broadcasts_to(x0.shape, b.shape):
            raise ValueError(f"x0 must broadcast to the shape of b, {tuple(b.shape)}, "
                             f"got {tuple(x0.shape)}")
        check_finite("x0", x0)

    if method == "direct":
        batch = torch.broadcast_shapes(matrix.shape[:-2], b.shape[:-1])
        # Elements with NaN/inf in A solve the identity instead (so LAPACK never sees them) and
        # get y = NaN: NONFINITE, the others untouched.
        bad = ~torch.isfinite(matrix.detach()).flatten(-2).all(-1).expand(batch)
        eye = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
        safe = torch.where(bad[..., None, None], eye, matrix.expand(*batch, n, n))
        y, info = torch.linalg.solve_ex(safe, b.expand(*batch, n).unsqueeze(-1))
        y = torch.where(bad.unsqueeze(-1), float("nan"), y.squeeze(-1))
        res = _norm((b - matvec(y)).detach())
        status = torch.where(torch.isfinite(res), int(Status.CONVERGED), int(Status.NONFINITE))
        status = torch.where((info == 0) | bad, status, int(Status.DIVERGED))
        steps = torch.ones_like(status)
        solution = Solution(y, status, steps, res, {"method": method})
        if throw:
            raise_if_failed("linear_solve", solution)
        return solution

    precondition = (_checked_operator("preconditioner", preconditioner)
                    if preconditioner is not None else (lambda r: r))
    x0 = torch.zeros_like(b) if x0 is None else x0.expand_as(b)

    def run(rhs: torch.Tensor, start: torch.Tensor):
        return _krylov(method, matvec, rhs, start, precondition, rtol_v, atol_v, max_steps,
                       restart)

    if isinstance(adjoint, UnrollAdjoint):
        y, status, steps, res = run(b, x0)
    else:
        with torch.no_grad():
            y, status, steps, res = run(b.detach(), x0.detach())
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
            return _krylov(method, const_matvec, rhs, torch.zeros_like(rhs), precondition,
                           rtol, atol, max_steps, restart)[0]

    def solve_transposed(rhs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if method == "cg":  # A symmetric: Aᵀ = A
                return _krylov(method, const_matvec, rhs, torch.zeros_like(rhs), precondition,
                               rtol, atol, max_steps, restart)[0]
            return _krylov(method, const_rmatvec, rhs, torch.zeros_like(rhs), lambda r: r,
                           rtol, atol, max_steps, restart)[0]

    s = _OperatorSolve.apply(residual, solve, solve_transposed)
    return y.detach() + (s - s.detach())


def operator_solve(rhs: torch.Tensor, solve: Callable, solve_transposed: Callable) -> Any:
    """``_OperatorSolve`` for tests (gradcheck of the custom backward)."""
    return _OperatorSolve.apply(rhs, solve, solve_transposed)
