"""Polar factor / matrix sign: msign(M) = U Vᵀ for M = U Σ Vᵀ, by Newton–Schulz or SVD."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from diffnum._core import check_int_in_range, check_matrix, check_one_of
from diffnum._core.status import Status, StatusResult, worst_status
from diffnum._core.summary import OneLineRepr
from diffnum._core.validation import check_flag
from diffnum.factor._checks import (
    scaled_to_unit,
    smallest_eigenvalue,
)
from diffnum.factor._engine import RankDeficiencyWarning
from diffnum.factor._schedule import POLAR_PRESETS, polar_band

__all__ = ["MUON_COEFFICIENTS", "MsignResult", "msign", "msign_ex"]

#: Muon's quintic Newton–Schulz coefficients (a, b, c): fast growth of small singular
#: values (slope a at 0) at the price of not converging to exactly 1.
MUON_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)

_METHODS = ("newton_schulz", "svd")
_PRECONDITIONERS = ("frobenius", "aol", "none")
_MAX_STEPS = 10_000
_COMPUTE_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)

# Above this aspect ratio n/m (m <= n) iterating on the m×m Gram matrix alone and applying
# the accumulated polynomial to X₀ once is cheaper: 2m²n + (4K-3)m³ flops against
# 2Km²n + Km³ for K steps; the two costs cross at n/m = 1.5.
_GRAM_ONLY_ASPECT = 1.5


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@functools.lru_cache(maxsize=64)
def _keeps_sign(schedule: tuple[tuple[float, float, float], ...]) -> bool:
    return polar_band(schedule, lower=0.0).positive


def _coefficient_schedule(schedule: object, steps: int) -> list[tuple[float, float, float]]:
    """Turn ``schedule`` (None, a preset name, one triple, or one triple per step) into
    ``steps`` triples."""
    if schedule is None:
        return [MUON_COEFFICIENTS] * steps
    if isinstance(schedule, str):
        check_one_of("schedule", schedule, tuple(POLAR_PRESETS))
        preset = POLAR_PRESETS[schedule]
        # A preset ends in the triple its authors repeat beyond its length.
        return list(preset[:steps]) + [preset[-1]] * max(0, steps - len(preset))
    if isinstance(schedule, torch.Tensor):
        schedule = schedule.detach().cpu().tolist()
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence):
        raise TypeError(
            "schedule must be None, one (a, b, c) triple or a sequence of per-step triples, "
            f"got {type(schedule).__name__}"
        )
    if len(schedule) == 3 and all(_is_number(x) for x in schedule):
        triples = [tuple(schedule)] * steps
    else:
        triples = []
        for i, triple in enumerate(schedule):
            if (
                isinstance(triple, (str, bytes))
                or not isinstance(triple, Sequence)
                or len(triple) != 3
                or not all(_is_number(x) for x in triple)
            ):
                raise ValueError(
                    f"schedule[{i}] must be a triple (a, b, c) of real numbers, got {triple!r}"
                )
            triples.append(tuple(triple))
        if len(triples) != steps:
            raise ValueError(
                f"schedule holds {len(triples)} per-step triples but steps={steps}; "
                f"pass steps={len(triples)} or a single (a, b, c) triple"
            )
    for i, triple in enumerate(triples):
        if not all(math.isfinite(float(x)) for x in triple):
            raise ValueError(f"schedule must be finite, got {triple!r} for step {i}")
    return [(float(a), float(b), float(c)) for a, b, c in triples]


def _scalar_map(x: torch.Tensor, schedule: Sequence[tuple[float, float, float]]) -> torch.Tensor:
    for a, b, c in schedule:
        x = a * x + b * x**3 + c * x**5
    return x


@functools.lru_cache(maxsize=32)
def _accuracy_band(
    schedule: tuple[tuple[float, float, float], ...],
) -> tuple[float, float, float] | None:
    """(lo, hi, δ): the schedule maps σ₀ ∈ [1e-2, 1] into [lo, hi] (its accuracy band), and
    σ₀ below δ to less than lo/2 — far outside it. None when the band is not positive and
    finite (a schedule that does not aim at 1)."""
    y = _scalar_map(torch.logspace(-2, 0, 2001, dtype=torch.float64), schedule)
    lo, hi = float(y.min()), float(y.max())
    if not (math.isfinite(lo) and math.isfinite(hi) and lo > 0):
        return None
    small = torch.logspace(-2, -20, 1801, dtype=torch.float64)  # descending
    below = (_scalar_map(small, schedule) < lo / 2).nonzero()
    if below.numel() == 0:
        return None
    return lo, hi, float(small[int(below[0])])


@torch.no_grad()
def _outside_band(X0: torch.Tensor, A: torch.Tensor | None,
                  schedule: list[tuple[float, float, float]], precondition: str
                  ) -> tuple[torch.Tensor | None, str | None]:
    """Which batch elements of X₀ ``(B, m, n)`` have singular values σ₀ too small for the
    schedule to lift into its band (a bool ``(B,)``, None when the schedule has no band), and
    the warning's message when any has.

    One Cholesky of X₀X₀ᵀ − δ²I (about the cost of one Gram product) tests σ₀_min ≥ δ; only
    when it fails does an inverse iteration measure σ₀_min for the message.
    """
    band = _accuracy_band(tuple(schedule)) if schedule else None
    if band is None:
        return None, None
    lo, hi, delta = band
    if A is None or A.dtype not in (torch.float32, torch.float64):
        # A low-precision Gram cannot resolve σ₀² ~ δ²: measure X₀ itself in float32.
        A = _gram(X0.float())
    A = A.detach()
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    trace = A.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    nonzero = trace > 0  # M = 0 maps to 0 by design
    failed = torch.linalg.cholesky_ex(A - delta**2 * eye).info > 0
    failed = failed & nonzero
    if not bool(failed.any()):
        return failed, None
    # Measure σ₀_min for the message: inverse iteration with a small shift τ (rounding can
    # make a near-singular Gram matrix indefinite at the eps level; then shift by δ²/4).
    A = A[failed]
    tau = (torch.finfo(A.dtype).eps * trace[failed])[:, None, None]
    L, info = torch.linalg.cholesky_ex(A + tau * eye)
    if bool((info > 0).any()):
        L = torch.linalg.cholesky_ex(A + delta**2 / 4 * eye).L
    sigma_min = min(float(smallest_eigenvalue(A, L).sqrt().min()), delta)
    out_min = float(_scalar_map(torch.tensor(sigma_min, dtype=torch.float64), schedule))
    return failed, (
        f"msign: X₀ ({precondition} start) has singular values below σ₀ = {delta:.1e}, the "
        f"smallest that {len(schedule)} Newton–Schulz steps with these coefficients lift into "
        f"their accuracy band [{lo:.3f}, {hi:.3f}] (reached from σ₀ ∈ [1e-2, 1]); measured "
        f"σ₀_min ≲ {sigma_min:.1e} (σ₀ = σ/‖M‖_F for the frobenius start), which comes out "
        f"as ≲ {out_min:.1e} instead of ≈ 1: the output is not U Vᵀ there (M is "
        "ill-conditioned or rank deficient). Use more steps or method='svd'"
    )


def _gram(X: torch.Tensor) -> torch.Tensor:
    return torch.bmm(X, X.mT)


def _aol_start(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """X₀ = diag(s) X with s_i = (Σ_j |(X Xᵀ)_ij|)^(-1/2), and its Gram matrix, sharing X Xᵀ."""
    G = _gram(X)
    row_sums = G.abs().sum(dim=-1)
    # An all-zero row has row sum 0; any finite s maps it to 0, so clamping only keeps s finite.
    s = row_sums.clamp_min(torch.finfo(X.dtype).tiny).rsqrt()
    return s.unsqueeze(-1) * X, s.unsqueeze(-1) * G * s.unsqueeze(-2)


def _frobenius_start(X: torch.Tensor) -> torch.Tensor:
    # eps = sqrt(tiny): 0 maps to 0, and eps² does not underflow, so the backward of the
    # division stays finite at M = 0 as well; any non-negligible M is unaffected.
    eps = math.sqrt(torch.finfo(X.dtype).tiny)
    return X / (torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True) + eps)


def _newton_schulz_wide(
    X: torch.Tensor, A: torch.Tensor | None, schedule: list[tuple[float, float, float]]
) -> torch.Tensor:
    """Iterate X ← a X + (b A + c A²) X, A = X Xᵀ, on a (batch, m, n) stack with m <= n."""
    for k, (a, b, c) in enumerate(schedule):
        if A is None or k > 0:
            A = _gram(X)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A²
        X = torch.baddbmm(X, B, X, beta=a, alpha=1.0)  # a X + B X
    return X


def _newton_schulz_gram_only(
    X: torch.Tensor, A: torch.Tensor | None, schedule: list[tuple[float, float, float]]
) -> torch.Tensor:
    """Same iteration with only m×m products: every X_k = P_k X₀ with P_k a polynomial in
    A₀ = X₀X₀ᵀ, so B_k = p(A_k) commutes with A_k and A_{k+1} = B_k A_k B_k, P_{k+1} = B_k P_k."""
    if A is None:
        A = _gram(X)
    eye = torch.eye(X.shape[-2], dtype=X.dtype, device=X.device)
    P = None
    last = len(schedule) - 1
    for k, (a, b, c) in enumerate(schedule):
        B = torch.baddbmm(A, A, A, beta=b, alpha=c) + a * eye
        P = B if P is None else torch.bmm(B, P)
        if k < last:
            A = torch.bmm(torch.bmm(B, A), B)
    return X if P is None else torch.bmm(P, X)


def msign(
    M: torch.Tensor,
    steps: int = 5,
    method: str = "newton_schulz",
    precondition: str = "frobenius",
    schedule: object = None,
    compute_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Polar factor ``msign(M) = U Vᵀ`` of ``M = U Σ Vᵀ``, batched over ``(..., m, n)``.

    ``method="newton_schulz"`` runs the odd quintic iteration

        X_{k+1} = a X_k + b (X_k X_kᵀ) X_k + c (X_k X_kᵀ)² X_k,

    which acts on every singular value alone, σ ← p(σ) = a σ + b σ³ + c σ⁵, and keeps the
    singular vectors: the result is ``U p^{∘K}(Σ₀) Vᵀ`` with Σ₀ the singular values of X₀.
    With Muon's ``(a, b, c) = (3.4445, -4.7750, 2.0315)`` (the default) and K = 5 steps the
    output singular values are not 1 but lie in a band around it: [0.682, 1.135] for
    starting values σ₀ ∈ [1e-2, 1] (up to 1.203 for σ₀ ∈ [2e-3, 1e-2); smaller σ₀ have not
    yet grown into the band); with the cubic ``(1.5, -0.5, 0)`` and enough steps the
    iteration converges to ``U Vᵀ`` exactly for σ₀ ∈ (0, √3). It works on the smaller Gram
    side (``M`` is transposed when m > n) and, for n/m > 1.5 in float32/float64, iterates
    on the m×m Gram matrix alone (same polynomial, fewer flops; in float32 its rounding is
    ~1e-4 relative instead of ~5e-6, immaterial for an optimizer update).

    Args:
        M: real tensor ``(..., m, n)``, float32/float64, or bfloat16/float16 (iterated in that
            dtype unless ``compute_dtype`` says otherwise; ``method="svd"`` in float32).
        steps: number K >= 0 of Newton–Schulz steps (``steps=0`` returns X₀).
        method: ``"newton_schulz"`` or ``"svd"`` (exact reference ``U Vᵀ`` from
            ``torch.linalg.svd``; ``steps`` and ``schedule`` are not used).
        precondition: how X₀ is formed. ``"frobenius"``: X₀ = M / ‖M‖_F, so ‖X₀‖₂ <= 1
            and polar(X₀) = polar(M). ``"aol"`` (Turbo-Muon): X₀ = diag(s) M with
            s_i = (Σ_j |(M Mᵀ)_ij|)^{-1/2} on the Gram side, which guarantees ‖X₀‖₂ <= 1
            with larger small singular values (often one step fewer), but
            **polar(diag(s) M) ≠ polar(M)** in general: the target is the polar factor of the
            row-rescaled matrix (column-rescaled when m > n). ``method="svd"`` with
            ``"aol"`` returns exactly that target. ``"none"``: X₀ = M as given, for callers
            that have normalized M themselves (‖M‖₂ <= 1 is then theirs to ensure; an
            optimizer does it in place, as ``torch.optim.Muon``).
        schedule: ``None`` (Muon's triple for every step), one ``(a, b, c)`` triple used
            for every step, a sequence of ``steps`` per-step triples (for instance from
            :func:`polar_schedule`), or a preset name from ``POLAR_PRESETS`` (its first
            ``steps`` triples; its last triple repeats beyond its length). A schedule that
            maps some σ₀ ∈ (0, 1] to a negative value (it would reverse that direction,
            see :func:`polar_band`) raises ``ValueError``.
        compute_dtype: dtype of the Newton–Schulz iterations (default: that of ``M``).
            ``torch.bfloat16`` is what Muon uses: the iteration only has to land the
            singular values in a band, and bf16 products are 2–3× faster on CPUs with
            AVX512-BF16/AMX. X₀ is formed in that dtype too (the AOL Gram product is then
            a fast one) and the result is cast back to ``M``'s dtype.
        check: ``False`` skips every test that reads the data or the schedule's band —
            finiteness of ``M``, the sign check of the schedule, the rank warning below — so
            that the call never synchronizes and traces into one graph under
            ``torch.compile``. For loops that check their schedule once (optimizers).

    Returns:
        tensor of the shape and dtype of ``M``. Differentiable by plain autograd (the SVD
        path's gradient needs distinct non-zero singular values). Rank-deficient ``M`` has
        no unique polar factor; Newton–Schulz maps zero singular values to 0 and ``M = 0``
        to 0. ``M`` is first divided by a power of two (exact), so any finite scale works.

    Warns:
        RankDeficiencyWarning: (Newton–Schulz, ``steps >= 1``) when X₀ has a singular value
            σ₀ below the δ that the schedule lifts to half its band's lower end — the band
            being where it takes σ₀ ∈ [1e-2, 1]; Muon's 5 steps: [0.682, 1.134], δ ≈ 7e-4 — so
            the output is far from U Vᵀ there. This includes rank-deficient ``M``. The test is
            one Cholesky factorization of X₀X₀ᵀ − δ²I; the message gives the measured σ₀_min.
            :func:`msign_ex` reports it as a status per batch element instead of warning.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> M = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
        >>> s = torch.linalg.svdvals(df.msign(M))  # Muon: singular values in a band near 1
        >>> 0.6 < float(s.min()) and float(s.max()) < 1.2
        True
    """
    value, _, _, message = _msign(M, steps, method, precondition, schedule, compute_dtype,
                                  check)
    if message is not None:
        warnings.warn(message, RankDeficiencyWarning, stacklevel=2)
    return value


