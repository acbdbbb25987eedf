"""PDE objects with one interface: residual of a field, residual terms of a basis, initial and
boundary residuals; 1-D heat, advection and viscous Burgers with exact solutions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial

import torch

from diffnum._core.validation import (
    check_finite,
    check_int_in_range,
    check_one_of,
    check_positive,
    check_real,
    real_floating_dtype,
)
from diffnum.pde._checks import (
    as_values,
    broadcasts_to,
    check_basis,
    check_choice,
    check_grid,
    check_terms,
)
from diffnum.pde._derivative import differentiate, differentiate_basis
from diffnum.pde._exact import burgers_sine_cole_hopf
from diffnum.pde._grid import Grid

BoundaryValue = float | Callable[[torch.Tensor], torch.Tensor]


def _parse_term(term: str) -> tuple[str, ...]:
    """``"u"`` → (), ``"u_xx"`` → ("x", "x"): the axes differentiated, in order."""
    if term == "u":
        return ()
    if not term.startswith("u_") or len(term) < 3:
        raise ValueError(f"term names are 'u' or 'u_<axes>', got {term!r}")
    return tuple(term[2:])


class PDE1D:
    """A PDE F(u, u_t, u_x, u_xx; φ) = 0 on a grid with axes ``"x"`` and ``"t"`` (any order).

    The residual is a pointwise function of derivative *terms* (``"u"``, ``"u_t"``, ``"u_x"``,
    ``"u_xx"``; the subclass lists the ones it needs in ``terms``). For a basis B of shape
    ``(..., P, N)`` the terms ∂B are computed once (:meth:`basis_terms`); since ∂(Bw) = (∂B)w,
    :meth:`residual_from_basis_terms` gives F(Bw) for any weights w, linear in w when F is
    linear. Derivatives use :func:`differentiate` with ``method`` and ``accuracy``.

    Boundary conditions: ``"periodic"`` (the x axis of the grid must be periodic; no boundary
    residual) or ``"dirichlet"`` (u(x_left, t) = g_left(t), u(x_right, t) = g_right(t); the
    values are floats or callables of t).

    Example::

        >>> import diffnum.pde as pde
        >>> heat = pde.Heat1D(0.1, boundary="dirichlet")
        >>> isinstance(heat, pde.PDE1D), heat.terms
        (True, ('u_t', 'u_xx'))
    """

    terms: tuple[str, ...] = ()
    boundaries: tuple[str, ...] = ("periodic", "dirichlet")

    def __init__(
        self,
        *,
        boundary: str = "periodic",
        boundary_values: tuple[BoundaryValue, BoundaryValue] = (0.0, 0.0),
        method: str = "auto",
        accuracy: int = 4,
    ) -> None:
        check_one_of("boundary", boundary, self.boundaries)
        check_one_of("method", method, ("auto", "spectral", "finite_difference"))
        check_choice("accuracy", accuracy, (2, 4))
        if not (isinstance(boundary_values, tuple | list) and len(boundary_values) == 2):
            raise ValueError(f"boundary_values must be (left, right), got {boundary_values!r}")
        boundary_values = tuple(
            g if callable(g) else check_real(f"boundary_values[{i}]", g)
            for i, g in enumerate(boundary_values))
        self.boundary = boundary
        self.boundary_values = tuple(boundary_values)
        self.method = method
        self.accuracy = accuracy

    # -- the equation ---------------------------------------------------------------------
    def pointwise_residual(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """F evaluated pointwise from the derivative fields named in ``self.terms``."""
        raise NotImplementedError

    # -- fields ---------------------------------------------------------------------------
    def check_grid(self, grid: Grid) -> None:
        """Raise ``ValueError`` unless ``grid`` has axes x and t, t not periodic, and x periodic
        exactly when the boundary condition is periodic."""
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
        if set(grid.names) != {"x", "t"}:
            raise ValueError(f"grid must have axes 'x' and 't', got {grid.names}")
        if grid.periodic[grid.axis_index("t")]:
            raise ValueError("grid axis 't' must not be periodic")
        x_periodic = grid.periodic[grid.axis_index("x")]
        if x_periodic != (self.boundary == "periodic"):
            raise ValueError(
                f"boundary={self.boundary!r} needs grid axis 'x' "
                f"{'' if self.boundary == 'periodic' else 'not '}periodic, got periodic="
                f"{x_periodic}"
            )

    def _check_field(self, u: torch.Tensor, grid: Grid) -> None:
        real_floating_dtype("u", u)
        self.check_grid(grid)
        if u.ndim < 2 or tuple(u.shape[-2:]) != grid.shape:
            raise ValueError(
                f"u must have shape (..., {grid.shape[0]}, {grid.shape[1]}) to match the grid, "
                f"got {tuple(u.shape)}"
            )

    def field_terms(self, u: torch.Tensor, grid: Grid) -> dict[str, torch.Tensor]:
        """Derivative fields {name: ∂u} of u, shape ``(..., *grid.shape)`` each."""
        self._check_field(u, grid)
        return {name: self._derive(u, grid, name, differentiate) for name in self.terms}

    def residual(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """PDE residual F(u) at every grid point, shape ``(..., *grid.shape)``."""
        return self.pointwise_residual(self.field_terms(u, grid))

    # -- bases ----------------------------------------------------------------------------
    def basis_terms(self, basis: torch.Tensor, grid: Grid) -> dict[str, torch.Tensor]:
        """Column-wise derivative terms {name: ∂B} of a basis B, shape ``(..., P, N)`` each."""
        check_basis(basis, grid, self.check_grid)
        return {name: self._derive(basis, grid, name, differentiate_basis) for name in self.terms}

    def residual_from_basis_terms(
        self, terms: Mapping[str, torch.Tensor], weights: torch.Tensor
    ) -> torch.Tensor:
        """F(Bw) from terms ∂B ``(..., M, N)`` and weights w ``(..., N)``, shape ``(..., M)``.

        Terms may be restricted to M collocation rows (index them along dimension −2 first).
        """
        check_terms(terms, self.terms, weights)
        fields = {name: (terms[name] @ weights.unsqueeze(-1)).squeeze(-1) for name in self.terms}
        return self.pointwise_residual(fields)

    def _derive(self, u, grid, name, operator):
        out = u
        axes = _parse_term(name)
        i = 0
        while i < len(axes):  # repeated letters are one higher derivative (e.g. xx → d = 2)
            j = i
            while j < len(axes) and axes[j] == axes[i]:
                j += 1
            out = operator(out, grid, axes[i], derivative=j - i,
                           method=self.method if axes[i] == "x" else "finite_difference",
                           accuracy=self.accuracy)
            i = j
        return out

    # -- initial and boundary conditions ---------------------------------------------------
    def initial_residual(
        self, u: torch.Tensor, grid: Grid, initial: torch.Tensor
    ) -> torch.Tensor:
        """u(x, t₀) − u₀(x) on the x axis, shape ``(..., nx)``; ``initial`` broadcasts; 0 at
        an end that carries a boundary condition (the corner rule of :meth:`initial_free`)."""
        self._check_field(u, grid)
        start = u.select(u.ndim - 2 + grid.axis_index("t"), 0)
        r = start - as_values("initial", initial, start.shape[-1:], u, start.shape[:-1])
        return r * self.initial_free(grid).to(r.device)

    def boundary_residual(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Dirichlet: (u(x_left, t) − g_left(t), u(x_right, t) − g_right(t)), shape
        ``(..., 2, nt)`` (fewer rows for PDEs that constrain fewer ends); periodic: an empty
        ``(..., 0, nt)`` tensor (nothing to enforce)."""
        self._check_field(u, grid)
        dim = u.ndim - 2 + grid.axis_index("x")
        ends = u.select(dim, 0).unsqueeze(-2), u.select(dim, -1).unsqueeze(-2)
        sides = self._boundary_sides()
        if not sides:
            return ends[0][..., :0, :]
        return torch.cat([ends[s] for s in sides], dim=-2) - self.boundary_targets(grid).to(u)

    def boundary_targets(self, grid: Grid) -> torch.Tensor:
        """Dirichlet values g(t) of the constrained ends, shape ``(k, nt)``, k = 0, 1 or 2."""
        t = grid.coordinates[grid.axis_index("t")]
        rows = [self._boundary_value(self.boundary_values[s], t) for s in self._boundary_sides()]
        return torch.stack(rows) if rows else t.new_zeros(0, t.shape[0])

    def initial_points(self, grid: Grid) -> torch.Tensor:
        """Flat grid indices (rows of a basis) of the points (x_i, t₀), shape ``(nx,)``."""
        self.check_grid(grid)
        index = torch.arange(grid.size, device=grid.coordinates[0].device).reshape(grid.shape)
        return index.select(grid.axis_index("t"), 0)

    def boundary_points(self, grid: Grid) -> torch.Tensor:
        """Flat grid indices of the constrained ends, shape ``(k, nt)`` (as boundary_residual)."""
        self.check_grid(grid)
        index = torch.arange(grid.size, device=grid.coordinates[0].device).reshape(grid.shape)
        ix = grid.axis_index("x")
        ends = index.select(ix, 0), index.select(ix, -1)
        sides = self._boundary_sides()
        return torch.stack([ends[s] for s in sides]) if sides else ends[0][None][:0]

    def constraint_rows(
        self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The linear conditions on u = B w as rows: C w = c with C ``(..., R, N)``, c
        ``(..., R)``, and the flat grid index of the point each row sits at ``(R,)``.

        Rows are the initial condition (Bw)(x_i, t₀) = u₀(x_i) where :meth:`initial_free`
        holds, then the boundary conditions of :meth:`boundary_residual`; a router uses the
        points to hand each row to the expert whose block contains it.
        """
        return linear_constraint_rows(self, basis, grid, initial)

    def initial_free(self, grid: Grid) -> torch.Tensor:
        """Where the initial condition is imposed, a mask of ``initial_points(grid).shape``.

        The corner rule: at an end that carries a boundary condition, the boundary condition
        holds at t₀ as well, so u₀ is imposed on the open interval only. Where u₀ and the
        boundary data disagree (diffusion–sorption: u₀ = a < 1 beside u(0, t) = 1), this is what
        the reference solvers do — their boundary face carries the boundary value from the
        first instant — and it keeps the two families of conditions from contradicting each
        other at one point.
        """
        free = torch.ones(self.initial_points(grid).shape, dtype=torch.bool,
                          device=grid.coordinates[0].device)
        for side in self._corner_sides():
            free[0 if side == 0 else -1] = False
        return free

    # Whether the residual is collocated at t₀ (see :meth:`collocation_mask`).
    collocate_initial = True

    def collocation_mask(self, grid: Grid) -> torch.Tensor:
        """Where the PDE residual is collocated and penalised, a mask of ``grid.shape``: every
        point except the ends that carry a boundary condition (there the boundary condition
        holds instead of the PDE).

        t₀ is collocated (``collocate_initial``): u₀ fixes the value there, the PDE the rate
        u_t(t₀) = −F(u₀), and the one-sided time difference at t₀ is what ties the first
        later levels to u₀. Left out, a hard-constrained field can jump between t₀ and t₁
        at the cost of the residual at t₁ and t₂ only (measured on Navier–Stokes: PI-HC kept
        0.68 of ω₀'s norm one level after t₀, see :class:`NavierStokes2D`). A PDE whose
        initial and boundary data disagree sets ``collocate_initial = False``
        (:class:`DiffusionSorption1D`)."""
        self.check_grid(grid)
        mask = torch.ones(grid.shape, dtype=torch.bool, device=grid.coordinates[0].device)
        if not self.collocate_initial:
            mask.select(grid.axis_index("t"), 0).fill_(False)
        for side in self._corner_sides():
            mask.select(grid.axis_index("x"), 0 if side == 0 else -1).fill_(False)
        return mask

    def lift(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eliminate the initial and boundary conditions: (B̃, u_p) with u = u_p + B̃ w
        satisfying every condition exactly, for every w.

        B̃ = B − B(·, t₀) column by column, with the constrained ends overwritten so that the
        homogeneous boundary conditions hold (Dirichlet ends 0); u_p = u₀ broadcast along t, with
        the boundary values at constrained ends (the corner rule of :meth:`initial_free`). Both
        are grid functions in flat layout: B̃ ``(..., P, N)``, u_p ``(..., P)``; the residual of
        u is F(u_p + B̃ w), nonlinear in w only through F.
        """
        lifted, particular = lift_initial(self, basis, grid, initial)
        particular = self._blend_ends(particular, grid)
        return (self._impose_ends(lifted, grid, homogeneous=True),
                self._impose_ends(particular.unsqueeze(-1), grid, homogeneous=False)[..., 0])

    def _blend_ends(self, particular: torch.Tensor, grid: Grid) -> torch.Tensor:
        """u_p + Σ_e λ_e(x, t) (g_e(t) − u_p(x_e, t)), λ_e = :meth:`_end_profile` (1 at end e,
        0 at t₀): the boundary values reach u_p without a jump next to the end (whose
        difference quotient the basis would otherwise have to cancel); at t₀ u_p keeps u₀ on
        the open interval (the corner rule)."""
        sides, targets = self._blend_targets(grid)
        if not sides:
            return particular
        x_axis, t_axis = grid.axis_index("x"), grid.axis_index("t")
        x = grid.coordinates[x_axis].to(particular)
        t = grid.coordinates[t_axis].to(particular)
        field = particular.reshape(*particular.shape[:-1], *grid.shape)
        x_dim = field.ndim - grid.ndim + x_axis
        targets = targets.to(particular)  # (len(sides), nt)
        shape_t = [1] * grid.ndim
        shape_t[t_axis] = -1
        blend = torch.zeros_like(field)
        for row, side in enumerate(sides):
            distance = (x - x[0]) if side == 0 else (x[-1] - x)
            profile = self._end_profile(distance, x[-1] - x[0], t - t[0])  # (nx, nt)
            if t_axis < x_axis:
                profile = profile.T
            end = field.select(x_dim, 0 if side == 0 else -1).unsqueeze(x_dim)
            blend = blend + profile * (targets[row].reshape(shape_t) - end)
        return (field + blend).reshape(particular.shape)

    def _end_profile(self, distance: torch.Tensor, length: torch.Tensor,
                     elapsed: torch.Tensor) -> torch.Tensor:
        """λ(x, t) ``(nx, nt)`` with which a boundary value enters u_p, from the distance to
        the end ``(nx,)`` and the time since t₀ ``(nt,)``: 0 at t₀, 1 at the end for t > t₀.
        Here the linear ramp 1 − distance / length for every t > t₀; a diffusive PDE replaces
        it by the layer the boundary value actually drives into the domain."""
        later = (elapsed > 0).to(distance.dtype)
        return (1 - distance / length)[:, None] * later[None, :]

    def _blend_targets(self, grid: Grid) -> tuple[tuple[int, ...], torch.Tensor]:
        """The ends u_p is blended to and their values g(t), ``(len(sides), nt)``."""
        return self._boundary_sides(), self.boundary_targets(grid)

    def _impose_ends(self, field: torch.Tensor, grid: Grid, *, homogeneous: bool
                     ) -> torch.Tensor:
        """Set the Dirichlet ends of flat fields ``(..., P, C)`` to g(t) (or 0)."""
        points = self.boundary_points(grid).reshape(-1)
        if points.numel() == 0:
            return field
        field = field.clone()
        if homogeneous:
            field[..., points, :] = 0
        else:
            field[..., points, :] = self.boundary_targets(grid).to(field).reshape(-1, 1)
        return field

    def _corner_sides(self) -> tuple[int, ...]:
        return self._boundary_sides()

    def _boundary_sides(self) -> tuple[int, ...]:
        return () if self.boundary == "periodic" else (0, 1)

    @staticmethod
    def _boundary_value(g: BoundaryValue, t: torch.Tensor) -> torch.Tensor:
        if not callable(g):
            return torch.full_like(t, float(g))
        value = g(t)
        if not isinstance(value, torch.Tensor | int | float) or isinstance(value, bool):
            raise TypeError(f"boundary_values callables must return a tensor of t's shape "
                            f"{tuple(t.shape)}, got {type(value).__name__}")
        value = torch.as_tensor(value, dtype=t.dtype, device=t.device)
        if not broadcasts_to(value.shape, t.shape):
            raise ValueError(f"boundary_values callables must return a tensor of t's shape "
                             f"{tuple(t.shape)}, got {tuple(value.shape)}")
        check_finite("boundary_values(t)", value)
        return value.broadcast_to(t.shape)


def linear_constraint_rows(
    pde, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial rows, then Dirichlet boundary rows, of any PDE object with ``initial_points``,
    ``boundary_points`` and ``boundary_targets`` (see :meth:`PDE1D.constraint_rows`)."""
    _check_basis(basis, grid)
    initial_index = pde.initial_points(grid)
    u0 = as_values("initial", initial, tuple(initial_index.shape), basis, basis.shape[:-2])
    u0 = u0.reshape(*u0.shape[: u0.ndim - initial_index.ndim], initial_index.numel())
    free = pde.initial_free(grid).reshape(-1).to(u0.device)
    u0 = u0[..., free]
    boundary_index = pde.boundary_points(grid).reshape(-1)
    targets = pde.boundary_targets(grid).to(basis).reshape(-1)
    points = torch.cat([initial_index.reshape(-1)[free], boundary_index])
    values = torch.cat([u0, targets.expand(*u0.shape[:-1], targets.shape[0])], dim=-1)
    return basis[..., points, :], values, points


def lift_initial(pde, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B − B(·, t₀), u₀ broadcast along t) for a basis ``(..., P, N)`` and u₀ at
    ``pde.initial_points(grid)``: the initial condition eliminated, u = u_p + B̃ w equals u₀ at
    t₀ for every w. Flat layout, as the basis."""
    _check_basis(basis, grid)
    initial_index = pde.initial_points(grid)
    index = torch.arange(grid.size, device=basis.device).reshape(grid.shape)
    t_axis = grid.axis_index("t")
    # For every grid point, the flat index of the point with the same space coordinates at t₀,
    # and that point's position among the initial points (the layout of u₀).
    at_start = index.select(t_axis, 0).unsqueeze(t_axis).expand(grid.shape).reshape(-1)
    position = torch.empty(grid.size, dtype=torch.long, device=basis.device)
    position[initial_index.reshape(-1).to(basis.device)] = torch.arange(
        initial_index.numel(), device=basis.device)
    u0 = as_values("initial", initial, tuple(initial_index.shape), basis, basis.shape[:-2])
    u0 = u0.reshape(*u0.shape[: u0.ndim - initial_index.ndim], initial_index.numel())
    return basis - basis[..., at_start, :], u0[..., position[at_start]]


def _check_basis(basis: torch.Tensor, grid: Grid) -> None:
    check_basis(basis, grid, partial(check_grid, "grid"))


class Heat1D(PDE1D):
    """Heat equation u_t − κ u_xx = 0.

    Exact solution (:meth:`exact_solution`): on x ∈ [a, a + L], u = sin(q(x − a) + θ) e^{−κq²t}
    with q = 2πk/L when periodic and q = πk/L otherwise; its Dirichlet values are
    sin(θ) e^{−κq²t} and sin(πk + θ) e^{−κq²t} (zero for θ = 0), see :meth:`exact_boundary_values`.

    Example::

        >>> import diffnum.pde as pde
        >>> grid = pde.uniform_grid({"x": (0.0, 1.0, 33), "t": (0.0, 0.1, 11)})
        >>> heat = pde.Heat1D(0.1, boundary="dirichlet")
        >>> u = heat.exact_solution(grid)  # sin(πx) e^{−0.1π²t}
        >>> F = heat.residual(u, grid)
        >>> bool(F[1:-1, 1:].abs().max() < 1e-5)  # second order: O(Δx², Δt²)
        True
    """

    terms = ("u_t", "u_xx")

    def __init__(self, diffusivity: float = 0.1, **options) -> None:
        super().__init__(**options)
        self.diffusivity = check_positive("diffusivity", diffusivity)

    def pointwise_residual(self, terms):
        """u_t − κ u_xx."""
        return terms["u_t"] - self.diffusivity * terms["u_xx"]

    def exact_solution(
        self, grid: Grid, *, wavenumber: int = 1, phase: float = 0.0
    ) -> torch.Tensor:
        """The single-mode exact solution above on ``grid``, shape ``grid.shape``."""
        self.check_grid(grid)
        phase = check_real("phase", phase)
        x, t = self._xt(grid)
        q = self._q(grid, wavenumber)
        return torch.sin(q * (x - x.min()) + phase) * torch.exp(-self.diffusivity * q**2 * t)

    def exact_boundary_values(
        self, grid: Grid, *, wavenumber: int = 1, phase: float = 0.0
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
        """(g_left, g_right) of the exact solution, for ``boundary_values`` (Dirichlet)."""
        self.check_grid(grid)
        phase = check_real("phase", phase)
        q = self._q(grid, wavenumber)
        length = grid.lengths[grid.axis_index("x")]
        kappa = self.diffusivity
        return (lambda t: math.sin(phase) * torch.exp(-kappa * q**2 * t),
                lambda t: math.sin(q * length + phase) * torch.exp(-kappa * q**2 * t))

    def _q(self, grid, wavenumber):
        check_int_in_range("wavenumber", wavenumber, -(10**6), 10**6)
        factor = 2 if self.boundary == "periodic" else 1
        return factor * math.pi * wavenumber / grid.lengths[grid.axis_index("x")]

    @staticmethod
    def _xt(grid):
        mesh = grid.mesh()
        return mesh[grid.axis_index("x")], mesh[grid.axis_index("t")]


class Advection1D(PDE1D):
    """Linear advection u_t + c u_x = 0 (periodic, or Dirichlet at the inflow end only).

    Exact solution u(x, t) = u₀(x − ct); :meth:`exact_solution` takes u₀ as a callable
    (default sin(2π(x − a)/L), L-periodic on x ∈ [a, a + L]).

    Example::

        >>> import diffnum.pde as pde
        >>> pde.Advection1D(1.0).terms
        ('u_t', 'u_x')
    """

    terms = ("u_t", "u_x")

    def __init__(self, velocity: float = 1.0, **options) -> None:
        super().__init__(**options)
        self.velocity = check_real("velocity", velocity)

    def pointwise_residual(self, terms):
        """u_t + c u_x."""
        return terms["u_t"] + self.velocity * terms["u_x"]

    def _boundary_sides(self):
        # Only the inflow end (left if c >= 0) can carry a condition for a first-order PDE.
        if self.boundary == "periodic":
            return ()
        return (0,) if self.velocity >= 0 else (1,)

    def exact_solution(
        self, grid: Grid, initial: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """u₀(x − ct) on ``grid``, shape ``grid.shape``."""
        self.check_grid(grid)
        if initial is not None and not callable(initial):
            raise TypeError(f"initial must be a callable u0(x) or None, got "
                            f"{type(initial).__name__}")
        x, t = Heat1D._xt(grid)
        if initial is None:
            a, length = float(grid.coordinates[grid.axis_index("x")][0]), grid.lengths[
                grid.axis_index("x")]

            def initial(s):
                return torch.sin(2 * math.pi * (s - a) / length)

        return initial(x - self.velocity * t)


class Burgers1D(PDE1D):
    """Viscous Burgers equation u_t + u u_x − ν u_xx = 0 on x ∈ [−1, 1].

    Exact reference (:meth:`exact_solution`) for u₀ = −sin(πx) by Cole–Hopf
    (:func:`burgers_sine_cole_hopf`); it is 2-periodic and zero at x = ±1, so it solves both
    the periodic and the zero-Dirichlet problem.

    Example::

        >>> import diffnum.pde as pde
        >>> pde.Burgers1D(0.01).terms
        ('u', 'u_t', 'u_x', 'u_xx')
    """

    terms = ("u", "u_t", "u_x", "u_xx")

    def __init__(self, viscosity: float = 0.01 / math.pi, **options) -> None:
        super().__init__(**options)
        self.viscosity = check_positive("viscosity", viscosity)

    def pointwise_residual(self, terms):
        """u_t + u u_x − ν u_xx."""
        return terms["u_t"] + terms["u"] * terms["u_x"] - self.viscosity * terms["u_xx"]

    def initial_condition(self, x: torch.Tensor) -> torch.Tensor:
        """u₀(x) = −sin(πx)."""
        return -torch.sin(math.pi * x)

    def exact_solution(self, grid: Grid) -> torch.Tensor:
        """Cole–Hopf solution on ``grid`` (x must span [−1, 1]), shape ``grid.shape``."""
        self.check_grid(grid)
        ix = grid.axis_index("x")
        x0, length = float(grid.coordinates[ix][0]), grid.lengths[ix]
        if abs(x0 + 1) > 1e-12 or abs(length - 2) > 1e-12:
            raise ValueError(f"grid axis 'x' must span [-1, 1], got start {x0}, length {length}")
        x, t = Heat1D._xt(grid)
        return burgers_sine_cole_hopf(x, t, self.viscosity)
