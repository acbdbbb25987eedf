"""The hard-constraint layer (PI-HC) and its mixture of experts (PI-HC-MoE)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from diffnum._core.status import StatusResult
from diffnum._core.summary import OneLineRepr, one_line
from diffnum._core.validation import (
    check_count,
    check_one_of,
    check_real,
    real_floating_dtype,
)
from diffnum.constrain._distributed import active_group, gather_experts, shard
from diffnum.constrain._partition import check_grid, expert_index, expert_layout, expert_owner
from diffnum.pde import Grid, PhysicsPDE
from diffnum.solve import (
    GaussNewton,
    ImplicitAdjoint,
    LevenbergMarquardt,
    Solution,
    SolveError,
    Status,
    UnrollAdjoint,
    least_squares,
)

Experts = Sequence[int] | Mapping[str, int]


@dataclass(frozen=True, repr=False)
class ConstrainedSolution(StatusResult, OneLineRepr):
    """Output of :class:`HardConstraint` / :class:`MixtureOfExperts`.

    Attributes:
        u: the constrained prediction u = u_p + b̃(x, t)ᵀ w_k on expert k's block (u_p = 0 and
            b̃ = b with ``constraints="rows"``), shape ``(*batch, *grid.shape)``.
        solution: the Levenberg–Marquardt :class:`~diffnum.solve.Solution` of the K solves
            per batch element — the solver's own object when the experts are solved in one
            process and ``batch`` has one dimension, otherwise the same fields reshaped to
            ``batch`` (and gathered over the ranks when sharded): ``value`` w*
            ``(*batch, K, N)`` (K = 1 for PI-HC, differentiable), ``status``, ``steps`` and
            ``residual_norm`` ‖r(w*)‖₂ (sampled PDE rows, constraint rows, ridge) per solve
            ``(*batch, K)``, ``stats`` its counters.
        violation: per constraint family, per solve ``(*batch, K)``: ``"pde"`` the RMS of the
            weighted PDE residual over the solve's collocated rows (the sampled rows that are
            not initial or boundary points), ``"initial"`` and
            ``"boundary"`` the largest |violation| of the initial / boundary conditions on
            the expert's block. A solve that reports CONVERGED with a large initial or boundary
            violation (possible with ``constraints="rows"``, which fits them in a
            least-squares sense) shows here.
        terms: the derivative terms of the basis b̃ the weights multiply, full grid,
            ``{name: (*batch, P, N)}`` (for :func:`expert_residual`).
        particular: the terms of u_p, ``{name: (*batch, P)}`` (zeros with ``"rows"``).
        basis: the basis b̃ the weights multiply, full grid, ``(*batch, P, N)`` (for
            :func:`interface_jumps`).
        stats: sampled points per expert, constraint rows per expert, solver counters.

    ``weights`` is ``solution.value`` and ``status`` is ``solution.status``; did it fail?
    ``converged``, ``all_converged``, ``failures()``, ``describe()`` and
    ``raise_if_failed()`` — those of ``solution`` (:class:`~diffnum.Status` protocol).

    Example::

        >>> import torch
        >>> from diffnum.constrain import HardConstraint, MixtureOfExperts
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> x, t = grid.mesh()
        >>> basis = torch.stack([x**i * t**j for i in range(3) for j in range(2)], -1)
        >>> pde = Heat1D(0.1, boundary="dirichlet")
        >>> out = MixtureOfExperts(HardConstraint(pde), (2, 1))(
        ...     basis.reshape(1, grid.size, 6), grid, torch.sin(torch.pi * x[:, 0]))
        >>> out.u.shape, out.weights.shape, out.converged.tolist(), out.failures()
        (torch.Size([1, 16, 9]), torch.Size([1, 2, 6]), [[True, True]], [])
    """

    u: torch.Tensor
    solution: Solution = field(repr=False)
    violation: dict[str, torch.Tensor] = field(default_factory=dict)
    terms: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    particular: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    stats: dict[str, Any] = field(default_factory=dict)
    basis: torch.Tensor | None = field(default=None, repr=False)

    _ERROR = SolveError  # raised by raise_if_failed()

    def __post_init__(self) -> None:
        if not isinstance(self.solution, Solution):
            raise TypeError(f"solution must be a diffnum.solve.Solution, got "
                            f"{type(self.solution).__name__}")

    def __repr__(self) -> str:
        return one_line(self, f"converged {int(self.converged.sum())}/{self.status.numel()}")

    @property
    def weights(self) -> torch.Tensor:
        """w* ``(*batch, K, N)``: ``solution.value``."""
        return self.solution.value

    @property
    def status(self) -> torch.Tensor:
        """:class:`~diffnum.solve.Status` code per solve ``(*batch, K)``: ``solution.status``."""
        return self.solution.status

    @property
    def converged_fraction(self) -> float:
        """Share of the solves that converged."""
        return float(self.converged.double().mean())

    def _detail(self, index: tuple[int, ...]) -> str:
        return self.solution._detail(index)


def _pointwise_derivatives(pde, names: tuple[str, ...], fields: torch.Tensor, second: bool
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """F, ∂F/∂f_j and (``second``) ∂²F/∂f_j∂f_k at every point, for F acting pointwise on the
    fields f_j ``(..., n_terms, M)``: one backward pass of ΣF gives every first partial, one
    more per term every second partial (``(..., n_terms, n_terms, M)``). Differentiable in
    the fields when gradients are on (an unrolled solve differentiates through J)."""
    differentiable = torch.is_grad_enabled() and fields.requires_grad
    with torch.enable_grad():
        f = fields if differentiable else fields.detach().requires_grad_(True)
        F = pde.pointwise_residual(dict(zip(names, f.unbind(-2))))
        (d1,) = torch.autograd.grad(F.sum(), f, create_graph=differentiable or second)
        d2 = None
        if second:
            d2 = torch.stack([
                torch.autograd.grad(d1[..., j, :].sum(), f, retain_graph=True,
                                    allow_unused=True, materialize_grads=True)[0]
                if d1.requires_grad else torch.zeros_like(f) for j in range(len(names))], -3)
    if not differentiable:
        F, d1 = F.detach(), d1.detach()
    return F, d1, d2


class _ExpertProblem:
    """r(w) = [s F(f) at the sampled rows; C w − c; λ w] with the fields f_j = T_j w + p_j, its
    Jacobian J = [s Σ_j diag(∂F/∂f_j) T_j; C; λ I] and its exact Hessian for every
    (batch, expert) at once.

    s is a row weight ``(b, K, M)``: the residual scale on collocated rows, 0 on padding rows.
    T ``(b, K, n_terms, M, N)`` holds the basis terms at each expert's sampled rows, p
    ``(b, K, n_terms, M)`` the terms of the particular solution u_p there; C ``(b, K, R, N)``
    / c ``(b, K, R)`` the constraint rows routed to it (R = 0 when the conditions are
    eliminated). They are passed as ``args`` of the solve so that gradients reach the basis.
    """

    def __init__(self, pde, names: tuple[str, ...], ridge: float) -> None:
        self.pde, self.names, self.ridge = pde, names, ridge

    @staticmethod
    def _fields(w: torch.Tensor, T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (T @ w[..., None, :, None]).squeeze(-1) + p

    def residual(self, w, T, p, row_weight, C, c) -> torch.Tensor:
        F = self.pde.pointwise_residual(dict(zip(self.names, self._fields(w, T, p).unbind(-2))))
        return torch.cat([row_weight * F, (C @ w.unsqueeze(-1)).squeeze(-1) - c,
                          self.ridge * w], dim=-1)

    @staticmethod
    def _combine(coefficients: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """Σ_j diag(a_j) T_j for a ``(..., n_terms, M)``, T ``(..., n_terms, M, N)``."""
        out = coefficients[..., 0, :, None] * T[..., 0, :, :]
        for j in range(1, T.shape[-3]):
            out = out + coefficients[..., j, :, None] * T[..., j, :, :]
        return out

    def _pde_jacobian(self, d1: torch.Tensor, T: torch.Tensor, row_weight: torch.Tensor
                      ) -> torch.Tensor:
        return self._combine(row_weight.unsqueeze(-2) * d1, T)

    def _ridge_rows(self, w: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        eye = self.ridge * torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
        return eye.expand(*C.shape[:-2], *eye.shape)

    def jacobian(self, w, T, p, row_weight, C, c) -> torch.Tensor:
        _, d1, _ = _pointwise_derivatives(self.pde, self.names, self._fields(w, T, p), False)
        return torch.cat([self._pde_jacobian(d1, T, row_weight), C, self._ridge_rows(w, C)],
                         dim=-2)

    def hessian(self, w, T, p, row_weight, C, c) -> torch.Tensor:
        """H = JᵀJ + Σ_jk T_jᵀ diag(s² F ∂²F/∂f_j∂f_k) T_k — the constraint and ridge rows are
        linear, so only the PDE rows have a second-order term; terms whose second partials
        vanish everywhere (F linear in them) cost nothing."""
        F, d1, d2 = _pointwise_derivatives(self.pde, self.names, self._fields(w, T, p), True)
        J = self._pde_jacobian(d1, T, row_weight)
        H = J.mT @ J + C.mT @ C + self.ridge**2 * torch.eye(
            w.shape[-1], dtype=w.dtype, device=w.device)
        weight = (row_weight * row_weight * F).unsqueeze(-2).unsqueeze(-2) * d2
        for j in range(T.shape[-3]):
            if bool((weight[..., j, :, :] != 0).any()):
                H = H + T[..., j, :, :].mT @ self._combine(weight[..., j, :, :], T)
        return H


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
                    experts: Experts | None = None,
                    particular: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """PDE residual F(u) on the whole grid for u = u_p + b̃(x, t)ᵀ w_k on block k, shape
    ``(*batch, *grid.shape)``; derivatives are those of the basis (``terms``: the full-grid
    terms of the basis the weights multiply, e.g. :attr:`ConstrainedSolution.terms`) and of
    u_p (``particular``, ``{name: (*batch, P)}``; None for u_p = 0), so no difference quotient
    straddles two experts.

    ``weights`` ``(*batch, K, N)``; ``experts=None`` means K = 1 (then it is F(u_p + B̃w)).

    Example::

        >>> import torch
        >>> from diffnum.constrain import HardConstraint, MixtureOfExperts, expert_residual
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> x, t = grid.mesh()
        >>> basis = torch.stack([x**i * t**j for i in range(3) for j in range(2)], -1)
        >>> moe = MixtureOfExperts(HardConstraint(pde := Heat1D(0.1, boundary="dirichlet")), (2, 1))
        >>> out = moe(basis.reshape(1, grid.size, 6), grid, torch.sin(torch.pi * x[:, 0]))
        >>> expert_residual(pde, out.terms, out.weights, grid, (2, 1), out.particular).shape
        torch.Size([1, 16, 9])
    """
    check_pde("pde", pde, ("terms", "pointwise_residual"))
    check_grid(grid)
    real_floating_dtype("weights", weights)
    if weights.ndim < 2:
        raise ValueError(f"weights must have shape (*batch, K, N), got {tuple(weights.shape)}")
    names = tuple(pde.terms)
    _check_terms("terms", terms, names, weights, 2)
    if particular is not None:
        _check_terms("particular", particular, names, weights, 1)
    layout = (1,) * grid.ndim if experts is None else experts
    owner = expert_owner(grid, layout).to(weights.device)
    fields = {n: _select_expert(terms[n], weights, owner) for n in names}
    if particular is not None:
        fields = {n: fields[n] + particular[n] for n in names}
    return pde.pointwise_residual(fields).unflatten(-1, grid.shape)


def interface_jumps(values: torch.Tensor, weights: torch.Tensor, grid: Grid,
                    experts: Experts) -> torch.Tensor:
    """u_k − u_k′ where two experts' blocks meet, shape ``(*batch, J)``: on the last grid line
    of block k and the first of its neighbour k′ along every split axis (and across the
    period of a periodic one), both experts' fields b̃ᵀw_k and b̃ᵀw_k′ are compared (u_p, shared
    by all experts, cancels). ``values``: the full-grid basis values the weights multiply,
    ``(*batch, P, N)`` (:attr:`ConstrainedSolution.basis`), ``weights`` ``(*batch, K, N)``.

    All jumps are zero iff neighbouring experts agree on both lines; then every difference
    quotient of the assembled field that straddles an interface (a three-point stencil)
    equals that of an expert's own field — the interface conditions of domain decomposition
    (continuity of u and of its first difference), which the experts' independent solves
    cannot impose themselves.

    Example::

        >>> import torch
        >>> from diffnum.constrain import interface_jumps
        >>> from diffnum.pde import uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 4)})
        >>> values = torch.ones(1, 32, 1)  # one constant basis function
        >>> weights = torch.tensor([[[1.0], [3.0]]])  # two experts along x: u = 1 and u = 3
        >>> interface_jumps(values, weights, grid, (2, 1))  # 2 lines × 4 times, each 1 − 3
        tensor([[-2., -2., -2., -2., -2., -2., -2., -2.]])
    """
    check_grid(grid)
    layout = expert_layout(grid, experts)
    if weights.ndim < 2 or weights.shape[-2] != math.prod(layout):
        raise ValueError(f"weights must have shape (*batch, K = {math.prod(layout)}, N), got "
                         f"{tuple(weights.shape)}")
    owner = expert_owner(grid, layout).to(weights.device).reshape(grid.shape)
    fields = (values @ weights.mT).unflatten(-2, grid.shape)  # (*batch, *grid.shape, K)
    first = fields.ndim - 1 - grid.ndim  # the first grid axis of fields
    jumps = []
    for axis, blocks in enumerate(layout):
        n = grid.shape[axis]
        starts = range(0 if grid.periodic[axis] and blocks > 1 else 1, blocks)
        for start in (b * (n // blocks) for b in starts):
            pair = torch.tensor([(start - 1) % n, start], device=weights.device)
            lines = fields.index_select(first + axis, pair)
            own = owner.index_select(axis, pair)
            side = [own.narrow(axis, j, 1).expand_as(own).expand(lines.shape[:-1])
                    for j in (0, 1)]
            jump = lines.gather(-1, side[0][..., None]) - lines.gather(-1, side[1][..., None])
            jumps.append(jump.flatten(first))
    if not jumps:
        return fields.new_zeros((*fields.shape[:first], 0))
    return torch.cat(jumps, -1)


def particular_solution(pde, grid: Grid, initial: torch.Tensor) -> torch.Tensor:
    """u_p of the elimination for initial conditions ``(b, *initial points)``: what a
    hard-constrained prediction is with w = 0 (u₀ with the boundary values blended in, see
    ``pde.lift``), shape ``(b, *grid.shape)``.

    Example::

        >>> import torch
        >>> from diffnum.constrain import particular_solution
        >>> from diffnum.pde import DiffusionSorption1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 500.0, 4)})
        >>> u0 = torch.full((1, 8), 0.1, dtype=torch.float64)
        >>> u_p = particular_solution(DiffusionSorption1D(), grid, u0)
        >>> u_p.shape, float(u_p[0, 3, 0]), float(u_p[0, 0, 2])  # u₀ at t₀, u(0, t) = 1
        (torch.Size([1, 8, 4]), 0.1, 1.0)
    """
    check_pde("pde", pde, ("lift",))
    check_grid(grid)
    empty = initial.new_zeros(initial.shape[0], grid.size, 1)
    _, u_p = pde.lift(empty, grid, initial)
    return u_p.reshape(initial.shape[0], *grid.shape)


def interior_mask(pde, grid: Grid) -> torch.Tensor:
    """Where the PDE itself is collocated and penalised, shape ``grid.shape``:
    ``pde.collocation_mask(grid)`` — every grid point that carries no boundary condition
    (there 𝓑 holds instead of the PDE). t₀ is collocated: u₀ gives the value there and the PDE
    the rate, unless the PDE's initial and boundary data disagree at a corner, where the
    residual near t₀ is as large as the grid is fine (``collocate_initial = False``, less any
    window the PDE declares unresolved; see :class:`~diffnum.pde.DiffusionSorption1D`).

    Example::

        >>> from diffnum.constrain import interior_mask
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 4)})
        >>> mask = interior_mask(Heat1D(0.1, boundary="dirichlet"), grid)
        >>> int(mask.sum())  # 6 inner x × 4 t (t₀ too: u₀ gives the value, the PDE the rate)
        24
    """
    check_pde("pde", pde, ("collocation_mask",))
    check_grid(grid)
    return pde.collocation_mask(grid)


def _select_expert(matrix: torch.Tensor, weights: torch.Tensor, owner: torch.Tensor
                   ) -> torch.Tensor:
    """(A w_{k(p)})_p for A ``(*batch, P, N)``, w ``(*batch, K, N)``, k(p) = ``owner[p]``:
    A wᵀ for every expert (a P × K product), then each point's own column — no copy of A."""
    products = matrix @ weights.mT  # (*batch, P, K)
    if products.shape[-1] == 1:
        return products.squeeze(-1)
    return products.gather(-1, owner.expand(*products.shape[:-1]).unsqueeze(-1)).squeeze(-1)


