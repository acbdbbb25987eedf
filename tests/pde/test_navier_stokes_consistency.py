"""NavierStokes2D's training residual (2/3-rule de-aliased advection inputs) against the
pseudo-spectral reference solver: the reference's own physics loss is tiny next to that of an
untrained field, it falls at the order of the time discretisation, the basis-term path equals
the field path, and the Taylor–Green vortex stays an exact solution."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffnum.models import FNO
from diffnum.pde import (
    NavierStokes2D,
    gaussian_random_field,
    solve_navier_stokes_2d,
    uniform_grid,
)

DT = torch.float64
TWO_PI = 2 * math.pi
NU = 1e-3  # as the hard-constraints experiment


def _initial(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    """The hard-constraints experiment's initial vorticity (alpha = 4, tau = 3)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([gaussian_random_field(n, alpha=4.0, tau=3.0, generator=g)
                        for _ in range(samples)])


def _reference(omega0, *, dt, steps, save_every, **kw):
    """The solver's trajectory in grid order (x, y, t) and its grid."""
    n = omega0.shape[-1]
    traj = solve_navier_stokes_2d(omega0, viscosity=NU, dt=dt, steps=steps,
                                  save_every=save_every, **kw)
    grid = uniform_grid({"x": (0.0, TWO_PI, n), "y": (0.0, TWO_PI, n),
                         "t": (0.0, dt * steps, len(traj.times))}, periodic=("x", "y"))
    return traj.vorticity.movedim(-3, -1).contiguous(), grid


def _physics_loss(pde, field, grid) -> float:
    """Mean square of the residual where it is collocated (the training loss's PDE part:
    every point, t = 0 included, where the one-sided time difference ties ω₁… to ω₀)."""
    return float(pde.residual(field, grid)[..., pde.collocation_mask(grid)].square().mean())


def _persistence(field):
    return field[..., :1].expand_as(field).contiguous()


def test_reference_loss_is_tiny_next_to_untrained_fields():
    # n = 16, T = 1 as the experiment's quick setting, saved every 10 steps (H = 0.1) with
    # the solver's product not truncated again (its band |k| <= 5 is unchanged): measured
    # (4 samples, seed 0, t₀ collocated) reference 1.1e-6, persistence 0.69, tiny random FNO
    # 1.4e-2: ratios 1.5e-6 and 7.8e-5 (without t₀: 7.0e-7, ratios 1.0e-6 and 5.2e-5; seeds
    # 1, 2 at most 1.2e-6 and 5.2e-5). Saved every 20 steps (H = 0.2) the time derivative
    # alone gave 2.8e-4 (without t₀), ratio 4.1e-4 to persistence but 2e-2 to the FNO; with
    # the default solver the product's modes beyond the 2/3 band, which no pointwise residual
    # can drop, give 0.05, ratio 0.08.
    pde = NavierStokes2D(NU)
    omega0 = _initial(16, 4)
    field, grid = _reference(omega0, dt=0.01, steps=100, save_every=10,
                             truncate_product=False)
    reference = _physics_loss(pde, field, grid)
    persistence = _physics_loss(pde, _persistence(field), grid)
    with torch.random.fork_rng(), torch.no_grad():  # the experiment's quick FNO, untrained
        torch.manual_seed(0)
        net = FNO(1, 1, (6, 6, 3), 12, 2, 3, append_grid=True, padding=2, dtype=DT)
        untrained = net(_persistence(field).unsqueeze(1))[:, 0]
    fno = _physics_loss(pde, untrained, grid)
    assert reference <= 1e-3 * persistence, (reference, persistence)
    assert reference <= 1e-3 * fno, (reference, fno)


def test_dealiasing_lowers_the_default_references_loss():
    # The experiment's quick setting (n = 16, H = 0.2), default solver: measured (4 samples,
    # seed 0, t₀ collocated) 0.147 without and 0.051 with de-aliasing (without t₀, seeds 1,
    # 2: ratios 0.41, 0.40; 16 samples: 0.120 and 0.045).
    field, grid = _reference(_initial(16, 4), dt=0.01, steps=100, save_every=20)
    aliased = _physics_loss(NavierStokes2D(NU, dealias=False), field, grid)
    dealiased = _physics_loss(NavierStokes2D(NU), field, grid)
    assert dealiased <= 0.5 * aliased, (dealiased, aliased)


@pytest.mark.parametrize("accuracy", [2, 4])
def test_reference_residual_falls_at_the_order_of_the_time_derivative(accuracy):
    # Saved-time spacing H = 0.2, 0.1, 0.05 at dt = 0.0025: the finite differences in t are
    # O(H^accuracy), above the solver's O(dt²) floor at these H (at dt = 0.005 the floor
    # already bends the last order to 3.2 for some seeds). Measured orders of the RMS
    # residual (t₀ collocated): 2.14, 2.12 (accuracy 2); 4.23, 4.50 (accuracy 4); without t₀
    # 2.10, 2.08 and 4.27, 4.52, seeds 1–3 within 0.05.
    pde = NavierStokes2D(NU, accuracy=accuracy)
    omega0 = _initial(16, 2)
    rms = []
    for save_every in (80, 40, 20):
        field, grid = _reference(omega0, dt=0.0025, steps=400, save_every=save_every,
                                 truncate_product=False)
        rms.append(math.sqrt(_physics_loss(pde, field, grid)))
    orders = [math.log2(a / b) for a, b in itertools.pairwise(rms)]
    assert all(abs(p - accuracy) <= 0.6 for p in orders), (rms, orders)


