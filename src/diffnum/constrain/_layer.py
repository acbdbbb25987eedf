"""The hard-constraint layer (PI-HC) and its mixture of experts (PI-HC-MoE)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from diffnum._core.validation import check_one_of, real_floating_dtype
from diffnum.constrain._distributed import active_group, gather_experts, shard
from diffnum.constrain._partition import expert_index, expert_layout, expert_owner
from diffnum.pde import Grid
from diffnum.solve import (
    GaussNewton,
    ImplicitAdjoint,
    LevenbergMarquardt,
    Status,
    UnrollAdjoint,
    least_squares,
)

Experts = Sequence[int] | Mapping[str, int]


@dataclass(frozen=True)
class ConstrainedSolution:
    """Output of :class:`HardConstraint` / :class:`MixtureOfExperts`.

    Attributes:
        u: the constrained prediction u = b(x, t)ᵀ w_k on expert k's block, shape
            ``(*batch, *grid.shape)``.
        weights: w*, shape ``(*batch, K, N)`` (K = 1 for PI-HC); differentiable.
        status: :class:`~diffnum.solve.Status` code per solve, shape ``(*batch, K)``.
        steps: Levenberg–Marquardt iterations per solve, shape ``(*batch, K)``.
        residual_norm: ‖r(w*)‖₂ of each solve (sampled PDE rows, constraint rows, ridge),
            shape ``(*batch, K)``.
        stats: sampled points per expert, constraint rows per expert, solver counters.
    """

    u: torch.Tensor
    weights: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    residual_norm: torch.Tensor
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def converged(self) -> torch.Tensor:
        """Boolean ``(*batch, K)``: which solves met their tolerances."""
        return self.status == int(Status.CONVERGED)

    @property
    def converged_fraction(self) -> float:
        """Share of the solves that converged."""
        return float(self.converged.double().mean())

    def failures(self) -> dict[str, int]:
        """Number of solves per failure status (``MAX_STEPS``, ``DIVERGED``, ``NONFINITE``)."""
        return {s.name: int((self.status == int(s)).sum()) for s in Status
                if s is not Status.CONVERGED}


def _pde_partials(pde, names: tuple[str, ...], fields: torch.Tensor) -> torch.Tensor:
    """∂F/∂f_j pointwise: F depends on the fields f_j = T_j w only point by point, so one
    backward pass of ΣF gives every partial at every point. Differentiable when gradients are
    on (an unrolled solve differentiates through the Jacobian)."""
    differentiable = torch.is_grad_enabled() and fields.requires_grad
    with torch.enable_grad():
        f = fields if differentiable else fields.detach().requires_grad_(True)
        F = pde.pointwise_residual(dict(zip(names, f.unbind(-2))))
        (partials,) = torch.autograd.grad(F.sum(), f, create_graph=differentiable)
    return partials


class _ExpertProblem:
    """r(w) = [s F(T w) at the sampled rows; C w − c; λ w] and its Jacobian
    J = [s Σ_j diag(∂F/∂f_j) T_j; C; λ I] for every (batch, expert) at once.

    s is a row weight ``(b, K, M)``: the residual scale on interior rows, 0 on rows that sit
    where an initial or boundary condition holds instead of the PDE.

    T ``(b, K, n_terms, M, N)`` holds the basis terms at each expert's sampled rows, C
    ``(b, K, R, N)`` / c ``(b, K, R)`` the constraint rows routed to it (zero rows pad experts
    with fewer); they are passed as ``args`` of the solve so that gradients reach the basis.
    """

    def __init__(self, pde, names: tuple[str, ...], ridge: float) -> None:
        self.pde, self.names, self.ridge = pde, names, ridge

    def _fields(self, w: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        return (T @ w[..., None, :, None]).squeeze(-1)

    def residual(self, w: torch.Tensor, T: torch.Tensor, row_weight: torch.Tensor,
                 C: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        F = self.pde.pointwise_residual(dict(zip(self.names, self._fields(w, T).unbind(-2))))
        return torch.cat([row_weight * F, (C @ w.unsqueeze(-1)).squeeze(-1) - c,
                          self.ridge * w], dim=-1)

    def jacobian(self, w: torch.Tensor, T: torch.Tensor, row_weight: torch.Tensor,
                 C: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        partials = row_weight.unsqueeze(-2) * _pde_partials(self.pde, self.names,
                                                            self._fields(w, T))
        J_pde = partials[..., 0, :, None] * T[..., 0, :, :]
        for j in range(1, T.shape[-3]):
            J_pde = J_pde + partials[..., j, :, None] * T[..., j, :, :]
        eye = self.ridge * torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
        return torch.cat([J_pde, C, eye.expand(*C.shape[:-2], *eye.shape)], dim=-2)


def _route_rows(rows: torch.Tensor, values: torch.Tensor, points: torch.Tensor, grid: Grid,
                experts: Experts, routing: str, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Constraint rows per expert ``(b, K, R_k, N)``: all of them for every expert
    (``"replicate"``), or those whose point lies in the expert's block (``"partition"``),
    padded with zero rows (which change neither r nor J) to the largest count."""
    if routing == "replicate" or K == 1:
        return (rows.unsqueeze(1).expand(rows.shape[0], K, *rows.shape[1:]),
                values.unsqueeze(1).expand(values.shape[0], K, values.shape[-1]))
    row_owner = expert_owner(grid, experts).to(points.device)[points]
    width = max(int((row_owner == k).sum()) for k in range(K))
    out_rows = rows.new_zeros(rows.shape[0], K, width, rows.shape[-1])
    out_values = values.new_zeros(values.shape[0], K, width)
    for k in range(K):
        mine = (row_owner == k).nonzero().squeeze(-1)
        out_rows[:, k, : mine.numel()] = rows[:, mine]
        out_values[:, k, : mine.numel()] = values[:, mine]
    return out_rows, out_values


