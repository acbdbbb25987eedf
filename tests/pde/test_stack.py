"""stacked_residual: its blocks equal the residuals of the field Bw; a linear PDE gives an
affine least-squares problem whose solution recovers the exact solution in the basis."""

from __future__ import annotations

import pytest
import torch

from diffnum.pde import Advection1D, Heat1D, NavierStokes2D, stacked_residual, uniform_grid

DT = torch.float64


def _heat():
    grid = uniform_grid({"x": (0.0, 1.0, 33), "t": (0.0, 0.5, 33)})
    pde = Heat1D(0.1, boundary="dirichlet")
    pde.boundary_values = pde.exact_boundary_values(grid, phase=0.4)
    return pde, grid, pde.exact_solution(grid, phase=0.4)


def test_blocks_match_field_residuals():
    pde, grid, _ = _heat()
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, grid.size, 4, dtype=DT, generator=g)
    w = torch.randn(2, 4, dtype=DT, generator=g)
    u0 = torch.randn(grid.shape[0], dtype=DT, generator=g)
    rows = torch.randperm(grid.size, generator=g)[:100]
    r = stacked_residual(pde, pde.basis_terms(basis, grid), w, basis, grid, u0, rows=rows,
                         ridge=1e-3)
    u = (basis @ w.unsqueeze(-1)).reshape(2, *grid.shape)
    expected = torch.cat([
        pde.residual(u, grid).reshape(2, -1)[:, rows],
        pde.initial_residual(u, grid, u0),
        pde.boundary_residual(u, grid).reshape(2, -1),
        1e-3 * w,
    ], dim=-1)
    assert r.shape == (2, 100 + 33 + 2 * 33 + 4)
    torch.testing.assert_close(r, expected, rtol=1e-10, atol=1e-10)  # same ops, other order


def test_linear_pde_least_squares_recovers_exact_solution():
    pde, grid, exact = _heat()
    g = torch.Generator().manual_seed(1)
    # Basis: the exact solution and 5 smooth distractors (low-degree polynomials in x, t).
    x, t = grid.mesh()
    columns = [exact, x, t, x * t, x**2, t**2]
    basis = torch.stack([c.reshape(-1) for c in columns], dim=-1)
    terms = pde.basis_terms(basis, grid)
    u0 = exact[:, 0]
    zero = torch.zeros(basis.shape[-1], dtype=DT)
    b = -stacked_residual(pde, terms, zero, basis, grid, u0)
    A = torch.stack([stacked_residual(pde, terms, e, basis, grid, u0) + b
                     for e in torch.eye(basis.shape[-1], dtype=DT)], dim=-1)
    w = torch.linalg.lstsq(A, b.unsqueeze(-1)).solution.squeeze(-1)
    # Affine in w (linear PDE, linear constraints): r(w) = A w − b exactly.
    probe = torch.randn(basis.shape[-1], dtype=DT, generator=g)
    torch.testing.assert_close(stacked_residual(pde, terms, probe, basis, grid, u0),
                               A @ probe - b, rtol=1e-12, atol=1e-12)
    u = (basis @ w).reshape(grid.shape)
    error = float((u - exact).norm() / exact.norm())
    # w = e₀ leaves only the O(h⁴) truncation residual (~1e-5 here, against O(1) residuals of
    # the distractors) and the ridge 1e-4·|w|, so the fit moves u by ~1e-6 (observed 9e-7);
    # 1e-5 allows for that, and a wrong block or sign would give an O(1) error.
    assert error <= 1e-5, error
    assert abs(float(w[0]) - 1) <= 1e-5


def test_advection_inflow_and_navier_stokes_shapes():
    grid = uniform_grid({"x": (0.0, 1.0, 9), "t": (0.0, 1.0, 5)})
    basis = torch.randn(grid.size, 3, dtype=DT)
    w = torch.randn(3, dtype=DT)
    for velocity, end in ((1.0, 0), (-1.0, -1)):
        pde = Advection1D(velocity, boundary="dirichlet", boundary_values=(0.5, -0.5))
        r = stacked_residual(pde, pde.basis_terms(basis, grid), w, basis, grid, 0.0, ridge=0)
        assert r.shape == (grid.size + 9 + 5 + 3,)
        u = (basis @ w).reshape(grid.shape)
        torch.testing.assert_close(r[-8:-3], u[end] - (0.5 if end == 0 else -0.5))
    ns_grid = uniform_grid({"x": (0.0, 1.0, 8), "y": (0.0, 1.0, 8), "t": (0.0, 1.0, 5)},
                           periodic=("x", "y"))
    ns = NavierStokes2D(0.01)
    ns_basis = torch.randn(ns_grid.size, 3, dtype=DT)
    r = stacked_residual(ns, ns.basis_terms(ns_basis, ns_grid), w, ns_basis, ns_grid,
                         torch.zeros(8, 8, dtype=DT), rows=torch.arange(50))
    assert r.shape == (50 + 64 + 0 + 3,)


def test_bad_input():
    pde, grid, _ = _heat()
    basis = torch.zeros(grid.size, 3, dtype=DT)
    with pytest.raises(ValueError, match="basis must have shape"):
        stacked_residual(pde, pde.basis_terms(basis, grid), torch.zeros(4, dtype=DT), basis,
                         grid, 0.0)
    with pytest.raises(ValueError, match="ridge"):
        stacked_residual(pde, pde.basis_terms(basis, grid), torch.zeros(3, dtype=DT), basis,
                         grid, 0.0, ridge=-1.0)
