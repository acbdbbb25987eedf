"""The interface a PDE object offers the hard-constraint layer (:mod:`diffnum.constrain`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

from diffnum.pde._grid import Grid


@runtime_checkable
class PhysicsPDE(Protocol):
    """What :class:`~diffnum.constrain.HardConstraint` calls on a PDE object.

    :class:`PDE1D` subclasses (:class:`Heat1D`, :class:`Advection1D`, :class:`Burgers1D`,
    :class:`DiffusionSorption1D`) and :class:`NavierStokes2D` implement it; a new PDE that
    does works with the layer, the mixture and the trainer unchanged. Fields are
    ``(..., *grid.shape)``; bases ``(..., grid.size, N)`` with the grid flattened in C order.

    Attributes:
        terms: names of the derivative terms F depends on, e.g. ``("u_t", "u_xx")``.

    Example::

        >>> from diffnum.pde import DiffusionSorption1D, NavierStokes2D, PhysicsPDE
        >>> [isinstance(p, PhysicsPDE) for p in (DiffusionSorption1D(), NavierStokes2D(1e-3))]
        [True, True]
    """

    terms: tuple[str, ...]

    def pointwise_residual(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """F at every point from the values of its terms there."""

    def residual(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """F(u) on the grid."""

    def field_terms(self, u: torch.Tensor, grid: Grid) -> dict[str, torch.Tensor]:
        """The derivative terms of a field u."""

    def basis_terms(self, basis: torch.Tensor, grid: Grid) -> dict[str, torch.Tensor]:
        """The derivative terms of every basis column, ``{name: (..., P, N)}``."""

    def lift(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B̃, u_p): u = u_p + B̃ w meets the initial and boundary conditions for every w."""

    def constraint_rows(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(C, c, points): the initial and boundary conditions as rows C w = c."""

    def initial_points(self, grid: Grid) -> torch.Tensor:
        """Flat grid indices where u₀ is given, in the layout of ``initial``."""

    def initial_free(self, grid: Grid) -> torch.Tensor:
        """Which initial points carry u₀ (the rest belong to a boundary condition)."""

    def collocation_mask(self, grid: Grid) -> torch.Tensor:
        """Where the PDE itself is collocated, shape ``grid.shape``."""