@dataclass(frozen=True, repr=False)
class MsignResult(StatusResult, OneLineRepr):
    """Polar factor and diagnostics of :func:`msign_ex`, one status per batch element.

    Attributes:
        value: the tensor :func:`msign` returns, shape and dtype of ``M``.
        status: int64 :class:`~diffnum.Status` codes, shape ``batch``: ``CONVERGED`` when
            every singular value σ₀ of X₀ is at least ``threshold``, so that the output's
            singular values lie in ``band`` (for ``method="svd"``: always, up to rounding);
            ``ILL_CONDITIONED`` when some σ₀ is below it (M ill-conditioned or rank
            deficient: the output is not U Vᵀ along those directions; M = 0 is exempt, it
            maps to 0 by design); ``NONFINITE`` when ``value`` is not finite.
        steps: int64, shape ``batch``: Newton–Schulz steps run (0 for ``"svd"``).
        band: ``(lo, hi)``, where the schedule takes σ₀ ∈ [1e-2, 1] (Muon's 5 steps:
            (0.682, 1.134)); None when there is no band (``"svd"``, ``steps=0``, a schedule
            that does not aim at 1).
        threshold: δ, the smallest σ₀ the schedule lifts to half the band's lower end
            (Muon's 5 steps: ≈ 7e-4); None with ``band``.

    Did it fail? ``converged``, ``all_converged``, ``failures()``, ``describe()`` and
    ``raise_if_failed()``, as every result (:class:`~diffnum.Status` protocol).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> M = torch.diag(torch.tensor([1.0, 1e-6], dtype=torch.float64))  # κ = 1e6
        >>> out = df.msign_ex(M, steps=1)
        >>> out.failures(), 1e-6 < out.threshold  # σ₀ = 1e-6 is below what one step lifts
        ([((), <Status.ILL_CONDITIONED: 4>)], True)
    """

    value: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    band: tuple[float, float] | None
    threshold: float | None

    _DETAILS = ("steps",)  # shown by describe()


