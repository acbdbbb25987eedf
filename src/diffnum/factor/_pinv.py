"""Moore–Penrose pseudoinverses: SVD, CR and randomized routes; Strang's three formulas."""

from __future__ import annotations

import warnings

import torch

from diffnum._core import check_int_in_range, check_matrix, check_one_of
from diffnum.factor._checks import (
    check_batches,
    check_generator,
    check_matrices,
    check_oversample,
    check_tolerance,
)
from diffnum.factor._engine import RankDeficiencyWarning
from diffnum.factor._recipes import cr, numerical_rank
from diffnum.factor._sketch import sketch_matrix

PINV_METHODS = ("svd", "cr", "randomized")


def _svd_pinv_and_rank(A: torch.Tensor, rtol: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A⁺ with singular values ≤ rtol·σ₁ dropped, and the number kept per batch element."""
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    if rtol is None:
        rtol = max(A.shape[-2:]) * torch.finfo(A.dtype).eps
    keep = S > rtol * S[..., :1]
    S_inv = torch.where(keep, 1.0 / torch.where(keep, S, 1.0), 0.0)
    return (Vh.mT * S_inv.unsqueeze(-2)) @ U.mT, keep.sum(dim=-1)


def _svd_pinv(A: torch.Tensor, rtol: float | None) -> torch.Tensor:
    return _svd_pinv_and_rank(A, rtol)[0]


def pinv(
    A: torch.Tensor,
    method: str = "svd",
    *,
    rtol: float | None = None,
    k: int | None = None,
    oversample: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Moore–Penrose pseudoinverse A⁺ (..., n, m) by one of three routes.

    ``svd``: A⁺ = V Σ⁺ Uᵀ, singular values ≤ rtol·σ₁ treated as zero (rtol defaults
    to max(m, n)·eps, as ``torch.linalg.pinv``).
    ``cr``: with the full-rank factorization A = C R of :func:`cr`,
    A⁺ = Rᵀ (Cᵀ A Rᵀ)⁻¹ Cᵀ, evaluated through QRs of C and Rᵀ (``rtol`` is the rank
    tolerance of the column scan; every batch element must have the same rank, and
    :func:`cr` warns when its leftmost pivot columns are ill-conditioned).
    ``randomized``: Strang's formula 3, A⁺ = (PᵀA)⁺ (PᵀAQ) (AQ)⁺ with Gaussian
    sketches P (m×s), Q (n×s), s = min(k + oversample, m, n); exact with probability
    1 when s ≥ rank(A); a warning says when s may be below the rank. ``k`` defaults
    to the numerical rank. ``rtol`` must lie in [0, 1).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> P = df.pinv(A, method="cr")
        >>> bool((A @ P @ A - A).norm() <= 1e-12 * A.norm())  # a Penrose condition
        True
    """
    check_matrix("A", A)
    check_one_of("method", method, PINV_METHODS)
    rtol = check_tolerance("rtol", rtol)
    m, n = A.shape[-2:]
    if k is not None:
        check_int_in_range("k", k, 1, min(m, n))
    check_oversample(oversample)
    check_generator(generator)
    if method == "svd":
        return _svd_pinv(A, rtol)
    if method == "cr":
        factors = cr(A, rtol=rtol)
        # Rᵀ(CᵀARᵀ)⁻¹Cᵀ = Rᵀ(RRᵀ)⁻¹(CᵀC)⁻¹Cᵀ; with C = Q_c T_c and Rᵀ = Q_r T_r this is
        # Q_r T_r⁻ᵀ T_c⁻¹ Q_cᵀ, which never forms CᵀC or RRᵀ and so never squares κ.
        Qc, Tc = torch.linalg.qr(factors.F)
        Qr, Tr = torch.linalg.qr(factors.H)
        core = torch.linalg.solve_triangular(Tc, Qc.mT, upper=True)  # T_c⁻¹ Q_cᵀ
        return Qr @ torch.linalg.solve_triangular(Tr.mT, core, upper=False)
    if k is None:
        k = max(numerical_rank(A, rtol), 1)
    s = min(k + oversample, m, n)
    P = sketch_matrix((*A.shape[:-2], m, s), dtype=A.dtype, device=A.device, generator=generator)
    Q = sketch_matrix((*A.shape[:-2], n, s), dtype=A.dtype, device=A.device, generator=generator)
    PA, AQ = P.mT @ A, A @ Q
    AQ_pinv, AQ_rank = _svd_pinv_and_rank(AQ, rtol)
    if s < min(m, n):
        # Formula 3 needs rank(AQ) = rank(A). If AQ has full column rank s, A's rank may
        # exceed s and the result would be silently wrong: say so.
        if bool((AQ_rank == s).any()):
            warnings.warn(
                f"pinv(method='randomized'): the sketch size s = k + oversample = {s} may be "
                "below rank(A) (AQ has full column rank), so A⁺ may be wrong; raise k",
                RankDeficiencyWarning,
                stacklevel=2,
            )
    return _svd_pinv(PA, rtol) @ (PA @ Q) @ AQ_pinv


def strang_pinv(
    C: torch.Tensor,
    R: torch.Tensor,
    formula: int = 1,
    P: torch.Tensor | None = None,
    Q: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pseudoinverse of A = C R by Strang's formulas ("The pseudoinverse of A = CR").

    1. A⁺ = R⁺ C⁺ — correct iff C has independent columns and R independent rows.
    2. A⁺ = (C⁺ C R)⁺ (C R R⁺)⁺ — always correct.
    3. A⁺ = (PᵀA)⁺ (PᵀAQ) (AQ)⁺ — correct iff rank(PᵀA) = rank(AQ) = rank(A); P (m×s)
       and Q (n×s) default to Gaussian sketches with s = the inner dimension of C R.

    Formula 1 is returned even where it is wrong: showing where it fails is its point.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> C = A[:, :5]  # A = C R with C five independent columns
        >>> R = torch.linalg.lstsq(C, A).solution
        >>> P = df.strang_pinv(C, R, formula=2)
        >>> bool(torch.allclose(P, torch.linalg.pinv(A), atol=1e-10))
        True
    """
    sketches = {name: M for name, M in (("P", P), ("Q", Q)) if M is not None}
    check_matrices({"C": C, "R": R, **sketches})
    if C.shape[-1] != R.shape[-2]:
        raise ValueError(f"C and R must be conformable (C is ..×{C.shape[-1]}, R must be "
                         f"{C.shape[-1]}×..), got C {tuple(C.shape)} and R {tuple(R.shape)}")
    check_batches({"C": C, "R": R})
    if isinstance(formula, bool) or not isinstance(formula, int):
        raise TypeError(f"formula must be the int 1, 2 or 3, got {type(formula).__name__}")
    if formula not in (1, 2, 3):
        raise ValueError(f"formula must be 1, 2 or 3, got {formula!r}")
    check_generator(generator)
    pinv_ = torch.linalg.pinv
    if formula == 1:
        return pinv_(R) @ pinv_(C)
    if formula == 2:
        return pinv_(pinv_(C) @ C @ R) @ pinv_(C @ R @ pinv_(R))
    A = C @ R
    m, n, s = A.shape[-2], A.shape[-1], C.shape[-1]
    if P is None:
        P = sketch_matrix((*A.shape[:-2], m, s), dtype=A.dtype, device=A.device,
                          generator=generator)
    if Q is None:
        Q = sketch_matrix((*A.shape[:-2], n, s), dtype=A.dtype, device=A.device,
                          generator=generator)
    if P.shape[-2] != m or Q.shape[-2] != n:
        raise ValueError(f"P must have {m} rows and Q {n} rows, got P {tuple(P.shape)} and "
                         f"Q {tuple(Q.shape)}")
    check_batches({"CR": A, "P": P, "Q": Q})
    PA, AQ = P.mT @ A, A @ Q
    return pinv_(PA) @ (PA @ Q) @ pinv_(AQ)
