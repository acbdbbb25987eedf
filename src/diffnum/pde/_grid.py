"""Uniform space–time grids: per-axis coordinates, spacing and periodicity."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from diffnum._core.summary import OneLineRepr
from diffnum._core.validation import check_count, check_one_of, check_real


@dataclass(frozen=True, eq=False, repr=False)
class Grid(OneLineRepr):
    """A tensor-product grid G = X₁ × … × X_d of uniform axes, in the order given.

    A non-periodic axis on [a, b] with n points has x_j = a + j h, h = (b − a)/(n − 1), both
    ends included; a periodic axis of period L = b − a has x_j = a + j h, h = L/n, the right end
    excluded (it is the left end again). Fields on the grid have shape ``(..., *shape)``;
    bases have shape ``(..., size, N)`` with the grid points flattened in C order.

    Attributes:
        names: axis names, e.g. ``("x", "t")``.
        coordinates: one 1-D tensor per axis.
        spacing: h per axis.
        periodic: whether each axis is periodic.

    Example::

        >>> import diffnum.pde as pde
        >>> grid = pde.uniform_grid({"x": (0.0, 6.0, 4)}, periodic=("x",))
        >>> grid.coordinates[0].tolist(), grid.periodic  # a periodic axis omits its end point
        ([0.0, 1.5, 3.0, 4.5], (True,))
    """

    names: tuple[str, ...]
    coordinates: tuple[torch.Tensor, ...]
    spacing: tuple[float, ...]
    periodic: tuple[bool, ...]

    def __post_init__(self) -> None:
        fields = {"names": self.names, "coordinates": self.coordinates, "spacing": self.spacing,
                  "periodic": self.periodic}
        for name, value in fields.items():
            if not isinstance(value, tuple | list):
                raise TypeError(f"{name} must be a tuple, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        d = len(self.names)
        if d == 0 or any(len(v) != d for v in fields.values()):
            lengths = [len(v) for v in fields.values()]
            raise ValueError(f"names, coordinates, spacing and periodic must have one entry per "
                             f"axis (at least one), got lengths {lengths}")
        if not all(isinstance(n, str) for n in self.names) or len(set(self.names)) != d:
            raise ValueError(f"names must be distinct str, got {self.names!r}")
        for name, x in zip(self.names, self.coordinates):
            if not (isinstance(x, torch.Tensor) and x.ndim == 1 and x.shape[0] >= 1
                    and x.dtype in (torch.float32, torch.float64)):
                raise TypeError(f"coordinates[{name!r}] must be a non-empty 1-D float32/float64 "
                                f"tensor, got {x!r:.80}")
        for name, h in zip(self.names, self.spacing):
            check_real(f"spacing[{name!r}]", h, low=0.0, low_open=True)
        for name, p in zip(self.names, self.periodic):
            if not isinstance(p, bool):
                raise TypeError(f"periodic[{name!r}] must be a bool, got {type(p).__name__}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of points per axis."""
        return tuple(int(c.shape[0]) for c in self.coordinates)

    @property
    def size(self) -> int:
        """P = total number of grid points."""
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        """Number of axes d."""
        return len(self.names)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the coordinates."""
        return self.coordinates[0].dtype

    @property
    def lengths(self) -> tuple[float, ...]:
        """Domain length per axis: n h if periodic (the period), (n − 1) h otherwise."""
        return tuple(
            h * (n if p else n - 1) for h, n, p in zip(self.spacing, self.shape, self.periodic)
        )

    def axis_index(self, axis: int | str) -> int:
        """Position of ``axis`` (a name or an index, negative allowed) among the grid axes."""
        if isinstance(axis, str):
            check_one_of("axis", axis, self.names)
            return self.names.index(axis)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"axis must be an axis name or an int, got {type(axis).__name__}")
        if not -self.ndim <= axis < self.ndim:
            raise ValueError(
                f"axis must satisfy {-self.ndim} <= axis < {self.ndim} for a grid with axes "
                f"{self.names}, got {axis}"
            )
        return axis % self.ndim

    def mesh(self) -> tuple[torch.Tensor, ...]:
        """Coordinate fields X_k(i₁, …, i_d) = x_k[i_k], each of shape ``self.shape``."""
        return tuple(torch.meshgrid(*self.coordinates, indexing="ij"))

    def points(self) -> torch.Tensor:
        """All grid points as a ``(size, ndim)`` tensor, rows in C order of the axes."""
        return torch.stack([m.reshape(-1) for m in self.mesh()], dim=-1)


def uniform_grid(
    axes: Mapping[str, tuple[float, float, int]],
    *,
    periodic: Iterable[str] = (),
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Grid:
    """Uniform tensor-product grid from ``{name: (start, stop, points)}``, axes in that order.

    Axis k covers [start, stop]: x_j = start + j h with h = (stop − start)/(n − 1), or, if
    ``name in periodic``, h = (stop − start)/n and the point x = stop is left out.

    Example::

        >>> from diffnum.pde import uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 64), "t": (0.0, 0.5, 41)}, periodic=("x",))
        >>> grid.shape, grid.spacing  # periodic x: 64 points, x = 1 left out
        ((64, 41), (0.015625, 0.0125))
    """
    if not isinstance(axes, Mapping) or len(axes) == 0:
        raise ValueError(f"axes must be a non-empty mapping name -> (start, stop, points), "
                         f"got {axes!r}")
    check_one_of("dtype", dtype, (torch.float32, torch.float64))
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device, got {device!r}") from None
    periodic = (periodic,) if isinstance(periodic, str) else tuple(periodic)
    for name in periodic:
        check_one_of("periodic", name, tuple(axes))
    names, coordinates, spacing, flags = [], [], [], []
    for name, spec in axes.items():
        if not isinstance(name, str):
            raise TypeError(f"axis names must be str, got {type(name).__name__}")
        if not (isinstance(spec, tuple | list) and len(spec) == 3):
            raise ValueError(f"axes[{name!r}] must be (start, stop, points), got {spec!r}")
        start = check_real(f"axes[{name!r}] start", spec[0])
        stop = check_real(f"axes[{name!r}] stop", spec[1])
        n = check_count(f"axes[{name!r}] points", spec[2], low=2, high=10**8)
        if not stop > start:
            raise ValueError(
                f"axes[{name!r}] needs finite start < stop, got start={start}, stop={stop}"
            )
        is_periodic = name in periodic
        h = (stop - start) / (n if is_periodic else n - 1)
        # Coordinates are built in float64 and cast so that float32 grids round only once.
        x = start + h * torch.arange(n, dtype=torch.float64)
        names.append(name)
        coordinates.append(x.to(dtype=dtype, device=device))
        spacing.append(h)
        flags.append(is_periodic)
    return Grid(tuple(names), tuple(coordinates), tuple(spacing), tuple(flags))
