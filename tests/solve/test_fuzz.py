"""Property-based fuzzing of the argument checks of ``diffnum.solve``.

Every public entry point (``linear_solve``, ``least_squares``, ``root``, ``fixed_point``, the
solver and adjoint configs, ``Solution``) is called with bad arguments drawn by hypothesis; the
outcome must be a finite, correct result or a ``ValueError``/``TypeError`` whose message names
the argument. ``classify`` sorts an outcome into ok / named error / raw error / silent garbage
/ hang; ``python tests/solve/test_fuzz.py`` prints the counts per bad-input class over a fixed
survey of probes (the same builders the tests use).
"""

from __future__ import annotations

import math
import re
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffnum.solve import (
    CG,
    GMRES,
    LU,
    AndersonAcceleration,
    Broyden,
    FixedPointIteration,
    GaussNewton,
    ImplicitAdjoint,
    LevenbergMarquardt,
    Newton,
    Solution,
    fixed_point,
    least_squares,
    linear_solve,
    root,
)

DT = torch.float64
NAN, INF = math.nan, math.inf

# -- the classification harness --------------------------------------------------------------

OK, NAMED, RAW, GARBAGE, HANG = "ok", "named error", "raw error", "silent garbage", "hang"
OUTCOMES = (OK, NAMED, RAW, GARBAGE, HANG)


class _Timeout(BaseException):
    """Raised by the alarm inside a call that runs too long (not an ``Exception``, so no
    ``except Exception`` in the library swallows it)."""


def _names(name: str, message: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) is not None


def classify(call: Callable[[], Any], name: str, check: Callable[[Any], bool] | None = None,
             *, timeout: float = 20.0) -> tuple[str, str]:
    """(outcome, detail) of ``call()``: a ValueError/TypeError naming ``name`` is a named error
    (any other exception a raw one); a return value is ok if ``check`` accepts it (finite,
    right shape, correct), else silent garbage; a call still running after ``timeout`` s is a
    hang."""
    def alarm(*_: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        out = call()
    except _Timeout:
        return HANG, f"still running after {timeout} s"
    except (ValueError, TypeError) as error:
        detail = f"{type(error).__name__}: {error}"
        return (NAMED if _names(name, str(error)) else RAW), detail
    except Exception as error:
        return RAW, f"{type(error).__name__}: {error}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        good = check is None or check(out)
    except Exception:  # e.g. a meta tensor returned, whose values cannot be read
        good = False
    return (OK, "") if good else (GARBAGE, f"returned {type(out).__name__}")


def assert_named_or_ok(call: Callable[[], Any], name: str,
                       check: Callable[[Any], bool] | None = None) -> None:
    outcome, detail = classify(call, name, check)
    assert outcome in (OK, NAMED), f"{name}: {outcome}: {detail}"


def assert_named(call: Callable[[], Any], name: str) -> None:
    """For values that must be refused: only a named error will do."""
    outcome, detail = classify(call, name, lambda _: False)
    assert outcome == NAMED, f"{name}: {outcome}: {detail}"


# -- small problems with known answers -------------------------------------------------------

def _spd() -> torch.Tensor:
    A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=DT)
    return A.expand(2, 3, 3).clone()


def _rhs() -> torch.Tensor:
    return torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]], dtype=DT)


def _finite_value(sol: Any, shape: tuple[int, ...]) -> bool:
    return (isinstance(sol, Solution) and tuple(sol.value.shape) == shape
            and bool(torch.isfinite(sol.value).all()))


def _linear_ok(sol: Any, shape: tuple[int, ...] = (2, 3)) -> bool:
    if not _finite_value(sol, shape):
        return False
    if sol.value.numel() == 0 or shape != (2, 3):
        return True
    res = (_spd() @ sol.value.detach().unsqueeze(-1)).squeeze(-1) - _rhs()
    return not sol.all_converged or float(res.norm()) <= 1e-3 * float(_rhs().norm())


LINEAR_SOLVERS = {"direct": LU, "cg": CG, "gmres": GMRES}


