"""The router: blocks are disjoint, cover the grid, and partition ∘ unpartition = identity."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffnum.constrain import expert_index, partition_domain, unpartition_domain
from diffnum.pde import uniform_grid


def _grid(shape):
    names = {2: ("x", "t"), 3: ("x", "y", "t")}[len(shape)]
    return uniform_grid({n: (0.0, 1.0, s) for n, s in zip(names, shape)})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 3, 4]), min_size=2, max_size=3),
       st.lists(st.integers(2, 3), min_size=3, max_size=3))
def test_round_trip_for_every_layout(layout, multiples):
    shape = tuple(k * m for k, m in zip(layout, multiples))
    grid = _grid(shape)
    basis = torch.randn(2, grid.size, 3, dtype=torch.float64)
    blocks = partition_domain(basis, grid, tuple(layout))
    K = 1
    for k in layout:
        K *= k
    assert blocks.shape == (2, K, grid.size // K, 3)
    assert torch.equal(unpartition_domain(blocks, grid, tuple(layout), dim=1), basis)
    field = torch.randn(grid.size, dtype=torch.float64)
    assert torch.equal(
        unpartition_domain(partition_domain(field, grid, tuple(layout), dim=-1), grid,
                           tuple(layout), dim=0), field)
    index = expert_index(grid, tuple(layout))
    assert torch.equal(index.reshape(-1).sort().values, torch.arange(grid.size))


def test_blocks_are_contiguous_boxes():
    grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 6)})
    index = expert_index(grid, {"x": 4})  # 4 pieces of x, all t
    assert index.shape == (4, 12)
    ix = index // 6  # x index of each point (C order: x major)
    for k in range(4):
        assert set(ix[k].tolist()) == {2 * k, 2 * k + 1}
        assert sorted((index[k] % 6).tolist()) == sorted(list(range(6)) * 2)


def test_bad_layouts_are_named():
    grid = uniform_grid({"x": (0.0, 1.0, 10), "t": (0.0, 1.0, 6)})
    with pytest.raises(ValueError, match="'x' has 10 points"):
        expert_index(grid, (4, 1))
    with pytest.raises(ValueError, match="one block count per grid axis"):
        expert_index(grid, (2,))
    with pytest.raises(ValueError, match="does not have"):
        expert_index(grid, {"y": 2})
    with pytest.raises(ValueError, match="must have the grid's 60 points"):
        partition_domain(torch.zeros(59, 2), grid, (2, 1))