def msign_ex(
    M: torch.Tensor,
    steps: int = 5,
    method: str = "newton_schulz",
    precondition: str = "frobenius",
    schedule: object = None,
    compute_dtype: torch.dtype | None = None,
    *,
    throw: bool = False,
) -> MsignResult:
    """:func:`msign` with its diagnostics: an :class:`MsignResult` (value, status, steps, band,
    threshold) instead of a warning — as ``torch.linalg.cholesky_ex`` is to ``cholesky``.

    The arguments are those of :func:`msign` with ``check=True`` (every test runs: finite
    ``M``, the schedule's sign, the band test of X₀); ``throw=True`` raises a
    :class:`~diffnum.ResultError` naming every batch element that did not converge.
    ``value`` is bit for bit what :func:`msign` returns.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> M = torch.randn(3, 64, 128, generator=torch.Generator().manual_seed(0))
        >>> out = df.msign_ex(M)  # Muon's 5 quintic steps
        >>> out.all_converged, [round(x, 3) for x in out.band], out.steps.tolist()
        (True, [0.682, 1.134], [5, 5, 5])
    """
    if not isinstance(throw, bool):
        raise TypeError(f"throw must be a bool, got {type(throw).__name__}")
    value, triples, failed, _ = _msign(M, steps, method, precondition, schedule,
                                       compute_dtype, True)
    batch = tuple(M.shape[:-2])
    band = _accuracy_band(tuple(triples)) if triples else None
    outside = (torch.zeros(batch, dtype=torch.bool, device=M.device) if failed is None
               else failed.reshape(batch).to(M.device))
    status = worst_status((~torch.isfinite(value).flatten(-2).all(-1), Status.NONFINITE),
                          (outside, Status.ILL_CONDITIONED))
    result = MsignResult(
        value=value, status=status,
        steps=torch.full(batch, len(triples), dtype=torch.int64, device=M.device),
        band=None if band is None else (band[0], band[1]),
        threshold=None if band is None else band[2])
    if throw:
        result.raise_if_failed("msign_ex")
    return result


