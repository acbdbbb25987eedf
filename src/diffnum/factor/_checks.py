"""Argument checks and scaling helpers shared by the factor pillar (private).

Built on :mod:`diffnum._core.validation`; every error names the argument, what it got and
what it needs.
"""

from __future__ import annotations

import math

import torch

from diffnum._core.validation import (
    check_count,
    check_finite,
    check_matrix,
    check_real,
    check_same_dtype_device,
)

#: Upper bound on iteration counts (``refine``, ``power_iters``): a typo such as 10**12 must
#: raise, not run for ever.
MAX_ITERATIONS = 1000


def check_tolerance(name: str, value: object) -> float | None:
    """``None`` (the default) or a relative tolerance in [0, 1): at 1 or above every singular
    value counts as zero and the result is silently 0."""
    if value is None:
        return None
    return check_real(name, value, low=0.0, high=1.0, high_open=True)


def check_iterations(name: str, value: object) -> int:
    """A count of iterations in [0, :data:`MAX_ITERATIONS`]."""
    return check_count(name, value, low=0, high=MAX_ITERATIONS)


def check_oversample(value: object) -> int:
    """A non-negative int (it is clipped to the matrix size, so no upper bound is needed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"oversample must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"oversample must be a non-negative int, got {value!r}")
    return value


def check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )


def check_floating_dtype(name: str, dtype: object) -> torch.dtype:
    """A real floating ``torch.dtype`` (float16/bfloat16 included)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a real floating torch.dtype (e.g. torch.float64), "
                        f"got {dtype!r}")
    return dtype


def check_matrices(named: dict[str, torch.Tensor]) -> None:
    """Each tensor a real floating (..., m, n) matrix; all of the first one's dtype and device;
    all finite (checked last, so that a wrong device is named before its data is read)."""
    for name, x in named.items():
        check_matrix(name, x, finite=False)
    check_same_dtype_device(named)
    for name, x in named.items():
        check_finite(name, x)


def check_batches(named: dict[str, torch.Tensor]) -> torch.Size:
    """The broadcast batch shape of (..., m, n) tensors; a ValueError names them if there is
    none."""
    try:
        return torch.broadcast_shapes(*(x.shape[:-2] for x in named.values()))
    except RuntimeError:
        shapes = ", ".join(f"{name} {tuple(x.shape)}" for name, x in named.items())
        raise ValueError(f"{', '.join(named)} must have broadcastable batch dimensions, "
                         f"got {shapes}") from None


def check_shape(name: str, shape: object, *, min_dims: int = 1) -> tuple[int, ...]:
    """A tuple of non-negative ints with at least ``min_dims`` entries."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list, torch.Size)):
        raise TypeError(f"{name} must be a tuple of ints, got {type(shape).__name__}")
    if len(shape) < min_dims:
        raise ValueError(f"{name} must have at least {min_dims} entries, got {tuple(shape)}")
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{name} must hold ints, got {tuple(shape)}")
        if not 0 <= size <= 10**9:
            raise ValueError(f"{name} entries must lie in [0, 1e9], got {tuple(shape)}")
    return tuple(shape)


def power_of_two_exponent(X: torch.Tensor) -> torch.Tensor:
    """Per (..., m, n) matrix, the integer e with max|X_ij| in [2^(e-1), 2^e) (0 for X = 0),
    shaped (..., 1, 1): dividing by 2^e is exact and brings the entries to [1/2, 1)."""
    # abs().amax() writes an |X| temporary but is ~7× faster than vector_norm(ord=inf) here.
    amax = X.detach().abs().amax(dim=(-2, -1), keepdim=True)
    return torch.frexp(amax).exponent


def scaled_to_unit(X: torch.Tensor) -> torch.Tensor:
    """X·2^-e per (..., m, n) matrix, e from :func:`power_of_two_exponent`, in one multiply:
    e is clamped so that 2^-e is a normal number of X's dtype, which still brings the entries
    of any finite X to at most 4 and, for subnormal X, above 2^-24 of that (squares and sums
    of squares then neither overflow nor underflow); exact, like :func:`times_power_of_two`,
    wherever e needs no clamping."""
    info = torch.finfo(X.dtype)
    exponent = power_of_two_exponent(X).clamp(-math.floor(math.log2(info.max)),
                                              -round(math.log2(info.tiny)))
    factor = torch.ldexp(torch.ones(exponent.shape, dtype=X.dtype, device=X.device), -exponent)
    return X * factor


def times_power_of_two(X: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """X·2^exponent, exactly (barring underflow of the result): the factor is applied in two
    halves, since 2^exponent alone may not be representable (float32 stops at 2^127)."""
    half = torch.div(exponent, 2, rounding_mode="floor")
    one = torch.ones(exponent.shape, dtype=X.dtype, device=X.device)
    return X * torch.ldexp(one, half) * torch.ldexp(one, exponent - half)


def _start_block(A: torch.Tensor) -> torch.Tensor:
    """A fixed (batch, n, r) block of r <= 4 start vectors with no special structure (no RNG
    is consumed). A block, not one vector: it is more robust, and multi-threaded BLAS can
    be slower on one right-hand side than on four."""
    n = A.shape[-1]
    i = torch.arange(n, dtype=A.dtype, device=A.device)[:, None]
    j = torch.arange(min(4, n), dtype=A.dtype, device=A.device)[None, :]
    return torch.cos(i * (2.399963 + j) + 0.5 + j).expand(*A.shape[:-2], n, j.shape[-1])


def smallest_eigenvalue(A: torch.Tensor, L: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Inverse-subspace-iteration estimate (a Ritz value, so an upper bound) of λ_min of the
    symmetric (batch, n, n) ``A``, with ``L`` the Cholesky factor of A (or of A + τI, τ small).

    A few O(n²) triangular solves with four right-hand sides.
    """
    V = _start_block(A)
    for _ in range(iters):
        V = torch.linalg.qr(torch.cholesky_solve(V, L)).Q
    return torch.linalg.eigvalsh(V.mT @ (A @ V))[..., 0].clamp_min(0.0)


def largest_eigenvalue(A: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """Subspace-iteration estimate (a Ritz value, so a lower bound) of λ_max of the symmetric
    positive semidefinite (batch, n, n) ``A``."""
    V = _start_block(A)
    for _ in range(iters):
        V = torch.linalg.qr(A @ V).Q
    return torch.linalg.eigvalsh(V.mT @ (A @ V))[..., -1]
