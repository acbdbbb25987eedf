"""Convolution paths: FFT and shift-and-add agree with F.convNd; the cost model's choices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diffnum.interp as interp
from diffnum.interp._conv import choose_conv_method
from tests.interp._helpers import rel_err

# FFT round-off grows like eps·log n and shift-and-add only reorders sums: observed ≤ 1e-6
# norm-wise in float32; the bar is 1e-5.
PATH_TOL = 1e-5
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
SHAPES = {1: (2, 4, 17), 2: (2, 4, 9, 10), 3: (1, 4, 6, 5, 7)}
KERNELS = {1: (5,), 2: (5, 3), 3: (3, 2, 3)}


def _grads(fn, x, K, b):
    leaves = [t.clone().requires_grad_() for t in (x, K, b)]
    y = fn(*leaves)
    G = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))
    return (y, *torch.autograd.grad((y * G).sum(), leaves))


@pytest.mark.parametrize("method", ["fft", "shift"])
@pytest.mark.parametrize(
    "setting",
    [{"groups": 1}, {"groups": 4}, {"groups": 2, "stride": 2, "padding": 2},
     {"groups": 1, "dilation": 2, "padding": 1}],
    ids=["g1", "depthwise", "g2-stride2", "dilation2"],
)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_paths_agree_with_dense(method, setting, d):
    g = torch.Generator().manual_seed(d)
    groups = setting["groups"]
    x = torch.randn(SHAPES[d], generator=g)
    out_channels = 4 if groups != 2 else 6
    K = torch.randn(out_channels, 4 // groups, *KERNELS[d], generator=g)
    support = torch.rand(KERNELS[d], generator=g) < 0.5
    support.reshape(-1)[0] = True
    K = K * support  # the shift path needs K (and its derivative) zero off the support
    b = torch.randn(out_channels, generator=g)
    kwargs = {k: v for k, v in setting.items() if k != "groups"}

    def reference(x, K, b):
        return CONV[d](x, K, b, groups=groups, **kwargs)

    def path(x, K, b):
        return interp.convolve(x, K, b, groups=groups, method=method,
                               support=support if method == "shift" else None, **kwargs)

    ref = _grads(reference, x, K, b)
    ours = _grads(path, x, K, b)
    for name, a, r in zip(["output", "input", "kernel", "bias"], ours, ref):
        if name == "kernel" and method == "shift":
            a, r = a * support, r * support  # off-support derivatives are not computed
        assert rel_err(a, r) <= PATH_TOL, name


@pytest.mark.parametrize("version", ["v0", "v1", "gauss"])
@pytest.mark.parametrize("method", ["fft", "shift"])
def test_layer_paths_agree_with_dense(version, method):
    if method == "shift" and version == "gauss":
        pytest.skip("gauss has full support; shift is only for compact kernels")
    torch.manual_seed(0)
    dense = interp.Dcls2d(4, 4, 3, padding=3, dilated_kernel_size=7, groups=2, version=version,
                          conv_method="dense")
    fast = interp.Dcls2d(4, 4, 3, padding=3, dilated_kernel_size=7, groups=2, version=version,
                         conv_method=method)
    fast.load_state_dict(dense.state_dict())
    with torch.no_grad():  # integer positions: v0's P-derivative needs the ⌊q⌋+1 neighbours
        dense.P[:, :, :, 0].round_()
        fast.P.copy_(dense.P)
    x = torch.randn(2, 4, 11, 12)
    results = []
    for layer in (dense, fast):
        xx = x.clone().requires_grad_()
        y = layer(xx)
        params = [xx, layer.weight, layer.P, layer.bias]
        results.append((y, *torch.autograd.grad((y * y.detach()).sum(), params)))
    for a, r in zip(results[1], results[0]):
        assert rel_err(a, r) <= PATH_TOL


def test_integer_tap_inference_uses_sparse_path():
    layer = interp.Dcls1d(3, 5, 2, dilated_kernel_size=9, version="gauss", padding=4)
    layer.round_positions()
    layer.use_integer_taps()
    x = torch.randn(2, 3, 20)
    taps = layer.export_integer_taps()
    ref = F.conv1d(x, taps.kernel(), layer.bias, padding=4)
    # FFT (auto) and shift-and-add vs F.conv1d in float32: summation order only.
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-6)
    layer.conv_method = "shift"
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-6)


def test_cost_model_choices():
    # Issue configurations: depthwise 17×17 on 56×56 → FFT; small dense 3×3 → direct conv;
    # 1-D delays with 25-tap support and 140 channels → FFT.
    assert choose_conv_method((8, 96, 72, 72), (96, 1, 17, 17), 96, (1, 1), (1, 1), None) == "fft"
    assert choose_conv_method((8, 32, 34, 34), (32, 32, 3, 3), 1, (1, 1), (1, 1), 9) == "dense"
    assert choose_conv_method((64, 140, 100), (256, 140, 25), 1, (1,), (1,), None) == "fft"


def test_convolve_bad_input():
    K = torch.zeros(4, 2, 3)
    with pytest.raises(ValueError, match="input must have shape"):
        interp.convolve(torch.zeros(1, 3, 10), K, None, groups=2)
    with pytest.raises(ValueError, match="support must have"):
        interp.convolve(torch.zeros(1, 4, 10), K, None, groups=2, method="shift",
                        support=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs a support"):
        interp.convolve(torch.zeros(1, 4, 10), K.requires_grad_(), None, groups=2,
                        method="shift")
