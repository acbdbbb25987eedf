"""DclsTranspose1d/2d: torch's transposed convolution with the DCLS kernel, the adjoint of
Dcls1d/2d with the same parameters, gradcheck, integer taps, bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diffnum.interp as interp
from tests.interp._helpers import rel_err

F64 = torch.float64
LAYERS = {1: (interp.Dcls1d, interp.DclsTranspose1d, nn.ConvTranspose1d),
          2: (interp.Dcls2d, interp.DclsTranspose2d, nn.ConvTranspose2d)}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d}


def _spread(layer: nn.Module, seed: int) -> None:
    """Positions anywhere in the support (not the init's cluster near the centre), and
    non-trivial widths, so that a layout or axis mix-up changes the result."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, s in enumerate(layer.dilated_kernel_size):
            lim = s // 2
            layer.P[i].copy_((torch.rand(layer.P[i].shape, generator=g, dtype=F64) * 2 - 1)
                             * lim)
        if layer.SIG is not None:
            layer.SIG.copy_(torch.rand(layer.SIG.shape, generator=g, dtype=F64) * 0.8)


# (stride, padding, output_padding, dilation, groups, support)
CONFIGS = [(1, 0, 0, 1, 1, 5), (2, 1, 1, 1, 2, 5), (3, 2, 2, 2, 1, (3, 7)), (2, 0, 1, 3, 2, 3)]


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("version", ["gauss", "v1", "v0", "max"])
@pytest.mark.parametrize("config", CONFIGS)
def test_equals_conv_transpose_with_the_constructed_kernel(d, version, config):
    stride, padding, output_padding, dilation, groups, support = config
    if d == 1 and isinstance(support, tuple):
        support = support[1]
    layer = LAYERS[d][1](4, 6, 3, stride, padding, support, groups, True, version=version,
                         output_padding=output_padding, dilation=dilation, dtype=F64)
    _spread(layer, seed=d)
    assert layer.weight.shape == (4, 6 // groups, 3)  # nn.ConvTransposeNd's (in, out/g, ...)
    assert layer.P.shape == (d, 4, 6 // groups, 3)
    y = torch.randn(2, 4, *[5] * d, generator=torch.Generator().manual_seed(3), dtype=F64)
    kernel = interp.construct_kernel(layer.weight, layer.P, layer.SIG,
                                     layer.dilated_kernel_size, version)
    out = layer(y)
    expected = CONV_T[d](y, kernel, layer.bias, stride, padding, output_padding, groups,
                         dilation)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # ... and torch's module with that kernel as its weight (its size arithmetic included).
    module = LAYERS[d][2](4, 6, tuple(kernel.shape[2:]), stride, padding, output_padding,
                          groups, True, dilation, dtype=F64)
    with torch.no_grad():
        module.weight.copy_(kernel)
        module.bias.copy_(layer.bias)
    torch.testing.assert_close(out, module(y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(y[0]), module(y[0]), rtol=1e-12, atol=1e-12)  # unbatched


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("version", ["gauss", "v1"])
@pytest.mark.parametrize("config", CONFIGS)
def test_is_the_adjoint_of_dcls_with_the_same_parameters(d, version, config):
    stride, padding, _, dilation, groups, support = config
    if d == 1 and isinstance(support, tuple):
        support = support[1]
    conv_cls, transpose_cls, _ = LAYERS[d]
    down = conv_cls(4, 6, 3, stride, padding, support, groups, False, version=version,
                    dilation=dilation, dtype=F64)
    up = transpose_cls(6, 4, 3, stride, padding, support, groups, False, version=version,
                       dilation=dilation, dtype=F64)
    _spread(down, seed=10 + d)
    up.load_state_dict(down.state_dict())  # the same tensors: weight (6, 4/g, 3), P, SIG
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, *[13] * d, generator=g, dtype=F64, requires_grad=True)
    fx = down(x)
    y = torch.randn(fx.shape, generator=g, dtype=F64)
    uy = up(y, output_size=x.shape)  # 13 may leave a stride remainder: output_size restores it
    assert uy.shape == x.shape
    inner_down = (fx * y).sum()
    inner_up = (x.detach() * uy).sum()
    assert abs(inner_down.item() - inner_up.item()) <= 1e-12 * abs(inner_down.item())
    # Elementwise: the vector-Jacobian product of Dcls is DclsTranspose.
    (vjp,) = torch.autograd.grad(inner_down, x)
    assert rel_err(uy, vjp) < 1e-12


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("version", ["gauss", "v1"])
def test_gradcheck_input_weight_positions_widths(d, version):
    layer = LAYERS[d][1](2, 2, 2, 2, 1, 3, bias=True, version=version, output_padding=1,
                         dtype=F64)
    _spread(layer, seed=20 + d)
    with torch.no_grad():  # fractional positions: the v1 hat has a kink at integers
        layer.P.copy_(layer.P.round().clamp(-0.5, 0.5) + 0.3)
    names = ["weight", "P", "bias"] + (["SIG"] if layer.SIG is not None else [])
    y = torch.randn(1, 2, *[3] * d, generator=torch.Generator().manual_seed(5), dtype=F64,
                    requires_grad=True)
    leaves = [getattr(layer, n).detach().clone().requires_grad_() for n in names]

    def fn(inp, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (inp,))

    assert torch.autograd.gradcheck(fn, (y, *leaves))


def test_integer_taps_and_attributes():
    layer = interp.DclsTranspose2d(3, 4, 4, stride=2, dilated_kernel_size=5, version="v1",
                                   output_padding=1, dtype=F64)
    _spread(layer, seed=30)
    assert layer.transposed and layer.output_padding == (1, 1) and layer.kernel_size == (5, 5)
    assert "output_padding=(1, 1)" in repr(layer)
    layer.round_positions()
    layer.use_integer_taps()
    y = torch.randn(1, 3, 4, 4, dtype=F64)
    kernel = layer.integer_taps.kernel()
    expected = F.conv_transpose2d(y, kernel, layer.bias, 2, 0, 1)
    torch.testing.assert_close(layer(y), expected, rtol=1e-12, atol=1e-12)
    layer(y).sum().backward()  # integer-tap mode trains the weights only
    assert layer.weight.grad is not None and layer.P.grad is None


def test_output_size_selects_the_output_padding():
    layer = interp.DclsTranspose1d(2, 2, 2, stride=3, dilated_kernel_size=3, dtype=F64)
    y = torch.randn(1, 2, 4, dtype=F64)
    assert [layer(y, output_size=[n]).shape[-1] for n in (12, 13, 14)] == [12, 13, 14]
    torch.testing.assert_close(layer(y, output_size=(1, 2, 14))[..., :12], layer(y)[..., :12])
    for bad in (11, 15):
        with pytest.raises(ValueError, match=r"output_size must lie between \(12,\) and \(14,\)"):
            layer(y, output_size=[bad])
    with pytest.raises(TypeError, match="output_size"):
        layer(y, output_size=13)


@pytest.mark.parametrize("kwargs, match", [
    (dict(padding="same"), "padding must be an int.*got 'same'"),
    (dict(padding_mode="reflect"), "padding_mode"),
    (dict(conv_method="fft"), "conv_method"),
    (dict(output_padding=2, stride=2), r"output_padding must be smaller than stride or "
                                       r"dilation.*output_padding=\(2, 2\)"),
    (dict(output_padding=-1), "output_padding must be non-negative"),
    (dict(output_padding=(1,)), "output_padding must be an int or a sequence of 2 ints"),
    (dict(in_channels=3, groups=2), "in_channels and out_channels must be divisible by groups"),
    (dict(kernel_count=0), "kernel_count"),
])
def test_bad_constructor_arguments_raise_by_name(kwargs, match):
    args = dict(in_channels=4, out_channels=2, kernel_count=3, dilated_kernel_size=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        interp.DclsTranspose2d(args.pop("in_channels"), args.pop("out_channels"),
                               args.pop("kernel_count"), **args)


def test_bad_forward_arguments_raise_by_name():
    layer = interp.DclsTranspose2d(4, 2, 3, padding=4, dilated_kernel_size=5)
    with pytest.raises(ValueError, match=r"input must have 4 channels"):
        layer(torch.randn(1, 3, 6, 6))
    with pytest.raises(TypeError, match="input must have the layer's dtype"):
        layer(torch.randn(1, 4, 6, 6, dtype=F64))
    with pytest.raises(ValueError, match=r"padding=\(4, 4\) is too large.*\(0, -1\)"):
        layer(torch.randn(1, 4, 4, 3))
    with pytest.raises(ValueError, match="input must have non-empty spatial dims"):
        layer(torch.randn(1, 4, 0, 6))
    with pytest.raises(ValueError, match="input must be finite"):
        layer(torch.full((1, 4, 6, 6), float("nan")))