def expert_residual(pde, terms: Mapping[str, torch.Tensor], weights: torch.Tensor, grid: Grid,
                    experts: Experts | None = None) -> torch.Tensor:
    """PDE residual F(u) on the whole grid for u = b(x, t)ᵀ w_k on block k, shape
    ``(*batch, *grid.shape)``; derivatives are those of the basis (``terms`` from
    ``pde.basis_terms`` on the full grid), so no difference quotient straddles two experts.

    ``weights`` ``(*batch, K, N)``; ``experts=None`` means K = 1 (then it is F(Bw)).
    """
    names = tuple(pde.terms)
    layout = (1,) * grid.ndim if experts is None else experts
    owner = expert_owner(grid, layout).to(weights.device)
    fields = {n: _select_expert(terms[n], weights, owner) for n in names}
    return pde.pointwise_residual(fields).unflatten(-1, grid.shape)


def interior_mask(pde, grid: Grid) -> torch.Tensor:
    """Where the PDE itself holds: ``True`` at every grid point that carries no initial or
    boundary condition (``pde.constraint_rows``), shape ``grid.shape``.

    The residual at the initial time and at constrained ends is not a condition of the
    problem (there u₀ and 𝓑 hold instead) and, where u₀ and the boundary values disagree at
    a corner, is as large as the grid is fine; the layer's collocation rows and the physics
    loss use the interior only.
    """
    probe = torch.zeros(1, grid.size, 1, dtype=grid.dtype, device=grid.coordinates[0].device)
    _, _, points = pde.constraint_rows(probe, grid, 0.0)
    mask = torch.ones(grid.size, dtype=torch.bool, device=points.device)
    mask[points] = False
    return mask.reshape(grid.shape)


