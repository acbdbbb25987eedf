"""Synthetic test matrices with a prescribed spectrum (for tests, benchmarks, reproduce)."""

from __future__ import annotations

import torch

from diffnum._core import check_int_in_range, check_one_of
from diffnum._core.validation import check_count, check_real
from diffnum.factor._checks import check_floating_dtype, check_generator, check_shape

MATRIX_KINDS = ("low_rank", "geometric", "algebraic", "rank_deficient")


def _orthonormal(rows: int, cols: int, batch: tuple[int, ...], dtype: torch.dtype,
                 generator: torch.Generator | None) -> torch.Tensor:
    G = torch.randn(*batch, rows, cols, dtype=torch.float64, generator=generator)
    return torch.linalg.qr(G).Q.to(dtype)


def synthetic_matrix(
    m: int,
    n: int,
    kind: str = "geometric",
    *,
    rank: int | None = None,
    decay: float | None = None,
    batch: tuple[int, ...] = (),
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (…, m, n) matrix with a known spectrum; returns (A, singular values).

    ``low_rank``: σ_i = 10^(−2(i−1)/(r−1)) for i ≤ r (from 1 down to 1e-2), 0 after.
    ``geometric``: σ_i = decay^(i−1) (decay defaults to 0.9).
    ``algebraic``: σ_i = i^(−decay) (decay defaults to 1).
    ``rank_deficient``: A = C R with a Gaussian C (m × 2r) whose last r columns
    repeat its first r, and a Gaussian R (2r × n): rank r from rank-deficient
    factors (the case Strang's formula 1 gets wrong). Its σ are computed.
    U and V are Haar-random; everything is built in float64 and then cast to ``dtype``
    (a real floating dtype). ``decay`` must lie in (0, 1] (geometric) or be >= 0 (algebraic).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(40, 30, "geometric", decay=0.5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(torch.linalg.svdvals(A), sigma)), sigma[:3].tolist()
        (True, [1.0, 0.5, 0.25])
    """
    check_count("m", m)
    check_count("n", n)
    check_one_of("kind", kind, MATRIX_KINDS)
    if decay is not None:
        if kind == "geometric":
            check_real("decay", decay, low=0.0, high=1.0, low_open=True)
        else:
            check_real("decay", decay, low=0.0)
    batch = check_shape("batch", batch, min_dims=0)
    check_floating_dtype("dtype", dtype)
    check_generator(generator)
    p = min(m, n)
    if kind in ("low_rank", "rank_deficient"):
        r = check_int_in_range("rank", rank if rank is not None else max(1, p // 4), 1, p)
    i = torch.arange(p, dtype=torch.float64)
    if kind == "rank_deficient":
        half = torch.randn(*batch, m, r, dtype=torch.float64, generator=generator)
        C = torch.cat([half, half], dim=-1)
        R = torch.randn(*batch, 2 * r, n, dtype=torch.float64, generator=generator)
        A = C @ R / (2 * r)
        return A.to(dtype), torch.linalg.svdvals(A).to(dtype)
    if kind == "low_rank":
        sigma = torch.where(i < r, 10.0 ** (-2.0 * i / max(r - 1, 1)), 0.0)
    elif kind == "geometric":
        sigma = (0.9 if decay is None else decay) ** i
    else:
        sigma = (i + 1) ** -(1.0 if decay is None else decay)
    U = _orthonormal(m, p, batch, torch.float64, generator)
    V = _orthonormal(n, p, batch, torch.float64, generator)
    A = (U * sigma) @ V.mT
    return A.to(dtype), sigma.expand(*batch, p).to(dtype)
