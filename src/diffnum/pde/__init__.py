"""PDE toolkit: grids, derivative operators, PDE residuals and exact reference solutions.

Map of the pillar (fields have shape ``(..., *grid.shape)``; bases ``(..., grid.size, N)``
with grid points flattened in C order, one basis function per column):

- Grids: :class:`Grid` (names, per-axis coordinates, spacing, periodic flags) built by
  :func:`uniform_grid`.
- Derivatives along one axis: :func:`finite_difference` (order 2 or 4, one-sided stencils of
  the same order at non-periodic ends), :func:`spectral_derivative` (FFT, periodic axes),
  :func:`stencil_weights` (exact stencil coefficients); on a grid, :func:`differentiate`
  for a field and :func:`differentiate_basis` column-wise for a basis.
- PDEs with one interface (:class:`PDE1D`): ``residual(u, grid)``, ``basis_terms(B, grid)``
  (∂B once per basis) and ``residual_from_basis_terms(terms, w)`` = F(Bw), linear in w for
  linear PDEs, ``initial_residual``, ``boundary_residual`` (periodic or Dirichlet):
  :class:`Heat1D` u_t = κ u_xx, :class:`Advection1D` u_t + c u_x = 0, :class:`Burgers1D`
  u_t + u u_x = ν u_xx; each with ``exact_solution(grid)`` as reference.
- :func:`stacked_residual`: r(w) = [F(Bw) at collocation rows; initial; boundary; λw], the
  least-squares residual of the hard-constraint layer (PDEs give ``initial_points``,
  ``boundary_points``, ``boundary_targets`` as basis rows and values).
- :class:`NavierStokes2D`: vorticity form ω_t + (u·∇)ω = νΔω + f on a periodic box, same
  interface (bilinear in w); :func:`velocity_from_vorticity` (spectral Poisson solve);
  reference solver :func:`solve_navier_stokes_2d` (pseudo-spectral, 2/3 de-aliasing,
  Crank–Nicolson + AB2) returning a :class:`NavierStokesTrajectory`.
- :class:`DiffusionSorption1D`: u_t = D/R(u) u_xx with Freundlich retardation (PDEBench
  constants), u(t, 0) = 1 and a Cauchy condition at x = 1; reference solver
  :func:`solve_diffusion_sorption_1d` (cell-centred finite volumes, :class:`MethodOfLines`,
  scipy BDF with the analytic tridiagonal Jacobian), PDEBench's random initial conditions
  :func:`pdebench_initial_condition`.
- Datasets: :func:`generate_dataset` / :func:`load_dataset` (kinds diffusion-sorption,
  navier-stokes, burgers; deterministic per seed, atomic writes, SHA-256 sidecar; a corrupted
  or mismatched cache is regenerated) giving a :class:`PDEDataset`; CLI
  ``diffnum data generate KIND --n N --seed S --out DIR``.
- Exact solutions: :func:`burgers_sine_cole_hopf` (Cole–Hopf for u₀ = −sin πx).
- :class:`PhysicsPDE`: the interface the hard-constraint layer calls (a ``typing.Protocol``).
"""

from diffnum.pde._data import (
    PDEDataset,
    dataset_paths,
    gaussian_random_field,
    generate_dataset,
    load_dataset,
)
from diffnum.pde._derivative import (
    differentiate,
    differentiate_basis,
    finite_difference,
    spectral_derivative,
    stencil_weights,
)
from diffnum.pde._diffusion_sorption import (
    DiffusionSorption1D,
    DiffusionSorptionTrajectory,
    MethodOfLines,
    pdebench_initial_condition,
    solve_diffusion_sorption_1d,
)
from diffnum.pde._equations import PDE1D, Advection1D, Burgers1D, Heat1D
from diffnum.pde._exact import burgers_sine_cole_hopf
from diffnum.pde._grid import Grid, uniform_grid
from diffnum.pde._navier_stokes import (
    NavierStokes2D,
    NavierStokesTrajectory,
    solve_navier_stokes_2d,
    velocity_from_vorticity,
)
from diffnum.pde._protocol import PhysicsPDE
from diffnum.pde._stack import stacked_residual

__all__ = [
    "PDE1D",
    "Advection1D",
    "Burgers1D",
    "DiffusionSorption1D",
    "DiffusionSorptionTrajectory",
    "Grid",
    "Heat1D",
    "MethodOfLines",
    "NavierStokes2D",
    "NavierStokesTrajectory",
    "PDEDataset",
    "PhysicsPDE",
    "burgers_sine_cole_hopf",
    "dataset_paths",
    "differentiate",
    "differentiate_basis",
    "finite_difference",
    "gaussian_random_field",
    "generate_dataset",
    "load_dataset",
    "pdebench_initial_condition",
    "solve_diffusion_sorption_1d",
    "solve_navier_stokes_2d",
    "spectral_derivative",
    "stacked_residual",
    "stencil_weights",
    "uniform_grid",
    "velocity_from_vorticity",
]
