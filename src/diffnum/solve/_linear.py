"""Batched linear solves with solver objects: :class:`LU`, :class:`Cholesky`, :class:`CG`,
:class:`GMRES`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import vjp

from diffnum._core.validation import (
    check_count,
    check_finite,
    check_flag,
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


class _OperatorSolve(torch.autograd.Function):
    """s = A⁻¹ ρ for a constant operator A; backward solves Aᵀ u = v with the same method."""

    @staticmethod
    def forward(ctx, rhs, solve, solve_transposed):
        ctx.solve_transposed = solve_transposed
        return solve(rhs)

    @staticmethod
    def backward(ctx, grad):
        return ctx.solve_transposed(grad), None, None


@dataclass(frozen=True)
class _Operator:
    """A of A y = b: its batched ``matvec`` and, when A is a tensor, the ``matrix``."""

    matvec: Matvec
    matrix: torch.Tensor | None


def _direct(name: str, op: _Operator, b: torch.Tensor, factor: Callable
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A direct solve per element: (y, info, elements with NaN/inf in A). Those elements
    solve the identity instead (so LAPACK never sees them) and get y = NaN."""
    matrix = op.matrix
    if matrix is None:
        raise ValueError(f"solver={name}() needs A as a tensor (*batch, n, n); for a matvec "
                         f"use CG(...) or GMRES(...)")
    n = b.shape[-1]
    batch = torch.broadcast_shapes(matrix.shape[:-2], b.shape[:-1])
    bad = ~torch.isfinite(matrix.detach()).flatten(-2).all(-1).expand(batch)
    eye = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    safe = torch.where(bad[..., None, None], eye, matrix.expand(*batch, n, n))
    y, info = factor(safe, b.expand(*batch, n).unsqueeze(-1))
    return torch.where(bad.unsqueeze(-1), float("nan"), y.squeeze(-1)), info, bad