# What the layer calls on a PDE object (Heat1D, DiffusionSorption1D, NavierStokes2D, ...).
_PDE_API = ("terms", "pointwise_residual", "basis_terms", "field_terms", "lift",
            "constraint_rows", "initial_points", "initial_free", "collocation_mask")
# Bounds of the layer's settings: λ and s beyond 1e8 square to ~1e16 in the Hessian (1e300
# overflows it: every solve NONFINITE); an LM solve of more than 10⁶ steps is a typo.
_MAX_SCALE = 1e8
_MAX_SOLVER_STEPS = 10**6


def check_pde(name: str, pde: object, needs: tuple[str, ...] = _PDE_API) -> None:
    """``pde`` must have what the layer uses (duck-typed: the PDE classes share no base)."""
    if isinstance(pde, type):
        raise TypeError(f"{name} must be a PDE object, an instance such as {pde.__name__}(...), "
                        f"got the class {pde.__name__} itself")
    missing = [attr for attr in needs if not hasattr(pde, attr)]
    if missing:
        raise TypeError(f"{name} must be a PDE object (Heat1D, DiffusionSorption1D, "
                        f"NavierStokes2D, ...), got {type(pde).__name__} without {missing}")


def _check_terms(name: str, terms: object, names: tuple[str, ...], weights: torch.Tensor,
                 trailing: int) -> None:
    """``terms``: {term: tensor} holding every name of ``pde.terms``, of the dtype and device of
    ``weights``, with ``trailing`` = 2 (P, N) or 1 (P) trailing dimensions."""
    if not isinstance(terms, Mapping):
        raise TypeError(f"{name} must be a mapping {{term: tensor}}, got {type(terms).__name__}")
    missing = [n for n in names if n not in terms]
    if missing:
        raise ValueError(f"{name} must hold the terms {names} of the PDE, missing {missing}")
    for n in names:
        t = terms[n]
        if (not isinstance(t, torch.Tensor) or t.dtype != weights.dtype
                or t.device != weights.device or t.ndim < trailing
                or (trailing == 2 and t.shape[-1] != weights.shape[-1])):
            got = (f"{t.dtype} {tuple(t.shape)} on {t.device}" if isinstance(t, torch.Tensor)
                   else type(t).__name__)
            shape = "(*batch, P, N)" if trailing == 2 else "(*batch, P)"
            raise ValueError(f"{name}[{n!r}] must be a {weights.dtype} tensor {shape} on "
                             f"{weights.device} with N = {weights.shape[-1]} from weights, "
                             f"got {got}")


