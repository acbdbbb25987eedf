"""DCLS layers as drop-ins under graph capture: ``torch.compile(fullgraph=True)`` captures
every construction and convolution path in one graph (no break) and equals the eager layer,
forward and backward; ``torch.jit.trace`` too. Data-reading checks (finiteness, |SIG|) are the
eager call's; traced, ``conv_method="auto"`` chooses from static shapes (dense or fft), and the
shift path runs over every offset of the support (the ones the taps do not touch add zeros)."""

import itertools
import warnings

import pytest
import torch
import torch._dynamo

from diffnum.interp import Dcls1d, Dcls2_1d, Dcls2d, Dcls2dK1d, Dcls3d
from diffnum.snn import DelayedLinear

CASES = [
    (Dcls1d, dict(kernel_count=3, dilated_kernel_size=7, padding=3), (2, 4, 20)),
    (Dcls2d, dict(kernel_count=3, dilated_kernel_size=7, padding=3), (2, 4, 12, 12)),
    (Dcls3d, dict(kernel_count=2, dilated_kernel_size=3, padding=1), (1, 4, 5, 6, 6)),
    (Dcls2_1d, dict(kernel_count=3, dilated_kernel_size=5, padding=(1, 2),
                    dense_kernel_size=3), (2, 4, 8, 10)),
    (Dcls2dK1d, dict(kernel_count=3, dilated_kernel_size=5, padding=2), (2, 4, 9, 9)),
]
# Every valid (version, construction, convolution) triple: scatter and shift are for the
# integer-neighbour versions only (a Gaussian tap touches every offset).
PATHS = [(v, c, m) for v, c, m in itertools.product(
    ("gauss", "v1", "v0"), ("auto", "dense", "scatter", "separable"),
    ("auto", "dense", "fft", "shift"))
    if not (v == "gauss" and (c == "scatter" or m == "shift"))]


def _layer(cls, kwargs, version, construct, conv):
    torch.manual_seed(0)
    try:
        return cls(4, 4, version=version, construct_method=construct, conv_method=conv,
                   **kwargs).double()
    except (TypeError, ValueError) as error:  # a path the class does not offer
        pytest.skip(f"{cls.__name__} with {version}/{construct}/{conv}: {error}")


def _compiled(module, backend="eager"):
    torch._dynamo.reset()
    return torch.compile(module, fullgraph=True, backend=backend)


