"""Fuzz the public API of ``diffnum.interp`` with bad input (hypothesis).

Every call on bad input either succeeds with a finite, correct result or raises
``ValueError``/``TypeError`` whose message names the argument. :func:`outcome` classifies one
call as ``ok`` / ``named`` / ``raw`` (any other error, or one that names no argument or the
wrong one) / ``garbage`` (a silent result: non-finite from finite input, wrong shape, or a
return where an error was due) / ``hang``; :func:`census` counts outcomes per bad-input class
(``python tests/interp/test_fuzz.py`` prints the table). ``tests/snn/test_fuzz.py`` reuses the
harness.
"""

from __future__ import annotations

import math
import re
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import diffnum.interp as interp

NAN, INF = math.nan, math.inf
FUZZ = settings(max_examples=6, deadline=None)

# ---------------------------------------------------------------------------------- harness


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` swallows it."""


def _alarm(signum, frame):
    raise _Hang


def outcome(thunk: Callable[[], object], names: tuple[str, ...],
            ok: Callable[[object], bool] | None = None, seconds: float = 5.0) -> str:
    """Classify ``thunk()`` on bad input: ``ok`` (a return that ``ok`` accepts), ``named``
    (ValueError/TypeError naming one of ``names``), ``raw``, ``garbage`` or ``hang``."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        result = thunk()
    except _Hang:
        return "hang"
    except (ValueError, TypeError) as error:
        message = str(error)
        named = any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names)
        return "named" if named else "raw"
    except Exception:
        return "raw"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return "ok" if ok is not None and ok(result) else "garbage"


def finite(shape: tuple[int, ...] | None = None) -> Callable[[object], bool]:
    """A result check: a finite tensor (of ``shape`` when given)."""
    def check(result: object) -> bool:
        return (isinstance(result, torch.Tensor) and bool(torch.isfinite(result).all())
                and (shape is None or tuple(result.shape) == shape))
    return check


@dataclass
class Case:
    """One argument of one entry point fed bad values: ``call(value)`` runs the entry point."""

    cls: str  # bad-input class: float, count, dtype, nonfinite, empty, name, other
    label: str
    call: Callable[[object], object]
    values: list  # deterministic bad values (the census runs exactly these)
    names: tuple[str, ...]
    extra: st.SearchStrategy | None = None  # more bad values drawn by hypothesis
    ok: Callable[[object], bool] | None = None  # a return is right only if this accepts it

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
    print(f"{'class':<10}" + "".join(f"{k:>9}" for k in kinds))
    for cls, counts in sorted(census(cases).items()):
        print(f"{cls:<10}" + "".join(f"{counts[k]:>9}" for k in kinds))
    if verbose:
        for case in cases:
            for value in case.values:
                result = case.run(value)
                if result not in ("ok", "named"):
                    print(f"  {result:8} {case.cls:9} {case.label} <- {value!r}"[:160])


def inject(t: torch.Tensor, value: object) -> torch.Tensor:
    """``t`` with one entry replaced: ``value`` is a scalar (first entry) or (scalar, where)."""
    scalar, where = value if isinstance(value, tuple) else (value, 0.0)
    t = t.clone()
    t.view(-1)[int(where * t.numel())] = scalar
    return t


# Bad-value pools: deterministic lists for the census and strategies for hypothesis.
BAD_POSITIVE = [NAN, INF, -INF, 0.0, -1.0, True, "1"]
BAD_POSITIVE_X = st.one_of(st.floats(max_value=0.0), st.just(NAN), st.just(INF))
BAD_REAL = [NAN, INF, -INF, True, "1"]
BAD_COUNT = [0, -1, 10**12, 2.5, True, "3"]
BAD_COUNT_X = st.one_of(st.integers(max_value=0), st.integers(min_value=10**10), st.floats(),
                        st.booleans())
BAD_COUNT0 = [-1, 10**12, 2.5, True]  # counts where 0 is valid
BAD_COUNT0_X = st.one_of(st.integers(max_value=-1), st.integers(min_value=10**10),
                         st.floats(), st.booleans())
NONFINITE = [NAN, INF, -INF]
NONFINITE_X = st.tuples(st.sampled_from(NONFINITE), st.floats(0.0, 0.999))


def bad_positive(cls, label, call, names):
    return Case(cls, label, call, BAD_POSITIVE, names, BAD_POSITIVE_X)


def bad_count(label, call, names, *, zero_ok=False):
    if zero_ok:
        return Case("count", label, call, BAD_COUNT0, names, BAD_COUNT0_X)
    return Case("count", label, call, BAD_COUNT, names, BAD_COUNT_X)


def nonfinite(label, call, names):
    return Case("nonfinite", label, call, NONFINITE, names, NONFINITE_X)


# --------------------------------------------------------------------------------- fixtures

F32, F64 = torch.float32, torch.float64


def _randn(*shape, dtype=F32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _construct(**kw):
    args = dict(weight=_randn(2, 3, 4), P=_randn(1, 2, 3, 4), SIG=_randn(1, 2, 3, 4),
                dilated_kernel_size=5, version="gauss")
    args.update(kw)
    if args["version"] in ("v0", "v1") and "SIG" not in kw:
        args["SIG"] = None
    method = args.pop("method", "auto")
    return interp.construct_kernel(**args, method=method)


def _convolve(**kw):
    args = dict(input=_randn(2, 4, 10), kernel=_randn(3, 4, 3), bias=_randn(3))
    args.update(kw)
    return interp.convolve(args.pop("input"), args.pop("kernel"), args.pop("bias"), **args)


def _dcls_conv(**kw):
    args = dict(input=_randn(2, 3, 10), weight=_randn(2, 3, 4), P=_randn(1, 2, 3, 4), SIG=None,
                bias=_randn(2), dilated_kernel_size=5, version="v1")
    args.update(kw)
    return interp.dcls_conv(args.pop("input"), args.pop("weight"), args.pop("P"),
                            args.pop("SIG"), args.pop("bias"), **args)


LAYERS = {
    "Dcls1d": (interp.Dcls1d, dict(dilated_kernel_size=5), (2, 4, 9)),
    "Dcls2d": (interp.Dcls2d, dict(dilated_kernel_size=3), (2, 4, 6, 6)),
    "Dcls3d": (interp.Dcls3d, dict(dilated_kernel_size=3), (1, 4, 4, 4, 4)),
    "Dcls2_1d": (interp.Dcls2_1d, dict(dense_kernel_size=3, dilated_kernel_size=3), (2, 4, 6, 6)),
    "Dcls3_1d": (interp.Dcls3_1d, dict(dense_kernel_size=(2, 2), dilated_kernel_size=3),
                 (1, 4, 4, 4, 4)),
    "Dcls2dK1d": (interp.Dcls2dK1d, dict(dilated_kernel_size=3), (2, 4, 6, 6)),
    "DclsTranspose1d": (interp.DclsTranspose1d, dict(dilated_kernel_size=5), (2, 4, 9)),
    "DclsTranspose2d": (interp.DclsTranspose2d, dict(dilated_kernel_size=3), (2, 4, 6, 6)),
}


def _layer(name, **kw):
    cls, base, _ = LAYERS[name]
    args = dict(in_channels=4, out_channels=2, kernel_count=3, **base)
    args.update(kw)
    return cls(args.pop("in_channels"), args.pop("out_channels"), args.pop("kernel_count"),
               **args)


def _splat(**kw):
    args = dict(values=_randn(2, 5), coords=_randn(2, 5, 2).abs() * 2, grid_shape=(4, 5),
                kind="gaussian", width=1.0)
    args.update(kw)
    return interp.splat(args.pop("values"), args.pop("coords"), args.pop("grid_shape"),
                        args.pop("kind"), **args)


def _gather(**kw):
    args = dict(grid=_randn(2, 4, 5), coords=_randn(2, 3, 2).abs() * 2, kind="gaussian",
                width=1.0)
    args.update(kw)
    return interp.gather(args.pop("grid"), args.pop("coords"), args.pop("kind"), **args)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = interp.Dcls1d(2, 2, 3, dilated_kernel_size=5, version="gauss")
        self.head = nn.Linear(2, 1)


def _layer_with(name: str, value: float, **kw) -> nn.Module:
    layer = interp.Dcls1d(2, 2, 3, dilated_kernel_size=5, version="gauss", **kw)
    with torch.no_grad():
        getattr(layer, name).view(-1)[0] = value
    return layer


# ------------------------------------------------------------------------------------ cases


def _cases() -> list[Case]:
    c: list[Case] = []
    # construct_kernel / position_axes
    for arg in ("weight", "P", "SIG"):
        shape = (2, 3, 4) if arg == "weight" else (1, 2, 3, 4)
        c.append(nonfinite(f"construct_kernel({arg}=·)",
                           lambda v, a=arg, s=shape: _construct(**{a: inject(_randn(*s), v)}),
                           (arg,)))
        c.append(Case("dtype", f"construct_kernel({arg}=float64)",
                      lambda v, a=arg, s=shape: _construct(**{a: _randn(*s, dtype=v)}),
                      [F64], ("weight", "P", "SIG") if arg == "weight" else (arg,)))
    for version in ("v1", "v0"):
        c.append(nonfinite(f"construct_kernel(P=·, version={version})",
                           lambda v, ver=version: _construct(P=inject(_randn(1, 2, 3, 4), v),
                                                             version=ver), ("P",)))
    c.append(Case("float", "construct_kernel(SIG=huge, version=max, d=3)",
                  lambda v: _construct(P=torch.zeros(3, 2, 3, 4), SIG=torch.full((3, 2, 3, 4), v),
                                       version="max"),
                  [1e13, 3e38], ("SIG",), st.floats(2.0**24 + 1, 3e38)))
    c.append(Case("dtype", "construct_kernel(weight=int64)",
                  lambda v: _construct(weight=torch.ones(2, 3, 4, dtype=v)), [torch.int64],
                  ("weight",)))
    c.append(bad_count("construct_kernel(dilated_kernel_size=·)",
                       lambda v: _construct(dilated_kernel_size=v), ("dilated_kernel_size",)))
    c.append(Case("other", "construct_kernel(version=·)", lambda v: _construct(version=v),
                  ["v2", None], ("version",)))
    c.append(Case("other", "construct_kernel(method=·)", lambda v: _construct(method=v),
                  ["fast", None], ("method",)))
    c.append(Case("empty", "construct_kernel(weight=(0, 3, 4))",
                  lambda v: _construct(weight=torch.ones(v, 3, 4), P=torch.zeros(1, v, 3, 4),
                                       SIG=torch.zeros(1, v, 3, 4)),
                  [0], ("weight",), ok=finite((0, 3, 5))))
    c.append(Case("count", "position_axes(ndim=·)", lambda v: interp.position_axes("v1", v),
                  [0, 4, -1, 2.5, True], ("ndim",)))
    c.append(Case("other", "position_axes(version=·)", lambda v: interp.position_axes(v, 2),
                  ["v9"], ("version",)))
    # convolve
    for arg, shape in (("input", (2, 4, 10)), ("kernel", (3, 4, 3)), ("bias", (3,))):
        c.append(nonfinite(f"convolve({arg}=·)",
                           lambda v, a=arg, s=shape: _convolve(**{a: inject(_randn(*s), v)}),
                           (arg,)))
        c.append(Case("dtype", f"convolve({arg}=float64)",
                      lambda v, a=arg, s=shape: _convolve(**{a: _randn(*s, dtype=v)}), [F64],
                      ("input", "kernel", "bias") if arg != "bias" else ("bias",)))
    for method in ("fft", "shift", "dense"):
        c.append(nonfinite(f"convolve(input=·, method={method})",
                           lambda v, m=method: _convolve(input=inject(_randn(2, 4, 10), v),
                                                         method=m), ("input",)))
    c.append(Case("dtype", "convolve(input=list)", lambda v: _convolve(input=v),
                  [[[1.0] * 10] * 4], ("input",)))
    c.append(Case("dtype", "convolve(input=int64)",
                  lambda v: _convolve(input=torch.ones(2, 4, 10, dtype=v)), [torch.int64],
                  ("input",)))
    for arg in ("stride", "dilation", "groups"):
        c.append(bad_count(f"convolve({arg}=·)", lambda v, a=arg: _convolve(**{a: v}), (arg,)))
    c.append(Case("count", "convolve(groups=3)", lambda v: _convolve(groups=v), [3],
                  ("groups",)))
    c.append(bad_count("convolve(padding=·)", lambda v: _convolve(padding=v), ("padding",),
                       zero_ok=True))
    c.append(Case("other", "convolve(padding='full')", lambda v: _convolve(padding=v),
                  ["full"], ("padding",)))
    for mode, too_wide in (("reflect", 10), ("circular", 11)):  # input length 10
        c.append(Case("count", f"convolve(padding=·, padding_mode={mode})",
                      lambda v, m=mode: _convolve(padding=v, padding_mode=m), [too_wide, 30],
                      ("padding",)))
    c.append(Case("other", "convolve(padding_mode=·)", lambda v: _convolve(padding_mode=v),
                  ["mirror"], ("padding_mode",)))
    c.append(Case("other", "convolve(method=·)", lambda v: _convolve(method=v), ["fast"],
                  ("method",)))
    c.append(Case("other", "convolve(bias=shape)", lambda v: _convolve(bias=_randn(v)), [2, 4],
                  ("bias",)))
    c.append(Case("other", "convolve(support=·)",
                  lambda v: _convolve(support=v, method="shift"),
                  [torch.ones(4, dtype=torch.bool), torch.ones(3)], ("support",)))
    for method in ("dense", "fft", "shift"):
        c.append(Case("other", f"convolve(input too short, method={method})",
                      lambda v, m=method: _convolve(input=_randn(2, 4, v), method=m), [2, 0],
                      ("input",)))
        c.append(Case("empty", f"convolve(input=(0, 4, 10), method={method})",
                      lambda v, m=method: _convolve(input=_randn(v, 4, 10), method=m), [0],
                      ("input",), ok=finite((0, 3, 8))))
    # dcls_conv
    c.append(Case("dtype", "dcls_conv(input=float64)",
                  lambda v: _dcls_conv(input=_randn(2, 3, 10, dtype=v)), [F64],
                  ("input", "weight")))
    c.append(nonfinite("dcls_conv(P=·)", lambda v: _dcls_conv(P=inject(_randn(1, 2, 3, 4), v)),
                       ("P",)))
    c.append(nonfinite("dcls_conv(input=·)",
                       lambda v: _dcls_conv(input=inject(_randn(2, 3, 10), v)), ("input",)))
    c.append(Case("other", "dcls_conv(construct_method=·)",
                  lambda v: _dcls_conv(construct_method=v), ["fast"], ("construct_method",)))
    c.append(Case("other", "dcls_conv(conv_method=·)", lambda v: _dcls_conv(conv_method=v),
                  ["fast"], ("conv_method",)))
    c.append(Case("other", "dcls_conv(bias=shape)", lambda v: _dcls_conv(bias=_randn(v)), [3],
                  ("bias",)))
    c.append(bad_count("dcls_conv(stride=·)", lambda v: _dcls_conv(stride=v), ("stride",)))
    # layers
    for name, (_, _, in_shape) in LAYERS.items():
        for arg in ("in_channels", "out_channels", "kernel_count", "groups", "stride",
                    "dilation", "dilated_kernel_size"):
            c.append(bad_count(f"{name}({arg}=·)", lambda v, n=name, a=arg: _layer(n, **{a: v}),
                               (arg,)))
        c.append(bad_count(f"{name}(padding=·)", lambda v, n=name: _layer(n, padding=v),
                           ("padding",), zero_ok=True))
        c.append(Case("other", f"{name}(padding='full')", lambda v, n=name: _layer(n, padding=v),
                      ["full"], ("padding",)))
        c.append(Case("count", f"{name}(groups=3)", lambda v, n=name: _layer(n, groups=v), [3],
                      ("groups",)))
        for arg in ("version", "padding_mode", "construct_method", "conv_method"):
            c.append(Case("other", f"{name}({arg}=·)",
                          lambda v, n=name, a=arg: _layer(n, **{a: v}), ["nope"], (arg,)))
        c.append(Case("dtype", f"{name}(dtype=·)", lambda v, n=name: _layer(n, dtype=v),
                      [torch.int64, torch.complex64], ("dtype",)))
        c.append(Case("other", f"{name}(bias=·)", lambda v, n=name: _layer(n, bias=v),
                      ["yes", torch.zeros(2)], ("bias",)))
        c.append(Case("dtype", f"{name}.forward(input=float64)",
                      lambda v, n=name, s=in_shape: _layer(n)(_randn(*s, dtype=v)), [F64],
                      ("input",)))
        c.append(nonfinite(f"{name}.forward(input=·)",
                           lambda v, n=name, s=in_shape: _layer(n)(inject(_randn(*s), v)),
                           ("input",)))
        c.append(Case("other", f"{name}.forward(input channels)",
                      lambda v, n=name, s=in_shape: _layer(n)(_randn(s[0], v, *s[2:])), [3],
                      ("input",)))
        c.append(Case("empty", f"{name}.forward(input=(0, ...))",
                      lambda v, n=name, s=in_shape: _layer(n)(_randn(v, *s[1:])), [0],
                      ("input",), ok=lambda r: isinstance(r, torch.Tensor) and r.shape[0] == 0))
    for name in ("Dcls2_1d", "Dcls3_1d"):
        c.append(bad_count(f"{name}(dense_kernel_size=·)",
                           lambda v, n=name: _layer(n, dense_kernel_size=v),
                           ("dense_kernel_size",)))
    c.append(Case("count", "DclsTranspose2d(output_padding=·)",
                  lambda v: _layer("DclsTranspose2d", output_padding=v), [*BAD_COUNT0, 1, (0,)],
                  ("output_padding",), BAD_COUNT0_X))
    c.append(Case("other", "DclsTranspose2d.forward(output_size=·)",
                  lambda v: _layer("DclsTranspose2d")(_randn(2, 4, 6, 6), output_size=v),
                  [7, [7], [9, 9], [7, 7.0], "88", (2, 2, 2, 2, 8, 8)], ("output_size",)))
    c.append(Case("other", "Dcls2dK1d(flat_dim=·)", lambda v: _layer("Dcls2dK1d", flat_dim=v),
                  [2, -1, True, 0.0], ("flat_dim",)))
    for arg in ("P", "SIG", "weight"):
        c.append(Case("nonfinite", f"Dcls1d.forward with {arg} = ·",
                      lambda v, a=arg: _layer_with(a, v)(_randn(1, 2, 9)), NONFINITE, (arg,)))
    c.append(Case("nonfinite", "Dcls1d.export_integer_taps with P = ·",
                  lambda v: _layer_with("P", v).export_integer_taps(), NONFINITE, ("P",)))
    # integer_taps / IntegerTaps
    c.append(nonfinite("integer_taps(P=·)",
                       lambda v: interp.integer_taps(_randn(2, 3), inject(torch.zeros(1, 2, 3), v),
                                                     5, "v1"), ("P",)))
    c.append(Case("dtype", "integer_taps(weight=·)",
                  lambda v: interp.integer_taps(v, torch.zeros(1, 2, 3), 5, "v1"),
                  [[1.0, 2.0], torch.ones(2, 3, dtype=torch.int64)], ("weight",)))
    c.append(Case("other", "integer_taps(P shape)",
                  lambda v: interp.integer_taps(_randn(2, 3), torch.zeros(v), 5, "v1"),
                  [(1, 2, 4), (4, 2, 3)], ("P",)))
    c.append(bad_count("integer_taps(dilated_kernel_size=·)",
                       lambda v: interp.integer_taps(_randn(2, 3), torch.zeros(1, 2, 3), v, "v1"),
                       ("dilated_kernel_size",)))
    c.append(Case("other", "integer_taps(version=·)",
                  lambda v: interp.integer_taps(_randn(2, 3), torch.zeros(1, 2, 3), 5, v),
                  ["v7"], ("version",)))
    c.append(Case("other", "IntegerTaps(index=·)",
                  lambda v: interp.IntegerTaps(_randn(2, 3), v, (5,)).kernel(),
                  [torch.full((1, 2, 3), 7), torch.full((1, 2, 3), -1), torch.zeros(1, 2, 3),
                   torch.zeros(1, 2, 4, dtype=torch.long)], ("index",)))
    c.append(bad_count("IntegerTaps(size=·)",
                       lambda v: interp.IntegerTaps(_randn(2, 3), torch.zeros(1, 2, 3,
                                                                              dtype=torch.long),
                                                    (v,)).kernel(), ("size",)))
    c.append(Case("dtype", "IntegerTaps(weight=·)",
                  lambda v: interp.IntegerTaps(v, torch.zeros(1, 2, 3, dtype=torch.long),
                                               (5,)).kernel(),
                  [[1.0], torch.ones(2, 3, dtype=torch.int64)], ("weight",)))
    # module helpers
    c.append(bad_positive("float", "parameter_groups(lr=·)",
                          lambda v: interp.parameter_groups(_Net(), v), ("lr",)))
    c.append(bad_positive("float", "parameter_groups(position_lr_scale=·)",
                          lambda v: interp.parameter_groups(_Net(), 0.1, position_lr_scale=v),
                          ("position_lr_scale",)))
    c.append(Case("float", "parameter_groups(weight_decay=·)",
                  lambda v: interp.parameter_groups(_Net(), 0.1, weight_decay=v),
                  [NAN, INF, -1.0, True, "0"], ("weight_decay",),
                  st.one_of(st.floats(max_value=-1e-300), st.just(NAN))))
    for fn in (interp.parameter_groups, interp.clamp_parameters, interp.dcls_layers):
        args = (0.1,) if fn is interp.parameter_groups else ()
        c.append(Case("other", f"{fn.__name__}(module=·)", lambda v, f=fn, a=args: f(v, *a),
                      [None, "net", [nn.Linear(2, 2)]], ("module",)))
    c.append(Case("float", "set_sigma(sigma=·)", lambda v: interp.set_sigma(_Net(), v),
                  [NAN, INF, -INF, -1.0, 0.1, True, "1"], ("sigma",),
                  st.one_of(st.floats(max_value=0.26), st.just(NAN), st.just(INF))))
    c.append(Case("other", "set_sigma(module=·)", lambda v: interp.set_sigma(v, 1.0),
                  [None, "net"], ("module",)))
    c.append(Case("other", "set_sigma(learnable=·)",
                  lambda v: interp.set_sigma(_Net(), 1.0, learnable=v), ["yes", None],
                  ("learnable",)))
    for arg in ("start", "end"):
        c.append(bad_positive("float", f"SigmaSchedule({arg}=·)",
                              lambda v, a=arg: interp.SigmaSchedule(
                                  **{"start": 4.0, "end": 0.5, "steps": 10, a: v}), (arg,)))
    c.append(bad_count("SigmaSchedule(steps=·)", lambda v: interp.SigmaSchedule(4.0, 0.5, v),
                       ("steps",)))
    c.append(Case("other", "SigmaSchedule(kind=·)",
                  lambda v: interp.SigmaSchedule(4.0, 0.5, 10, v), ["step", None], ("kind",)))
    c.append(Case("float", "SigmaSchedule.for_rounding(start=·)",
                  lambda v: interp.SigmaSchedule.for_rounding(v, 100),
                  [NAN, INF, 0.0, 0.27, True, "4"], ("start",),
                  st.one_of(st.floats(max_value=0.2799), st.just(NAN), st.just(INF))))
    c.append(bad_count("SigmaSchedule.for_rounding(total_steps=·)",
                       lambda v: interp.SigmaSchedule.for_rounding(4.0, v), ("total_steps",)))
    c.append(Case("float", "SigmaSchedule.for_rounding(fraction=·)",
                  lambda v: interp.SigmaSchedule.for_rounding(4.0, 100, fraction=v),
                  [NAN, INF, 0.0, -0.5, 1.5, True, "0.5"], ("fraction",),
                  st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0001),
                            st.just(NAN))))
    c.append(Case("count", "SigmaSchedule.__call__(step=·)",
                  lambda v: interp.SigmaSchedule(4.0, 0.5, 10)(v), [NAN, INF, 2.5, True, "3"],
                  ("step",), st.one_of(st.floats(allow_infinity=True).filter(
                      lambda x: not x == int(x) if math.isfinite(x) else True))))
    c.append(Case("count", "SigmaSchedule.apply(step=·)",
                  lambda v: interp.SigmaSchedule(4.0, 0.5, 10).apply(_Net(), v), [NAN, "3"],
                  ("step",)))
    # splat / gather / spline_coefficients
    for fn, call, data, shape in (("splat", _splat, "values", (2, 5)),
                                  ("gather", _gather, "grid", (2, 4, 5))):
        npts = 5 if fn == "splat" else 3
        c.append(nonfinite(f"{fn}({data}=·)",
                           lambda v, f=call, d=data, s=shape: f(**{d: inject(_randn(*s), v)}),
                           (data,)))
        c.append(nonfinite(f"{fn}(coords=·)",
                           lambda v, f=call, n=npts: f(coords=inject(_randn(2, n, 2), v)),
                           ("coords",)))
        for kind in ("linear", "cubic", "nearest"):
            c.append(nonfinite(f"{fn}(coords=·, kind={kind})",
                               lambda v, f=call, n=npts, k=kind: f(
                                   coords=inject(_randn(2, n, 2), v), kind=k, width=None),
                               ("coords",)))
        c.append(Case("dtype", f"{fn}(coords=float64)",
                      lambda v, f=call, n=npts: f(coords=_randn(2, n, 2, dtype=v)), [F64],
                      ("coords", data)))
        c.append(Case("dtype", f"{fn}({data}=float64)",
                      lambda v, f=call, d=data, s=shape: f(**{d: _randn(*s, dtype=v)}), [F64],
                      ("coords", data)))
        c.append(Case("dtype", f"{fn}({data}=·)", lambda v, f=call, d=data: f(**{d: v}),
                      [[1.0, 2.0], None], (data,)))
        c.append(Case("dtype", f"{fn}(coords=·)", lambda v, f=call: f(coords=v),
                      [[[1.0, 2.0]], None], ("coords",)))
        c.append(bad_positive("float", f"{fn}(width=·)", lambda v, f=call: f(width=v),
                              ("width",)))
        c.append(Case("float", f"{fn}(width=tensor ·)",
                      lambda v, f=call: f(width=torch.tensor(v)), [NAN, INF, 0.0, -1.0],
                      ("width",)))
        c.append(Case("dtype", f"{fn}(width=float64 tensor)",
                      lambda v, f=call: f(width=torch.ones(2, dtype=v)), [F64], ("width",)))
        c.append(Case("float", f"{fn}(width=·, kind=triangle)",
                      lambda v, f=call: f(width=v, kind="triangle"), [NAN, INF, 0.0],
                      ("width",)))
        c.append(Case("float", f"{fn}(truncate=·)", lambda v, f=call: f(truncate=v),
                      [NAN, INF, 0.0, -1.0, True, "4"], ("truncate",), BAD_POSITIVE_X))
        for arg in ("kind", "padding_mode"):
            c.append(Case("other", f"{fn}({arg}=·)", lambda v, f=call, a=arg: f(**{a: v}),
                          ["spline", None], (arg,)))
    c.append(Case("float", "splat(truncate=huge)", lambda v: _splat(truncate=v), [1e308],
                  ("truncate",), st.floats(1e3, 1e308), ok=finite((2, 4, 5))))
    c.append(Case("count", "splat(grid_shape=·)", lambda v: _splat(grid_shape=v),
                  [(0, 5), (-1, 5), (10**12, 5), (2.5, 5), (True, 5), 5, None],
                  ("grid_shape",)))
    c.append(Case("empty", "splat(values, coords with n = 0)",
                  lambda v: _splat(values=torch.ones(2, v), coords=torch.ones(2, v, 2)), [0],
                  ("values",), ok=lambda r: bool((r == 0).all()) and r.shape == (2, 4, 5)))
    c.append(Case("empty", "splat(batch = 0)",
                  lambda v: _splat(values=torch.ones(v, 5), coords=torch.ones(v, 5, 2)), [0],
                  ("values",), ok=finite((0, 4, 5))))
    c.append(Case("empty", "gather(coords with n = 0)",
                  lambda v: _gather(coords=torch.ones(2, v, 2)), [0], ("coords",),
                  ok=finite((2, 0))))
    c.append(Case("empty", "gather(grid with a zero-size grid axis)",
                  lambda v: _gather(grid=torch.ones(2, v, 5)), [0], ("grid",)))
    c.append(Case("other", "gather(prefilter=·)",
                  lambda v: _gather(kind="cubic", width=None, prefilter=v), ["no", None],
                  ("prefilter",)))
    c.append(nonfinite("spline_coefficients(grid=·)",
                       lambda v: interp.spline_coefficients(inject(_randn(3, 6), v), 1),
                       ("grid",)))
    c.append(Case("count", "spline_coefficients(ndim=·)",
                  lambda v: interp.spline_coefficients(_randn(3, 6), v),
                  [0, -1, 3, 2.5, True], ("ndim",)))
    c.append(Case("dtype", "spline_coefficients(grid=·)",
                  lambda v: interp.spline_coefficients(v, 1),
                  [[1.0, 2.0], torch.ones(4, dtype=torch.int64)], ("grid",)))
    c.append(Case("other", "spline_coefficients(padding_mode=·)",
                  lambda v: interp.spline_coefficients(_randn(3, 6), 1, v), ["zero"],
                  ("padding_mode",)))
    c.append(Case("empty", "spline_coefficients(grid axis of length 0)",
                  lambda v: interp.spline_coefficients(torch.ones(3, v), 1), [0], ("grid",),
                  ok=finite((3, 0))))
    return c


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.cls}:{c.label}" for c in CASES])
@FUZZ
@given(data=st.data())
def test_bad_input_is_named_or_correct(case, data):
    value = data.draw(case.strategy(), label="value")
    result = case.run(value)
    assert result in ("ok", "named"), f"{case.label} <- {value!r}: {result}"


# -------------------------------------------------------- valid input: finite, right results


@settings(max_examples=15, deadline=None)
@given(version=st.sampled_from(["v0", "v1", "max", "gauss"]), d=st.integers(1, 3),
       size=st.integers(1, 6), taps=st.integers(1, 4), out=st.integers(0, 2),
       seed=st.integers(0, 2**16), spread=st.floats(0.0, 8.0))
def test_constructions_agree_and_are_finite(version, d, size, taps, out, seed, spread):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, 2, taps, generator=g, dtype=F64)
    P = (torch.rand(d, out, 2, taps, generator=g, dtype=F64) * 2 - 1) * spread
    SIG = torch.rand(d, out, 2, taps, generator=g, dtype=F64) if version in ("max",
                                                                             "gauss") else None
    ref = interp.construct_kernel(weight, P, SIG, size, version, method="dense")
    assert ref.shape == (out, 2, *([size] * d)) and bool(torch.isfinite(ref).all())
    methods = ["separable"] + (["scatter"] if version in ("v0", "v1") else [])
    for method in methods:
        torch.testing.assert_close(interp.construct_kernel(weight, P, SIG, size, version,
                                                           method=method), ref)


@settings(max_examples=15, deadline=None)
@given(method=st.sampled_from(["dense", "fft", "shift"]), batch=st.integers(0, 2),
       length=st.integers(3, 12), k=st.integers(1, 3), stride=st.integers(1, 3),
       padding=st.integers(0, 2), mode=st.sampled_from(["zeros", "reflect", "circular"]),
       groups=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_convolve_paths_match_conv1d(method, batch, length, k, stride, padding, mode, groups,
                                     seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, length, generator=g, dtype=F64)
    kernel = torch.randn(2, 4 // groups, k, generator=g, dtype=F64)
    bias = torch.randn(2, generator=g, dtype=F64)
    if (mode != "zeros" and padding >= length) or length + 2 * padding < k:
        return
    out = interp.convolve(x, kernel, bias, stride=stride, padding=padding, groups=groups,
                          padding_mode=mode, method=method)
    padded = F.pad(x, (padding, padding), mode="constant" if mode == "zeros" else mode)
    torch.testing.assert_close(out, F.conv1d(padded, kernel, bias, stride, groups=groups))


@settings(max_examples=15, deadline=None)
@given(kernel=st.sampled_from(["nearest", "linear", "gaussian", "triangle", "cubic"]),
       mode=st.sampled_from(["zeros", "mirror"]), n=st.integers(0, 6),
       shape=st.tuples(st.integers(1, 5), st.integers(1, 5)), seed=st.integers(0, 2**16),
       width=st.floats(0.3, 3.0))
def test_gather_is_adjoint_of_splat(kernel, mode, n, shape, seed, width):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, 2, generator=g, dtype=F64) * 8 - 2
    values = torch.randn(n, generator=g, dtype=F64)
    grid = torch.randn(*shape, generator=g, dtype=F64)
    w = width if kernel in ("gaussian", "triangle") else None
    splatted = interp.splat(values, coords, shape, kernel, width=w, padding_mode=mode,
                            truncate=None)
    gathered = interp.gather(grid, coords, kernel, width=w, padding_mode=mode, truncate=None,
                             prefilter=False)
    assert splatted.shape == shape and gathered.shape == (n,)
    torch.testing.assert_close((splatted * grid).sum(), (gathered * values).sum())


if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    print_census(CASES, verbose="-v" in sys.argv)
