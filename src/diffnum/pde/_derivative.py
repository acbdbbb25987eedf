"""Finite-difference and spectral derivative operators along one axis of a tensor."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import torch

from diffnum._core.validation import (
    check_int_in_range,
    check_one_of,
    check_positive,
    real_floating_dtype,
)
from diffnum.pde._checks import check_bool, check_choice, check_grid
from diffnum.pde._grid import Grid

_ACCURACIES = (2, 4)
_DERIVATIVES = (1, 2)
_MAX_SPECTRAL_DERIVATIVE = 16
_MAX_OFFSETS = 64  # exact rational elimination is O(n³) big-number operations
_MAX_OFFSET = 10**6


def stencil_weights(offsets: tuple[int, ...], derivative: int) -> tuple[float, ...]:
    """Weights c_k with Σ_k c_k f(x + o_k h) = h^d f^{(d)}(x) + O(h^{n}) for n = len(offsets).

    Solves the moment conditions Σ_k c_k o_k^m = d! δ_{md}, m = 0…n−1, in exact rational
    arithmetic, so the weights are correctly rounded. The truncation order is n − d, one more
    for a centred stencil when n − d is odd (the next error term cancels by symmetry).
    ``offsets``: 1 to 64 distinct ints with |o| ≤ 10⁶; 0 ≤ ``derivative`` < len(offsets).

    Example::

        >>> from diffnum.pde import stencil_weights
        >>> stencil_weights((-1, 0, 1), 2)  # the three-point second difference
        (1.0, -2.0, 1.0)
    """
    if not isinstance(offsets, tuple | list):
        raise TypeError(f"offsets must be a tuple of ints, got {type(offsets).__name__}")
    check_int_in_range("len(offsets)", len(offsets), 1, _MAX_OFFSETS)
    for o in offsets:
        if isinstance(o, bool) or not isinstance(o, int):
            raise TypeError(f"offsets must hold ints, got {o!r} in {tuple(offsets)}")
        if abs(o) > _MAX_OFFSET:
            raise ValueError(f"offsets must lie in [-{_MAX_OFFSET}, {_MAX_OFFSET}], got {o}")
    offsets = tuple(offsets)
    check_int_in_range("derivative", derivative, 0, _MAX_OFFSETS)
    if len(set(offsets)) != len(offsets) or not derivative < len(offsets):
        raise ValueError(
            f"offsets must be distinct and more than derivative={derivative}, got {offsets}"
        )
    return _stencil_weights(offsets, derivative)


@cache
def _stencil_weights(offsets: tuple[int, ...], derivative: int) -> tuple[float, ...]:
    n = len(offsets)
    rows = [
        [Fraction(o) ** m for o in offsets]
        + [Fraction(math.factorial(m)) if m == derivative else Fraction(0)]
        for m in range(n)
    ]
    for col in range(n):  # Gauss–Jordan; the Vandermonde system is non-singular
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        rows[col] = [v / lead for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    return tuple(float(rows[k][n]) for k in range(n))


def _check_order(derivative: int, accuracy: int) -> None:
    check_choice("derivative", derivative, _DERIVATIVES)
    check_choice("accuracy", accuracy, _ACCURACIES)


def _check_dim(u: torch.Tensor, dim: object) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if u.ndim == 0 or not -u.ndim <= dim < u.ndim:
        raise ValueError(f"dim must index a dimension of u with shape {tuple(u.shape)}, got {dim}")


def finite_difference(
    u: torch.Tensor,
    spacing: float,
    *,
    dim: int = -1,
    derivative: int = 1,
    accuracy: int = 2,
    periodic: bool = False,
) -> torch.Tensor:
    """∂^d u/∂x^d along ``dim`` of a uniform grid with step h, error O(h^a), a = ``accuracy``.

    Interior points use the central stencil on offsets −a/2…a/2. On a periodic axis the stencil
    wraps around. On a non-periodic axis the a/2 points next to each end use one-sided stencils
    on the d + a points nearest that end, whose truncation error is also O(h^a), so the order
    holds up to the boundary. Needs at least d + a points (a + 1 when periodic).

    Example::

        >>> import torch
        >>> from diffnum.pde import finite_difference
        >>> x = torch.linspace(0, 1, 21, dtype=torch.float64)
        >>> bool((finite_difference(x**2, 0.05, derivative=2) - 2).abs().max() < 1e-10)
        True
    """
    real_floating_dtype("u", u)
    _check_order(derivative, accuracy)
    spacing = check_positive("spacing", spacing)
    _check_dim(u, dim)
    check_bool("periodic", periodic)
    v = u.movedim(dim, -1)
    n = v.shape[-1]
    half = accuracy // 2
    width = derivative + accuracy  # points of a one-sided stencil of order `accuracy`
    needed = _points_needed(derivative, accuracy, periodic)
    if n < needed:
        raise ValueError(
            f"u has {n} points along dim {dim}; derivative={derivative} with accuracy={accuracy}"
            f" needs at least {needed}{' (periodic)' if periodic else ''}"
        )
    central = tuple(range(-half, half + 1))
    weights = stencil_weights(central, derivative)
    if periodic:
        # torch.roll(v, -o)[i] = v[i + o] with indices taken modulo n.
        out = sum(c * torch.roll(v, shifts=-o, dims=-1) for o, c in zip(central, weights) if c)
    else:
        interior = sum(
            c * v[..., half + o : n - half + o] for o, c in zip(central, weights) if c
        )
        left = torch.tensor(
            [stencil_weights(tuple(j - i for j in range(width)), derivative) for i in range(half)],
            dtype=v.dtype, device=v.device,
        )
        right = torch.tensor(
            [
                stencil_weights(tuple(j - i for j in range(n - width, n)), derivative)
                for i in range(n - half, n)
            ],
            dtype=v.dtype, device=v.device,
        )
        out = torch.cat([v[..., :width] @ left.T, interior, v[..., n - width :] @ right.T], dim=-1)
    return (out / spacing**derivative).movedim(-1, dim)


def spectral_derivative(
    u: torch.Tensor, length: float, *, dim: int = -1, derivative: int = 1
) -> torch.Tensor:
    """∂^d u/∂x^d of a field sampled at n equispaced points of one period L, by FFT.

    u = Σ_k û_k e^{i k 2π x/L} ⇒ ∂^d u = Σ_k (i 2π k/L)^d û_k e^{i k 2π x/L}, exact for
    trigonometric polynomials of degree < n/2. For odd d and even n the Nyquist mode is
    dropped (its derivative is not representable as a real field on the grid).

    Example::

        >>> import math, torch
        >>> from diffnum.pde import spectral_derivative
        >>> x = torch.arange(16, dtype=torch.float64) * 2 * math.pi / 16
        >>> error = spectral_derivative(torch.sin(x), 2 * math.pi) - torch.cos(x)
        >>> bool(error.abs().max() < 1e-12)
        True
    """
    real_floating_dtype("u", u)
    check_int_in_range("derivative", derivative, 0, _MAX_SPECTRAL_DERIVATIVE)
    length = check_positive("length", length)
    _check_dim(u, dim)
    v = u.movedim(dim, -1)
    n = v.shape[-1]
    if n == 0:
        raise ValueError(f"u must have at least one point along dim {dim}, got shape "
                         f"{tuple(u.shape)}")
    k = torch.fft.rfftfreq(n, d=1.0 / n, dtype=v.dtype, device=v.device) * (2 * math.pi / length)
    factor = (1j * k) ** derivative
    if derivative % 2 == 1 and n % 2 == 0:
        factor[-1] = 0
    k_max = math.pi * (n // 2) * 2 / length  # the largest |k| (no device sync to check it)
    if derivative and k_max > 0 and derivative * math.log(k_max) >= math.log(
            torch.finfo(v.dtype).max):
        raise ValueError(f"derivative={derivative} of {n} points over length={length} overflows "
                         f"{v.dtype} (the largest factor (2π k/L)^d is not finite)")
    if v.numel() == 0:  # an empty batch: nothing to transform (FFT libraries reject it)
        return u.clone()
    out = torch.fft.irfft(torch.fft.rfft(v, dim=-1) * factor, n=n, dim=-1)
    return out.movedim(-1, dim)


def differentiate(
    u: torch.Tensor,
    grid: Grid,
    axis: int | str,
    *,
    derivative: int = 1,
    method: str = "auto",
    accuracy: int = 4,
) -> torch.Tensor:
    """∂^d u/∂x_k^d of a field u of shape ``(..., *grid.shape)`` along grid axis k = ``axis``.

    ``method``: ``"spectral"`` (periodic axes only), ``"finite_difference"`` (order
    ``accuracy`` ∈ {2, 4}, wrapping on periodic axes, one-sided at the ends otherwise) or
    ``"auto"`` (spectral on periodic axes, finite differences otherwise).

    Example::

        >>> import math, torch
        >>> import diffnum.pde as pde
        >>> grid = pde.uniform_grid({"x": (0.0, 1.0, 33), "t": (0.0, 0.1, 11)})
        >>> x, t = grid.mesh()
        >>> u = torch.sin(math.pi * x) * torch.exp(-0.1 * math.pi**2 * t)  # exact heat solution
        >>> u_xx = pde.differentiate(u, grid, "x", derivative=2)
        >>> bool((u_xx + math.pi**2 * u)[4:-4].abs().max() < 1e-4)
        True
    """
    real_floating_dtype("u", u)
    k = check_grid("grid", grid).axis_index(axis)
    nd = grid.ndim
    if u.ndim < nd or tuple(u.shape[u.ndim - nd :]) != grid.shape:
        raise ValueError(
            f"u must have shape (..., {', '.join(map(str, grid.shape))}) to match the grid, "
            f"got {tuple(u.shape)}"
        )
    return _along_axis(u, grid, k, dim=k - nd, derivative=derivative, method=method,
                       accuracy=accuracy)


def differentiate_basis(
    basis: torch.Tensor,
    grid: Grid,
    axis: int | str,
    *,
    derivative: int = 1,
    method: str = "auto",
    accuracy: int = 4,
) -> torch.Tensor:
    """Column-wise ∂^d B/∂x_k^d of a basis B of shape ``(..., grid.size, N)``.

    Each of the N columns is a field on the grid (points flattened in C order). Derivatives
    are linear, so ∂(B w) = (∂B) w: a layer computes these once and combines them with w.
    Same ``method`` and ``accuracy`` as :func:`differentiate`.

    Example::

        >>> import torch
        >>> import diffnum.pde as pde
        >>> grid = pde.uniform_grid({"x": (0.0, 1.0, 33), "t": (0.0, 0.1, 11)})
        >>> basis = torch.stack([c.reshape(-1) for c in grid.mesh()], -1)  # (P, N): x and t
        >>> pde.differentiate_basis(basis, grid, "x").shape
        torch.Size([363, 2])
    """
    real_floating_dtype("basis", basis)
    k = check_grid("grid", grid).axis_index(axis)
    nd = grid.ndim
    if basis.ndim < 2 or basis.shape[-2] != grid.size:
        raise ValueError(
            f"basis must have shape (..., {grid.size}, N) for a grid of shape {grid.shape}, "
            f"got {tuple(basis.shape)}"
        )
    lead, n_basis = basis.shape[:-2], basis.shape[-1]
    fields = basis.reshape(*lead, *grid.shape, n_basis)
    out = _along_axis(fields, grid, k, dim=k - nd - 1, derivative=derivative, method=method,
                      accuracy=accuracy)
    return out.reshape(*lead, grid.size, n_basis)


def _points_needed(derivative: int, accuracy: int, periodic: bool) -> int:
    """Grid points a finite difference of this order needs along its axis: the central
    stencil (periodic) or a one-sided stencil of order ``accuracy`` (at the ends)."""
    return 2 * (accuracy // 2) + 1 if periodic else derivative + accuracy


def _along_axis(u, grid, k, *, dim, derivative, method, accuracy):
    check_one_of("method", method, ("auto", "spectral", "finite_difference"))
    if method == "auto":
        method = "spectral" if grid.periodic[k] else "finite_difference"
    if method == "finite_difference":
        _check_order(derivative, accuracy)
        needed = _points_needed(derivative, accuracy, grid.periodic[k])
        if grid.shape[k] < needed:
            raise ValueError(
                f"grid axis {grid.names[k]!r} has {grid.shape[k]} points; its derivative of "
                f"order {derivative} (accuracy {accuracy}) needs at least {needed}")
    if method == "spectral":
        if not grid.periodic[k]:
            raise ValueError(
                f"method='spectral' needs a periodic axis; axis {grid.names[k]!r} is not periodic"
            )
        return spectral_derivative(u, grid.lengths[k], dim=dim, derivative=derivative)
    return finite_difference(u, grid.spacing[k], dim=dim, derivative=derivative,
                             accuracy=accuracy, periodic=grid.periodic[k])
