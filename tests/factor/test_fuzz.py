"""Fuzz the public API of ``diffnum.factor`` with bad input (hypothesis).

Every call on bad input either succeeds with a finite, correct result or raises
``ValueError``/``TypeError`` whose message names the argument. :func:`outcome` classifies one
call as ``ok`` / ``named`` / ``raw`` (any other error, or one that names no argument or the
wrong one) / ``garbage`` (a silent result: non-finite from finite input, wrong shape, a wrong
answer without a warning, or a return where an error was due) / ``hang``; :func:`census`
counts outcomes per bad-input class (``python tests/factor/test_fuzz.py [-v]`` prints the
table).
"""

from __future__ import annotations

import math
import re
import signal
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffnum.factor as df

NAN, INF = math.nan, math.inf
F32, F64 = torch.float32, torch.float64
FUZZ = settings(max_examples=6, deadline=None)

# ---------------------------------------------------------------------------------- harness


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` swallows it."""


def _alarm(signum, frame):
    raise _Hang


@dataclass
class Returned:
    """What a call returned and the warnings it issued."""

    value: object
    warned: list[warnings.WarningMessage]

    def warns(self, category: type[Warning] = UserWarning) -> bool:
        return any(issubclass(w.category, category) for w in self.warned)


def outcome(thunk: Callable[[], object], names: tuple[str, ...],
            ok: Callable[[Returned], bool] | None = None, seconds: float = 5.0) -> str:
    """Classify ``thunk()`` on bad input: ``ok`` (a return that ``ok`` accepts), ``named``
    (ValueError/TypeError naming one of ``names``), ``raw``, ``garbage`` or ``hang``."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = Returned(thunk(), caught)
    except _Hang:
        return "hang"
    except (ValueError, TypeError) as error:
        message = str(error)
        named = any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names)
        return "named" if named else "raw"
    except Exception:  # any other error is what the census counts as raw
        return "raw"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return "ok" if ok is not None and ok(result) else "garbage"


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, df.MetaFactorization):
        return [value.A, value.F, value.G, value.H, value.Y, value.X]
    return []


def finite(shape: tuple[int, ...] | None = None) -> Callable[[Returned], bool]:
    """A result check: finite tensor(s), the first of ``shape`` when given."""
    def check(result: Returned) -> bool:
        tensors = _tensors(result.value)
        return (bool(tensors) and all(bool(torch.isfinite(t).all()) for t in tensors)
                and (shape is None or tuple(tensors[0].shape) == shape))
    return check


def close_to(reference: torch.Tensor, tol: float, warning: type[Warning] | None = None
             ) -> Callable[[Returned], bool]:
    """A result check: within ``tol`` (relative, Frobenius) of ``reference`` — or, when
    ``warning`` is given, any finite result that issued that warning."""
    def check(result: Returned) -> bool:
        out = result.value
        if not (isinstance(out, torch.Tensor) and out.shape == reference.shape
                and bool(torch.isfinite(out).all())):
            return False
        if warning is not None and result.warns(warning):
            return True
        error = torch.linalg.matrix_norm(out.double() - reference.double()).max()
        return float(error) <= tol * float(torch.linalg.matrix_norm(reference.double()).max())
    return check


@dataclass
class Case:
    """One argument of one entry point fed bad values: ``call(value)`` runs the entry point."""

    cls: str  # bad-input class: float, count, choice, dtype, nonfinite, empty, name, config,
    #           scale (silent garbage at extreme scales), band (accuracy band without warning)
    label: str
    call: Callable[[object], object]
    values: list  # deterministic bad values (the census runs exactly these)
    names: tuple[str, ...]
    extra: st.SearchStrategy | None = None  # more bad values drawn by hypothesis
    ok: Callable[[Returned], bool] | None = None  # a return is right only if this accepts it

    def strategy(self) -> st.SearchStrategy:
        base = st.sampled_from(self.values)
        return base if self.extra is None else st.one_of(base, self.extra)

    def run(self, value: object) -> str:
        return outcome(lambda: self.call(value), self.names, self.ok)


def census(cases: list[Case]) -> dict[str, Counter]:
    """Outcome counts per bad-input class over every deterministic value of every case."""
    table: dict[str, Counter] = {}
    for case in cases:
        for value in case.values:
            table.setdefault(case.cls, Counter())[case.run(value)] += 1
    return table


def print_census(cases: list[Case], verbose: bool = False) -> None:
    kinds = ("ok", "named", "raw", "garbage", "hang")
    table = census(cases)
    print(f"{'class':<10}" + "".join(f"{k:>9}" for k in kinds))
    for cls, counts in sorted(table.items()):
        print(f"{cls:<10}" + "".join(f"{counts[k]:>9}" for k in kinds))
    total = sum(table.values(), Counter())
    print(f"{'total':<10}" + "".join(f"{total[k]:>9}" for k in kinds))
    if verbose:
        for case in cases:
            for value in case.values:
                result = case.run(value)
                if result not in ("ok", "named"):
                    print(f"  {result:8} {case.cls:9} {case.label} <- {value!r}"[:160])


# Bad-value pools: deterministic lists for the census and strategies for hypothesis.
BAD_TOL = [NAN, INF, -INF, -1e-3, 1.0, 2.0, True, "1e-8"]  # relative tolerances need [0, 1)
BAD_TOL_X = st.one_of(st.floats(max_value=-1e-300), st.floats(min_value=1.0), st.just(NAN))
BAD_COUNT = [0, -1, 10**12, 2.5, True, "3"]
BAD_COUNT_X = st.one_of(st.integers(max_value=0), st.integers(min_value=10**10), st.floats(),
                        st.booleans())
BAD_COUNT0 = [-1, 10**12, 2.5, True, "3"]  # counts where 0 is valid
BAD_COUNT0_X = st.one_of(st.integers(max_value=-1), st.integers(min_value=10**10),
                         st.floats(), st.booleans())
BAD_CHOICE = ["bogus", None, 3, ""]
BAD_GENERATOR = [0, "seed", torch.zeros(1)]
NONFINITE = [NAN, INF, -INF]
NONFINITE_X = st.tuples(st.sampled_from(NONFINITE), st.floats(0.0, 0.999))


def inject(t: torch.Tensor, value: object) -> torch.Tensor:
    """``t`` with one entry replaced: ``value`` is a scalar (first entry) or (scalar, where)."""
    scalar, where = value if isinstance(value, tuple) else (value, 0.0)
    t = t.clone()
    t.view(-1)[int(where * t.numel())] = scalar
    return t


# --------------------------------------------------------------------------------- fixtures


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, dtype: torch.dtype = F64, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


def _with_spectrum(m: int, n: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(σ) Vᵀ (float64) with Haar-random U, V."""
    k = min(m, n)
    U = torch.linalg.qr(_randn(m, k, seed=seed)).Q
    V = torch.linalg.qr(_randn(n, k, seed=seed + 1)).Q
    return (U * sigma) @ V.mT


def _spd(n: int, kappa: float, seed: int = 0) -> torch.Tensor:
    """Symmetric positive definite, eigenvalues geometric in [1/κ, 1] (float64)."""
    lam = torch.logspace(0.0, -math.log10(kappa), n, dtype=F64)
    Q = torch.linalg.qr(_randn(n, n, seed=seed)).Q
    A = (Q * lam) @ Q.mT
    return 0.5 * (A + A.mT)


A = _randn(6, 5)
SPD = _spd(4, 10.0)


def _pinv_ok(A: torch.Tensor) -> Callable[[Returned], bool]:
    """A result check: the Penrose identity A X A = A to 1e-8 (relative)."""
    def check(result: Returned) -> bool:
        X = result.value
        return (isinstance(X, torch.Tensor) and X.shape == A.mT.shape
                and bool(torch.isfinite(X).all())
                and float(torch.linalg.matrix_norm(A @ X @ A - A)) <= 1e-8 * float(
                    torch.linalg.matrix_norm(A)))
    return check


def _fac_ok(batch: tuple[int, ...]) -> Callable[[Returned], bool]:
    def check(result: Returned) -> bool:
        fac = result.value
        return (isinstance(fac, df.MetaFactorization) and fac.F.shape[:-2] == batch
                and all(bool(torch.isfinite(t).all()) for t in _tensors(fac)))
    return check


def _meta(**kw):
    args = dict(A=A, F=A[:, :3], H=A.mT[:, :3])
    args.update(kw)
    return df.meta_factorize(args.pop("A"), args.pop("F"), args.pop("H"), **args)


def _strang(**kw):
    C, R = _randn(6, 3, seed=1), _randn(3, 5, seed=2)
    args = dict(C=C, R=R, formula=3)
    args.update(kw)
    return df.strang_pinv(args.pop("C"), args.pop("R"), args.pop("formula"), **args)


def _eq(value: object, other: object) -> bool:
    return isinstance(value, type(other)) and value == other


# ------------------------------------------------------------------------------------ cases

RECIPES_K: dict[str, Callable[..., object]] = {
    "svd": lambda A, k: df.svd(A, k),
    "cpqr": lambda A, k: df.cpqr(A, k),
    "utv": lambda A, k: df.utv(A, k),
    "nystrom": lambda A, k: df.nystrom(A, k, generator=_gen(1)),
    "cur": lambda A, k: df.cur(A, k),
    "select_columns": lambda A, k: df.select_columns(A, k),
    "range_finder": lambda A, k: df.range_finder(A, k, generator=_gen(1)),
    "rsvd": lambda A, k: df.rsvd(A, k, generator=_gen(1)),
    "pinv(randomized)": lambda A, k: df.pinv(A, "randomized", k=k, generator=_gen(1)),
}

# Every entry point that takes a matrix A first, with a valid call for the rest.
ON_MATRIX: dict[str, tuple[str, Callable[[torch.Tensor], object]]] = {
    "meta_factorize": ("A", lambda M: df.meta_factorize(M, A[:, :3], A.mT[:, :3])),
    "svd": ("A", lambda M: df.svd(M)),
    "cpqr": ("A", lambda M: df.cpqr(M)),
    "utv": ("A", lambda M: df.utv(M)),
    "nystrom": ("A", lambda M: df.nystrom(M, 2, generator=_gen(1))),
    "cur": ("A", lambda M: df.cur(M, 2)),
    "cr": ("A", lambda M: df.cr(M)),
    "numerical_rank": ("A", lambda M: df.numerical_rank(M)),
    "pinv(svd)": ("A", lambda M: df.pinv(M)),
    "pinv(cr)": ("A", lambda M: df.pinv(M, "cr")),
    "pinv(randomized)": ("A", lambda M: df.pinv(M, "randomized", generator=_gen(1))),
    "strang_pinv(C)": ("C", lambda M: df.strang_pinv(M, _randn(5, 4), 2)),
    "select_columns(uniform)": ("A", lambda M: df.select_columns(M, 2, "uniform")),
    "select_columns(leverage)": ("A", lambda M: df.select_columns(M, 2, "leverage")),
    "select_columns(deim)": ("A", lambda M: df.select_columns(M, 2, "deim")),
    "select_columns(spa)": ("A", lambda M: df.select_columns(M, 2, "spa")),
    "range_finder": ("A", lambda M: df.range_finder(M, 2, generator=_gen(1))),
    "rsvd": ("A", lambda M: df.rsvd(M, 2, generator=_gen(1))),
    "msign": ("M", lambda M: df.msign(M)),
    "msign(svd)": ("M", lambda M: df.msign(M, method="svd")),
}

# Empty batch (0, 6, 5) (or (0, 4, 4) for sqrtm): an empty result of the right shape.
EMPTY_SHAPES: dict[str, tuple[int, ...] | None] = {
    "meta_factorize": None, "svd": None, "cpqr": None, "utv": None, "nystrom": None,
    "cur": None, "cr": None, "numerical_rank": None, "pinv(svd)": (0, 5, 6),
    "pinv(cr)": (0, 5, 6), "pinv(randomized)": (0, 5, 6), "strang_pinv(C)": (0, 4, 6),
    "select_columns(uniform)": (0, 2), "select_columns(leverage)": (0, 2),
    "select_columns(deim)": (0, 2), "select_columns(spa)": (0, 2), "range_finder": None,
    "rsvd": None, "msign": (0, 6, 5), "msign(svd)": (0, 6, 5),
}


def _empty_ok(shape: tuple[int, ...] | None) -> Callable[[Returned], bool]:
    def check(result: Returned) -> bool:
        value = result.value
        if shape is not None:
            return isinstance(value, torch.Tensor) and tuple(value.shape) == shape
        if isinstance(value, int):  # numerical_rank: 0 over an empty batch
            return value == 0
        tensors = _tensors(value)
        return bool(tensors) and all(t.shape[0] == 0 for t in tensors)
    return check


def _cases() -> list[Case]:
    c: list[Case] = []
    # ---- float arguments (tolerances, decay)
    c.append(Case("float", "meta_factorize(rtol=·)", lambda v: _meta(rtol=v), BAD_TOL,
                  ("rtol",), BAD_TOL_X))
    c.append(Case("float", "nystrom(rtol=·)",
                  lambda v: df.nystrom(A, 2, generator=_gen(1), rtol=v), BAD_TOL, ("rtol",),
                  BAD_TOL_X))
    c.append(Case("float", "cr(rtol=·)", lambda v: df.cr(A, rtol=v), BAD_TOL, ("rtol",),
                  BAD_TOL_X))
    c.append(Case("float", "numerical_rank(rtol=·)", lambda v: df.numerical_rank(A, v), BAD_TOL,
                  ("rtol",), BAD_TOL_X))
    for method in ("svd", "cr", "randomized"):
        c.append(Case("float", f"pinv(rtol=·, method={method})",
                      lambda v, m=method: df.pinv(A, m, rtol=v, generator=_gen(1)), BAD_TOL,
                      ("rtol",), BAD_TOL_X))
    for kind, bad in (("geometric", [NAN, INF, -0.5, 0.0, 1.5, True, "0.9"]),
                      ("algebraic", [NAN, INF, -INF, -1.0, True, "1"])):
        c.append(Case("float", f"synthetic_matrix(decay=·, kind={kind})",
                      lambda v, k=kind: df.synthetic_matrix(6, 5, k, decay=v), bad, ("decay",)))
    # ---- counts
    c.append(Case("count", "meta_factorize(refine=·)", lambda v: _meta(refine=v), BAD_COUNT0,
                  ("refine",), BAD_COUNT0_X))
    for name, fn in RECIPES_K.items():
        c.append(Case("count", f"{name}(k=·)", lambda v, f=fn: f(A, v), BAD_COUNT, ("k",),
                      BAD_COUNT_X))
    for name, fn in (("nystrom", lambda v: df.nystrom(A, 2, v, generator=_gen(1))),
                     ("range_finder", lambda v: df.range_finder(A, 2, v, generator=_gen(1))),
                     ("rsvd", lambda v: df.rsvd(A, 2, v, generator=_gen(1))),
                     ("pinv(randomized)", lambda v: df.pinv(A, "randomized", k=2, oversample=v,
                                                             generator=_gen(1)))):
        c.append(Case("count", f"{name}(oversample=·)", fn, [-1, 2.5, True, "3"],
                      ("oversample",), ok=finite()))
    for name, fn in (("range_finder", df.range_finder), ("rsvd", df.rsvd)):
        c.append(Case("count", f"{name}(power_iters=·)",
                      lambda v, f=fn: f(A, 2, power_iters=v, generator=_gen(1)), BAD_COUNT0,
                      ("power_iters",), BAD_COUNT0_X))
    c.append(Case("count", "strang_pinv(formula=·)", lambda v: _strang(formula=v),
                  [0, 4, -1, True, 2.0, "1", None], ("formula",)))
    for arg in ("m", "n"):
        c.append(Case("count", f"synthetic_matrix({arg}=·)",
                      lambda v, a=arg: df.synthetic_matrix(**{"m": 6, "n": 5, a: v}),
                      BAD_COUNT, (arg,), BAD_COUNT_X))
    for kind in ("low_rank", "rank_deficient"):
        c.append(Case("count", f"synthetic_matrix(rank=·, kind={kind})",
                      lambda v, k=kind: df.synthetic_matrix(6, 5, k, rank=v), BAD_COUNT,
                      ("rank",), BAD_COUNT_X))
    c.append(Case("count", "synthetic_matrix(batch=·)",
                  lambda v: df.synthetic_matrix(6, 5, batch=v),
                  [(-1,), (2.5,), (True,), "ab", 3, (10**12,)], ("batch",)))
    c.append(Case("count", "sketch_matrix(shape=·)", lambda v: df.sketch_matrix(v),
                  [(-1, 3), (2.5, 3), "ab", 3, (True, 2), (10**12, 10**12), None], ("shape",)))
    c.append(Case("count", "sketch_matrix(nonzeros=·)",
                  lambda v: df.sketch_matrix((6, 4), "sparse_sign", nonzeros=v), BAD_COUNT,
                  ("nonzeros",), BAD_COUNT_X))
    c.append(Case("count", "msign(steps=·)", lambda v: df.msign(A, steps=v), BAD_COUNT0,
                  ("steps",), BAD_COUNT0_X))
    for method in ("newton_schulz", "taylor", "pade"):
        c.append(Case("count", f"sqrtm(steps=·, method={method})",
                      lambda v, m=method: df.sqrtm(SPD, m, steps=v), BAD_COUNT, ("steps",),
                      BAD_COUNT_X))
    # ---- choices and flags
    for label, call, name in (
        ("utv(core=·)", lambda v: df.utv(A, 2, core=v), "core"),
        ("cur(select=·)", lambda v: df.cur(A, 2, select=v), "select"),
        ("cur(core=·)", lambda v: df.cur(A, 2, core=v), "core"),
        ("pinv(method=·)", lambda v: df.pinv(A, v), "method"),
        ("select_columns(select=·)", lambda v: df.select_columns(A, 2, v), "select"),
        ("range_finder(sketch=·)", lambda v: df.range_finder(A, 2, sketch=v), "sketch"),
        ("rsvd(sketch=·)", lambda v: df.rsvd(A, 2, sketch=v), "sketch"),
        ("nystrom(sketch=·)", lambda v: df.nystrom(A, 2, sketch=v), "sketch"),
        ("synthetic_matrix(kind=·)", lambda v: df.synthetic_matrix(6, 5, v), "kind"),
        ("msign(method=·)", lambda v: df.msign(A, method=v), "method"),
        ("msign(precondition=·)", lambda v: df.msign(A, precondition=v), "precondition"),
        ("sqrtm(method=·)", lambda v: df.sqrtm(SPD, v), "method"),
        ("sqrtm(inverse=·)", lambda v: df.sqrtm(SPD, inverse=v), "inverse"),
        ("sqrtm(check=·)", lambda v: df.sqrtm(SPD, check=v), "check"),
    ):
        c.append(Case("choice", label, call, BAD_CHOICE, (name,)))
    c.append(Case("choice", "msign(compute_dtype=·)", lambda v: df.msign(A, compute_dtype=v),
                  ["float32", torch.int64, torch.complex64, 3], ("compute_dtype",)))
    c.append(Case("choice", "msign(schedule=·)", lambda v: df.msign(A, schedule=v),
                  ["abc", (1.0, 2.0), (1.5, NAN, 0.0), (1.5, -0.5, True), 3.0], ("schedule",)))
    c.append(Case("choice", "meta_factorize(info=·)", lambda v: _meta(info=v),
                  ["abc", 3, [1, 2]], ("info",)))
    for label, call in (
        ("nystrom(generator=·)", lambda v: df.nystrom(A, 2, generator=v)),
        ("cur(generator=·, select=uniform)", lambda v: df.cur(A, 2, "uniform", generator=v)),
        ("pinv(generator=·)", lambda v: df.pinv(A, "randomized", generator=v)),
        ("strang_pinv(generator=·)", lambda v: _strang(generator=v)),
        ("synthetic_matrix(generator=·)", lambda v: df.synthetic_matrix(6, 5, generator=v)),
        ("select_columns(generator=·)", lambda v: df.select_columns(A, 2, "uniform", v)),
        ("range_finder(generator=·)", lambda v: df.range_finder(A, 2, generator=v)),
        ("rsvd(generator=·)", lambda v: df.rsvd(A, 2, generator=v)),
        ("sketch_matrix(generator=·)", lambda v: df.sketch_matrix((4, 3), generator=v)),
    ):
        c.append(Case("choice", label, call, BAD_GENERATOR, ("generator",)))
    # ---- dtype and device agreement, tensor types
    for arg in ("F", "H", "B", "D", "W"):
        shape = (3, 3) if arg == "W" else (6, 3) if arg in ("F", "B") else (5, 3)
        c.append(Case("dtype", f"meta_factorize({arg}=float32|meta|list)",
                      lambda v, a=arg, s=shape: _meta(**{a: v(s)}),
                      [lambda s: _randn(*s, dtype=F32), lambda s: _randn(*s).to("meta"),
                       lambda s: torch.ones(s).tolist()], (arg,)))
    for arg, shape in (("C", (6, 3)), ("R", (3, 5)), ("P", (6, 3)), ("Q", (5, 3))):
        c.append(Case("dtype", f"strang_pinv({arg}=float32|meta|list)",
                      lambda v, a=arg, s=shape: _strang(**{a: v(s)}),
                      [lambda s: _randn(*s, dtype=F32), lambda s: _randn(*s).to("meta"),
                       lambda s: torch.ones(s).tolist()], ("C", "R") if arg == "C" else (arg,)))
    for name, (arg, call) in ON_MATRIX.items():
        c.append(Case("dtype", f"{name}({arg}=int64|complex128|list)", call,
                      [torch.ones(6, 5, dtype=torch.int64),
                       torch.ones(6, 5, dtype=torch.complex128), [[1.0] * 5] * 6], (arg,)))
    for method in ("newton_schulz", "eigh"):
        c.append(Case("dtype", f"sqrtm(A=int64|float16|list, method={method})",
                      lambda v, m=method: df.sqrtm(v, m),
                      [torch.eye(3, dtype=torch.int64), torch.eye(3, dtype=torch.float16),
                       torch.eye(3).tolist()], ("A",)))
    c.append(Case("dtype", "synthetic_matrix(dtype=·)",
                  lambda v: df.synthetic_matrix(6, 5, dtype=v),
                  [torch.int64, torch.complex128, torch.bool, "float64"], ("dtype",)))
    c.append(Case("dtype", "sketch_matrix(dtype=·)",
                  lambda v: df.sketch_matrix((4, 3), dtype=v),
                  [torch.int64, torch.complex128, torch.bool, "float64"], ("dtype",)))
    # ---- non-finite entries (they would reach rank counts, pivots and indices)
    for name, (arg, call) in ON_MATRIX.items():
        c.append(Case("nonfinite", f"{name}({arg}=·)", lambda v, f=call: f(inject(A, v)),
                      NONFINITE, (arg,), NONFINITE_X))
    for method in ("newton_schulz", "eigh"):
        c.append(Case("nonfinite", f"sqrtm(A=·, method={method})",
                      lambda v, m=method: df.sqrtm(inject(SPD, v), m), NONFINITE, ("A",),
                      NONFINITE_X))
    for arg in ("F", "H"):
        shape = (6, 3) if arg == "F" else (5, 3)
        c.append(Case("nonfinite", f"meta_factorize({arg}=·)",
                      lambda v, a=arg, s=shape: _meta(**{a: inject(_randn(*s), v)}), NONFINITE,
                      (arg,), NONFINITE_X))
    c.append(Case("nonfinite", "meta_factorize(W=·)",
                  lambda v: _meta(W=inject(_randn(3, 3), v)), NONFINITE, ("W",), NONFINITE_X))
    c.append(Case("nonfinite", "strang_pinv(P=·)",
                  lambda v: _strang(P=inject(_randn(6, 3), v)), NONFINITE, ("P",), NONFINITE_X))
    # ---- empty batches: an empty result of the right shape, or a named error
    for name, (arg, call) in ON_MATRIX.items():
        c.append(Case("empty", f"{name}({arg}=(0, 6, 5))", call, [torch.zeros(0, 6, 5)], (arg,),
                      ok=_empty_ok(EMPTY_SHAPES[name])))
        c.append(Case("empty", f"{name}({arg}=(6, 0))", call, [torch.zeros(6, 0)], (arg,)))
    for method in ("newton_schulz", "taylor", "pade", "eigh"):
        c.append(Case("empty", f"sqrtm(A=(0, 4, 4), method={method})",
                      lambda v, m=method: df.sqrtm(v, m), [torch.zeros(0, 4, 4)], ("A",),
                      ok=_empty_ok((0, 4, 4))))
    c.append(Case("empty", "synthetic_matrix(batch=(0,))",
                  lambda v: df.synthetic_matrix(6, 5, batch=v)[0], [(0,)], ("batch",),
                  ok=_empty_ok((0, 6, 5))))
    c.append(Case("empty", "sketch_matrix(shape=(0, 6, 5))",
                  lambda v: df.sketch_matrix(v, "sparse_sign"), [(0, 6, 5), (6, 0)], ("shape",),
                  ok=lambda r: isinstance(r.value, torch.Tensor) and r.value.numel() == 0))
    # ---- messages name the right argument
    c.append(Case("name", "sketch_matrix(kind=·)", lambda v: df.sketch_matrix((4, 3), v),
                  BAD_CHOICE, ("kind",)))
    c.append(Case("name", "sketch_matrix(kind=·) keyword",
                  lambda v: df.sketch_matrix((4, 3), kind=v), ["cauchy"], ("kind",)))
    c.append(Case("name", "cr(rtol=nan) blames rtol, not A", lambda v: df.cr(A, rtol=v), [NAN],
                  ("rtol",)))
    c.append(Case("name", "meta_factorize(F batch 2, H batch 3)",
                  lambda v: df.meta_factorize(A, _randn(2, 6, 3), _randn(v, 5, 3)), [3],
                  ("F", "H")))
    c.append(Case("name", "strang_pinv(C batch 2, R batch 3)",
                  lambda v: df.strang_pinv(_randn(2, 6, 3), _randn(v, 3, 5), 2), [3],
                  ("C", "R")))
    # ---- dataclass results: constructed by hand, they check their fields
    fields = dict(projector_F=torch.zeros(2), projector_H=torch.zeros(2),
                  reconstruction=torch.zeros(2))
    for arg in fields:
        c.append(Case("config", f"FactorizationResiduals({arg}=·)",
                      lambda v, a=arg: df.FactorizationResiduals(**{**fields, a: v}),
                      ["x", None, [0.0, 0.0]], (arg,)))
    fac = df.svd(A, 3)
    for arg in ("A", "F", "G", "H", "Y", "X", "rank_deficient", "info"):
        c.append(Case("config", f"MetaFactorization({arg}=·)",
                      lambda v, a=arg: df.MetaFactorization(**{**fac.__dict__, a: v}),
                      ["x", None], (arg,)))
    # ---- silent garbage at extreme scales: scale-invariant results must not change
    M = _randn(6, 5)
    for label, call, ref, tol in (
        ("msign(frobenius)", lambda s: df.msign(M * s), df.msign(M), 1e-12),
        ("msign(aol)", lambda s: df.msign(M * s, precondition="aol"),
         df.msign(M, precondition="aol"), 1e-12),
        ("msign(svd)", lambda s: df.msign(M * s, method="svd"), df.msign(M, method="svd"), 1e-12),
        ("sqrtm(newton_schulz)", lambda s: df.sqrtm(SPD * s) / math.sqrt(s), df.sqrtm(SPD),
         1e-12),
        ("sqrtm(newton_schulz, inverse)", lambda s: df.sqrtm(SPD * s, inverse=True) * math.sqrt(s),
         df.sqrtm(SPD, inverse=True), 1e-12),
        ("sqrtm(pade)", lambda s: df.sqrtm(SPD * s, "pade") / math.sqrt(s), df.sqrtm(SPD, "pade"),
         1e-12),
        ("sqrtm(eigh)", lambda s: df.sqrtm(SPD * s, "eigh") / math.sqrt(s), df.sqrtm(SPD, "eigh"),
         1e-12),
        ("pinv(svd)", lambda s: df.pinv(M * s) * s, df.pinv(M), 1e-12),
        ("svd.reconstruct", lambda s: df.svd(M * s, 3).reconstruct() / s,
         df.svd(M, 3).reconstruct(), 1e-12),
        ("rsvd U", lambda s: df.rsvd(M * s, 3, generator=_gen(1))[0],
         df.rsvd(M, 3, generator=_gen(1))[0], 1e-12),
    ):
        # 2^±514 ≈ 1e±155: squares (Frobenius norms, Gram matrices) over/underflow in float64.
        c.append(Case("scale", f"{label} at |entries| ~ 1e±155 and 1e±300", call,
                      [2.0**514, 2.0**-514, 2.0**996, 2.0**-996], (), ok=close_to(ref, tol)))
    c.append(Case("scale", "numerical_rank at 1e±155", lambda s: df.numerical_rank(M * s),
                  [2.0**514, 2.0**-514], (), ok=lambda r: r.value == 5))
    # ---- accuracy band: a wrong answer needs a warning
    sigma = torch.logspace(0, -6, 5, dtype=F64)  # σ_min/σ_max = 1e-6 ≪ 1e-2
    M_bad = _with_spectrum(8, 5, sigma)
    polar = df.msign(M_bad, method="svd")
    for precondition in ("frobenius", "aol"):
        c.append(Case("band", f"msign(σ_min/σ_max = 1e-6, {precondition}, dtype)",
                      lambda v, p=precondition: df.msign(M_bad.to(v), precondition=p).double(),
                      [F64, F32], (), ok=close_to(polar, 0.4, UserWarning)))
    c.append(Case("band", "msign(rank-1 M)",
                  lambda v: df.msign(_with_spectrum(6, 5, torch.tensor([1.0, 0, 0, 0, 0]))
                                     .to(v)), [F64, F32], (), ok=lambda r: r.warns()))
    for kappa in (1e8, 1e9):
        S32 = _spd(8, kappa).float()
        for method in ("newton_schulz", "eigh"):
            for inverse in (False, True):
                reference = df.sqrtm(_spd(8, kappa), "eigh", inverse)
                c.append(Case("band", f"sqrtm(float32, κ={kappa:.0e}, {method}, inverse="
                              f"{inverse})", lambda v, S=S32, m=method, i=inverse:
                              df.sqrtm(S, m, i).double(), [None], ("A",),
                              ok=close_to(reference, 1e-3, UserWarning)))
    return c


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
@FUZZ
@given(data=st.data())
def test_bad_input_is_named_or_correct(case: Case, data: st.DataObject) -> None:
    value = data.draw(case.strategy(), label="value")
    assert case.run(value) in ("ok", "named")


# ------------------------------------------------------------- properties on valid input


@FUZZ
@given(exponent=st.integers(-960, 960), precondition=st.sampled_from(["frobenius", "aol"]),
       method=st.sampled_from(["newton_schulz", "svd"]), wide=st.booleans())
def test_msign_is_exactly_scale_invariant(exponent, precondition, method, wide):
    # The power-of-two prescaling makes M and 2^e·M the same computation, bit for bit, even
    # where ‖M‖_F or the Gram matrix would over/underflow (|e| > 511).
    M = _randn(4, 7) if wide else _randn(7, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", df.RankDeficiencyWarning)
        ref = df.msign(M, method=method, precondition=precondition)
        out = df.msign(M * 2.0**exponent, method=method, precondition=precondition)
    assert torch.equal(out, ref)


@FUZZ
@given(exponent=st.integers(-100, 100))
def test_msign_float32_is_exactly_scale_invariant(exponent):
    M = _randn(5, 6, dtype=F32)
    assert torch.equal(df.msign(M * 2.0**exponent), df.msign(M))


@FUZZ
@given(h=st.integers(-480, 480), method=st.sampled_from(["newton_schulz", "pade", "eigh"]),
       inverse=st.booleans())
def test_sqrtm_rescales_exactly(h, method, inverse):
    # sqrtm(4^h A) = 2^h sqrtm(A), and the prescaling by powers of four makes it exact.
    ref = df.sqrtm(SPD, method, inverse)
    out = df.sqrtm(SPD * 4.0**h, method, inverse)
    assert torch.equal(out, ref * 2.0 ** (-h if inverse else h))


@FUZZ
@given(log_low=st.floats(-9.0, 0.0), shape=st.sampled_from([(6, 6), (9, 5), (4, 12)]),
       dtype=st.sampled_from([F32, F64]))
def test_msign_warns_exactly_when_outside_its_band(log_low, shape, dtype):
    m, n = shape
    k = min(m, n)
    sigma = torch.logspace(0.0, log_low, k, dtype=F64)
    sigma0_min = float(sigma[-1] / sigma.norm())  # the frobenius start divides by ‖σ‖
    delta = 7.08e-4  # five Muon steps lift σ₀ >= δ to at least half the band's lower end
    M = _with_spectrum(m, n, sigma).to(dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = df.msign(M)
    warned = any(issubclass(w.category, df.RankDeficiencyWarning) for w in caught)
    if sigma0_min < delta / 2:
        assert warned
        assert "σ₀_min" in str(caught[-1].message)
    elif sigma0_min > 2 * delta:
        assert not warned
        s = torch.linalg.svdvals(out.double())
        assert float(s.min()) >= 0.34, s  # half the band's lower end, as promised
    assert torch.isfinite(out).all()


@FUZZ
@given(log_kappa=st.floats(0.0, 9.0), method=st.sampled_from(["newton_schulz", "pade", "eigh"]),
       dtype=st.sampled_from([F32, F64]))
def test_sqrtm_inverse_warns_when_numerically_singular(log_kappa, method, dtype):
    kappa = 10.0**log_kappa
    A = _spd(6, kappa, seed=3).to(dtype)
    eps = torch.finfo(dtype).eps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df.sqrtm(A, method, inverse=True)
        except ValueError as error:  # float32 rounding can make A indefinite near κ = 1/eps
            assert kappa * eps > 1 and "A must be symmetric positive definite" in str(error)
            return
    warned = any(issubclass(w.category, df.RankDeficiencyWarning) for w in caught)
    if kappa * eps > 4:
        assert warned
    elif kappa * eps < 0.25:
        assert not warned


@FUZZ
@given(rtol=st.one_of(st.just(0.0), st.floats(1e-12, 0.5)),
       method=st.sampled_from(["svd", "randomized"]))
def test_valid_tolerances_and_counts_are_accepted(rtol, method):
    X = df.pinv(A, method, rtol=rtol, generator=_gen(1))
    assert X.shape == (5, 6) and torch.isfinite(X).all()
    assert 0 <= df.numerical_rank(A, rtol) <= 5
    Q = df.range_finder(A, 2, oversample=0, power_iters=0, generator=_gen(1))
    assert Q.shape == (6, 2)
    fac = _meta(rtol=rtol, refine=0, info={"note": 1})
    assert fac.info == {"note": 1}
    assert df.synthetic_matrix(6, 5, "geometric", decay=1.0)[0].shape == (6, 5)
    assert df.synthetic_matrix(6, 5, "algebraic", decay=0.0, batch=(2,))[0].shape == (2, 6, 5)


def test_leverage_selection_of_the_zero_matrix():
    # Every column has zero leverage: any k distinct columns will do (it used to raise from
    # torch.multinomial).
    index = df.select_columns(torch.zeros(2, 4, 6, dtype=F64), 3, "leverage", _gen(0))
    assert index.shape == (2, 3)
    assert all(len(set(row.tolist())) == 3 for row in index)


if __name__ == "__main__":
    print_census(CASES, verbose="-v" in sys.argv)
