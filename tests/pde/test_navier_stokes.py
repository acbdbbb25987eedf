"""Navier–Stokes 2-D: Taylor–Green decay, time order of the IMEX solver, residual agreement."""

from __future__ import annotations

import math

import pytest
import torch

from diffnum.pde import (
    NavierStokes2D,
    solve_navier_stokes_2d,
    uniform_grid,
    velocity_from_vorticity,
)

DT = torch.float64
TWO_PI = 2 * math.pi


def _smooth_field(n: int, seed: int, batch: tuple[int, ...] = ()) -> torch.Tensor:
    """Sum of random Fourier modes |k| <= 3: smooth, zero mean, O(1) vorticity."""
    g = torch.Generator().manual_seed(seed)
    x = TWO_PI * torch.arange(n, dtype=DT) / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    out = torch.zeros(*batch, n, n, dtype=DT)
    for kx in range(-3, 4):
        for ky in range(0, 4):
            if (kx, ky) == (0, 0):
                continue
            a, b = torch.randn(2, *batch, 1, 1, dtype=DT, generator=g) / (kx * kx + ky * ky)
            out = out + a * torch.cos(kx * X + ky * Y) + b * torch.sin(kx * X + ky * Y)
    return out


@pytest.mark.parametrize(("wavenumber", "nu"), [(1, 0.02), (4, 1e-3)])
def test_taylor_green_decay(wavenumber, nu):
    n, dt, steps = 32, 0.01, 100
    x = TWO_PI * torch.arange(n, dtype=DT) / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    shape = torch.cos(wavenumber * X) * torch.cos(wavenumber * Y)
    traj = solve_navier_stokes_2d(shape, viscosity=nu, dt=dt, steps=steps, save_every=10)
    decay = torch.exp(-2 * nu * wavenumber**2 * traj.times)
    exact = decay[:, None, None] * shape
    # Advection vanishes for Taylor–Green; CN's decay factor differs from exp(−a), a = ν|k|²dt,
    # by a³/12: a = 4e-4 and 3.2e-4 here give ≤ 6e-12 per step, ≤ 6e-10 after 100 steps, well
    # under 1e-8; FFT round-off adds ~1e-15 per step.
    assert float((traj.vorticity - exact).abs().max()) <= 1e-8


def test_imex_step_is_second_order_in_time():
    omega0 = _smooth_field(32, 0)
    finals = [
        solve_navier_stokes_2d(omega0, viscosity=0.01, dt=dt, steps=round(0.4 / dt),
                               save_every=round(0.4 / dt)).vorticity[-1]
        for dt in (0.02, 0.01, 0.005)
    ]
    e1 = float((finals[0] - finals[1]).abs().max())
    e2 = float((finals[1] - finals[2]).abs().max())
    # Richardson: successive differences shrink by 2^p; p = 2 ± 0.3 (asymptotic at CFL ~0.1).
    assert abs(math.log2(e1 / e2) - 2) <= 0.3, (e1, e2)


def test_solver_output_satisfies_the_residual_and_mean_is_conserved():
    # n = 64: the solver's 2/3 truncation (|k| <= 21) then removes only modes of negligible
    # amplitude; at n = 32 (|k| <= 10) the truncated cascade shows in the residual (~2e-3).
    n, nu, t_end = 64, 0.01, 0.2
    omega0 = _smooth_field(n, 1)
    errors = []
    for steps in (40, 80):
        traj = solve_navier_stokes_2d(omega0, viscosity=nu, dt=t_end / steps, steps=steps)
        grid = uniform_grid({"x": (0.0, TWO_PI, n), "y": (0.0, TWO_PI, n),
                             "t": (0.0, t_end, steps + 1)}, periodic=("x", "y"))
        field = traj.vorticity.movedim(-3, -1)  # (t, x, y) -> grid order (x, y, t)
        errors.append(float(NavierStokes2D(nu).residual(field, grid).abs().max()))
        mean = traj.vorticity.mean(dim=(-2, -1))
        assert float((mean - omega0.mean()).abs().max()) <= 1e-13  # k = 0 mode never changes
    # The solver's O(dt²) error appears in the residual (4th-order FD in t); a sign or
    # convention mismatch between solver and residual would leave an O(1) residual.
    assert errors[1] < 1e-3 and abs(math.log2(errors[0] / errors[1]) - 2) <= 0.3, errors


