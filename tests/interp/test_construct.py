"""construct_kernel: parity with dcls 0.1.1, agreement of constructions, gradcheck, errors."""

from __future__ import annotations

import logging

import pytest
import torch

from diffnum.interp import construct_kernel, position_axes
from tests.interp._helpers import rel_err, special_positions

dcls_modules = pytest.importorskip("DCLS.construct.modules")
logging.getLogger().setLevel(logging.ERROR)  # dcls logs a CUDA warning per 2-D layer

VERSIONS = ["v0", "v1", "max", "gauss"]
# Non-cubic supports exercise the package's coordinate/axis quirks; even sizes the asymmetric grid.
SIZES = {1: [(7,), (6,)], 2: [(5, 4), (4, 4)], 3: [(3, 4, 5)]}
CONSTRUCTORS = {1: "ConstructKernel1d", 2: "ConstructKernel2d", 3: "ConstructKernel3d"}
# float32 results that differ only in summation order and in exp(-½Σx²) vs Πexp(-½x²):
# observed ≤ 1e-6 norm-wise; 1e-5 is the parity bar.
PARITY_TOL = 1e-5


def _inputs(d, size, version, dtype=torch.float32, seed=0, lead=(3, 2), m=4):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(*lead, m, generator=g, dtype=dtype)
    P = special_positions(torch.empty(d, *lead, m, dtype=dtype), size, g)
    SIG = None
    if version in ("max", "gauss"):
        SIG = torch.randn(d, *lead, m, generator=g, dtype=dtype) * 0.5
        SIG.reshape(d, -1)[:, 0] = 0.0  # |SIG| has a kink at 0
    return weight, P, SIG


def _reference(weight, P, SIG, size, version):
    d = P.shape[0]
    cls = getattr(dcls_modules, CONSTRUCTORS[d])
    module = cls(weight.shape[0], weight.shape[1], 1, weight.shape[2], size, version)
    return module(weight, P, SIG)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_parity_with_dcls(version, d):
    for size in SIZES[d]:
        weight, P, SIG = _inputs(d, size, version)
        leaves_ref = [t.clone().requires_grad_() for t in (weight, P, SIG) if t is not None]
        K_ref = _reference(*(leaves_ref + [None] * (3 - len(leaves_ref))), size, version)
        G = torch.randn(K_ref.shape, generator=torch.Generator().manual_seed(1))
        grads_ref = torch.autograd.grad((K_ref * G).sum(), leaves_ref)
        methods = ["auto", "dense", "separable"] + (["scatter"] if version in ("v0", "v1") else [])
        for method in methods:
            leaves = [t.clone().requires_grad_() for t in (weight, P, SIG) if t is not None]
            args = leaves + [None] * (3 - len(leaves))
            K = construct_kernel(*args, size, version, method=method)
            assert K.shape == K_ref.shape
            assert rel_err(K, K_ref) <= PARITY_TOL, (method, size)
            grads = torch.autograd.grad((K * G).sum(), leaves)
            for name, a, b in zip(["weight", "P", "SIG"], grads, grads_ref):
                assert rel_err(a, b) <= PARITY_TOL, (method, size, name, rel_err(a, b))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_gradcheck_float64(version, d):
    size = {1: (5,), 2: (4, 3), 3: (3, 3, 2)}[d]
    g = torch.Generator().manual_seed(3)
    m = 2
    weight = torch.randn(2, 1, m, generator=g, dtype=torch.float64)
    # Away from integers: the hat functions are not differentiable there (finite differences
    # would straddle the kink); the sub-gradient convention is covered by the parity test.
    P = (torch.rand(d, 2, 1, m, generator=g, dtype=torch.float64) - 0.5) * 1.6 + 0.05
    SIG = None
    if version in ("max", "gauss"):
        SIG = torch.rand(d, 2, 1, m, generator=g, dtype=torch.float64) * 0.5 + 0.1
    methods = ["dense", "separable"] + (["scatter"] if version in ("v0", "v1") else [])
    for method in methods:
        leaves = [t.clone().requires_grad_() for t in (weight, P, SIG) if t is not None]

        def fn(*xs, method=method):
            args = list(xs) + [None] * (3 - len(xs))
            return construct_kernel(*args, size, version, method=method)

        assert torch.autograd.gradcheck(fn, leaves)