def _direct_status(op: _Operator, b: torch.Tensor, y: torch.Tensor, info: torch.Tensor,
                   bad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(status, ‖b − A y‖) of a direct solve: DIVERGED where the factorization failed."""
    res = _norm((b - op.matvec(y)).detach())
    status = torch.where(torch.isfinite(res), int(Status.CONVERGED), int(Status.NONFINITE))
    return torch.where((info == 0) | bad, status, int(Status.DIVERGED)), res


@dataclass(frozen=True)
class LU:
    """Direct solve by LU factorization with partial pivoting: A = PLU, y = U⁻¹L⁻¹Pᵀb.

    For any square A given as a tensor ``(*batch, n, n)``; a singular A is ``DIVERGED`` for
    its element. One step; ``max_steps`` is not used. Gradients differentiate the LU solve
    itself (∂L/∂b = u, ∂L/∂A = −u yᵀ with Aᵀu = ∂L/∂y), whatever the adjoint.

    Example::

        >>> import torch
        >>> from diffnum.solve import LU, linear_solve
        >>> A = torch.tensor([[0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
        >>> linear_solve(A, torch.tensor([2.0, 3.0], dtype=torch.float64), solver=LU()).value
        tensor([2., 1.], dtype=torch.float64)
    """

    def _solve(self, op: _Operator, b: torch.Tensor, x0: torch.Tensor | None, max_steps: int,
               adjoint: ImplicitAdjoint | UnrollAdjoint
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        y, info, bad = _direct("LU", op, b, lambda A, rhs: torch.linalg.solve_ex(A, rhs))
        status, res = _direct_status(op, b, y, info, bad)
        return y, status, torch.ones_like(status), res


@dataclass(frozen=True)
class Cholesky:
    """Direct solve of a symmetric positive definite A by Cholesky: A = LLᵀ, y = L⁻ᵀL⁻¹b.

    About half the work of :class:`LU`; reads only the lower triangle of A. An element whose
    A is not positive definite (the factorization fails) is ``DIVERGED``. One step;
    ``max_steps`` is not used. Gradients by the implicit function theorem with the
    factorization reused: y* + (s − stop_gradient(s)), s = A⁻¹(b − A y*), so
    ∂L/∂b = u and ∂L/∂A = −u yᵀ with A u = ∂L/∂y, whatever the adjoint.

    Example::

        >>> import torch
        >>> from diffnum.solve import Cholesky, linear_solve
        >>> A = torch.tensor([[4.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([2.0, 1.0], dtype=torch.float64)
        >>> linear_solve(A, b, solver=Cholesky()).value
        tensor([0.5000, 0.0000], dtype=torch.float64)
    """

    def _solve(self, op: _Operator, b: torch.Tensor, x0: torch.Tensor | None, max_steps: int,
               adjoint: ImplicitAdjoint | UnrollAdjoint
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        factors = []

        def factor(A: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            L, info = torch.linalg.cholesky_ex(A.detach())
            factors.append(L)
            return torch.cholesky_solve(rhs.detach(), L), info

        y, info, bad = _direct("Cholesky", op, b, factor)
        status, res = _direct_status(op, b, y.detach(), info, bad)
        if torch.is_grad_enabled():
            with torch.enable_grad():
                residual = b - op.matvec(y.detach())
            if residual.requires_grad:
                # Elements without a factorization add exact zeros (not NaN) to gradients.
                ok = ~bad & (info == 0)
                eye = torch.eye(b.shape[-1], dtype=y.dtype, device=y.device)
                L = torch.where(ok[..., None, None], factors[0], eye)
                rhs = torch.where(ok.unsqueeze(-1), residual, 0.0)
                s = torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)
                y = y.detach() + (s - s.detach())
        return y, status, torch.ones_like(status), res


@dataclass(frozen=True)
class Pinv:
    """Minimum-norm least-squares solve by the pseudoinverse: y = A⁺b, A⁺ = V Σ⁺ Uᵀ.

    For a singular or rank-deficient A (an underdetermined fit, a Hessian with a null space):
    of all y minimizing ‖b − A y‖ the one of least norm. Singular values below
    ``rtol``·σ_max count as zero (``None``: torch's default, n·eps of the dtype). Every
    element is ``CONVERGED`` (the least-squares solution always exists); ``residual_norm``
    says whether b was in the range of A. One step, about ten times an LU in cost; gradients
    differentiate the pseudoinverse (defined where the rank does not change).

    Example::

        >>> import torch
        >>> from diffnum.solve import Pinv, linear_solve
        >>> A = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # singular
        >>> y = linear_solve(A, torch.tensor([2.0, 2.0], dtype=torch.float64), solver=Pinv()).value
        >>> y.round(decimals=12).tolist()  # the least-norm of the solutions y₁ + y₂ = 2
        [1.0, 1.0]
    """

    rtol: float | None = None

    def __post_init__(self) -> None:
        if self.rtol is not None:
            check_tolerance("rtol", self.rtol, torch.float64)

    def pinv(self, A: torch.Tensor, *, hermitian: bool = False) -> torch.Tensor:
        """A⁺ with this solver's cut-off."""
        return torch.linalg.pinv(A, rtol=self.rtol, hermitian=hermitian)

    def _solve(self, op: _Operator, b: torch.Tensor, x0: torch.Tensor | None, max_steps: int,
               adjoint: ImplicitAdjoint | UnrollAdjoint
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        def factor(A: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.pinv(A) @ rhs, torch.zeros(A.shape[:-2], dtype=torch.int32)

        y, info, bad = _direct("Pinv", op, b, factor)
        status, res = _direct_status(op, b, y, info.to(b.device), bad)
        return y, status, torch.ones_like(status), res


class _Krylov:
    """CG and GMRES: an iterative solve to ‖b − A y‖ <= max(atol, rtol·‖b‖)."""

    rtol: float | None
    atol: float | None
    preconditioner: Matvec | None
    symmetric: bool = False  # A = Aᵀ assumed: the transposed solve is the same solve

    def _check(self) -> None:
        check_tolerances(self.rtol, self.atol)
        if self.rtol == 0 and self.atol is None:
            raise ValueError("rtol = 0 needs atol > 0 (atol defaults to 0): with both 0 the "
                             "solve could never converge")
        if self.preconditioner is not None and not callable(self.preconditioner):
            raise TypeError(f"preconditioner must be None or a callable r -> M r, got "
                            f"{type(self.preconditioner).__name__}")

    def _iterate(self, matvec: Matvec, b: torch.Tensor, x: torch.Tensor,
                 precondition: Matvec, tol: torch.Tensor, max_steps: int):
        raise NotImplementedError

    def _run(self, matvec: Matvec, b: torch.Tensor, x0: torch.Tensor, precondition: Matvec,
             max_steps: int):
        """The iteration on b/σ (σ a power of two near max|b|, per element) so that no norm
        or dot product over- or underflows for b ~ 1e±200; y = σ·y', residual = σ·res'. An
        element with b = 0 starts, and so ends, at y = 0."""
        rtol = check_tolerance("rtol", self.rtol, b.dtype)
        atol = 0.0 if self.atol is None else check_tolerance("atol", self.atol, b.dtype)
        scale = _power_of_two_scale(b)
        zero_b = (b.detach() == 0).all(dim=-1, keepdim=True)
        b = b / scale.unsqueeze(-1)
        x0 = torch.where(zero_b, 0.0, x0 / scale.unsqueeze(-1))
        tol = torch.maximum(rtol * _norm(b.detach()), atol / scale)
        y, status, steps, res = self._iterate(matvec, b, x0, precondition, tol, max_steps)
        return y * scale.unsqueeze(-1), status, steps, res * scale

    def _solve(self, op: _Operator, b: torch.Tensor, x0: torch.Tensor | None, max_steps: int,
               adjoint: ImplicitAdjoint | UnrollAdjoint
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        precondition = (_checked_operator("preconditioner", self.preconditioner)
                        if self.preconditioner is not None else (lambda r: r))
        x0 = torch.zeros_like(b) if x0 is None else x0.expand_as(b)
        if isinstance(adjoint, UnrollAdjoint):
            return self._run(op.matvec, b, x0, precondition, max_steps)
        with torch.no_grad():
            y, status, steps, res = self._run(op.matvec, b.detach(), x0.detach(), precondition,
                                              max_steps)
        if torch.is_grad_enabled():
            with torch.enable_grad():
                residual = b - op.matvec(y.detach())
            if residual.requires_grad:
                y = self._attach(residual, op, y, precondition, max_steps)
        return y, status, steps, res

    def _attach(self, residual: torch.Tensor, op: _Operator, y: torch.Tensor,
                precondition: Matvec, max_steps: int) -> torch.Tensor:
        """y* + (s − stop_gradient(s)), s = A⁻¹ ρ(θ), A applied as a constant operator; the
        backward solves Aᵀ u = v with the same method (without the preconditioner, whose
        transpose is unknown, unless A is symmetric)."""
        matvec, matrix = op.matvec, op.matrix

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
                return self._run(const_matvec, rhs, torch.zeros_like(rhs), precondition,
                                 max_steps)[0]

        def solve_transposed(rhs: torch.Tensor) -> torch.Tensor:
            if self.symmetric:
                return solve(rhs)
            with torch.no_grad():
                return self._run(const_rmatvec, rhs, torch.zeros_like(rhs), lambda r: r,
                                 max_steps)[0]

        s = _OperatorSolve.apply(residual, solve, solve_transposed)
        return y.detach() + (s - s.detach())


@dataclass(frozen=True)
class CG(_Krylov):
    """Preconditioned conjugate gradients for symmetric positive definite A (and M ≈ A⁻¹).

    x ← x + α p, r ← r − α A p, α = rᵀz / pᵀAp, z = M r, p ← z + β p, β = r₊ᵀz₊ / rᵀz. An
    element is CONVERGED when ‖b − A y‖₂ <= max(atol, rtol·‖b‖₂); a curvature pᵀAp <= 0
    (A or M not positive definite) is DIVERGED for that element.

    Args:
        rtol: relative tolerance (``None``: 1e-8 float64, 1e-4 float32).
        atol: absolute floor (``None``: 0, as scipy >= 1.12); rtol = 0 needs atol > 0.
        preconditioner: ``None`` or a batched ``r -> M r``, M ≈ A⁻¹ symmetric positive
            definite.

    Example::

        >>> import torch
        >>> from diffnum.solve import CG, linear_solve
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> sol = linear_solve(A, b, solver=CG(rtol=1e-12, preconditioner=lambda r: r / 4))
        >>> torch.allclose(sol.value, torch.linalg.solve(A, b)), int(sol.steps)
        (True, 2)
    """

    rtol: float | None = None
    atol: float | None = None
    preconditioner: Matvec | None = None
    symmetric = True

    def __post_init__(self) -> None:
        self._check()

    def _iterate(self, matvec, b, x, precondition, tol, max_steps):
        return _cg(matvec, b, x, precondition, tol, max_steps)


@dataclass(frozen=True)
class GMRES(_Krylov):
    """Right-preconditioned restarted GMRES(restart): A M u = b, y = x₀ + M u.

    Each cycle builds an Arnoldi basis of up to ``restart`` vectors (modified Gram–Schmidt)
    and takes the u minimizing ‖b − A(x₀ + M V u)‖₂ over it; for any square A. Same
    convergence test as :class:`CG`.

    Args:
        rtol: relative tolerance, as :class:`CG`.
        atol: absolute floor, as :class:`CG`.
        restart: Krylov basis size per cycle, 1 <= restart <= 10⁴ (memory restart + 1
            vectors of length n per element).
        preconditioner: ``None`` or a batched ``r -> M r``, M ≈ A⁻¹.

    Example::

        >>> import torch
        >>> from diffnum.solve import GMRES, linear_solve
        >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([3.0, 3.0], dtype=torch.float64)
        >>> linear_solve(A, b, solver=GMRES(restart=2)).value.round(decimals=12).tolist()
        [1.0, 1.0]
    """

    rtol: float | None = None
    atol: float | None = None
    restart: int = 30
    preconditioner: Matvec | None = None

    def __post_init__(self) -> None:
        self._check()
        check_count("restart", self.restart, high=_MAX_RESTART)

    def _iterate(self, matvec, b, x, precondition, tol, max_steps):
        return _gmres(matvec, b, x, precondition, tol, max_steps, self.restart)


_SOLVERS = (LU, Cholesky, Pinv, CG, GMRES)


def linear_solve(A: torch.Tensor | Matvec, b: torch.Tensor, *,
                 solver: LU | Cholesky | Pinv | CG | GMRES | None = None,
                 max_steps: int | None = None, x0: torch.Tensor | None = None,
                 adjoint: ImplicitAdjoint | UnrollAdjoint | None = None,
                 throw: bool = False) -> Solution:
    """Solve A y = b per batch element; differentiable in A (or what its matvec captures) and b.

    ``solver`` is an object: :class:`LU` (default; A a tensor ``(*batch, n, n)``),
    :class:`Cholesky` (A symmetric positive definite tensor), :class:`Pinv` (minimum-norm
    least squares, A singular allowed), :class:`CG` (preconditioned
    conjugate gradients; A symmetric positive definite) or :class:`GMRES` (right-preconditioned
    GMRES(restart)); the iterative ones hold their tolerances and preconditioner. ``A`` is a
    tensor or a batched matvec ``y -> A y`` (iterative solvers only).

    Tolerances (iterative solvers): an element is CONVERGED when ‖b − A y‖₂ <=
    max(atol, rtol·‖b‖₂), i.e. relative to ‖b‖. Norms are computed with scaling, and the
    iteration runs on b divided by a power of two near max|b|, so b ~ 1e±200 solves as
    accurately as b ~ 1. An element with b = 0 gets y = 0 exactly (CONVERGED, whatever
    ``x0``). ``max_steps`` (default min(10 n, 10⁶)) bounds the iterations (for GMRES, Arnoldi
    steps over all cycles); direct solvers take one step.

    Status is per batch element: NaN or ±inf in A (or from the matvec or preconditioner) makes
    that element NONFINITE while the others are solved exactly as they would be alone; no
    torch/LAPACK error is raised for it. b and x0 must be finite.

    Gradients of the iterative solvers with :class:`ImplicitAdjoint` (default):
    y* + (s − stop_gradient(s)) with s = A⁻¹(b − A_θ y*), so ∂L/∂θ = uᵀ ∂_θ(b − A_θ y*) with
    Aᵀ u = ∂L/∂y*, one more iterative solve in backward, to the same tolerances (the
    transposed matvec of a callable A comes from its VJP; GMRES's backward runs without the
    preconditioner, whose transpose is unknown); :class:`UnrollAdjoint` backpropagates
    through the iterations. The direct solvers differentiate their factorization's solve.

    Returns:
        :class:`Solution` with ``residual_norm`` = ‖b − A y*‖₂ and ``stats["solver"]``, the
        solver's class name; ``status`` DIVERGED marks a singular matrix (LU), a matrix that
        is not positive definite (Cholesky) or a non-positive curvature pᵀAp (CG), NONFINITE
        a NaN/inf in the element's A, matvec or iterates (its ``value`` is then NaN or
        meaningless).

    Example::

        >>> import torch
        >>> from diffnum.solve import CG, linear_solve
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> sol = linear_solve(A, b, solver=CG())
        >>> torch.allclose(sol.value, torch.linalg.solve(A, b)), bool(sol.converged)
        (True, True)
    """
    solver = LU() if solver is None else solver
    if not isinstance(solver, _SOLVERS):
        raise TypeError(f"solver must be LU(), Cholesky(), Pinv(), CG(...) or GMRES(...), got "
                        f"{type(solver).__name__}")
    op, b = _checked_system(A, b)
    n = b.shape[-1]
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    check_adjoint(adjoint)
    max_steps = (min(10 * n, MAX_STEPS_LIMIT) if max_steps is None
                 else check_max_steps(max_steps))
    check_flag("throw", throw)
    if x0 is not None:
        real_floating_dtype("x0", x0)
        check_same_dtype_device({"b": b, "x0": x0})
        if not _broadcasts_to(x0.shape, b.shape):
            raise ValueError(f"x0 must broadcast to the shape of b, {tuple(b.shape)}, "
                             f"got {tuple(x0.shape)}")
        check_finite("x0", x0)
    y, status, steps, res = solver._solve(op, b, x0, max_steps, adjoint)
    solution = Solution(y, status, steps, res, {"solver": type(solver).__name__})
    if throw:
        raise_if_failed("linear_solve", solution)
    return solution


def _checked_system(A: Any, b: Any) -> tuple[_Operator, torch.Tensor]:
    """b checked (a finite real floating tensor ``(*batch, n)``) and A as an operator."""
    real_floating_dtype("b", b)
    if b.ndim == 0 or b.shape[-1] == 0:
        raise ValueError(f"b must have shape (*batch, n) with n >= 1 unknowns, "
                         f"got {tuple(b.shape)}")
    check_finite("b", b)
    n = b.shape[-1]
    if isinstance(A, torch.Tensor):
        real_floating_dtype("A", A)
        check_same_dtype_device({"b": b, "A": A})
        if A.ndim < 2 or A.shape[-1] != n or A.shape[-2] != n:
            raise ValueError(f"A must have shape (*batch, n, n) with n = {n} from b, "
                             f"got {tuple(A.shape)}")
        matrix = A  # NaN/inf in A is not an input error: that element is NONFINITE
        return _Operator(lambda y: (matrix @ y.unsqueeze(-1)).squeeze(-1), matrix), b
    if callable(A):
        return _Operator(_checked_operator("A", A), None), b
    raise TypeError(f"A must be a tensor or a callable matvec, got {type(A).__name__}")


def operator_solve(rhs: torch.Tensor, solve: Callable, solve_transposed: Callable) -> Any:
    """``_OperatorSolve`` for tests (gradcheck of the custom backward)."""
    return _OperatorSolve.apply(rhs, solve, solve_transposed)
