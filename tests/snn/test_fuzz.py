"""Fuzz the public API of ``diffnum.snn`` with bad input (hypothesis).

Same contract and harness as ``tests/interp/test_fuzz.py``: on bad input a call succeeds with
a finite, correct result or raises ``ValueError``/``TypeError`` naming the argument.
Non-finite inputs (NaN/±inf currents, spikes, potentials) are rejected by name: a NaN would
otherwise compare false against the threshold and read as "no spike".
``python tests/snn/test_fuzz.py`` prints the census.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import diffnum.snn as snn
from tests.interp.test_fuzz import (
    BAD_COUNT0,
    BAD_COUNT0_X,
    F64,
    FUZZ,
    INF,
    NAN,
    Case,
    bad_count,
    bad_positive,
    finite,
    inject,
    nonfinite,
    print_census,
)

BAD_UNIT = [NAN, INF, -INF, -0.5, 1.5, True, "0.5"]  # a leak β must lie in [0, 1]
BAD_UNIT_X = st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0 + 1e-9),
                       st.just(NAN))
BAD_OPEN_UNIT = [*BAD_UNIT, 0.0, 1.0]  # LIF's constructor: β in (0, 1)


def _current(*shape, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype) * 1.5


def _lif(**kw):
    args = dict(current=_current(2, 3, 8), beta=0.5, threshold=1.0)
    args.update(kw)
    return snn.lif(args.pop("current"), args.pop("beta"), args.pop("threshold"), **args)


def _leaky(**kw):
    args = dict(current=_current(2, 3, 8), beta=0.5)
    args.update(kw)
    return snn.leaky_integrate(args.pop("current"), args.pop("beta"))


def _delayed(**kw):
    args = dict(in_features=3, out_features=2, max_delay=5)
    args.update(kw)
    return snn.DelayedLinear(args.pop("in_features"), args.pop("out_features"),
                             args.pop("max_delay"), **args)


def _delayed_conv(**kw):
    args = dict(in_channels=2, out_channels=2, kernel_size=3, max_delay=5, padding=1)
    args.update(kw)
    return snn.DelayedConv2d(args.pop("in_channels"), args.pop("out_channels"),
                             args.pop("kernel_size"), args.pop("max_delay"), **args)


def _recurrent(**kw):
    args = dict(num_neurons=3, max_delay=5)
    args.update(kw)
    return snn.DelayedRecurrentLIF(args.pop("num_neurons"), args.pop("max_delay"), **args)


def _coincidence(**kw):
    args = dict(n_samples=4, n_channels=3, n_classes=2, length=12, max_delay=5)
    args.update(kw)
    return snn.delayed_coincidence(args.pop("n_samples"), **args)


def _set_delays(value):
    layer = _delayed()
    layer.set_delays(value)
    return layer.delays()


def _cases() -> list[Case]:
    c: list[Case] = []
    # spike
    c.append(nonfinite("spike(x=·)", lambda v: snn.spike(inject(torch.zeros(5), v)), ("x",)))
    c.append(Case("dtype", "spike(x=·)", lambda v: snn.spike(v),
                  [[0.5], torch.ones(3, dtype=torch.int64), torch.ones(2, dtype=torch.bool)],
                  ("x",)))
    c.append(bad_positive("float", "spike(alpha=·)", lambda v: snn.spike(torch.zeros(3), alpha=v),
                          ("alpha",)))
    c.append(Case("other", "spike(surrogate=·)", lambda v: snn.spike(torch.zeros(3), v),
                  ["relu", None], ("surrogate",)))
    # lif / leaky_integrate
    for fn, call in (("lif", _lif), ("leaky_integrate", _leaky)):
        c.append(nonfinite(f"{fn}(current=·)", lambda v, f=call: f(
            current=inject(_current(2, 3, 8), v)), ("current",)))
        c.append(Case("dtype", f"{fn}(current=·)", lambda v, f=call: f(current=v),
                      [[[1.0, 2.0]], torch.ones(2, 8, dtype=torch.int64)], ("current",)))
        c.append(Case("other", f"{fn}(current=0-d)", lambda v, f=call: f(current=torch.tensor(v)),
                      [1.0], ("current",)))
        c.append(Case("float", f"{fn}(beta=·)", lambda v, f=call: f(beta=v), BAD_UNIT, ("beta",),
                      BAD_UNIT_X))
        c.append(Case("float", f"{fn}(beta=tensor ·)",
                      lambda v, f=call: f(beta=torch.full((3,), v)), [NAN, INF, -0.5, 1.5],
                      ("beta",)))
        c.append(Case("other", f"{fn}(beta=tensor of a wrong shape)",
                      lambda v, f=call: f(beta=torch.full((v,), 0.5)), [2, 4], ("beta",)))
        c.append(Case("dtype", f"{fn}(beta=float64 tensor)",
                      lambda v, f=call: f(beta=torch.full((3,), 0.5, dtype=v)), [F64],
                      ("beta",)))
        c.append(Case("empty", f"{fn}(current with T = 0)",
                      lambda v, f=call: f(current=torch.ones(2, 3, v)), [0], ("current",),
                      ok=finite((2, 3, 0))))
        c.append(Case("empty", f"{fn}(current with batch = 0)",
                      lambda v, f=call: f(current=torch.ones(v, 3, 8)), [0], ("current",),
                      ok=finite((0, 3, 8))))
    c.append(bad_positive("float", "lif(threshold=·)", lambda v: _lif(threshold=v),
                          ("threshold",)))
    c.append(bad_positive("float", "lif(alpha=·)", lambda v: _lif(alpha=v), ("alpha",)))
    c.append(Case("other", "lif(reset=·)", lambda v: _lif(reset=v), ["zero", None], ("reset",)))
    c.append(Case("other", "lif(surrogate=·)", lambda v: _lif(surrogate=v), ["relu"],
                  ("surrogate",)))
    # LIF
    c.append(Case("float", "LIF(beta=·)", lambda v: snn.LIF(v), BAD_OPEN_UNIT, ("beta",),
                  BAD_UNIT_X))
    c.append(Case("float", "LIF(beta=·, learn_beta=True)",
                  lambda v: snn.LIF(v, learn_beta=True, num_neurons=3), BAD_OPEN_UNIT,
                  ("beta",)))
    c.append(bad_positive("float", "LIF(threshold=·)", lambda v: snn.LIF(threshold=v),
                          ("threshold",)))
    c.append(bad_positive("float", "LIF(alpha=·)", lambda v: snn.LIF(alpha=v), ("alpha",)))
    for arg in ("reset", "surrogate"):
        c.append(Case("other", f"LIF({arg}=·)", lambda v, a=arg: snn.LIF(**{a: v}), ["nope"],
                      (arg,)))
    c.append(bad_count("LIF(num_neurons=·, learn_beta=True)",
                       lambda v: snn.LIF(learn_beta=True, num_neurons=v), ("num_neurons",)))
    c.append(Case("other", "LIF(learn_beta=·)", lambda v: snn.LIF(learn_beta=v, num_neurons=3),
                  ["yes", None], ("learn_beta",)))
    c.append(nonfinite("LIF.forward(current=·)",
                       lambda v: snn.LIF()(inject(_current(2, 3, 8), v)), ("current",)))
    c.append(Case("other", "LIF(learn_beta).forward(current with wrong neurons)",
                  lambda v: snn.LIF(learn_beta=True, num_neurons=3)(_current(2, v, 8)), [4],
                  ("current", "num_neurons")))
    # DelayedLinear
    for arg in ("in_features", "out_features"):
        c.append(bad_count(f"DelayedLinear({arg}=·)", lambda v, a=arg: _delayed(**{a: v}),
                           (arg,)))
    c.append(bad_count("DelayedLinear(max_delay=·)", lambda v: _delayed(max_delay=v),
                       ("max_delay",)))
    c.append(Case("count", "DelayedLinear(max_delay=even)", lambda v: _delayed(max_delay=v),
                  [4], ("max_delay",)))
    c.append(Case("float", "DelayedLinear(sigma=·)", lambda v: _delayed(sigma=v),
                  [NAN, INF, -INF, -1.0, 0.1, True, "1"], ("sigma",),
                  st.one_of(st.floats(max_value=0.26), st.just(NAN), st.just(INF))))
    c.append(Case("other", "DelayedLinear(sigma=·, version=v1)",
                  lambda v: _delayed(sigma=v, version="v1"), [2.0], ("sigma",)))
    for arg in ("version", "conv_method"):
        c.append(Case("other", f"DelayedLinear({arg}=·)", lambda v, a=arg: _delayed(**{a: v}),
                      ["nope"], (arg,)))
    c.append(Case("other", "DelayedLinear(bias=·)", lambda v: _delayed(bias=v), ["yes"],
                  ("bias",)))
    c.append(nonfinite("DelayedLinear.forward(spikes=·)",
                       lambda v: _delayed()(inject(_current(2, 3, 8), v)), ("spikes",)))
    c.append(Case("dtype", "DelayedLinear.forward(spikes=·)", lambda v: _delayed()(v),
                  [_current(2, 3, 8, dtype=F64), torch.ones(2, 3, 8, dtype=torch.int64),
                   [[0.0]]], ("spikes",)))
    c.append(Case("other", "DelayedLinear.forward(spikes with wrong features)",
                  lambda v: _delayed()(_current(2, v, 8)), [2, 4], ("spikes",)))
    c.append(Case("other", "DelayedLinear.forward(spikes=1-d)",
                  lambda v: _delayed()(_current(v)), [8], ("spikes",)))
    c.append(Case("empty", "DelayedLinear.forward(spikes with T = 0)",
                  lambda v: _delayed()(torch.ones(2, 3, v)), [0], ("spikes",),
                  ok=finite((2, 2, 0))))
    c.append(Case("empty", "DelayedLinear.forward(spikes with batch = 0)",
                  lambda v: _delayed()(torch.ones(v, 3, 8)), [0], ("spikes",),
                  ok=finite((0, 2, 8))))
    c.append(Case("nonfinite", "DelayedLinear.set_delays(delays=·)",
                  lambda v: _set_delays(torch.full((2, 3), v)), [NAN, INF, -1.0, 5.0],
                  ("delays",)))
    c.append(Case("dtype", "DelayedLinear.set_delays(delays=·)", _set_delays,
                  [[[1.0] * 3] * 2, torch.ones(3, 2)], ("delays",)))
    # DelayedConv2d (DelayedConv1d shares the code)
    for arg in ("in_channels", "out_channels", "kernel_size", "max_delay", "stride",
                "dilation", "groups"):
        c.append(bad_count(f"DelayedConv2d({arg}=·)", lambda v, a=arg: _delayed_conv(**{a: v}),
                           (arg,)))
    c.append(bad_count("DelayedConv2d(padding=·)", lambda v: _delayed_conv(padding=v),
                       ("padding",), zero_ok=True))
    c.append(Case("count", "DelayedConv2d(max_delay=even)", lambda v: _delayed_conv(max_delay=v),
                  [4], ("max_delay",)))
    for arg, bad in (("version", ["max", "nope"]), ("padding_mode", ["mirror"]),
                     ("conv_method", ["nope"]), ("padding", ["full"]),
                     ("dtype", [torch.int64, torch.bfloat16])):
        c.append(Case("other", f"DelayedConv2d({arg}=·)",
                      lambda v, a=arg: _delayed_conv(**{a: v}), bad, (arg,)))
    c.append(nonfinite("DelayedConv2d.forward(spikes=·)",
                       lambda v: _delayed_conv()(inject(_current(2, 2, 4, 4, 6), v)),
                       ("spikes",)))
    c.append(Case("dtype", "DelayedConv2d.forward(spikes=·)", lambda v: _delayed_conv()(v),
                  [_current(2, 2, 4, 4, 6, dtype=F64), torch.ones(2, 2, 4, 4, 6,
                                                                  dtype=torch.int64)],
                  ("spikes",)))
    c.append(Case("other", "DelayedConv2d.forward(spikes with wrong channels)",
                  lambda v: _delayed_conv()(_current(2, v, 4, 4, 6)), [1, 3], ("spikes",)))
    c.append(Case("other", "DelayedConv2d.forward(spikes too small to pad)",
                  lambda v: _delayed_conv(padding=2, padding_mode="reflect")(
                      _current(1, 2, v, 4, 6)), [1, 2], ("padding",)))
    c.append(Case("empty", "DelayedConv2d.forward(spikes with T = 0)",
                  lambda v: _delayed_conv()(torch.ones(2, 2, 4, 4, v)), [0], ("spikes",),
                  ok=finite((2, 2, 4, 4, 0))))
    c.append(Case("empty", "DelayedConv2d.forward(spikes with batch = 0)",
                  lambda v: _delayed_conv()(torch.ones(v, 2, 4, 4, 6)), [0], ("spikes",),
                  ok=finite((0, 2, 4, 4, 6))))
    c.append(Case("nonfinite", "DelayedConv2d.set_delays(delays=·)",
                  lambda v: _delayed_conv().set_delays(torch.full((2, 2, 3, 3), v)),
                  [NAN, INF, -1.0, 5.0], ("delays",)))
    # DelayedRecurrentLIF
    for arg in ("num_neurons", "max_delay"):
        c.append(bad_count(f"DelayedRecurrentLIF({arg}=·)", lambda v, a=arg: _recurrent(**{a: v}),
                           (arg,)))
    c.append(Case("count", "DelayedRecurrentLIF(max_delay=even)",
                  lambda v: _recurrent(max_delay=v), [4], ("max_delay",)))
    c.append(Case("float", "DelayedRecurrentLIF(sigma=·)", lambda v: _recurrent(sigma=v),
                  [NAN, INF, -1.0, 0.1, True, "1"], ("sigma",)))
    c.append(Case("float", "DelayedRecurrentLIF(beta=·)", lambda v: _recurrent(beta=v),
                  BAD_OPEN_UNIT, ("beta",), BAD_UNIT_X))
    for arg, bad in (("version", ["max", "nope"]), ("reset", ["nope"]),
                     ("surrogate", ["nope"]), ("dtype", [torch.int64, torch.bfloat16])):
        c.append(Case("other", f"DelayedRecurrentLIF({arg}=·)",
                      lambda v, a=arg: _recurrent(**{a: v}), bad, (arg,)))
    c.append(nonfinite("DelayedRecurrentLIF.forward(current=·)",
                       lambda v: _recurrent()(inject(_current(2, 3, 8), v)), ("current",)))
    c.append(Case("dtype", "DelayedRecurrentLIF.forward(current=·)", lambda v: _recurrent()(v),
                  [_current(2, 3, 8, dtype=F64), torch.ones(2, 3, 8, dtype=torch.int64),
                   [[0.0]]], ("current",)))
    c.append(Case("other", "DelayedRecurrentLIF.forward(current with wrong neurons)",
                  lambda v: _recurrent()(_current(2, v, 8)), [2, 4], ("current",)))
    c.append(Case("empty", "DelayedRecurrentLIF.forward(current with T = 0)",
                  lambda v: _recurrent()(torch.ones(2, 3, v)), [0], ("current",),
                  ok=finite((2, 3, 0))))
    c.append(Case("empty", "DelayedRecurrentLIF.forward(current with batch = 0)",
                  lambda v: _recurrent()(torch.ones(v, 3, 8)), [0], ("current",),
                  ok=finite((0, 3, 8))))
    c.append(Case("nonfinite", "DelayedRecurrentLIF.set_delays(delays=·)",
                  lambda v: _recurrent().set_delays(torch.full((3, 3), v)),
                  [NAN, INF, -1.0, 5.0], ("delays",)))
    # Readout / readout_logits
    for arg in ("in_features", "out_features"):
        c.append(bad_count(f"Readout({arg}=·)",
                           lambda v, a=arg: snn.Readout(**{"in_features": 3, "out_features": 2,
                                                           a: v}), (arg,)))
    c.append(Case("float", "Readout(beta=·)", lambda v: snn.Readout(3, 2, v), BAD_UNIT,
                  ("beta",), BAD_UNIT_X))
    c.append(nonfinite("Readout.forward(spikes=·)",
                       lambda v: snn.Readout(3, 2)(inject(_current(2, 3, 8), v)), ("spikes",)))
    c.append(Case("dtype", "Readout.forward(spikes=·)", lambda v: snn.Readout(3, 2)(v),
                  [_current(2, 3, 8, dtype=F64), torch.ones(2, 3, 8, dtype=torch.int64)],
                  ("spikes",)))
    c.append(Case("other", "Readout.forward(spikes with wrong features)",
                  lambda v: snn.Readout(3, 2)(_current(2, v, 8)), [2, 4], ("spikes",)))
    c.append(Case("empty", "Readout.forward(spikes with T = 0)",
                  lambda v: snn.Readout(3, 2)(torch.ones(2, 3, v)), [0], ("spikes",),
                  ok=finite((2, 2, 0))))
    c.append(nonfinite("readout_logits(potentials=·)",
                       lambda v: snn.readout_logits(inject(_current(2, 3, 8), v)),
                       ("potentials",)))
    c.append(Case("dtype", "readout_logits(potentials=·)", lambda v: snn.readout_logits(v),
                  [[[1.0]], torch.ones(2, 3, dtype=torch.int64)], ("potentials",)))
    c.append(Case("other", "readout_logits(reduce=·)",
                  lambda v: snn.readout_logits(_current(2, 3, 8), v), ["median", None],
                  ("reduce",)))
    for reduce in ("sum", "mean", "max"):
        c.append(Case("empty", f"readout_logits(T = 0, reduce={reduce})",
                      lambda v, r=reduce: snn.readout_logits(torch.ones(2, 3, v), r), [0],
                      ("potentials",)))
    # delayed_coincidence
    for arg in ("n_samples", "n_classes", "n_channels", "max_delay", "length"):
        c.append(bad_count(f"delayed_coincidence({arg}=·)",
                           lambda v, a=arg: _coincidence(**{a: v}), (arg,)))
    c.append(Case("count", "delayed_coincidence(noise_spikes=·)",
                  lambda v: _coincidence(noise_spikes=v), BAD_COUNT0, ("noise_spikes",),
                  BAD_COUNT0_X))
    c.append(Case("other", "delayed_coincidence(pattern_seed=·)",
                  lambda v: _coincidence(pattern_seed=v), [2.5, "a", None, -1, 2**70],
                  ("pattern_seed",)))
    c.append(Case("other", "delayed_coincidence(generator=·)",
                  lambda v: _coincidence(generator=v), [0, "g"], ("generator",)))
    return c


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.cls}:{c.label}" for c in CASES])
@FUZZ
@given(data=st.data())
def test_bad_input_is_named_or_correct(case, data):
    value = data.draw(case.strategy(), label="value")
    result = case.run(value)
    assert result in ("ok", "named"), f"{case.label} <- {value!r}: {result}"


def test_known_cases_name_the_right_argument():
    # The examples: the wrong blame, NaN read as "no spike", and the position index.
    with pytest.raises(ValueError, match="in_features"):
        snn.DelayedLinear(0, 2, 5)
    with pytest.raises(ValueError, match="out_features"):
        snn.DelayedLinear(2, 0, 5)
    with pytest.raises(ValueError, match="current must be finite"):
        snn.lif(torch.tensor([[NAN, 2.0]]))
    with pytest.raises(ValueError, match="x must be finite"):
        snn.spike(torch.tensor([NAN]))


# -------------------------------------------------------- valid input: finite, right results


@settings(max_examples=15, deadline=None)
@given(beta=st.floats(0.0, 1.0), threshold=st.floats(0.05, 3.0),
       reset=st.sampled_from(["hard", "soft"]), shape=st.tuples(st.integers(0, 3),
                                                                st.integers(1, 3),
                                                                st.integers(0, 10)),
       seed=st.integers(0, 2**16))
def test_lif_spikes_are_binary_and_match_the_recursion(beta, threshold, reset, shape, seed):
    current = torch.rand(*shape, generator=torch.Generator().manual_seed(seed),
                         dtype=F64) * 2 - 0.5
    spikes = snn.lif(current, beta, threshold, reset=reset)
    assert spikes.shape == current.shape
    assert bool(((spikes == 0) | (spikes == 1)).all())
    u = torch.zeros(shape[:-1], dtype=F64)
    for t in range(shape[-1]):
        u = beta * u + current[..., t]
        s = (u >= threshold).to(F64)
        assert torch.equal(spikes[..., t], s)
        u = u * (1 - s) if reset == "hard" else u - threshold * s
    potentials = snn.leaky_integrate(current, beta)
    assert potentials.shape == current.shape and bool(torch.isfinite(potentials).all())


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 5), channels=st.integers(2, 4), classes=st.integers(2, 4),
       max_delay=st.integers(4, 9), extra=st.integers(0, 5), noise=st.integers(0, 3),
       seed=st.integers(0, 2**16))
def test_delayed_coincidence_shapes_and_one_spike_per_channel(n, channels, classes, max_delay,
                                                               extra, noise, seed):
    max_delay = max(max_delay, channels)
    length = 2 * max_delay + extra
    spikes, labels, offsets = snn.delayed_coincidence(
        n, n_channels=channels, n_classes=classes, length=length, max_delay=max_delay,
        noise_spikes=noise, generator=torch.Generator().manual_seed(seed))
    assert spikes.shape == (n, channels, length) and labels.shape == (n,)
    assert offsets.shape == (classes, channels)
    assert bool(((spikes == 0) | (spikes == 1)).all())
    if noise == 0:
        assert bool((spikes.sum(-1) == 1).all())


@settings(max_examples=8, deadline=None)
@given(max_delay=st.sampled_from([1, 3, 5, 7]), length=st.integers(1, 12),
       version=st.sampled_from(["v1", "gauss"]), seed=st.integers(0, 2**16))
def test_delayed_linear_integer_delays_shift_the_input(max_delay, length, version, seed):
    g = torch.Generator().manual_seed(seed)
    layer = snn.DelayedLinear(2, 2, max_delay, version=version)
    delays = torch.randint(0, max_delay, (2, 2), generator=g)
    layer.set_delays(delays.double())
    layer.conv.use_integer_taps()  # exact integer delays, whatever the version and σ
    x = torch.rand(3, 2, length, generator=g)
    out = layer(x)
    assert out.shape == (3, 2, length)
    w = layer.conv.weight.detach()[:, :, 0]
    expected = torch.zeros(3, 2, length)
    for i in range(2):
        for j in range(2):
            d = int(delays[i, j])
            if d < length:
                expected[:, i, d:] += w[i, j] * x[:, j, :length - d]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    import sys

    torch.set_num_threads(1)
    print_census(CASES, verbose="-v" in sys.argv)


@settings(max_examples=12, deadline=None)
@given(d=st.sampled_from([1, 2]), channels=st.sampled_from([(1, 1, 1), (2, 3, 1), (2, 2, 2)]),
       kernel=st.integers(1, 3), max_delay=st.sampled_from([1, 3, 5]),
       space=st.integers(1, 5), steps=st.integers(1, 7), stride=st.integers(1, 2),
       padding=st.integers(0, 2), dilation=st.integers(1, 2),
       mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
       fractional=st.booleans(), seed=st.integers(0, 2**16))
def test_delayed_conv_equals_shifted_dense_convolutions(d, channels, kernel, max_delay, space,
                                                        steps, stride, padding, dilation, mode,
                                                        fractional, seed):
    from tests.snn.test_delayed_conv import LAYERS, reference

    in_channels, out_channels, groups = channels
    assume(space + 2 * padding >= dilation * (kernel - 1) + 1)
    assume(mode != "reflect" or padding < space)
    assume(mode != "circular" or padding <= space)
    g = torch.Generator().manual_seed(seed)
    layer = LAYERS[d](in_channels, out_channels, kernel, max_delay, stride, padding,
                      dilation=dilation, groups=groups, padding_mode=mode, version="v0",
                      bias=True, dtype=F64)
    shape = layer.delays().shape
    delays = (torch.rand(shape, generator=g, dtype=F64) * (max_delay - 1) if fractional
              else torch.randint(0, max_delay, shape, generator=g).to(F64))
    layer.set_delays(delays)
    x = torch.rand(2, in_channels, *[space] * d, steps, generator=g, dtype=F64)
    out = layer(x)
    expected = reference(layer, x, delays)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
