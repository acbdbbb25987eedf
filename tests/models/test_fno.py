"""FNO: shapes, dtypes, what resolution invariance does and does not hold, training, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from diffnum.models import FNO, grid_coordinates
from tests.models._reference import band_limited

# float64 end to end: FFT and matmul roundoff is ~1e-15 on O(1) outputs, so 1e-12 is exact
# up to roundoff with margin, and far below the 1e-4 aliasing errors that a broken
# invariance produces at these sizes.
EXACT = 1e-12


def _restrict(y: torch.Tensor, d: int) -> torch.Tensor:
    return y[(..., *(slice(None, None, 2),) * d)]


def _inputs(coarse, band, channels=2, seed=5):
    fine = tuple(2 * n for n in coarse)
    rng = np.random.default_rng(seed)
    state = rng.bit_generator.state
    u_coarse = band_limited(rng, channels, band, coarse)
    rng.bit_generator.state = state
    u_fine = band_limited(rng, channels, band, fine)
    return torch.from_numpy(u_coarse), torch.from_numpy(u_fine)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_shapes_batched_unbatched_options(d):
    torch.manual_seed(0)
    grid = (7, 6, 5)[:d]
    for kwargs in ({}, {"append_grid": True}, {"padding": 3}, {"projection_channels": 5}):
        model = FNO(2, 4, 3, 6, 2, d, **kwargs)
        x = torch.randn(3, 2, *grid)
        y = model(x)
        assert y.shape == (3, 4, *grid)
        assert y.dtype == torch.float32
        # float32 layers on O(1) data: ~1e-6 roundoff, not bit-identical across batch sizes.
        torch.testing.assert_close(model(x[1]), y[1], rtol=1e-5, atol=1e-5)
    model = FNO(2, 4, 3, 6, 1, d).double()
    assert model(torch.randn(1, 2, *grid, dtype=torch.float64)).dtype == torch.float64
    assert model(torch.randn(2, 3, 2, *grid, dtype=torch.float64)).shape == (2, 3, 4, *grid)


def test_float32_matches_float64():
    torch.manual_seed(0)
    model = FNO(1, 3, 4, 8, 3, 2, append_grid=True, padding=2)
    x = torch.randn(2, 1, 8, 9)
    y32 = model(x)
    y64 = model.double()(x.double())
    # float32 roundoff (~6e-8) amplified by four layers and a few FFTs stays below 1e-5.
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=1e-5)


def test_grid_coordinates_nested():
    coarse = grid_coordinates((4, 6), dtype=torch.float64)
    fine = grid_coordinates((8, 12), dtype=torch.float64)
    assert coarse.shape == (2, 4, 6)
    assert torch.equal(coarse[0, :, 0], torch.arange(4, dtype=torch.float64) / 4)
    assert torch.equal(coarse[1, 0, :], torch.arange(6, dtype=torch.float64) / 6)
    assert torch.equal(fine[:, ::2, ::2], coarse)


def test_append_grid_feeds_coordinates():
    torch.manual_seed(0)
    model = FNO(1, 2, 2, 4, 1, 1, append_grid=True).double()
    assert model.lifting.linear.in_features == 2
    # With the input channel's lifting weight zeroed the output still varies along x.
    with torch.no_grad():
        model.lifting.linear.weight[:, 0] = 0
        y = model(torch.zeros(1, 1, 16, dtype=torch.float64))
    assert float(y.std(dim=-1).max()) > 1e-3


@pytest.mark.parametrize(("d", "coarse", "modes"), [(1, (8,), 3), (2, (8, 6), 2),
                                                    (3, (4, 4, 6), 2)])
def test_depth_one_is_resolution_invariant(d, coarse, modes):
    # Depth 1: the one spectral convolution sees the lifted input, still band-limited; σ and
    # every other map act point by point and commute with restriction to the coarse points.
    torch.manual_seed(1)
    model = FNO(2, 3, modes, 6, 1, d, append_grid=False).double()
    u_coarse, u_fine = _inputs(coarse, band=1)
    with torch.no_grad():
        y_coarse, y_fine = model(u_coarse), model(u_fine)
    err = float((_restrict(y_fine, d) - y_coarse).abs().max())
    assert err <= EXACT * max(1.0, float(y_coarse.abs().max()))


def test_linear_activation_any_depth_is_resolution_invariant():
    torch.manual_seed(2)
    model = FNO(2, 3, (3, 2), 5, 4, 2, activation=nn.Identity, append_grid=False).double()
    u_coarse, u_fine = _inputs((8, 6), band=2)
    with torch.no_grad():
        y_coarse, y_fine = model(u_coarse), model(u_fine)
    err = float((_restrict(y_fine, 2) - y_coarse).abs().max())
    assert err <= EXACT * max(1.0, float(y_coarse.abs().max()))


def test_deep_nonlinear_fno_converges_under_refinement():
    # After σ the field is not band-limited; the coarse grid aliases it, so n vs 2n differ.
    # σ of a band-limited field is analytic, its spectrum decays exponentially, and so does
    # the discrepancy: measured here 1.6e-3 (8→16), 7e-7 (16→32), 1.5e-12 (32→64).
    torch.manual_seed(0)
    model = FNO(2, 3, 4, 8, 3, 1, append_grid=False).double()
    outputs = []
    for n in (8, 16, 32):
        u, _ = _inputs((n,), band=2, seed=1)
        with torch.no_grad():
            outputs.append(model(u))
    gaps = [float((_restrict(b, 1) - a).abs().max()) for a, b in itertools.pairwise(outputs)]
    assert gaps[0] > 1e-5  # the property is genuinely not exact ...
    assert gaps[1] < gaps[0] / 100  # ... but the outputs converge fast with resolution


def test_gradcheck_through_fno():
    torch.manual_seed(3)
    model = FNO(1, 2, 3, 3, 2, 1, append_grid=True, padding=2, projection_channels=4).double()
    x = torch.randn(1, 1, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))
    y = model(x)
    y.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name


def test_fits_a_fourier_multiplier():
    # The heat semigroup is a Fourier multiplier; a few Adam steps must reduce the misfit.
    torch.manual_seed(4)
    n = 32
    k = torch.fft.rfftfreq(n, 1 / n)
    u0 = torch.fft.irfft(torch.randn(16, 1, n // 2 + 1, dtype=torch.complex64)
                         * (k <= 4), n=n)
    target = torch.fft.irfft(torch.fft.rfft(u0) * torch.exp(-0.02 * k**2), n=n)
    model = FNO(1, 1, 6, 8, 2, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (model(u0) - target).square().mean() / target.square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_dims"):
        FNO(1, 1, 2, 4, 1, 0)
    with pytest.raises(ValueError, match="depth"):
        FNO(1, 1, 2, 4, 0, 1)
    with pytest.raises(ValueError, match="width"):
        FNO(1, 1, 2, 0, 1, 1)
    with pytest.raises(ValueError, match="padding"):
        FNO(1, 1, 2, 4, 1, 1, padding=-1)
    with pytest.raises(TypeError, match="padding must be an int"):
        FNO(1, 1, 2, 4, 1, 1, padding=1.5)
    with pytest.raises(ValueError, match="one entry per grid dimension"):
        FNO(1, 1, (2, 2), 4, 1, 3)
    with pytest.raises(TypeError, match="activation"):
        FNO(1, 1, 2, 4, 1, 1, activation="gelu")
    with pytest.raises(TypeError, match="append_grid"):
        FNO(1, 1, 2, 4, 1, 1, append_grid=1)
    with pytest.raises(TypeError, match="dtype must be None"):
        FNO(1, 1, 2, 4, 1, 1, dtype=torch.complex64)
    model = FNO(2, 1, 2, 4, 1, 2)
    built64 = FNO(1, 1, 2, 4, 1, 1, dtype=torch.float64)
    assert built64(torch.zeros(1, 1, 4, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(\*batch, 2, \*grid\)"):
        model(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="2 grid dimensions"):
        model(torch.zeros(8, 8))
    with pytest.raises(TypeError, match="does not match the parameters' dtype"):
        model(torch.zeros(1, 2, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        model(torch.zeros(1, 2, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-empty"):
        model(torch.zeros(1, 2, 0, 8))
