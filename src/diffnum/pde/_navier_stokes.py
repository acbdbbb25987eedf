"""2-D incompressible Navier–Stokes in vorticity form on a periodic box: PDE residual and a
pseudo-spectral reference solver (2/3 de-aliasing, Crank–Nicolson + Adams–Bashforth 2)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from diffnum._core.summary import OneLineRepr
from diffnum._core.validation import (
    check_count,
    check_finite,
    check_positive,
    check_real,
    real_floating_dtype,
)
from diffnum.pde._checks import (
    as_values,
    broadcasts_to,
    check_basis,
    check_bool,
    check_choice,
    check_terms,
    finite_tensor,
)
from diffnum.pde._derivative import differentiate, differentiate_basis
from diffnum.pde._equations import lift_initial, linear_constraint_rows
from diffnum.pde._grid import Grid


def _wavenumbers(n: int, length: float, dtype, device):
    """Angular wavenumbers (full axis, rfft axis) for n points of period ``length``."""
    scale = 2 * math.pi / length
    full = torch.fft.fftfreq(n, d=1.0 / n, dtype=dtype, device=device) * scale
    half = torch.fft.rfftfreq(n, d=1.0 / n, dtype=dtype, device=device) * scale
    return full, half


def _dealias_mask(nx: int, ny: int, length: float, dtype, device) -> torch.Tensor:
    """The 2/3-rule mask on the rfft2 modes ``(nx, ny // 2 + 1)``: 1 where |k_x| ≤ nx // 3 and
    |k_y| ≤ ny // 3 (in units of 2π/L), 0 elsewhere and on the Nyquist row/column of an even
    axis. :func:`solve_navier_stokes_2d` and :class:`NavierStokes2D` share it."""
    kx, _ = _wavenumbers(nx, length, dtype, device)
    _, ky = _wavenumbers(ny, length, dtype, device)
    kx, ky = kx[:, None], ky[None, :]
    cutoff_x = (nx // 3) * 2 * math.pi / length
    cutoff_y = (ny // 3) * 2 * math.pi / length
    keep = ((kx.abs() <= cutoff_x) & (ky.abs() <= cutoff_y)).to(dtype)
    if nx % 2 == 0:  # never differentiate the Nyquist rows (they are zeroed by the 2/3 rule too)
        keep[nx // 2, :] = 0
    if ny % 2 == 0:
        keep[:, -1] = 0
    return keep


def _dealias(u: torch.Tensor, length: float, dims: tuple[int, int]) -> torch.Tensor:
    """The 2/3-rule projection of ``u`` over its (x, y) dimensions ``dims`` (linear)."""
    w = u.movedim(dims, (-2, -1))
    nx, ny = w.shape[-2:]
    if w.numel() == 0:  # an empty batch: nothing to project (FFT libraries reject it)
        return u
    keep = _dealias_mask(nx, ny, length, w.dtype, w.device)
    w = torch.fft.irfft2(torch.fft.rfft2(w) * keep, s=(nx, ny))
    return w.movedim((-2, -1), dims)


def velocity_from_vorticity(
    omega: torch.Tensor, length: float, *, dims: tuple[int, int] = (-2, -1)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity (u, v) = (∂_y ψ, −∂_x ψ) with −Δψ = ω on a periodic square of side L.

    Spectral Poisson solve ψ̂ = ω̂/|k|² (the mean mode of ψ is set to 0; a mean of ω has no
    periodic stream function and is ignored). ``dims`` are the (x, y) dimensions of ``omega``.

    Example::

        >>> import torch
        >>> import diffnum.pde as pde
        >>> g = torch.Generator().manual_seed(0)
        >>> w0 = pde.gaussian_random_field(16, generator=g).unsqueeze(0)
        >>> import math
        >>> vx, vy = pde.velocity_from_vorticity(w0, 2 * math.pi)
        >>> vx.shape, vy.shape
        (torch.Size([1, 16, 16]), torch.Size([1, 16, 16]))
    """
    real_floating_dtype("omega", omega)
    length = check_positive("length", length)
    if not (isinstance(dims, tuple | list) and len(dims) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) for d in dims)):
        raise TypeError(f"dims must be a pair of ints (the x and y dimensions), got {dims!r}")
    if not all(-omega.ndim <= d < omega.ndim for d in dims) or (
            dims[0] % omega.ndim == dims[1] % omega.ndim):
        raise ValueError(f"dims must be two distinct dimensions of omega with shape "
                         f"{tuple(omega.shape)}, got {tuple(dims)}")
    dims = tuple(dims)
    w = omega.movedim(dims, (-2, -1))
    nx, ny = w.shape[-2:]
    if nx == 0 or ny == 0:
        raise ValueError(f"omega must have at least one point along dims {dims}, got shape "
                         f"{tuple(omega.shape)}")
    if w.numel() == 0:  # an empty batch (FFT libraries reject it)
        return omega.clone(), omega.clone()
    kx, _ = _wavenumbers(nx, length, w.dtype, w.device)
    _, ky = _wavenumbers(ny, length, w.dtype, w.device)
    kx, ky = kx[:, None], ky[None, :]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    psi_hat = torch.fft.rfft2(w) / k2
    psi_hat[..., 0, 0] = 0
    # An odd derivative of the Nyquist mode is not a real field: drop it as in spectral_derivative.
    if ny % 2 == 0:
        psi_hat_y = psi_hat.clone()
        psi_hat_y[..., -1] = 0
    else:
        psi_hat_y = psi_hat
    kx_odd = kx.clone()
    if nx % 2 == 0:
        kx_odd[nx // 2] = 0
    u = torch.fft.irfft2(1j * ky * psi_hat_y, s=(nx, ny))
    v = torch.fft.irfft2(-1j * kx_odd * psi_hat, s=(nx, ny))
    return u.movedim((-2, -1), dims), v.movedim((-2, -1), dims)


class NavierStokes2D:
    """ω_t + u ω_x + v ω_y − ν Δω − f = 0, (u, v) = (∂_y ψ, −∂_x ψ), −Δψ = ω, periodic box.

    Grid axes ``"x"``, ``"y"`` (both periodic, equal period L, spectral derivatives) and
    ``"t"`` (finite differences of order ``accuracy``). The residual is bilinear in ω, so for
    a basis B it is computed from the terms ``"u", "u_t", "u_x", "u_y", "laplacian"`` and the
    velocities ``"velocity_x", "velocity_y"`` of every column (``u`` here names the field ω,
    as in the other PDE objects): F(Bw) = B_t w + (U_B w)(B_x w) + (V_B w)(B_y w) − ν (ΔB) w − f.
    ``forcing`` is a tensor broadcastable to the field, or None. There are no boundary terms.

    ``dealias`` (default True): the advection inputs ``u_x``, ``u_y``, ``velocity_x``,
    ``velocity_y`` are computed from Pω, P the 2/3-rule projection of
    :func:`solve_navier_stokes_2d` (modes |k_x|, |k_y| ≤ n // 3 in units of 2π/L), as the
    solver forms its products; ``u`` (ω itself), ``u_t`` and ``laplacian`` stay full-band, so
    that the modes outside the band still evolve by ω_t = νΔω as in the solver (projecting the
    Laplacian too changes the reference's residual by < 0.1 % and would leave those modes
    undamped). P is linear and acts on the terms, not on the product, so
    :meth:`pointwise_residual` stays pointwise and :meth:`field_terms` / :meth:`basis_terms`
    agree: ``residual_from_basis_terms(basis_terms(B), w)`` = ``residual(B w)``. Fields with
    modes beyond n // 3 are advected only through their projection.

    Why, measured on the reference solutions of the hard-constraints experiment (box 2π,
    ν = 1e-3, dt = 0.01, ω₀ = ``gaussian_random_field(n, alpha=4, tau=3)``, 16 samples, mean
    square of the residual over the grid without t = 0, as it was then collocated; saved every
    20 steps, H = 0.2):

    ======================================  ===========  ===========  ===========
    residual of the reference               n=16, nt=6   n=32, nt=6   n=32, nt=11
    ======================================  ===========  ===========  ===========
    ``dealias=False`` (aliased products)    0.120        0.031        0.041
    ``dealias=True`` (this default)         0.045        0.021        0.032
    … with the exact ω_t of the solver      0.045        6.7e-3       2.1e-2
    P(product) too (not pointwise), FD ω_t  2.0e-4       1.4e-2       1.1e-2
    persistence ω(t) = ω₀, ``dealias``      0.61         0.78         0.78
    ======================================  ===========  ===========  ===========

    What remains with ``dealias=True`` has two parts. (i) The product (Pu·∇)Pω has modes
    beyond the 2/3 band, which the solver discards (its modes there only diffuse) and no
    pointwise residual can (row 3; with H = 0.05 it is 0.044, 5.7e-3, 2.7e-4 at n = 16, 32,
    64). ``solve_navier_stokes_2d(..., truncate_product=False)`` keeps them instead (the band
    |k| ≤ n // 3 is unchanged to 1e-14): then this residual of the reference is only the
    time-derivative error, 2.3e-4 (n = 16) and 1.5e-2 / 1.2e-2 (n = 32) at H = 0.2.
    (ii) Finite differences in t over the saved times, O(H^accuracy) (observed orders
    3.7–4.5 and 2.0–2.2): with ``truncate_product=False`` 5.5e-7 / 8.3e-5 at H = 0.1 and
    5.7e-8 / 5.0e-7 at H = 0.05 (n = 16 / 32, T = 1), down to the solver's own O(dt²)
    error (7e-8 at H = dt = 0.01, n = 16). At n = 32, H = 0.2 this part dominates; saving
    every ≤ 10 steps (H ≤ 0.1) removes it (states 20 steps apart do not determine the
    CN/AB2 step's own time derivative).

    Example::

        >>> import diffnum.pde as pde
        >>> pde.NavierStokes2D(1e-3).terms
        ('u', 'u_t', 'u_x', 'u_y', 'laplacian', 'velocity_x', 'velocity_y')
    """

    terms = ("u", "u_t", "u_x", "u_y", "laplacian", "velocity_x", "velocity_y")

    def __init__(
        self, viscosity: float = 1e-3, *, forcing: torch.Tensor | None = None, accuracy: int = 4,
        dealias: bool = True,
    ) -> None:
        self.viscosity = check_positive("viscosity", viscosity)
        check_choice("accuracy", accuracy, (2, 4))
        check_bool("dealias", dealias)
        if forcing is not None:
            finite_tensor("forcing", forcing)
        self.forcing = forcing
        self.accuracy = accuracy
        self.dealias = dealias

    def check_grid(self, grid: Grid) -> None:
        """Raise ``ValueError`` unless the grid has periodic x, y of equal period and t."""
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a Grid, got {type(grid).__name__}")
        if set(grid.names) != {"x", "y", "t"}:
            raise ValueError(f"grid must have axes 'x', 'y', 't', got {grid.names}")
        ix, iy = grid.axis_index("x"), grid.axis_index("y")
        if not (grid.periodic[ix] and grid.periodic[iy]) or grid.periodic[grid.axis_index("t")]:
            raise ValueError(f"axes x, y must be periodic and t not, got {grid.periodic}")
        if abs(grid.lengths[ix] - grid.lengths[iy]) > 1e-12 * grid.lengths[ix]:
            raise ValueError(f"x and y must have the same period, got {grid.lengths}")

    def pointwise_residual(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """ω_t + u ω_x + v ω_y − ν Δω − f."""
        r = (terms["u_t"] + terms["velocity_x"] * terms["u_x"]
             + terms["velocity_y"] * terms["u_y"] - self.viscosity * terms["laplacian"])
        if self.forcing is None:
            return r
        try:
            fits = torch.broadcast_shapes(r.shape, self.forcing.shape) == r.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"forcing must broadcast to the residual's shape {tuple(r.shape)}, "
                             f"got {tuple(self.forcing.shape)}")
        return r - self.forcing

    def _terms(self, u, grid, operator, offset):
        # offset 0: a field (..., *grid.shape); offset 1: a basis (..., grid.size, N), whose
        # columns are fields (points flattened in C order).
        nd = grid.ndim
        ix, iy = grid.axis_index("x"), grid.axis_index("y")
        length = grid.lengths[ix]
        dims = (ix - nd - offset, iy - nd - offset)
        spectral = {"method": "spectral"}
        fields = u if offset == 0 else u.reshape(*u.shape[:-2], *grid.shape, u.shape[-1])
        if self.dealias:  # the advection inputs from Pω (linear, so column by column for B)
            fields = _dealias(fields, length, dims)
        advected = fields if offset == 0 else fields.reshape(u.shape)
        out = {
            "u": u,
            "u_t": operator(u, grid, "t", method="finite_difference", accuracy=self.accuracy),
            "u_x": operator(advected, grid, "x", **spectral),
            "u_y": operator(advected, grid, "y", **spectral),
        }
        out["laplacian"] = (operator(u, grid, "x", derivative=2, **spectral)
                            + operator(u, grid, "y", derivative=2, **spectral))
        vx, vy = velocity_from_vorticity(fields, length, dims=dims)
        out["velocity_x"], out["velocity_y"] = (
            (vx, vy) if offset == 0 else (vx.reshape(u.shape), vy.reshape(u.shape)))
        return out

    def field_terms(self, u: torch.Tensor, grid: Grid) -> dict[str, torch.Tensor]:
        """The terms of a vorticity field ω of shape ``(..., *grid.shape)``."""
        self._check_field(u, grid)
        return self._terms(u, grid, differentiate, 0)

    def residual(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Vorticity residual at every grid point, shape ``(..., *grid.shape)``."""
        return self.pointwise_residual(self.field_terms(u, grid))

    def basis_terms(self, basis: torch.Tensor, grid: Grid) -> dict[str, torch.Tensor]:
        """Column-wise terms of a basis B ``(..., P, N)``, each ``(..., P, N)``."""
        check_basis(basis, grid, self.check_grid)
        return self._terms(basis, grid, differentiate_basis, 1)

    def residual_from_basis_terms(
        self, terms: Mapping[str, torch.Tensor], weights: torch.Tensor
    ) -> torch.Tensor:
        """F(Bw) from terms ``(..., M, N)`` and weights ``(..., N)``, shape ``(..., M)``;
        with a forcing, restrict it to the same M points first (or leave it None)."""
        check_terms(terms, self.terms, weights)
        return self.pointwise_residual(
            {k: (terms[k] @ weights.unsqueeze(-1)).squeeze(-1) for k in self.terms}
        )

    def _check_field(self, u: torch.Tensor, grid: Grid) -> None:
        real_floating_dtype("u", u)
        self.check_grid(grid)
        if u.ndim < 3 or tuple(u.shape[-3:]) != grid.shape:
            raise ValueError(f"u must have shape (..., {grid.shape}), got {tuple(u.shape)}")

    def initial_residual(self, u: torch.Tensor, grid: Grid, initial: torch.Tensor):
        """ω(x, y, t₀) − ω₀(x, y), shape ``(..., nx, ny)`` in grid axis order."""
        self._check_field(u, grid)
        start = u.select(u.ndim - 3 + grid.axis_index("t"), 0)
        return start - as_values("initial", initial, start.shape[-2:], u, start.shape[:-2])

    def boundary_residual(self, u: torch.Tensor, grid: Grid) -> torch.Tensor:
        """Periodic box: nothing to enforce, an empty ``(..., 0)`` tensor."""
        self._check_field(u, grid)
        return u.reshape(*u.shape[:-3], -1)[..., :0]

    def boundary_targets(self, grid: Grid) -> torch.Tensor:
        """Periodic box: no boundary values, shape ``(0,)``."""
        return grid.coordinates[0].new_zeros(0)

    def initial_points(self, grid: Grid) -> torch.Tensor:
        """Flat grid indices of the points (x_i, y_j, t₀), shape ``(nx, ny)``."""
        self.check_grid(grid)
        index = torch.arange(grid.size, device=grid.coordinates[0].device).reshape(grid.shape)
        return index.select(grid.axis_index("t"), 0)

    def boundary_points(self, grid: Grid) -> torch.Tensor:
        """Periodic box: no boundary points, shape ``(0,)``."""
        return torch.zeros(0, dtype=torch.long, device=grid.coordinates[0].device)

    def initial_free(self, grid: Grid) -> torch.Tensor:
        """Where the initial condition is imposed: everywhere (no boundary, no corners)."""
        return torch.ones(self.initial_points(grid).shape, dtype=torch.bool,
                          device=grid.coordinates[0].device)

    def collocation_mask(self, grid: Grid) -> torch.Tensor:
        """Where the residual is collocated and penalised: every point, t₀ included (ω₀
        fixes the value there, the PDE the rate; see :meth:`PDE1D.collocation_mask`)."""
        self.check_grid(grid)
        return torch.ones(grid.shape, dtype=torch.bool, device=grid.coordinates[0].device)

    def lift(self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B − B(·, t₀), ω₀ along t): u = u_p + B̃ w equals ω₀ at t₀ for every w (the
        authors' code does the same with B·t/T)."""
        self.check_grid(grid)
        return lift_initial(self, basis, grid, initial)

    def constraint_rows(
        self, basis: torch.Tensor, grid: Grid, initial: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Initial-condition rows (Bw)(x, y, t₀) = ω₀ (no boundary rows on a periodic box): C
        ``(..., nx·ny, N)``, c ``(..., nx·ny)`` and the rows' flat grid indices."""
        return linear_constraint_rows(self, basis, grid, initial)

    def exact_taylor_green(self, grid: Grid, *, amplitude: float = 1.0) -> torch.Tensor:
        """Taylor–Green vortex ω = a cos(qx) cos(qy) e^{−2νq²t}, q = 2π/L (a steady-shape
        eigenfunction of Δ, so the advection term vanishes); shape ``grid.shape``."""
        self.check_grid(grid)
        amplitude = check_real("amplitude", amplitude)
        mesh = grid.mesh()
        x, y, t = (mesh[grid.axis_index(a)] for a in ("x", "y", "t"))
        q = 2 * math.pi / grid.lengths[grid.axis_index("x")]
        return (amplitude * torch.cos(q * x) * torch.cos(q * y)
                * torch.exp(-2 * self.viscosity * q**2 * t))


@dataclass(frozen=True, repr=False)
class NavierStokesTrajectory(OneLineRepr):
    """Result of :func:`solve_navier_stokes_2d`.

    Attributes:
        vorticity: ω at the saved times, shape ``(..., len(times), n, n)``.
        times: the saved times t_k = k · save_every · dt, k = 0…, shape ``(len(times),)``.
        cfl: the largest advective Courant number max(|u| + |v|) dt/h met over all steps and
            batch elements (AB2 is stable for ≲ 0.5; larger values mean the result is suspect).

    Example::

        >>> import torch
        >>> import diffnum.pde as pde
        >>> w0 = pde.gaussian_random_field(16, generator=torch.Generator().manual_seed(0))
        >>> traj = pde.solve_navier_stokes_2d(w0.unsqueeze(0), steps=10, save_every=5)
        >>> len(traj.times), traj.cfl < 1
        (3, True)
    """

    vorticity: torch.Tensor
    times: torch.Tensor
    cfl: float


def solve_navier_stokes_2d(
    initial: torch.Tensor,
    *,
    length: float = 2 * math.pi,
    viscosity: float = 1e-3,
    dt: float = 1e-2,
    steps: int = 100,
    save_every: int = 1,
    forcing: torch.Tensor | Callable[[float], torch.Tensor] | None = None,
    truncate_product: bool = True,
) -> NavierStokesTrajectory:
    """Pseudo-spectral solve of ω_t + (u·∇)ω = ν Δω + f on a periodic n × n box of side L.

    Products are formed in physical space from spectra truncated by the 2/3 rule (modes with
    |k_x| or |k_y| ≥ n/3 · 2π/L set to zero) and truncated again, so they are alias-free.
    Time step (IMEX, second order): Crank–Nicolson for ν Δω, Adams–Bashforth 2 for N = −(u·∇)ω
    and f (the first step is a Heun predictor–corrector with the same CN diffusion):

        (1 + ν|k|² dt/2) ω̂ⁿ⁺¹ = (1 − ν|k|² dt/2) ω̂ⁿ + dt (3/2 N̂ⁿ − 1/2 N̂ⁿ⁻¹) + dt f̂.

    CN is unconditionally stable for the diffusion; AB2 needs the advective CFL number
    max|u| dt/h small (≲ 0.5; the largest value met is reported as ``cfl``). ``initial`` has
    shape ``(..., n, n)`` (batched); ``forcing`` is a field or a callable of t.

    ``truncate_product=False`` skips the second truncation: N̂ = −FFT((Pu·∇)Pω) on every mode.
    The modes |k| ≤ n // 3 are unchanged (the product's aliases land only outside them, and
    the modes outside never enter a product), while those outside then follow the same
    pointwise equation as :class:`NavierStokes2D` with ``dealias=True``, whose residual of
    the trajectory is then only the time-discretisation error (see that class). With the
    default they only diffuse.

    Example::

        >>> import torch
        >>> import diffnum.pde as pde
        >>> g = torch.Generator().manual_seed(0)
        >>> w0 = pde.gaussian_random_field(16, generator=g).unsqueeze(0)
        >>> traj = pde.solve_navier_stokes_2d(w0, steps=10, save_every=5)
        >>> traj.vorticity.shape  # (batch, saved times, n, n)
        torch.Size([1, 3, 16, 16])
    """
    length, nu, dt = _check_solver_arguments(initial, length, viscosity, dt, steps, save_every,
                                             forcing, truncate_product)
    n = initial.shape[-1]
    dtype, device = initial.dtype, initial.device
    if initial.numel() == 0:  # an empty batch: an empty trajectory (FFT libraries reject it)
        times = torch.arange(0, steps + 1, save_every, dtype=dtype, device=device) * dt
        return NavierStokesTrajectory(
            vorticity=initial.unsqueeze(-3).expand(*initial.shape[:-2], len(times), n, n).clone(),
            times=times, cfl=0.0)
    kx, ky = _wavenumbers(n, length, dtype, device)
    kx, ky = kx[:, None], ky[None, :]
    k2 = kx**2 + ky**2
    keep = _dealias_mask(n, n, length, dtype, device)  # |k| <= n // 3 (units of 2π/L): 2/3 rule
    k2_safe = k2.clone()
    k2_safe[0, 0] = 1.0
    implicit = 1 + 0.5 * nu * dt * k2  # Crank–Nicolson for ν Δω
    explicit = 1 - 0.5 * nu * dt * k2
    h = length / n
    cfl = [0.0]

    def nonlinear(w_hat):
        w_hat = w_hat * keep
        psi_hat = w_hat / k2_safe
        u = torch.fft.irfft2(1j * ky * psi_hat, s=(n, n))
        v = torch.fft.irfft2(-1j * kx * psi_hat, s=(n, n))
        wx = torch.fft.irfft2(1j * kx * w_hat, s=(n, n))
        wy = torch.fft.irfft2(1j * ky * w_hat, s=(n, n))
        cfl[0] = max(cfl[0], float((u.abs() + v.abs()).max()) * dt / h)
        product_hat = -torch.fft.rfft2(u * wx + v * wy)
        return product_hat * keep if truncate_product else product_hat

    def force_hat(t):
        if forcing is None:
            return 0
        f = forcing(t) if callable(forcing) else forcing
        return torch.fft.rfft2(_forcing_field(f, initial))

    w_hat = torch.fft.rfft2(initial)
    saved, times = [initial], [0.0]
    previous = None
    for step in range(steps):
        t = step * dt
        current = nonlinear(w_hat) + force_hat(t)
        if previous is None:
            # Start with a Heun (CN predictor–corrector) step: its local error is O(dt³) like
            # AB2's, so the trajectory has no O(dt) kink at t = 0 (forward Euler would leave one).
            predicted = (explicit * w_hat + dt * current) / implicit
            extrapolated = 0.5 * (current + nonlinear(predicted) + force_hat(t + dt))
        else:
            extrapolated = 1.5 * current - 0.5 * previous
        w_hat = (explicit * w_hat + dt * extrapolated) / implicit
        previous = current
        if not bool(torch.isfinite(w_hat).all()):
            raise ValueError(
                f"the vorticity became non-finite at step {step + 1} (t = {(step + 1) * dt:.4g}; "
                f"largest CFL number {cfl[0]:.3g}, stable for <~ 0.5): reduce dt (got {dt}) or "
                "the amplitude of initial")
        if (step + 1) % save_every == 0:
            saved.append(torch.fft.irfft2(w_hat, s=(n, n)))
            times.append((step + 1) * dt)
    return NavierStokesTrajectory(
        vorticity=torch.stack(saved, dim=-3),
        times=torch.tensor(times, dtype=dtype, device=device),
        cfl=cfl[0],
    )


def _check_solver_arguments(initial: Any, length: Any, viscosity: Any, dt: Any, steps: Any,
                            save_every: Any, forcing: Any, truncate_product: Any
                            ) -> tuple[float, float, float]:
    """The arguments of :func:`solve_navier_stokes_2d`, named when wrong; (L, ν, dt)."""
    real_floating_dtype("initial", initial)
    check_finite("initial", initial)
    if initial.ndim < 2 or initial.shape[-1] != initial.shape[-2] or initial.shape[-1] < 4:
        raise ValueError(f"initial must have shape (..., n, n) with n >= 4, got "
                         f"{tuple(initial.shape)}")
    length = check_positive("length", length)
    nu = check_positive("viscosity", viscosity)
    dt = check_positive("dt", dt)
    check_count("steps", steps, low=0)
    check_count("save_every", save_every)
    check_bool("truncate_product", truncate_product)
    if forcing is not None and not callable(forcing):
        _forcing_field(forcing, initial)
    return length, nu, dt


def _forcing_field(f: object, initial: torch.Tensor) -> torch.Tensor:
    """A forcing value (a field or what a forcing callable returned) as a finite tensor of the
    dtype and device of ``initial`` that broadcasts to its shape."""
    if isinstance(f, bool) or not isinstance(f, torch.Tensor | int | float):
        raise TypeError(f"forcing must be a tensor, a callable of t returning one, or None; got "
                        f"{type(f).__name__}")
    f = torch.as_tensor(f, dtype=initial.dtype, device=initial.device)
    check_finite("forcing", f)
    if not broadcasts_to(f.shape, initial.shape):
        raise ValueError(f"forcing must broadcast to the shape of initial {tuple(initial.shape)}, "
                         f"got {tuple(f.shape)}")
    return f
