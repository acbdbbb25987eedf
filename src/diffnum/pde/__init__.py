"""PDE toolkit: grids, derivative operators, PDE residuals and exact reference solutions.

Map of the pillar (fields have shape ``(..., *grid.shape)``; bases ``(..., grid.size, N)``
with grid points flattened in C order, one basis function per column):

- Grids: :class:`Grid` (names, per-axis coordinates, spacing, periodic flags) built by
  :func:`uniform_grid`.
- Derivatives along one axis: :func:`finite_difference` (order 2 or 4, one-sided stencils of
  the same order at non-periodic ends), :func:`spectral_derivative` (FFT, periodic axes),
  :func:`stencil_weights` (exact stencil coefficients); on a grid, :func:`differentiate`
  for a field and :func:`differentiate_basis` column-wise for a basis.
"""

from diffnum.pde._derivative import (
    differentiate,
    differentiate_basis,
    finite_difference,
    spectral_derivative,
    stencil_weights,
)
from diffnum.pde._grid import Grid, uniform_grid

__all__ = [
    "Grid",
    "differentiate",
    "differentiate_basis",
    "finite_difference",
    "spectral_derivative",
    "stencil_weights",
    "uniform_grid",
]
