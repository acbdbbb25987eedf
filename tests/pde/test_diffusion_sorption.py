"""Diffusion–sorption: manufactured solution at second order in space, PDE residual of the
reference solution, analytic Jacobian, physical sanity, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffnum.pde import (
    DiffusionSorption1D,
    pdebench_initial_condition,
    solve_diffusion_sorption_1d,
    stacked_residual,
    uniform_grid,
)

DT = torch.float64


def _manufactured(diffusivity: float, t_end: float):
    """u*(x, t) = 1 − x/(1 + D) + p(t)(sin πx + c x), c = Dπ/(1 + D), p = ½ e^{−t/T}: meets
    u(0) = 1 and u(1) = −D u_x(1) exactly, stays > 0, and needs the source
    s = u*_t − D/R(u*) u*_xx."""
    a, c = 1 / (1 + diffusivity), diffusivity * math.pi / (1 + diffusivity)

    def p(t):
        return 0.5 * torch.exp(-t / t_end)

    def phi(x):
        return torch.sin(math.pi * x) + c * x

    def exact(x, t):
        return 1 - a * x + p(t) * phi(x)

    plain = DiffusionSorption1D(diffusivity=diffusivity)

    def source(x, t):
        u_xx = -(math.pi**2) * p(t) * torch.sin(math.pi * x)
        return -p(t) / t_end * phi(x) - diffusivity / plain.retardation(exact(x, t)) * u_xx

    return DiffusionSorption1D(diffusivity=diffusivity, source=source), exact


def _solve_manufactured(pde, exact, nx, t_end, num_times):
    x = (torch.arange(nx, dtype=DT) + 0.5) / nx
    traj = solve_diffusion_sorption_1d(exact(x, torch.tensor(0.0, dtype=DT)), pde=pde,
                                       t_end=t_end, num_times=num_times, rtol=1e-10,
                                       atol=1e-12)
    t, xx = traj.grid.mesh()
    return traj, float((traj.solution - exact(xx, t)).abs().max())


@pytest.mark.parametrize(("diffusivity", "t_end"), [(5e-4, 500.0), (0.02, 10.0)])
def test_manufactured_solution_converges_at_second_order_in_space(diffusivity, t_end):
    pde, exact = _manufactured(diffusivity, t_end)
    errors = [_solve_manufactured(pde, exact, nx, t_end, 11)[1] for nx in (20, 40, 80)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    # Design order 2 (centred 3-point Laplacian, second-order ghost cells); ±0.2 since the
    # BDF error (rtol 1e-10) is ~1e-8 of the smallest error here. A first-order ghost cell
    # (e.g. u₋₁ = g as in PDEBench) would show order ≈ 1.
    assert all(abs(o - 2) <= 0.2 for o in orders), (errors, orders)
    assert errors[-1] <= 1e-4


def test_reference_solution_satisfies_the_pde_to_discretization_accuracy():
    # The PDE object's residual (FD order 2 in x and t) of the solver's output shrinks like
    # h² + Δt² when both grids are refined by 2: it measures the solver, not the FD check alone.
    t_end = 10.0
    pde, exact = _manufactured(0.02, t_end)
    residuals = []
    for n in (40, 80):
        traj, _ = _solve_manufactured(pde, exact, n, t_end, n + 1)
        r = pde.residual(traj.solution, traj.grid)  # shape (nt, nx)
        # Away from the ends: next to them the one-sided u_xx stencil divides the solver's
        # O(h²) error, which is not smooth there (ghost-cell truncation is O(1) in the last
        # cell; the global error is still O(h²), see the test above), by h²; likewise the
        # one-sided u_t at t = 0 meets BDF's low-order start.
        residuals.append(float(r[2:-2, 2:-2].abs().max()))
    # u_t ~ 0.05 here; ratio 4 ± 0.6 (observed 3.9 for n = 40 → 80, asymptotic beyond).
    assert 3.4 <= residuals[0] / residuals[1] <= 4.6, residuals
    assert residuals[1] <= 1e-5


def test_boundary_residual_and_cauchy_rows_of_the_exact_solution():
    t_end = 10.0
    pde, exact = _manufactured(0.02, t_end)
    errors = []
    for n in (40, 80):
        grid = uniform_grid({"x": (0.0, 1.0, n + 1), "t": (0.0, t_end, 11)})
        x, t = grid.mesh()
        u = exact(x, t)
        b = pde.boundary_residual(u, grid)
        assert b.shape == (2, 11)
        assert float(b[0].abs().max()) <= 1e-14  # Dirichlet end, exact
        errors.append(float(b[1].abs().max()))
        # cauchy_rows is the same linear map applied to a basis: one column = u.
        rows = pde.cauchy_rows(u.reshape(-1, 1), grid)[..., 0]
        torch.testing.assert_close(rows, b[1], rtol=0, atol=1e-14)
    # One-sided u_x of order 2 at x = 1: D·O(h²) shrinks 4× (±1).
    assert 3.0 <= errors[0] / errors[1] <= 5.0, errors


def test_basis_terms_agree_with_the_field_residual_and_stack():
    pde = DiffusionSorption1D()
    grid = uniform_grid({"x": (0.0, 1.0, 17), "t": (0.0, 500.0, 11)})
    g = torch.Generator().manual_seed(0)
    basis = torch.rand(grid.size, 5, dtype=DT, generator=g)
    w = torch.rand(5, dtype=DT, generator=g)
    terms = pde.basis_terms(basis, grid)
    u = (basis @ w).reshape(grid.shape)
    # Same FD operators on the field and column-wise on the basis: equal to round-off.
    torch.testing.assert_close(pde.residual_from_basis_terms(terms, w),
                               pde.residual(u, grid).reshape(-1), rtol=0, atol=1e-12)
    r = stacked_residual(pde, terms, w, basis, grid, torch.full((17,), 0.1, dtype=DT))
    # PDE rows, initial rows, the Dirichlet end (one row per time), ridge.
    assert r.shape == (17 * 11 + 17 + 11 + 5,)


def test_analytic_jacobian_matches_finite_differences():
    pde = DiffusionSorption1D()
    system = pde.method_of_lines(12)
    rng = np.random.default_rng(0)
    u = rng.uniform(0.05, 1.0, 12)
    jac = system.jacobian(0.0, u).toarray()
    eps = 1e-7
    numeric = np.stack([(system.rhs(0.0, u + eps * e) - system.rhs(0.0, u - eps * e)) / (2 * eps)
                        for e in np.eye(12)], axis=1)
    assert np.count_nonzero(np.triu(jac, 2)) == 0 and np.count_nonzero(np.tril(jac, -2)) == 0
    # Central differences: O(eps²)·f''' plus round-off |f| ε/eps ~ 1e-9 relative to |J| ~ 1e3.
    np.testing.assert_allclose(jac, numeric, rtol=1e-6, atol=1e-6 * np.abs(jac).max())


def test_pdebench_setting_is_physical_and_batched():
    g = torch.Generator().manual_seed(0)
    u0 = pdebench_initial_condition(3, 256, generator=g)
    assert float(u0.min()) >= 0 and float(u0.max()) <= 0.2
    traj = solve_diffusion_sorption_1d(u0, t_end=500.0, num_times=51)
    u = traj.solution
    assert u.shape == (3, 51, 256) and traj.right_face.shape == (3, 51)
    # Maximum principle of the scheme (M-matrix, |ρ| < 1): 0 ≤ u ≤ max(1, max u₀); a little
    # slack for the BDF error (rtol 1e-6).
    assert float(u.min()) >= -1e-8 and float(u.max()) <= 1 + 1e-6
    # Inflow from the left (u = 1 > u₀): the sorbed + dissolved inventory grows in time.
    c = DiffusionSorption1D().sorption_coefficient / 0.874
    inventory = (u + c * (u.clamp(min=0) + 1e-6) ** 0.874).mean(-1)
    assert bool((inventory[:, -1] > inventory[:, 0]).all())
    # The concentration front decreases from the left boundary inwards at the final time.
    assert bool((u[:, -1, 1:] <= u[:, -1, :-1] + 1e-9).all())
    # Batched solve equals one-by-one solves.
    single = solve_diffusion_sorption_1d(u0[1], t_end=500.0, num_times=51).solution
    torch.testing.assert_close(single, u[1], rtol=0, atol=0)


def test_bad_input_raises():
    u0 = torch.full((16,), 0.1, dtype=DT)
    with pytest.raises(ValueError, match="must be >= 0"):
        solve_diffusion_sorption_1d(-u0)
    with pytest.raises(ValueError, match="finite"):
        solve_diffusion_sorption_1d(torch.full((16,), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match="nx >= 3"):
        solve_diffusion_sorption_1d(u0[:2])
    with pytest.raises(TypeError, match="float32 or float64"):
        solve_diffusion_sorption_1d(torch.ones(16, dtype=torch.int64))
    with pytest.raises(ValueError, match="t_end"):
        solve_diffusion_sorption_1d(u0, t_end=0.0)
    with pytest.raises(ValueError, match="cauchy_sign = -1"):
        solve_diffusion_sorption_1d(u0, pde=DiffusionSorption1D(cauchy_sign=1))
    with pytest.raises(ValueError, match="porosity"):
        DiffusionSorption1D(porosity=1.5)
    with pytest.raises(ValueError, match="cauchy_sign"):
        DiffusionSorption1D(cauchy_sign=0)
    with pytest.raises(ValueError, match="periodic"):
        pde = DiffusionSorption1D()
        grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 5)}, periodic=("x",))
        pde.residual(torch.zeros(8, 5, dtype=DT), grid)
