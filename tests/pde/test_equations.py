"""PDE objects: exact solutions have residuals vanishing at the design order; basis terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ive

from diffnum.pde import (
    Advection1D,
    Burgers1D,
    Heat1D,
    burgers_sine_cole_hopf,
    uniform_grid,
)

DT = torch.float64


def _grid(n: int, periodic: bool, x_range=(0.0, 1.0), t_end: float = 0.5, dtype=DT):
    # Same step in x and t up to the ratio of the ranges, so both errors shrink together.
    return uniform_grid(
        {"x": (*x_range, n if periodic else n + 1), "t": (0.0, t_end, n + 1)},
        periodic=("x",) if periodic else (), dtype=dtype,
    )


def _cases():
    heat_dirichlet = Heat1D(0.1, boundary="dirichlet", method="finite_difference")
    # A phase keeps the even derivatives nonzero at the ends: with sin(πx) alone the one-sided
    # stencils' leading error vanishes there and the observed order would be one too high.
    phase = 0.4
    grid = _grid(8, False)
    heat_dirichlet.boundary_values = heat_dirichlet.exact_boundary_values(grid, phase=phase)
    return [
        ("heat-periodic", lambda a: Heat1D(0.1, method="finite_difference", accuracy=a),
         {}, True, (0.0, 1.0)),
        ("heat-dirichlet", lambda a: _with_accuracy(heat_dirichlet, a), {"phase": phase}, False,
         (0.0, 1.0)),
        ("advection", lambda a: Advection1D(0.8, method="finite_difference", accuracy=a), {},
         True, (0.0, 1.0)),
        ("burgers-periodic", lambda a: Burgers1D(0.1, method="finite_difference", accuracy=a),
         {}, True, (-1.0, 1.0)),
        ("burgers-dirichlet", lambda a: Burgers1D(0.1, boundary="dirichlet", accuracy=a), {},
         False, (-1.0, 1.0)),
    ]


def _with_accuracy(pde, accuracy):
    pde.accuracy = accuracy
    return pde


@pytest.mark.parametrize("accuracy", [2, 4])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_exact_solution_residual_vanishes_at_design_order(case, accuracy):
    _, make, kwargs, periodic, x_range = case
    pde = make(accuracy)
    errors = []
    for n in (40, 80):
        grid = _grid(n, periodic, x_range)
        u = pde.exact_solution(grid, **kwargs)
        errors.append(float(pde.residual(u, grid).abs().max()))
        # The exact solution meets its initial and boundary conditions to round-off.
        x = grid.coordinates[0]
        u0 = u[:, 0] if not isinstance(pde, Burgers1D) else pde.initial_condition(x)
        assert float(pde.initial_residual(u, grid, u0).abs().max()) <= 1e-13
        boundary = pde.boundary_residual(u, grid)
        assert boundary.numel() == 0 if periodic else float(boundary.abs().max()) <= 1e-13
    order = math.log2(errors[0] / errors[1])
    # ±0.3 around the design order: the FD truncation error of a smooth solution (n = 40 → 80
    # is in the asymptotic range for these solutions; a wrong stencil is off by >= 1).
    assert abs(order - accuracy) <= 0.3, (errors, order)


def test_spectral_x_derivatives_leave_only_the_time_error():
    # Periodic in x with FFT derivatives: the residual is the O(dt^4) time error alone.
    pde = Heat1D(0.1)
    errors = []
    for n in (40, 80):
        grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.5, n + 1)}, periodic=("x",))
        errors.append(float(pde.residual(pde.exact_solution(grid), grid).abs().max()))
    assert abs(math.log2(errors[0] / errors[1]) - 4) <= 0.3  # as in the test above


def test_cole_hopf_matches_bessel_series():
    # Independent formula: φ = Σ c_n e^{-νn²π²t} cos nπx with c_n = (2 − δ_n0)(−1)^n I_n(1/2πν)
    # (the Fourier series of exp(−cos(πx)/2πν)), u = −2νφ_x/φ.
    nu = 0.1
    x = torch.linspace(-1, 1, 33, dtype=DT)
    n = np.arange(60)  # I_n(1.6)/I_0 < 1e-60 beyond n = 60
    c = ive(n, 1 / (2 * math.pi * nu)) * np.where(n == 0, 1, 2) * (-1.0) ** n
    for t in (0.01, 0.2, 1.0):
        decay = c * np.exp(-nu * n**2 * math.pi**2 * t)
        xs = x.numpy()[:, None]
        reference = (2 * nu * math.pi * (n * decay * np.sin(n * math.pi * xs)).sum(1)
                     / (decay * np.cos(n * math.pi * xs)).sum(1))
        got = burgers_sine_cole_hopf(x, torch.tensor(t, dtype=DT), nu).numpy()
        # Both are converged to round-off; the series loses ~e^{2/(2πν)}≈24× eps to cancellation.
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-13)


def test_cole_hopf_small_viscosity_is_finite_and_satisfies_the_pde():
    # ν = 0.01/π: the shock-forming benchmark; the integrand spans e^{±100}, the log-shift
    # keeps it finite. A fine grid on a short time (before the front steepens) checks the PDE.
    nu = 0.01 / math.pi
    pde = Burgers1D(nu, method="finite_difference", accuracy=4)
    errors = []
    for n in (200, 400):
        grid = uniform_grid({"x": (-1.0, 1.0, n), "t": (0.0, 0.1, n // 4 + 1)}, periodic=("x",))
        u = pde.exact_solution(grid)
        assert bool(torch.isfinite(u).all()) and float(u.abs().max()) <= 1.0 + 1e-12
        errors.append(float(pde.residual(u, grid).abs().max()))
    # Before the front steepens (t <= 0.1) the solution is smooth on these grids: the design
    # order within ±0.3 as above; a solution off by O(1) would show no convergence at all.
    assert abs(math.log2(errors[0] / errors[1]) - 4) <= 0.3, errors


def test_basis_terms_give_the_residual_of_bw_and_are_linear_for_linear_pdes():
    grid = _grid(16, True)
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(2, grid.size, 6, dtype=DT, generator=g)
    w1, w2 = torch.randn(2, 2, 6, dtype=DT, generator=g)
    for pde in (Heat1D(0.1), Advection1D(1.3), Burgers1D(0.05)):
        terms = pde.basis_terms(basis, grid)
        assert set(terms) == set(pde.terms)
        r = pde.residual_from_basis_terms(terms, w1)
        u = (basis @ w1.unsqueeze(-1)).reshape(2, *grid.shape)
        # Same derivatives applied before or after the combination: equal up to round-off.
        torch.testing.assert_close(r, pde.residual(u, grid).reshape(2, -1), rtol=1e-10,
                                   atol=1e-10)
    heat = Heat1D(0.1)
    terms = heat.basis_terms(basis, grid)
    lhs = heat.residual_from_basis_terms(terms, 2.0 * w1 - 3.0 * w2)
    rhs = (2.0 * heat.residual_from_basis_terms(terms, w1)
           - 3.0 * heat.residual_from_basis_terms(terms, w2))
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-10)  # linear in w, no forcing
    # Collocation: terms restricted to M sampled rows give those rows of the residual.
    rows = torch.randperm(grid.size, generator=g)[:20]
    sub = {k: v[..., rows, :] for k, v in terms.items()}
    torch.testing.assert_close(heat.residual_from_basis_terms(sub, w1),
                               heat.residual_from_basis_terms(terms, w1)[..., rows])


def test_gradients_through_basis_terms():
    # The layer differentiates F(Bw) w.r.t. w and B (through ∂B); all operators are plain
    # tensor ops, checked against finite differences in float64.
    grid = uniform_grid({"x": (-1.0, 1.0, 8), "t": (0.0, 0.5, 7)})
    pde = Burgers1D(0.1, boundary="dirichlet")
    g = torch.Generator().manual_seed(4)
    basis = torch.randn(grid.size, 3, dtype=DT, generator=g, requires_grad=True)
    w = torch.randn(3, dtype=DT, generator=g, requires_grad=True)

    def residual(b, v):
        return pde.residual_from_basis_terms(pde.basis_terms(b, grid), v)

    assert torch.autograd.gradcheck(residual, (basis, w))
    periodic = uniform_grid({"x": (-1.0, 1.0, 8), "t": (0.0, 0.5, 7)}, periodic=("x",))
    spectral = Burgers1D(0.1)
    assert torch.autograd.gradcheck(
        lambda b, v: spectral.residual_from_basis_terms(spectral.basis_terms(b, periodic), v),
        (basis, w))


def test_float32_residual():
    pde = Burgers1D(0.1, method="finite_difference")
    grid64, grid32 = _grid(40, True, (-1.0, 1.0)), _grid(40, True, (-1.0, 1.0), dtype=torch.float32)
    u64 = pde.exact_solution(grid64)
    u32 = pde.exact_solution(grid32)
    assert u32.dtype == torch.float32
    r32 = pde.residual(u32, grid32)
    # float32 round-off / h² with h = 0.05 → ~1e-4; the truncation error here is ~3e-3.
    torch.testing.assert_close(r32.double(), pde.residual(u64, grid64), rtol=0, atol=2e-4)


def test_bad_input():
    grid = _grid(8, True)
    with pytest.raises(ValueError, match="boundary='dirichlet' needs grid axis 'x' not"):
        Heat1D(boundary="dirichlet").residual(torch.zeros(grid.shape, dtype=DT), grid)
    with pytest.raises(ValueError, match="must have shape"):
        Heat1D().residual(torch.zeros(3, 3, dtype=DT), grid)
    with pytest.raises(ValueError, match="viscosity"):
        Burgers1D(-1.0)
    with pytest.raises(ValueError, match="boundary"):
        Heat1D(boundary="neumann")
    with pytest.raises(ValueError, match="weights"):
        Heat1D().residual_from_basis_terms(
            Heat1D().basis_terms(torch.zeros(grid.size, 3, dtype=DT), grid),
            torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        Burgers1D().exact_solution(grid)


def test_every_pde_offers_the_layer_interface():
    """PhysicsPDE states what the hard-constraint layer calls; every PDE class has it."""
    from diffnum.pde import (
        Advection1D,
        Burgers1D,
        DiffusionSorption1D,
        Heat1D,
        NavierStokes2D,
        PhysicsPDE,
    )

    for pde in (Heat1D(0.1), Advection1D(1.0), Burgers1D(0.01), DiffusionSorption1D(),
                NavierStokes2D(1e-3)):
        assert isinstance(pde, PhysicsPDE), type(pde).__name__
    assert not isinstance(object(), PhysicsPDE)
