"""Classical decompositions as instances of the meta-factorization engine."""

from __future__ import annotations

import warnings

import torch

from diffnum._core import check_int_in_range, check_matrix, check_one_of
from diffnum._core.validation import check_nonempty
from diffnum.factor._checks import (
    check_generator,
    check_oversample,
    check_tolerance,
)
from diffnum.factor._engine import MetaFactorization, RankDeficiencyWarning, meta_factorize
from diffnum.factor._select import SELECTION_METHODS, pivoted_gram_schmidt, select_columns
from diffnum.factor._sketch import SKETCHES, sketch_matrix


def numerical_rank(A: torch.Tensor, rtol: float | None = None) -> int:
    """Largest numerical rank over the batch: #{σ_i > rtol·σ₁}, rtol ∈ [0, 1) defaulting to
    max(m, n)·eps; 0 for an empty batch.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> int(df.numerical_rank(A))
        5
    """
    check_matrix("A", A)
    rtol = check_tolerance("rtol", rtol)
    if A.numel() == 0:
        return 0
    S = torch.linalg.svdvals(A.detach())
    if rtol is None:
        rtol = max(A.shape[-2:]) * torch.finfo(A.dtype).eps
    return int((S > rtol * S[..., :1]).sum(dim=-1).max())


def _resolve_k(A: torch.Tensor, k: int | None) -> int:
    if k is None:
        return max(numerical_rank(A), 1)
    return check_int_in_range("k", k, 1, min(A.shape[-2:]))


def svd(A: torch.Tensor, k: int | None = None) -> MetaFactorization:
    """Truncated SVD: F = U_k, H = V_k, B = F, D = H, so G = U_kᵀ A V_k = Σ_k.

    ``k`` defaults to the numerical rank (largest over the batch). At k < rank the
    result is the Eckart–Young best rank-k approximation.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> fac = df.svd(A, k=5)
        >>> bool((A - fac.reconstruct()).norm() <= 1e-12 * A.norm())  # exact at k = rank
        True
    """
    check_matrix("A", A)
    k = _resolve_k(A, k)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return meta_factorize(A, U[..., :, :k], Vh[..., :k, :].mT,
                          info={"singular_values": S})