def _check_forward(basis: object, grid: object, initial: object, generator: object,
                   pde: object, throw: object = False) -> None:
    """The arguments of :meth:`HardConstraint.forward` / :meth:`MixtureOfExperts.forward`.

    NaN/inf in ``basis`` or ``initial`` is not an input error: the affected solves report
    ``NONFINITE`` (a training step on them is skipped and counted)."""
    if not isinstance(throw, bool):
        raise TypeError(f"throw must be True or False, got {throw!r}")
    real_floating_dtype("basis", basis)
    check_grid(grid)
    if basis.ndim >= 3 and (basis.shape[-1] == 0 or math.prod(basis.shape[:-2]) == 0):
        raise ValueError(f"basis must have at least one batch element and N >= 1 columns, "
                         f"got shape {tuple(basis.shape)}")
    # (Another device than the grid's is fine: the grid's data are moved to the basis.)
    if basis.is_meta:
        raise ValueError("basis must hold data, got a tensor on the meta device")
    if isinstance(initial, torch.Tensor):
        if initial.is_complex() or initial.dtype == torch.bool:
            raise TypeError(f"initial must be a real tensor, got {initial.dtype}")
        if initial.is_meta:
            raise ValueError("initial must hold data, got a tensor on the meta device")
    else:
        try:
            torch.as_tensor(initial, dtype=basis.dtype)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"initial must be a tensor (or nested sequence of floats), got "
                            f"{type(initial).__name__}") from None
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be None or a torch.Generator, got "
                        f"{type(generator).__name__}")
    if pde is not None:
        check_pde("pde", pde)


