"""Derivative operators: order of convergence, spectral exactness, dtypes, batching, bases."""

from __future__ import annotations

import math

import pytest
import torch

from diffnum.pde import (
    differentiate,
    differentiate_basis,
    finite_difference,
    spectral_derivative,
    stencil_weights,
    uniform_grid,
)

DT = torch.float64
A, B, C = 0.7, 3.0, 0.4  # f(x) = e^{Ax} sin(Bx + C): smooth, no symmetry that hides errors


def _f(x: torch.Tensor, derivative: int = 0) -> torch.Tensor:
    """d-th derivative of e^{Ax} sin(Bx + C) = Im(e^{(A+iB)x + iC}), exactly."""
    z = complex(A, B)
    return (z**derivative * torch.exp(z * x.to(torch.complex128) + 1j * C)).imag


def _errors(n: int, derivative: int, accuracy: int, periodic: bool = False):
    """Max error at interior points and at the a/2 points next to each end, n-point grid."""
    if periodic:
        x = 2 * math.pi * torch.arange(n, dtype=DT) / n
        u = torch.sin(x) + 0.5 * torch.cos(2 * x + 0.3)
        exact = (torch.sin(x + derivative * math.pi / 2)
                 + 0.5 * 2**derivative * torch.cos(2 * x + 0.3 + derivative * math.pi / 2))
        h = 2 * math.pi / n
    else:
        x = torch.linspace(0, 1, n, dtype=DT)
        u, exact, h = _f(x), _f(x, derivative), 1 / (n - 1)
    err = (finite_difference(u, h, derivative=derivative, accuracy=accuracy,
                             periodic=periodic) - exact).abs()
    half = accuracy // 2
    edges = torch.cat([err[:half], err[-half:]])
    return float(err[half:-half].max()), float(edges.max())


@pytest.mark.parametrize("accuracy", [2, 4])
@pytest.mark.parametrize("derivative", [1, 2])
def test_finite_difference_order_interior_and_boundary(derivative, accuracy):
    # Grids h = 1/40 -> 1/80: asymptotic (errors 1e-3..1e-9) yet far above float64 round-off
    # (~eps/h^2 = 1e-12), so log2 of the error ratio measures the truncation order.
    coarse, fine = _errors(41, derivative, accuracy), _errors(81, derivative, accuracy)
    interior = math.log2(coarse[0] / fine[0])
    boundary = math.log2(coarse[1] / fine[1])
    # ±0.3: the observed order of a smooth function approaches the design order from within
    # a few tenths at these resolutions; a wrong stencil is off by >= 1.
    assert abs(interior - accuracy) <= 0.3, interior
    assert abs(boundary - accuracy) <= 0.3, boundary


@pytest.mark.parametrize("accuracy", [2, 4])
@pytest.mark.parametrize("derivative", [1, 2])
def test_periodic_finite_difference_order(derivative, accuracy):
    coarse, fine = _errors(32, derivative, accuracy, True), _errors(64, derivative, accuracy, True)
    order = math.log2(max(coarse) / max(fine))
    assert abs(order - accuracy) <= 0.3, order  # same reasoning as the non-periodic test


def test_stencil_weights_known_values():
    assert stencil_weights((-1, 0, 1), 2) == (1.0, -2.0, 1.0)
    assert stencil_weights((0, 1, 2), 1) == (-1.5, 2.0, -0.5)
    w = stencil_weights((-2, -1, 0, 1, 2), 1)
    assert w == pytest.approx((1 / 12, -2 / 3, 0.0, 2 / 3, -1 / 12), abs=1e-16)


@pytest.mark.parametrize("length", [2 * math.pi, 3.0])
@pytest.mark.parametrize("derivative", [1, 2, 3])
def test_spectral_derivative_exact_on_trigonometric_polynomials(length, derivative):
    n = 32
    g = torch.Generator().manual_seed(derivative)
    a, b = torch.randn(2, 15, dtype=DT, generator=g)  # degree 15 < n/2
    k = torch.arange(1, 16, dtype=DT)[:, None] * (2 * math.pi / length)
    x = length * torch.arange(n, dtype=DT) / n
    phase = k * x
    u = (a[:, None] * torch.cos(phase) + b[:, None] * torch.sin(phase)).sum(0)
    shift = derivative * math.pi / 2  # d/dx cos(kx) = k cos(kx + π/2)
    exact = (k**derivative * (a[:, None] * torch.cos(phase + shift)
                              + b[:, None] * torch.sin(phase + shift))).sum(0)
    got = spectral_derivative(u, length, derivative=derivative)
    # Exact up to round-off: eps · Σ|k|^d |û_k| relative to the scale of the derivative.
    assert float((got - exact).abs().max() / exact.abs().max()) <= 1e-12


def test_spectral_drops_nyquist_for_odd_derivatives():
    n = 16
    x = 2 * math.pi * torch.arange(n, dtype=DT) / n
    nyquist = torch.cos(n / 2 * x)
    assert float(spectral_derivative(nyquist, 2 * math.pi).abs().max()) <= 1e-13
    second = spectral_derivative(nyquist, 2 * math.pi, derivative=2)
    torch.testing.assert_close(second, -(n / 2) ** 2 * nyquist, rtol=0, atol=1e-11)


