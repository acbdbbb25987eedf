"""Tests for sqrtm: forward accuracy per method and regime, Lyapunov backward, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from diffnum.factor import sqrtm

METHODS = ["newton_schulz", "taylor", "pade", "eigh"]


def _spd(n: int, low: float, high: float, seed: int, dtype=torch.float64, batch=()):
    """Q diag(λ) Qᵀ with λ geometric in [low, high]: known spectrum and condition number."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(*batch, n, n, dtype=torch.float64, generator=g))
    lam = torch.logspace(math.log10(low), math.log10(high), n, dtype=torch.float64)
    A = (Q * lam) @ Q.mT
    return (0.5 * (A + A.mT)).to(dtype)


# (method, n, condition number): each inside the regime its docstring promises float64
# precision for. Taylor and Padé need δ = λ_min/‖A‖_F large: n = 6 with κ = 2 gives δ >= 0.2.
CASES = [
    ("newton_schulz", 6, 2.0), ("newton_schulz", 64, 1e4),
    ("taylor", 6, 2.0),
    ("pade", 6, 2.0), ("pade", 6, 5.0),
    ("eigh", 6, 2.0), ("eigh", 64, 1e4),
]


@pytest.mark.parametrize(("method", "n", "kappa"), CASES)
def test_matches_scipy(method, n, kappa):
    A = _spd(n, 1.0, kappa, seed=n)
    reference = torch.from_numpy(np.real(scipy.linalg.sqrtm(A.numpy())))
    S = sqrtm(A, method)
    # The square root's condition number is ~κ^{1/2}/2; with κ <= 1e4 relative errors of
    # eps·κ^{1/2}·n ≈ 1e-12 are the best any method (scipy included) achieves; 1e-10 leaves
    # room for that and fails on any truncation error above it.
    assert float((S - reference).norm() / reference.norm()) <= 1e-10
    R = sqrtm(A, method, inverse=True)
    assert float((R - torch.linalg.inv(reference)).norm() / R.norm()) <= 1e-10


@pytest.mark.parametrize("method", ["newton_schulz", "eigh"])
def test_square_and_inverse_identities(method):
    n, kappa = 40, 1e3
    A = _spd(n, 1.0, kappa, seed=11)
    S = sqrtm(A, method)
    R = sqrtm(A, method, inverse=True)
    eye = torch.eye(n, dtype=A.dtype)
    # Backward errors of a few hundred eps (n = 40 products) times ‖S‖²/‖A‖ ≈ 1.
    assert float((S @ S - A).norm() / A.norm()) <= 1e-12
    # R A R = I amplifies by ‖R‖²‖A‖ = κ = 1e3 over the same rounding.
    assert float((R @ A @ R - eye).norm() / math.sqrt(n)) <= 1e-10
    torch.testing.assert_close(S, S.mT, atol=0, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("inverse", [False, True])
def test_batched_matches_loop(method, inverse):
    A = _spd(5, 1.0, 2.0, seed=12, batch=(2, 3))
    out = sqrtm(A, method, inverse)
    assert out.shape == A.shape
    loop = torch.stack([torch.stack([sqrtm(a, method, inverse) for a in row]) for row in A])
    # Same arithmetic per matrix up to BLAS blocking: rounding only.
    torch.testing.assert_close(out, loop, atol=1e-13, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_float32(method):
    A = _spd(6, 1.0, 2.0, seed=13)
    out = sqrtm(A.float(), method)
    assert out.dtype == torch.float32
    # float32 rounding (6e-8) accumulated over the method's products on a κ = 2 matrix.
    torch.testing.assert_close(out.double(), sqrtm(A, "eigh"), atol=2e-6, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("inverse", [False, True])
def test_gradcheck(method, inverse):
    A = _spd(4, 1.0, 2.0, seed=14).requires_grad_(True)

    # Symmetrize inside so finite-difference perturbations stay symmetric (sqrtm rejects
    # asymmetric input), and weight the output so the test sees every entry of the gradient.
    def f(x):
        return sqrtm(0.5 * (x + x.mT), method, inverse)

    assert torch.autograd.gradcheck(f, (A,))


def test_backward_with_repeated_eigenvalues():
    # For A = c I the gradient of ⟨W, A^{1/2}⟩ is W/(2√c) (S X + X S = W with S = √c I);
    # an eigh-autograd backward would divide by the zero eigenvalue gaps here.
    c = 4.0
    W = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(15))
    W = 0.5 * (W + W.T)
    for method in METHODS:
        for inverse, expected in ((False, W / (2 * math.sqrt(c))), (True, -W / (2 * c**1.5))):
            A = (c * torch.eye(5, dtype=torch.float64)).requires_grad_(True)
            (sqrtm(A, method, inverse) * W).sum().backward()
            torch.testing.assert_close(A.grad, expected, atol=1e-12, rtol=0)


def test_warns_when_not_converged():
    A = _spd(30, 1.0, 1e3, seed=16)
    with pytest.warns(RuntimeWarning, match="did not reach the tolerance"):
        sqrtm(A, "newton_schulz", steps=3)
    with pytest.warns(RuntimeWarning, match="method='taylor'"):
        sqrtm(A, "taylor", steps=10)
    with pytest.warns(RuntimeWarning, match="method='pade'"):
        sqrtm(A, "pade", steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sqrtm(A, "taylor", steps=10, check=False)  # asked not to check
        sqrtm(_spd(50, 1.0, 1e8, seed=17), "newton_schulz")  # converges: no warning


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([[1.0]],), {}, TypeError, "A must be a torch.Tensor"),
        ((torch.eye(3, dtype=torch.int64),), {}, TypeError, "A must be float32 or float64"),
        ((torch.ones(2, 3),), {}, ValueError, "A must be square"),
        ((torch.tensor([[2.0, 1.0], [0.0, 2.0]]),), {}, ValueError, "A must be symmetric"),
        ((torch.diag(torch.tensor([1.0, -1.0])),), {}, ValueError, "positive definite"),
        ((torch.diag(torch.tensor([1.0, -1.0])), "eigh"), {}, ValueError, "positive definite"),
        ((torch.zeros(3, 3),), {}, ValueError, "positive definite"),
        ((torch.eye(3), "cholesky"), {}, ValueError, "method must be one of"),
        ((torch.eye(3),), {"inverse": 1}, TypeError, "inverse must be a bool"),
        ((torch.eye(3),), {"steps": 0}, ValueError, "steps must satisfy"),
        ((torch.eye(3), "eigh"), {"steps": 5}, ValueError, "steps is not used"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        sqrtm(*args, **kwargs)