def _check_count(name: str, value: Any, *, allow_none: bool = False,
                 high: int = 10**9) -> None:
    if not (value is None and allow_none):
        check_count(name, value, high=high)


def _check_scalar(name: str, value: Any, *, positive: bool) -> float:
    """A finite real in [0, 1e8] (``positive``: (0, 1e8])."""
    return check_real(name, value, low=0.0, high=_MAX_SCALE, low_open=positive)


class HardConstraint(nn.Module):
    r"""PI-HC: u = u_p + B̃ w* with w* = argmin_w ½‖r(w; B, φ)‖² (Négiar et al. 2023).

    r stacks the PDE residual F(u) at ``n_sampled`` collocation points drawn anew at every
    call where the PDE is collocated (:func:`interior_mask`; if a block has fewer such points
    than its share of M, the rest get weight 0) and the ridge λw. The initial and boundary
    conditions are handled as ``constraints`` says:

    - ``"eliminate"`` (default): they hold exactly for every w. ``pde.lift`` turns the network's
      basis B into B̃ (B − B(·, t₀), with the homogeneous boundary conditions imposed at the
      constrained ends) and a particular solution u_p (u₀ along t, boundary values at the
      ends), so u = u_p + B̃w satisfies C u = c by construction and the solve fits only the
      PDE. This is the null-space parametrization w ↦ u_p + B̃ w of {u : C u = c}; with N ≪
      the number of conditions (nx initial values alone for N = 16), fitting them as rows can
      only satisfy them in a least-squares sense, which is what the paper's layer does.
    - ``"rows"``: the paper's formulation, rows C w = c (``pde.constraint_rows``) stacked
      into r with weight 1, u = B w; kept for comparison. The violation left is reported per
      solve in :attr:`ConstrainedSolution.violation`.

    The solve is :func:`diffnum.solve.least_squares` (Levenberg–Marquardt), batched over the
    leading dimensions of the basis; its gradient is implicit (one N×N solve and one VJP,
    memory independent of the iteration count; the Hessian is built from pointwise second
    derivatives of F in a few batched products) unless ``adjoint=UnrollAdjoint()``.

    Args:
        pde: a PDE object (``Heat1D``, ``DiffusionSorption1D``, ``NavierStokes2D``, …).
        n_sampled: collocation points M per solve (all experts together in a mixture), or
            None for every grid point.
        solver: ``LevenbergMarquardt()`` (default; tolerances by dtype: 1e-8 in float64, 1e-4
            in float32) or ``GaussNewton()``.
        adjoint: ``ImplicitAdjoint()`` (default) or ``UnrollAdjoint()``.
        ridge: λ ≥ 0.
        max_steps: iteration limit of each solve.
        residual_scale: s > 0 multiplying the PDE rows, r = [s F; …; λ w] — the unit of the
            residual relative to the ridge (and to the condition rows with ``"rows"``).
        constraints: ``"eliminate"`` or ``"rows"`` (above).

    ``forward(basis, grid, initial, *, generator=None, pde=None, throw=False)``: ``basis``
    ``(*batch, P, N)``, ``initial`` u₀ at the initial points (broadcastable), ``pde``
    overrides the PDE (its parameters) for this call; ``throw=True`` raises a
    :class:`~diffnum.solve.SolveError` naming every solve that did not converge. Returns a
    :class:`ConstrainedSolution` with K = 1.

    Example::

        >>> import torch
        >>> from diffnum.constrain import HardConstraint
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> x, t = grid.mesh()
        >>> basis = torch.stack([x**i * t**j for i in range(3) for j in range(2)], -1)
        >>> layer = HardConstraint(Heat1D(0.1, boundary="dirichlet"))
        >>> out = layer(basis.reshape(1, grid.size, 6), grid, torch.sin(torch.pi * x[:, 0]))
        >>> float(out.violation["initial"].max()) == 0.0
        True
    """

    def __init__(self, pde: PhysicsPDE, n_sampled: int | None = None, *,
                 solver: LevenbergMarquardt | GaussNewton | None = None,
                 adjoint: ImplicitAdjoint | UnrollAdjoint | None = None,
                 ridge: float = 1e-4, max_steps: int = 50, residual_scale: float = 1.0,
                 constraints: str = "eliminate") -> None:
        super().__init__()
        check_pde("pde", pde)
        self.residual_scale = _check_scalar("residual_scale", residual_scale, positive=True)
        _check_count("n_sampled", n_sampled, allow_none=True)
        self.ridge = _check_scalar("ridge", ridge, positive=False)
        _check_count("max_steps", max_steps, high=_MAX_SOLVER_STEPS)
        check_one_of("constraints", constraints, ("eliminate", "rows"))
        if solver is not None and not isinstance(solver, (LevenbergMarquardt, GaussNewton)):
            raise TypeError(f"solver must be LevenbergMarquardt(...) or GaussNewton(...), got "
                            f"{type(solver).__name__}")
        if adjoint is not None and not isinstance(adjoint, (ImplicitAdjoint, UnrollAdjoint)):
            raise TypeError(f"adjoint must be ImplicitAdjoint(...) or UnrollAdjoint(), got "
                            f"{type(adjoint).__name__}")
        self.pde = pde
        self.n_sampled = n_sampled
        self.solver = LevenbergMarquardt() if solver is None else solver
        self.adjoint = ImplicitAdjoint() if adjoint is None else adjoint
        self.max_steps = max_steps
        self.constraints = constraints

    def forward(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor, *,
                generator: torch.Generator | None = None, pde=None,
                throw: bool = False) -> ConstrainedSolution:
        """Solve the constrained least squares for every batch element (see the class)."""
        _check_forward(basis, grid, initial, generator, pde, throw)
        out = solve_experts(self, basis, grid, initial, (1,) * grid.ndim,
                            generator=generator, pde=pde, routing="replicate",
                            distributed=False)
        if throw:
            out.raise_if_failed("HardConstraint")
        return out

    def extra_repr(self) -> str:
        return (f"pde={type(self.pde).__name__}, n_sampled={self.n_sampled}, ridge={self.ridge}, "
                f"max_steps={self.max_steps}, constraints={self.constraints!r}")


