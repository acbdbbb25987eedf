"""Newton–Schulz coefficient schedules: designed (minimax), published presets, verified bands.

One Newton–Schulz step maps every singular value by an odd polynomial,
σ ← p(σ) = a σ + b σ³ + c σ⁵, so K steps map σ₀ by the composition p_K ∘ ⋯ ∘ p_1 and
everything about a schedule's accuracy is a question about that scalar map on [lower, 1]
(the Frobenius and AOL starts both put σ₀ in (0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffnum._core import check_int_in_range, check_one_of
from diffnum._core.validation import check_real

__all__ = ["POLAR_PRESETS", "ROOT_SHAPE_TRIPLES", "PolarBand", "polar_band", "polar_schedule"]

Triple = tuple[float, float, float]

#: Muon's quintic (Keller Jordan, 2024), one triple for every step.
_MUON: Triple = (3.4445, -4.7750, 2.0315)

#: Published coefficient schedules, by name. Each is a tuple of per-step (a, b, c) triples as
#: printed by its authors; ``polar_schedule`` and ``polar_band`` say what they do.
POLAR_PRESETS: dict[str, tuple[Triple, ...]] = {
    # Keller Jordan's Muon (also torch.optim.Muon's default): 5 steps of one triple.
    "muon": (_MUON,) * 5,
    # Amsel, Persson, Musco & Gower 2025, "The Polar Express" (arXiv:2505.16932), the list in
    # their reference code before the 1.01 safety factor; designed from lower = 1e-3 with the
    # interval cushioned at 0.02407327424182761·u (reproduced by polar_schedule, see tests).
    "polar_express": (
        (8.28721201814563, -23.595886519098837, 17.300387312530933),
        (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
        (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
        (3.3184196573706015, -2.488488024314874, 0.51004894012372),
        (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
        (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
        (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
        (1.875, -1.25, 0.375),
    ),
    # Boissin et al. 2025, "Turbo-Muon" (arXiv:2512.04632), the 4 steps that follow their AOL
    # start (precondition="aol"; thib-s/flash-newton-schulz, ``NS_ours``).
    "turbo_muon": (
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ),
}

#: ROOT's per-shape triples (Gao et al. 2025, arXiv:2511.20626; huawei-noah/noah-research,
#: ``ROOT``), each used for all 5 steps, keyed by (smaller, larger) matrix dimension; other
#: shapes use Muon's triple.
ROOT_SHAPE_TRIPLES: dict[tuple[int, int], Triple] = {
    (2048, 2048): (3.4916, -4.8224, 2.1095),
    (2048, 3072): (3.4509, -4.5790, 1.9325),
    (2048, 8192): (2.9794, -3.6674, 1.6207),
    (2048, 16384): (3.1943, -3.8221, 1.5322),
}

# The limit of the minimax quintic (cubic) as the interval shrinks to {1}: p(1) = 1 with
# p' and p'' (p') vanishing there. Used once the interval is narrower than _NARROW.
_LIMIT = {5: (15 / 8, -10 / 8, 3 / 8), 3: (3 / 2, -1 / 2, 0.0)}
_NARROW = 1e-6
_REMEZ_STEPS = 60


@dataclass(frozen=True)
class PolarBand:
    """Where a schedule sends the singular values: the exact image [min, max] of
    σ₀ ∈ [lower, upper] under the composed Newton–Schulz polynomials.

    Attributes:
        lower, upper: the input interval.
        min, max: the image of that interval (exact up to float64 rounding).
        steps: number of steps composed.

    Example::

        >>> from diffnum.factor import polar_band
        >>> band = polar_band("polar_express", lower=1e-3)  # 8 steps: 1 to rounding
        >>> band.positive, band.error < 1e-15
        (True, True)
    """

    lower: float
    upper: float
    min: float
    max: float
    steps: int

    @property
    def positive(self) -> bool:
        """Whether every σ₀ in (lower, upper] stays positive (no direction is reversed)."""
        return self.min > 0 or (self.min == 0 and self.lower == 0)

    @property
    def error(self) -> float:
        """Worst |σ_out − 1| over the interval."""
        return max(abs(1 - self.min), abs(self.max - 1))

    def __repr__(self) -> str:
        return (f"PolarBand(σ₀ ∈ [{self.lower:.3g}, {self.upper:.3g}] → "
                f"[{self.min:.6g}, {self.max:.6g}], steps={self.steps})")


def _p(triple: Sequence[float], x: float) -> float:
    a, b, c = triple
    x2 = x * x
    return x * (a + x2 * (b + c * x2))


def _critical_points(triple: Sequence[float], lo: float, hi: float) -> list[float]:
    """Zeros x ∈ (lo, hi) of p'(x) = a + 3b x² + 5c x⁴ (a quadratic in s = x²; an interval
    that a previous step has mapped below 0 needs the negative ones too)."""
    a, b, c = triple
    A, B, C = 5 * c, 3 * b, a
    if A == 0:
        roots = [] if B == 0 else [-C / B]
    else:
        disc = B * B - 4 * A * C
        if disc < 0:
            return []
        root = math.sqrt(disc)
        # Numerically stable pair: q = -(B + sign(B)√disc)/2, s₁ = q/A, s₂ = C/q.
        q = -0.5 * (B + math.copysign(root, B))
        roots = [q / A] + ([C / q] if q != 0 else [])
    xs = [sign * math.sqrt(s) for s in roots if s > 0 for sign in (-1, 1)]
    return sorted(x for x in xs if lo < x < hi)


def _image(triple: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    """The image of [lo, hi] under p: the extremes over the ends and critical points."""
    values = [_p(triple, x) for x in (lo, hi, *_critical_points(triple, lo, hi))]
    return min(values), max(values)


def polar_band(schedule: str | Sequence[Sequence[float]], lower: float = 1e-3,
               upper: float = 1.0, rounding: float = 0.0) -> PolarBand:
    """The exact image of σ₀ ∈ [lower, upper] under a Newton–Schulz schedule.

    The image of an interval under a continuous map is an interval, so the composed image
    is found step by step: [lo, hi] ← [min, max] of p over its ends and the zeros of
    p'(x) = a + 3b x² + 5c x⁴ inside it (a quadratic in x², solved in closed form). No grid
    is involved; the bounds are exact up to float64 rounding of a few operations per step.

    Args:
        schedule: a preset name (see ``POLAR_PRESETS``) or a sequence of (a, b, c) triples.
        lower: the input interval's lower end, >= 0.
        upper: its upper end, >= lower.
        rounding: relative perturbation of every σ before every step, 0 <= rounding < 1:
            the interval is widened to [lo(1 − rounding), hi(1 + rounding)] before each
            polynomial — a model of the rounding of low-precision iterations (bfloat16 rounds
            each entry by up to 2⁻⁸ ≈ 0.004). A steep designed polynomial that is exact on
            [lower, 1] can blow up just above 1; this shows it (see ``safety`` in
            :func:`polar_schedule`).

    Returns:
        :class:`PolarBand`; ``band.positive`` is False when some σ₀ > 0 comes out negative
        (the schedule reverses that direction), ``band.error`` the worst |σ_out − 1|.

    Example::

        >>> from diffnum.factor import polar_band
        >>> polar_band("muon", lower=1e-3)  # Muon's 5 steps: a band around 1, not 1
        PolarBand(σ₀ ∈ [0.001, 1] → [0.470544, 1.20237], steps=5)
    """
    triples = _as_schedule(schedule)
    lower = check_real("lower", lower, low=0.0)
    upper = check_real("upper", upper, low=lower)
    rounding = check_real("rounding", rounding, low=0.0, high=1.0, high_open=True)
    lo, hi = lower, upper
    for triple in triples:
        lo, hi = _image(triple, lo * (1 - rounding) if lo > 0 else lo * (1 + rounding),
                        hi * (1 + rounding) if hi > 0 else hi * (1 - rounding))
    return PolarBand(lower=lower, upper=upper, min=lo, max=hi, steps=len(triples))


def _minimax(lo: float, hi: float, degree: int) -> Triple:
    """The odd polynomial of ``degree`` (3 or 5) closest to 1 in max-norm on [lo, hi], by
    the Remez exchange: on a reference of ``terms + 1`` points solve
    p(x_i) + (−1)^i E = 1, then move the reference to the ends and the interior extrema of
    1 − p (the zeros of p'), until it stops moving."""
    if hi - lo <= _NARROW * hi:
        return _LIMIT[degree]
    terms = (degree + 1) // 2
    ref = [lo + (hi - lo) * (1 - math.cos(math.pi * i / terms)) / 2 for i in range(terms + 1)]
    coef = None
    for _ in range(_REMEZ_STEPS):
        system = np.array([[x ** (2 * k + 1) for k in range(terms)] + [(-1) ** i]
                           for i, x in enumerate(ref)])
        solution = np.linalg.solve(system, np.ones(terms + 1))
        coef = (*map(float, solution[:terms]), *([0.0] * (3 - terms)))
        new = [lo, *_critical_points(coef, lo, hi), hi]
        if len(new) != terms + 1:
            break  # the reference cannot move: keep the last solution
        if max(abs(a - b) for a, b in zip(new, ref, strict=True)) <= 1e-15 * hi:
            break
        ref = new
    assert coef is not None
    return coef  # type: ignore[return-value]


def polar_schedule(steps: int, degree: int = 5, lower: float = 1e-3,
                   cushion: float = 0.0, safety: float = 0.01) -> tuple[Triple, ...]:
    """Design per-step Newton–Schulz coefficients that map [lower, 1] as close to 1 as possible.

    The greedy minimax composition of Amsel et al. 2025 ("The Polar Express",
    arXiv:2505.16932), which they prove optimal among compositions of odd polynomials: with
    [ℓ, u] = [lower, 1], each step takes the odd polynomial p of the given degree minimizing
    max_{x∈[ℓ,u]} |1 − p(x)| (Remez exchange), rescaled so that its image [m, M] of [ℓ, u]
    is centred on 1 (m + M = 2), and moves to that image: [ℓ, u] ← [m, 2 − m].
    ``cushion`` > 0 designs each p on [max(ℓ, cushion·u), u] instead (the paper's guard
    against a first polynomial so steep that rounding ruins it; 0.02407327424182761
    reproduces their published list, preset ``"polar_express"``). ``safety`` > 0 divides
    the input of every step but the last by 1 + safety (p(x/(1 + safety))), as their code
    does with 0.01 (the default): a minimax polynomial is steep just above its interval,
    and without it bfloat16 rounding (2⁻⁸ per entry) lets singular values explode —
    ``polar_band(polar_schedule(5, safety=0), lower=0, rounding=2**-8)`` reaches 1e60.

    Args:
        steps: number of steps, 1 <= steps <= 100.
        degree: 5 (quintic, ``(a, b, c)``) or 3 (cubic, ``(a, b, 0)``).
        lower: the smallest σ₀ the schedule must lift, 0 < lower < 1.
        cushion: 0 <= cushion < 1 (see above).
        safety: 0 <= safety < 1 (see above); 0 gives the pure minimax design.

    Returns:
        ``steps`` triples, for :func:`msign`'s ``schedule``; :func:`polar_band` checks
        them.

    Example::

        >>> from diffnum.factor import polar_band, polar_schedule
        >>> schedule = polar_schedule(5, lower=1e-3)
        >>> round(polar_band(schedule, lower=1e-3).error, 3)  # Muon's 5 steps: 0.53
        0.137
        >>> round(polar_band(schedule, lower=0, rounding=2**-8).max, 3)  # bfloat16-safe
        1.128
    """
    check_int_in_range("steps", steps, 1, 100)
    check_one_of("degree", degree, (3, 5))
    lower = check_real("lower", lower, low=0.0, high=1.0, low_open=True, high_open=True)
    cushion = check_real("cushion", cushion, low=0.0, high=1.0, high_open=True)
    safety = check_real("safety", safety, low=0.0, high=1.0, high_open=True)
    lo, hi = lower, 1.0
    designed = []
    for _ in range(steps):
        triple = _minimax(max(lo, cushion * hi), hi, degree)
        # Centre the image of [lo, hi] on 1 (a no-op without the cushion): for the quintic
        # it is [p(lo), p(hi)] = [1 − E, 1 + E]; the cubic's ends both sit at 1 − E.
        low, high = _image(triple, lo, hi)
        scale = 2 / (low + high)
        triple = tuple(scale * t for t in triple)
        designed.append(triple)
        lo = scale * low
        hi = 2 - lo
    if safety:
        f = 1 + safety
        designed = [(a / f, b / f**3, c / f**5) for a, b, c in designed[:-1]] + designed[-1:]
    return tuple(designed)  # type: ignore[return-value]


def _as_schedule(schedule: object) -> tuple[Triple, ...]:
    """A preset name or a sequence of finite (a, b, c) triples, as a tuple of float triples."""
    if isinstance(schedule, str):
        check_one_of("schedule", schedule, tuple(POLAR_PRESETS))
        return POLAR_PRESETS[schedule]
    if not isinstance(schedule, Sequence) or not schedule:
        raise TypeError(f"schedule must be a preset name {tuple(POLAR_PRESETS)} or a non-empty "
                        f"sequence of (a, b, c) triples, got {schedule!r}")
    out = []
    for i, triple in enumerate(schedule):
        if (isinstance(triple, (str, bytes)) or not isinstance(triple, Sequence)
                or len(triple) != 3 or not all(isinstance(x, (int, float))
                                               and not isinstance(x, bool)
                                               and math.isfinite(x) for x in triple)):
            raise ValueError(f"schedule[{i}] must be a triple (a, b, c) of finite real numbers, "
                             f"got {triple!r}")
        out.append(tuple(float(x) for x in triple))
    return tuple(out)  # type: ignore[return-value]
