"""One trainer for PI-SC, PI-HC and PI-HC-MoE over the same FNO backbone."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from diffnum._core.files import atomic_write
from diffnum._core.status import Status, StatusResult
from diffnum._core.summary import OneLineRepr
from diffnum._core.validation import (
    check_count,
    check_finite,
    check_one_of,
    check_real,
    real_floating_dtype,
)
from diffnum.constrain._distributed import agree_on_resume, broadcast_state
from diffnum.constrain._layer import (
    ConstrainedSolution,
    HardConstraint,
    MixtureOfExperts,
    check_pde,
    expert_residual,
    interface_jumps,
    interior_mask,
    particular_solution,
)
from diffnum.models import FNO
from diffnum.pde import Grid

logger = logging.getLogger(__name__)

METHODS = ("soft", "hard", "moe")
METHOD_NAMES = {"soft": "PI-SC", "hard": "PI-HC", "moe": "PI-HC-MoE"}


# Largest network size (width, modes, n_basis, padding, experts per axis) a config accepts.
_MAX_SIZE = 10**4


def _check_plain_real(name: str, value: Any, **bounds: Any) -> None:
    """A Python int/float in range (not a tensor: configs are written to checkpoints as JSON)."""
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a Python number, got a Tensor")
    check_real(name, value, **bounds)


def _check_problem(problem: Any, *, for_training: bool) -> None:
    """The fields of a :class:`PhysicsProblem` that :func:`train` (``for_training``) or
    :func:`evaluate` uses: shapes against the grid, real tensors, a non-empty set.

    NaN/inf in the initial conditions is not an input error (such a training step is skipped
    and counted; such a prediction is counted as non-finite); references must be finite."""
    if not isinstance(problem, PhysicsProblem):
        raise TypeError(f"problem must be a PhysicsProblem, got {type(problem).__name__}")
    check_pde("problem.pde", problem.pde)
    if not isinstance(problem.grid, Grid):
        raise TypeError(f"problem.grid must be a diffnum.pde.Grid, got "
                        f"{type(problem.grid).__name__}")
    initial_shape = tuple(problem.pde.initial_points(problem.grid).shape)
    names = ("train_initial",) if for_training else ("test_initial", "test_solution")
    for name in names:
        x = getattr(problem, name)
        real_floating_dtype(f"problem.{name}", x)
        want = initial_shape if name != "test_solution" else tuple(problem.grid.shape)
        if x.ndim != 1 + len(want) or tuple(x.shape[1:]) != want or x.shape[0] == 0:
            raise ValueError(f"problem.{name} must have shape (n >= 1, *{want}), "
                             f"got {tuple(x.shape)}")
    if not for_training:
        if problem.test_solution.shape[0] != problem.test_initial.shape[0]:
            raise ValueError(f"problem.test_initial and problem.test_solution must hold the same "
                             f"number of cases, got {problem.test_initial.shape[0]} and "
                             f"{problem.test_solution.shape[0]}")
        check_finite("problem.test_solution", problem.test_solution)


@dataclass(frozen=True, repr=False)
class PhysicsProblem(OneLineRepr):
    """What a physics-only training run needs: the PDE on a grid, the initial conditions to
    train on, and held-out initial conditions with reference solutions to evaluate on.

    Attributes:
        pde: a PDE object with ``basis_terms``, ``residual``, ``constraint_rows``, …
        grid: the space–time grid of the basis.
        train_initial: u₀ at the initial points, ``(n_train, *initial shape)``.
        test_initial: ``(n_test, *initial shape)``.
        test_solution: references on the grid, ``(n_test, *grid.shape)``.

    Example::

        >>> import torch
        >>> from diffnum.constrain import PhysicsProblem
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> u0 = torch.zeros(3, 16, dtype=torch.float64)
        >>> problem = PhysicsProblem(Heat1D(0.1), grid, u0, u0[:2], torch.zeros(2, 16, 9))
        >>> len(problem.train_initial), tuple(problem.test_solution.shape)
        (3, (2, 16, 9))
    """

    pde: Any
    grid: Grid
    train_initial: torch.Tensor
    test_initial: torch.Tensor
    test_solution: torch.Tensor


# Fields added after the first checkpoints were written, with their defaults.
_LATER_FIELDS = {"residual": "assembled", "lift": False, "initial_rate": False,
                 "lr_schedule": "constant"}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a run; switching PI-SC / PI-HC / PI-HC-MoE is ``method``.

    Args:
        method: ``"soft"`` (PI-SC: the FNO predicts u, the physics residual is the loss),
            ``"hard"`` (PI-HC: the FNO predicts ``n_basis`` functions, u = B w* from
            :class:`HardConstraint`), ``"moe"`` (PI-HC-MoE with ``experts``).
        experts: blocks per grid axis (``moe`` only), e.g. ``(4, 1)`` on an (x, t) grid.
        routing: initial/boundary rows to experts, ``"replicate"`` or ``"partition"`` (with
            ``constraints="rows"``).
        constraints: ``"eliminate"`` (the initial and boundary conditions hold exactly) or
            ``"rows"`` (the paper's least-squares rows); see :class:`HardConstraint`.
        n_basis: the layer's N (basis functions the FNO emits).
        n_sampled: the layer's M (collocation rows per solve), None for every grid point.
        ridge: the layer's λ.
        max_solver_steps: the layer's Levenberg–Marquardt iteration limit.
        width: FNO channel width (the same backbone for every method).
        modes: FNO Fourier modes kept per axis.
        depth: FNO spectral layers.
        padding: FNO zero-padding per non-periodic axis.
        steps: Adam steps, on batches of initial conditions drawn without replacement per
            epoch.
        batch_size: initial conditions per step.
        lr: Adam learning rate.
        lr_schedule: ``"constant"`` or ``"cosine"``: lr·½(1 + cos(π s/S)) at step s of S
            (Loshchilov & Hutter's annealing without restarts, to 0 at the end), a function
            of the step alone, so a resumed run takes the same rates.
        clip: gradient-norm clipping (None: none).
        pde_weight: weight of the mean squared PDE residual in the physics loss.
        initial_weight: weight of the mean squared initial residual.
        boundary_weight: weight of the mean squared boundary residual.
        seed: model initialisation, batch order and collocation sampling.
        checkpoint_every: steps between atomic checkpoints (0: only at the end).
        parallel: with ``torch.distributed`` initialized, ``"experts"`` (every rank takes the
            whole batch and solves its share of the experts, as the paper) or ``"batch"``
            (every rank takes its share of the batch — the FNO work is divided too — and
            solves all of its experts; ``batch_size`` must divide by the world size).
        residual: the PDE residual of the physics loss for ``moe``: ``"assembled"`` (of the
            prediction u itself, as the authors' code: at a block interface the difference
            quotients of u straddle two independent solves, so a jump δ between experts costs
            like a residual of δ/h² in a second derivative) or ``"experts"`` (each expert's own
            residual on its block, from the derivatives of the basis, :func:`expert_residual`:
            no interface term at all) or ``"coupled"`` (the experts' own residuals plus the
            interface conditions of domain decomposition: neighbouring experts' fields agree on
            the grid lines either side of an interface, :func:`interface_jumps`, weighted as
            the boundary rows — a jump counts like a boundary value missed by as much).
        lift: ``soft`` only: the network predicts u − u_p, u_p the particular solution of
            the hard methods' elimination (``pde.lift``: u₀ with the boundary values blended
            in), so PI-SC starts from the prior PI-HC has; the conditions stay soft.
        initial_rate: the network sees, beside u₀, the rate the PDE gives it at t₀,
            ∂ₜu(·, t₀) = −F(u₀) (the residual of the constant-in-time field u₀, whose own
            ∂ₜ is zero), broadcast along t as a second input channel. On Navier–Stokes this
            is −(v₀·∇ω₀ − νΔω₀): the advection term is a product of two global functionals
            of ω₀ that a small FNO does not form from ω₀ alone. Every method of a comparison
            gets the same inputs.

    Example::

        >>> from diffnum.constrain import TrainConfig
        >>> config = TrainConfig(method="moe", experts=(2, 1))
        >>> config.name, len(config.digest)
        ('PI-HC-MoE (K=2)', 12)
    """

    method: str = "hard"
    experts: tuple[int, ...] | None = None
    routing: str = "replicate"
    constraints: str = "eliminate"
    n_basis: int = 16
    n_sampled: int | None = 2048
    ridge: float = 1e-4
    max_solver_steps: int = 50
    width: int = 16
    modes: int | tuple[int, ...] = 8
    depth: int = 3
    padding: int = 0
    steps: int = 200
    batch_size: int = 4
    lr: float = 1e-3
    lr_schedule: str = "constant"
    clip: float | None = 1.0
    pde_weight: float = 1.0
    initial_weight: float = 1.0
    boundary_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    parallel: str = "experts"
    residual: str = "assembled"
    lift: bool = False
    initial_rate: bool = False

    def __post_init__(self) -> None:
        check_one_of("method", self.method, METHODS)
        check_one_of("routing", self.routing, ("replicate", "partition"))
        check_one_of("constraints", self.constraints, ("eliminate", "rows"))
        check_one_of("parallel", self.parallel, ("experts", "batch"))
        check_one_of("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        check_one_of("residual", self.residual, ("assembled", "experts", "coupled"))
        if self.residual != "assembled" and self.method != "moe":
            raise ValueError(f"residual={self.residual!r} is a per-expert loss of a mixture "
                             f"(method='moe'), got method={self.method!r}")
        if not isinstance(self.lift, bool):
            raise TypeError(f"lift must be True or False, got {self.lift!r}")
        if not isinstance(self.initial_rate, bool):
            raise TypeError(f"initial_rate must be True or False, got {self.initial_rate!r}")
        if self.lift and self.method != "soft":
            raise ValueError(f"lift=True is for method='soft' (the hard methods lift with "
                             f"constraints='eliminate'), got method={self.method!r}")
        if self.method == "moe" and not self.experts:
            raise ValueError("method='moe' needs experts, e.g. experts=(4, 1)")
        if self.experts is not None:
            if not isinstance(self.experts, (tuple, list)):
                raise TypeError(f"experts must be None or a tuple of blocks per grid axis, "
                                f"got {type(self.experts).__name__}")
            for i, count in enumerate(self.experts):
                check_count(f"experts[{i}]", count, high=_MAX_SIZE)
        # Counts: (name, low, high). Sizes of the network beyond 10⁴ and more than 10⁶ solver
        # iterations are typos, not settings.
        for name, low, high in (("n_basis", 1, _MAX_SIZE), ("width", 1, _MAX_SIZE),
                                ("depth", 1, 1000), ("padding", 0, _MAX_SIZE),
                                ("steps", 1, 10**9), ("batch_size", 1, 10**6),
                                ("max_solver_steps", 1, 10**6), ("seed", 0, 2**32 - 1),
                                ("checkpoint_every", 0, 10**9)):
            check_count(name, getattr(self, name), low=low, high=high)
        if self.n_sampled is not None:
            check_count("n_sampled", self.n_sampled)
        modes = self.modes if isinstance(self.modes, (tuple, list)) else (self.modes,)
        if not modes:
            raise ValueError("modes must be an int or a non-empty tuple of ints, got ()")
        for m in modes:
            check_count("modes", m, high=_MAX_SIZE)
        # Reals: (name, low, high, low_open). JSON-stored in checkpoints: plain numbers only.
        for name, low, high, low_open in (("ridge", 0.0, 1e8, False), ("lr", 0.0, 10.0, True),
                                          ("pde_weight", 0.0, 1e12, True),
                                          ("initial_weight", 0.0, 1e12, False),
                                          ("boundary_weight", 0.0, 1e12, False)):
            _check_plain_real(name, getattr(self, name), low=low, high=high, low_open=low_open)
        if self.clip is not None:
            _check_plain_real("clip", self.clip, low=0.0, high=math.inf, low_open=True)

    @property
    def name(self) -> str:
        """PI-SC, PI-HC or PI-HC-MoE (K = …)."""
        if self.method == "moe":
            own = {"assembled": "", "experts": ", experts' residuals",
                   "coupled": ", experts' residuals + interface"}[self.residual]
            return f"{METHOD_NAMES['moe']} (K={math.prod(self.experts)}{own})"
        return METHOD_NAMES[self.method] + (" on u_p" if self.lift else "")

    @property
    def digest(self) -> str:
        """12 hex digits of SHA-256 over the sorted-key JSON of every field (seed included).

        Checkpoint names carry it, so a run with other settings (``--seed 1`` in a seed-0
        output directory) starts its own checkpoint instead of finding another run's one;
        JSON of the dataclass fields is stable across processes and Python versions, unlike
        ``hash()``."""
        text = json.dumps(self.record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def record(self) -> dict[str, Any]:
        """The fields as a dict, for the digest and the checkpoint: every field, except
        fields added after checkpoints existed while they hold their default (so that
        adding a setting does not invalidate the runs that did not use it)."""
        record = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if record[name] == default:
                del record[name]
        return record


@dataclass(frozen=True, repr=False)
class ModelOutput(OneLineRepr):
    """What :meth:`ConstrainedModel.forward` returns.

    Attributes:
        u: the prediction ``(b, *grid.shape)``.
        solution: the hard-constraint layer's :class:`ConstrainedSolution` (``hard``,
            ``moe``), None for ``soft`` (no solve).

    Did it fail? ``all_converged``, ``failures()``, ``describe()`` and
    ``raise_if_failed()`` are those of ``solution`` (:class:`~diffnum.Status` protocol);
    without a solve nothing can fail: ``[]``, ``""``, True.

    Example::

        >>> import torch
        >>> from diffnum.constrain import ModelOutput
        >>> out = ModelOutput(torch.zeros(2, 16, 9))  # a soft model's output: no solve
        >>> out.solution, out.failures(), out.all_converged
        (None, [], True)
    """

    u: torch.Tensor
    solution: ConstrainedSolution | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.u, torch.Tensor):
            raise TypeError(f"u must be a tensor, got {type(self.u).__name__}")
        if self.solution is not None and not isinstance(self.solution, ConstrainedSolution):
            raise TypeError(f"solution must be None or a ConstrainedSolution, got "
                            f"{type(self.solution).__name__}")

    @property
    def all_converged(self) -> bool:
        """True when every solve converged (or there is none)."""
        return self.solution is None or self.solution.all_converged

    def failures(self) -> list[tuple[tuple[int, ...], Status]]:
        """``solution.failures()``: (batch index, Status) of every failed solve."""
        return [] if self.solution is None else self.solution.failures()

    def describe(self) -> str:
        """``solution.describe()``: one line per failed solve (empty if none failed)."""
        return "" if self.solution is None else self.solution.describe()

    def raise_if_failed(self, name: str | None = None) -> None:
        """``solution.raise_if_failed(name)``: raise a :class:`~diffnum.solve.SolveError`
        naming each failed solve."""
        if self.solution is not None:
            self.solution.raise_if_failed(name or type(self).__name__)


class ConstrainedModel(nn.Module):
    """FNO backbone + (for ``hard``/``moe``) the hard-constraint layer; ``forward`` returns
    a :class:`ModelOutput` (``u``, and the layer's ``solution`` or None) for initial
    conditions ``(b, *initial shape)``.

    Example::

        >>> import torch
        >>> from diffnum.constrain import ConstrainedModel, TrainConfig
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> u0 = torch.sin(torch.pi * grid.coordinates[0]).double().expand(2, 16)
        >>> config = TrainConfig(n_basis=4, n_sampled=None, width=4, modes=4, depth=1)
        >>> model = ConstrainedModel(config, Heat1D(0.1, boundary="dirichlet"), grid)  # untrained
        >>> out = model(u0)
        >>> out.u.shape, out.solution.weights.shape, out.failures()
        (torch.Size([2, 16, 9]), torch.Size([2, 1, 4]), [])
    """

    def __init__(self, config: TrainConfig, pde, grid: Grid) -> None:
        super().__init__()
        self.config, self.pde, self.grid = config, pde, grid
        out = 1 if config.method == "soft" else config.n_basis
        channels = 2 if config.initial_rate else 1  # u₀ (and its rate, see network_input)
        self.backbone = FNO(channels, out, config.modes, config.width, config.depth, grid.ndim,
                            append_grid=True, padding=config.padding, dtype=torch.float64)
        self.layer: nn.Module | None = None
        if config.method != "soft":
            # The layer weighs its PDE rows as the loss does (√pde_weight per row).
            hard = HardConstraint(pde, config.n_sampled, ridge=config.ridge,
                                  max_steps=config.max_solver_steps,
                                  residual_scale=math.sqrt(config.pde_weight),
                                  constraints=config.constraints)
            if config.constraints == "eliminate":
                # A constant added to every basis column is removed by the elimination
                # (B − B(·, t₀)): the output bias has no effect, and Adam would turn its
                # rounding-level gradient into updates. It stays at zero.
                bias = self.backbone.projection_out.linear.bias
                with torch.no_grad():
                    bias.zero_()
                bias.requires_grad_(False)
            self.layer = hard if config.method == "hard" else MixtureOfExperts(
                hard, config.experts, routing=config.routing,
                distributed=None if config.parallel == "experts" else False)

    def use_data_parallel(self) -> None:
        """Run the backbone through DistributedDataParallel (kept outside the module tree, so
        that checkpoints have the same keys in one process and in many)."""
        object.__setattr__(self, "_data_parallel",
                           nn.parallel.DistributedDataParallel(self.backbone))

    def network_input(self, initial: torch.Tensor) -> torch.Tensor:
        """u₀ broadcast along t, ``(b, 1, *grid.shape)``; with ``config.initial_rate`` a
        second channel, the rate −F(u₀) at t₀ broadcast along t, ``(b, 2, *grid.shape)``."""
        t_axis = self.grid.axis_index("t")
        field = initial.to(torch.float64).unsqueeze(1 + t_axis).expand(initial.shape[0],
                                                                       *self.grid.shape)
        if not self.config.initial_rate:
            return field.unsqueeze(1)
        with torch.no_grad():  # a function of the data only
            rate = -self.pde.residual(field, self.grid).select(1 + t_axis, 0)
        return torch.stack([field, rate.unsqueeze(1 + t_axis).expand_as(field)], 1)

    def forward(self, initial: torch.Tensor, generator: torch.Generator | None = None
                ) -> ModelOutput:
        network = self.__dict__.get("_data_parallel") or self.backbone
        out = network(self.network_input(initial))
        if self.layer is None:
            if not self.config.lift:
                return ModelOutput(out[:, 0])
            return ModelOutput(out[:, 0] + particular_solution(self.pde, self.grid,
                                                               initial.to(out.dtype)))
        basis = out.flatten(2).transpose(1, 2)  # (b, P, N)
        solution = self.layer(basis, self.grid, initial, generator=generator)
        return ModelOutput(solution.u, solution)


def _mean_square(x: torch.Tensor) -> torch.Tensor:
    return (x * x).mean() if x.numel() else x.new_zeros(())


def physics_loss(model: ConstrainedModel, initial: torch.Tensor, u: torch.Tensor,
                 solution: ConstrainedSolution | None = None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted mean squares of the PDE residual where it is collocated
    (:func:`interior_mask`), the initial residual and the boundary residual of the
    prediction u (no data term).

    The PDE residual is that of u itself (``TrainConfig.residual="assembled"``, every
    method): for a mixture, difference quotients straddle the experts' blocks, so a jump
    between neighbouring experts costs loss. With ``residual="experts"`` it is each expert's
    own residual on its block (:func:`expert_residual` of ``solution``, the mixture's
    :class:`ConstrainedSolution`), which sees no interface.

    Example::

        >>> import torch
        >>> from diffnum.constrain import ConstrainedModel, TrainConfig, physics_loss
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> u0 = torch.sin(torch.pi * grid.coordinates[0]).double().expand(2, 16)
        >>> config = TrainConfig(n_basis=4, n_sampled=None, width=4, modes=4, depth=1)
        >>> model = ConstrainedModel(config, Heat1D(0.1, boundary="dirichlet"), grid)  # untrained
        >>> loss, parts = physics_loss(model, u0, (out := model(u0)).u, out.solution)
        >>> sorted(parts), parts["initial"]  # the initial condition holds exactly
        (['boundary', 'initial', 'pde'], 0.0)
    """
    cfg, pde, grid = model.config, model.pde, model.grid
    if cfg.residual != "assembled":
        if solution is None:
            raise ValueError(f"physics_loss: residual={cfg.residual!r} needs the mixture's "
                             "solution")
        F = expert_residual(pde, solution.terms, solution.weights, grid, cfg.experts,
                            solution.particular)
    else:
        F = pde.residual(u, grid)
    parts = {"pde": _mean_square(F[..., interior_mask(pde, grid)]),
             "initial": _mean_square(pde.initial_residual(u, grid, initial)),
             "boundary": _mean_square(pde.boundary_residual(u, grid))}
    loss = (cfg.pde_weight * parts["pde"] + cfg.initial_weight * parts["initial"]
            + cfg.boundary_weight * parts["boundary"])
    if cfg.residual == "coupled":
        parts["interface"] = _mean_square(interface_jumps(solution.basis, solution.weights,
                                                          grid, cfg.experts))
        loss = loss + cfg.boundary_weight * parts["interface"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


@dataclass(frozen=True, repr=False)
class TrainResult(OneLineRepr):
    """Outcome of :func:`train`: the model, the per-step metrics and the failure counts.

    Example::

        >>> from dataclasses import fields
        >>> from diffnum.constrain import TrainResult
        >>> [f.name for f in fields(TrainResult)]
        ['model', 'history', 'solver_failures', 'skipped_steps', 'resumed_from', 'stats']
    """

    model: ConstrainedModel
    history: list[dict[str, Any]]
    solver_failures: int
    skipped_steps: int
    resumed_from: int
    stats: dict[str, Any] = field(default_factory=dict)


def learning_rate(config: TrainConfig, step: int) -> float:
    """The Adam rate of step ``step`` (0-based) of a run of ``config`` (``lr_schedule``).

    Example::

        >>> from diffnum.constrain import TrainConfig, learning_rate
        >>> config = TrainConfig(lr=1e-3, steps=100, lr_schedule="cosine")
        >>> [round(learning_rate(config, s), 6) for s in (0, 50, 99)]
        [0.001, 0.0005, 0.0]
    """
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))


def _atomic_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


_CHECKPOINT_KEYS = frozenset({"config", "model", "optimizer", "step", "sample_generator",
                              "history"})


def _checkpoint_problem(state: Any, config: TrainConfig) -> str | None:
    """None if ``state`` has the layout :func:`train` writes for ``config``, else what is wrong.

    Checked before anything is restored, so a file that is not one of ours never half-loads
    a model, and the history (summed over right after) is known to hold what the loop wrote."""
    if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= state.keys():
        return f"not a training checkpoint (keys {sorted(_CHECKPOINT_KEYS)} expected)"
    if state["config"] != config.record():
        return "it was written with a different configuration"
    step, history = state["step"], state["history"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= config.steps:
        return f"step {step!r} is not in [0, {config.steps}]"
    if not (isinstance(history, list) and len(history) == step and all(
            isinstance(h, dict) and {"solver_failures", "skipped"} <= h.keys()
            for h in history)):
        return "its history does not hold one record per step"
    return None


def problem_digest(problem: PhysicsProblem) -> str:
    """12 hex digits of SHA-256 over what training sees of ``problem``: the PDE's class and
    settings (its attributes: numbers, strings, booleans and tensors), the grid, the points
    where the residual is collocated and the training initial conditions.

    :func:`train` stores it in its checkpoints and resumes only a checkpoint of the same
    problem, so that a change of discretization (say, the residual collocated at t₀ from one
    version to the next) starts the run afresh instead of reusing a model trained on another
    loss. A change inside the PDE's code that alters none of these is not seen.

    Example::

        >>> import torch
        >>> from diffnum.constrain import PhysicsProblem, problem_digest
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> u0 = torch.zeros(3, 16, dtype=torch.float64)
        >>> a = PhysicsProblem(Heat1D(0.1, boundary="dirichlet"), grid, u0, u0[:2],
        ...                    torch.zeros(2, 16, 9))
        >>> b = PhysicsProblem(Heat1D(0.2, boundary="dirichlet"), grid, u0, u0[:2],
        ...                    torch.zeros(2, 16, 9))
        >>> problem_digest(a) == problem_digest(a), problem_digest(a) == problem_digest(b)
        (True, False)
    """
    digest = hashlib.sha256()

    def tensor(t: torch.Tensor) -> None:
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    pde, grid = problem.pde, problem.grid
    settings = {}
    for name, value in sorted(vars(pde).items()):
        if isinstance(value, torch.Tensor):
            tensor(value)
        elif isinstance(value, (bool, int, float, str, type(None))):
            settings[name] = value
    digest.update(json.dumps([type(pde).__qualname__, settings, list(grid.names),
                              list(grid.periodic)], sort_keys=True).encode())
    for coordinate in grid.coordinates:
        tensor(coordinate)
    tensor(interior_mask(pde, grid))
    tensor(problem.train_initial)
    return digest.hexdigest()[:12]


def _load_checkpoint(path: Path, config: TrainConfig, problem: str
                     ) -> dict[str, Any] | None:
    """The state saved in ``path`` if it is a readable checkpoint of ``config`` and of the
    problem with digest ``problem`` (:func:`problem_digest`); else None, logged with the
    file's name, and the run starts afresh.

    ``weights_only=True``: the unpickler rebuilds only tensors and plain containers, so a
    crafted file under ``--out`` cannot run code on ``--resume``. Any failure to read
    (truncated, empty, garbage, a forbidden pickle global) means "no usable checkpoint": the
    loader raises many exception types for these, and a long reproduction should start the
    run again rather than stop with a traceback."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # deliberately broad: see the docstring
        logger.warning("checkpoint %s is unreadable or unsafe to load (%s: %s); starting this "
                       "run afresh (it will be overwritten)", path, type(error).__name__,
                       str(error).splitlines()[0] if str(error) else "")
        return None
    wrong = _checkpoint_problem(state, config)
    if wrong is None and state.get("problem", problem) != problem:
        # (checkpoints written before the digest existed carry none and are accepted)
        wrong = ("it was written for another problem (the PDE's settings, the grid, the "
                 "collocated points or the training data differ)")
    if wrong is not None:
        logger.warning("checkpoint %s is not used: %s; starting this run afresh (it will be "
                       "overwritten)", path, wrong)
        return None
    return state


def _restore(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             sample_gen: torch.Generator, path: Path) -> bool:
    """Load ``state`` into the fresh model, optimizer and generator; True on success.

    On failure (tensors of the wrong shape, a malformed optimizer or generator state) the
    fresh state is put back, so the run starts afresh exactly as without the file."""
    fresh = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
             sample_gen.get_state())
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sample_gen.set_state(state["sample_generator"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as error:
        logger.warning("checkpoint %s does not fit this model (%s: %s); starting this run "
                       "afresh (it will be overwritten)", path, type(error).__name__,
                       str(error).splitlines()[0] if str(error) else "")
        model.load_state_dict(fresh[0])
        optimizer.load_state_dict(fresh[1])
        sample_gen.set_state(fresh[2])
        return False
    return True


def _is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def train(config: TrainConfig, problem: PhysicsProblem, *,
          checkpoint: str | os.PathLike | None = None, resume: bool = False,
          metrics: str | os.PathLike | None = None,
          progress: Callable[[Iterable], Iterable] | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train the basis network of ``config.method`` on ``problem`` with the physics loss.

    Adam (``config.lr``), gradient clipping, seeded batch order and collocation sampling.
    ``checkpoint``: file written atomically every ``config.checkpoint_every`` steps and at the
    end; with ``resume=True`` a run continues from it bit for bit (model, optimizer, both
    random streams). It is read with ``weights_only=True`` (no code runs); a checkpoint that is
    unreadable, not one of ours or of another configuration is logged and the run starts
    afresh (name checkpoints with :attr:`TrainConfig.digest`). ``metrics``: a JSONL file, one
    line per step (loss terms, gradient norm, step time, LM iterations, converged share,
    failures). A step whose loss is not finite is skipped (no update) and counted; solver
    failures are counted, never hidden.
    The batch order is a function of (seed, step) alone (epoch e is a permutation seeded by
    e), so a resumed run draws the same batches without replaying a stream.
    ``progress`` wraps the step range (e.g. a tqdm bar); ``stop_after`` ends the call after
    that many steps (an interruption, for tests). With ``torch.distributed`` initialized the
    backbone is wrapped in DDP and the work is shared as ``config.parallel`` says; the loss
    terms and failure counts logged are those of the whole batch on every rank.

    Example::

        >>> import math, torch
        >>> from diffnum.constrain import PhysicsProblem, TrainConfig, train
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> x, t = grid.mesh()
        >>> g = torch.Generator().manual_seed(0)
        >>> a = torch.randn(6, 1, 1, dtype=torch.float64, generator=g)
        >>> u = a * torch.sin(math.pi * x) * torch.exp(-0.1 * math.pi**2 * t)  # exact solutions
        >>> pde = Heat1D(0.1, boundary="dirichlet")
        >>> problem = PhysicsProblem(pde, grid, u[:4, :, 0], u[4:, :, 0], u[4:])
        >>> config = TrainConfig(method="hard", n_basis=4, n_sampled=None, width=4, modes=4,
        ...                      depth=1, steps=3, batch_size=2)
        >>> result = train(config, problem)  # add checkpoint=..., resume=True to continue a run
        >>> len(result.history), result.solver_failures, result.skipped_steps
        (3, 0, 0)
    """
    _check_train_arguments(config, problem, checkpoint, metrics, resume, progress,
                           stop_after)
    # The model's initialization draws from torch's global generator (nn.Module defaults):
    # seeded inside fork_rng, so a run is reproducible from config.seed and the caller's
    # global random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = ConstrainedModel(config, problem.pde, problem.grid)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    share = world if config.parallel == "batch" else 1
    if distributed:
        model.use_data_parallel()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sample_gen = torch.Generator().manual_seed(config.seed * 7919 + 2)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    digest = problem_digest(problem)
    start, history = _resume(config, digest, model, optimizer, sample_gen,
                             ckpt if resume else None,
                             distributed, rank)
    metrics_path = Path(metrics) if metrics is not None else None
    if metrics_path is not None and _is_main():
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        # Keep only the lines of steps the checkpoint covers, then append.
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))
    batch = _batches(config, len(problem.train_initial), share, rank)
    failures = sum(h["solver_failures"] for h in history)
    skipped = sum(int(h["skipped"]) for h in history)
    steps = range(start, config.steps)
    for done, step in enumerate(steps if progress is None else progress(steps), 1):
        began = time.perf_counter()
        record = _train_step(model, optimizer, config, step, problem.train_initial[batch(step)],
                             sample_gen, share, distributed)
        skipped += int(record["skipped"])
        failures += record["solver_failures"]
        record["step_seconds"] = time.perf_counter() - began
        history.append(record)
        if metrics_path is not None and _is_main():
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        last = step + 1 == config.steps
        if ckpt is not None and _is_main() and (last or (
                config.checkpoint_every and (step + 1) % config.checkpoint_every == 0)):
            _atomic_save({"config": config.record(), "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "step": step + 1,
                          "sample_generator": sample_gen.get_state(), "history": history,
                          "problem": digest}, ckpt)
        if stop_after is not None and done >= stop_after:
            break
    if distributed:
        # Every rank leaves together: rank 0 may still be writing the last checkpoint, and a
        # caller that tears the process group down right after train() must not cut a peer's
        # pending communication short.
        dist.barrier()
    times = [h["step_seconds"] for h in history[start:]] or [float("nan")]
    return TrainResult(model=model, history=history, solver_failures=failures,
                       skipped_steps=skipped, resumed_from=start,
                       stats={"median_step_seconds": statistics.median(times)})


def _check_train_arguments(config: Any, problem: Any, checkpoint: Any, metrics: Any,
                           resume: Any, progress: Any, stop_after: Any) -> None:
    """The arguments of :func:`train`, named when wrong."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_problem(problem, for_training=True)
    for name, path in (("checkpoint", checkpoint), ("metrics", metrics)):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{name} must be None or a path, got {type(path).__name__}")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {resume!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be None or a callable wrapping the step range, got "
                        f"{type(progress).__name__}")
    if stop_after is not None:
        check_count("stop_after", stop_after, low=0)


def _resume(config: TrainConfig, digest: str, model: nn.Module,
            optimizer: torch.optim.Optimizer,
            sample_gen: torch.Generator, ckpt: Path | None, distributed: bool, rank: int
            ) -> tuple[int, list[dict[str, Any]]]:
    """(first step, history so far), restoring ``ckpt`` into the model, optimizer and sample
    generator when it holds a run of ``config`` on the problem of ``digest`` (``ckpt`` None:
    a fresh run).

    Rank 0 alone reads the checkpoint and decides: every rank then restores rank 0's state
    (sent over the process group, read back with weights_only=True) or every rank starts
    afresh, so a file that one rank sees and another does not (or sees in another version)
    cannot desynchronize training."""
    state = None
    if ckpt is not None and rank == 0 and ckpt.exists():
        state = _load_checkpoint(ckpt, config, digest)
        if state is not None and not _restore(state, model, optimizer, sample_gen, ckpt):
            state = None
    if distributed:
        state = broadcast_state(state)  # rank 0's restored checkpoint, or None, on every rank
        restored = state is not None and (
            rank == 0 or _restore(state, model, optimizer, sample_gen, ckpt))
        # Every rank resumes from rank 0's step, or the run stops on every rank (no hang).
        agree_on_resume(state["step"] if restored else 0, strict=True)
    if state is None:
        return 0, []
    logger.info("resuming %s from step %d of %s", config.name, state["step"], ckpt)
    return state["step"], state["history"]


def _batches(config: TrainConfig, n_train: int, share: int, rank: int
             ) -> Callable[[int], torch.Tensor]:
    """step -> the indices of this rank's training initial conditions at that step.

    The batch order is a pure function of (seed, step), so a resumed run sees the same
    batches without replaying a stream: epoch e uses randperm from a generator seeded by e.
    With ``share`` > 1 ranks (``parallel="batch"``) each takes its slice of the batch."""
    batch_size = min(config.batch_size, n_train)
    if batch_size % share:
        raise ValueError(f"parallel='batch' on {share} ranks needs a batch size divisible by "
                         f"{share}, got {batch_size}")
    local = batch_size // share
    per_epoch = max(1, n_train // batch_size)

    def indices(step: int) -> torch.Tensor:
        epoch, slot = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(n_train, generator=g)[slot * batch_size:(slot + 1) * batch_size]
        return order[rank * local:(rank + 1) * local] if share > 1 else order

    return indices


def _train_step(model: ConstrainedModel, optimizer: torch.optim.Optimizer,
                config: TrainConfig, step: int, initial: torch.Tensor,
                sample_gen: torch.Generator, share: int, distributed: bool
                ) -> dict[str, Any]:
    """One Adam step on the physics loss of ``initial``; its metrics record (loss terms,
    LM iterations and converged share, failures, gradient norm, rate, whether skipped)."""
    optimizer.zero_grad(set_to_none=True)
    out = model(initial, sample_gen)
    solution = out.solution
    loss, parts = physics_loss(model, initial, out.u, solution)
    summary = torch.tensor(
        [float(loss.detach()), parts["pde"], parts["initial"], parts["boundary"],
         0.0 if solution is None else float(solution.solution.steps.double().sum()),
         0.0 if solution is None else float(solution.converged.sum()),
         0.0 if solution is None else solution.status.numel()], dtype=torch.float64)
    if share > 1:  # every rank logs the whole batch's numbers
        dist.all_reduce(summary)
        summary[:4] /= share
    record: dict[str, Any] = {"step": step + 1, "loss": float(summary[0]),
                              "pde": float(summary[1]), "initial": float(summary[2]),
                              "boundary": float(summary[3])}
    solves = int(summary[6])
    if solution is not None:
        record["solver_steps"] = float(summary[4]) / solves
        record["converged_fraction"] = float(summary[5]) / solves
    record["solver_failures"] = solves - int(summary[5])
    finite = bool(torch.isfinite(loss))
    if distributed:  # all ranks skip together, or DDP's all-reduce would wait forever
        flag = torch.tensor([1.0 if finite else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finite = bool(flag[0] == 1)
    if finite:
        loss.backward()
        # max_norm = inf measures the norm without clipping.
        norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), math.inf if config.clip is None else config.clip)
        finite = bool(torch.isfinite(norm))
        record["grad_norm"] = float(norm)
        if finite:
            for group in optimizer.param_groups:
                group["lr"] = record["lr"] = learning_rate(config, step)
            optimizer.step()
    record["skipped"] = not finite
    return record


@dataclass(frozen=True, repr=False)
class Evaluation(StatusResult, OneLineRepr):
    """Outcome of :func:`evaluate` on the held-out initial conditions of a problem.

    Attributes:
        relative_l2: ‖u − u_ref‖/‖u_ref‖ over the whole grid, per held-out u₀, ``(n,)``.
        relative_l2_initial: the same at t₀ alone, ``(n,)``.
        status: :class:`~diffnum.Status` per held-out u₀ and solve, ``(n, K)``: the
            constrained solves' status (K experts, 1 for PI-HC); for PI-SC, which has no
            solve, CONVERGED (K = 1). NONFINITE wherever the prediction has NaN or inf.
        steps: LM iterations per solve, ``(n, K)``; None for PI-SC.
        inference_seconds_per_sample: wall time of the forward passes / n.

    ``failures()``, ``describe()`` and ``raise_if_failed()`` come from the result protocol
    (:class:`~diffnum.Status`).

    Example::

        >>> import torch
        >>> from diffnum.constrain import Evaluation
        >>> from diffnum import Status
        >>> e = Evaluation(torch.tensor([0.1, 0.3]), torch.zeros(2),
        ...                torch.tensor([[0], [int(Status.MAX_STEPS)]]), None, 0.01)
        >>> round(e.relative_l2_mean, 3), e.failures()
        (0.2, [((1, 0), <Status.MAX_STEPS: 1>)])
    """

    _DETAILS = ("steps",)

    relative_l2: torch.Tensor
    relative_l2_initial: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor | None
    inference_seconds_per_sample: float

    def _finite(self) -> torch.Tensor:
        return self.relative_l2[torch.isfinite(self.relative_l2)].double()

    @property
    def relative_l2_mean(self) -> float:
        """Mean of the finite relative L2 errors (NaN when none is finite)."""
        finite = self._finite()
        return float(finite.mean()) if len(finite) else float("nan")

    @property
    def relative_l2_std(self) -> float:
        """Population standard deviation of the finite relative L2 errors."""
        finite = self._finite()
        return float(finite.std(correction=0)) if len(finite) > 1 else 0.0

    @property
    def relative_l2_initial_mean(self) -> float:
        """Mean relative L2 error at t₀ (0 for exactly imposed initial conditions)."""
        return float(self.relative_l2_initial.double().mean())

    @property
    def nonfinite_predictions(self) -> int:
        """Held-out u₀ whose prediction holds NaN or inf."""
        return int((~torch.isfinite(self.relative_l2)).sum())

    @property
    def solver_steps_mean(self) -> float | None:
        """Mean LM iterations per solve (None for PI-SC)."""
        return None if self.steps is None else float(self.steps.double().mean())

    @property
    def converged_fraction(self) -> float | None:
        """Share of the solves that converged (None for PI-SC)."""
        return None if self.steps is None else float(self.converged.double().mean())


@torch.no_grad()
def evaluate(model: ConstrainedModel, problem: PhysicsProblem, *, batch_size: int = 4,
             seed: int = 12345) -> Evaluation:
    """Relative L2 error ‖u − u_ref‖/‖u_ref‖ per held-out initial condition (and at t₀
    alone), the constrained solves' status and iterations, and inference seconds per sample,
    as an :class:`Evaluation`.

    Example::

        >>> import torch
        >>> from diffnum.constrain import ConstrainedModel, PhysicsProblem, TrainConfig, evaluate
        >>> from diffnum.pde import Heat1D, uniform_grid
        >>> grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
        >>> u0 = torch.sin(torch.pi * grid.coordinates[0]).double().expand(2, 16)
        >>> config = TrainConfig(n_basis=4, n_sampled=None, width=4, modes=4, depth=1)
        >>> model = ConstrainedModel(config, Heat1D(0.1, boundary="dirichlet"), grid)  # untrained
        >>> report = evaluate(model, problem := PhysicsProblem(model.pde, grid, u0, u0,
        ...                   u0[..., None].expand(2, 16, 9)))
        >>> tuple(report.relative_l2.shape), report.relative_l2_initial_mean < 1e-12
        ((2,), True)
    """
    if not isinstance(model, ConstrainedModel):
        raise TypeError(f"model must be a ConstrainedModel (e.g. TrainResult.model), got "
                        f"{type(model).__name__}")
    _check_problem(problem, for_training=False)
    check_count("batch_size", batch_size, high=10**6)
    check_count("seed", seed, low=0, high=2**63 - 1)
    errors, at_start, statuses, steps, seconds = [], [], [], [], 0.0
    t_axis = problem.grid.axis_index("t")
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(problem.test_initial), batch_size):
        initial = problem.test_initial[start:start + batch_size]
        reference = problem.test_solution[start:start + batch_size]
        began = time.perf_counter()
        out = model(initial, generator)
        seconds += time.perf_counter() - began
        errors.append(_relative_l2(out.u, reference))
        at_start.append(_relative_l2(out.u.select(1 + t_axis, 0),
                                     reference.select(1 + t_axis, 0)))
        if out.solution is None:
            status = torch.full((len(initial), 1), int(Status.CONVERGED))
        else:
            status = out.solution.status.reshape(len(initial), -1)
            steps.append(out.solution.solution.steps.reshape(len(initial), -1))
        finite = torch.isfinite(out.u).flatten(1).all(1, keepdim=True)
        statuses.append(torch.where(finite, status, int(Status.NONFINITE)))
    return Evaluation(torch.cat(errors), torch.cat(at_start), torch.cat(statuses),
                      torch.cat(steps) if steps else None,
                      seconds / len(problem.test_initial))


def _relative_l2(u: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """‖u − u_ref‖/‖u_ref‖ per leading index."""
    return (u - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