class MixtureOfExperts(nn.Module):
    r"""PI-HC-MoE: K hard constraints, one per space–time block Ω_k of a fixed router.

    Expert k solves w_k* = argmin ½‖r_k(w)‖² over the shared basis restricted to Ω_k with
    its own n_sampled/K collocation points; u = u_p + b̃(x, t)ᵀ w_k* on Ω_k (Chalapathi et
    al. 2024). With the conditions eliminated (the default of :class:`HardConstraint`) every
    expert satisfies the initial and boundary conditions on its block exactly; with
    ``constraints="rows"`` the rows reach the experts as ``routing`` says. The implicit
    Jacobian is block diagonal, so every expert's backward is its own. Experts are solved as
    one vectorized batch; with ``torch.distributed`` initialized (or ``distributed=True``)
    they are sharded over the ranks, solved locally and all-gathered (train the basis network
    with DDP: the gather's backward is written for DDP's gradient averaging). K = 1 is
    exactly :class:`HardConstraint`.

    Args:
        hard_constraint: the :class:`HardConstraint` whose settings every expert uses.
        experts: blocks per grid axis in grid order, e.g. ``(4, 1)`` on an (x, t) grid, or a
            mapping ``{"x": 4}``.
        routing: how initial/boundary rows reach the experts with ``constraints="rows"``:
            ``"replicate"`` (every expert fits all of them, as the paper for
            diffusion–sorption) or ``"partition"`` (each row to the expert whose block holds
            its point, as for Navier–Stokes).
        distributed: None (shard when a multi-rank process group is initialized), True, False.
        process_group: the group to shard over (default: the world).

    Example::

        >>> from diffnum.constrain import HardConstraint, MixtureOfExperts
        >>> from diffnum.pde import DiffusionSorption1D
        >>> moe = MixtureOfExperts(HardConstraint(DiffusionSorption1D(), 1024), (4, 1))
        >>> moe.experts, moe.routing, moe.hard_constraint.constraints
        ((4, 1), 'replicate', 'eliminate')
    """

    def __init__(self, hard_constraint: HardConstraint, experts: Experts, *,
                 routing: str = "replicate", distributed: bool | None = None,
                 process_group: torch.distributed.ProcessGroup | None = None) -> None:
        super().__init__()
        if not isinstance(hard_constraint, HardConstraint):
            raise TypeError(f"hard_constraint must be a HardConstraint, got "
                            f"{type(hard_constraint).__name__}")
        check_one_of("routing", routing, ("replicate", "partition"))
        if isinstance(experts, str) or not isinstance(experts, (Sequence, Mapping)):
            raise TypeError(f"experts must be a tuple of blocks per grid axis or a mapping "
                            f"{{axis name: blocks}}, got {type(experts).__name__}")
        if distributed is not None and not isinstance(distributed, bool):
            raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
        self.hard_constraint = hard_constraint
        self.experts = dict(experts) if isinstance(experts, Mapping) else tuple(experts)
        keys = self.experts if isinstance(self.experts, dict) else range(len(self.experts))
        for key in keys:
            _check_count(f"experts[{key!r}]", self.experts[key])
        counts = self.experts.values() if isinstance(self.experts, dict) else self.experts
        K = math.prod(counts)
        n_sampled = hard_constraint.n_sampled
        if n_sampled is not None and n_sampled % K:
            raise ValueError(f"n_sampled={n_sampled} must be a multiple of the {K} experts "
                             f"(every expert samples n_sampled / {K} points)")
        self.routing = routing
        self.distributed = distributed
        self.process_group = process_group

    def forward(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor, *,
                generator: torch.Generator | None = None, pde=None,
                throw: bool = False) -> ConstrainedSolution:
        """As :meth:`HardConstraint.forward`, with K = ∏ experts solves per batch element."""
        _check_forward(basis, grid, initial, generator, pde, throw)
        out = solve_experts(self.hard_constraint, basis, grid, initial, self.experts,
                            generator=generator, pde=pde, routing=self.routing,
                            distributed=self.distributed, group=self.process_group)
        if throw:  # every rank holds every expert's status: all raise alike
            out.raise_if_failed("MixtureOfExperts")
        return out

    def extra_repr(self) -> str:
        return f"experts={self.experts}, routing={self.routing!r}"