def test_reference_residual_falls_at_the_solvers_order_in_dt():
    # Every step saved (H = dt): the residual is the IMEX scheme's O(dt²) truncation error
    # (the O(H⁴) of the time differences is smaller). Measured orders 1.99, 1.99 (t₀
    # collocated; 2.00, 2.00 without).
    pde = NavierStokes2D(NU)
    omega0 = _initial(16, 2)
    rms = []
    for dt in (0.02, 0.01, 0.005):
        steps = round(0.4 / dt)
        field, grid = _reference(omega0, dt=dt, steps=steps, save_every=1,
                                 truncate_product=False)
        rms.append(math.sqrt(_physics_loss(pde, field, grid)))
    orders = [math.log2(a / b) for a, b in itertools.pairwise(rms)]
    assert all(abs(p - 2) <= 0.2 for p in orders), (rms, orders)


def test_truncate_product_false_keeps_the_resolved_band():
    # Aliases of the product of two fields of |k| <= n/3 land only outside |k| <= n/3, and the
    # modes outside never enter a product: the resolved band is the default solver's.
    omega0 = _initial(16, 2)
    run = {"viscosity": NU, "dt": 0.01, "steps": 50}
    a = solve_navier_stokes_2d(omega0, **run).vorticity
    b = solve_navier_stokes_2d(omega0, truncate_product=False, **run).vorticity
    k = torch.fft.fftfreq(16, d=1 / 16).abs()
    band = (k[:, None] <= 5) & (k[None, :] <= 5)
    difference = torch.fft.fft2(a - b)
    assert float(difference[..., band].abs().max()) <= 1e-12
    assert float(difference[..., ~band].abs().max()) >= 1e-3  # the option does something


@pytest.mark.parametrize("names", [("x", "y", "t"), ("t", "y", "x")])
@pytest.mark.parametrize("dealias", [True, False])
def test_basis_terms_path_equals_field_path(names, dealias):
    sizes = {"x": 12, "y": 9, "t": 6}  # an even and an odd axis: Nyquist handling differs
    grid = uniform_grid({a: (0.0, 1.0 if a == "t" else TWO_PI, sizes[a]) for a in names},
                        periodic=("x", "y"))
    pde = NavierStokes2D(NU, dealias=dealias)
    g = torch.Generator().manual_seed(3)
    basis = torch.randn(2, grid.size, 5, dtype=DT, generator=g)
    w = torch.randn(2, 5, dtype=DT, generator=g)
    field = (basis @ w.unsqueeze(-1)).reshape(2, *grid.shape)
    terms = pde.basis_terms(basis, grid)
    direct = pde.residual(field, grid).reshape(2, -1)
    combined = pde.residual_from_basis_terms(terms, w)
    scale = float(direct.abs().max())
    assert float((combined - direct).abs().max()) <= 1e-12 * max(scale, 1.0)
    field_terms = pde.field_terms(field, grid)
    for name in pde.terms:
        column_wise = (terms[name] @ w.unsqueeze(-1)).squeeze(-1)
        expected = field_terms[name].reshape(2, -1)
        assert float((column_wise - expected).abs().max()) <= 1e-12 * max(
            float(expected.abs().max()), 1.0), name
    # With de-aliasing the advection inputs have no modes beyond |k| = n // 3 (4 and 3 here).
    u_x = terms["u_x"].reshape(2, *grid.shape, 5).movedim(
        (1 + grid.axis_index("x"), 1 + grid.axis_index("y")), (-2, -1))
    spectrum = torch.fft.fft2(u_x).abs()
    kx = torch.fft.fftfreq(12, d=1 / 12).abs()[:, None]
    ky = torch.fft.fftfreq(9, d=1 / 9).abs()[None, :]
    outside = float(spectrum[..., (kx > 4) | (ky > 3)].max())
    assert (outside <= 1e-10) if dealias else (outside >= 1e-2)


@pytest.mark.parametrize("wavenumber", [1, 5, 7])
def test_taylor_green_is_still_an_exact_solution(wavenumber):
    # ω = cos(kx) cos(ky) e^{−2νk²t} has (u·∇)ω ≡ 0; k = 5 is the last mode in the 2/3 band
    # of n = 16, k = 7 lies beyond it (diffusion is full-band, so it must still decay there).
    nu = 0.05
    grid = uniform_grid({"x": (0.0, TWO_PI, 16), "y": (0.0, TWO_PI, 16), "t": (0.0, 1.0, 41)},
                        periodic=("x", "y"))
    x, y, t = grid.mesh()
    omega = torch.cos(wavenumber * x) * torch.cos(wavenumber * y) * torch.exp(
        -2 * nu * wavenumber**2 * t)
    pde = NavierStokes2D(nu)
    residual = pde.residual(omega, grid)
    # Only the 4th-order differences in t err, ≤ c λ⁵ h⁴ with λ = 2νk², h = 1/40; measured
    # c = 0.16–0.20 (the one-sided end stencils); a projected Laplacian would leave νΔω = 4.9
    # at k = 7.
    decay = 2 * nu * wavenumber**2
    assert float(residual.abs().max()) <= 0.3 * decay**5 * (1 / 40) ** 4 + 1e-12
    if wavenumber == 1:
        torch.testing.assert_close(residual, pde.residual(pde.exact_taylor_green(grid), grid),
                                   rtol=0, atol=1e-13)
