"""Position initializations of the DCLS layers: lattice = dilated convolution, the others
inside the support."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import diffnum.interp as di


def test_lattice_v1_layer_is_the_dilated_convolution_1d():
    layer = di.Dcls1d(2, 3, kernel_count=3, dilated_kernel_size=7, padding=3, version="v1",
                      position_init="lattice", dtype=torch.float64)
    assert layer.P[0, 0, 0].tolist() == [-3.0, 0.0, 3.0]
    x = torch.randn(4, 2, 20, dtype=torch.float64)
    # v1 divides each tap by Z = Σ Φ + 1e-7 (dcls's floor): a factor 1/(1 + 1e-7).
    expected = F.conv1d(x, layer.weight / (1 + 1e-7), layer.bias, padding=3, dilation=3)
    torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=0)


def test_lattice_v1_layer_is_the_dilated_convolution_2d():
    layer = di.Dcls2d(2, 3, kernel_count=9, dilated_kernel_size=5, padding=2, version="v1",
                      position_init="lattice", dtype=torch.float64)
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    # 3 × 3 taps, spacing 2 in a 5 × 5 support: the dilated 3 × 3 kernel, tap j at
    # (j // 3, j % 3) along whichever kernel axes P's coordinates move.
    kernel = di.construct_kernel(layer.weight, layer.P, None, 5, "v1")
    assert int((kernel[0, 0] != 0).sum()) == 9
    dense = kernel[:, :, ::2, ::2]
    expected = F.conv2d(x, dense, layer.bias, padding=2, dilation=2)
    torch.testing.assert_close(layer(x), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["dcls", "uniform", "lattice", "spread"])
def test_every_init_stays_in_the_support(kind):
    layer = di.Dcls2d(4, 4, kernel_count=4, dilated_kernel_size=(9, 7), padding=4,
                      position_init=kind)
    for i, size in enumerate((9, 7)):
        assert float(layer.P[i].abs().max()) <= size // 2


def test_spread_jitters_the_lattice_by_less_than_half_a_spacing():
    g = torch.Generator().manual_seed(0)
    P = torch.empty(1, 8, 8, 5)
    di.init_positions(P, (17,), "spread", generator=g)
    lattice = di.lattice_offsets(5, 17)  # spacing 4: [-8, -4, 0, 4, 8]
    assert lattice.tolist() == [-8, -4, 0, 4, 8]
    gap = (P[0] - lattice).abs()
    assert float(gap.max()) <= 2.0 and float(gap.mean()) > 0.5  # moved, within half spacing
    assert float(P.std(dim=(1, 2)).min()) > 0  # taps differ across channels


def test_position_init_arguments_are_checked():
    with pytest.raises(ValueError, match="position_init must be one of"):
        di.Dcls1d(1, 1, 3, dilated_kernel_size=7, position_init="grid")
    with pytest.raises(ValueError, match="kernel_count must be a perfect 2-th power"):
        di.Dcls2d(1, 1, 5, dilated_kernel_size=7, position_init="lattice")


def test_several_taps_in_a_one_cell_support_names_the_argument():
    # What a user swapping nn.Conv2d types writes: Dcls2d(16, 32, 3, padding=1) used to mean
    # 3 taps in a 1×1 support and silently changed the output size.
    with pytest.raises(ValueError, match="third argument is kernel_count"):
        di.Dcls2d(16, 32, 3, padding=1)
    with pytest.raises(ValueError, match=r"in a support of dilated_kernel_size=1 \(1 cell\)"):
        di.Dcls1d(2, 2, kernel_count=2)
    di.Dcls1d(2, 2, kernel_count=1)  # one tap, one cell: a 1×1 convolution
    di.Dcls1d(2, 2, kernel_count=8, dilated_kernel_size=7)  # taps may share cells


@pytest.mark.parametrize("taps, side", [(5, 3), (7, 3), (10, 4), (2, 2)])
def test_spread_takes_any_kernel_count(taps, side):
    """kernel_count need not be a perfect power: m points evenly spaced over the smallest
    k × k lattice with k² >= m, jittered by at most half a spacing, all distinct."""
    g = torch.Generator().manual_seed(0)
    P = torch.empty(2, 3, 3, taps, dtype=torch.float64)
    di.init_positions(P, (9, 9), "spread", generator=g)
    lattice = di.lattice_offsets(side, 9).to(torch.float64)
    spacing = float(lattice[1] - lattice[0])
    for i in range(2):
        nearest = (P[i].unsqueeze(-1) - lattice).abs().min(-1).values
        assert float(nearest.max()) <= spacing / 2 + 1e-12
        assert float(P[i].abs().max()) <= 4
    nearest_point = (P[:, 0, 0].unsqueeze(-1) - lattice).abs().argmin(-1)  # (2, taps)
    cells = {tuple(nearest_point[:, j].tolist()) for j in range(taps)}
    assert len(cells) == taps  # no two taps start on the same lattice point
    layer = di.Dcls2d(2, 2, kernel_count=taps, dilated_kernel_size=9, padding=4,
                      position_init="spread")
    assert float(layer.P.abs().max()) <= 4


def test_spread_on_a_perfect_power_is_the_full_lattice_jittered():
    # 9 taps on 3 × 3: every lattice point once, as before the generalization.
    P = torch.empty(2, 1, 1, 9)
    di.init_positions(P, (7, 7), "lattice")
    Q = torch.empty(2, 1, 1, 9)
    di.init_positions(Q, (7, 7), "spread", generator=torch.Generator().manual_seed(0))
    assert float((Q - P).abs().max()) <= 1.5  # spacing 3