def _samples_per_expert(layer: HardConstraint, K: int, P_k: int) -> int:
    if layer.n_sampled is None:
        return P_k
    if K == 1 and layer.n_sampled > P_k:
        raise ValueError(f"n_sampled={layer.n_sampled} is more than the grid's {P_k} points")
    if layer.n_sampled % K or layer.n_sampled // K > P_k:
        raise ValueError(f"n_sampled={layer.n_sampled} must be a multiple of the {K} experts "
                         f"and at most {K * P_k} (each expert's block has {P_k} points)")
    return layer.n_sampled // K


def _sample_rows(interior: torch.Tensor, index: torch.Tensor, b: int, M_k: int,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Flat grid indices ``(b, K, M_k)`` of each expert's collocation rows: collocated points
    first, at random. Every rank draws the same numbers for all K experts, so a sharded run
    samples exactly the rows a single process would."""
    K, P_k = index.shape
    if M_k >= P_k:
        return index.expand(b, K, P_k)
    scores = torch.rand(b, K, P_k, generator=generator, dtype=torch.float64)
    scores = torch.where(interior[index].to(scores.device), scores, -1.0)
    local = scores.topk(M_k, dim=-1, sorted=False).indices.to(index.device)
    return index.expand(b, K, P_k).gather(-1, local)


def _lifted(pde, basis: torch.Tensor, grid: Grid, initial: torch.Tensor, eliminate: bool
            ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor],
                       dict[str, torch.Tensor]]:
    """The basis the weights multiply ``(b, P, N)``, u_p ``(b, P)``, and their full-grid
    derivative terms."""
    b = basis.shape[0]
    if not eliminate:
        terms = pde.basis_terms(basis, grid)
        return (basis, basis.new_zeros(b, grid.size), terms,
                {n: basis.new_zeros(b, grid.size) for n in terms})
    lifted, particular = pde.lift(basis, grid, initial)
    fields = pde.field_terms(particular.reshape(b, *grid.shape), grid)
    return (lifted, particular, pde.basis_terms(lifted, grid),
            {n: v.reshape(b, -1) for n, v in fields.items()})


def _violations(pde, u: torch.Tensor, grid: Grid, initial: torch.Tensor, owner: torch.Tensor,
                K: int) -> dict[str, torch.Tensor]:
    """Largest |violation| of the initial and boundary conditions per (batch, block), from
    the condition rows of u itself (u as a one-column basis)."""
    rows, values, points = pde.constraint_rows(u.unsqueeze(-1), grid, initial)
    gap = (rows.squeeze(-1) - values).abs()
    n_initial = int(pde.initial_free(grid).sum())
    block = owner.to(points.device)[points]
    out = {}
    for name, part in (("initial", slice(0, n_initial)), ("boundary", slice(n_initial, None))):
        worst = gap.new_zeros(gap.shape[0], K)
        if gap[:, part].shape[-1]:
            worst = worst.scatter_reduce(1, block[part].expand_as(gap[:, part]), gap[:, part],
                                         "amax")
        out[name] = worst
    return out


def solve_experts(layer: HardConstraint, basis: torch.Tensor, grid: Grid, initial: torch.Tensor,
                  experts: Experts, *, generator=None, pde=None, routing: str = "replicate",
                  distributed: bool | None = None, group=None) -> ConstrainedSolution:
    """The shared engine of :class:`HardConstraint` and :class:`MixtureOfExperts`."""
    pde = layer.pde if pde is None else pde
    initial = _checked_layer_input(pde, basis, grid, initial)
    layout = expert_layout(grid, experts)
    K = math.prod(layout)
    batch, P, N = basis.shape[:-2], basis.shape[-2], basis.shape[-1]
    M_k = _samples_per_expert(layer, K, P // K)
    flat_basis = basis.reshape(-1, P, N)
    group = active_group(distributed, group)
    experts_here = (0, K) if group is None else shard(K, group)
    lifted, u_p, terms, particular = _lifted(pde, flat_basis, grid, initial,
                                             layer.constraints == "eliminate")
    T, p, row_weight, C, c = _expert_rows(layer, pde, flat_basis, grid, initial, terms,
                                          particular, layout, experts_here, M_k, routing,
                                          generator)
    problem = _ExpertProblem(pde, tuple(pde.terms), layer.ridge)
    w0 = flat_basis.new_zeros(T.shape[0], T.shape[1], N)
    solution = least_squares(problem.residual, w0, (T, p, row_weight, C, c),
                             solver=layer.solver, max_steps=layer.max_steps,
                             adjoint=layer.adjoint, jacobian=problem.jacobian,
                             hessian=problem.hessian, compact=True)
    with torch.no_grad():
        # RMS over the collocated rows: rows of weight 0 (points of the initial or boundary
        # conditions, sampled when every point of a block is) would only dilute it.
        F_rows = problem.residual(solution.value, T, p, row_weight, C, c)[..., :M_k]
        collocated = (row_weight != 0).sum(-1).clamp(min=1)
        pde_rms = (F_rows.square().sum(-1) / collocated).sqrt()
    weights, status, steps, norm = (solution.value, solution.status, solution.steps,
                                    solution.residual_norm)
    if group is not None:
        weights = gather_experts(weights, group)
        status, steps, norm, pde_rms = (gather_experts(t, group)
                                        for t in (status, steps, norm, pde_rms))
    owner = expert_owner(grid, layout).to(basis.device)
    u = _assembled(u_p, lifted, weights, status, owner)
    with torch.no_grad():
        violation = {"pde": pde_rms, **_violations(pde, u.detach(), grid, initial, owner, K)}
    stats = {"experts": K, "sampled_per_expert": M_k, "constraint_rows_per_expert": C.shape[-2],
             "function_evaluations": solution.stats.get("function_evaluations"),
             "jacobian_evaluations": solution.stats.get("jacobian_evaluations"),
             "sharded": group is not None}
    if group is not None or len(batch) != 1:
        solution = replace(solution, value=weights.reshape(*batch, K, N),
                           status=status.reshape(*batch, K), steps=steps.reshape(*batch, K),
                           residual_norm=norm.reshape(*batch, K))
    return ConstrainedSolution(
        u=u.reshape(*batch, *grid.shape),
        solution=solution,
        violation={k: v.reshape(*batch, K) for k, v in violation.items()},
        terms={k: v.reshape(*batch, P, N) for k, v in terms.items()},
        particular={k: v.reshape(*batch, P) for k, v in particular.items()},
        stats=stats,
        basis=lifted.reshape(*batch, P, N),
    )


def _checked_layer_input(pde, basis: torch.Tensor, grid: Grid, initial: Any) -> torch.Tensor:
    """Check the basis against the grid; return u₀ broadcast to ``(b, *initial points)``, b
    the flattened batch of the basis, in its dtype and device."""
    real_floating_dtype("basis", basis)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
    if basis.ndim < 3 or basis.shape[-2] != grid.size:
        raise ValueError(
            f"basis must have shape (*batch, {grid.size}, N) for a grid of shape {grid.shape} "
            f"(one batch dimension at least), got {tuple(basis.shape)}"
        )
    batch = basis.shape[:-2]
    initial_shape = tuple(pde.initial_points(grid).shape)
    initial = torch.as_tensor(initial, dtype=basis.dtype, device=basis.device)
    try:
        return initial.broadcast_to(*batch, *initial_shape).reshape(-1, *initial_shape)
    except RuntimeError:
        raise ValueError(
            f"initial must broadcast to (*batch, *initial points) = {(*batch, *initial_shape)}, "
            f"got shape {tuple(initial.shape)}"
        ) from None


def _expert_rows(layer: HardConstraint, pde, flat_basis: torch.Tensor, grid: Grid,
                 initial: torch.Tensor, terms: dict[str, torch.Tensor],
                 particular: dict[str, torch.Tensor], layout: tuple[int, ...],
                 experts_here: tuple[int, int], M_k: int, routing: str, generator
                 ) -> tuple[torch.Tensor, ...]:
    """The least-squares data of the experts ``experts_here`` = [start, stop): the basis
    terms T ``(b, K_local, n_terms, M_k, N)`` and particular terms p ``(b, K_local, n_terms,
    M_k)`` at each expert's M_k sampled interior points, the rows' weights, and the
    condition rows C, c (none when the conditions are eliminated)."""
    start, stop = experts_here
    b, _, N = flat_basis.shape
    K = math.prod(layout)
    index = expert_index(grid, layout).to(flat_basis.device)  # (K, P_k) flat grid points
    interior = interior_mask(pde, grid).reshape(-1).to(flat_basis.device)
    rows = _sample_rows(interior, index, b, M_k, generator)[:, start:stop]
    row_weight = torch.where(interior[rows], layer.residual_scale, 0.0).to(flat_basis.dtype)
    flat_rows = rows.reshape(b, -1)
    names = tuple(pde.terms)
    T = torch.stack([terms[n].gather(1, flat_rows.unsqueeze(-1).expand(-1, -1, N))
                     for n in names], dim=1)
    # Contiguous once here: every evaluation of the fields multiplies T, and a transposed T
    # would be copied by each of those products.
    T = T.unflatten(2, (stop - start, M_k)).transpose(1, 2).contiguous()
    p = torch.stack([particular[n].gather(1, flat_rows) for n in names], dim=1)
    p = p.unflatten(2, (stop - start, M_k)).transpose(1, 2).contiguous()
    if layer.constraints == "eliminate":
        C = flat_basis.new_zeros(b, stop - start, 0, N)
        c = flat_basis.new_zeros(b, stop - start, 0)
    else:
        C_all, c_all, points = pde.constraint_rows(flat_basis, grid, initial)
        C, c = _route_rows(C_all, c_all, points, grid, layout, routing, K)
        C, c = C[:, start:stop], c[:, start:stop]
    return T, p, row_weight, C, c


def _assembled(u_p: torch.Tensor, lifted: torch.Tensor, weights: torch.Tensor,
               status: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """u = u_p + B̃ w_{k(p)} at every grid point p, k(p) = ``owner[p]``, flat ``(b, P)``.

    A solve that failed on non-finite numbers gives NaN on its block, with no graph: its
    weights and any non-finite basis rows enter u as zeros, so they add exact zeros to every
    gradient (never NaN·0) — the other experts' and elements' gradients stay finite."""
    valid = status != int(Status.NONFINITE)
    zero = torch.zeros((), dtype=weights.dtype, device=weights.device)
    safe = torch.where(valid.unsqueeze(-1), weights, zero)
    finite_rows = torch.isfinite(lifted.detach()).all(-1)
    u = u_p + _select_expert(torch.where(finite_rows.unsqueeze(-1), lifted, zero), safe, owner)
    return torch.where(valid.gather(-1, owner.expand(u.shape[0], -1)) & finite_rows, u,
                       torch.nan)
