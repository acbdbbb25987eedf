"""Tests for msign: Newton–Schulz polar factor against the exact U Vᵀ and the scalar map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffnum.factor import msign
from diffnum.factor._polar import MUON_COEFFICIENTS

CUBIC = (1.5, -0.5, 0.0)


def _orthonormal(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=generator))
    return Q


def _with_singular_values(m: int, n: int, sigma: torch.Tensor, seed: int):
    """M = U diag(σ) Vᵀ with known factors, so the expected output can be written down."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, V = _orthonormal(m, k, g), _orthonormal(n, k, g)
    return U @ torch.diag(sigma) @ V.T, U, V


def _scalar_map(x: torch.Tensor, schedule) -> torch.Tensor:
    for a, b, c in schedule:
        x = a * x + b * x**3 + c * x**5
    return x


SHAPES = [(6, 6), (9, 5), (5, 9), (4, 16)]  # square, tall, wide, wide enough for the Gram-only path


@pytest.mark.parametrize("shape", SHAPES)
def test_cubic_newton_schulz_converges_to_exact_polar(shape):
    m, n = shape
    k = min(m, n)
    sigma = torch.linspace(0.1, 1.0, k, dtype=torch.float64)
    M, U, V = _with_singular_values(m, n, sigma, seed=1)
    # σ₀ >= 0.1/‖σ‖ >= 0.04: the cubic map grows σ by 1.5 per step until the quadratic phase,
    # so 60 steps are far past convergence and only rounding is left.
    out = msign(M, steps=60, schedule=CUBIC)
    # The fixed point is exactly U Vᵀ; what remains is rounding of ~60 well-conditioned
    # products (|p'| <= 1 near the fixed point), i.e. a few hundred eps.
    torch.testing.assert_close(out, U @ V.T, atol=1e-13, rtol=0)
    torch.testing.assert_close(out, msign(M, method="svd"), atol=1e-13, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_muon_output_is_scalar_map_of_singular_values(shape):
    m, n = shape
    k = min(m, n)
    # σ spans [0.03, 1] geometrically and ‖σ‖ <= √k <= 3, so the normalised σ₀ lie in
    # [1e-2, 1], the range where the band below holds.
    sigma = torch.logspace(math.log10(0.03), 0, k, dtype=torch.float64)
    M, U, V = _with_singular_values(m, n, sigma, seed=2)
    sigma0 = sigma / sigma.norm()
    assert sigma0.min() >= 1e-2
    out = msign(M)
    expected_values = _scalar_map(sigma0, [MUON_COEFFICIENTS] * 5)
    # X_k stays U f_k(Σ) Vᵀ exactly in exact arithmetic, so output and U f(Σ) Vᵀ differ by
    # rounding only: eps amplified by at most |p'| <= a = 3.44 per step, 3.44^5 ≈ 500.
    torch.testing.assert_close(out, U @ torch.diag(expected_values) @ V.T, atol=1e-12, rtol=0)
    # Singular values inside Muon's band: p maps [0.6818, 1.1363] into itself and five steps
    # take any σ₀ in [1e-2, 1] into [0.6818, 1.1344] (dense scalar sweep; see the docstring).
    s = torch.linalg.svdvals(out)
    assert s.min() >= 0.6818 and s.max() <= 1.1344, (s.min(), s.max())


def test_muon_band_on_dense_scalar_sweep():
    # The band claimed in the docstring, checked on the scalar map itself.
    x = torch.logspace(-2, 0, 200_001, dtype=torch.float64)
    y = _scalar_map(x, [MUON_COEFFICIENTS] * 5)
    assert 0.6818 <= float(y.min()) <= 0.6819 and 1.1343 <= float(y.max()) <= 1.1344


def test_per_step_schedule_applies_each_triple_once():
    schedule = [(4.0, -6.0, 2.5), (3.4445, -4.775, 2.0315), (2.0, -1.5, 0.5), (1.5, -0.5, 0.0)]
    sigma = torch.linspace(0.05, 1.0, 5, dtype=torch.float64)
    M, U, V = _with_singular_values(7, 5, sigma, seed=3)
    # An arbitrary schedule (it sends some σ₀ ∈ (0, 1] below 0, not these): refused unless
    # check=False, which this test of the mechanics passes.
    with pytest.raises(ValueError, match="negative values"):
        msign(M, steps=4, schedule=schedule)
    out = msign(M, steps=4, schedule=schedule, check=False)
    expected = U @ torch.diag(_scalar_map(sigma / sigma.norm(), schedule)) @ V.T
    # Same rounding argument as above; these polynomials have |p'| <= 4 on the iterates.
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    # One triple means that triple for every step; a tensor schedule is accepted too.
    torch.testing.assert_close(
        msign(M, steps=3, schedule=MUON_COEFFICIENTS),
        msign(M, steps=3, schedule=[MUON_COEFFICIENTS] * 3),
        atol=0,
        rtol=0,
    )
    torch.testing.assert_close(
        msign(M, steps=4, schedule=torch.tensor(schedule, dtype=torch.float64),
              check=False),
        out, atol=0, rtol=0
    )


@pytest.mark.parametrize("method", ["newton_schulz", "svd"])
@pytest.mark.parametrize("precondition", ["frobenius", "aol"])
def test_batched_matches_loop(method, precondition):
    M = torch.randn(2, 3, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = msign(M, method=method, precondition=precondition)
    assert out.shape == M.shape and out.dtype == M.dtype
    loop = torch.stack(
        [torch.stack([msign(Mij, method=method, precondition=precondition) for Mij in Mi])
         for Mi in M]
    )
    # Batched BLAS may block differently from the single-matrix call: rounding only.
    torch.testing.assert_close(out, loop, atol=1e-13, rtol=0)


def test_float32_matches_float64():
    M = torch.randn(64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out64 = msign(M)
    out32 = msign(M.float())
    assert out32.dtype == torch.float32
    # float32 rounding (6e-8) amplified by at most ~500 over five steps (see above).
    torch.testing.assert_close(out32.double(), out64, atol=5e-5, rtol=0)


def test_scale_invariance_and_zero_matrix():
    M = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    for precondition in ("frobenius", "aol"):
        ref = msign(M, precondition=precondition)
        for scale in (1e-8, 1e8):
            # Both starts divide the scale out exactly up to rounding of the norm/row sums.
            torch.testing.assert_close(msign(scale * M, precondition=precondition), ref,
                                       atol=1e-12, rtol=0)
        Z = torch.zeros(4, 6, requires_grad=True)
        out = msign(Z, precondition=precondition)
        assert torch.equal(out, torch.zeros(4, 6))
        out.sum().backward()
        assert torch.isfinite(Z.grad).all()


@given(
    arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(1, 7)),
           elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False))
)
def test_aol_start_has_spectral_norm_at_most_one(a):
    X0 = msign(torch.from_numpy(a), steps=0, precondition="aol")
    # ‖diag(s) M‖₂² = λ_max(S G S) <= max_i Σ_j s_i |G_ij| s_j <= 1 (Schur test with weights
    # s⁻¹); floating point can only add a few eps to the norm of the computed X₀.
    assert float(torch.linalg.matrix_norm(X0, ord=2)) <= 1 + 1e-12