def _select_expert(matrix: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor
                   ) -> torch.Tensor:
    """(A w_{k(p)})_p for A ``(*batch, P, N)``, w ``(*batch, K, N)``, k(p) = ``owner[p]``:
    A wᵀ for every expert (a P × K product), then each point's own column — no copy of A."""
    products = matrix @ weights.mT  # (*batch, P, K)
    if products.shape[-1] == 1:
        return products.squeeze(-1)
    return products.gather(-1, owner.expand(*products.shape[:-1]).unsqueeze(-1)).squeeze(-1)


class HardConstraint(nn.Module):
    r"""PI-HC: u = B w* with w* = argmin_w ½‖r(w; B, φ)‖² (Négiar et al. 2023).

    r stacks the PDE residual F(Bw) at ``n_sampled`` collocation points drawn anew at every
    call from the interior (:func:`interior_mask`; if a block has fewer interior points than
    its share of M, the rest get weight 0), the initial and boundary conditions as rows C w = c
    (``pde.constraint_rows``), and the ridge λw. The solve is
    :func:`diffnum.solve.least_squares` (Levenberg–Marquardt, float64 recommended), batched
    over the leading dimensions of the basis; its gradient is implicit (one N×N solve and one
    VJP, memory independent of the iteration count) unless ``adjoint=UnrollAdjoint()``.

    Args:
        pde: a PDE object (``Heat1D``, ``DiffusionSorption1D``, ``NavierStokes2D``, …).
        n_sampled: collocation points M per solve (all experts together in a mixture), or
            None for every grid point.
        solver: ``LevenbergMarquardt`` (default, rtol = atol = 1e-8) or ``GaussNewton``.
        adjoint: ``ImplicitAdjoint()`` (default) or ``UnrollAdjoint()``.
        ridge: λ ≥ 0.
        max_steps: iteration limit of each solve.
        residual_scale: s > 0 multiplying the PDE rows, r = [s F; C w − c; λ w] — the unit
            of the residual relative to the initial/boundary rows (e.g. the time horizon T
            for a residual written in τ = t/T).

    ``forward(basis, grid, initial, *, terms=None, generator=None, pde=None)``: ``basis``
    ``(*batch, P, N)``, ``initial`` u₀ at the initial points (broadcastable), ``terms`` the
    precomputed ``pde.basis_terms(basis, grid)`` (computed if None), ``pde`` overrides the
    PDE (its parameters) for this call. Returns a :class:`ConstrainedSolution` with K = 1.
    """

    def __init__(self, pde, n_sampled: int | None = None, *,
                 solver: LevenbergMarquardt | GaussNewton | None = None,
                 adjoint: ImplicitAdjoint | UnrollAdjoint | None = None,
                 ridge: float = 1e-4, max_steps: int = 50, residual_scale: float = 1.0
                 ) -> None:
        super().__init__()
        residual_scale = float(residual_scale)
        if not (math.isfinite(residual_scale) and residual_scale > 0):
            raise ValueError(f"residual_scale must be finite and > 0, got {residual_scale}")
        self.residual_scale = residual_scale
        if n_sampled is not None and (isinstance(n_sampled, bool) or not isinstance(
                n_sampled, int) or n_sampled < 1):
            raise ValueError(f"n_sampled must be an int >= 1 or None, got {n_sampled!r}")
        ridge = float(ridge)
        if not (math.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge must be finite and >= 0, got {ridge}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
        self.pde = pde
        self.n_sampled = n_sampled
        self.solver = LevenbergMarquardt(rtol=1e-8, atol=1e-8) if solver is None else solver
        self.adjoint = ImplicitAdjoint() if adjoint is None else adjoint
        self.ridge = ridge
        self.max_steps = max_steps

    def forward(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor, *,
                terms: Mapping[str, torch.Tensor] | None = None,
                generator: torch.Generator | None = None, pde=None) -> ConstrainedSolution:
        """Solve the constrained least squares for every batch element (see the class)."""
        return solve_experts(self, basis, grid, initial, (1,) * grid.ndim, terms=terms,
                             generator=generator, pde=pde, routing="replicate",
                             distributed=False)

    def extra_repr(self) -> str:
        return (f"pde={type(self.pde).__name__}, n_sampled={self.n_sampled}, ridge={self.ridge}, "
                f"max_steps={self.max_steps}")


class MixtureOfExperts(nn.Module):
    r"""PI-HC-MoE: K hard constraints, one per space–time block Ω_k of a fixed router.

    Expert k solves w_k* = argmin ½‖r_k(w)‖² over the shared basis restricted to Ω_k with
    its own n_sampled/K collocation points; u = b(x, t)ᵀ w_k* on Ω_k (Chalapathi et al.
    2024). The implicit Jacobian is block diagonal, so every expert's backward is its own.
    Experts are solved as one vectorized batch; with ``torch.distributed`` initialized (or
    ``distributed=True``) they are sharded over the ranks, solved locally and all-gathered
    (train the basis network with DDP: the gather's backward is written for DDP's gradient
    averaging). K = 1 is exactly :class:`HardConstraint`.

    Args:
        hard_constraint: the :class:`HardConstraint` whose settings every expert uses.
        experts: blocks per grid axis in grid order, e.g. ``(4, 1)`` on an (x, t) grid, or a
            mapping ``{"x": 4}``.
        routing: how the initial/boundary rows reach the experts: ``"replicate"`` (every
            expert fits all of them, as the paper for diffusion–sorption) or ``"partition"``
            (each row to the expert whose block holds its point, as for Navier–Stokes).
        distributed: None (shard when a multi-rank process group is initialized), True, False.
        process_group: the group to shard over (default: the world).
    """

    def __init__(self, hard_constraint: HardConstraint, experts: Experts, *,
                 routing: str = "replicate", distributed: bool | None = None,
                 process_group=None) -> None:
        super().__init__()
        if not isinstance(hard_constraint, HardConstraint):
            raise TypeError(f"hard_constraint must be a HardConstraint, got "
                            f"{type(hard_constraint).__name__}")
        check_one_of("routing", routing, ("replicate", "partition"))
        self.hard_constraint = hard_constraint
        self.experts = dict(experts) if isinstance(experts, Mapping) else tuple(experts)
        self.routing = routing
        self.distributed = distributed
        self.process_group = process_group

    def forward(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor, *,
                terms: Mapping[str, torch.Tensor] | None = None,
                generator: torch.Generator | None = None, pde=None) -> ConstrainedSolution:
        """As :meth:`HardConstraint.forward`, with K = ∏ experts solves per batch element."""
        return solve_experts(self.hard_constraint, basis, grid, initial, self.experts,
                             terms=terms, generator=generator, pde=pde, routing=self.routing,
                             distributed=self.distributed, group=self.process_group)

    def extra_repr(self) -> str:
        return f"experts={self.experts}, routing={self.routing!r}"


def solve_experts(layer: HardConstraint, basis: torch.Tensor, grid: Grid, initial: torch.Tensor,
                  experts: Experts, *, terms=None, generator=None, pde=None,
                  routing: str = "replicate", distributed: bool | None = None, group=None
                  ) -> ConstrainedSolution:
    """The shared engine of :class:`HardConstraint` and :class:`MixtureOfExperts`."""
    pde = layer.pde if pde is None else pde
    real_floating_dtype("basis", basis)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
    if basis.ndim < 3 or basis.shape[-2] != grid.size:
        raise ValueError(
            f"basis must have shape (*batch, {grid.size}, N) for a grid of shape {grid.shape} "
            f"(one batch dimension at least), got {tuple(basis.shape)}"
        )
    layout = expert_layout(grid, experts)
    K = math.prod(layout)
    batch, P, N = basis.shape[:-2], basis.shape[-2], basis.shape[-1]
    P_k = P // K
    if layer.n_sampled is None:
        M_k = P_k
    else:
        if layer.n_sampled % K or layer.n_sampled // K > P_k:
            raise ValueError(
                f"n_sampled={layer.n_sampled} must be a multiple of the {K} experts and at most "
                f"{P} (the grid's points)"
            )
        M_k = layer.n_sampled // K
    if terms is None:
        terms = pde.basis_terms(basis, grid)
    names = tuple(pde.terms)
    flat_basis = basis.reshape(-1, P, N)
    b = flat_basis.shape[0]
    index = expert_index(grid, layout).to(basis.device)  # (K, P_k) flat grid points

    group = active_group(distributed, group)
    start, stop = (0, K) if group is None else shard(K, group)

    initial_shape = tuple(pde.initial_points(grid).shape)
    initial = torch.as_tensor(initial, dtype=basis.dtype, device=basis.device)
    try:
        initial = initial.broadcast_to(*batch, *initial_shape).reshape(b, *initial_shape)
    except RuntimeError:
        raise ValueError(
            f"initial must broadcast to (*batch, *initial points) = {(*batch, *initial_shape)}, "
            f"got shape {tuple(initial.shape)}"
        ) from None
    C_all, c_all, points = pde.constraint_rows(flat_basis, grid, initial)
    interior = interior_mask(pde, grid).reshape(-1).to(basis.device)
    interior_blocks = interior[index]  # (K, P_k)

    # Every rank draws the same numbers for all K experts, so a sharded run samples exactly
    # the rows a single process would. Interior points are drawn first; only the sampled
    # rows of the terms are copied.
    if M_k < P_k:
        scores = torch.rand(b, K, P_k, generator=generator, dtype=torch.float64)
        scores = torch.where(interior_blocks.to(scores.device), scores, -1.0)
        local = scores.topk(M_k, dim=-1, sorted=False).indices.to(basis.device)
        rows = index.expand(b, K, P_k).gather(-1, local)  # (b, K, M_k)
    else:
        rows = index.expand(b, K, P_k)
    rows = rows[:, start:stop]
    row_weight = torch.where(interior[rows], layer.residual_scale, 0.0).to(basis.dtype)
    rows = rows.reshape(b, -1, 1).expand(-1, -1, N)
    T = torch.stack([terms[n].reshape(b, P, N).gather(1, rows) for n in names], dim=1)
    T = T.unflatten(2, (stop - start, M_k)).transpose(1, 2)  # (b, K_local, n_terms, M_k, N)
    C, c = _route_rows(C_all, c_all, points, grid, layout, routing, K)
    C, c = C[:, start:stop], c[:, start:stop]

    problem = _ExpertProblem(pde, names, layer.ridge)
    w0 = flat_basis.new_zeros(b, stop - start, N)
    solution = least_squares(problem.residual, w0, (T, row_weight, C, c), solver=layer.solver,
                             max_steps=layer.max_steps, adjoint=layer.adjoint,
                             jacobian=problem.jacobian)
    weights, status, steps, norm = (solution.value, solution.status, solution.steps,
                                    solution.residual_norm)
    if group is not None:
        weights = gather_experts(weights, group)
        status, steps, norm = (gather_experts(t, group) for t in (status, steps, norm))

    u = _select_expert(flat_basis, weights, expert_owner(grid, layout).to(basis.device))
    stats = {"experts": K, "sampled_per_expert": M_k, "constraint_rows_per_expert": C.shape[-2],
             "function_evaluations": solution.stats.get("function_evaluations"),
             "jacobian_evaluations": solution.stats.get("jacobian_evaluations"),
             "sharded": group is not None}
    return ConstrainedSolution(
        u=u.reshape(*batch, *grid.shape),
        weights=weights.reshape(*batch, K, N),
        status=status.reshape(*batch, K),
        steps=steps.reshape(*batch, K),
        residual_norm=norm.reshape(*batch, K),
        stats=stats,
    )
