"""A tour of diffnum.pde: grids, derivatives, PDE residuals on a basis, reference solutions.

Run:  python examples/pde_quickstart.py
"""

import math

import torch

import diffnum.pde as pde

torch.manual_seed(0)

# A space–time grid: x periodic on [-1, 1) (right end excluded), t on [0, 0.5] (both ends).
grid = pde.uniform_grid({"x": (-1.0, 1.0, 128), "t": (0.0, 0.5, 101)}, periodic=("x",))
print("grid", grid.names, grid.shape, "spacing", grid.spacing)

# Derivatives along an axis: spectral on the periodic x, 4th-order finite differences in t.
x, t = grid.mesh()
u = torch.sin(math.pi * x) * torch.exp(-t)
u_xx = pde.differentiate(u, grid, "x", derivative=2)
u_t = pde.differentiate(u, grid, "t", accuracy=4)
print("max |u_xx + π²u| =", float((u_xx + math.pi**2 * u).abs().max()))
print("max |u_t + u|    =", float((u_t + u).abs().max()))

# Viscous Burgers: the Cole–Hopf solution has a residual at the discretization level.
burgers = pde.Burgers1D(viscosity=0.05)
exact = burgers.exact_solution(grid)
print("Burgers residual of the Cole–Hopf solution:",
      float(burgers.residual(exact, grid).abs().max()))

# On a basis B (P × N): derivative terms once, then F(Bw) for any weights w.
basis = torch.randn(grid.size, 16, dtype=torch.float64)
terms = burgers.basis_terms(basis, grid)
w = torch.randn(16, dtype=torch.float64)
rows = torch.randperm(grid.size)[:2000]  # collocation points sampled from the grid
r = burgers.residual_from_basis_terms({k: v[rows] for k, v in terms.items()}, w)
print("residual at", r.shape[0], "collocation points; terms:", sorted(terms))

# Navier–Stokes reference: Taylor–Green decays exactly like exp(−2ν t) on [0, 2π)².
n, nu = 32, 1e-2
s = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
X, Y = torch.meshgrid(s, s, indexing="ij")
omega0 = torch.cos(X) * torch.cos(Y)
traj = pde.solve_navier_stokes_2d(omega0, viscosity=nu, dt=0.01, steps=100, save_every=50)
decay = traj.vorticity.amax(dim=(-2, -1))
print("Taylor–Green decay", decay.tolist(), "exact", torch.exp(-2 * nu * traj.times).tolist(),
      "max CFL", round(traj.cfl, 3))
