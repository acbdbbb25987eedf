"""spectral_conv / SpectralConv: reference DFT, gradients, resolution invariance, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffnum.models import SpectralConv, spectral_conv, spectral_weight_shape
from tests.models._reference import band_limited, fourier_interpolate, reference_spectral_conv

# Everything here is a handful of FFTs on float64 data of magnitude O(1–10); roundoff is
# ~1e-15 per operation, so 1e-12 (relative to the output's scale) leaves three digits of
# margin and still catches any wrong bin, sign or factor (those are O(1) errors).
EXACT = 1e-12

# (grid, modes): even and odd sizes; modes that fit, that keep the Nyquist bin, and that
# exceed the grid (truncated).
CASES = [
    ((12,), (4,)),
    ((9,), (7,)),
    ((8,), (5,)),
    ((8, 7), (2, 3)),
    ((6, 8), (4, 5)),
    ((5, 6), (4, 2)),
    ((5, 4, 6), (2, 2, 3)),
    ((4, 5, 7), (3, 2, 5)),
    ((3, 5, 4), (2, 3, 2)),
]


def _random_weight(rng, c_in, c_out, modes):
    shape = spectral_weight_shape(c_in, c_out, modes)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _close(actual: torch.Tensor, expected, tol: float = EXACT) -> None:
    expected = torch.as_tensor(np.asarray(expected))
    scale = max(1.0, float(expected.abs().max()))
    err = float((actual.detach() - expected).abs().max())
    assert err <= tol * scale, f"max error {err:.3e} > {tol:.0e} × {scale:.2f}"


@pytest.mark.parametrize(("grid", "modes"), CASES)
def test_matches_explicit_dft_reference(grid, modes):
    rng = np.random.default_rng(len(grid) * 100 + sum(grid))
    x = rng.standard_normal((2, 3, *grid))
    w = _random_weight(rng, 3, 2, modes)
    y = spectral_conv(torch.from_numpy(x), torch.from_numpy(w))
    assert y.shape == (2, 2, *grid)
    _close(y, reference_spectral_conv(x, w))


def test_leading_batch_dimensions_and_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 8, 6))
    w = _random_weight(rng, 4, 5, (3, 2))
    y = spectral_conv(torch.from_numpy(x), torch.from_numpy(w))
    assert y.shape == (2, 3, 5, 8, 6)
    _close(y.reshape(6, 5, 8, 6), reference_spectral_conv(x.reshape(6, 4, 8, 6), w))
    unbatched = spectral_conv(torch.from_numpy(x[0, 0]), torch.from_numpy(w))
    _close(unbatched, y[0, 0])
    y32 = spectral_conv(torch.from_numpy(x).float(), torch.from_numpy(w).to(torch.complex64))
    assert y32.dtype == torch.float32
    # float32 FFTs carry ~1e-7 relative roundoff per operation; 1e-5 covers the few stages.
    _close(y32.double(), y.detach().numpy(), tol=1e-5)


@pytest.mark.parametrize(("grid", "modes"), [((7,), (3,)), ((6,), (4,)), ((4, 5), (2, 2)),
                                             ((3, 4), (2, 3)), ((3, 4, 4), (1, 2, 2))])
def test_gradcheck_float64(grid, modes):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, *grid, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(spectral_weight_shape(2, 2, modes), dtype=torch.complex128, generator=gen,
                    requires_grad=True)
    assert torch.autograd.gradcheck(spectral_conv, (x, w))


def test_gradcheck_module_real_parameter():
    layer = SpectralConv(2, 1, (2, 2), n_dims=2).double()
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)

    def fn(x, weight):
        return spectral_conv(x, torch.view_as_complex(weight))

    assert torch.autograd.gradcheck(fn, (x, layer.weight))
    _close(layer(x), fn(x, layer.weight).detach().numpy())


def test_unrepresentable_modes_get_zero_gradient():
    # modes 5 on 6 points: only k ∈ {−3, …, 2} exist along the full dimension and 0 … 3 along
    # the real-FFT dimension; the other weights multiply nothing.
    w = torch.randn(spectral_weight_shape(1, 1, (5, 5)), dtype=torch.complex128,
                    requires_grad=True)
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    spectral_conv(x, w).square().sum().backward()
    used = torch.zeros(w.shape[2:], dtype=torch.bool)
    for k in (0, 1, 2, -3, -2, -1):
        used[k % 10, :4] = True
    assert bool((w.grad[0, 0][~used] == 0).all())
    assert bool((w.grad[0, 0][used] != 0).all())


# (coarse grid, modes, band): band < n/2 everywhere; modes below, at and above the band, and
# above the coarse grid's Nyquist frequency (truncated there, not on the fine grid).
INVARIANCE = [
    ((8,), (3,), 3),
    ((8,), (6,), 3),
    ((8, 6), (2, 3), 2),
    ((6, 6), (5, 4), 2),
    ((6, 4, 6), (2, 1, 2), 1),
    ((4, 6, 4), (3, 3, 3), 1),
]


@pytest.mark.parametrize(("coarse", "modes", "band"), INVARIANCE)
def test_resolution_invariance_band_limited(coarse, modes, band):
    rng = np.random.default_rng(7)
    fine = tuple(2 * n for n in coarse)
    w = torch.from_numpy(_random_weight(rng, 2, 3, modes))
    state = rng.bit_generator.state
    u_coarse = band_limited(rng, 2, band, coarse)
    rng.bit_generator.state = state
    u_fine = band_limited(rng, 2, band, fine)
    y_coarse = spectral_conv(torch.from_numpy(u_coarse), w)
    y_fine = spectral_conv(torch.from_numpy(u_fine), w)
    # The fine output is the coarse output's band-limited interpolant (same function) ...
    _close(y_fine, fourier_interpolate(y_coarse.numpy(), fine))
    # ... hence its even points are the coarse output.
    _close(y_fine[(..., *(slice(None, None, 2),) * len(coarse))], y_coarse.numpy())
    assert float(y_coarse.abs().max()) > 0.1  # the check is not vacuous


def test_resolution_invariance_fails_above_coarse_nyquist():
    # A mode the coarse grid cannot hold aliases there: invariance is a band-limited property.
    rng = np.random.default_rng(3)
    w = torch.from_numpy(_random_weight(rng, 1, 1, (6,)))
    x_coarse = np.cos(2 * np.pi * 5 * np.arange(8) / 8)[None, None]
    x_fine = np.cos(2 * np.pi * 5 * np.arange(16) / 16)[None, None]
    y_coarse = spectral_conv(torch.from_numpy(x_coarse), w)
    y_fine = spectral_conv(torch.from_numpy(x_fine), w)
    assert float((y_fine[..., ::2] - y_coarse).abs().max()) > 0.1


def test_module_shapes_and_dtypes():
    for d in (1, 2, 3):
        layer = SpectralConv(3, 4, 2, n_dims=d)
        assert layer.weight.shape == (3, 4, *([4] * (d - 1)), 2, 2)
        assert layer.complex_weight.dtype == torch.complex64
        x = torch.randn(2, 3, *([5] * d))
        assert layer(x).shape == (2, 4, *([5] * d))
        layer.double()
        assert layer(x.double()).dtype == torch.float64
        # The module is the function with its own weight, and the weight is trained: a
        # step on a loss moves the output (a detached or unregistered weight would not).
        torch.testing.assert_close(layer(x.double()),
                                   spectral_conv(x.double(), layer.complex_weight))
        before = layer(x.double()).detach()
        layer(x.double()).square().sum().backward()
        with torch.no_grad():
            for p in layer.parameters():
                p -= 0.1 * p.grad
        assert float((layer(x.double()) - before).abs().max()) > 1e-3


def test_bad_arguments():
    w = torch.zeros(spectral_weight_shape(2, 3, (2, 2)), dtype=torch.complex128)
    x = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        spectral_conv(x.to(torch.complex128), w)
    with pytest.raises(TypeError, match="weight must be complex"):
        spectral_conv(x, w.real)
    with pytest.raises(TypeError, match=r"complex128 for torch\.float64"):
        spectral_conv(x, w.to(torch.complex64))
    with pytest.raises(ValueError, match="channels at dimension -3"):
        spectral_conv(torch.zeros(1, 3, 5, 5, dtype=torch.float64), w)
    with pytest.raises(ValueError, match="2 grid dimensions"):
        spectral_conv(torch.zeros(5, dtype=torch.float64), w)
    with pytest.raises(ValueError, match="even size 2m"):
        spectral_conv(x, torch.zeros(2, 3, 3, 2, dtype=torch.complex128))
    with pytest.raises(ValueError, match="d in"):
        spectral_conv(x, torch.zeros(2, 3, 2, 2, 2, 2, dtype=torch.complex128))
    with pytest.raises(ValueError, match="grid must be non-empty"):
        spectral_conv(torch.zeros(1, 2, 0, 5, dtype=torch.float64), w)
    with pytest.raises(ValueError, match="n_dims"):
        SpectralConv(2, 2, 3, n_dims=4)
    with pytest.raises(ValueError, match="modes must satisfy"):
        SpectralConv(2, 2, 0, n_dims=1)
    with pytest.raises(ValueError, match="one entry per grid dimension"):
        SpectralConv(2, 2, (3, 3), n_dims=3)
    with pytest.raises(TypeError, match="modes must be an int"):
        SpectralConv(2, 2, 2.5, n_dims=1)
    with pytest.raises(ValueError, match="in_channels"):
        SpectralConv(0, 2, 3, n_dims=1)