@pytest.mark.parametrize("version, construct, conv", PATHS)
def test_every_2d_path_is_one_graph(version, construct, conv):
    layer = _layer(Dcls2d, CASES[1][1], version, construct, conv)
    x = torch.randn(*CASES[1][2], dtype=torch.float64)
    torch.testing.assert_close(_compiled(layer)(x), layer(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls, kwargs, shape", CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("version", ["gauss", "v1"])
def test_every_layer_compiles_forward_and_backward(cls, kwargs, shape, version):
    """aot_eager traces the backward as well: gradients of weight, P (and SIG) equal."""
    layer = _layer(cls, kwargs, version, "auto", "auto")
    x = torch.randn(*shape, dtype=torch.float64)
    compiled = _compiled(layer, "aot_eager")
    grads = []
    for run in (compiled, layer):
        layer.zero_grad()
        run(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("conv", ["auto", "shift", "dense"])
def test_integer_taps_compile(conv):
    layer = _layer(*CASES[1][:2], "v1", "auto", conv)
    layer.round_positions()
    layer.use_integer_taps()
    x = torch.randn(*CASES[1][2], dtype=torch.float64)
    torch.testing.assert_close(_compiled(layer)(x), layer(x), rtol=1e-12, atol=1e-12)


def test_delayed_linear_compiles():
    torch.manual_seed(0)
    layer = DelayedLinear(5, 3, max_delay=11).double()
    x = torch.randn(2, 5, 30, dtype=torch.float64)
    torch.testing.assert_close(_compiled(layer)(x), layer(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("version, conv", [("gauss", "auto"), ("v1", "auto"), ("v1", "shift")])
def test_jit_trace_and_export(version, conv):
    """A trace (its shape checks warn, as any shape assert does under jit.trace; no value
    of the data is read) and an exported program both equal the layer on a new input."""
    layer = _layer(*CASES[1][:2], version, "auto", conv)
    x = torch.randn(*CASES[1][2], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(layer, x)
    exported = torch.export.export(layer, (x,)).module()
    other = torch.randn_like(x)
    for run in (traced, exported):
        torch.testing.assert_close(run(other), layer(other), rtol=1e-12, atol=1e-12)


def test_eager_checks_still_run():
    layer = Dcls2d(2, 2, kernel_count=2, dilated_kernel_size=5, padding=2).double()
    with torch.no_grad():
        layer.P[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        layer(torch.randn(1, 2, 6, 6, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, match", [
    (dict(version="gauss", construct_method="scatter"), "construct_method='scatter'"),
    (dict(version="gauss", conv_method="shift"), "conv_method='shift'"),
])
def test_paths_a_version_lacks_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Dcls2d(2, 2, kernel_count=2, dilated_kernel_size=5, **kwargs)


def test_the_attributes_nn_conv_code_reads():
    layer = Dcls2d(4, 8, 3, dilated_kernel_size=7, padding=3, use_implicit_gemm=False)
    assert layer.kernel_size == (7, 7) and layer.transposed is False
    assert layer.output_padding == (0, 0) and layer.use_implicit_gemm is False
    assert Dcls2_1d(2, 2, 3, dense_kernel_size=3, dilated_kernel_size=5).kernel_size == (3, 5)
    for flat_dim, size in ((0, (5, 1)), (1, (1, 5))):
        layer = Dcls2dK1d(2, 2, 3, dilated_kernel_size=5, flat_dim=flat_dim)
        assert layer.kernel_size == size == tuple(layer.kernel().shape[2:])
    with pytest.raises(TypeError, match="use_implicit_gemm"):
        Dcls1d(2, 2, 3, dilated_kernel_size=5, use_implicit_gemm="yes")


@pytest.mark.parametrize("conv", ["dense", "fft", "shift"])
@pytest.mark.parametrize("cls, shape, fmt", [
    (Dcls2d, (2, 4, 12, 12), torch.channels_last),
    (Dcls3d, (1, 4, 6, 7, 7), torch.channels_last_3d)])
def test_channels_last_in_channels_last_out(conv, cls, shape, fmt):
    torch.manual_seed(0)
    layer = cls(4, 8, 3, dilated_kernel_size=5, padding=2, version="v1", conv_method=conv)
    x = torch.randn(*shape)
    y = layer(x.contiguous(memory_format=fmt))
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-5)


def test_delayed_linear_takes_device_and_dtype():
    layer = DelayedLinear(3, 4, 5, device="cpu", dtype=torch.float64)
    assert layer.conv.weight.dtype == torch.float64
    assert layer(torch.zeros(1, 3, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("version, conv", [("gauss", "dense"), ("gauss", "fft"),
                                           ("v1", "auto"), ("v1", "shift")])
def test_low_precision_is_as_accurate_as_nn_conv(dtype, version, conv):
    """bfloat16 / float16 layers (kernel built in float32, FFT in float32, result in the
    layer's dtype): the error against the float32 layer on the same rounded parameters and
    input is within 2× that of nn.Conv2d's own low-precision convolution of that kernel."""
    torch.manual_seed(0)
    low = Dcls2d(4, 8, 3, dilated_kernel_size=7, padding=3, version=version,
                 conv_method=conv, dtype=dtype)
    ref = Dcls2d(4, 8, 3, dilated_kernel_size=7, padding=3, version=version,
                 conv_method=conv)
    ref.load_state_dict({k: t.float() for k, t in low.state_dict().items()})
    x = torch.randn(2, 4, 12, 12).to(dtype)
    y = low(x)
    assert y.dtype == dtype
    exact = ref(x.float())
    kernel = ref.kernel().detach()
    peer = torch.nn.functional.conv2d(x, kernel.to(dtype), ref.bias.detach().to(dtype),
                                      padding=3)
    error = float((y.float() - exact).norm() / exact.norm())
    peer_error = float((peer.float() - exact).norm() / exact.norm())
    assert error <= 2 * peer_error + torch.finfo(dtype).eps
    y.float().square().sum().backward()
    assert low.P.grad.dtype == dtype and bool(torch.isfinite(low.P.grad).all())