@pytest.mark.parametrize("shape", [(6, 6), (9, 5), (4, 16)])
def test_aol_targets_polar_of_rescaled_matrix(shape):
    M = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    target = msign(M, method="svd", precondition="aol")
    # The target is polar(diag(s) M) on the Gram side, not polar(M):
    assert (target - msign(M, method="svd")).abs().max() > 1e-2
    # The Newton–Schulz output is U' f(Σ') V'ᵀ for diag(s) M = U' Σ' V'ᵀ ...
    X0 = msign(M, steps=0, precondition="aol")
    U, s, Vh = torch.linalg.svd(X0, full_matrices=False)
    expected = U @ torch.diag(_scalar_map(s, [MUON_COEFFICIENTS] * 5)) @ Vh
    torch.testing.assert_close(msign(M, precondition="aol"), expected, atol=1e-12, rtol=0)
    # ... and with the convergent cubic it reaches that target (σ_min(X₀) > 0 here: a random
    # Gaussian matrix is full rank; 80 steps cover σ₀ down to ~1e-12 growing by 1.5 per step).
    assert s.min() > 1e-6
    torch.testing.assert_close(msign(M, steps=80, precondition="aol", schedule=CUBIC),
                               target, atol=1e-12, rtol=0)


def test_aol_on_tall_matrix_rescales_columns():
    M = torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(msign(M, precondition="aol"),
                               msign(M.T, precondition="aol").T, atol=1e-14, rtol=0)


