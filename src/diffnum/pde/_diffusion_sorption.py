"""1-D diffusion–sorption (PDEBench): PDE residual and a method-of-lines reference solver
(cell-centred finite volumes in x, scipy's BDF with an analytic tridiagonal Jacobian in t)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from scipy.integrate import solve_ivp

from diffnum._core.summary import OneLineRepr
from diffnum._core.validation import (
    check_count,
    check_finite,
    check_int_in_range,
    check_one_of,
    check_positive,
    check_real,
    real_floating_dtype,
)
from diffnum.pde._checks import check_entries
from diffnum.pde._derivative import differentiate, differentiate_basis
from diffnum.pde._equations import PDE1D
from diffnum.pde._grid import Grid, uniform_grid

Source = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_FLOOR = 1e-6  # R(u) uses max(u, 0) + 1e-6, as the reference code: u^{n_f−1} is singular at 0


class DiffusionSorption1D(PDE1D):
    """Diffusion–sorption u_t − D / R(u) · u_xx − s(x, t) = 0 on x ∈ (0, 1) (PDEBench).

    Freundlich retardation R(u) = 1 + ((1 − φ)/φ) ρ_s k_f n_f ũ^{n_f − 1}, ũ = max(u, 0) + 1e-6
    (the offset keeps R finite at u = 0); constants of the spec by default: D = 5e-4,
    φ = 0.29, ρ_s = 2880, k_f = 3.5e-4, n_f = 0.874. ``source`` s(x, t) (callable of two
    broadcastable tensors, default none) is there for manufactured solutions.

    Boundary conditions: u(t, 0) = ``left_value`` (1) and the Cauchy condition
    u(t, 1) = σ D u_x(t, 1) with σ = ``cauchy_sign``. The spec writes σ = +1; PDEBench's
    generator sets its right ghost cell to D (u_{n−2} − u_{n−1})/Δx ≈ −D u_x, i.e. σ = −1,
    the default here. σ = +1 is a "wrong-sign" Robin condition: it admits the boundary mode
    e^{(x−1)/D}, growing like e^{t/(R D)} (rate ~ 10³), so only σ = −1 is well posed and only it
    is solved by :func:`solve_diffusion_sorption_1d`; both give u(t, 1) = O(D) on resolved
    scales.

    Incompatible data and the initial layer: u₀ = a < 1 (PDEBench) beside u(0, t) = 1, and a
    flat u₀ beside the Cauchy condition, disagree at both corners. The corner nodes carry the
    boundary conditions from t₀ on (:meth:`PDE1D.initial_free`), as the reference solver's
    boundary faces do. The true solution then starts with a layer in which u_t ~ t^(−1/2)
    near the ends, which no finite difference on a training grid resolves: on a 65 × 33 grid
    the reference's pointwise physics loss is 0.072, all of it in the first time levels near
    the ends (1.4e-5 once t < 62.5 is left out, and falling at second order there). The
    residual is still collocated there by default (``initial_layer=0``), because what decides
    whether a physics-only loss is right is its minimizer: over all grid functions meeting
    the conditions, the minimizer of the fully collocated loss is within 0.60 % (65 × 33;
    0.96 % at 33 × 17) of the reference in relative L2, while leaving out t < 50
    (``initial_layer=50``) decouples the later solution from u₀ — the minimizer nearest to
    the lift's u_p is then 4.3 % off at 33 × 17. ``initial_layer`` > 0 is kept for measuring
    the residual away from the layer. The elimination (:meth:`lift`) puts the layer itself
    into the particular solution u_p (:meth:`_end_profile`), so a basis only has to
    represent the smooth rest.

    Interface as :class:`PDE1D` (x derivatives by finite differences; a grid with non-periodic
    x whose ends are x = 0 and x = 1 for the boundary terms to mean the conditions above).
    :meth:`boundary_residual` returns both rows (u(0, t) − 1, u(1, t) − σ D u_x(1, t));
    :meth:`boundary_points` / :meth:`boundary_targets` (used by ``stacked_residual``) cover the
    Dirichlet end only, since the Cauchy row is not a row of the basis; it is available as a
    linear map of the basis from :meth:`cauchy_rows`. With a ``source``, :meth:`residual`
    subtracts s on the grid, while :meth:`residual_from_basis_terms` returns
    u_t − D/R(u) u_xx without it (subtract s at the collocation points yourself).

    Example::

        >>> import torch
        >>> import diffnum.pde as pde
        >>> ds = pde.DiffusionSorption1D()  # PDEBench constants, u(0, t) = 1, Cauchy end at x = 1
        >>> ds.terms, ds.diffusivity
        (('u', 'u_t', 'u_xx'), 0.0005)
    """

    terms = ("u", "u_t", "u_xx")
    boundaries = ("dirichlet",)
    # u₀ and the boundary data disagree at the corners, so u_t is not finite at t₀ there and
    # the first time difference is that of the unresolved layer: t₀ is not collocated.
    collocate_initial = False

    def __init__(
        self,
        *,
        diffusivity: float = 5e-4,
        porosity: float = 0.29,
        density: float = 2880.0,
        freundlich_k: float = 3.5e-4,
        freundlich_n: float = 0.874,
        left_value: float = 1.0,
        cauchy_sign: int = -1,
        source: Source | None = None,
        accuracy: int = 2,
        initial_layer: float = 0.0,
    ) -> None:
        left_value = check_real("left_value", left_value)
        super().__init__(boundary="dirichlet", boundary_values=(left_value, 0.0),
                         method="finite_difference", accuracy=accuracy)
        self.diffusivity = check_positive("diffusivity", diffusivity)
        self.porosity = check_real("porosity", porosity, low=0.0, high=1.0, low_open=True,
                                   high_open=True)
        self.density = check_positive("density", density)
        self.freundlich_k = check_positive("freundlich_k", freundlich_k)
        self.freundlich_n = check_positive("freundlich_n", freundlich_n)
        check_int_in_range("cauchy_sign", cauchy_sign, -1, 1)
        check_one_of("cauchy_sign", cauchy_sign, (-1, 1))
        if source is not None and not callable(source):
            raise TypeError(f"source must be a callable s(x, t) or None, got {type(source)}")
        self.left_value = left_value
        self.cauchy_sign = cauchy_sign
        self.source = source
        self.initial_layer = check_real("initial_layer", initial_layer, low=0.0)

    # -- the equation ---------------------------------------------------------------------
    @property
    def sorption_coefficient(self) -> float:
        """c = ((1 − φ)/φ) ρ_s k_f n_f, so that R(u) = 1 + c ũ^{n_f − 1}."""
        return ((1 - self.porosity) / self.porosity * self.density * self.freundlich_k
                * self.freundlich_n)

    def retardation(self, u: torch.Tensor) -> torch.Tensor:
        """R(u) = 1 + c (max(u, 0) + 1e-6)^{n_f − 1}, elementwise."""
        return 1 + self.sorption_coefficient * (u.clamp(min=0) + _FLOOR) ** (
            self.freundlich_n - 1)

    def pointwise_residual(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """u_t − D / R(u) · u_xx (− s, when a source is set: see :meth:`residual`)."""
        return terms["u_t"] - self.diffusivity / self.retardation(terms["u"]) * terms["u_xx"]

    def residual(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """u_t − D / R(u) u_xx − s(x, t) at every grid point, shape ``(..., *grid.shape)``."""
        r = super().residual(u, grid)
        if self.source is None:
            return r
        mesh = grid.mesh()
        x, t = mesh[grid.axis_index("x")], mesh[grid.axis_index("t")]
        return r - self.source(x, t).to(r)

    # -- boundary -------------------------------------------------------------------------
    def _boundary_sides(self) -> tuple[int, ...]:
        return (0,)  # the Dirichlet end; the Cauchy end is in boundary_residual / cauchy_rows

    def boundary_residual(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """(u(x₀, t) − u_left, u(x₁, t) − σ D u_x(x₁, t)), shape ``(..., 2, nt)``; u_x at the
        right end by the one-sided stencil of order ``accuracy``."""
        self._check_field(u, grid)
        dirichlet = super().boundary_residual(u, grid)
        dim = u.ndim - 2 + grid.axis_index("x")
        u_x = self._derive(u, grid, "u_x", differentiate)
        right = u.select(dim, -1) - self.cauchy_sign * self.diffusivity * u_x.select(dim, -1)
        return torch.cat([dirichlet, right.unsqueeze(-2)], dim=-2)

    def cauchy_rows(self, basis: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Rows C ``(..., nt, N)`` with C w = u(1, t) − σ D u_x(1, t) for u = B w (target 0)."""
        self.check_grid(grid)
        real_floating_dtype("basis", basis)
        b_x = differentiate_basis(basis, grid, "x", derivative=1, method="finite_difference",
                                  accuracy=self.accuracy)
        index = torch.arange(grid.size, device=basis.device).reshape(grid.shape)
        right = index.select(grid.axis_index("x"), -1)
        return basis[..., right, :] - self.cauchy_sign * self.diffusivity * b_x[..., right, :]

    def collocation_mask(self, grid: Grid) -> torch.Tensor:
        """As :meth:`PDE1D.collocation_mask`, and not for t < ``initial_layer`` either (the
        initial layer, see the class)."""
        mask = super().collocation_mask(grid)
        t = grid.coordinates[grid.axis_index("t")]
        early = (t - t[0] < self.initial_layer).to(mask.device)
        shape = [1] * grid.ndim
        shape[grid.axis_index("t")] = -1
        return mask & ~early.reshape(shape)

    def enforce_boundary(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """u with its two end values replaced by the ones the boundary conditions give from
        the interior: u(0, t) = ``left_value`` and the value that makes the discrete Cauchy row
        u(1, t) − σ D u_x(1, t) = 0 hold (shape ``(..., *grid.shape)``).

        For a reference computed on another discretization (the finite-volume solver's face
        value at x = 1 is that of its own sub-cell boundary layer, D ≪ h), this states it in
        the training grid's boundary discretization without touching the interior."""
        self._check_field(u, grid)
        flat = u.reshape(*u.shape[:-2], grid.size, 1)
        return self._impose_ends(flat, grid, homogeneous=False).reshape(u.shape)

    def _blend_targets(self, grid: Grid) -> tuple[tuple[int, ...], torch.Tensor]:
        """The Dirichlet end, and the Cauchy end blended towards 0: u(1, t) = −D u_x(1, t) is
        O(D) on resolved scales, so u_p meets the value the Cauchy row then gives without a
        jump beside x = 1."""
        _, targets = super()._blend_targets(grid)
        return (0, 1), torch.cat([targets, torch.zeros_like(targets)])

    def _end_profile(self, distance: torch.Tensor, length: torch.Tensor,
                     elapsed: torch.Tensor) -> torch.Tensor:
        """λ = erfc(d / (2√(κ (t − t₀)))) with κ = D / R(``left_value``): the exact layer a
        boundary value drives into u_t = κ u_xx on a half-line from a flat start. The
        incompatible corners make the true solution start with such a layer (u_t ~ t^(−1/2));
        with it in u_p the basis is left the smooth remainder. (A linear ramp instead puts
        the boundary value across the whole domain at t₁: a steady solution of the PDE, so
        only the first time levels tell it from the truth — a block of a mixture that sees no
        such level keeps it, 0.66 off in relative L2 at the quick size, against 0.031 with
        this profile.)"""
        kappa = self.diffusivity / float(self.retardation(
            torch.tensor(self.left_value, dtype=torch.float64)))
        width = 2 * torch.sqrt(kappa * elapsed.clamp(min=0))
        inside = torch.special.erfc(distance[:, None] / width.clamp(min=torch.finfo(
            distance.dtype).tiny)[None, :])
        return torch.where(elapsed[None, :] > 0, inside, 0.0)

    def _corner_sides(self) -> tuple[int, ...]:
        return (0, 1)  # the Dirichlet end and the Cauchy end

    def _cauchy_stencil(self, grid: Grid, like: torch.Tensor) -> torch.Tensor:
        """a with Σᵢ aᵢ u(x_{n−1−i}, t) = u(1, t) − σ D u_x(1, t) (the one-sided stencil)."""
        nx = grid.shape[grid.axis_index("x")]
        index = torch.arange(grid.size, device=like.device).reshape(grid.shape)
        x_axis = grid.axis_index("x")
        width = min(nx, 6)
        units = torch.zeros(grid.size, width, dtype=like.dtype, device=like.device)
        for i in range(width):
            units[index.select(x_axis, nx - 1 - i).reshape(-1), i] = 1
        return self.cauchy_rows(units, grid)[0]

    def _impose_ends(self, field: torch.Tensor, grid: Grid, *, homogeneous: bool
                     ) -> torch.Tensor:
        """The Dirichlet end as in :class:`PDE1D`; at the Cauchy end, the value that makes the
        discrete row u(1, t) − σ D u_x(1, t) = 0 hold given the neighbouring values."""
        field = super()._impose_ends(field, grid, homogeneous=homogeneous)
        a = self._cauchy_stencil(grid, field)
        if abs(float(a[0])) < 1e-8 * float(a.abs().max()):
            raise ValueError("the Cauchy row does not involve u(1, t) on this grid; the "
                             "boundary condition cannot be eliminated")
        index = torch.arange(grid.size, device=field.device).reshape(grid.shape)
        x_axis, nx = grid.axis_index("x"), grid.shape[grid.axis_index("x")]
        ends = [index.select(x_axis, nx - 1 - i).reshape(-1) for i in range(a.shape[0])]
        value = sum(-(a[i] / a[0]) * field[..., ends[i], :] for i in range(1, a.shape[0]))
        field = field.clone()
        field[..., ends[0], :] = value
        return field

    def constraint_rows(
        self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`PDE1D.constraint_rows`, plus the Cauchy rows u(1, t) − σ D u_x(1, t) = 0
        of :meth:`cauchy_rows`, placed at the right-end points."""
        rows, values, points = super().constraint_rows(basis, grid, initial)
        cauchy = self.cauchy_rows(basis, grid)
        index = torch.arange(grid.size, device=basis.device).reshape(grid.shape)
        right = index.select(grid.axis_index("x"), -1).reshape(-1)
        shape = torch.broadcast_shapes(rows.shape[:-2], cauchy.shape[:-2])
        rows = torch.cat([rows.expand(*shape, *rows.shape[-2:]),
                          cauchy.expand(*shape, *cauchy.shape[-2:])], dim=-2)
        values = torch.cat([values.expand(*shape, values.shape[-1]),
                            values.new_zeros(*shape, right.shape[0])], dim=-1)
        return rows, values, torch.cat([points, right])

    # -- method of lines ------------------------------------------------------------------
    def method_of_lines(self, nx: int) -> MethodOfLines:
        """The semi-discrete system u' = f(t, u) on ``nx`` cells (see :class:`MethodOfLines`)."""
        return MethodOfLines(self, nx)


class MethodOfLines:
    """Cell-centred finite volumes for u_t = D/R(u) u_xx + s on n cells of (0, 1).

    Cells [ih, (i+1)h], h = 1/n, values u_i at centres x_i = (i + ½)h; with ghost values u₋₁,
    u_n, f_i(t, u) = a(u_i) (u_{i−1} − 2u_i + u_{i+1})/h² + s(x_i, t), a = D/R. Ghosts from the
    conditions at the faces, each second order (face value = mean, face slope = difference/h):

        left, u(0) = g:          u₋₁ = 2g − u₀
        right, u(1) = −D u_x(1): (u_{n−1} + u_n)/2 = −D (u_n − u_{n−1})/h
                                 ⇒ u_n = ρ u_{n−1}, ρ = (D/h − ½)/(D/h + ½) ∈ (−1, 1).

    So f = a(u) ⊙ (L u + b) + s with L tridiagonal (L₀₀ = −3/h², L_{n−1,n−1} = (ρ − 2)/h²) and
    b = (2g/h², 0, …). The off-diagonals of L are ≥ 0, so the semi-discrete flow keeps u ≥ 0.
    Jacobian (tridiagonal): ∂f/∂u = diag(a(u)) L + diag(a'(u) ⊙ (L u + b)), with
    a'(u) = −D R'(u)/R², R'(u) = c (n_f − 1) ũ^{n_f − 2} for u > 0 and 0 for u < 0.

    Example::

        >>> import diffnum.pde as pde
        >>> mol = pde.MethodOfLines(pde.DiffusionSorption1D(), 16)  # 16 finite-volume cells
        >>> mol.nx, round(mol.h, 4)
        (16, 0.0625)
    """

    def __init__(self, pde: DiffusionSorption1D, nx: int) -> None:
        if not isinstance(pde, DiffusionSorption1D):
            raise TypeError(f"pde must be a DiffusionSorption1D, got {type(pde).__name__}")
        check_int_in_range("nx", nx, 3, 10**7)
        if pde.cauchy_sign != -1:
            raise ValueError(
                "the method-of-lines solver needs cauchy_sign = -1 (the well-posed outflow "
                "condition u(1) = -D u_x(1)); cauchy_sign = +1 grows like exp(t/(R D))"
            )
        self.pde, self.nx = pde, nx
        h = 1.0 / nx
        self.h = h
        self.x = (np.arange(nx) + 0.5) * h
        ratio = pde.diffusivity / h
        self.rho = (ratio - 0.5) / (ratio + 0.5)
        main = np.full(nx, -2.0)
        main[0] = -3.0
        main[-1] = self.rho - 2.0
        off = np.ones(nx - 1)
        self.laplacian = scipy.sparse.diags([off, main, off], [-1, 0, 1], format="csr") / h**2
        self.offset = np.zeros(nx)
        self.offset[0] = 2 * pde.left_value / h**2
        self._c = pde.sorption_coefficient
        self._n = pde.freundlich_n

    def _a(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """a(u) = D/R(u) and a'(u)."""
        pos = np.maximum(u, 0) + _FLOOR
        r = 1 + self._c * pos ** (self._n - 1)
        dr = np.where(u > 0, self._c * (self._n - 1) * pos ** (self._n - 2), 0.0)
        d = self.pde.diffusivity
        return d / r, -d * dr / r**2

    def _source(self, t: float) -> np.ndarray | float:
        if self.pde.source is None:
            return 0.0
        x = torch.from_numpy(self.x)
        s = self.pde.source(x, torch.tensor(float(t), dtype=torch.float64))
        return np.broadcast_to(torch.as_tensor(s, dtype=torch.float64).numpy(), self.x.shape)

    def rhs(self, t: float, u: np.ndarray) -> np.ndarray:
        """f(t, u) = a(u) ⊙ (L u + b) + s(x, t)."""
        a, _ = self._a(u)
        return a * (self.laplacian @ u + self.offset) + self._source(t)

    def jacobian(self, t: float, u: np.ndarray) -> scipy.sparse.csc_matrix:
        """∂f/∂u = diag(a) L + diag(a' ⊙ (L u + b)), sparse tridiagonal."""
        a, da = self._a(u)
        lu = self.laplacian @ u + self.offset
        jac = scipy.sparse.diags(a) @ self.laplacian + scipy.sparse.diags(da * lu)
        return jac.tocsc()

    def right_face(self, u: np.ndarray) -> np.ndarray:
        """u(1) = (u_{n−1} + u_n)/2 = (1 + ρ)/2 · u_{n−1} (last axis = cells)."""
        return 0.5 * (1 + self.rho) * u[..., -1]


@dataclass(frozen=True, repr=False)
class DiffusionSorptionTrajectory(OneLineRepr):
    """Result of :func:`solve_diffusion_sorption_1d`.

    Attributes:
        solution: u at the cell centres and saved times, shape ``(..., nt, nx)``.
        times: saved times, shape ``(nt,)``.
        x: cell centres (i + ½)/nx, shape ``(nx,)``.
        grid: ``uniform_grid({"t": …, "x": …})`` matching ``solution`` (for ``pde.residual``).
        right_face: u(t, 1) from the Cauchy ghost cell, shape ``(..., nt)``.
        stats: per batch element, scipy's counts (nfev, njev, nlu) and success.

    Example::

        >>> import torch
        >>> from diffnum.pde import solve_diffusion_sorption_1d
        >>> traj = solve_diffusion_sorption_1d(torch.full((1, 16), 0.1, dtype=torch.float64),
        ...                                    num_times=3, t_end=10.0)
        >>> traj.times.tolist(), traj.right_face.shape
        ([0.0, 5.0, 10.0], torch.Size([1, 3]))
    """

    solution: torch.Tensor
    times: torch.Tensor
    x: torch.Tensor
    grid: Grid
    right_face: torch.Tensor
    stats: list[dict]


def solve_diffusion_sorption_1d(
    initial: torch.Tensor,
    *,
    pde: DiffusionSorption1D | None = None,
    t_end: float = 500.0,
    num_times: int = 101,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> DiffusionSorptionTrajectory:
    """Reference solution of :class:`DiffusionSorption1D` by the method of lines.

    Space: :class:`MethodOfLines` (second order, nx = ``initial.shape[-1]`` cells of (0, 1)).
    Time: ``scipy.integrate.solve_ivp(method="BDF")`` (variable order 1–5, error controlled
    by ``rtol``/``atol``) with the analytic tridiagonal Jacobian as a sparse matrix, so each
    Newton solve is a sparse LU of a tridiagonal matrix, O(nx). Saved at ``num_times`` equally
    spaced times in [0, t_end]. ``initial`` ``(..., nx)`` holds the cell values u₀ ≥ 0; batch
    elements are solved one after the other. Raises ``RuntimeError`` if the integrator fails.

    Example::

        >>> import torch
        >>> from diffnum.pde import solve_diffusion_sorption_1d
        >>> traj = solve_diffusion_sorption_1d(torch.full((1, 16), 0.1, dtype=torch.float64),
        ...                                    num_times=5, t_end=10.0)
        >>> traj.solution.shape  # (batch, times, cells)
        torch.Size([1, 5, 16])
    """
    pde = pde if pde is not None else DiffusionSorption1D()
    if not isinstance(pde, DiffusionSorption1D):
        raise TypeError(f"pde must be a DiffusionSorption1D, got {type(pde).__name__}")
    dtype = real_floating_dtype("initial", initial)
    check_finite("initial", initial)
    if initial.ndim < 1 or initial.shape[-1] < 3:
        raise ValueError(f"initial must have shape (..., nx) with nx >= 3, got "
                         f"{tuple(initial.shape)}")
    if bool((initial < 0).any()):
        raise ValueError("initial must be >= 0 (a concentration), got negative entries")
    t_end = check_positive("t_end", t_end)
    check_int_in_range("num_times", num_times, 2, 10**7)
    rtol = check_real("rtol", rtol, low=0.0, high=1.0, low_open=True, high_open=True)
    atol = check_positive("atol", atol)
    nx = initial.shape[-1]
    check_entries("initial and num_times", initial.numel() * num_times)
    system = pde.method_of_lines(nx)
    times = np.linspace(0.0, t_end, num_times)
    flat = initial.detach().to("cpu", torch.float64).reshape(-1, nx).numpy()
    out, stats = np.empty((flat.shape[0], num_times, nx)), []
    for k, u0 in enumerate(flat):
        result = solve_ivp(system.rhs, (0.0, t_end), u0, method="BDF", t_eval=times,
                           jac=system.jacobian, rtol=rtol, atol=atol)
        if not result.success:
            raise RuntimeError(f"BDF failed for batch element {k}: {result.message}")
        out[k] = result.y.T
        stats.append({"nfev": int(result.nfev), "njev": int(result.njev),
                      "nlu": int(result.nlu), "success": bool(result.success)})
    solution = torch.from_numpy(out).reshape(*initial.shape[:-1], num_times, nx)
    h = 1.0 / nx
    grid = uniform_grid({"t": (0.0, t_end, num_times), "x": (0.5 * h, 1 - 0.5 * h, nx)},
                        dtype=dtype, device=initial.device)
    return DiffusionSorptionTrajectory(
        solution=solution.to(dtype=dtype, device=initial.device),
        times=torch.from_numpy(times).to(dtype=dtype, device=initial.device),
        x=torch.from_numpy(system.x).to(dtype=dtype, device=initial.device),
        grid=grid,
        right_face=torch.from_numpy(system.right_face(out)).reshape(
            *initial.shape[:-1], num_times).to(dtype=dtype, device=initial.device),
        stats=stats,
    )


def pdebench_initial_condition(
    n: int, nx: int, *, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Random initial conditions as PDEBench's generator draws them: a constant field
    u₀(x) = a with a ~ U(0, 0.2), one value per sample; shape ``(n, nx)``.

    Example::

        >>> import torch
        >>> from diffnum.pde import pdebench_initial_condition
        >>> pdebench_initial_condition(3, 8, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 8])
    """
    check_count("n", n)
    check_int_in_range("nx", nx, 3, 10**7)
    check_entries("n * nx", n * nx)
    check_one_of("dtype", dtype, (torch.float32, torch.float64))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    a = 0.2 * torch.rand(n, 1, generator=generator, dtype=torch.float64)
    return a.expand(n, nx).to(dtype).clone()
