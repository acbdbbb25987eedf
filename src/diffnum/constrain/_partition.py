"""The fixed router of the mixture of experts: disjoint space–time blocks of a grid."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from diffnum._core.validation import check_count, check_int_in_range
from diffnum.pde import Grid


def check_grid(grid: object) -> Grid:
    """``grid`` must be a :class:`~diffnum.pde.Grid` (e.g. from ``uniform_grid``)."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a diffnum.pde.Grid (see uniform_grid), "
                        f"got {type(grid).__name__}")
    return grid


def expert_layout(grid: Grid, experts: Sequence[int] | Mapping[str, int]) -> tuple[int, ...]:
    """Blocks per grid axis, in the grid's axis order, from a tuple (grid order) or a mapping
    ``{axis name: blocks}`` (axes left out get 1). Every axis must split evenly."""
    check_grid(grid)
    if isinstance(experts, str) or not isinstance(experts, (Sequence, Mapping)):
        raise TypeError(f"experts must be a tuple of block counts per grid axis {grid.names} or "
                        f"a mapping {{axis name: blocks}}, got {type(experts).__name__}")
    if isinstance(experts, Mapping):
        unknown = sorted(set(experts) - set(grid.names))
        if unknown:
            raise ValueError(f"experts names axes {unknown} the grid does not have; its axes "
                             f"are {grid.names}")
        layout = tuple(experts.get(name, 1) for name in grid.names)
    else:
        layout = tuple(experts)
        if len(layout) != grid.ndim:
            raise ValueError(
                f"experts must give one block count per grid axis {grid.names} "
                f"(or a mapping by name), got {tuple(experts)!r}"
            )
    for name, count, n in zip(grid.names, layout, grid.shape):
        check_count(f"experts[{name!r}]", count)
        if n % count:
            raise ValueError(
                f"grid axis {name!r} has {n} points, which {count} experts cannot split "
                "into equal blocks; choose a divisor of the axis length"
            )
    return layout


def expert_index(grid: Grid, experts: Sequence[int] | Mapping[str, int]) -> torch.Tensor:
    """Flat grid indices of every expert's block, shape ``(K, P/K)``, K = ∏ blocks.

    Expert k = (k₁, …, k_d) in C order owns the points whose index along axis j lies in
    [k_j n_j/b_j, (k_j + 1) n_j/b_j); within a block, points keep their C order.

    Example::

        >>> from diffnum.constrain import expert_index
        >>> from diffnum.pde import uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 4)})
        >>> expert_index(grid, (2, 1))[1, :4].tolist()  # block 1 starts at x₄ (flat index 16)
        [16, 17, 18, 19]
    """
    layout = expert_layout(grid, experts)
    index = torch.arange(grid.size, device=grid.coordinates[0].device)
    split = []
    for n, count in zip(grid.shape, layout):
        split += [count, n // count]
    d = grid.ndim
    order = [2 * j for j in range(d)] + [2 * j + 1 for j in range(d)]
    return index.reshape(split).permute(order).reshape(math.prod(layout), -1)


def expert_owner(grid: Grid, experts: Sequence[int] | Mapping[str, int]) -> torch.Tensor:
    """The expert that owns each flat grid point, shape ``(P,)`` (inverse of
    :func:`expert_index`)."""
    index = expert_index(grid, experts)
    owner = torch.empty(grid.size, dtype=torch.long, device=index.device)
    owner[index] = torch.arange(index.shape[0], device=index.device)[:, None]
    return owner


def _point_dim(x: torch.Tensor, dim: int, name: str, arg: str) -> int:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name}: {arg} must have at least one dimension, got a 0-d tensor")
    check_int_in_range("dim", dim, -x.ndim, x.ndim - 1)
    return dim % x.ndim


def partition_domain(x: torch.Tensor, grid: Grid, experts: Sequence[int] | Mapping[str, int],
                     *, dim: int = -2) -> torch.Tensor:
    """Split the flattened grid-point dimension ``dim`` of ``x`` into (K, P/K) expert blocks.

    ``x`` has the P = ``grid.size`` points (C order) along ``dim`` — a basis ``(..., P, N)``
    with the default ``dim=-2``, a flattened field ``(..., P)`` with ``dim=-1``. The result has
    the expert dimension at ``dim`` followed by the points of each block; its inverse is
    :func:`unpartition_domain`.

    Example::

        >>> import torch
        >>> from diffnum.constrain import partition_domain
        >>> from diffnum.pde import uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 4)})
        >>> B = torch.arange(32.0).reshape(1, 32, 1)  # (batch, grid points, basis functions)
        >>> partition_domain(B, grid, (2, 1)).shape  # 2 blocks along x of 16 points each
        torch.Size([1, 2, 16, 1])
    """
    dim = _point_dim(x, dim, "partition_domain", "x")
    check_grid(grid)
    if x.shape[dim] != grid.size:
        raise ValueError(
            f"partition_domain: x must have the grid's {grid.size} points along dim {dim}, "
            f"got shape {tuple(x.shape)}"
        )
    index = expert_index(grid, experts).to(x.device)
    blocks = x.index_select(dim, index.reshape(-1))
    return blocks.unflatten(dim, tuple(index.shape))


def unpartition_domain(blocks: torch.Tensor, grid: Grid,
                       experts: Sequence[int] | Mapping[str, int], *, dim: int = -3
                       ) -> torch.Tensor:
    """Inverse of :func:`partition_domain`: blocks with the expert dimension at ``dim`` and the
    block's points at ``dim + 1`` back to the grid's P points (C order) at ``dim``.

    Example::

        >>> import torch
        >>> from diffnum.constrain import partition_domain, unpartition_domain
        >>> from diffnum.pde import uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 4)})
        >>> B = torch.arange(32.0).reshape(1, 32, 1)  # (batch, grid points, basis functions)
        >>> torch.equal(unpartition_domain(partition_domain(B, grid, (2, 1)), grid, (2, 1)), B)
        True
    """
    dim = _point_dim(blocks, dim, "unpartition_domain", "blocks")
    index = expert_index(grid, experts).to(blocks.device)
    if dim + 1 >= blocks.ndim or tuple(blocks.shape[dim:dim + 2]) != tuple(index.shape):
        raise ValueError(
            f"unpartition_domain: blocks need (experts, points) = {tuple(index.shape)} at dims "
            f"({dim}, {dim + 1}), got shape {tuple(blocks.shape)}"
        )
    inverse = torch.argsort(index.reshape(-1))
    return blocks.flatten(dim, dim + 1).index_select(dim, inverse)
