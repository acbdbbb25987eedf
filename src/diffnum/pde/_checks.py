"""Argument checks shared inside the PDE pillar (on top of :mod:`diffnum._core.validation`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from diffnum._core.validation import (
    check_finite,
    check_int_in_range,
    check_one_of,
    check_same_dtype_device,
    real_floating_dtype,
)
from diffnum.pde._grid import Grid

# An upper bound on the entries of a tensor a function allocates from count arguments, so a
# typo (10**12) raises instead of exhausting memory: 2**31 float64 entries are 16 GiB.
MAX_ENTRIES = 2**31


def check_bool(name: str, value: object) -> bool:
    """A real ``bool`` (not a truthy string or number)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, allowed: tuple[int, ...]) -> int:
    """An ``int`` (not a bool or float) among ``allowed``."""
    check_int_in_range(name, value, min(allowed), max(allowed))
    check_one_of(name, value, allowed)
    return value


def check_grid(name: str, grid: object) -> Grid:
    if not isinstance(grid, Grid):
        raise TypeError(f"{name} must be a Grid (see uniform_grid), got {type(grid).__name__}")
    return grid


def check_basis(basis: torch.Tensor, grid: Grid, grid_check: Callable[[Grid], object]) -> None:
    """A real floating basis of shape ``(..., grid.size, N)``; ``grid_check(grid)`` runs between
    the dtype and the shape checks (``ValueError``/``TypeError`` naming the argument)."""
    real_floating_dtype("basis", basis)
    grid_check(grid)
    if basis.ndim < 2 or basis.shape[-2] != grid.size:
        raise ValueError(f"basis must have shape (..., {grid.size}, N) for a grid of shape "
                         f"{grid.shape}, got {tuple(basis.shape)}")


def check_entries(names: str, count: int) -> None:
    """Raise ``ValueError`` if an allocation of ``count`` entries exceeds :data:`MAX_ENTRIES`."""
    if count > MAX_ENTRIES:
        raise ValueError(f"{names} ask for {count} entries, more than the limit {MAX_ENTRIES}")


def check_terms(terms: object, needed: tuple[str, ...], weights: torch.Tensor
                ) -> Mapping[str, torch.Tensor]:
    """``terms`` a mapping holding ``needed`` real floating tensors ``(..., M, N)`` of one shape,
    with the dtype and device of ``weights`` ``(..., N)``."""
    real_floating_dtype("weights", weights)
    if not isinstance(terms, Mapping):
        raise TypeError(f"terms must be a mapping name -> tensor (from basis_terms), got "
                        f"{type(terms).__name__}")
    missing = [name for name in needed if name not in terms]
    if missing:
        raise ValueError(f"terms is missing {missing}; it needs {needed}")
    for name in needed:
        real_floating_dtype(f"terms[{name!r}]", terms[name])
        if terms[name].ndim < 2:
            raise ValueError(f"terms[{name!r}] must have shape (..., M, N), got "
                             f"{tuple(terms[name].shape)}")
    try:
        shape = torch.broadcast_shapes(*(terms[name].shape for name in needed))
    except RuntimeError:
        raise ValueError(f"terms must have broadcastable shapes (..., M, N), got "
                         f"{ {name: tuple(terms[name].shape) for name in needed} }") from None
    check_same_dtype_device({f"terms[{needed[0]!r}]": terms[needed[0]], "weights": weights})
    if weights.ndim < 1 or weights.shape[-1] != shape[-1]:
        raise ValueError(f"weights must have shape (..., {shape[-1]}) to match the basis, got "
                         f"{tuple(weights.shape)}")
    try:
        torch.broadcast_shapes(shape[:-2], weights.shape[:-1])
    except RuntimeError:
        raise ValueError(f"weights {tuple(weights.shape)} and terms {tuple(shape)} must have "
                         "broadcastable batch dimensions") from None
    return terms


def as_values(name: str, values: object, shape: tuple[int, ...], like: torch.Tensor,
              batch: tuple[int, ...] = ()) -> torch.Tensor:
    """``values`` (a real number or tensor) as a tensor of ``(..., *shape)`` with the dtype and
    device of ``like``: batch dimensions are kept (they must broadcast with ``batch``), the
    trailing ones broadcast to ``shape``."""
    if isinstance(values, bool) or not isinstance(values, int | float | list | tuple
                                                  | torch.Tensor):
        raise TypeError(f"{name} must be a tensor or a real number, got {type(values).__name__}")
    if isinstance(values, torch.Tensor) and (values.is_complex() or values.dtype == torch.bool):
        raise TypeError(f"{name} must be real, got dtype {values.dtype}")
    try:
        out = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor or a nested sequence of real numbers, got "
                        f"{values!r:.80}") from None
    lead = out.shape[: max(out.ndim - len(shape), 0)]
    try:
        torch.broadcast_shapes(lead, batch)
        return out.broadcast_to(*lead, *shape)
    except RuntimeError:
        raise ValueError(f"{name} must broadcast to ({', '.join(map(str, (*batch, *shape)))}), "
                         f"got shape {tuple(out.shape)}") from None


def finite_tensor(name: str, x: object) -> torch.Tensor:
    """A real floating tensor without NaN or ±inf."""
    real_floating_dtype(name, x)
    check_finite(name, x)
    return x


def broadcasts_to(shape: torch.Size | tuple[int, ...], target: torch.Size | tuple[int, ...]
                  ) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target``."""
    try:
        return torch.broadcast_shapes(shape, target) == tuple(target)
    except RuntimeError:
        return False
