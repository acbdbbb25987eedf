"""DelayedConv1d/2d against an explicit per-synapse reference (dense convolutions of the
input shifted in time), fractional delays, gradcheck, streaming, bad arguments."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import diffnum.snn as snn

F64 = torch.float64
LAYERS = {1: snn.DelayedConv1d, 2: snn.DelayedConv2d}
DENSE = {1: nn.Conv1d, 2: nn.Conv2d}
V1_SCALE = 1 / (1 + 1e-7)  # v1's normalization Z = Σ_j Φ + 1e-7 = 1 + 1e-7 for one tap


def shift(x: torch.Tensor, d: int) -> torch.Tensor:
    """x[..., t − d], zero before the first step."""
    out = torch.zeros_like(x)
    if d < x.shape[-1]:
        out[..., d:] = x[..., :x.shape[-1] - d]
    return out


def reference(layer, x: torch.Tensor, delays: torch.Tensor, scale: float = 1.0
              ) -> torch.Tensor:
    """Σ over delays δ of a dense ``nn.ConvNd`` (applied over space, time moved to the
    batch) to the input shifted in time by δ, whose kernel holds the weights of the synapses
    (o, c, tap) with that delay — a fractional delay n + f puts (1 − f)·w at δ = n and f·w
    at δ = n + 1 (linear interpolation of the two neighbouring shifts)."""
    n = layer.spatial_ndim
    weight = layer.weight.detach() * scale  # (O, C/g, *k)
    batch, channels, *space, steps = x.shape
    kernels: dict[int, torch.Tensor] = {}
    for synapse in itertools.product(*map(range, weight.shape)):  # (o, c, *tap)
        d = float(delays[synapse])
        lo = int(d // 1)
        for delay, share in ((lo, 1 - (d - lo)), (lo + 1, d - lo)):
            if share:
                kernels.setdefault(delay, torch.zeros_like(weight))[synapse] += (
                    share * weight[synapse])
    dense = DENSE[n](channels, layer.out_channels, layer.kernel_size, layer.stride,
                     layer.padding, layer.dilation, layer.groups, bias=False,
                     padding_mode=layer.padding_mode, dtype=x.dtype)
    total = 0.0
    for delay, kernel in kernels.items():
        flat = shift(x, delay).movedim(-1, 1).reshape(batch * steps, channels, *space)
        with torch.no_grad():
            dense.weight.copy_(kernel)
            y = dense(flat)
        total = total + y.reshape(batch, steps, *y.shape[1:]).movedim(1, -1)
    if layer.bias is not None:
        total = total + layer.bias.detach().reshape(-1, *[1] * (n + 1))
    return total


def _random_delays(layer, generator, integer: bool) -> torch.Tensor:
    shape = layer.delays().shape
    if integer:
        return torch.randint(0, layer.max_delay, shape, generator=generator).to(F64)
    return torch.rand(shape, generator=generator, dtype=F64) * (layer.max_delay - 1)


# (kernel_size, stride, padding, padding_mode, dilation, groups, bias)
CONFIGS = [
    (3, 1, 0, "zeros", 1, 1, False),
    (3, 2, 1, "zeros", 1, 2, True),
    (2, 1, "same", "reflect", 2, 1, True),
    (3, 1, 2, "circular", 1, 2, False),
    (3, 2, 1, "replicate", 1, 1, True),
]


# Every configuration on v0; v1 and the integer taps of gauss on two of them.
MODES = ([("v0", c) for c in CONFIGS]
         + [(m, CONFIGS[i]) for m in ("v1", "gauss-integer-taps") for i in (1, 2)])


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("mode, config", MODES)
def test_integer_delays_equal_shifted_dense_convolutions(d, config, mode):
    kernel_size, stride, padding, padding_mode, dilation, groups, bias = config
    version = mode.split("-")[0]
    g = torch.Generator().manual_seed(d)
    layer = LAYERS[d](2, 2, kernel_size, 5, stride, padding, dilation=dilation, groups=groups,
                      padding_mode=padding_mode, version=version, bias=bias, dtype=F64)
    delays = _random_delays(layer, g, integer=True)
    layer.set_delays(delays)
    torch.testing.assert_close(layer.delays(), delays, rtol=0, atol=0)
    if mode.endswith("integer-taps"):  # gauss at σ = 2.5 is no shift: round to taps
        layer.conv.use_integer_taps()
    x = torch.rand(2, 2, *[5] * d, 7, generator=g, dtype=F64)
    out = layer(x)
    expected = reference(layer, x, delays, V1_SCALE if version == "v1" else 1.0)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x[1]), expected[1], rtol=1e-12, atol=1e-12)  # unbatched


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("config", CONFIGS[1:3])
@pytest.mark.parametrize("version", ["v0", "v1"])
def test_fractional_delays_interpolate_the_neighbouring_shifts(d, config, version):
    kernel_size, stride, padding, padding_mode, dilation, groups, bias = config
    g = torch.Generator().manual_seed(10 + d)
    layer = LAYERS[d](2, 2, kernel_size, 7, stride, padding, dilation=dilation, groups=groups,
                      padding_mode=padding_mode, version=version, bias=bias, dtype=F64)
    delays = _random_delays(layer, g, integer=False)
    delays.view(-1)[0] = 6.0  # the largest delay, exactly
    delays.view(-1)[1] = 0.0
    layer.set_delays(delays)
    x = torch.rand(1, 2, *[5] * d, 8, generator=g, dtype=F64)
    expected = reference(layer, x, delays, V1_SCALE if version == "v1" else 1.0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("version", ["v0", "gauss"])
def test_gradcheck_weights_delays_input(d, version):
    g = torch.Generator().manual_seed(20 + d)
    layer = LAYERS[d](2, 1, 2, 3, padding=1, version=version, sigma=0.8 if version == "gauss"
                      else None, dtype=F64)
    # Fractional delays, away from the bilinear kinks at integers.
    delays = (torch.randint(0, 2, layer.delays().shape, generator=g)
              + 0.2 + 0.6 * torch.rand(layer.delays().shape, generator=g)).to(F64)
    weight = layer.weight.detach().clone().requires_grad_()
    delays.requires_grad_()
    x = torch.rand(1, 2, *[3] * d, 4, generator=g, dtype=F64, requires_grad=True)

    def fn(inp, w, dl):
        P = ((layer.max_delay - 1) - dl - layer.max_delay // 2).unsqueeze(0).unsqueeze(-1)
        params = {"conv.weight": w.unsqueeze(-1), "conv.P": P}
        return torch.func.functional_call(layer, params, (inp,))

    # 2-D: fast mode (random projections vᵀJu against finite differences) keeps it short.
    assert torch.autograd.gradcheck(fn, (x, weight, delays), fast_mode=d == 2)
    # ... and the layer's own parameters receive those gradients.
    layer.set_delays(delays.detach())
    layer(x).square().sum().backward()
    assert layer.conv.weight.grad.abs().sum() > 0 and layer.conv.P.grad.abs().sum() > 0


def test_causal_with_gaussian_delays():
    layer = snn.DelayedConv2d(2, 3, 3, 9, padding=1, dtype=F64)  # σ = 4.5: wide taps
    x = torch.rand(1, 2, 4, 4, 20, dtype=F64)
    later = x.clone()
    later[..., 12:] = torch.rand(1, 2, 4, 4, 8, dtype=F64)
    a, b = layer(x), layer(later)
    torch.testing.assert_close(a[..., :12], b[..., :12], rtol=0, atol=0)
    assert (a[..., 12:] - b[..., 12:]).abs().max() > 1e-3  # the change reaches the output


@pytest.mark.parametrize("d", [1, 2])
def test_stream_equals_the_integer_tap_layer(d):
    g = torch.Generator().manual_seed(30 + d)
    layer = LAYERS[d](2, 4, 3, 5, 2, 1, groups=2, padding_mode="reflect", bias=True,
                      dtype=F64)
    with torch.no_grad():
        layer.conv.P.uniform_(-2, 2, generator=g)
        layer.conv.bias.uniform_(-1, 1, generator=g)
    stream = layer.stream()
    x = torch.rand(2, 2, *[7] * d, 12, generator=g, dtype=F64)
    online = torch.stack([stream.step(x[..., t]) for t in range(12)], -1)
    layer.conv.round_positions()
    layer.conv.use_integer_taps()
    torch.testing.assert_close(online, layer(x), rtol=1e-12, atol=1e-12)
    stream.reset()
    torch.testing.assert_close(stream.step(x[..., 0]), layer(x)[..., 0], rtol=1e-12,
                               atol=1e-12)
    with pytest.raises(ValueError, match="spikes must keep the first step's shape"):
        stream.step(x[:1, ..., 0])
    with pytest.raises(ValueError, match="spikes must be a tensor of shape"):
        stream.step(x)
    with pytest.raises(TypeError, match="layer must be a DelayedConv1d or DelayedConv2d"):
        snn.DelayedConvStream(snn.DelayedLinear(2, 2, 3))


def test_empty_time_and_batch_and_repr():
    layer = snn.DelayedConv2d(2, 3, 3, 5, stride=2, padding=1)
    assert layer(torch.rand(2, 2, 7, 6, 0)).shape == (2, 3, 4, 3, 0)
    assert layer(torch.rand(0, 2, 7, 6, 4)).shape == (0, 3, 4, 3, 4)
    assert "max_delay=5" in repr(layer) and layer.weight.shape == (3, 2, 3, 3)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kernel_size=0), ValueError, r"kernel_size must be positive.*got \(0,\)"),
    (dict(kernel_size=(3, 3)), ValueError, "kernel_size must be an int or a sequence of 1"),
    (dict(max_delay=4), ValueError, "max_delay must be odd.*got 4"),
    (dict(max_delay=0), ValueError, "max_delay"),
    (dict(stride=0), ValueError, "stride must be positive"),
    (dict(padding=-1), ValueError, "padding must be non-negative"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(padding="same", stride=2), ValueError, "padding='same' needs stride 1"),
    (dict(padding_mode="mirror"), ValueError, "padding_mode"),
    (dict(version="max"), ValueError, "version"),
    (dict(dtype=torch.int64), TypeError, "dtype must be None, torch.float32 or torch.float64"),
    (dict(sigma=1.0, version="v0"), ValueError, "sigma is only used by version='gauss'"),
    (dict(groups=2, in_channels=3), ValueError, "divisible by groups"),
    (dict(out_channels=0), ValueError, "out_channels"),
])
def test_bad_constructor_arguments_raise_by_name(kwargs, error, match):
    args = dict(in_channels=2, out_channels=4, kernel_size=3, max_delay=5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        snn.DelayedConv1d(args.pop("in_channels"), args.pop("out_channels"),
                          args.pop("kernel_size"), args.pop("max_delay"), **args)


def test_bad_forward_and_delay_arguments_raise_by_name():
    layer = snn.DelayedConv2d(2, 4, 3, 5, padding=2, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"spikes must have shape \(batch, 2, space, space, "
                                         r"time\).*got \(1, 3, 6, 6, 8\)"):
        layer(torch.rand(1, 3, 6, 6, 8))
    with pytest.raises(ValueError, match="spikes must have shape"):
        layer(torch.rand(1, 2, 6, 8))
    with pytest.raises(TypeError, match="spikes must have the layer's dtype"):
        layer(torch.rand(1, 2, 6, 6, 8, dtype=F64))
    with pytest.raises(ValueError, match="spikes must be finite"):
        layer(torch.full((1, 2, 6, 6, 8), float("inf")))
    with pytest.raises(ValueError, match="padding must be smaller than the input's size 2"):
        layer(torch.rand(1, 2, 2, 6, 8))
    with pytest.raises(ValueError, match=r"delays must have shape \(4, 2, 3, 3\)"):
        layer.set_delays(torch.zeros(4, 2, 3))
    with pytest.raises(ValueError, match=r"delays must lie in \[0, 4\]"):
        layer.set_delays(torch.full((4, 2, 3, 3), 4.5))
