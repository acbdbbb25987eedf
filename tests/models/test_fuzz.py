"""Fuzz suite over the public API of ``diffnum.models`` (FNO, spectral convolution).

Every bad input either gives a finite, correct result or raises ``ValueError``/``TypeError``
whose message names the argument. The classifier and the :class:`Case` record are those of
``tests/pde/test_fuzz.py``; run the census with ``python -m tests.models.test_fuzz``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from diffnum.models import FNO, SpectralConv, grid_coordinates, spectral_conv, spectral_weight_shape
from tests.models._reference import reference_spectral_conv
from tests.pde.test_fuzz import OUTCOMES, Case, classify

F32, F64 = torch.float32, torch.float64
C64, C128 = torch.complex64, torch.complex128
NAN = float("nan")


def _randn(*shape, dtype=F32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _fno(n_dims=1, **kw):
    args = {"in_channels": 1, "out_channels": 2, "modes": 3, "width": 4, "depth": 2,
            "n_dims": n_dims, **kw}
    return FNO(args.pop("in_channels"), args.pop("out_channels"), args.pop("modes"),
               args.pop("width"), args.pop("depth"), args.pop("n_dims"), **args)


def _shape(*shape):
    return lambda r: tuple(r.shape) == shape


def _empty_backward():
    """An empty batch through FNO: empty output and zero (not missing) gradients."""
    model = _fno(2, padding=2)
    out = model(torch.zeros(0, 1, 6, 5))
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and not bool(g.any()) for g in grads), "gradients must be zero"
    return out


CASES = [
    # ---- non-finite values: inputs propagate (allowed), nothing else is a float ----
    Case("nonfinite", "spectral_conv NaN input propagates",
         lambda: spectral_conv(torch.full((1, 2, 8), NAN), _randn(2, 3, 4, dtype=C64)), "input",
         "either", _shape(1, 3, 8), propagate=True),
    Case("nonfinite", "FNO NaN input propagates",
         lambda: _fno()(torch.full((2, 1, 8), NAN)), "input", "either", _shape(2, 2, 8),
         propagate=True),
    Case("nonfinite", "FNO(width=nan)", lambda: _fno(width=NAN), "width"),
    Case("nonfinite", "FNO(modes=nan)", lambda: _fno(modes=NAN), "modes"),
    # ---- counts: zero, negative, huge, float, bool ----
    Case("count", "SpectralConv(modes=0)", lambda: SpectralConv(1, 1, 0, 1), "modes"),
    Case("count", "SpectralConv(modes=True)", lambda: SpectralConv(1, 1, True, 1), "modes"),
    Case("count", "SpectralConv(modes=2**20, n_dims=3)",
         lambda: SpectralConv(1, 1, 2**20, 3), "modes"),
    Case("count", "SpectralConv(in_channels=2**30)",
         lambda: SpectralConv(2**30, 4, 8, 1), "in_channels"),
    Case("count", "SpectralConv(n_dims=4)", lambda: SpectralConv(1, 1, 2, 4), "n_dims"),
    Case("count", "FNO(depth=10**6)", lambda: _fno(depth=10**6), "depth"),
    Case("count", "FNO(depth=0)", lambda: _fno(depth=0), "depth"),
    Case("count", "FNO(padding=-1)", lambda: _fno(padding=-1), "padding"),
    Case("count", "FNO(padding=2**31)", lambda: _fno(width=64, padding=2**31)(
        torch.zeros(1, 1, 8)), "padding"),
    Case("count", "FNO(width=2**20)", lambda: _fno(width=2**20), "width"),
    Case("count", "FNO(projection_channels=0)", lambda: _fno(projection_channels=0),
         "projection_channels"),
    Case("count", "FNO(modes=(3,)) for n_dims=2", lambda: _fno(2, modes=(3,)), "modes"),
    Case("count", "grid_coordinates((0,))", lambda: grid_coordinates((0,)), "grid"),
    Case("count", "grid_coordinates((-1,))", lambda: grid_coordinates((-1,)), "grid"),
    Case("count", "grid_coordinates((2.5,))", lambda: grid_coordinates((2.5,)), "grid"),
    Case("count", "grid_coordinates(())", lambda: grid_coordinates(()), "grid"),
    Case("count", "grid_coordinates((10**12,))", lambda: grid_coordinates((10**12,)), "grid"),
    Case("count", "spectral_weight_shape(0, 1, (4,))",
         lambda: spectral_weight_shape(0, 1, (4,)), "in_channels"),
    Case("count", "spectral_weight_shape(1, 1, (0,))",
         lambda: spectral_weight_shape(1, 1, (0,)), "modes"),
    Case("count", "spectral_weight_shape(1, 1, (2,)*4)",
         lambda: spectral_weight_shape(1, 1, (2, 2, 2, 2)), "modes"),
    # ---- wrong types ----
    Case("type", "spectral_weight_shape(modes=4)", lambda: spectral_weight_shape(1, 1, 4),
         "modes"),
    Case("type", "grid_coordinates(8)", lambda: grid_coordinates(8), "grid"),
    Case("type", "grid_coordinates(dtype=int64)",
         lambda: grid_coordinates((4,), dtype=torch.int64), "dtype"),
    Case("type", "FNO(activation=5)", lambda: _fno(activation=5), "activation"),
    Case("type", "FNO(append_grid='yes')", lambda: _fno(append_grid="yes"), "append_grid"),
    Case("type", "FNO(dtype=float16)", lambda: _fno(dtype=torch.float16), "dtype"),
    Case("type", "SpectralConv(device='nonsense')",
         lambda: SpectralConv(1, 1, 2, 1, device="nonsense"), "device"),
    Case("type", "FNO(device='nonsense')", lambda: _fno(device="nonsense"), "device"),
    Case("type", "FNO forward input=list", lambda: _fno()([[0.0] * 8]), "input"),
    Case("type", "spectral_conv weight=list",
         lambda: spectral_conv(_randn(1, 2, 8), [[1.0]]), "weight"),
    # ---- dtype / device disagreement ----
    Case("dtype", "FNO float32 forward float64 input",
         lambda: _fno()(_randn(1, 1, 8, dtype=F64)), "input"),
    Case("dtype", "spectral_conv float64 input, complex64 weight",
         lambda: spectral_conv(_randn(1, 2, 8, dtype=F64), _randn(2, 3, 4, dtype=C64)),
         "weight"),
    Case("dtype", "spectral_conv weight on meta",
         lambda: spectral_conv(_randn(1, 2, 8), _randn(2, 3, 4, dtype=C64).to("meta")),
         "weight"),
    Case("dtype", "FNO on meta, input on cpu",
         lambda: _fno(device="meta")(_randn(1, 1, 8)), "input"),
    Case("dtype", "SpectralConv on meta, input on cpu",
         lambda: SpectralConv(2, 3, 4, 1, device="meta")(_randn(1, 2, 8)), "input"),
    # ---- shapes ----
    Case("shape", "FNO forward wrong channels", lambda: _fno()(_randn(1, 3, 8)), "input"),
    Case("shape", "FNO forward without grid dims", lambda: _fno(2)(_randn(1, 8)), "input"),
    Case("shape", "FNO forward empty grid", lambda: _fno()(_randn(1, 1, 0)), "input"),
    Case("shape", "spectral_conv odd weight dims",
         lambda: spectral_conv(_randn(1, 2, 8, 8), _randn(2, 3, 3, 4, dtype=C64)), "weight"),
    Case("shape", "spectral_conv channel mismatch",
         lambda: spectral_conv(_randn(1, 5, 8), _randn(2, 3, 4, dtype=C64)), "input"),
    # ---- empty batches ----
    Case("empty", "spectral_conv empty batch 1-D",
         lambda: spectral_conv(torch.zeros(0, 2, 8), _randn(2, 3, 4, dtype=C64)), "input",
         "either", _shape(0, 3, 8)),
    Case("empty", "SpectralConv empty batch 2-D",
         lambda: SpectralConv(2, 3, (2, 3), 2)(torch.zeros(4, 0, 2, 6, 5)), "input", "either",
         _shape(4, 0, 3, 6, 5)),
    Case("empty", "SpectralConv empty batch 3-D float64",
         lambda: SpectralConv(1, 1, 2, 3, dtype=F64)(torch.zeros(0, 1, 4, 4, 4, dtype=F64)),
         "input", "either", _shape(0, 1, 4, 4, 4)),
    Case("empty", "FNO empty batch 1-D", lambda: _fno()(torch.zeros(0, 1, 8)), "input",
         "either", _shape(0, 2, 8)),
    Case("empty", "FNO empty batch 2-D, padding, backward", _empty_backward, "input",
         "either", _shape(0, 2, 6, 5)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_census_case(case):
    outcome, detail = case.run()
    assert outcome in ("ok", "named"), f"{case.kind}: {outcome}: {detail}"


_BAD_COUNT = st.one_of(st.integers(max_value=0), st.integers(min_value=2**31 + 1, max_value=10**30),
                       st.sampled_from([True, False, 2.0, 1.5, NAN, "3", None]))

# (argument, call(value)); each count must be an int >= 1 with a sane upper bound.
COUNT_ARGS = [
    ("in_channels", lambda v: SpectralConv(v, 1, 2, 1)),
    ("out_channels", lambda v: SpectralConv(1, v, 2, 1)),
    ("modes", lambda v: SpectralConv(1, 1, v, 2)),
    ("modes", lambda v: SpectralConv(1, 1, (2, v), 2)),
    ("n_dims", lambda v: SpectralConv(1, 1, 2, v)),
    ("in_channels", lambda v: _fno(in_channels=v)),
    ("out_channels", lambda v: _fno(out_channels=v)),
    ("modes", lambda v: _fno(modes=v)),
    ("width", lambda v: _fno(width=v)),
    ("depth", lambda v: _fno(depth=v)),
    ("n_dims", lambda v: _fno(n_dims=v)),
    ("projection_channels", lambda v: _fno(projection_channels=v)),
    ("grid", lambda v: grid_coordinates((4, v))),
    ("in_channels", lambda v: spectral_weight_shape(v, 1, (2,))),
    ("modes", lambda v: spectral_weight_shape(1, 1, (v, 2))),
]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_bad_counts_raise_named_errors(data):
    name, call = data.draw(st.sampled_from(COUNT_ARGS))
    value = data.draw(_BAD_COUNT)
    assume(not (name == "projection_channels" and value is None))  # None is the default 4·width
    outcome, detail = classify(lambda: call(value), name)
    assert outcome == "named", (name, value, outcome, detail)


@settings(max_examples=40, deadline=None)
@given(st.integers(-(2**40), -1) | st.integers(2**12 + 1, 2**40) | st.sampled_from([1.0, True]))
def test_bad_padding_is_named(padding):
    outcome, detail = classify(lambda: _fno(padding=padding), "padding")
    assert outcome == "named", (padding, outcome, detail)


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(st.integers(0, 2), max_size=2).map(tuple), n_dims=st.integers(1, 3),
       data=st.data(), dtype=st.sampled_from([F32, F64]))
def test_spectral_conv_any_batch_matches_reference(batch, n_dims, data, dtype):
    grid = tuple(data.draw(st.lists(st.integers(1, 6), min_size=n_dims, max_size=n_dims)))
    modes = tuple(data.draw(st.lists(st.integers(1, 4), min_size=n_dims, max_size=n_dims)))
    c_in, c_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = _randn(*batch, c_in, *grid, dtype=dtype)
    w = _randn(*spectral_weight_shape(c_in, c_out, modes), dtype=C64 if dtype == F32 else C128)
    y = spectral_conv(x, w)
    assert y.shape == (*batch, c_out, *grid) and y.dtype == dtype
    assert bool(torch.isfinite(y).all())
    flat = x.reshape(-1, c_in, *grid).double().numpy()
    if flat.shape[0]:
        ref = reference_spectral_conv(flat, w.to(C128).numpy())
        tol = 1e-4 if dtype == F32 else 1e-10
        np.testing.assert_allclose(y.reshape(-1, c_out, *grid).double().numpy(), ref,
                                   rtol=tol, atol=tol)


@settings(max_examples=20, deadline=None)
@given(batch=st.lists(st.integers(0, 2), max_size=2).map(tuple), n_dims=st.integers(1, 3),
       padding=st.integers(0, 3), append_grid=st.booleans(), dtype=st.sampled_from([F32, F64]),
       data=st.data())
def test_fno_any_batch_is_finite_and_shaped(batch, n_dims, padding, append_grid, dtype, data):
    grid = tuple(data.draw(st.lists(st.integers(1, 6), min_size=n_dims, max_size=n_dims)))
    model = _fno(n_dims, in_channels=2, out_channels=3, modes=2, width=3, depth=2,
                 padding=padding, append_grid=append_grid, dtype=dtype)
    x = _randn(*batch, 2, *grid, dtype=dtype).requires_grad_()
    y = model(x)
    assert y.shape == (*batch, 3, *grid) and y.dtype == dtype
    assert bool(torch.isfinite(y).all())
    y.square().sum().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all())
               for p in model.parameters())


@settings(max_examples=20, deadline=None)
@given(model_dtype=st.sampled_from([F32, F64]), input_dtype=st.sampled_from([F32, F64]))
def test_dtype_disagreement_is_named(model_dtype, input_dtype):
    model = _fno(dtype=model_dtype)
    expect = "either" if model_dtype == input_dtype else "error"
    outcome, detail = classify(lambda: model(_randn(1, 1, 8, dtype=input_dtype)), "input",
                               expect=expect)
    assert outcome == ("ok" if expect == "either" else "named"), (outcome, detail)


if __name__ == "__main__":  # the census: counts per bad-input class
    import collections
    import resource
    import sys

    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
    table = collections.defaultdict(collections.Counter)
    for case in CASES:
        outcome, detail = case.run()
        table[case.kind][outcome] += 1
        if outcome not in ("ok", "named") or "-v" in sys.argv:
            print(f"{outcome:8s} {case.kind:10s} {case.label}: {detail[:160]}")
    print(f"{'class':10s} " + " ".join(f"{o:>8s}" for o in OUTCOMES))
    for kind, counts in table.items():
        print(f"{kind:10s} " + " ".join(f"{counts[o]:8d}" for o in OUTCOMES))
    total = sum(table.values(), collections.Counter())
    print(f"{'total':10s} " + " ".join(f"{total[o]:8d}" for o in OUTCOMES))
