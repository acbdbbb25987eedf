"""The meta-factorization engine: projector equation, then reconstruction equation.

Given A (m×n), a column factor F (m×k), a row factor H (n×l) and test matrices
B (m×k'), D (n×l'), solve

    projector equation      F Yᵀ F = F,   Hᵀ X Hᵀ = Hᵀ
    reconstruction equation F G Hᵀ = A

with Yᵀ = (BᵀF)⁺ Bᵀ, X = D (HᵀD)⁺ and the general Penrose solution
G = Yᵀ A X + W − Yᵀ F W Hᵀ X (Karpowicz, *A theory of meta-factorization*).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from diffnum._core.status import Status, StatusResult, worst_status
from diffnum._core.summary import OneLineRepr
from diffnum.factor._checks import (
    check_batches,
    check_iterations,
    check_matrices,
    check_tolerance,
)


class RankDeficiencyWarning(UserWarning):
    """A factor or a projector core is numerically rank deficient or too ill-conditioned
    for the identities to hold to working precision (the message says which).

    Example::

        >>> import warnings, torch
        >>> import diffnum.factor as df
        >>> A = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> F = A[:, :1].repeat(1, 2)  # two equal columns: BᵀF = FᵀF is singular
        >>> H = torch.eye(4, dtype=torch.float64)[:, :2]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = df.meta_factorize(A, F, H)
        >>> any(issubclass(w.category, df.RankDeficiencyWarning) for w in caught)
        True
    """


def _shown(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _check_tensor_fields(obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


@dataclass(frozen=True)
class FactorizationResiduals:
    """Relative residuals of a :class:`MetaFactorization`, one value per batch element.

    ``projector_F`` = ‖F Yᵀ F − F‖/‖F‖, ``projector_H`` = ‖Hᵀ X Hᵀ − Hᵀ‖/‖H‖,
    ``reconstruction`` = ‖A − F G Hᵀ‖/‖A‖ (Frobenius norms).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> res = df.svd(A, k=5).residuals()
        >>> [bool(r < 1e-12) for r in (res.projector_F, res.projector_H, res.reconstruction)]
        [True, True, True]
    """

    projector_F: torch.Tensor
    projector_H: torch.Tensor
    reconstruction: torch.Tensor

    def __post_init__(self) -> None:
        _check_tensor_fields(self, ("projector_F", "projector_H", "reconstruction"))


@dataclass(frozen=True, repr=False)
class MetaFactorization(StatusResult, OneLineRepr):
    """A ≈ F G Hᵀ with the {1}-inverses Yᵀ of F and X of Hᵀ that produced the core G.

    Shapes (leading batch dimensions omitted): ``A`` m×n, ``F`` m×k, ``G`` k×l,
    ``H`` n×l, ``Y`` m×k, ``X`` n×l. ``info`` holds recipe-specific extras
    (pivots, selected indices, sketches); ``rank_deficient`` records that the
    projector equation fell back to a truncated pseudoinverse — not a failure: the
    identities then hold on its range, which is the answer for a rank-deficient factor.
    ``status`` (int64 :class:`~diffnum.Status` codes, shape = the batch shape of ``G``;
    all ``CONVERGED`` when not given) is ``ILL_CONDITIONED`` where F Yᵀ F = F or
    Hᵀ X Hᵀ = Hᵀ fails by more than √eps (an ill-conditioned BᵀF or HᵀD, or a test matrix
    that misses part of the range) and ``NONFINITE`` where G is not finite. Did it fail?
    ``converged``, ``all_converged``, ``failures()``, ``describe()`` and
    ``raise_if_failed()``, as every result (:class:`~diffnum.Status` protocol).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> fac = df.svd(torch.randn(30, 20, dtype=torch.float64), k=5)
        >>> fac.F.shape, fac.G.shape, fac.H.shape, fac.rank_deficient, fac.failures()
        (torch.Size([30, 5]), torch.Size([5, 5]), torch.Size([20, 5]), False, [])
    """

    A: torch.Tensor
    F: torch.Tensor
    G: torch.Tensor
    H: torch.Tensor
    Y: torch.Tensor
    X: torch.Tensor
    rank_deficient: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    status: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_tensor_fields(self, ("A", "F", "G", "H", "Y", "X"))
        if not isinstance(self.rank_deficient, bool):
            raise TypeError(f"rank_deficient must be a bool, got "
                            f"{type(self.rank_deficient).__name__}")
        if not isinstance(self.info, dict):
            raise TypeError(f"info must be a dict, got {type(self.info).__name__}")
        batch = tuple(self.G.shape[:-2])
        if self.status is None:
            object.__setattr__(self, "status", torch.zeros(batch, dtype=torch.int64,
                                                           device=self.G.device))
        elif (not isinstance(self.status, torch.Tensor) or self.status.is_floating_point()
              or self.status.is_complex() or self.status.dtype == torch.bool
              or tuple(self.status.shape) != batch):
            raise TypeError(f"status must be None or an integer tensor of G's batch shape "
                            f"{batch}, got {_shown(self.status)}")

    def _detail(self, index: tuple[int, ...]) -> str:
        res = self.residuals()
        parts = []
        for name in ("projector_F", "projector_H", "reconstruction"):
            value = getattr(res, name).expand(self.status.shape)  # F, H may be unbatched
            parts.append(f"{name}={float(value[index]):.3e}")
        return ", ".join(parts)

    def reconstruct(self) -> torch.Tensor:
        """F G Hᵀ."""
        return (self.F @ self.G) @ self.H.mT

    def projectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The oblique projectors (P_F, P_H) = (F Yᵀ, X Hᵀ) onto range(F) and range(H).

        They are dense m×m and n×n matrices; form them only for small problems.
        """
        return self.F @ self.Y.mT, self.X @ self.H.mT

    def residuals(self) -> FactorizationResiduals:
        """Relative projector and reconstruction residuals (per batch element)."""

        def rel(err: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            ref_norm = torch.linalg.matrix_norm(ref)
            return torch.linalg.matrix_norm(err) / torch.where(ref_norm > 0, ref_norm, 1.0)

        F, H = self.F, self.H
        return FactorizationResiduals(
            projector_F=rel(F @ (self.Y.mT @ F) - F, F),
            projector_H=rel((H.mT @ self.X) @ H.mT - H.mT, H),
            reconstruction=rel(self.A - self.reconstruct(), self.A),
        )


def _default_rtol(M: torch.Tensor) -> float:
    return max(M.shape[-2:]) * torch.finfo(M.dtype).eps


def _times_pinv(rhs: torch.Tensor, M: torch.Tensor, rcond: float | None,
                name: str) -> tuple[torch.Tensor, bool]:
    """``rhs @ M⁺`` by a QR of M (tall orientation) and one triangular solve.

    M is p×q. Tall (p ≥ q): M = QR, M⁺ = R⁻¹Qᵀ. Wide: Mᵀ = QR, M⁺ = QR⁻ᵀ.
    When |diag R| reveals rank < min(p, q), fall back to a truncated pseudoinverse
    and warn; returns the product and whether the fallback was taken.
    """
    rtol = _default_rtol(M) if rcond is None else rcond
    tall = M.shape[-2] >= M.shape[-1]
    Q, R = torch.linalg.qr(M if tall else M.mT)
    diag = R.diagonal(dim1=-2, dim2=-1).abs()
    largest = diag.amax(dim=-1, keepdim=True)
    if bool((diag <= rtol * largest).any()) or bool((largest == 0).any()):
        warnings.warn(
            f"{name} is numerically rank deficient (min |diag R| / max |diag R| <= {rtol:.1e}); "
            "using a truncated pseudoinverse, so the projector identities hold only on its range",
            RankDeficiencyWarning,
            stacklevel=4,
        )
        return rhs @ torch.linalg.pinv(M, rtol=rtol, hermitian=False), True
    if tall:
        # rhs R⁻¹ Qᵀ
        return torch.linalg.solve_triangular(R, rhs, upper=True, left=False) @ Q.mT, False
    # rhs Q R⁻ᵀ
    return torch.linalg.solve_triangular(R.mT, rhs @ Q, upper=False, left=False), False


def _dual_basis(F: torch.Tensor, B: torch.Tensor, rcond: float | None,
                name: str) -> tuple[torch.Tensor, bool]:
    """Y with Yᵀ = (BᵀF)⁺ Bᵀ, so that F Yᵀ F = F when BᵀF has full column rank.

    When BᵀF is square and B has full rank, (BᵀF)⁻¹Bᵀ = (Q_BᵀF)⁻¹Q_Bᵀ for B = Q_B R_B:
    solving with Q_BᵀF keeps κ(B) out of the rounding error (for B = F it is R_F, where
    BᵀF = FᵀF would square κ(F)). Oversampled B (k' > k) uses BᵀF itself, as defined.
    """
    if B.shape[-1] == F.shape[-1]:
        Q, R = torch.linalg.qr(B)
        diag = R.diagonal(dim1=-2, dim2=-1).abs()
        rtol = _default_rtol(B) if rcond is None else rcond
        if bool((diag > rtol * diag.amax(dim=-1, keepdim=True)).all()):
            return _times_pinv(Q, F.mT @ Q, rcond, name)
    return _times_pinv(B, F.mT @ B, rcond, name)


def _warn_if_projector_fails(F: torch.Tensor, Y: torch.Tensor, side: str
                             ) -> torch.Tensor | None:
    """Check F Yᵀ F = F after the solve (O(mk²), small next to YᵀAX) and warn when it fails;
    returns where it fails (bool, per batch element of F Yᵀ F; None for an empty batch).

    The QR rank test above only sees exact deficiency; an ill-conditioned BᵀF (κ ≳ 1/√eps)
    or a B that does not capture range(F) passes it and still breaks the identity.
    """
    if F.numel() == 0:  # an empty batch has nothing to check
        return None
    F, Y = F.detach(), Y.detach()
    ref = torch.linalg.matrix_norm(F)
    err = torch.linalg.matrix_norm(F @ (Y.mT @ F) - F) / torch.where(ref > 0, ref, 1.0)
    worst = float(err.max())
    failed = ~(err <= torch.finfo(F.dtype).eps ** 0.5)  # NaN fails too
    if worst > torch.finfo(F.dtype).eps ** 0.5:
        test, core = ("B", "BᵀF") if side == "F" else ("D", "HᵀD")
        warnings.warn(
            f"the projector equation holds only to {worst:.1e} on the {side} side: "
            f"{core} is ill-conditioned or {test} does not capture range({side}) "
            f"({test} needs at least rank({side}) well-spread columns)",
            RankDeficiencyWarning,
            stacklevel=3,
        )
    return failed


def _check_rows(name: str, M: torch.Tensor, rows: int, row_name: str) -> None:
    if M.shape[-2] != rows:
        raise ValueError(
            f"{name} must have {rows} rows (the {row_name} of A), got shape {tuple(M.shape)}"
        )


def meta_factorize(
    A: torch.Tensor,
    F: torch.Tensor,
    H: torch.Tensor,
    B: torch.Tensor | None = None,
    D: torch.Tensor | None = None,
    W: torch.Tensor | None = None,
    *,
    rtol: float | None = None,
    refine: int = 0,
    info: dict[str, Any] | None = None,
    throw: bool = False,
) -> MetaFactorization:
    """Factor A = F G Hᵀ by solving the projector and the reconstruction equations.

    Projector equation: Yᵀ = (BᵀF)⁺ Bᵀ and X = D (HᵀD)⁺, so that F Yᵀ F = F and
    Hᵀ X Hᵀ = Hᵀ (computed by QRs and triangular solves, never an explicit inverse;
    B = F and D = H by default). Reconstruction equation, general Penrose solution:

        G = Yᵀ A X + W − Yᵀ F W Hᵀ X,

    which is Yᵀ A X whenever YᵀF = I and HᵀX = I (then W has no effect). The
    factorization is exact, A = (F Yᵀ) A (X Hᵀ), iff range(A) ⊆ range(F) and
    range(Aᵀ) ⊆ range(H).

    Args:
        A: (..., m, n) matrix to factor.
        F: (..., m, k) column factor. H: (..., n, l) row factor.
        B: (..., m, k') test matrix for the column side, k' ≥ k (default F).
        D: (..., n, l') test matrix for the row side (default H).
        W: (..., k, l) arbitrary matrix of the general solution (default 0).
        rtol: relative tolerance in [0, 1) below which BᵀF or HᵀD is treated as rank
            deficient (default max(shape)·eps); then a truncated pseudoinverse is
            used and a :class:`RankDeficiencyWarning` is issued.
        refine: steps (at most 1000) of iterative refinement of the core,
            G ← G + Yᵀ(A − F G Hᵀ)X,
            each kept only where it lowers ‖A − F G Hᵀ‖ (two more O(mnk) passes a step).
            It recovers the digits that G = YᵀAX loses to a moderately ill-conditioned
            F or H (κ ≲ 1e4); beyond that the residual's own rounding, amplified by
            ‖Y‖‖X‖, sets the floor and refinement stops helping.
        info: extras to store on the result (recipes record pivots, indices).
        throw: raise a :class:`~diffnum.ResultError` naming every batch element whose
            status is not ``CONVERGED`` (a projector identity fails by more than √eps, or G
            is not finite); the truncated-pseudoinverse fallback alone is not a failure.

    Returns:
        A :class:`MetaFactorization`, batched over the broadcast leading dims, with a
        ``status`` per batch element.

    Warns:
        RankDeficiencyWarning: when BᵀF or HᵀD is numerically rank deficient (then a
            truncated pseudoinverse is used), and when, after the solve, F Yᵀ F = F or
            Hᵀ X Hᵀ = Hᵀ fails by more than √eps (ill-conditioned BᵀF, or a B that misses
            part of range(F)).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> U, S, Vh = torch.linalg.svd(A)
        >>> fac = df.meta_factorize(A, U[:, :5], Vh[:5].mT)  # F, H: the leading singular vectors
        >>> fac.G.shape, bool(torch.allclose(fac.G.diagonal(), S[:5]))
        (torch.Size([5, 5]), True)
    """
    B = F if B is None else B
    D = H if D is None else D
    check_matrices({"A": A, "F": F, "H": H, "B": B, "D": D}
                   | ({} if W is None else {"W": W}))
    m, n = A.shape[-2:]
    _check_rows("F", F, m, "row count m")
    _check_rows("H", H, n, "column count n")
    _check_rows("B", B, m, "row count m")
    _check_rows("D", D, n, "column count n")
    batch = check_batches({"A": A, "F": F, "H": H, "B": B, "D": D})
    if W is not None:
        k, l = F.shape[-1], H.shape[-1]
        if W.shape[-2:] != (k, l):
            raise ValueError(f"W must be (..., {k}, {l}) to match F and H, got {tuple(W.shape)}")
        try:
            widened = torch.broadcast_shapes(batch, W.shape[:-2]) != batch
        except RuntimeError:
            widened = True
        if widened:
            raise ValueError(f"W's batch dimensions {tuple(W.shape[:-2])} must broadcast to "
                             f"those of A, F, H ({tuple(batch)})")
    rcond = check_tolerance("rtol", rtol)
    refine = check_iterations("refine", refine)
    if not isinstance(throw, bool):
        raise TypeError(f"throw must be a bool, got {type(throw).__name__}")
    if info is not None and not isinstance(info, Mapping):
        raise TypeError(f"info must be a dict or None, got {type(info).__name__}")
    # Y = B (FᵀB)⁺ is the transpose of Yᵀ = (BᵀF)⁺Bᵀ; X = D (HᵀD)⁺.
    Y, deficient_f = _dual_basis(F, B, rcond, "BᵀF (the column-side projector core)")
    X, deficient_h = _dual_basis(H, D, rcond, "HᵀD (the row-side projector core)")
    failed_f = _warn_if_projector_fails(F, Y, "F")
    failed_h = _warn_if_projector_fails(H, X, "H")
    G = (Y.mT @ A) @ X
    if W is not None:
        G = G + W - (Y.mT @ F) @ W @ (H.mT @ X)
    for _ in range(refine):
        # Keep a step only where it lowers the residual: with ill-conditioned F, H the
        # rounding in A − FGHᵀ is amplified by ‖Y‖‖X‖ and a step can make things worse.
        residual = A - (F @ G) @ H.mT
        candidate = G + (Y.mT @ residual) @ X
        before = torch.linalg.matrix_norm(residual)
        after = torch.linalg.matrix_norm(A - (F @ candidate) @ H.mT)
        G = torch.where((after < before)[..., None, None], candidate, G)
    batch = G.shape[:-2]
    no = torch.zeros(batch, dtype=torch.bool, device=G.device)
    projector = no
    for failed in (failed_f, failed_h):
        if failed is not None:
            projector = projector | failed.to(G.device).broadcast_to(batch)
    status = worst_status((~torch.isfinite(G.detach()).flatten(-2).all(-1), Status.NONFINITE),
                          (projector, Status.ILL_CONDITIONED))
    result = MetaFactorization(A=A, F=F, G=G, H=H, Y=Y, X=X,
                               rank_deficient=deficient_f or deficient_h, info=dict(info or {}),
                               status=status)
    if throw:
        result.raise_if_failed("meta_factorize")
    return result
