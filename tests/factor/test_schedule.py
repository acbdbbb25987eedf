"""Tests for Newton–Schulz schedules: minimax design, published presets, exact bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffnum.factor import POLAR_PRESETS, msign, polar_band, polar_schedule

# NVIDIA NeMo Emerging-Optimizers, muon_utils.py, _COEFFICIENT_SETS["aol"] (from the first
# commit of thib-s/flash-newton-schulz): widely copied, and it maps σ = 1 to -0.9935.
SIGN_FLIPPING = ((4.0098, -7.0585, 2.4635), (3.4585, -5.5479, 2.5959),
                 (2.7573, -3.2939, 1.4254), (2.7215, -3.0494, 1.3169))
CUSHION = 0.02407327424182761  # Polar Express's reference code


def _composed(x: np.ndarray, schedule) -> np.ndarray:
    for a, b, c in schedule:
        x = a * x + b * x**3 + c * x**5
    return x


def test_polar_express_list_is_reproduced():
    # Amsel et al. 2025, arXiv:2505.16932: the greedy minimax composition from lower = 1e-3
    # with their cushion. The published digits (16 significant) are met to float64 rounding
    # for the first six triples; the seventh is designed on [1 − 9e-4, 1 + 9e-4], where the
    # Remez system is ill-conditioned (both codes round differently there): 1e-10; the last
    # is the limit polynomial (15/8, -10/8, 3/8) exactly.
    designed = polar_schedule(8, lower=1e-3, cushion=CUSHION, safety=0.0)
    published = POLAR_PRESETS["polar_express"]
    for k, (ours, theirs) in enumerate(zip(designed, published, strict=True)):
        tol = 5e-15 if k < 6 else (1e-10 if k == 6 else 0.0)
        for x, y in zip(ours, theirs, strict=True):
            assert abs(x - y) <= tol * abs(y), (k, ours, theirs)


def test_safety_factor_divides_every_input_but_the_last():
    plain = polar_schedule(5, lower=1e-3, safety=0.0)
    safe = polar_schedule(5, lower=1e-3, safety=0.01)
    for (a, b, c), (sa, sb, sc) in zip(plain[:-1], safe[:-1], strict=True):
        assert (sa, sb, sc) == (a / 1.01, b / 1.01**3, c / 1.01**5)
    assert safe[-1] == plain[-1]


def test_designed_schedule_meets_the_accuracy_goal_muon_does_not():
    # Worst |σ_out − 1| over σ₀ ∈ [1e-3, 1] after 5 steps (the benchmark's goal: <= 0.15).
    muon = polar_band("muon", lower=1e-3)
    designed = polar_band(polar_schedule(5, lower=1e-3), lower=1e-3)
    assert designed.error <= 0.15 < 0.5 < muon.error
    assert designed.positive and muon.positive


def test_minimax_step_equioscillates():
    # One designed step on [l, 1]: the error 1 − p reaches ±E with alternating signs at l, the
    # two interior extrema and 1 (Chebyshev's characterization of the best approximation).
    (a, b, c), = polar_schedule(1, lower=0.05)
    x = np.linspace(0.05, 1, 200_001)
    err = 1 - _composed(x, [(a, b, c)])
    E = np.abs(err).max()
    s = np.sqrt(np.roots([5 * c, 3 * b, a]).real)
    points = [0.05, *sorted(s), 1.0]
    values = 1 - _composed(np.array(points), [(a, b, c)])
    np.testing.assert_allclose(np.abs(values), E, rtol=1e-12)
    assert np.all(np.sign(values) == [1, -1, 1, -1])


@pytest.mark.parametrize("name", sorted(POLAR_PRESETS))
@pytest.mark.parametrize("lower", [0.0, 1e-3, 0.1])
def test_band_is_the_exact_image(name, lower):
    # A dense grid can only find an image inside the exact one, and comes within its spacing.
    band = polar_band(name, lower=lower)
    x = np.linspace(lower, 1, 2_000_001)
    y = _composed(x, POLAR_PRESETS[name])
    assert band.min <= y.min() + 1e-15 and y.max() <= band.max + 1e-15
    assert y.min() - band.min < 1e-8 and band.max - y.max() < 1e-8


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 5), st.floats(-8, 0), st.floats(0, 4)),
                min_size=1, max_size=4),
       st.floats(0, 0.9))
def test_band_contains_every_sampled_value(schedule, lower):
    band = polar_band(schedule, lower=lower)
    x = np.linspace(lower, 1, 20_001)
    y = _composed(x, schedule)
    scale = max(1.0, np.abs(y).max())
    assert band.min <= y.min() + 1e-12 * scale and y.max() <= band.max + 1e-12 * scale


def test_sign_flipping_set_is_caught():
    band = polar_band(SIGN_FLIPPING, lower=0.0)
    assert not band.positive
    assert band.min == pytest.approx(-1.084441255, abs=1e-8)  # at σ₀ ≈ 0.8987
    at_one = polar_band(SIGN_FLIPPING, lower=1.0)
    assert at_one.min == at_one.max == pytest.approx(-0.9935212261846591, rel=1e-12)
    M = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="negative values"):
        msign(M, steps=4, schedule=SIGN_FLIPPING)
    # Allowed explicitly, it does what the band says: a dominant direction (σ₀ = σ/‖M‖_F
    # near 1, as in a momentum matrix with one strong direction) comes out reversed.
    g = torch.Generator().manual_seed(2)
    U, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64, generator=g))
    Vh = torch.linalg.qr(torch.randn(16, 8, dtype=torch.float64, generator=g))[0].T
    S = torch.tensor([1.0] + [0.05] * 7, dtype=torch.float64)
    M = U @ torch.diag(S) @ Vh
    out = msign(M, steps=4, schedule=SIGN_FLIPPING, check=False)
    top = float(U[:, 0] @ out @ Vh[0])
    x = float(S[0] / S.norm())
    assert top == pytest.approx(float(_composed(np.array(x), SIGN_FLIPPING)), rel=1e-10)
    assert top < 0


def test_presets_in_msign_use_their_triples():
    M = torch.randn(6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    pe = POLAR_PRESETS["polar_express"]
    torch.testing.assert_close(msign(M, steps=5, schedule="polar_express"),
                               msign(M, steps=5, schedule=list(pe[:5])), atol=0, rtol=0)
    # Beyond its length a preset repeats its last triple.
    torch.testing.assert_close(msign(M, steps=10, schedule="polar_express"),
                               msign(M, steps=10, schedule=list(pe) + [pe[-1]] * 2),
                               atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 0}, ValueError, "steps must satisfy"),
        ({"steps": 2.0}, TypeError, "steps must be an int"),
        ({"steps": 3, "degree": 7}, ValueError, "degree must be one of"),
        ({"steps": 3, "lower": 0.0}, ValueError, "lower must lie in"),
        ({"steps": 3, "lower": 1.0}, ValueError, "lower must lie in"),
        ({"steps": 3, "lower": math.nan}, ValueError, "lower must be finite"),
        ({"steps": 3, "cushion": -0.1}, ValueError, "cushion must lie in"),
        ({"steps": 3, "safety": 1.0}, ValueError, "safety must lie in"),
    ],
)
def test_polar_schedule_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        polar_schedule(**kwargs)


@pytest.mark.parametrize(
    ("schedule", "kwargs", "error", "match"),
    [
        ("nope", {}, ValueError, "schedule must be one of"),
        ([], {}, TypeError, "non-empty sequence"),
        ([(1.0, 2.0)], {}, ValueError, r"schedule\[0\] must be a triple"),
        ([(1.0, math.inf, 0.0)], {}, ValueError, r"schedule\[0\] must be a triple"),
        ("muon", {"lower": -1.0}, ValueError, "lower must lie in"),
        ("muon", {"lower": 0.5, "upper": 0.25}, ValueError, "upper must lie in"),
        ("muon", {"rounding": 1.0}, ValueError, "rounding must lie in"),
    ],
)
def test_polar_band_bad_arguments(schedule, kwargs, error, match):
    with pytest.raises(error, match=match):
        polar_band(schedule, **kwargs)


def test_cubic_design_converges_to_the_limit():
    schedule = polar_schedule(12, degree=3, lower=1e-2, safety=0.0)
    assert all(c == 0.0 for _, _, c in schedule)
    assert schedule[-1] == (1.5, -0.5, 0.0)
    assert polar_band(schedule, lower=1e-2).error < 1e-9


def test_rounding_exposes_steep_schedules():
    # The pure minimax design is exact on [1e-3, 1] but explodes just above 1; bfloat16
    # rounding (2⁻⁸ per step) is enough. The safety factor (the default) keeps it bounded;
    # Muon's quintic is flat there anyway.
    pure = polar_schedule(5, lower=1e-3, safety=0.0)
    assert polar_band(pure, lower=0.0).max < 1.12
    assert polar_band(pure, lower=0.0, rounding=2**-8).max > 1e50
    assert polar_band(polar_schedule(5, lower=1e-3), lower=0.0, rounding=2**-8).max < 1.13
    muon = polar_band("muon", lower=0.0)
    assert polar_band("muon", lower=0.0, rounding=2**-8).max == muon.max
    # Widening only ever widens: the rounded band contains the exact one.
    for r in (2**-23, 2**-8, 0.05):
        wide = polar_band("turbo_muon", lower=0.1, rounding=r)
        exact = polar_band("turbo_muon", lower=0.1)
        assert wide.min <= exact.min and exact.max <= wide.max