def test_batched_solve_matches_single():
    omega0 = _smooth_field(16, 2, batch=(3,))
    batched = solve_navier_stokes_2d(omega0, viscosity=0.02, dt=0.02, steps=10).vorticity
    single = solve_navier_stokes_2d(omega0[1], viscosity=0.02, dt=0.02, steps=10).vorticity
    torch.testing.assert_close(batched[1], single, rtol=0, atol=1e-14)


def test_float32_solve_matches_float64():
    omega0 = _smooth_field(32, 5)
    run = {"viscosity": 0.01, "dt": 0.01, "steps": 50}
    w32 = solve_navier_stokes_2d(omega0.float(), **run).vorticity
    w64 = solve_navier_stokes_2d(omega0, **run).vorticity
    assert w32.dtype == torch.float32
    # float32 round-off (~1e-7 relative per FFT) accumulated over 50 stable steps: ~1e-5.
    torch.testing.assert_close(w32.double(), w64, rtol=0, atol=1e-4 * float(w64.abs().max()))


def test_cfl_is_reported():
    omega0 = _smooth_field(16, 2)
    small = solve_navier_stokes_2d(omega0, viscosity=0.02, dt=0.01, steps=3).cfl
    large = solve_navier_stokes_2d(omega0, viscosity=0.02, dt=0.04, steps=3).cfl
    assert 0 < small < 0.5 and large == pytest.approx(4 * small, rel=0.2)  # ∝ dt, |u| ~ fixed


def test_taylor_green_residual_and_basis_terms():
    pde = NavierStokes2D(0.05)
    errors = []
    for nt in (21, 41):
        grid = uniform_grid({"x": (0.0, 2.0, 16), "y": (0.0, 2.0, 16), "t": (0.0, 1.0, nt)},
                            periodic=("x", "y"))
        errors.append(float(pde.residual(pde.exact_taylor_green(grid), grid).abs().max()))
    assert abs(math.log2(errors[0] / errors[1]) - 4) <= 0.3  # FD in t; x, y are exact
    g = torch.Generator().manual_seed(3)
    grid = uniform_grid({"x": (0.0, TWO_PI, 8), "y": (0.0, TWO_PI, 8), "t": (0.0, 1.0, 6)},
                        periodic=("x", "y"))
    basis = torch.randn(grid.size, 5, dtype=DT, generator=g)
    w = torch.randn(5, dtype=DT, generator=g)
    r = pde.residual_from_basis_terms(pde.basis_terms(basis, grid), w)
    # Bilinear residual from per-column terms equals the residual of the combined field.
    direct = pde.residual((basis @ w).reshape(grid.shape), grid).reshape(-1)
    torch.testing.assert_close(r, direct, rtol=1e-10, atol=1e-10)


def test_velocity_is_divergence_free_and_inverts_the_curl():
    n = 24
    omega = _smooth_field(n, 4)
    u, v = velocity_from_vorticity(omega, TWO_PI)
    grid = uniform_grid({"x": (0.0, TWO_PI, n), "y": (0.0, TWO_PI, n)}, periodic=("x", "y"))
    from diffnum.pde import differentiate

    div = differentiate(u, grid, "x") + differentiate(v, grid, "y")
    curl = differentiate(v, grid, "x") - differentiate(u, grid, "y")
    assert float(div.abs().max()) <= 1e-12  # spectral: exact up to round-off
    torch.testing.assert_close(curl, omega - omega.mean(), rtol=0, atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="initial"):
        solve_navier_stokes_2d(torch.zeros(8, 6, dtype=DT))
    with pytest.raises(ValueError, match="dt"):
        solve_navier_stokes_2d(torch.zeros(8, 8, dtype=DT), dt=-1.0)
    grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 4)})
    with pytest.raises(ValueError, match="axes"):
        NavierStokes2D().residual(torch.zeros(8, 4, dtype=DT), grid)
