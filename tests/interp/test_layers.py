"""DCLS layers: parity with dcls 0.1.1 layers, special cases, helpers, errors."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diffnum.interp as interp
from tests.interp._helpers import rel_err, special_positions

dcls = pytest.importorskip("DCLS.construct.modules")
logging.getLogger().setLevel(logging.ERROR)  # dcls logs a CUDA warning per 2-D layer

# Same reasoning as in test_construct: summation order only; the bar.
PARITY_TOL = 1e-5
CHANNELS = 4
SIZES = {1: (5,), 2: (5, 3), 3: (3, 4, 3)}
INPUTS = {1: (2, CHANNELS, 13), 2: (2, CHANNELS, 9, 8), 3: (1, CHANNELS, 6, 7, 5)}
SETTINGS = [
    {"stride": 1, "padding": 0},
    {"stride": 2, "padding": 2},
    {"stride": 1, "padding": 1, "padding_mode": "reflect"},
]


def _pair(d, version, groups, settings, seed=0):
    torch.manual_seed(seed)
    ref_cls = {1: dcls.Dcls1d, 2: dcls.Dcls2d, 3: dcls.Dcls3d}[d]
    ours_cls = {1: interp.Dcls1d, 2: interp.Dcls2d, 3: interp.Dcls3d}[d]
    kwargs = {"dilated_kernel_size": SIZES[d], "groups": groups, "version": version, **settings}
    ref = ref_cls(CHANNELS, CHANNELS, 3, **kwargs)
    with torch.no_grad():
        ref.P.copy_(special_positions(ref.P.clone(), SIZES[d], torch.Generator().manual_seed(2)))
        if ref.SIG is not None:
            ref.SIG.copy_(torch.randn_like(ref.SIG) * 0.4)
    ours = ours_cls(CHANNELS, CHANNELS, 3, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _forward_backward(layer, x, G):
    x = x.clone().requires_grad_()
    y = layer(x)
    params = [layer.weight, layer.P] + ([layer.SIG] if layer.SIG is not None else [])
    grads = torch.autograd.grad((y * G).sum(), [x, *params])
    return y, grads


@pytest.mark.parametrize("settings", SETTINGS, ids=["plain", "stride2-pad2", "reflect"])
@pytest.mark.parametrize("groups", [1, CHANNELS])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("version", ["v0", "v1", "max", "gauss"])
def test_layer_parity_with_dcls(version, d, groups, settings):
    ref, ours = _pair(d, version, groups, settings)
    x = torch.randn(INPUTS[d], generator=torch.Generator().manual_seed(4))
    y_ref = ref(x)
    G = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(5))
    y_ref, g_ref = _forward_backward(ref, x, G)
    y, g = _forward_backward(ours, x, G)
    assert y.shape == y_ref.shape
    assert rel_err(y, y_ref) <= PARITY_TOL
    for name, a, b in zip(["input", "weight", "P", "SIG"], g, g_ref):
        assert rel_err(a, b) <= PARITY_TOL, name


@pytest.mark.parametrize("version", ["v1", "gauss"])
def test_dcls3_1d_parity(version):
    torch.manual_seed(0)
    ref = dcls.Dcls3_1d(CHANNELS, 2, 2, padding=(1, 1, 2), dense_kernel_size=(3, 3),
                        dilated_kernel_size=5, version=version)
    ours = interp.Dcls3_1d(CHANNELS, 2, 2, padding=(1, 1, 2), dense_kernel_size=(3, 3),
                           dilated_kernel_size=5, version=version)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, CHANNELS, 4, 5, 9)
    G = torch.randn(ref(x).shape)
    y_ref, g_ref = _forward_backward(ref, x, G)
    y, g = _forward_backward(ours, x, G)
    assert rel_err(y, y_ref) <= PARITY_TOL
    for a, b in zip(g, g_ref):
        assert rel_err(a, b) <= PARITY_TOL


@pytest.mark.parametrize("flat_dim", [0, 1])
def test_dcls2dk1d_parity(flat_dim):
    torch.manual_seed(0)
    ref = dcls.Dcls2dK1d(CHANNELS, 2, 3, padding=(2, 1), dilated_kernel_size=5,
                         flat_dim=flat_dim)
    ours = interp.Dcls2dK1d(CHANNELS, 2, 3, padding=(2, 1), dilated_kernel_size=5,
                            flat_dim=flat_dim)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, CHANNELS, 7, 6)
    G = torch.randn(ref(x).shape)
    y_ref, g_ref = _forward_backward(ref, x, G)
    y, g = _forward_backward(ours, x, G)
    assert rel_err(y, y_ref) <= PARITY_TOL
    for a, b in zip(g, g_ref):
        assert rel_err(a, b) <= PARITY_TOL


def test_dcls2_1d_matches_manual_construction():
    layer = interp.Dcls2_1d(3, 2, 2, padding=(1, 3), dense_kernel_size=3,
                            dilated_kernel_size=7, version="gauss")
    assert layer.weight.shape == (2, 3, 3, 2) and layer.P.shape == (1, 2, 3, 3, 2)
    x = torch.randn(2, 3, 6, 10)
    K = interp.construct_kernel(layer.weight, layer.P, layer.SIG, 7, "gauss")
    assert K.shape == (2, 3, 3, 7)
    torch.testing.assert_close(layer(x), F.conv2d(x, K, layer.bias, padding=(1, 3)),
                               rtol=0, atol=0)


def test_dcls_position_init_matches_dcls_initialisation():
    # position_init="dcls" reproduces the official package's initialisation draw for draw;
    # the default ("spread") draws the same weights and spreads the taps instead.
    torch.manual_seed(7)
    ref = dcls.Dcls2d(6, 6, 5, dilated_kernel_size=7, groups=3)
    torch.manual_seed(7)
    ours = interp.Dcls2d(6, 6, 5, dilated_kernel_size=7, groups=3, position_init="dcls")
    for name, tensor in ref.state_dict().items():
        assert torch.equal(tensor, ours.state_dict()[name]), name
    torch.manual_seed(7)
    default = interp.Dcls2d(6, 6, 5, dilated_kernel_size=7, groups=3)
    assert default.position_init == "spread"
    assert torch.equal(default.weight, ref.weight)
    assert float(default.P.abs().mean()) > 2 * float(ref.P.abs().mean())


def test_integer_bilinear_equals_sparse_conv():
    # v0 with integer positions is an m-tap sparse nn.Conv2d with the same weights.
    layer = interp.Dcls2d(2, 3, 4, padding=2, dilated_kernel_size=5, version="v0")
    with torch.no_grad():
        layer.P.copy_(torch.randint(-2, 3, layer.P.shape).float())
    conv = nn.Conv2d(2, 3, 5, padding=2)
    with torch.no_grad():
        conv.weight.zero_()
        for o in range(3):
            for c in range(2):
                for k in range(4):
                    i, j = (int(layer.P[a, o, c, k]) + 2 for a in range(2))
                    conv.weight[o, c, i, j] += layer.weight[o, c, k]
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 2, 8, 9)
    # Same taps, float32 sums in a different order (|y| ~ 1).
    torch.testing.assert_close(layer(x), conv(x), rtol=0, atol=1e-6)


def test_lattice_positions_equal_dilated_conv():
    # Taps on a lattice of step r with m = 3×3 equal a 3×3 conv with dilation r.
    r = 2
    layer = interp.Dcls2d(2, 2, 9, padding=2, dilated_kernel_size=5, version="v0", bias=False)
    dense = nn.Conv2d(2, 2, 3, padding=2, dilation=r, bias=False)
    grid = torch.tensor([-r, 0, r], dtype=torch.float32)
    with torch.no_grad():
        rows, cols = torch.meshgrid(grid, grid, indexing="ij")
        layer.P[0] = rows.flatten()
        layer.P[1] = cols.flatten()
        layer.weight.copy_(dense.weight.flatten(2))
    x = torch.randn(1, 2, 10, 11)
    # Same taps, float32 sums in a different order (|y| ~ 1).
    torch.testing.assert_close(layer(x), dense(x), rtol=0, atol=1e-6)


def test_gauss_small_sigma_approaches_sparse_kernel():
    layer = interp.Dcls1d(1, 1, 2, dilated_kernel_size=7, version="gauss", bias=False)
    with torch.no_grad():
        layer.P.copy_(torch.tensor([[[[-2.0, 1.0]]]]))
    sparse = torch.zeros(7)
    sparse[[1, 4]] = layer.weight.detach().flatten()
    layer.SIG.data.fill_(0.0)
    # σ = 0.27: neighbours get exp(-1/(2·0.27²)) ≈ 1e-3 of the centre weight.
    err = (layer.kernel().flatten() - sparse).abs().max() / sparse.abs().max()
    assert 1e-4 < err.item() < 1e-2


def test_same_padding_and_dilation():
    layer = interp.Dcls1d(2, 2, 2, padding="same", dilated_kernel_size=4, dilation=2,
                          version="v1")
    x = torch.randn(3, 2, 11)
    K = layer.kernel()
    ref = nn.Conv1d(2, 2, 4, padding="same", dilation=2)
    with torch.no_grad():
        ref.weight.copy_(K)
        ref.bias.copy_(layer.bias)
    # Same kernel; the explicit asymmetric pad vs nn.Conv1d's own: float32 rounding only.
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-6, atol=1e-6)


def test_unbatched_input():
    layer = interp.Dcls2d(2, 3, 3, padding=1, dilated_kernel_size=3)
    x = torch.randn(2, 6, 5)
    torch.testing.assert_close(layer(x), layer(x.unsqueeze(0)).squeeze(0))


def test_clamp_and_round_and_integer_taps():
    layer = interp.Dcls2d(2, 2, 3, padding=2, dilated_kernel_size=5, version="v1")
    with torch.no_grad():
        layer.P.mul_(10)
    layer.clamp_parameters()
    assert layer.P.abs().max() <= 2
    layer.round_positions()
    assert torch.equal(layer.P, layer.P.round())
    taps = layer.export_integer_taps()
    assert taps.index.dtype == torch.long and taps.index.shape == layer.P.shape
    # v1 at integer positions is the tap kernel up to its 1/(1 + 1e-7) normalization.
    torch.testing.assert_close(taps.kernel(), layer.kernel(), rtol=3e-7, atol=1e-7)
    x = torch.randn(1, 2, 6, 6)
    y = layer(x)
    layer.use_integer_taps()
    # Taps vs v1 kernel differ by the 1/(1 + 1e-7) factor, then float32 convolution.
    torch.testing.assert_close(layer(x), y, rtol=1e-6, atol=1e-6)
    layer.use_integer_taps(False)
    assert layer.integer_taps is None


def test_integer_taps_outside_support_raise():
    layer = interp.Dcls1d(1, 1, 1, dilated_kernel_size=5, version="v1")
    with torch.no_grad():
        layer.P.fill_(7.0)
    with pytest.raises(ValueError, match="outside the support"):
        layer.export_integer_taps()


def test_parameter_groups():
    model = nn.Sequential(interp.Dcls1d(2, 2, 2, dilated_kernel_size=5), nn.Linear(3, 3))
    groups = interp.parameter_groups(model, 1e-3, weight_decay=0.05, position_lr_scale=10.0)
    assert len(groups) == 2
    spacing = groups[1]
    assert spacing["lr"] == pytest.approx(1e-2) and spacing["weight_decay"] == 0.0
    assert {id(p) for p in spacing["params"]} == {id(model[0].P), id(model[0].SIG)}
    total = sum(len(g["params"]) for g in groups)
    assert total == len(list(model.parameters()))
    torch.optim.AdamW(groups)  # accepted as is


def test_sigma_schedules():
    schedule = interp.SigmaSchedule(12.0, 0.5, steps=10)
    assert schedule(0) == 12.0 and schedule(10) == 0.5 and schedule(100) == 0.5
    assert schedule(5) == pytest.approx(6.25)
    cosine = interp.SigmaSchedule(4.0, 1.0, steps=4, kind="cosine")
    assert cosine(2) == pytest.approx(2.5)
    model = nn.Sequential(interp.Dcls1d(2, 2, 1, dilated_kernel_size=9, version="gauss"))
    schedule.apply(model, 5)
    assert torch.allclose(model[0].SIG, torch.full_like(model[0].SIG, 6.25 - 0.27))
    assert not model[0].SIG.requires_grad
    interp.set_sigma(model, 1.0, learnable=True)
    assert model[0].SIG.requires_grad
    with pytest.raises(ValueError, match="sigma must be"):
        interp.set_sigma(model, 0.1)


def test_sigma_schedule_for_rounding():
    schedule = interp.SigmaSchedule.for_rounding(12.5, 640)
    assert (schedule.start, schedule.end, schedule.steps, schedule.kind) == (
        12.5, 0.28, 160, "linear")
    assert schedule(80) == pytest.approx(12.5 - (12.5 - 0.28) / 2) and schedule(10**6) == 0.28
    assert interp.SigmaSchedule.for_rounding(2.0, 630, fraction=0.5).steps == 315
    assert interp.SigmaSchedule.for_rounding(2.0, 1).steps == 1  # never zero steps
    assert interp.SigmaSchedule.for_rounding(0.28, 10)(0) == 0.28  # already there: constant
    model = nn.Sequential(interp.Dcls1d(2, 2, 1, dilated_kernel_size=9, version="gauss"))
    schedule.apply(model, 160)  # the end is above the floor: SIG stays positive
    assert torch.allclose(model[0].SIG, torch.full_like(model[0].SIG, 0.01))
    for kwargs, name in (({"start": 0.2}, "start"), ({"fraction": 0.0}, "fraction"),
                         ({"fraction": 1.5}, "fraction"), ({"total_steps": 0}, "total_steps")):
        args = {"start": 4.0, "total_steps": 100, **kwargs}
        with pytest.raises(ValueError, match=name):
            interp.SigmaSchedule.for_rounding(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kernel_count": 0}, ValueError, "kernel_count"),
        ({"groups": 3}, ValueError, "divisible by groups"),
        ({"version": "linear"}, ValueError, "version"),
        ({"padding_mode": "mirror"}, ValueError, "padding_mode"),
        ({"dilated_kernel_size": (3, 3, 3)}, ValueError, "dilated_kernel_size"),
        ({"padding": -1}, ValueError, "padding"),
        ({"kernel_count": 2.5}, TypeError, "kernel_count"),
    ],
)
def test_layer_bad_arguments(kwargs, error, match):
    args = {"in_channels": 4, "out_channels": 4, "kernel_count": 3, "dilated_kernel_size": 5}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        interp.Dcls2d(**args)


def test_layer_bad_input():
    layer = interp.Dcls2d(4, 4, 3, dilated_kernel_size=3)
    with pytest.raises(ValueError, match="4 channels"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="spatial dims"):
        layer(torch.randn(4, 8))


def test_functional_dcls_conv_matches_layer():
    layer = interp.Dcls2d(4, 6, 3, stride=2, padding=(2, 1), dilated_kernel_size=(5, 3),
                          groups=2, version="max")
    x = torch.randn(2, 4, 9, 8)
    y = interp.dcls_conv(x, layer.weight, layer.P, layer.SIG, layer.bias,
                         dilated_kernel_size=(5, 3), version="max", stride=2, padding=(2, 1),
                         groups=2)
    torch.testing.assert_close(y, layer(x))


def test_integer_taps_are_buffers_and_weights_keep_training():
    """use_integer_taps(): the indices follow .to()/state_dict; the weights are the live
    parameter (they get gradients; positions do not), so a short fine-tune at the rounded
    positions is ordinary training."""
    torch.manual_seed(0)
    layer = interp.Dcls2d(2, 3, kernel_count=4, dilated_kernel_size=5, padding=2, version="v1")
    layer.round_positions()
    layer.use_integer_taps()
    assert "integer_tap_index" in dict(layer.named_buffers())
    x = torch.randn(2, 2, 7, 7)
    y = layer(x)
    layer.double()
    assert layer.integer_tap_index.dtype == torch.long
    torch.testing.assert_close(layer(x.double()), y.double(), rtol=1e-6, atol=1e-6)
    # A fresh layer loading the state takes the taps with it.
    fresh = interp.Dcls2d(2, 3, kernel_count=4, dilated_kernel_size=5, padding=2,
                          version="v1").double()
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.integer_tap_index, layer.integer_tap_index)
    assert torch.equal(fresh(x.double()), layer(x.double()))
    # Gradients reach the weights, not the positions; a step changes the output.
    layer(x.double()).square().sum().backward()
    assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0
    assert layer.P.grad is None
    before = layer(x.double()).detach()
    with torch.no_grad():
        layer.weight -= 0.1 * layer.weight.grad
    assert not torch.equal(layer(x.double()), before)
    layer.use_integer_taps(False)
    assert layer.integer_taps is None and "integer_tap_index" not in layer.state_dict()
    with pytest.raises(TypeError, match="enabled"):
        layer.use_integer_taps("yes")


def test_round_to_integer_taps_switches_every_layer_and_keeps_weights_trainable():
    torch.manual_seed(0)
    first = interp.Dcls2d(2, 2, 4, dilated_kernel_size=5, padding=2)
    second = interp.Dcls1d(2, 2, 3, dilated_kernel_size=7, padding=3, version="v1")
    with torch.no_grad():
        second.P.fill_(10.0)  # out of the support: the helper clamps before rounding
    model = nn.ModuleList([nn.Sequential(first, nn.ReLU()), second])
    layers = interp.round_to_integer_taps(model)
    assert layers == [first, second]
    assert all(layer.integer_taps is not None for layer in layers)
    assert all(torch.equal(layer.P, layer.P.round()) for layer in layers)
    assert float(second.P.max()) == 3.0
    first(torch.randn(1, 2, 6, 6)).square().sum().backward()
    assert first.weight.grad is not None and first.P.grad is None
