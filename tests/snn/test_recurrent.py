"""DelayedRecurrentLIF against explicit reference loops (integer, fractional and Gaussian
recurrent delays), the feedforward LIF it reduces to, gradients through time, the DCLS
training helpers and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

import diffnum.interp as interp
import diffnum.snn as snn
from diffnum.snn import _neurons

F64 = torch.float64
V1_SCALE = 1 / (1 + 1e-7)  # v1's normalization Z = Σ_j Φ + 1e-7 = 1 + 1e-7 for one tap


def reference_integer(current, weight, delays, beta, threshold=1.0, reset="hard"):
    """The definition, one synapse at a time: I_i[t] = X_i[t] + Σ_j v_ij S_j[t − 1 − e_ij]
    (S = 0 before the first step), then the LIF; returns (spikes, potentials before reset)."""
    batch, n, steps = current.shape
    S = torch.zeros_like(current)
    V = torch.zeros_like(current)
    u = torch.zeros(batch, n, dtype=current.dtype)
    for t in range(steps):
        rec = torch.zeros(batch, n, dtype=current.dtype)
        for i in range(n):
            for j in range(n):
                k = t - 1 - int(delays[i, j])
                if k >= 0:
                    rec[:, i] += weight[i, j] * S[:, j, k]
        v = beta * u + (current[..., t] + rec)
        s = (v >= threshold).to(current.dtype)
        S[..., t], V[..., t] = s, v
        u = v * (1 - s) if reset == "hard" else v - threshold * s
    return S, V


def reference_taps(current, taps, beta, threshold=1.0, spike=None):
    """The same loop with a kernel over delays, taps[i, j, e] (e = 0 … max_delay − 1):
    I_i[t] = X_i[t] + Σ_j Σ_e taps[i, j, e] S_j[t − 1 − e]; hard reset. ``spike`` (default
    the Heaviside step) lets a test run the loop on snn.spike (surrogate gradients)."""
    batch, n, steps = current.shape
    spike = spike or (lambda x: (x >= 0).to(x.dtype))
    S, V = [], []
    u = current.new_zeros(batch, n)
    for t in range(steps):
        rec = current.new_zeros(batch, n)
        for e in range(taps.shape[-1]):
            if t - 1 - e >= 0:
                rec = rec + S[t - 1 - e] @ taps[:, :, e].T
        v = beta * u + (current[..., t] + rec)
        s = spike(v - threshold)
        S.append(s)
        V.append(v)
        u = v * (1 - s)
    return torch.stack(S, -1), torch.stack(V, -1)


def _layer(n=4, max_delay=5, version="v1", seed=0, scale=1.5, **kwargs):
    g = torch.Generator().manual_seed(seed)
    layer = snn.DelayedRecurrentLIF(n, max_delay, version=version, dtype=F64, **kwargs)
    with torch.no_grad():  # strong recurrent weights of both signs: the recurrence matters
        layer.recurrent.weight.uniform_(-scale, scale, generator=g)
    return layer, g


def _current(g, *shape):
    return torch.rand(*shape, generator=g, dtype=F64) * 1.1


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("mode", ["v1", "gauss-integer-taps"])
def test_integer_delays_equal_the_explicit_loop(mode, reset):
    version = mode.split("-")[0]
    layer, g = _layer(version=version, beta=0.7, threshold=0.9, reset=reset)
    delays = torch.randint(0, 5, (4, 4), generator=g).to(F64)
    delays[0, 1], delays[1, 0] = 0.0, 4.0  # the shortest (one step) and the longest delay
    layer.set_delays(delays)
    torch.testing.assert_close(layer.delays(), delays, rtol=0, atol=0)
    if mode.endswith("integer-taps"):  # gauss at σ = 2.5 is no shift: round to taps
        layer.recurrent.use_integer_taps()
    x = _current(g, 3, 4, 30)
    spikes, potentials = layer(x, return_potentials=True)
    weight = layer.weight.detach() * (V1_SCALE if version == "v1" else 1.0)
    expected_s, expected_v = reference_integer(x, weight, delays, 0.7, 0.9, reset)
    assert torch.equal(spikes, expected_s)
    torch.testing.assert_close(potentials, expected_v, rtol=1e-12, atol=1e-12)
    assert 0 < spikes.sum() < spikes.numel()  # firing and silence, so the delays are read
    assert not torch.equal(spikes, snn.lif(x, 0.7, 0.9, reset=reset))  # recurrence matters
    unbatched = layer(x[1], return_potentials=True)
    torch.testing.assert_close(unbatched[0], spikes[1], rtol=0, atol=0)
    torch.testing.assert_close(unbatched[1], potentials[1], rtol=0, atol=0)


def test_the_shortest_recurrent_delay_is_one_step():
    # Neuron 0 fires at t = 2 only; its synapse onto neuron 1 (delay e) drives neuron 1 to
    # threshold exactly 1 + e steps later: never in the same step.
    for e in range(3):
        layer = snn.DelayedRecurrentLIF(2, 3, version="v1", beta=0.1, threshold=0.5, dtype=F64)
        with torch.no_grad():
            layer.recurrent.weight.zero_()
            layer.recurrent.weight[1, 0] = 1.0
        layer.set_delays(torch.full((2, 2), float(e), dtype=F64))
        x = torch.zeros(1, 2, 8, dtype=F64)
        x[0, 0, 2] = 1.0
        spikes = layer(x)
        assert spikes[0, 0].nonzero().flatten().tolist() == [2]
        assert spikes[0, 1].nonzero().flatten().tolist() == [3 + e]


@pytest.mark.parametrize("learn_beta", [False, True])
@pytest.mark.parametrize("version", ["v1", "gauss"])
def test_zero_recurrent_weights_is_the_feedforward_lif(version, learn_beta):
    layer, g = _layer(version=version, beta=0.6, reset="soft", surrogate="sigmoid",
                      learn_beta=learn_beta)
    with torch.no_grad():
        layer.recurrent.weight.zero_()
        if learn_beta:
            layer.neurons.beta_logit.uniform_(-2, 2, generator=g)  # one leak per neuron
    x = _current(g, 2, 4, 25)
    beta = layer.neurons.leak()
    assert torch.equal(layer(x), snn.lif(x, beta, reset="soft", surrogate="sigmoid"))
    assert layer(x).sum() > 0


def _interpolation_taps(weight, delays, max_delay, version, sigma=None):
    """The recurrent kernel by delay, written from the versions' definitions: v1 splits a
    delay n + f as (1 − f, f) over delays (n, n + 1) (÷ 1 + 1e-7); gauss spreads it as
    exp(−(k − e)²/2σ²) over k = 0 … max_delay − 1, normalized to sum 1 (+ 1e-7)."""
    n = weight.shape[0]
    taps = torch.zeros(n, n, max_delay, dtype=F64)
    k = torch.arange(max_delay, dtype=F64)
    for i in range(n):
        for j in range(n):
            e = float(delays[i, j])
            if version == "v1":
                lo = math.floor(e)
                taps[i, j, lo] += (1 - (e - lo)) * weight[i, j] * V1_SCALE
                if e - lo:
                    taps[i, j, lo + 1] += (e - lo) * weight[i, j] * V1_SCALE
            else:
                phi = torch.exp(-0.5 * ((k - e) / sigma) ** 2)
                taps[i, j] = weight[i, j] * phi / (phi.sum() + 1e-7)
    return taps


@pytest.mark.parametrize("version, sigma", [("v1", None), ("gauss", 0.8), ("gauss", None)])
def test_fractional_delays_read_the_interpolated_past(version, sigma):
    layer, g = _layer(n=3, max_delay=7, version=version, sigma=sigma, beta=0.5)
    delays = torch.rand(3, 3, generator=g, dtype=F64) * 6
    delays[0, 0], delays[1, 2] = 6.0, 0.0  # both ends of the range, exactly
    layer.set_delays(delays)
    weight = layer.weight.detach()
    taps = _interpolation_taps(weight, delays, 7, version, sigma if sigma else 7 / 2)
    torch.testing.assert_close(layer.delay_kernel().detach(), taps, rtol=1e-12, atol=1e-12)
    x = _current(g, 2, 3, 24)
    spikes, potentials = layer(x, return_potentials=True)
    expected_s, expected_v = reference_taps(x, taps, 0.5)
    assert torch.equal(spikes, expected_s) and spikes.sum() > 0
    torch.testing.assert_close(potentials, expected_v, rtol=1e-12, atol=1e-12)


class _SmoothSpike:
    """A smooth stand-in for the Heaviside spike (a steep sigmoid) so that finite
    differences see what autograd sees: gradcheck then checks backpropagation through
    time — ring buffer, reset, leak, kernel — end to end."""

    @staticmethod
    def apply(x, kind, alpha):
        return torch.sigmoid(4.0 * x)


@pytest.mark.parametrize("version", ["v1", "gauss"])
def test_gradcheck_through_time_with_smooth_spikes(version, monkeypatch):
    monkeypatch.setattr(_neurons, "_Spike", _SmoothSpike)
    layer, g = _layer(n=2, max_delay=3, version=version, sigma=0.9 if version == "gauss"
                      else None, learn_beta=True, scale=1.0)
    # Fractional delays away from the bilinear kinks at integers.
    delays = (torch.randint(0, 2, (2, 2), generator=g) + 0.2
              + 0.6 * torch.rand(2, 2, generator=g, dtype=F64)).requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()
    logit = torch.tensor([0.3, -0.4], dtype=F64, requires_grad=True)
    x = _current(g, 2, 2, 7).requires_grad_()
    params = [x, weight, delays, logit]
    if version == "gauss":
        params.append(layer.recurrent.SIG.detach().clone().requires_grad_())

    def fn(inp, w, dl, lg, sig=None):
        P = ((layer.max_delay - 1) - dl - layer.max_delay // 2).unsqueeze(0).unsqueeze(-1)
        state = {"recurrent.weight": w.unsqueeze(-1), "recurrent.P": P,
                 "neurons.beta_logit": lg}
        if sig is not None:
            state["recurrent.SIG"] = sig
        spikes, potentials = torch.func.functional_call(layer, state, (inp,),
                                                        {"return_potentials": True})
        return spikes, potentials

    assert torch.autograd.gradcheck(fn, tuple(params))


def test_surrogate_backprop_equals_the_reference_loop():
    # With the real spikes (Heaviside forward, ATan surrogate backward) the layer's gradients
    # — recurrent weights, positions, σ, leak, input — equal autograd through the plain loop
    # that reads S[t − 1 − e] from the stored spikes.
    layer, g = _layer(n=3, max_delay=5, version="gauss", learn_beta=True)
    interp.set_sigma(layer, 1.2, learnable=True)
    x = _current(g, 2, 3, 20).requires_grad_()
    target = torch.rand(2, 3, 20, generator=g, dtype=F64)

    def loss_grads(run):
        layer.zero_grad()
        x.grad = None
        spikes, potentials = run()
        ((potentials - target).square().sum() + spikes.sum()).backward()
        return [p.grad.clone() for p in (layer.recurrent.weight, layer.recurrent.P,
                                         layer.recurrent.SIG, layer.neurons.beta_logit, x)]

    ours = loss_grads(lambda: layer(x, return_potentials=True))
    theirs = loss_grads(lambda: reference_taps(x, layer.delay_kernel(), layer.neurons.leak(),
                                               spike=snn.spike))
    for a, b in zip(ours, theirs):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_training_moves_a_recurrent_delay_to_the_target_lag():
    # Neuron 0 fires once, at t = 2; neuron 1 only hears it through the recurrent synapse.
    # Maximizing neuron 1's potential at t = 9 must pull that delay from 1 to 9 − 2 − 1 = 6.
    torch.manual_seed(0)
    layer = snn.DelayedRecurrentLIF(2, 9, version="gauss", sigma=1.5, beta=0.2,
                                    threshold=0.5, dtype=F64)
    with torch.no_grad():
        layer.recurrent.weight.copy_(torch.tensor([[[0.0], [0.0]], [[0.4], [0.0]]]))
    layer.set_delays(torch.ones(2, 2, dtype=F64))
    x = torch.zeros(1, 2, 12, dtype=F64)
    x[0, 0, 2] = 1.0
    opt = torch.optim.Adam([layer.recurrent.P], lr=0.2)
    for _ in range(40):
        loss = -layer(x, return_potentials=True)[1][0, 1, 9]
        opt.zero_grad()
        loss.backward()
        opt.step()
        layer.recurrent.clamp_parameters()
    assert abs(float(layer.delays()[1, 0]) - 6.0) < 0.5


def test_sigma_schedule_rounding_and_parameter_groups_reach_the_recurrent_delays():
    torch.manual_seed(0)
    model = torch.nn.Sequential(snn.DelayedLinear(3, 4, 5, dtype=F64),
                                snn.DelayedRecurrentLIF(4, 7, dtype=F64))
    recurrent = model[1].recurrent
    assert recurrent in interp.dcls_layers(model)
    assert torch.allclose(recurrent.SIG, torch.full_like(recurrent.SIG, 3.5 - 0.27))
    assert interp.SigmaSchedule(3.5, 0.5, 10).apply(model, 10) == 0.5
    assert torch.allclose(recurrent.SIG, torch.full_like(recurrent.SIG, 0.5 - 0.27))
    assert interp.set_sigma(model, 1.0, learnable=True) == 2 and recurrent.SIG.requires_grad
    groups = interp.parameter_groups(model, 1e-3, position_lr_scale=10.0)
    spacing = {id(p) for p in groups[1]["params"]}
    assert {id(recurrent.P), id(recurrent.SIG)} <= spacing
    assert id(recurrent.weight) in {id(p) for p in groups[0]["params"]}
    # Rounding every layer: the recurrent delays become the integer ones of the definition.
    with torch.no_grad():
        recurrent.P.uniform_(-5, 5)  # some outside the support: clamped first
    interp.round_to_integer_taps(model)
    delays = model[1].delays()
    assert torch.equal(delays, delays.round()) and bool(((delays >= 0) & (delays <= 6)).all())
    x = (torch.rand(2, 3, 25, dtype=F64) < 0.5).to(F64)
    current = model[0](x)
    expected, _ = reference_integer(current, model[1].weight.detach(), delays, 0.5)
    assert torch.equal(model(x), expected)


def test_float32_agrees_with_float64_and_empty_inputs():
    layer64, g = _layer(version="gauss")
    layer32 = snn.DelayedRecurrentLIF(4, 5)
    layer32.load_state_dict(layer64.state_dict())
    x = _current(g, 2, 4, 20)
    s64, v64 = layer64(x, return_potentials=True)
    s32, v32 = layer32(x.float(), return_potentials=True)
    assert s32.dtype == v32.dtype == torch.float32
    assert torch.equal(s32.double(), s64)
    torch.testing.assert_close(v32.double(), v64, rtol=1e-5, atol=1e-5)
    assert layer32(torch.zeros(2, 4, 0)).shape == (2, 4, 0)
    assert layer32(torch.zeros(0, 4, 6)).shape == (0, 4, 6)
    assert [t.shape for t in layer32(torch.zeros(4, 0), return_potentials=True)] == [(4, 0)] * 2
    assert "4, max_delay=5, version='gauss'" in repr(layer32)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_neurons=0), ValueError, "num_neurons"),
    (dict(num_neurons=2.0), TypeError, "num_neurons"),
    (dict(max_delay=4), ValueError, "max_delay must be odd.*got 4"),
    (dict(max_delay=0), ValueError, "max_delay"),
    (dict(version="max"), ValueError, "version must be one of"),
    (dict(sigma=1.0, version="v1"), ValueError, "sigma is only used by version='gauss'"),
    (dict(sigma=0.1), ValueError, "sigma must be >= 0.27"),
    (dict(beta=1.5), ValueError, "beta"),
    (dict(threshold=0.0), ValueError, "threshold"),
    (dict(reset="zero"), ValueError, "reset"),
    (dict(surrogate="relu"), ValueError, "surrogate"),
    (dict(learn_beta="yes"), TypeError, "learn_beta must be a bool"),
    (dict(dtype=torch.float16), TypeError, "dtype must be None, torch.float32 or torch.float64"),
])
def test_bad_constructor_arguments_raise_by_name(kwargs, error, match):
    args = dict(num_neurons=3, max_delay=5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        snn.DelayedRecurrentLIF(args.pop("num_neurons"), args.pop("max_delay"), **args)


def test_bad_forward_and_delay_arguments_raise_by_name():
    layer = snn.DelayedRecurrentLIF(3, 5)
    with pytest.raises(ValueError, match=r"current must have shape \(batch, 3, time\) or "
                                         r"\(3, time\), got \(2, 4, 6\)"):
        layer(torch.rand(2, 4, 6))
    with pytest.raises(ValueError, match="current must have shape"):
        layer(torch.rand(6))
    with pytest.raises(TypeError, match="current must have the layer's dtype"):
        layer(torch.rand(2, 3, 6, dtype=F64))
    with pytest.raises(TypeError, match="current must be float32 or float64"):
        layer(torch.ones(2, 3, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="current must be finite"):
        layer(torch.full((2, 3, 6), float("nan")))
    with pytest.raises(TypeError, match="return_potentials must be a bool"):
        layer(torch.rand(2, 3, 6), return_potentials=1)
    with pytest.raises(ValueError, match=r"delays must have shape \(3, 3\)"):
        layer.set_delays(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"delays must lie in \[0, 4\]"):
        layer.set_delays(torch.full((3, 3), 4.5))