def _msign(M: torch.Tensor, steps: int, method: str, precondition: str, schedule: object,
           compute_dtype: torch.dtype | None, check: bool
           ) -> tuple[torch.Tensor, list[tuple[float, float, float]], torch.Tensor | None,
                      str | None]:
    """The polar factor, the per-step triples, which flattened batch elements failed the
    band test (None: not tested) and the warning's message (None: nothing to warn)."""
    check_matrix("M", M, finite=check_flag("check", check), low_precision=True)
    check_int_in_range("steps", steps, 0, _MAX_STEPS)
    check_one_of("method", method, _METHODS)
    check_one_of("precondition", precondition, _PRECONDITIONERS)
    if method == "svd" and schedule is not None:
        raise ValueError("schedule is only used by method='newton_schulz', got method='svd'")
    schedule = _coefficient_schedule(schedule, steps) if method == "newton_schulz" else []
    if check and schedule and not _keeps_sign(tuple(schedule)):
        band = polar_band(schedule, lower=0.0)
        raise ValueError(f"schedule maps some singular values in (0, 1] to negative values "
                         f"(image {band.min:.3g} .. {band.max:.3g}): the output would reverse "
                         f"those directions. Pass check=False to allow it")
    if compute_dtype is not None:
        check_one_of("compute_dtype", compute_dtype, _COMPUTE_DTYPES)
        if method == "svd":
            raise ValueError("compute_dtype is only used by method='newton_schulz', "
                             "got method='svd'")

    *batch, m, n = M.shape
    if M.numel() == 0:
        return M.clone(), schedule, None, None
    transpose = m > n
    X = (M.mT if transpose else M).reshape(-1, min(m, n), max(m, n))
    # The polar factor does not depend on the scale, but ‖M‖_F, the Gram matrix and the AOL
    # row sums square the entries (overflow/underflow beyond ~1e±154 in float64, ~1e±19 in
    # float32): divide by a power of two first, exactly, so that max|M_ij| ∈ [1/2, 1)
    # (within [2^-24, 4) at the ends of the dtype's range, see scaled_to_unit).
    # bfloat16 has float32's exponent range: a float32 M is cast first, and the scaling
    # passes then move half the bytes (the cast cannot overflow, and scaling by 2^k is as
    # exact after it as before).
    cast_first = compute_dtype == torch.bfloat16 and X.dtype == torch.float32
    if cast_first and method == "newton_schulz":
        X = X.to(compute_dtype)
    elif method == "svd" and X.dtype in (torch.bfloat16, torch.float16):
        X = X.float()  # no low-precision SVD
    if precondition != "none":
        X = scaled_to_unit(X)

    if compute_dtype is not None and method == "newton_schulz" and not cast_first:
        # Cast before the start so the AOL Gram product (reused by the first step) is
        # also a fast low-precision product; the scaling only has to be approximately right.
        X = X.to(compute_dtype)
    A, failed, message = None, None, None
    if precondition == "aol":
        X, A = _aol_start(X)
    elif precondition == "frobenius" and method == "newton_schulz":
        X = _frobenius_start(X)
    if check and method == "newton_schulz" and schedule:
        if A is None and X.dtype in (torch.float32, torch.float64):
            A = _gram(X)  # the first step's Gram matrix, shared with the band check
        failed, message = _outside_band(X, A, schedule, precondition)
    if method == "svd":
        U, _, Vh = torch.linalg.svd(X, full_matrices=False)
        X = U @ Vh
    elif X.shape[-1] > _GRAM_ONLY_ASPECT * X.shape[-2] and X.dtype in (torch.float32,
                                                                      torch.float64):
        # The Gram-only form rounds like products of m×m polynomials in A₀: ~1e-4 relative
        # in float32 (vs ~5e-6 for the direct form), acceptable there, too coarse in bf16.
        X = _newton_schulz_gram_only(X, A, schedule)
    else:
        X = _newton_schulz_wide(X, A, schedule)

    X = X.to(M.dtype).reshape(*batch, min(m, n), max(m, n))
    return (X.mT if transpose else X), schedule, failed, message
