"""splat / gather: scipy parity, adjointness, gradcheck, the DCLS special case, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import map_coordinates

import diffnum.interp as interp

KERNELS = [("nearest", None), ("linear", None), ("gaussian", 0.7), ("triangle", 1.5),
           ("cubic", None)]
SHAPES = [(7,), (6, 5), (4, 5, 6)]
# float64 interpolation: a handful of rounding errors per value (observed ≤ 3e-15); 1e-10 is
# the bar.
SCIPY_TOL = 1e-10


def _coords(shape, n, generator, lo=0.0, hi=None):
    upper = torch.tensor(shape, dtype=torch.float64) - 1 if hi is None else hi
    coords = lo + torch.rand(n, len(shape), generator=generator, dtype=torch.float64) * (
        upper - lo)
    return coords


@pytest.mark.parametrize("shape", SHAPES)
def test_gather_linear_matches_regular_grid_interpolator(shape):
    g = torch.Generator().manual_seed(len(shape))
    grid = torch.randn(shape, generator=g, dtype=torch.float64)
    coords = _coords(shape, 40, g)
    coords[0] = 0.0  # grid corners and exact grid points are included
    coords[1] = torch.tensor(shape, dtype=torch.float64) - 1
    coords[2] = coords[2].round()
    rgi = RegularGridInterpolator([np.arange(n) for n in shape], grid.numpy(), method="linear")
    ours = interp.gather(grid, coords, "linear").numpy()
    np.testing.assert_allclose(ours, rgi(coords.numpy()), rtol=0, atol=SCIPY_TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_gather_cubic_matches_map_coordinates(shape):
    g = torch.Generator().manual_seed(10 + len(shape))
    grid = torch.randn(shape, generator=g, dtype=torch.float64)
    upper = torch.tensor(shape, dtype=torch.float64)
    coords = _coords(shape, 40, g, lo=-1.5, hi=upper + 0.5)  # also outside: mirror boundary
    ref = map_coordinates(grid.numpy(), coords.numpy().T, order=3, mode="mirror")
    ours = interp.gather(grid, coords, "cubic", padding_mode="mirror").numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=SCIPY_TOL)


def test_cubic_interpolates_grid_points():
    grid = torch.randn(3, 9, dtype=torch.float64)  # leading batch dimension
    coords = torch.arange(9, dtype=torch.float64).reshape(9, 1)
    # Prefilter by an explicit float64 inverse: round-off ~1e-15 per value.
    torch.testing.assert_close(interp.gather(grid, coords, "cubic", padding_mode="mirror"), grid,
                               rtol=0, atol=1e-12)


@settings(max_examples=10)
@given(st.sampled_from(KERNELS), st.sampled_from(SHAPES), st.sampled_from(["zeros", "mirror"]),
       st.integers(0, 2**16))
def test_splat_is_adjoint_of_gather(kernel_width, shape, mode, seed):
    kernel, width = kernel_width
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(shape, generator=g, dtype=torch.float64)
    upper = torch.tensor(shape, dtype=torch.float64)
    coords = _coords(shape, 12, g, lo=-1.0, hi=upper)
    values = torch.randn(12, generator=g, dtype=torch.float64)
    kwargs = {"width": width, "padding_mode": mode}
    lhs = (interp.splat(values, coords, shape, kernel, **kwargs) * grid).sum()
    rhs = (values * interp.gather(grid, coords, kernel, prefilter=False, **kwargs)).sum()
    # ⟨Sv, G⟩ = ⟨v, S*G⟩ up to float64 summation order.
    assert abs((lhs - rhs).item()) <= 1e-12 * (1 + abs(lhs.item()))


@pytest.mark.parametrize(("kernel", "width"), KERNELS)
@pytest.mark.parametrize("d", [1, 2])
def test_gradcheck(kernel, width, d):
    shape = (5,) if d == 1 else (4, 5)
    g = torch.Generator().manual_seed(d)
    grid = torch.randn(2, *shape, generator=g, dtype=torch.float64, requires_grad=True)
    # Keep coordinates away from the integers/half-integers where the kernels have kinks.
    coords = (torch.rand(2, 6, d, generator=g, dtype=torch.float64) * 0.3 + 0.35
              + torch.randint(0, 3, (2, 6, d), generator=g)).requires_grad_()
    values = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    leaves = [values, coords]
    extra = {}
    if width is not None:
        w = torch.full((2, 6, d), width, dtype=torch.float64, requires_grad=True)
        leaves.append(w)

    def do_splat(v, c, *w):
        return interp.splat(v, c, shape, kernel, width=w[0] if w else None, truncate=None)

    def do_gather(G, c, *w):
        return interp.gather(G, c, kernel, width=w[0] if w else None, truncate=None, **extra)

    assert torch.autograd.gradcheck(do_splat, leaves)
    assert torch.autograd.gradcheck(do_gather, [grid, *leaves[1:]])


def test_nearest_has_zero_coordinate_gradient():
    coords = torch.tensor([[1.3], [2.8]], dtype=torch.float64, requires_grad=True)
    out = interp.gather(torch.arange(5.0, dtype=torch.float64), coords, "nearest")
    assert out.tolist() == [1.0, 3.0]
    (grad,) = torch.autograd.grad(out.sum(), coords)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_gaussian_truncation_error_bound():
    g = torch.Generator().manual_seed(0)
    coords = _coords((40,), 8, g)
    values = torch.randn(8, generator=g, dtype=torch.float64)
    exact = interp.splat(values, coords, (40,), "gaussian", width=2.0, truncate=None)
    cut = interp.splat(values, coords, (40,), "gaussian", width=2.0, truncate=3.0)
    # Every dropped weight is below exp(-3²/2) of its point's peak.
    bound = np.exp(-4.5) * values.abs().sum().item()
    assert 0 < (exact - cut).abs().max().item() <= bound


def test_splat_linear_is_the_v0_kernel():
    # DCLS v0 is a linear splat of the weights at q = p + ⌊s/2⌋ (axes per position_axes).
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    P = (torch.rand(2, 3, 2, 5, generator=g, dtype=torch.float64) - 0.5) * 6
    K = interp.construct_kernel(weight, P, None, (7, 7), "v0")
    axes = interp.position_axes("v0", 2)
    coords = torch.stack([P[axes.index(a)] + 3 for a in range(2)], dim=-1)
    # Same arithmetic up to operation order in float64.
    torch.testing.assert_close(interp.splat(weight, coords, (7, 7), "linear"), K,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: interp.splat(torch.zeros(4), torch.zeros(4, 2), (5,)), ValueError,
         r"coords must have shape \(\.\.\., n, 1\)"),
        (lambda: interp.splat(torch.zeros(3), torch.zeros(4, 1), (5,)), ValueError,
         "values must have shape"),
        (lambda: interp.splat(torch.zeros(4), torch.zeros(4, 1), (5,), "gaussian"), ValueError,
         "needs a width"),
        (lambda: interp.splat(torch.zeros(4), torch.zeros(4, 1), (5,), "linear", width=1.0),
         ValueError, "takes no width"),
        (lambda: interp.gather(torch.zeros(5), torch.zeros(4, 1), "bicubic"), ValueError,
         "kind must be one of"),
        (lambda: interp.gather(torch.zeros(5), torch.zeros(4, 1), padding_mode="wrap"), ValueError,
         "padding_mode must be one of"),
        (lambda: interp.gather(torch.zeros(5), torch.zeros(4, 1, dtype=torch.float64)),
         TypeError, "dtype"),
        (lambda: interp.gather(torch.zeros(5), torch.zeros(4, 1), "triangle", width=-1.0),
         ValueError, "positive"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