def lin(**kw: Any) -> Solution:
    """``linear_solve`` on the SPD test system; ``method`` (default ``"cg"``) names the solver
    class, built from the ``rtol``/``atol``/``restart``/``preconditioner`` given (unless a
    ``solver`` is passed)."""
    A, b = kw.pop("A", _spd()), kw.pop("b", _rhs())
    method = kw.pop("method", "cg")
    options = {k: kw.pop(k) for k in ("rtol", "atol", "restart", "preconditioner") if k in kw}
    if "solver" not in kw:
        kw["solver"] = LINEAR_SOLVERS[method](**options)
    return linear_solve(A, b, **kw)


_LSQ_A = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, -1.0]], dtype=DT)
_LSQ_D = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.0, 2.0]], dtype=DT)


def _lsq_fn(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return (y.unsqueeze(-2) @ _LSQ_A.mT).squeeze(-2) - d


def _lsq_ok(sol: Any, shape: tuple[int, ...] = (2, 2)) -> bool:
    if not _finite_value(sol, shape):
        return False
    if sol.value.numel() == 0 or shape != (2, 2):
        return True
    exact = torch.linalg.lstsq(_LSQ_A.expand(2, 4, 2), _LSQ_D.unsqueeze(-1)).solution.squeeze(-1)
    return not sol.all_converged or bool(torch.allclose(sol.value.detach(), exact, atol=1e-4))


def lsq(**kw: Any) -> Solution:
    fn, y0 = kw.pop("fn", _lsq_fn), kw.pop("y0", torch.zeros(2, 2, dtype=DT))
    return least_squares(fn, y0, kw.pop("args", (_LSQ_D,)), **kw)


_C = torch.tensor([[1.0, 2.0, -1.0], [0.0, 0.5, 3.0]], dtype=DT)


def _root_fn(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return y**3 + y - c


def _root_ok(sol: Any, shape: tuple[int, ...] = (2, 3)) -> bool:
    if not _finite_value(sol, shape):
        return False
    if sol.value.numel() == 0 or shape != (2, 3):
        return True
    return not sol.all_converged or float(_root_fn(sol.value.detach(), _C).abs().max()) < 1e-4


def rt(**kw: Any) -> Solution:
    fn, y0 = kw.pop("fn", _root_fn), kw.pop("y0", torch.zeros(2, 3, dtype=DT))
    return root(fn, y0, kw.pop("args", (_C,)), **kw)


def _fp_fn(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.cos(y) + c


def _fp_ok(sol: Any, shape: tuple[int, ...] = (2, 3)) -> bool:
    if not _finite_value(sol, shape):
        return False
    if sol.value.numel() == 0 or shape != (2, 3):
        return True
    y = sol.value.detach()
    return not sol.all_converged or float((_fp_fn(y, _C) - y).abs().max()) < 1e-4


def fp(**kw: Any) -> Solution:
    fn, y0 = kw.pop("fn", _fp_fn), kw.pop("y0", torch.zeros(2, 3, dtype=DT))
    return fixed_point(fn, y0, kw.pop("args", (_C,)), **kw)


def _oscillating(y: torch.Tensor) -> torch.Tensor:
    """T(y) = 1 − y: plain iteration from 0 alternates 0, 1, 0, … for ever (no divergence)."""
    return 1.0 - y


SOLVES: dict[str, tuple[Callable[..., Solution], Callable[[Any], bool]]] = {
    "linear_solve": (lin, _linear_ok),
    "least_squares": (lsq, _lsq_ok),
    "root": (rt, _root_ok),
    "fixed_point": (fp, _fp_ok),
}

# -- bad values ------------------------------------------------------------------------------

NOT_A_NUMBER = [NAN, INF, -INF, True, False, "1e-3", 1 + 1j, [1e-3], torch.tensor([1.0, 2.0])]
NOT_A_COUNT = [0, -1, 10**12, 2.5, True, NAN, INF, "3", torch.tensor([1, 2])]

bad_number = st.sampled_from(NOT_A_NUMBER) | st.floats(max_value=-1e-300, allow_nan=False,
                                                      allow_infinity=False)
bad_count = (st.sampled_from(NOT_A_COUNT) | st.integers(max_value=0)
             | st.integers(min_value=10**7, max_value=10**15))
not_a_flag = st.sampled_from(["yes", 1, 0, None, 2.0, NAN])

# Configs: per class, per field, values that must be refused.
CONFIG_FIELDS: dict[type, dict[str, list[Any]]] = {
    LevenbergMarquardt: {"rtol": [*NOT_A_NUMBER, -1.0, 1.0, 1e10],
                         "atol": [*NOT_A_NUMBER, -1.0],
                         "initial_damping": [*NOT_A_NUMBER, 0.0, -1.0, 1e16, 1e300],
                         "damping": ["levenberg", None, 3]},
    GaussNewton: {"rtol": [*NOT_A_NUMBER, -1.0, 2.0], "atol": [*NOT_A_NUMBER, -1.0]},
    Newton: {"rtol": [*NOT_A_NUMBER, -1.0, 2.0], "atol": [*NOT_A_NUMBER, -1.0]},
    Broyden: {"rtol": [*NOT_A_NUMBER, -1.0, 2.0], "atol": [*NOT_A_NUMBER, -1.0]},
    AndersonAcceleration: {"rtol": [*NOT_A_NUMBER, -1.0, 2.0], "atol": [*NOT_A_NUMBER, -1.0],
                           "memory": [-1, 10**6, 2.5, True, NAN, "5"],
                           "mixing": [*NOT_A_NUMBER, 0.0, -0.5, 2.0, 1e300],
                           "regularization": [*NOT_A_NUMBER, -1.0, 1e300]},
    FixedPointIteration: {"rtol": [*NOT_A_NUMBER, -1.0, 2.0], "atol": [*NOT_A_NUMBER, -1.0]},
    ImplicitAdjoint: {"hessian": ["exact", None, 1], "linear_solver": ["lu", CG(), 1.0]},
    CG: {"rtol": [*NOT_A_NUMBER, -1.0, 1.0], "atol": [*NOT_A_NUMBER, -1.0],
         "preconditioner": ["jacobi", 3, torch.ones(3)]},
    GMRES: {"rtol": [*NOT_A_NUMBER, -1.0, 1.0], "atol": [*NOT_A_NUMBER, -1.0],
            "restart": [*NOT_A_COUNT, 10**5], "preconditioner": ["jacobi", 3]},
}

# The solver config each solve takes (for the tolerances passed through a solver).
SOLVER_OF = {"least_squares": LevenbergMarquardt, "root": Newton,
             "fixed_point": AndersonAcceleration}


# -- the survey: probes per bad-input class --------------------------------------------------

Probe = tuple[str, str, Callable[[], Any], Callable[[Any], bool] | None]


def _probe(cls: str, name: str, call: Callable[[], Any], check=None) -> Probe:
    return cls, name, call, check


def survey_probes() -> list[Probe]:
    probes: list[Probe] = []
    add = probes.append
    # 1. floats: tolerances and the like, finite and in range.
    for value in [*NOT_A_NUMBER, -1.0]:
        for name in ("rtol", "atol"):
            add(_probe("floats", name, lambda n=name, v=value: lin(**{n: v}), _linear_ok))
            add(_probe("floats", name, lambda n=name, v=value: lin(method="gmres", **{n: v}),
                       _linear_ok))
    # 2. counts: ints in range with an upper bound.
    for value in NOT_A_COUNT:
        for call, check in SOLVES.values():
            add(_probe("counts", "max_steps", lambda c=call, v=value: c(max_steps=v), check))
        add(_probe("counts", "restart",
                   lambda v=value: lin(method="gmres", restart=v), _linear_ok))
    add(_probe("counts", "max_steps",
               lambda: fixed_point(_oscillating, torch.zeros(2, dtype=DT),
                                   solver=FixedPointIteration(), max_steps=10**9),
               lambda s: s.status.eq(1).all()))
    # 3. dtype and device agreement.
    f32 = torch.float32
    meta = torch.device("meta")
    for method in ("direct", "cg", "gmres"):
        add(_probe("dtype/device", "A", lambda m=method: lin(method=m, A=_spd().to(f32)),
                   _linear_ok))
        add(_probe("dtype/device", "A", lambda m=method: lin(method=m, A=_spd().to(meta)),
                   _linear_ok))
        add(_probe("dtype/device", "A", lambda m=method: lin(method=m, A=_spd().long()),
                   _linear_ok))
        add(_probe("dtype/device", "b", lambda m=method: lin(method=m, b=_rhs().long()),
                   _linear_ok))
        add(_probe("dtype/device", "b", lambda m=method: lin(method=m, b=_rhs().tolist()),
                   _linear_ok))
    for method in ("cg", "gmres"):
        add(_probe("dtype/device", "x0", lambda m=method: lin(method=m, x0=_rhs().to(f32)),
                   _linear_ok))
        add(_probe("dtype/device", "x0", lambda m=method: lin(method=m, x0=_rhs().to(meta)),
                   _linear_ok))
        add(_probe("dtype/device", "x0", lambda m=method: lin(method=m, x0=_rhs().tolist()),
                   _linear_ok))
        add(_probe("dtype/device", "x0", lambda m=method: lin(method=m, x0=torch.zeros(3, 3)),
                   _linear_ok))
        add(_probe("dtype/device", "x0",
                   lambda m=method: lin(method=m, x0=torch.zeros(2, 3, dtype=torch.complex128)),
                   _linear_ok))
    for method in ("cg", "gmres"):
        add(_probe("dtype/device", "A", lambda m=method: lin(method=m, A=lambda v: v.float()),
                   _linear_ok))
        add(_probe("dtype/device", "A", lambda m=method: lin(method=m, A=lambda v: v[0]),
                   _linear_ok))
        add(_probe("dtype/device", "preconditioner",
                   lambda m=method: lin(method=m, preconditioner=lambda r: r.sum(0)), _linear_ok))
    for solve, (call, check) in SOLVES.items():
        if solve == "linear_solve":
            continue
        add(_probe("dtype/device", "y0", lambda c=call: c(y0=torch.zeros(2, 2, dtype=torch.int64)),
                   check))
        add(_probe("dtype/device", "y0",
                   lambda c=call: c(y0=torch.zeros(2, 2, dtype=torch.complex128)), check))
        add(_probe("dtype/device", "y0",
                   lambda c=call: c(y0=torch.zeros(2, 2, dtype=torch.float16)), check))
    # 4. NaN/inf reaching integer maths (counts used as loop bounds or sizes).
    for value in (NAN, INF, -INF):
        for call, check in SOLVES.values():
            add(_probe("nan->int", "max_steps", lambda c=call, v=value: c(max_steps=v), check))
        add(_probe("nan->int", "restart", lambda v=value: lin(method="gmres", restart=v),
                   _linear_ok))
        add(_probe("nan->int", "memory",
                   lambda v=value: fp(solver=AndersonAcceleration(memory=v)), _fp_ok))
    # 5. empty batches and empty problems.
    for method in ("direct", "cg", "gmres"):
        add(_probe("empty", "b", lambda m=method: lin(method=m, A=torch.zeros(0, 3, 3, dtype=DT),
                                                       b=torch.zeros(0, 3, dtype=DT)),
                   lambda s: _linear_ok(s, (0, 3))))
        add(_probe("empty", "b", lambda m=method: lin(method=m, A=torch.zeros(0, 0, dtype=DT),
                                                       b=torch.ones(0, dtype=DT)),
                   lambda s: _linear_ok(s, (0,))))
        add(_probe("empty", "b",
                   lambda m=method: lin(method=m, A=torch.zeros(2, 0, 0, dtype=DT),
                                        b=torch.ones(2, 0, dtype=DT)),
                   lambda s: _linear_ok(s, (2, 0))))
    add(_probe("empty", "y0", lambda: lsq(y0=torch.zeros(0, 2, dtype=DT), args=(_LSQ_D[:0],)),
               lambda s: _lsq_ok(s, (0, 2))))
    add(_probe("empty", "y0", lambda: rt(y0=torch.zeros(0, 3, dtype=DT), args=(_C[:0],)),
               lambda s: _root_ok(s, (0, 3))))
    add(_probe("empty", "y0", lambda: fp(y0=torch.zeros(0, 3, dtype=DT), args=(_C[:0],)),
               lambda s: _fp_ok(s, (0, 3))))
    for call, check in SOLVES.values():
        if call is lin:
            continue
        add(_probe("empty", "y0", lambda c=call: c(y0=torch.zeros(2, 0, dtype=DT)), check))
    # 6. dataclass configs validate in __post_init__ (accepting a bad value is garbage).
    for cls, fields in CONFIG_FIELDS.items():
        for field, values in fields.items():
            for value in values:
                add(_probe("configs", field, lambda c=cls, f=field, v=value: c(**{f: v}),
                           lambda _: False))
    value = torch.zeros(2, 3, dtype=DT)
    status = torch.zeros(2, dtype=torch.int64)
    for field, bad in (("value", "y"), ("status", torch.zeros(5, dtype=torch.int64)),
                       ("steps", [1, 2]), ("residual_norm", torch.zeros(3, dtype=DT)),
                       ("stats", 3)):
        kw = {"value": value, "status": status, "steps": status, "residual_norm": status.double(),
              "stats": {}}
        kw[field] = bad
        add(_probe("configs", field, lambda k=kw: Solution(**k), lambda _: False))
    # 7. silent garbage: a tolerance that makes the solve "converge" without solving; flags
    #    and choices of the wrong type.
    for value in (1.0, 2.0, 1e10):
        add(_probe("garbage", "rtol", lambda v=value: lin(rtol=v), _linear_ok))
        add(_probe("garbage", "rtol", lambda v=value: lin(method="gmres", rtol=v), _linear_ok))
        for solve in ("least_squares", "root", "fixed_point"):
            call, check = SOLVES[solve]
            add(_probe("garbage", "rtol",
                       lambda c=call, s=SOLVER_OF[solve], v=value: c(solver=s(rtol=v)), check))
    for value in ("yes", 1, None, NAN):
        for call, check in SOLVES.values():
            add(_probe("garbage", "throw", lambda c=call, v=value: c(throw=v), check))
        add(_probe("garbage", "compact", lambda v=value: lsq(compact=v), _lsq_ok))
    return probes


def survey(probes: list | None = None) -> dict[str, Counter]:
    """Outcome counts per class over ``probes`` (default: this pillar's), printing the bad."""
    torch.set_num_threads(1)
    table: dict[str, Counter] = {}
    for cls, name, call, check in (survey_probes() if probes is None else probes):
        outcome, detail = classify(call, name, check)
        table.setdefault(cls, Counter())[outcome] += 1
        if outcome not in (OK, NAMED):
            print(f"  [{cls}] {name}: {outcome}: {detail.splitlines()[0][:150] if detail else ''}")
    return table


def print_table(table: dict[str, Counter]) -> None:
    print(f"{'class':14}" + "".join(f"{o:>16}" for o in OUTCOMES))
    total = Counter()
    for cls, counts in table.items():
        total.update(counts)
        print(f"{cls:14}" + "".join(f"{counts[o]:>16}" for o in OUTCOMES))
    print(f"{'total':14}" + "".join(f"{total[o]:>16}" for o in OUTCOMES))


# -- the property-based tests ----------------------------------------------------------------

FAST = settings(max_examples=25, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def test_the_survey_has_no_raw_error_garbage_or_hang():
    for cls, name, call, check in survey_probes():
        outcome, detail = classify(call, name, check)
        assert outcome in (OK, NAMED), f"[{cls}] {name}: {outcome}: {detail}"


@FAST
@given(solve=st.sampled_from(sorted(SOLVES)), value=bad_count)
def test_max_steps_is_a_bounded_count(solve, value):
    call, check = SOLVES[solve]
    assert_named_or_ok(lambda: call(max_steps=value), "max_steps", check)
    if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10**6):
        assert_named(lambda: call(max_steps=value), "max_steps")


@FAST
@given(value=bad_count, method=st.sampled_from(["cg", "gmres"]))
def test_restart_is_a_bounded_count(value, method):
    assert_named(lambda: lin(method="gmres", restart=value), "restart")


@FAST
@given(name=st.sampled_from(["rtol", "atol"]), value=bad_number,
       method=st.sampled_from(["cg", "gmres"]))  # LU has no tolerances
def test_linear_solve_tolerances_are_finite_and_in_range(name, value, method):
    assert_named(lambda: lin(method=method, **{name: value}), name)


@FAST
@given(value=st.floats(min_value=1.0, max_value=1e300) | st.integers(min_value=1),
       solve=st.sampled_from(sorted(SOLVES)))
def test_a_relative_tolerance_of_one_or_more_is_refused(value, solve):
    call, _ = SOLVES[solve]
    if solve == "linear_solve":
        assert_named(lambda: call(rtol=value), "rtol")
    else:
        assert_named(lambda: SOLVER_OF[solve](rtol=value), "rtol")


@FAST
@given(data=st.data())
def test_configs_validate_every_field(data):
    cls = data.draw(st.sampled_from(list(CONFIG_FIELDS)))
    field = data.draw(st.sampled_from(sorted(CONFIG_FIELDS[cls])))
    value = data.draw(st.sampled_from(CONFIG_FIELDS[cls][field]))
    assert_named(lambda: cls(**{field: value}), field)


@FAST
@given(value=st.floats(min_value=1e-12, max_value=1e12), field=st.sampled_from(
    ["initial_damping", "rtol", "atol"]))
def test_configs_accept_sane_values(value, field):
    if field == "rtol":
        value = value / (1 + value)  # in (0, 1)
    if field == "initial_damping" or value > 0:
        LevenbergMarquardt(**{field: value})


@FAST
@given(value=st.sampled_from([NAN, INF, -INF, 0.0, -0.5, 2.0, 1e300, True, "1"]))
def test_anderson_mixing_in_range(value):
    assert_named(lambda: AndersonAcceleration(mixing=value), "mixing")


@FAST
@given(method=st.sampled_from(["direct", "cg", "gmres"]),
       which=st.sampled_from(["A", "b", "x0"]),
       dtype=st.sampled_from([torch.float32, torch.int64, torch.complex128, torch.float16]))
def test_linear_solve_dtype_agreement_is_named(method, which, dtype):
    if which == "x0" and method == "direct":
        method = "cg"
    kw = {"A": _spd(), "b": _rhs(), "x0": torch.zeros(2, 3, dtype=DT)}
    kw[which] = kw[which].to(dtype)
    assert_named(lambda: lin(method=method, **kw), which)


@FAST
@given(method=st.sampled_from(["direct", "cg", "gmres"]), which=st.sampled_from(["A", "x0"]))
def test_linear_solve_device_agreement_is_named(method, which):
    if which == "x0" and method == "direct":
        method = "cg"
    kw = {which: (_spd() if which == "A" else _rhs()).to("meta")}
    assert_named(lambda: lin(method=method, **kw), which)


@FAST
@given(method=st.sampled_from(["cg", "gmres"]), which=st.sampled_from(["A", "preconditioner"]),
       wrong=st.sampled_from(["dtype", "shape", "type"]))
def test_a_matvec_of_the_wrong_shape_or_dtype_is_named(method, which, wrong):
    out = {"dtype": lambda v: v.float(), "shape": lambda v: v[0], "type": lambda v: v.tolist()}
    kw = {"A": _spd()}
    if which == "A":
        matrix = _spd()
        kw["A"] = lambda v: out[wrong]((matrix @ v.unsqueeze(-1)).squeeze(-1))
    else:
        kw["preconditioner"] = out[wrong]
    assert_named(lambda: lin(method=method, **kw), which)


@FAST
@given(shape=st.sampled_from([(3, 3), (2, 4), (4,), (1, 2, 2)]))
def test_linear_solve_x0_shape_is_named(shape):
    assert_named(lambda: lin(x0=torch.zeros(shape, dtype=DT)), "x0")


@FAST
@given(batch=st.sampled_from([(0,), (0, 2), (3, 0)]), method=st.sampled_from(
    ["direct", "cg", "gmres"]))
def test_linear_solve_empty_batch_returns_empty(batch, method):
    A = torch.zeros(*batch, 3, 3, dtype=DT)
    sol = linear_solve(A, torch.zeros(*batch, 3, dtype=DT), solver=LINEAR_SOLVERS[method]())
    assert sol.value.shape == (*batch, 3) and sol.status.shape == batch


@FAST
@given(shape=st.sampled_from([(0,), (2, 0), (0, 0)]), method=st.sampled_from(
    ["direct", "cg", "gmres"]))
def test_linear_solve_zero_unknowns_blames_b(shape, method):
    A = torch.zeros(*shape, shape[-1], dtype=DT)
    assert_named(lambda: linear_solve(A, torch.ones(shape, dtype=DT),
                                      solver=LINEAR_SOLVERS[method]()), "b")


@FAST
@given(solve=st.sampled_from(["least_squares", "root", "fixed_point"]),
       batch=st.sampled_from([(0,), (0, 3)]))
def test_nonlinear_empty_batch_returns_empty(solve, batch):
    call, _ = SOLVES[solve]
    n = 2 if solve == "least_squares" else 3
    data = (_LSQ_D if solve == "least_squares" else _C)[:0]
    data = data.reshape(*batch, data.shape[-1]) if len(batch) == 1 else data.reshape(
        0, 1, data.shape[-1]).expand(0, 3, data.shape[-1])
    sol = call(y0=torch.zeros(*batch, n, dtype=DT), args=(data,))
    assert sol.value.shape == (*batch, n) and sol.status.shape == batch


@FAST
@given(solve=st.sampled_from(["least_squares", "root", "fixed_point"]),
       dtype=st.sampled_from([torch.int64, torch.complex128, torch.float16, torch.bool]),
       empty=st.booleans())
def test_y0_dtype_and_shape_are_named(solve, dtype, empty):
    call, _ = SOLVES[solve]
    y0 = torch.zeros(2, 0, dtype=DT) if empty else torch.zeros(2, 3, dtype=dtype)
    assert_named(lambda: call(y0=y0), "y0")


@FAST
@given(solve=st.sampled_from(sorted(SOLVES)), flag=st.sampled_from(["throw", "compact"]),
       value=not_a_flag)
def test_flags_are_bools(solve, flag, value):
    if flag == "compact" and solve != "least_squares":
        return
    call, _ = SOLVES[solve]
    assert_named(lambda: call(**{flag: value}), flag)


@FAST
@given(solve=st.sampled_from(sorted(SOLVES)),
       name=st.sampled_from(["solver", "adjoint", "fn"]),
       value=st.sampled_from(["lm", None, 3, object()]))
def test_objects_of_the_wrong_kind_are_named(solve, name, value):
    call, _ = SOLVES[solve]
    if solve == "linear_solve":
        name = {"fn": "A"}.get(name, name)
    if value is None and name in ("solver", "adjoint"):
        return  # None is the default
    if value is None and name == "A":
        return assert_named(lambda: call(A=None), "A")
    assert_named(lambda: call(**{name: value}), name)


@FAST
@given(field=st.sampled_from(["value", "status", "steps", "residual_norm", "stats"]),
       bad=st.sampled_from(["x", 3, None, torch.zeros(5), [1.0]]))
def test_solution_fields_are_checked(field, bad):
    kw = {"value": torch.zeros(2, 3, dtype=DT), "status": torch.zeros(2, dtype=torch.int64),
          "steps": torch.zeros(2, dtype=torch.int64), "residual_norm": torch.zeros(2, dtype=DT),
          "stats": {}}
    kw[field] = bad
    assert_named(lambda: Solution(**kw), field)


@pytest.mark.parametrize("solve", sorted(SOLVES))
def test_good_calls_still_solve(solve):
    call, check = SOLVES[solve]
    sol = call()
    assert sol.all_converged and check(sol)


if __name__ == "__main__":
    print_table(survey())
