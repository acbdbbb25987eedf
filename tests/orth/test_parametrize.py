"""Tests for diffnum.orth.orthogonal: orthogonal weights for every map (linear, wide, conv,
batched), training keeps them orthogonal, right_inverse round trips, bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffnum.orth import MAPS, orthogonal

F64 = torch.float64
EXACT_TOL = 1e-13  # as in test_maps: float64 rounding of small maps is ~1e-15


def _options(map_name, side):
    # butterfly needs side = b·2^L: b = side for odd sides (one OFT block).
    if map_name == "butterfly" and side % 2:
        return {"block_size": side}
    return {}


def _orthonormality(W, rows):
    """max |QᵀQ − I| of the tall view of W viewed as (…, rows, cols)."""
    M = W.reshape(*W.shape[:-2], rows, -1) if W.ndim == 2 else W
    tall = M if M.shape[-2] >= M.shape[-1] else M.mT
    eye = torch.eye(tall.shape[-1], dtype=W.dtype)
    return float((tall.mT @ tall - eye).detach().abs().amax())


def _random_orthogonal(n, k, batch=(), seed=0, det=None):
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(*batch, n, n, dtype=F64, generator=g))
    Q = Q * R.diagonal(dim1=-2, dim2=-1).sign().unsqueeze(-2)
    if det is not None:
        flip = torch.linalg.det(Q) * det < 0
        Q[..., :, -1] = torch.where(flip.unsqueeze(-1), -Q[..., :, -1], Q[..., :, -1])
    return Q[..., :k]


@pytest.mark.parametrize("map_name", MAPS)
@pytest.mark.parametrize(("out_features", "in_features"), [(6, 6), (8, 3), (3, 8), (5, 5)])
def test_linear_weight_is_orthogonal_and_assignable(map_name, out_features, in_features):
    torch.manual_seed(0)
    side = max(out_features, in_features)
    layer = nn.Linear(in_features, out_features, dtype=F64)
    orthogonal(layer, map=map_name, **_options(map_name, side))
    W = layer.weight
    assert W.shape == (out_features, in_features)
    assert _orthonormality(W, out_features) <= EXACT_TOL
    # Gradients reach the trainable tensor.
    layer(torch.randn(2, in_features, dtype=F64)).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None
    # right_inverse: an orthogonal weight assigned is represented exactly (to rounding).
    k = min(out_features, in_features)
    det = (-1) ** k if map_name == "householder" and out_features == in_features else None
    Q = _random_orthogonal(side, k, seed=1, det=det)
    Q = Q if out_features >= in_features else Q.mT
    layer.weight = Q
    torch.testing.assert_close(layer.weight, Q, rtol=0, atol=1e-13)


def test_registration_starts_at_the_nearest_orthogonal_matrix():
    layer = nn.Linear(4, 6, dtype=F64)
    W0 = layer.weight.detach().clone()
    U, _, Vh = torch.linalg.svd(W0, full_matrices=False)
    for map_name in ("cayley", "householder", "polar", "givens"):
        layer = nn.Linear(4, 6, dtype=F64)
        with torch.no_grad():
            layer.weight.copy_(W0)
        orthogonal(layer, map=map_name)
        torch.testing.assert_close(layer.weight, U @ Vh, rtol=0, atol=1e-13)


def test_square_householder_registration_keeps_the_reachable_determinant():
    # r = n = 4 reflections reach det +1 only: a det −1 weight starts at the nearest det +1.
    W0 = _random_orthogonal(4, 4, seed=2, det=-1.0) @ torch.diag(
        torch.tensor([3.0, 2.0, 1.5, 1.0], dtype=F64))
    layer = nn.Linear(4, 4, bias=False, dtype=F64)
    with torch.no_grad():
        layer.weight.copy_(W0)
    orthogonal(layer, map="householder")
    assert abs(float(torch.linalg.det(layer.weight.detach())) - 1) <= 1e-13
    with pytest.raises(ValueError, match="weight has determinant -1"):
        layer.weight = _random_orthogonal(4, 4, seed=3, det=-1.0)
    # With reflections=3 the other component is reachable.
    layer3 = orthogonal(nn.Linear(4, 4, dtype=F64), map="householder", reflections=3)
    Q = _random_orthogonal(4, 4, seed=3, det=-1.0)
    layer3.weight = Q
    torch.testing.assert_close(layer3.weight, Q, rtol=0, atol=1e-13)


@pytest.mark.parametrize("map_name", ["cayley", "matrix_exp", "givens"])
def test_trivialized_maps_take_any_orthogonal_weight(map_name):
    # det −1 and eigenvalue −1 are outside the images of cayley/exp/givens on their own; the
    # buffer B in Q = B f(θ) takes them, θ = 0.
    layer = orthogonal(nn.Linear(5, 5, dtype=F64), map=map_name)
    for Q in (_random_orthogonal(5, 5, seed=4, det=-1.0), -torch.eye(5, dtype=F64)):
        layer.weight = Q
        torch.testing.assert_close(layer.weight, Q, rtol=0, atol=1e-14)
        assert float(layer.parametrizations.weight.original.abs().max()) == 0.0


def test_conv_weight_is_orthogonal_as_out_by_in_times_kernel():
    conv = orthogonal(nn.Conv2d(3, 4, 3, dtype=F64), map="cayley")
    W = conv.weight.reshape(4, 27)  # (out, in·k·k): wide, orthonormal rows
    torch.testing.assert_close(W @ W.T, torch.eye(4, dtype=F64), rtol=0, atol=EXACT_TOL)
    tall = orthogonal(nn.Conv1d(2, 8, 2, dtype=F64), map="householder")
    W = tall.weight.reshape(8, 4)
    torch.testing.assert_close(W.T @ W, torch.eye(4, dtype=F64), rtol=0, atol=EXACT_TOL)
    assert conv(torch.randn(1, 3, 5, 5, dtype=F64)).shape == (1, 4, 3, 3)


@pytest.mark.parametrize("map_name", MAPS)
def test_batched_weight(map_name):
    holder = nn.Module()
    holder.weight = nn.Parameter(torch.randn(2, 3, 4, 4, dtype=F64))
    orthogonal(holder, map=map_name)
    W = holder.weight
    assert W.shape == (2, 3, 4, 4)
    assert _orthonormality(W, 4) <= EXACT_TOL
    Q = _random_orthogonal(4, 4, batch=(2, 3), seed=5,
                           det=1.0 if map_name == "householder" else None)
    holder.weight = Q
    torch.testing.assert_close(holder.weight, Q, rtol=0, atol=1e-13)


@pytest.mark.parametrize("map_name", MAPS)
def test_training_keeps_the_weight_orthogonal(map_name):
    torch.manual_seed(0)
    layer = orthogonal(nn.Linear(8, 8, dtype=F64), map=map_name)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, y = torch.randn(16, 8, dtype=F64), torch.randn(16, 8, dtype=F64)
    losses = []
    for _ in range(5):
        loss = (layer(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    tol = EXACT_TOL if map_name != "cayley_neumann" else 1e-3  # Neumann: O(‖A‖^5) only
    assert _orthonormality(layer.weight, 8) <= tol


def test_float32_weights():
    # float32 eps 1.2e-7; small maps stay within ~100 eps.
    for map_name in MAPS:
        layer = orthogonal(nn.Linear(8, 12), map=map_name)
        assert layer.weight.dtype == torch.float32
        assert _orthonormality(layer.weight, 12) <= 1e-5


def test_options_reach_the_map():
    layer = orthogonal(nn.Linear(16, 16), map="butterfly", block_size=4, factors=2)
    assert layer.parametrizations.weight.original.shape == (2, 4, 4, 4)
    layer = orthogonal(nn.Linear(6, 6), map="givens", rounds=2)
    assert layer.parametrizations.weight.original.shape == (2, 3)
    layer = orthogonal(nn.Linear(3, 7), map="householder", reflections=5)
    assert layer.parametrizations.weight.original.shape == (7, 5)
    assert _orthonormality(layer.weight, 7) <= 1e-5


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: orthogonal(nn.Linear(3, 3), map="qr"), ValueError, "map must be one of"),
    (lambda: orthogonal(nn.Linear(3, 3), name="bias"), ValueError, "module.bias must have"),
    (lambda: orthogonal(nn.Linear(3, 3), name="nope"), ValueError, "name must name a tensor"),
    (lambda: orthogonal(nn.Linear(3, 3), name=3), TypeError, "name must be a str"),
    (lambda: orthogonal(torch.zeros(3, 3)), TypeError, "module must be a torch.nn.Module"),
    (lambda: orthogonal(nn.Linear(3, 3), map="cayley", terms=3), TypeError,
     r"unexpected option\(s\) \['terms'\]"),
    (lambda: orthogonal(nn.Linear(3, 3), map="cayley_neumann", terms=0), ValueError,
     "terms must satisfy"),
    (lambda: orthogonal(nn.Linear(3, 3), map="householder", reflections=1), ValueError,
     "reflections must satisfy"),
    (lambda: orthogonal(nn.Linear(6, 6), map="butterfly", block_size=4), ValueError,
     "block_size must divide"),
    (lambda: orthogonal(nn.Linear(6, 6), map="butterfly", block_size=3, factors=2),
     ValueError, "factors must satisfy"),
    (lambda: orthogonal(nn.Linear(6, 6), map="givens", rounds=0), ValueError,
     "rounds must satisfy"),
])
def test_bad_arguments_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_assigning_a_non_orthogonal_or_misshaped_weight_raises():
    layer = orthogonal(nn.Linear(4, 4, dtype=F64))
    with pytest.raises(ValueError, match="weight must have orthonormal columns"):
        layer.weight = 2 * torch.eye(4, dtype=F64)
    wide = orthogonal(nn.Linear(6, 2, dtype=F64), map="polar")
    with pytest.raises(ValueError, match="weight must have orthonormal rows"):
        wide.weight = torch.ones(2, 6, dtype=F64)
    with pytest.raises(ValueError, match="weight must have the parametrized shape"):
        layer.parametrizations.weight[0].right_inverse(torch.eye(3, dtype=F64))
