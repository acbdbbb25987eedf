"""Property-based fuzzing of the argument checks of ``diffnum.constrain``.

Every public entry point (the router functions, :class:`HardConstraint` and
:class:`MixtureOfExperts` and their forward, :func:`expert_residual`, :func:`interior_mask`,
:class:`TrainConfig`, :func:`train`, :func:`evaluate`) is called with bad arguments drawn by
hypothesis; the outcome must be a finite, correct result or a ``ValueError``/``TypeError``
whose message names the argument. ``classify`` sorts an outcome into ok / named error / raw
error / silent garbage / hang; ``python tests/constrain/test_fuzz.py`` prints the counts per
bad-input class over a fixed survey of probes (the same builders the tests use).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.solve.test_fuzz import (
    NAMED,
    OK,
    assert_named,
    classify,
    print_table,
    survey,
)

from diffnum.constrain import (
    ConstrainedModel,
    ConstrainedSolution,
    Evaluation,
    HardConstraint,
    MixtureOfExperts,
    PhysicsProblem,
    TrainConfig,
    evaluate,
    expert_index,
    expert_residual,
    interior_mask,
    partition_domain,
    train,
    unpartition_domain,
)
from diffnum.pde import Heat1D, uniform_grid

DT = torch.float64
NAN, INF = math.nan, math.inf

# -- the classification harness is tests/solve/test_fuzz.py's ----------------------------------

REFUSE = lambda _: False  # noqa: E731  (accepting the value at all is the garbage)

# -- a tiny heat problem ---------------------------------------------------------------------

GRID = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 0.2, 5)})
PDE = Heat1D(0.1, boundary="dirichlet")


def _basis(batch: int = 1) -> torch.Tensor:
    x, t = GRID.mesh()
    columns = [x**i * (t / 0.2) ** j for i in range(2) for j in range(2)]
    return torch.stack(columns, -1).reshape(1, GRID.size, 4).expand(batch, -1, -1).clone()


def _initial() -> torch.Tensor:
    return torch.sin(math.pi * GRID.coordinates[0])


def _u_ok(out: Any, batch: int = 1) -> bool:
    return (isinstance(out, ConstrainedSolution) and tuple(out.u.shape) == (batch, *GRID.shape)
            and bool(torch.isfinite(out.u).all()))


def _honest(out: Any) -> bool:
    """From non-finite input: a NaN prediction is fine if the solves say NONFINITE."""
    return (isinstance(out, ConstrainedSolution) and tuple(out.u.shape) == (1, *GRID.shape)
            and (bool(torch.isfinite(out.u).all()) or bool((out.status == 3).all())))


def hc(**kw: Any) -> HardConstraint:
    pde = kw.pop("pde", PDE)
    return HardConstraint(pde, kw.pop("n_sampled", 16), **kw)


def moe(**kw: Any) -> MixtureOfExperts:
    layer = kw.pop("hard_constraint", HardConstraint(PDE, 16, max_steps=20))
    return MixtureOfExperts(layer, kw.pop("experts", (2, 1)), **kw)


def forward(layer: Any = None, **kw: Any) -> ConstrainedSolution:
    layer = HardConstraint(PDE, 16, max_steps=20) if layer is None else layer
    basis, grid, initial = kw.pop("basis", _basis()), kw.pop("grid", GRID), kw.pop(
        "initial", _initial())
    return layer(basis, grid, initial, **kw)


def _problem(n_train: int = 2, n_test: int = 2) -> PhysicsProblem:
    u0 = _initial().expand(max(n_train, n_test), -1)
    x, t = GRID.mesh()
    reference = (torch.sin(math.pi * x) * torch.exp(-0.1 * math.pi**2 * t)).expand(
        n_test, *GRID.shape)
    return PhysicsProblem(PDE, GRID, u0[:n_train], u0[:n_test], reference)


SMALL = {"n_basis": 3, "n_sampled": 16, "width": 4, "modes": 2, "depth": 1, "batch_size": 2,
         "steps": 1, "max_solver_steps": 10}


def _config(**kw: Any) -> TrainConfig:
    return TrainConfig(**{**SMALL, **kw})


def _train(**kw: Any) -> Any:
    config, problem = kw.pop("config", _config()), kw.pop("problem", _problem())
    return train(config, problem, **kw)


_MODEL: list[ConstrainedModel] = []


def _model() -> ConstrainedModel:
    if not _MODEL:
        torch.manual_seed(0)
        _MODEL.append(ConstrainedModel(_config(), PDE, GRID))
    return _MODEL[0]


def _evaluate(**kw: Any) -> Any:
    model, problem = kw.pop("model", _model()), kw.pop("problem", _problem())
    return evaluate(model, problem, **kw)


def _report_ok(report: Any) -> bool:
    return isinstance(report, Evaluation) and math.isfinite(report.relative_l2_mean)


# -- bad values ------------------------------------------------------------------------------

NOT_A_NUMBER = [NAN, INF, -INF, True, "1e-3", 1 + 1j, [1e-3], torch.tensor([1.0, 2.0])]
NOT_A_COUNT = [0, -1, 10**12, 2.5, True, NAN, "3", torch.tensor([1, 2])]

bad_number = st.sampled_from(NOT_A_NUMBER) | st.floats(max_value=-1e-300, allow_nan=False,
                                                      allow_infinity=False)
bad_count = (st.sampled_from(NOT_A_COUNT) | st.integers(max_value=0)
             | st.integers(min_value=10**10, max_value=10**15))

def _problem_with(field: str, value: Any) -> PhysicsProblem:
    return PhysicsProblem(**{**_problem().__dict__, field: value})


# PhysicsProblem fields that train (pde, grid, train_initial) or evaluate must refuse.
BAD_PROBLEM_FIELDS: list[tuple[str, Any]] = [
    ("pde", "heat"), ("grid", "grid"), ("grid", None),
    ("train_initial", torch.zeros(2, 3, dtype=DT)), ("train_initial", "u0"),
    ("train_initial", torch.zeros(0, 8, dtype=DT)), ("train_initial", torch.zeros(2, 8).long()),
    ("test_initial", torch.zeros(2, 3, dtype=DT)), ("test_initial", torch.zeros(3, 8, dtype=DT)),
    ("test_initial", torch.zeros(0, 8, dtype=DT)),
    ("test_solution", torch.zeros(2, 3, dtype=DT)),
    ("test_solution", torch.full((2, 8, 5), NAN, dtype=DT)),
    ("test_solution", torch.zeros(2, 8, 5, dtype=torch.complex128)),
]

# TrainConfig: per field, values that must be refused.
CONFIG_FIELDS: dict[str, list[Any]] = {
    "method": ["pinn", None, 1],
    "experts": [(0, 1), (2.5, 1), (NAN, 1), (True, 1), "21", (10**12, 1), 4],
    "routing": ["nearest", None],
    "constraints": ["soft", None],
    "parallel": ["ranks", None],
    "n_basis": NOT_A_COUNT,
    "n_sampled": NOT_A_COUNT,
    "ridge": [*NOT_A_NUMBER, -1.0, 1e300],
    "max_solver_steps": NOT_A_COUNT,
    "width": NOT_A_COUNT,
    "modes": [*NOT_A_COUNT, (0, 2), (2.5, 2), (), "8"],
    "depth": NOT_A_COUNT,
    "padding": [-1, 10**12, 2.5, True, NAN, "3"],
    "steps": NOT_A_COUNT,
    "batch_size": NOT_A_COUNT,
    "lr": [*NOT_A_NUMBER, 0.0, -1.0, 1e300],
    "clip": [*NOT_A_NUMBER, 0.0, -1.0],
    "pde_weight": [*NOT_A_NUMBER, 0.0, -1.0],
    "initial_weight": [*NOT_A_NUMBER, -1.0],
    "boundary_weight": [*NOT_A_NUMBER, -1.0],
    "seed": [-1, 2**70, 2.5, True, NAN, "0"],
    "checkpoint_every": [-1, 10**12, 2.5, True, NAN, "5"],
}

# -- the survey: probes per bad-input class --------------------------------------------------

Probe = tuple[str, str, Callable[[], Any], Callable[[Any], bool] | None]


def survey_probes() -> list[Probe]:
    probes: list[Probe] = []

    def add(cls: str, name: str, call: Callable[[], Any], check=None) -> None:
        probes.append((cls, name, call, check))

    # 1. floats, finite and in range.
    for value in [*NOT_A_NUMBER, -1.0, 1e300]:
        add("floats", "ridge", lambda v=value: hc(ridge=v), REFUSE)
        add("floats", "residual_scale", lambda v=value: hc(residual_scale=v), REFUSE)
    # 2. counts: ints in range with an upper bound.
    for value in NOT_A_COUNT:
        add("counts", "n_sampled", lambda v=value: hc(n_sampled=v), REFUSE)
        add("counts", "max_steps", lambda v=value: hc(max_steps=v), REFUSE)
        add("counts", "experts", lambda v=value: moe(experts=(v, 1)), REFUSE)
        add("counts", "experts", lambda v=value: expert_index(GRID, (v, 1)), REFUSE)
        add("counts", "experts", lambda v=value: expert_index(GRID, {"x": v}), REFUSE)
        add("counts", "batch_size", lambda v=value: _evaluate(batch_size=v), _report_ok)
        if not (isinstance(value, int) and value == 0):  # stop_after=0 is allowed
            add("counts", "stop_after", lambda v=value: _train(stop_after=v), REFUSE)
    for value in (2.5, True, "3", torch.tensor([1, 2]), 10**12, -10**12):
        add("counts", "dim", lambda v=value: partition_domain(_basis(), GRID, (2, 1), dim=v),
            REFUSE)
        add("counts", "dim", lambda v=value: unpartition_domain(
            _basis().reshape(1, 2, 20, 4), GRID, (2, 1), dim=v), REFUSE)
    for value in (-1, 2**70, 2.5, NAN, "0"):
        add("counts", "seed", lambda v=value: _evaluate(seed=v), _report_ok)
    # 3. dtype, device and type agreement.
    for basis in (_basis().long(), _basis().to(torch.complex128), _basis().tolist(),
                  _basis().to("meta")):
        add("dtype/device", "basis", lambda b=basis: forward(basis=b), _u_ok)
    for initial in (_initial().to(torch.complex128), "sin", _initial().to("meta")):
        add("dtype/device", "initial", lambda i=initial: forward(initial=i), _u_ok)
    for name, value in (("grid", "grid"), ("grid", GRID.shape), ("generator", 3),
                        ("generator", "seed"), ("pde", "heat"), ("pde", 3)):
        add("dtype/device", name, lambda n=name, v=value: forward(**{n: v}), _u_ok)
    weights = torch.zeros(1, 1, 4, dtype=DT)
    terms = {n: t for n, t in PDE.basis_terms(_basis(), GRID).items()}
    for name, kw in (("weights", {"weights": weights.float()}),
                     ("weights", {"weights": weights.to("meta")}),
                     ("weights", {"weights": "w"}),
                     ("terms", {"terms": {}}),
                     ("terms", {"terms": {n: t.float() for n, t in terms.items()}}),
                     ("terms", {"terms": 3}),
                     ("grid", {"grid": "grid"}),
                     ("particular", {"particular": {}}),
                     ("particular", {"particular": 3})):
        add("dtype/device", name,
            lambda k=kw: expert_residual(**{"pde": PDE, "terms": terms, "weights": weights,
                                           "grid": GRID, **k}),
            lambda r: isinstance(r, torch.Tensor) and bool(torch.isfinite(r).all()))
    for x in ("x", [[1.0]] * GRID.size, None):
        add("dtype/device", "x", lambda v=x: partition_domain(v, GRID, (2, 1)), REFUSE)
        add("dtype/device", "blocks", lambda v=x: unpartition_domain(v, GRID, (2, 1)), REFUSE)
    for grid in ("grid", None, GRID.shape):
        add("dtype/device", "grid", lambda g=grid: expert_index(g, (2, 1)), REFUSE)
        add("dtype/device", "grid", lambda g=grid: partition_domain(_basis(), g, (2, 1)), REFUSE)
        add("dtype/device", "grid", lambda g=grid: interior_mask(PDE, g), REFUSE)
    for pde in ("heat", None):
        add("dtype/device", "pde", lambda p=pde: interior_mask(p, GRID), REFUSE)
        add("dtype/device", "pde", lambda p=pde: hc(pde=p), REFUSE)
    for name, value in (("solver", "lm"), ("adjoint", "implicit"), ("adjoint", 3)):
        add("dtype/device", name, lambda n=name, v=value: hc(**{n: v}), REFUSE)
    for name, value in (("hard_constraint", "hc"), ("distributed", "yes"), ("distributed", 2),
                        ("routing", None), ("experts", 4), ("experts", "21")):
        add("dtype/device", name, lambda n=name, v=value: moe(**{n: v}), REFUSE)
    for name, value in (("config", "hard"), ("config", {"method": "hard"}), ("problem", "heat"),
                        ("resume", "yes"), ("progress", 3), ("checkpoint", 3), ("metrics", 3)):
        add("dtype/device", name, lambda n=name, v=value: _train(**{n: v}), REFUSE)
    for name, value in (("model", "m"), ("model", torch.nn.Linear(2, 2)), ("problem", "p")):
        add("dtype/device", name, lambda n=name, v=value: _evaluate(**{n: v}), _report_ok)
    for field, value in BAD_PROBLEM_FIELDS:
        problem = _problem_with(field, value)
        if field in ("pde", "grid", "train_initial"):
            add("dtype/device", f"problem.{field}", lambda p=problem: _train(problem=p), REFUSE)
        if field != "train_initial":
            add("dtype/device", f"problem.{field}", lambda p=problem: _evaluate(problem=p),
                REFUSE)
    # NaN in the training initial conditions is honest: every step skipped and counted.
    add("dtype/device", "problem.train_initial",
        lambda: _train(problem=_problem_with("train_initial", torch.full((2, 8), NAN))),
        lambda result: result.skipped_steps == 1)
    # 4. NaN/inf reaching integer maths.
    for value in (NAN, INF, -INF):
        add("nan->int", "experts", lambda v=value: expert_index(GRID, (v, 1)), REFUSE)
        add("nan->int", "experts", lambda v=value: moe(experts={"x": v}), REFUSE)
        add("nan->int", "dim", lambda v=value: partition_domain(_basis(), GRID, (2, 1), dim=v),
            REFUSE)
        add("nan->int", "dim", lambda v=value: unpartition_domain(_basis(), GRID, (2, 1), dim=v),
            REFUSE)
        add("nan->int", "n_sampled", lambda v=value: hc(n_sampled=v), REFUSE)
        add("nan->int", "batch_size", lambda v=value: _evaluate(batch_size=v), REFUSE)
        add("nan->int", "stop_after", lambda v=value: _train(stop_after=v), REFUSE)
    # 5. empty batches.
    add("empty", "basis", lambda: forward(basis=_basis()[:0]),
        lambda out: isinstance(out, ConstrainedSolution) and out.u.shape == (0, *GRID.shape))
    add("empty", "basis", lambda: forward(basis=_basis()[..., :0]), _u_ok)
    add("empty", "basis", lambda: forward(moe(), basis=_basis()[:0]),
        lambda out: isinstance(out, ConstrainedSolution) and out.u.shape == (0, *GRID.shape))
    add("empty", "x", lambda: partition_domain(torch.zeros(0, GRID.size, 2), GRID, (2, 1)),
        lambda out: out.shape == (0, 2, GRID.size // 2, 2))
    add("empty", "problem.test_initial", lambda: _evaluate(problem=_problem(n_test=0)),
        REFUSE)
    add("empty", "problem.train_initial", lambda: _train(problem=_problem(n_train=0)), REFUSE)
    # 6. dataclass configs validate in __post_init__.
    for field, values in CONFIG_FIELDS.items():
        for value in values:
            add("configs", field, lambda f=field, v=value: _config(**{f: v}), REFUSE)
    # 7. silent garbage: non-finite input that turns into NaN output or a silent success.
    add("garbage", "initial", lambda: forward(initial=torch.full((8,), NAN, dtype=DT)),
        _honest)
    add("garbage", "initial", lambda: forward(moe(), initial=torch.full((8,), INF, dtype=DT)),
        _honest)
    add("garbage", "ridge", lambda: forward(HardConstraint(PDE, 16, ridge=1e300)), _u_ok)
    add("garbage", "residual_scale",
        lambda: forward(HardConstraint(PDE, 16, residual_scale=1e300)), _u_ok)
    add("garbage", "lr", lambda: _train(config=_config(lr=1e300)), REFUSE)
    return probes


# -- the property-based tests ----------------------------------------------------------------

FAST = settings(max_examples=20, deadline=10_000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def test_the_survey_has_no_raw_error_garbage_or_hang():
    for cls, name, call, check in survey_probes():
        outcome, detail = classify(call, name, check)
        assert outcome in (OK, NAMED), f"[{cls}] {name}: {outcome}: {detail}"


@FAST
@given(data=st.data())
def test_train_config_validates_every_field(data):
    field = data.draw(st.sampled_from(sorted(CONFIG_FIELDS)))
    value = data.draw(st.sampled_from(CONFIG_FIELDS[field]))
    assert_named(lambda: _config(**{field: value}), field)


@FAST
@given(name=st.sampled_from(["lr", "ridge", "pde_weight", "initial_weight", "boundary_weight",
                             "clip"]), value=bad_number)
def test_train_config_reals_are_finite_and_in_range(name, value):
    assert_named(lambda: _config(**{name: value}), name)


@FAST
@given(name=st.sampled_from(["n_basis", "n_sampled", "width", "depth", "steps", "batch_size",
                             "max_solver_steps", "modes", "padding", "seed",
                             "checkpoint_every"]), value=bad_count)
def test_train_config_counts_are_bounded_ints(name, value):
    if isinstance(value, int) and not isinstance(value, bool) and value == 0 and name in (
            "padding", "seed", "checkpoint_every"):
        return  # 0 is allowed there
    assert_named(lambda: _config(**{name: value}), name)


@FAST
@given(lr=st.floats(1e-8, 10.0), ridge=st.floats(0.0, 1e8), width=st.integers(1, 64),
       modes=st.integers(1, 16) | st.tuples(st.integers(1, 8), st.integers(1, 8)),
       seed=st.integers(0, 2**32 - 1), clip=st.none() | st.floats(1e-6, 1e6))
def test_train_config_accepts_sane_values(lr, ridge, width, modes, seed, clip):
    config = _config(lr=lr, ridge=ridge, width=width, modes=modes, seed=seed, clip=clip)
    assert len(config.digest) == 12


@FAST
@given(name=st.sampled_from(["ridge", "residual_scale"]),
       value=bad_number | st.floats(1e9, 1e300))
def test_hard_constraint_reals_are_finite_and_in_range(name, value):
    assert_named(lambda: hc(**{name: value}), name)


@FAST
@given(name=st.sampled_from(["n_sampled", "max_steps"]), value=bad_count)
def test_hard_constraint_counts_are_bounded_ints(name, value):
    assert_named(lambda: hc(**{name: value}), name)


@FAST
@given(value=bad_count | st.sampled_from([INF, -INF]), axis=st.sampled_from([0, 1]),
       where=st.sampled_from(["expert_index", "partition_domain", "moe", "mapping"]))
def test_expert_counts_are_named(value, axis, where):
    layout = [1, 1]
    layout[axis] = value
    if where == "expert_index":
        call = lambda: expert_index(GRID, tuple(layout))  # noqa: E731
    elif where == "partition_domain":
        call = lambda: partition_domain(_basis(), GRID, tuple(layout))  # noqa: E731
    elif where == "moe":
        call = lambda: moe(experts=tuple(layout))  # noqa: E731
    else:
        call = lambda: expert_index(GRID, {GRID.names[axis]: value})  # noqa: E731
    assert_named(call, "experts")


@FAST
@given(dim=st.sampled_from([2.5, True, NAN, INF, "1", None]) | st.integers(4, 10**15)
       | st.integers(-(10**15), -4), inverse=st.booleans())
def test_router_dim_is_an_int_in_range(dim, inverse):
    if inverse:
        blocks = partition_domain(_basis(), GRID, (2, 1))
        assert_named(lambda: unpartition_domain(blocks, GRID, (2, 1), dim=dim), "dim")
    else:
        assert_named(lambda: partition_domain(_basis(), GRID, (2, 1), dim=dim), "dim")


@FAST
@given(dim=st.integers(-3, 2))
def test_router_round_trips_for_every_valid_dim(dim):
    x = torch.randn(GRID.size, GRID.size, GRID.size, dtype=DT)
    blocks = partition_domain(x, GRID, (2, 1), dim=dim)
    d = dim % 3
    assert torch.equal(unpartition_domain(blocks, GRID, (2, 1), dim=d), x)


@FAST
@given(which=st.sampled_from(["hc", "moe"]),
       name=st.sampled_from(["basis", "grid", "initial", "generator", "pde"]),
       bad=st.sampled_from(["int", "complex", "string", "meta", "empty", "no-columns"]))
def test_forward_arguments_are_named(which, name, bad):
    layer = moe() if which == "moe" else HardConstraint(PDE, 16, max_steps=20)
    good = {"basis": _basis(), "grid": GRID, "initial": _initial(), "generator": None,
            "pde": None}
    value = {
        "int": good[name].long() if name in ("basis",) else 3,
        "complex": good[name].to(torch.complex128) if name in ("basis", "initial") else 1j,
        "string": "x",
        "meta": good[name].to("meta") if name in ("basis", "initial") else object(),
        "empty": good[name][:0] if name == "basis" else [],
        "no-columns": good[name][..., :0] if name == "basis" else GRID.shape,
    }[bad]
    if name == "initial" and bad in ("int", "empty"):
        return  # an int tensor or list is a fine u₀ (converted to the basis dtype)
    assert_named(lambda: forward(layer, **{name: value}), name)


@FAST
@given(value=st.sampled_from([NAN, INF, -INF]), which=st.sampled_from(["hc", "moe"]))
def test_nonfinite_initial_is_reported_not_hidden(value, which):
    layer = moe() if which == "moe" else HardConstraint(PDE, 16, max_steps=20)
    out = forward(layer, initial=torch.full((8,), value, dtype=DT))
    assert _honest(out) and not bool(out.converged.any())


@FAST
@given(name=st.sampled_from(["config", "problem", "resume", "progress", "checkpoint",
                             "metrics", "stop_after"]),
       value=st.sampled_from(["x", 3, 2.5, NAN, -1, object()]))
def test_train_arguments_are_named(name, value):
    if name in ("checkpoint", "metrics") and value == "x":
        return  # a path
    assert_named(lambda: _train(**{name: value}), name)


@FAST
@given(field=st.sampled_from(range(len(BAD_PROBLEM_FIELDS))), evaluating=st.booleans())
def test_problem_fields_are_named(field, evaluating):
    name, value = BAD_PROBLEM_FIELDS[field]
    problem = _problem_with(name, value)
    if evaluating and name != "train_initial":
        assert_named(lambda: _evaluate(problem=problem), f"problem.{name}")
    elif not evaluating and name in ("pde", "grid", "train_initial"):
        assert_named(lambda: _train(problem=problem), f"problem.{name}")


@FAST
@given(name=st.sampled_from(["model", "batch_size", "seed"]),
       value=st.sampled_from([0, -1, 2.5, NAN, "4", 2**70, None, True]))
def test_evaluate_arguments_are_named(name, value):
    if name == "seed" and value == 0 and not isinstance(value, bool):
        return  # seed 0 is fine
    assert_named(lambda: _evaluate(**{name: value}), name)


@FAST
@given(name=st.sampled_from(["pde", "terms", "weights", "grid", "particular"]),
       bad=st.sampled_from(["type", "dtype", "missing"]))
def test_expert_residual_arguments_are_named(name, bad):
    weights = torch.zeros(1, 1, 4, dtype=DT)
    terms = PDE.basis_terms(_basis(), GRID)
    particular = {n: torch.zeros(1, GRID.size, dtype=DT) for n in terms}
    good = {"pde": PDE, "terms": terms, "weights": weights, "grid": GRID,
            "particular": particular}
    if bad == "type":
        value: Any = "x"
    elif bad == "dtype":
        value = ({n: t.float() for n, t in good[name].items()} if name in ("terms", "particular")
                 else weights.float() if name == "weights" else 3)
    else:
        value = {} if name in ("terms", "particular") else None
    if name == "particular" and value is None:
        return  # no particular solution is allowed
    assert_named(lambda: expert_residual(**{**good, name: value}), name)


@FAST
@given(pde=st.sampled_from(["heat", None, 3]), grid=st.sampled_from(["grid", None, (8, 5)]))
def test_interior_mask_arguments_are_named(pde, grid):
    assert_named(lambda: interior_mask(pde, GRID), "pde")
    assert_named(lambda: interior_mask(PDE, grid), "grid")


def test_good_calls_still_work():
    assert _u_ok(forward()) and _u_ok(forward(moe()))
    assert torch.equal(interior_mask(PDE, GRID), PDE.collocation_mask(GRID))
    result = _train(stop_after=1)
    assert len(result.history) == 1
    assert math.isfinite(_evaluate().relative_l2_mean)


if __name__ == "__main__":
    print_table(survey(survey_probes()))
