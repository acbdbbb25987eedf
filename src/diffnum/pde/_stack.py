"""The stacked residual of the hard-constraint least-squares problem."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from diffnum._core.validation import check_real, check_same_dtype_device, real_floating_dtype
from diffnum.pde._checks import as_values, check_grid
from diffnum.pde._grid import Grid
from diffnum.pde._protocol import PhysicsPDE

_PDE_METHODS = ("residual_from_basis_terms", "initial_points", "initial_free",
                "boundary_points", "boundary_targets")


def stacked_residual(
    pde: PhysicsPDE,
    terms: Mapping[str, torch.Tensor],
    weights: torch.Tensor,
    basis: torch.Tensor,
    grid: Grid,
    initial: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    ridge: float = 1e-4,
) -> torch.Tensor:
    """r(w) = [F(Bw) at the collocation rows; (Bw)(·, t₀) − u₀; 𝓑(Bw) − g; λ w], shape
    ``(..., M + n₀ + n_𝓑 + N)``, the residual whose ½‖r‖² the hard-constraint layer minimises.

    Args:
        pde: a PDE object (:class:`PDE1D` subclass or :class:`NavierStokes2D`).
        terms: ``pde.basis_terms(basis, grid)``, full grid (``rows`` selects from it) or
            already restricted to the M collocation rows (then leave ``rows`` None).
        weights: w, shape ``(..., N)``.
        basis: B, shape ``(..., grid.size, N)``; only the initial and boundary rows are used.
        initial: u₀ at the initial points, broadcastable to ``pde.initial_points(grid).shape``.
        rows: optional indices of the M collocation points among the grid points (an integer
            tensor or sequence, negative indices counting from the end, or a boolean mask).
        ridge: λ ≥ 0 of the ridge term λw (the spec's 1e-4).

    Example::

        >>> import torch
        >>> import diffnum.pde as pde
        >>> heat = pde.Heat1D(0.1, boundary="dirichlet")
        >>> grid = pde.uniform_grid({"x": (0.0, 1.0, 33), "t": (0.0, 0.1, 11)})
        >>> u = heat.exact_solution(grid)
        >>> basis = u.reshape(1, -1, 1)  # one basis function: the solution itself
        >>> terms = heat.basis_terms(basis, grid)
        >>> w = torch.ones(1, 1, dtype=torch.float64)
        >>> r = pde.stacked_residual(heat, terms, w, basis, grid, u[:, 0], ridge=0.0)
        >>> bool(r.abs().max() < 1e-3)  # PDE, initial and boundary rows all nearly zero at w = 1
        True
    """
    missing = [m for m in _PDE_METHODS if not callable(getattr(pde, m, None))]
    if missing:
        raise TypeError(f"pde must be a PDE object (PDE1D or NavierStokes2D), got "
                        f"{type(pde).__name__} without {missing}")
    real_floating_dtype("weights", weights)
    real_floating_dtype("basis", basis)
    check_same_dtype_device({"basis": basis, "weights": weights})
    check_grid("grid", grid)
    ridge = check_real("ridge", ridge, low=0.0)
    if weights.ndim < 1:
        raise ValueError(f"weights must have shape (..., N), got {tuple(weights.shape)}")
    if basis.ndim < 2 or basis.shape[-2] != grid.size or basis.shape[-1] != weights.shape[-1]:
        raise ValueError(
            f"basis must have shape (..., {grid.size}, {weights.shape[-1]}) for this grid and "
            f"weights of shape {tuple(weights.shape)}, got {tuple(basis.shape)}"
        )
    try:
        batch = torch.broadcast_shapes(basis.shape[:-2], weights.shape[:-1])
    except RuntimeError:
        raise ValueError(f"weights {tuple(weights.shape)} and basis {tuple(basis.shape)} must "
                         "have broadcastable batch dimensions") from None
    if not isinstance(terms, Mapping):
        raise TypeError(f"terms must be a mapping name -> tensor (from pde.basis_terms), got "
                        f"{type(terms).__name__}")
    if rows is not None:
        rows = _check_rows(rows, terms)
        terms = {name: value[..., rows, :] for name, value in terms.items()}
    r_pde = pde.residual_from_basis_terms(terms, weights)
    w = weights.unsqueeze(-1)
    initial_index = pde.initial_points(grid)
    u0 = as_values("initial", initial, tuple(initial_index.shape), basis, batch)
    r_initial = (basis[..., initial_index.reshape(-1), :] @ w).squeeze(-1) - u0.reshape(
        *u0.shape[: u0.ndim - initial_index.ndim], initial_index.numel())
    # The corner rule (PDE1D.initial_free): at a constrained end the boundary row holds at t₀.
    r_initial = r_initial * pde.initial_free(grid).reshape(-1).to(r_initial.device)
    boundary_index = pde.boundary_points(grid).reshape(-1)
    targets = pde.boundary_targets(grid).to(basis).reshape(-1)
    r_boundary = (basis[..., boundary_index, :] @ w).squeeze(-1) - targets
    parts = [r_pde, r_initial, r_boundary, ridge * weights]
    shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.broadcast_to(*shape, p.shape[-1]) for p in parts], dim=-1)


def _check_rows(rows: object, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``rows`` as an index tensor into dimension −2 of the terms: integers in range or a mask."""
    if isinstance(rows, bool) or not isinstance(rows, torch.Tensor | list | tuple | range):
        raise TypeError(f"rows must be a tensor or sequence of integer indices, got "
                        f"{type(rows).__name__}")
    sizes = {v.shape[-2] for v in terms.values() if isinstance(v, torch.Tensor) and v.ndim >= 2}
    if len(sizes) != 1:
        raise ValueError("terms must hold tensors (..., P, N) of one P to select rows from")
    (size,) = sizes
    try:
        index = torch.as_tensor(rows)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"rows must hold integer indices, got {rows!r:.80}") from None
    if index.ndim != 1:
        raise ValueError(f"rows must be 1-D, got shape {tuple(index.shape)}")
    if index.dtype == torch.bool:
        if index.shape[0] != size:
            raise ValueError(f"rows as a mask must have {size} entries, got {index.shape[0]}")
        return index
    if index.is_floating_point() or index.is_complex():
        raise TypeError(f"rows must hold integer indices, got dtype {index.dtype}")
    if index.numel() and not (-size <= int(index.min()) and int(index.max()) < size):
        raise ValueError(f"rows must lie in [{-size}, {size}) (the grid points), got values in "
                         f"[{int(index.min())}, {int(index.max())}]")
    return index