@pytest.mark.parametrize("method", ["finite_difference", "spectral"])
def test_float32_matches_float64(method):
    grid64 = uniform_grid({"x": (0.0, 2.0, 48)}, periodic=("x",))
    grid32 = uniform_grid({"x": (0.0, 2.0, 48)}, periodic=("x",), dtype=torch.float32)
    u = torch.sin(math.pi * grid64.coordinates[0]) ** 3
    d64 = differentiate(u, grid64, "x", derivative=2, method=method)
    d32 = differentiate(u.float(), grid32, "x", derivative=2, method=method)
    assert d32.dtype == torch.float32
    # float32 round-off amplified by 1/h^2 (~600) or |k|^2 (~350): ~1e-4 relative at most.
    torch.testing.assert_close(d32.double(), d64, rtol=0, atol=3e-4 * float(d64.abs().max()))


@pytest.mark.parametrize("method", ["finite_difference", "spectral"])
def test_batched_and_axis_choice(method):
    grid = uniform_grid({"x": (0.0, 1.0, 24), "t": (0.0, 1.0, 13)}, periodic=("x",))
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 2, 24, 13, dtype=DT, generator=g)
    for axis, dim in (("x", -2), ("t", -1)):
        mth = method if axis == "x" else "finite_difference"
        got = differentiate(u, grid, axis, method=mth)
        for i in range(3):
            for j in range(2):
                one = differentiate(u[i, j], grid, axis, method=mth)
                torch.testing.assert_close(got[i, j], one, rtol=0, atol=1e-12)
        if mth == "finite_difference":
            direct = finite_difference(u, grid.spacing[grid.axis_index(axis)], dim=dim,
                                       accuracy=4, periodic=grid.periodic[grid.axis_index(axis)])
            torch.testing.assert_close(got, direct, rtol=0, atol=0)


@pytest.mark.parametrize("axis", ["x", "t"])
def test_basis_columns_are_differentiated_fields(axis):
    grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.5, 9)}, periodic=("x",))
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(2, grid.size, 5, dtype=DT, generator=g)
    w = torch.randn(2, 5, 1, dtype=DT, generator=g)
    d_basis = differentiate_basis(basis, grid, axis, derivative=2)
    assert d_basis.shape == basis.shape
    u = (basis @ w).reshape(2, *grid.shape)
    # Linearity ∂(Bw) = (∂B)w, the property the hard-constraint layer relies on.
    expected = differentiate(u, grid, axis, derivative=2).reshape(2, grid.size, 1)
    torch.testing.assert_close(d_basis @ w, expected, rtol=1e-10, atol=1e-9)


def test_grid_layout():
    grid = uniform_grid({"x": (-1.0, 1.0, 8), "t": (0.0, 1.0, 5)}, periodic=("x",))
    assert grid.shape == (8, 5) and grid.size == 40 and grid.names == ("x", "t")
    assert grid.spacing == (0.25, 0.25) and grid.lengths == (2.0, 1.0)
    assert float(grid.coordinates[0][-1]) == 0.75  # right end of a periodic axis excluded
    assert float(grid.coordinates[1][-1]) == 1.0
    pts = grid.points()
    assert pts.shape == (40, 2) and pts[1].tolist() == [-1.0, 0.25]


def test_bad_input_names_the_argument():
    grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 5)})
    with pytest.raises(ValueError, match="accuracy"):
        finite_difference(torch.zeros(10, dtype=DT), 0.1, accuracy=3)
    with pytest.raises(ValueError, match="needs at least 6"):
        finite_difference(torch.zeros(5, dtype=DT), 0.1, derivative=2, accuracy=4)
    with pytest.raises(ValueError, match="grid axis 't' has 5 points; its derivative of order 2 "
                       r"\(accuracy 4\) needs at least 6"):
        differentiate(torch.zeros(8, 5, dtype=DT), grid, "t", derivative=2)
    with pytest.raises(ValueError, match="grid axis 't' has 5 points"):
        differentiate_basis(torch.zeros(40, 2, dtype=DT), grid, "t", derivative=2)
    with pytest.raises(ValueError, match="periodic"):
        differentiate(torch.zeros(8, 5, dtype=DT), grid, "x", method="spectral")
    with pytest.raises(ValueError, match="must have shape"):
        differentiate(torch.zeros(5, 8, dtype=DT), grid, "x")
    with pytest.raises(ValueError, match="basis"):
        differentiate_basis(torch.zeros(39, 2, dtype=DT), grid, "t")
    with pytest.raises(ValueError, match="axis"):
        differentiate(torch.zeros(8, 5, dtype=DT), grid, "y")
    with pytest.raises(TypeError, match="u must be float32 or float64"):
        finite_difference(torch.zeros(10, dtype=torch.int64), 0.1)
    with pytest.raises(ValueError, match="points"):
        uniform_grid({"x": (0.0, 1.0, 1)})
    with pytest.raises(ValueError, match="start < stop"):
        uniform_grid({"x": (1.0, 0.0, 4)})