def _gather_columns(A: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    index = index.expand(*A.shape[:-2], index.shape[-1])
    return torch.gather(A, -1, index.unsqueeze(-2).expand(*A.shape[:-1], index.shape[-1]))


def cpqr(A: torch.Tensor, k: int | None = None) -> MetaFactorization:
    """Column-pivoted QR, A P = Q R: F = Q_{:,1:k}, H = (R_{1:k,:} Pᵀ)ᵀ = Aᵀ Q_k.

    With B = F and D = H the core is G = I_k when k = rank. Pivots are those of
    Businger–Golub (largest remaining column norm), stored in ``info["pivots"]``;
    ``info["R"]`` holds R_{1:k,:} in pivoted column order.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> Q = df.cpqr(A, k=5).F  # k pivoted columns of A, orthonormalized
        >>> bool((A - Q @ (Q.mT @ A)).norm() <= 1e-12 * A.norm())  # exact at k = rank
        True
    """
    check_matrix("A", A)
    k = _resolve_k(A, k)
    Q, pivots = pivoted_gram_schmidt(A, k)
    H = A.mT @ Q
    R = _gather_columns(H.mT, pivots_full(pivots, A.shape[-1]))
    return meta_factorize(A, Q, H, info={"pivots": pivots, "R": R})


def pivots_full(pivots: torch.Tensor, n: int) -> torch.Tensor:
    """Complete the first k pivots to a permutation of range(n) (the rest in original order)."""
    rest_mask = torch.ones(*pivots.shape[:-1], n, dtype=torch.bool, device=pivots.device)
    rest_mask = rest_mask.scatter(-1, pivots, False)
    order = torch.arange(n, device=pivots.device).expand_as(rest_mask)
    # Stable sort puts unchosen columns (key 0) after chosen ones, each group in its order.
    keys = torch.where(rest_mask, n + order, order)
    rest = keys.sort(dim=-1).values
    rest = rest[..., pivots.shape[-1]:] - n
    return torch.cat([pivots, rest], dim=-1)


UTV_CORES = ("svd", "cpqr", "lu", "triangular")


def utv(A: torch.Tensor, k: int | None = None, core: str = "svd") -> MetaFactorization:
    """Two-sided orthogonal (UTV) factorization, then a second factorization of its core.

    First pass: F = Q from column-pivoted QR of A (k columns), H from the QR of
    AᵀF = H T̃, so the engine's core G = FᵀAH = T̃ᵀ is lower triangular (ULV).
    The meta step factors G again and moves its outer factors into F and H:

    - ``svd``: G = U_g Σ V_gᵀ → F U_g, Σ, H V_g (an SVD of A at k = rank; below it, the
      SVD of the two-sided projection F Fᵀ A H Hᵀ);
    - ``cpqr``: G P = Q_g R_g → F Q_g, R_g, H P (URV with an upper-triangular core);
    - ``lu``: G = P L U → F P L, U, H (F no longer orthonormal);
    - ``triangular``: keep G (ULV).

    Every variant is solved again by :func:`meta_factorize` with the new F, H.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> fac = df.utv(A, k=5, core="cpqr")
        >>> bool((A - fac.reconstruct()).norm() <= 1e-12 * A.norm())  # exact at k = rank
        True
    """
    check_matrix("A", A)
    k = _resolve_k(A, k)
    check_one_of("core", core, UTV_CORES)
    F, _ = pivoted_gram_schmidt(A, k)
    H, _ = torch.linalg.qr(A.mT @ F)
    first = meta_factorize(A, F, H)
    G = first.G
    if core == "triangular":
        return meta_factorize(A, F, H, info={"core": core})
    if core == "svd":
        Ug, _, Vgh = torch.linalg.svd(G)
        return meta_factorize(A, F @ Ug, H @ Vgh.mT, info={"core": core})
    if core == "cpqr":
        Qg, pivots = pivoted_gram_schmidt(G, k)
        perm = torch.nn.functional.one_hot(pivots, k).to(G.dtype).mT  # (k, k): G P = G[:, p]
        return meta_factorize(A, F @ Qg, H @ perm, info={"core": core, "pivots": pivots})
    P, L, _ = torch.linalg.lu(G)
    return meta_factorize(A, F @ (P @ L), H, info={"core": core})


def nystrom(
    A: torch.Tensor,
    k: int,
    oversample: int | None = None,
    generator: torch.Generator | None = None,
    sketch: str = "gaussian",
    rtol: float | None = None,
) -> MetaFactorization:
    """Generalized Nyström (Nakatsukasa 2020): A ≈ AΩ (ΨᵀAΩ)⁺_ε ΨᵀA, computed stably.

    Ω is n×k and Ψ is m×ℓ with ℓ = k + oversample (default ⌈k/2⌉, so ℓ ≈ 1.5k).
    With the small SVD ΨᵀAΩ = U Σ Vᵀ, truncated at ``rtol``·σ₁ (the ε-pseudoinverse
    of the stabilized method; default max(ℓ, k)·eps), the meta step moves Σ⁻¹ and
    the rotations into the outer factors: F = AΩVΣ⁻¹, H = AᵀΨU, B = ΨU, D = ΩVΣ⁻¹,
    so BᵀF = HᵀD = I and the engine's core is G = I. Multiplying out the textbook
    form F·(ΨᵀAΩ)⁺·Hᵀ instead would square κ(ΨᵀAΩ) in the rounding error.
    ``rtol`` must lie in [0, 1). ``info`` holds the sketches ``omega``, ``psi`` and the kept
    ``rank``.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> fac = df.nystrom(A, k=5, generator=torch.Generator().manual_seed(1))
        >>> bool((A - fac.reconstruct()).norm() <= 1e-12 * A.norm())  # exact at k = rank
        True
    """
    check_matrix("A", A)
    m, n = A.shape[-2:]
    check_int_in_range("k", k, 1, min(m, n))
    extra = (k + 1) // 2 if oversample is None else check_oversample(oversample)
    check_generator(generator)
    check_one_of("sketch", sketch, SKETCHES)
    rcond = check_tolerance("rtol", rtol)
    ell = min(k + extra, m)
    batch = A.shape[:-2]
    omega = sketch_matrix((*batch, n, k), sketch, dtype=A.dtype, device=A.device,
                          generator=generator)
    psi = sketch_matrix((*batch, m, ell), sketch, dtype=A.dtype, device=A.device,
                        generator=generator)
    A_omega, At_psi = A @ omega, A.mT @ psi
    U, S, Vh = torch.linalg.svd(psi.mT @ A_omega, full_matrices=False)
    rtol = max(ell, k) * torch.finfo(A.dtype).eps if rcond is None else rcond
    keep = S > rtol * S[..., :1]
    # Dropped directions become zero columns; the engine then pseudo-inverts and warns.
    S_inv = torch.where(keep, 1.0 / torch.where(keep, S, 1.0), 0.0).unsqueeze(-2)
    V_scaled = Vh.mT * S_inv
    U_kept = U * keep.unsqueeze(-2).to(A.dtype)
    return meta_factorize(A, A_omega @ V_scaled, At_psi @ U_kept, B=psi @ U_kept,
                          D=omega @ V_scaled,
                          info={"omega": omega, "psi": psi, "rank": keep.sum(dim=-1)})


CUR_CORES = ("optimal", "cross")


def _selection_matrix(index: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """I_{:, index}: (..., size, k) with one 1 per column."""
    return torch.nn.functional.one_hot(index, size).to(dtype).mT


def cur(
    A: torch.Tensor,
    k: int,
    select: str = "pivoted_qr",
    core: str = "optimal",
    generator: torch.Generator | None = None,
) -> MetaFactorization:
    """CUR: C = A[:, J], R = A[I, :] with k columns and k rows chosen by ``select``.

    F = C, H = Rᵀ. ``core="optimal"``: B = F, D = H, so U = G = C⁺ A R⁺ (the best
    core for these C, R in Frobenius norm). ``core="cross"`` (skeleton): B = I_{:,I},
    D = I_{:,J}, so U = G = A(I, J)⁻¹ (pseudo-inverted, with a warning, if singular).
    ``info`` holds ``rows`` I and ``columns`` J.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> fac = df.cur(A, k=5, select="deim", core="cross")
        >>> bool((A - fac.reconstruct()).norm() <= 1e-12 * A.norm())  # exact at k = rank
        True
    """
    check_matrix("A", A)
    check_int_in_range("k", k, 1, min(A.shape[-2:]))
    check_one_of("select", select, SELECTION_METHODS)
    check_one_of("core", core, CUR_CORES)
    check_generator(generator)
    J = select_columns(A, k, select, generator=generator)
    I = select_columns(A.mT, k, select, generator=generator)
    C = _gather_columns(A, J)
    Rt = _gather_columns(A.mT, I)
    info = {"rows": I, "columns": J}
    if core == "optimal":
        return meta_factorize(A, C, Rt, info=info)
    B = _selection_matrix(I, A.shape[-2], A.dtype)
    D = _selection_matrix(J, A.shape[-1], A.dtype)
    return meta_factorize(A, C, Rt, B=B, D=D, info=info)


def cr(A: torch.Tensor, rtol: float | None = None) -> MetaFactorization:
    """Full-rank CR factorization A = C R (Strang): C = the first r independent columns.

    r is the numerical rank (singular values above ``rtol``·σ₁, rtol ∈ [0, 1), default
    max(m, n)·eps).
    Columns are scanned left to right; column j joins C when its residual after
    projection onto the earlier pivot columns exceeds ``rtol``·σ₁ — the pivot columns of
    the reduced row echelon form — until r are found. (Knowing r first matters: after a
    nearly dependent pivot, rounding in later residuals grows with the size of the
    combination coefficients and could pass any fixed threshold.) R = C⁺A, whose pivot
    columns form I_r (rref(A) without its zero rows); F = C, H = Rᵀ and the core is
    G = I_r. All batch elements must have the same rank. ``info["columns"]`` holds the
    pivot columns.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> fac = df.cr(A)
        >>> bool((A - fac.reconstruct()).norm() <= 1e-12 * A.norm())  # exact at k = rank
        True
    """
    check_matrix("A", A)
    check_nonempty("A", A)  # the rank of no matrix is not defined
    tol = check_tolerance("rtol", rtol)
    m, n = A.shape[-2:]
    if tol is None:
        tol = max(m, n) * torch.finfo(A.dtype).eps
    flat = A.detach().reshape(-1, m, n)
    singular = torch.linalg.svdvals(flat)
    ranks = (singular > tol * singular[:, :1]).sum(dim=-1).tolist()
    if len(set(ranks)) != 1:
        raise ValueError(f"A must have the same numerical rank in every batch element for cr, "
                         f"got ranks {sorted(set(ranks))}")
    rank = ranks[0]
    if rank == 0:
        raise ValueError("A must have rank >= 1 for cr, got the zero matrix")
    chosen: list[list[int]] = []
    for b in range(flat.shape[0]):
        threshold = tol * float(singular[b, 0])
        basis = torch.zeros(m, 0, dtype=A.dtype, device=A.device)
        picks: list[int] = []
        for j in range(n):
            v = flat[b, :, j : j + 1]
            for _ in range(2):  # twice is enough (Kahan–Parlett)
                v = v - basis @ (basis.mT @ v)
            norm = float(torch.linalg.vector_norm(v))
            if norm > threshold:
                basis = torch.cat([basis, v / norm], dim=-1)
                picks.append(j)
                if len(picks) == rank:
                    break
        if len(picks) < rank:  # a pivot drowned in rounding: say so rather than guess
            raise ValueError(f"cr could not find {rank} independent columns left to right "
                             f"with tol={tol:.1e} (found {len(picks)}); A is too ill-"
                             "conditioned for the rref pivots, use cpqr instead")
        chosen.append(picks)
    J = torch.tensor(chosen, device=A.device).reshape(*A.shape[:-2], -1)
    C = _gather_columns(A, J)
    Qc, Rc = torch.linalg.qr(C)  # C has full column rank by construction
    diag = Rc.diagonal(dim1=-2, dim2=-1).abs()
    kappa = float((diag.amax(dim=-1) / diag.amin(dim=-1)).max())  # a lower bound on κ(C)
    if kappa * torch.finfo(A.dtype).eps > torch.finfo(A.dtype).eps ** 0.5:
        warnings.warn(
            f"cr: the leftmost independent columns of A are nearly dependent (κ(C) ≥ "
            f"{kappa:.1e}), so C R and (CR)⁺ lose about log10 κ(C) digits; cpqr picks "
            "well-conditioned columns instead",
            RankDeficiencyWarning,
            stacklevel=2,
        )
    R = torch.linalg.solve_triangular(Rc, Qc.mT @ A, upper=True)
    # Leftmost pivot columns can be ill-conditioned (κ(C) ~ 1e3 is common), and both R
    # and the core then lose log10 κ digits; one refinement step each restores them.
    R = R + torch.linalg.solve_triangular(Rc, Qc.mT @ (A - C @ R), upper=True)
    return meta_factorize(A, C, R.mT, refine=1, info={"columns": J, "C": C, "R": R})