@pytest.mark.parametrize(
    ("shape", "precondition", "method"),
    [((4, 6), "frobenius", "newton_schulz"), ((5, 3), "aol", "newton_schulz"),
     ((3, 8), "frobenius", "newton_schulz"), ((4, 3), "frobenius", "svd")],
)
def test_gradcheck(shape, precondition, method):
    M = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    M.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: msign(x, method=method, precondition=precondition), (M,)
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"M": [[1.0]]}, TypeError, "M must be a torch.Tensor"),
        ({"M": torch.ones(3, 3, dtype=torch.int64)}, TypeError,
             "M must be float32, float64, bfloat16 or float16"),
        ({"M": torch.ones(3)}, ValueError, "M must have at least 2 dimensions"),
        ({"M": torch.tensor([[1.0, math.nan]])}, ValueError, "M must be finite"),
        ({"steps": -1}, ValueError, "steps must satisfy"),
        ({"steps": 2.0}, TypeError, "steps must be an int"),
        ({"method": "qr"}, ValueError, "method must be one of"),
        ({"precondition": "jacobi"}, ValueError, "precondition must be one of"),
        ({"schedule": "abc"}, ValueError, "schedule must be one of"),
        ({"schedule": b"abc"}, TypeError, "schedule must be None"),
        ({"schedule": (1.0, 2.0)}, ValueError, r"schedule\[0\] must be a triple"),
        ({"schedule": [(1.5, -0.5, 0.0)] * 4}, ValueError, "4 per-step triples but steps=5"),
        ({"schedule": (1.5, -0.5, math.inf)}, ValueError, "schedule must be finite"),
        ({"schedule": (1.5, -0.5, 0.0), "method": "svd"}, ValueError, "schedule is only"),
        ({"compute_dtype": torch.int32}, ValueError, "compute_dtype must be one of"),
        ({"compute_dtype": torch.bfloat16, "method": "svd"}, ValueError, "compute_dtype is only"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"M": torch.ones(3, 4), **kwargs}
    with pytest.raises(error, match=match):
        msign(**kwargs)


@pytest.mark.parametrize("precondition", ["frobenius", "aol"])
def test_bfloat16_iterations_stay_close_to_float32(precondition):
    M = torch.randn(3, 96, 160, generator=torch.Generator().manual_seed(0))
    reference = msign(M, precondition=precondition)
    fast = msign(M, precondition=precondition, compute_dtype=torch.bfloat16)
    assert fast.dtype == M.dtype
    # bf16 keeps 8 significant bits (u = 2^-9); the quintic's slope a = 3.44 near 0 amplifies
    # that rounding over 5 steps, which leaves a 3–4 % relative (Frobenius) difference here.
    diff = torch.linalg.matrix_norm(fast - reference) / torch.linalg.matrix_norm(reference)
    assert diff.max() < 0.06
    # ...yet its singular values land in the same band as float32's.
    sv = torch.linalg.svdvals(fast)
    ref_sv = torch.linalg.svdvals(reference)
    assert sv.max() < ref_sv.max() + 0.05 and sv.min() > ref_sv.min() - 0.05


def test_low_precision_input_and_scaling_at_the_ends_of_the_range():
    from diffnum.factor._checks import scaled_to_unit

    g = torch.Generator().manual_seed(5)
    M = torch.randn(6, 10, generator=g)
    out = msign(M.bfloat16(), steps=5)
    assert out.dtype == torch.bfloat16
    # The same iteration as a float32 M iterated in bfloat16 (cast first, exact scaling).
    torch.testing.assert_close(out.float(), msign(M, compute_dtype=torch.bfloat16),
                               atol=0, rtol=0)
    # One multiply by an exact power of two: max|X| in [1/2, 1) wherever that is
    # representable, and finite, non-zero entries at the ends of float32's range.
    unit = M / M.abs().max()
    for scale in (1.0, 1e30, 3e38, 1e-30, 1e-44):
        X = (unit * scale).unsqueeze(0)
        Y = scaled_to_unit(X)
        top = float(Y.abs().max())
        assert 2**-24 <= top < 4 and torch.isfinite(Y).all()
        if 1e-30 <= scale <= 1e30:
            assert 0.5 <= top < 1
            torch.testing.assert_close(Y / Y.abs().max(), X / X.abs().max(), atol=0, rtol=0)
    huge = msign(unit * 3e38, steps=5)  # ‖M‖_F² would overflow float32 without the scaling
    torch.testing.assert_close(huge, msign(M, steps=5), atol=1e-6, rtol=0)


def test_precondition_none_iterates_on_the_given_matrix():
    # A caller that normalizes M itself (the optimizer, in place) gets exactly what the
    # Frobenius start gives: the power-of-two scaling msign applies first commutes with it.
    M = torch.randn(9, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    X0 = M / torch.linalg.vector_norm(M)
    torch.testing.assert_close(msign(X0, precondition="none"), msign(M), atol=0, rtol=0)
    # Nothing is rescaled: a matrix with ‖X₀‖₂ > 1 is the caller's to avoid (here 2X₀ is
    # pushed past the quintic's range and the result is no longer near U Vᵀ).
    far = msign(2 * X0, precondition="none", check=False)
    assert float((far - msign(M)).abs().max()) > 0.1
