"""The stacked residual of the hard-constraint least-squares problem."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from diffnum._core.validation import real_floating_dtype
from diffnum.pde._grid import Grid


def stacked_residual(
    pde,
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
        rows: optional indices of the M collocation points among the grid points.
        ridge: λ ≥ 0 of the ridge term λw (the spec's 1e-4).
    """
    real_floating_dtype("weights", weights)
    real_floating_dtype("basis", basis)
    ridge = float(ridge)
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    if basis.ndim < 2 or basis.shape[-2] != grid.size or basis.shape[-1] != weights.shape[-1]:
        raise ValueError(
            f"basis must have shape (..., {grid.size}, {weights.shape[-1]}) for this grid and "
            f"weights of shape {tuple(weights.shape)}, got {tuple(basis.shape)}"
        )
    if rows is not None:
        terms = {name: value[..., rows, :] for name, value in terms.items()}
    r_pde = pde.residual_from_basis_terms(terms, weights)
    w = weights.unsqueeze(-1)
    initial_index = pde.initial_points(grid)
    r_initial = (basis[..., initial_index.reshape(-1), :] @ w).squeeze(-1) - torch.as_tensor(
        initial, dtype=basis.dtype, device=basis.device
    ).broadcast_to(initial_index.shape).reshape(-1)
    # The corner rule (PDE1D.initial_free): at a constrained end the boundary row holds at t₀.
    r_initial = r_initial * pde.initial_free(grid).reshape(-1).to(r_initial.device)
    boundary_index = pde.boundary_points(grid).reshape(-1)
    targets = pde.boundary_targets(grid).to(basis).reshape(-1)
    r_boundary = (basis[..., boundary_index, :] @ w).squeeze(-1) - targets
    parts = [r_pde, r_initial, r_boundary, ridge * weights]
    shape = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.broadcast_to(*shape, p.shape[-1]) for p in parts], dim=-1)