def test_batched_leading_dimensions():
    weight, P, SIG = _inputs(2, (5, 5), "gauss", lead=(2, 3, 4))
    K = construct_kernel(weight, P, SIG, 5, "gauss")
    assert K.shape == (2, 3, 4, 5, 5)
    K0 = construct_kernel(weight[1], P[:, 1], SIG[:, 1], 5, "gauss")
    assert torch.equal(K[1], K0)


def test_position_axes_convention():
    assert position_axes("gauss", 2) == (1, 0)
    assert position_axes("v0", 3) == (0, 2, 1)
    assert position_axes("v1", 1) == (0,)


def test_integer_bilinear_is_sparse():
    # v0 at integer positions puts exactly w_k at q_k: the sparse m-tap kernel.
    weight = torch.tensor([[[1.5, -2.0, 0.25]]])
    P = torch.tensor([[[[-2.0, 0.0, 1.0]]], [[[1.0, 2.0, -1.0]]]])
    K = construct_kernel(weight, P, None, 5, "v0")
    expected = torch.zeros(1, 1, 5, 5)
    for k in range(3):
        expected[0, 0, int(P[0, 0, 0, k]) + 2, int(P[1, 0, 0, k]) + 2] += weight[0, 0, k]
    assert torch.equal(K, expected)


def test_mass_is_conserved_inside_support():
    # Normalized versions deposit w_k/(1 + 1e-7/Σ) inside the support: the kernel sums to Σ w.
    weight, P, SIG = _inputs(2, (7, 7), "gauss")
    P = P.clamp(-2, 2)  # keep taps well inside so no mass is lost at the border
    for version, sig in [("v1", None), ("gauss", SIG), ("max", SIG)]:
        K = construct_kernel(weight, P, sig, 7, version)
        # float32 sums of 49 entries and the 1e-7/Z normalization offset: ~1e-6 observed.
        torch.testing.assert_close(K.sum((-1, -2)), weight.sum(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weight": torch.zeros(2, 3, 0)}, ValueError, "kernel_count >= 1"),
        ({"P": torch.zeros(2, 2, 3, 5)}, ValueError, "P must have shape"),
        ({"P": torch.zeros(4, 2, 3, 4)}, ValueError, "P must have shape"),
        ({"SIG": torch.zeros(2, 2, 3, 5)}, ValueError, "SIG must have the shape"),
        ({"SIG": None}, ValueError, "SIG is required"),
        ({"version": "v2"}, ValueError, "version must be one of"),
        ({"size": (5, 0)}, ValueError, "positive"),
        ({"size": (5, 5, 5)}, ValueError, "sequence of 2 ints"),
        ({"weight": torch.zeros(2, 3, 4, dtype=torch.int64)}, TypeError,
         "float32, float64, bfloat16 or float16"),
        ({"P": torch.zeros(2, 2, 3, 4, dtype=torch.float64)}, TypeError, "dtype"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = {"weight": torch.zeros(2, 3, 4), "P": torch.zeros(2, 2, 3, 4),
            "SIG": torch.zeros(2, 2, 3, 4), "size": (5, 5), "version": "gauss"}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        construct_kernel(args["weight"], args["P"], args["SIG"], args["size"], args["version"])


def test_sig_rejected_for_bilinear():
    with pytest.raises(ValueError, match="SIG is not used"):
        construct_kernel(torch.zeros(2, 3, 4), torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 3, 4),
                         5, "v1")


def test_scatter_rejects_full_support_versions():
    with pytest.raises(ValueError, match="scatter"):
        construct_kernel(torch.zeros(2, 3, 4), torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4),
                         5, "gauss", method="scatter")
