"""Random test matrices, the randomized range finder and the randomized SVD."""

from __future__ import annotations

import math

import torch

from diffnum._core import check_int_in_range, check_matrix, check_one_of
from diffnum._core.validation import check_count
from diffnum.factor._checks import (
    check_floating_dtype,
    check_generator,
    check_iterations,
    check_oversample,
    check_shape,
)

SKETCHES = ("gaussian", "rademacher", "sparse_sign")


def sketch_matrix(
    shape: tuple[int, ...],
    kind: str = "gaussian",
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    nonzeros: int = 8,
) -> torch.Tensor:
    """A random test matrix Ω of ``shape`` (..., n, s) for sketching A Ω.

    ``gaussian``: i.i.d. N(0, 1). ``rademacher``: i.i.d. ±1. ``sparse_sign``:
    each row holds min(nonzeros, s) entries ±1/√ζ at random columns, zeros elsewhere
    (Tropp et al.'s sparse sign embedding, applied from the right).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> df.sketch_matrix((20, 7), "gaussian", generator=torch.Generator().manual_seed(0)).shape
        torch.Size([20, 7])
    """
    shape = check_shape("shape", shape, min_dims=2)
    check_one_of("kind", kind, SKETCHES)
    check_floating_dtype("dtype", dtype)
    check_generator(generator)
    check_count("nonzeros", nonzeros)
    gen_device = generator.device if generator is not None else device
    if kind == "gaussian":
        out = torch.randn(shape, generator=generator, dtype=dtype, device=gen_device)
    elif kind == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=gen_device)
        out = (2 * bits - 1).to(dtype)
    else:
        s = shape[-1]
        zeta = min(nonzeros, s)
        keys = torch.rand(shape, generator=generator, device=gen_device)
        cols = keys.argsort(dim=-1)[..., :zeta]
        signs = torch.randint(0, 2, (*shape[:-1], zeta), generator=generator, device=gen_device)
        values = (2 * signs - 1).to(dtype) / math.sqrt(zeta)
        out = torch.zeros(shape, dtype=dtype, device=gen_device).scatter(-1, cols, values)
    return out.to(device) if device is not None else out


def _orthonormalize(Y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(Y).Q


def _lu_basis(Y: torch.Tensor) -> torch.Tensor:
    """P L from Y = P L U: a cheap well-conditioned basis of range(Y) between power steps.

    Partial pivoting keeps |L_ij| ≤ 1, so the columns cannot collapse onto the top singular
    direction the way unnormalized powers do; only the final basis must be orthonormal
    (Halko–Martinsson–Tropp §4.5, as in fbpca). LAPACK's row swaps are replayed on an index
    list rather than forming the dense m×m permutation.
    """
    LU, pivots = torch.linalg.lu_factor(Y)
    m, width = Y.shape[-2:]
    L = LU.tril(-1) + torch.eye(m, width, dtype=Y.dtype, device=Y.device)
    flat_L = L.reshape(-1, m, width)
    basis = torch.empty_like(flat_L)
    for b, swaps in enumerate(pivots.reshape(-1, pivots.shape[-1]).tolist()):
        order = list(range(m))
        for i, j in enumerate(swaps):  # row i was exchanged with row j − 1, in sequence
            order[i], order[j - 1] = order[j - 1], order[i]
        # Y[order] = L U, hence Y = P L U with (P L)[order] = L.
        basis[b, order] = flat_L[b]
    return basis.reshape(L.shape)


def range_finder(
    A: torch.Tensor,
    k: int,
    oversample: int = 10,
    power_iters: int = 2,
    sketch: str = "gaussian",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Orthonormal basis Q (..., m, k+p) with A ≈ Q Qᵀ A (Halko–Martinsson–Tropp).

    Q = orth((A Aᵀ)^q A Ω) for a random Ω (n × (k+p)), the basis being re-normalised
    between the q (``power_iters`` <= 1000) power iterations. The expected error, with p ≥ 2,
    is bounded by
    (1 + √(k/(p−1)) + e√(k+p)/p · √(min(m,n)−k))^{1/(2q+1)} · σ_{k+1} (HMT Thm 10.6 / §10.4).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> Q = df.range_finder(A, 5, generator=torch.Generator().manual_seed(1))
        >>> bool((Q @ (Q.mT @ A) - A).norm() <= 1e-12 * A.norm())  # Q spans range(A)
        True
    """
    check_matrix("A", A)
    m, n = A.shape[-2:]
    check_int_in_range("k", k, 1, min(m, n))
    check_oversample(oversample)
    check_iterations("power_iters", power_iters)
    check_one_of("sketch", sketch, SKETCHES)
    check_generator(generator)
    width = min(k + oversample, m, n)
    omega = sketch_matrix((*A.shape[:-2], n, width), sketch, dtype=A.dtype, device=A.device,
                          generator=generator)
    Y = A @ omega
    for _ in range(power_iters):
        # Re-normalise both half-steps: without it float32 loses every direction but the
        # top few to rounding once (σ₁/σ_k)^(2q+1) passes 1/eps.
        Y = A @ _lu_basis(A.mT @ _lu_basis(Y))
    return _orthonormalize(Y)


def rsvd(
    A: torch.Tensor,
    k: int,
    oversample: int = 10,
    power_iters: int = 2,
    sketch: str = "gaussian",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomized truncated SVD A ≈ U diag(S) Vh of rank k.

    Q = :func:`range_finder` (A, k, oversample, power_iters); then the SVD of the
    small (k+p)×n matrix QᵀA = Ũ S Vh, and U = Q Ũ, truncated to k.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> U, S, Vh = df.rsvd(A, 5, power_iters=1, generator=torch.Generator().manual_seed(1))
        >>> bool(torch.allclose(S, torch.linalg.svdvals(A)[:5]))
        True
    """
    Q = range_finder(A, k, oversample, power_iters, sketch, generator)
    small = Q.mT @ A
    # The SVD of the short-wide (k+p)×n matrix via its transpose's QR keeps the
    # expensive step on a (k+p)×(k+p) matrix.
    Qs, Rs = torch.linalg.qr(small.mT)  # small = Rsᵀ Qsᵀ
    Ur, S, Vrh = torch.linalg.svd(Rs.mT)
    U = Q @ Ur[..., :, :k]
    Vh = (Qs @ Vrh.mT[..., :, :k]).mT
    return U, S[..., :k], Vh
