"""Differentiable square root and inverse square root of SPD matrices (Song et al.).

Forward: normalise Â = A/‖A‖_F, approximate Â^{±1/2} by coupled Newton–Schulz, a Taylor
polynomial or a Padé approximant of (I − Z)^{1/2} with Z = I − Â (or take an eigendecomposition),
then rescale by ‖A‖_F^{±1/2}. Backward: one custom autograd function for every method that
solves the Lyapunov equation S X + X S = C in the eigenbasis of the computed root S.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from diffnum._core import check_int_in_range, check_matrix, check_one_of
from diffnum._core.status import Status, StatusResult, worst_status
from diffnum._core.summary import OneLineRepr
from diffnum.factor._checks import (
    largest_eigenvalue,
    power_of_two_exponent,
    smallest_eigenvalue,
    times_power_of_two,
)
from diffnum.factor._engine import RankDeficiencyWarning

__all__ = ["SqrtmResult", "sqrtm", "sqrtm_ex"]

logger = logging.getLogger(__name__)

_METHODS = ("newton_schulz", "taylor", "pade", "eigh")
# Default iteration budgets. Newton–Schulz and Taylor stop early once converged; Padé has a
# fixed degree because its coefficients depend on it.
_DEFAULT_MAX_STEPS = {"newton_schulz": 100, "taylor": 200, "pade": 32}
_MAX_STEPS = 100_000


def _sqrt_eps(dtype: torch.dtype) -> float:
    return math.sqrt(torch.finfo(dtype).eps)


def _eye_like(A: torch.Tensor) -> torch.Tensor:
    return torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)


def _symmetrize(A: torch.Tensor) -> torch.Tensor:
    return 0.5 * (A + A.mT)


def _relative_frobenius(E: torch.Tensor, ref_norm: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(E) / ref_norm


def _warn_unconverged(method: str, residual: float, steps: int, dtype: torch.dtype) -> None:
    warnings.warn(
        f"sqrtm(method={method!r}) did not reach the tolerance {_sqrt_eps(dtype):.1e} after "
        f"{steps} steps: relative residual {residual:.2e}. A is too ill-conditioned for this "
        "method and step budget (see the sqrtm docstring for each method's regime); raise "
        "steps, or use method='newton_schulz' or 'eigh'",
        RuntimeWarning,
        stacklevel=3,  # _warn_unconverged <- sqrtm <- caller
    )


def _newton_schulz(A_hat: torch.Tensor, steps: int | None):
    """Coupled iteration Y ← Y T, Z ← T Z with T = ½(3I − Z Y): Y → Â^{1/2}, Z → Â^{-1/2}.

    Per eigenvalue x_k = z_k y_k obeys x ← x(3 − x)²/4, so e = 1 − x falls as e ← (3e² + e³)/4:
    growth by 9/4 while x is small, then quadratic convergence. Returns Y, Z, the steps taken
    and the residual ‖I − Z Y‖_F/√n per batch element.
    """
    eye = _eye_like(A_hat)
    Y, Z = A_hat, eye
    adaptive = steps is None
    budget = _DEFAULT_MAX_STEPS["newton_schulz"] if adaptive else steps
    stop = _sqrt_eps(A_hat.dtype)
    sqrt_n = math.sqrt(A_hat.shape[-1])
    residual, previous, taken = math.inf, math.inf, 0
    norms = torch.full(A_hat.shape[:-2], math.inf, dtype=A_hat.dtype, device=A_hat.device)
    for _ in range(budget):
        E = eye - Z @ Y
        # ‖E‖_F bounds every eigenvalue's error e, so stopping on it leaves no slow eigenvalue
        # behind; the warning uses the dimension-free RMS ‖E‖_F/√n, whose rounding floor
        # (~√n·eps·κ^{1/2}) stays below √eps where the unnormalised norm would not.
        norms = torch.linalg.matrix_norm(E)
        frobenius = float(norms.max())
        residual = frobenius / sqrt_n
        T = eye + 0.5 * E
        Y, Z = Y @ T, T @ Z
        taken += 1
        if adaptive and frobenius <= stop:
            break  # every e ≤ √eps before this step, so ≈ ¾e² ≤ eps after it
        if adaptive and previous < 1e-2 and frobenius > 0.5 * previous:
            break  # all e in the quadratic phase but no longer shrinking: rounding floor
        previous = frobenius
    if residual > stop:
        # The loop measured E before its last step; before warning, measure the result itself
        # (one more product, paid only on the way to a possible warning).
        norms = torch.linalg.matrix_norm(eye - Z @ Y)
        residual = float(norms.max()) / sqrt_n
    logger.debug("sqrtm newton_schulz: %d steps, residual %.2e", taken, residual)
    return Y, Z, taken, norms / sqrt_n


def _taylor(A_hat: torch.Tensor, steps: int | None) -> tuple[torch.Tensor, int]:
    """Ŝ = Σ_{k=0}^{K} binom(1/2, k) (−Z)^k, Z = I − Â (eigenvalues in [0, 1 − λ_min/‖A‖_F))."""
    eye = _eye_like(A_hat)
    Z = eye - A_hat
    adaptive = steps is None
    budget = _DEFAULT_MAX_STEPS["taylor"] if adaptive else steps
    eps = torch.finfo(A_hat.dtype).eps
    S = eye.clone()
    power, coefficient, previous_norm, taken = eye, 1.0, math.inf, 0
    for k in range(1, budget + 1):
        coefficient *= (k - 1.5) / k
        power = power @ Z
        term = coefficient * power
        S = S + term
        taken = k
        if adaptive:
            # Terms decay like q^k with q -> ρ(Z); the tail after term k is about term·q/(1-q).
            norm = float(torch.linalg.matrix_norm(term).max())
            q = norm / previous_norm if previous_norm > 0 else 0.0
            tail = norm * q / (1 - q) if q < 1 else math.inf
            if k > 1 and tail <= eps * float(torch.linalg.matrix_norm(S).min()):
                break
            previous_norm = norm
    logger.debug("sqrtm taylor: %d terms", taken)
    return S, taken


def _pade_coefficients(m: int) -> list[tuple[float, float]]:
    # Partial fractions of the diagonal [m/m] Padé approximant of √(1 + x):
    # r_m(x) = 1 + Σ_j α_j x / (1 + β_j x), relative error ≈ 2ρ^{2m+1}, ρ = |1−√λ|/(1+√λ).
    angles = [j * math.pi / (2 * m + 1) for j in range(1, m + 1)]
    return [(2.0 / (2 * m + 1) * math.sin(t) ** 2, math.cos(t) ** 2) for t in angles]


def _pade(A_hat: torch.Tensor, steps: int | None) -> tuple[torch.Tensor, int]:
    """Ŝ = I + Σ_j α_j X (I + β_j X)^{-1}, X = Â − I = −Z, each term an SPD Cholesky solve."""
    m = _DEFAULT_MAX_STEPS["pade"] if steps is None else steps
    eye = _eye_like(A_hat)
    X = A_hat - eye
    S = eye.clone()
    for alpha, beta in _pade_coefficients(m):
        # I + βX = (1 − β)I + βÂ is SPD for β ∈ (0, 1) and commutes with X.
        L = torch.linalg.cholesky(eye + beta * X)
        S = S + alpha * torch.cholesky_solve(X, L)
    return S, m


def _square_residual(S: torch.Tensor, A_hat: torch.Tensor) -> torch.Tensor:
    return _relative_frobenius(S @ S - A_hat, torch.linalg.matrix_norm(A_hat))


def _check_positive_definite(A: torch.Tensor) -> torch.Tensor:
    """The Cholesky factor of A; a named error when there is none."""
    L, info = torch.linalg.cholesky_ex(A)
    if bool((info > 0).any()):
        index = int(torch.nonzero(info > 0)[0, 0])
        raise ValueError(
            f"A must be symmetric positive definite, got a matrix whose Cholesky factorization "
            f"fails (batch index {index}, leading minor {int(info.flatten()[index])})"
        )
    return L


def _condition_estimate(A: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """A lower bound on κ(A) per batch element: λ_max by power iteration (at least
    ‖A‖_F/√n), λ_min by inverse iteration with the Cholesky factor L (O(n²) per step)."""
    largest = torch.maximum(largest_eigenvalue(A),
                            torch.linalg.matrix_norm(A) / math.sqrt(A.shape[-1]))
    smallest = smallest_eigenvalue(A, L).clamp_min(torch.finfo(A.dtype).tiny)
    return largest / smallest


def _warn_singular(kappa: float, dtype: torch.dtype) -> None:
    eps = torch.finfo(dtype).eps
    warnings.warn(
        f"sqrtm(inverse=True): A is numerically singular in {dtype}: κ(A) ≥ {kappa:.1e} "
        f"(measured: eigenvalues span [λ_max/{kappa:.1e}, λ_max]), above 1/eps = {1 / eps:.1e}, "
        "so its smallest eigenvalues are below the rounding level of its entries and A^(-1/2) "
        "is not determined along them (relative error up to ~κ·eps). Use float64 or "
        "regularize (A + λI)",
        RankDeficiencyWarning,
        stacklevel=3,
    )


class _SquareRoot(torch.autograd.Function):
    """A ↦ A^{1/2} (or A^{-1/2}) with the Lyapunov backward, for any forward method.

    Besides the root it returns, per batch element and not differentiable, the steps taken,
    the forward residual (NaN where ``measure`` is False, 0 for ``"eigh"``) and the condition
    estimate κ(A) (NaN where neither ``condition`` nor ``"eigh"`` measured it).
    """

    @staticmethod
    def forward(ctx, A, method, inverse, steps, measure, condition):
        batch = A.shape[:-2]
        nan = torch.full(batch, math.nan, dtype=A.dtype, device=A.device)
        residual, kappa = nan, nan
        if method == "eigh":
            eigenvalues, Q = torch.linalg.eigh(A)
            if bool((eigenvalues[..., 0] <= 0).any()):
                raise ValueError(
                    "A must be symmetric positive definite, got smallest eigenvalue "
                    f"{float(eigenvalues[..., 0].min()):.3e}"
                )
            kappa = eigenvalues[..., -1] / eigenvalues[..., 0]
            residual, taken = torch.zeros_like(nan), 0
            mu = eigenvalues.sqrt()
            power = mu.reciprocal() if inverse else mu
            out = _symmetrize((Q * power.unsqueeze(-2)) @ Q.mT)
            ctx.save_for_backward(Q, mu)
        else:
            L = _check_positive_definite(A)
            if condition:
                kappa = _condition_estimate(A, L)
            norm = torch.linalg.matrix_norm(A, keepdim=True)
            A_hat = A / norm
            if method == "newton_schulz":
                Y, Z, taken, residual = _newton_schulz(A_hat, steps)
                out = Z / norm.sqrt() if inverse else Y * norm.sqrt()
            else:
                S_hat, taken = (_taylor if method == "taylor" else _pade)(A_hat, steps)
                if measure:
                    residual = _square_residual(S_hat, A_hat)
                if inverse:
                    # Both approximants overestimate √λ > 0, so Ŝ stays SPD.
                    S_hat = torch.cholesky_inverse(torch.linalg.cholesky(_symmetrize(S_hat)))
                    out = S_hat / norm.sqrt()
                else:
                    out = S_hat * norm.sqrt()
            out = _symmetrize(out)
            ctx.save_for_backward(out)
        ctx.inverse = inverse
        ctx.save_output = method != "eigh"
        taken = torch.full(batch, taken, dtype=torch.int64, device=A.device)
        ctx.mark_non_differentiable(taken, residual, kappa)
        return out, taken, residual, kappa

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, *_):  # no gradient reaches the diagnostics
        if ctx.save_output:
            (out,) = ctx.saved_tensors
            nu, Q = torch.linalg.eigh(out)
            mu = nu.reciprocal() if ctx.inverse else nu
        else:
            Q, mu = ctx.saved_tensors
        # S = A^{1/2} = Q diag(μ) Qᵀ: dA = S dS + dS S, so the adjoint solves S X + X S = C with
        # C = ∂L/∂S; for R = S^{-1}, dR = −R dS R gives C = −R (∂L/∂R) R. In the eigenbasis both
        # are elementwise divisions by μ_i + μ_j > 0 (no division by eigenvalue gaps).
        G = Q.mT @ grad @ Q
        mu_i, mu_j = mu.unsqueeze(-1), mu.unsqueeze(-2)
        denominator = mu_i + mu_j
        if ctx.inverse:
            denominator = -denominator * mu_i * mu_j
        return Q @ (G / denominator) @ Q.mT, None, None, None, None, None


def sqrtm(
    A: torch.Tensor,
    method: str = "newton_schulz",
    inverse: bool = False,
    *,
    steps: int | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Differentiable principal square root ``A^{1/2}`` (or ``A^{-1/2}``) of SPD matrices.

    Following Song et al., "Fast Differentiable Matrix Square Root": Â = A/‖A‖_F has spectrum
    in (0, 1], Â^{±1/2} is approximated and rescaled, ``A^{1/2} = ‖A‖_F^{1/2} Â^{1/2}``.
    Methods:

    - ``"newton_schulz"`` (default): coupled Newton–Schulz, Y₀ = Â, Z₀ = I,
      T = ½(3I − Z_k Y_k), Y_{k+1} = Y_k T, Z_{k+1} = T Z_k; Y → Â^{1/2}, Z → Â^{-1/2}.
      Each eigenvalue x = λ/‖A‖_F needs about log(1/x)/log(9/4) steps to reach the
      quadratically convergent phase, then ~5 more; with ``steps=None`` it stops after the
      step at which ‖I − Z Y‖_F is below √eps (quadratic convergence then gives machine
      precision) or stagnates at rounding level, within 100 steps — enough for
      λ_min/‖A‖_F ≳ 1e-30, i.e. any condition number float64 can represent meaningfully.
    - ``"taylor"``: matrix Taylor polynomial (I − Z)^{1/2} ≈ Σ_{k<=K} binom(1/2, k)(−Z)^k,
      Z = I − Â. Terms decay like (1 − δ)^k k^{-3/2}, δ = λ_min/‖A‖_F, so machine precision
      needs K ≈ 35/δ terms: only δ ≳ 0.2 (small, well-conditioned matrices) within the
      default 200 terms; otherwise it is the fixed-budget approximation used for training.
      ``steps=None`` stops when the estimated tail is below eps.
    - ``"pade"``: diagonal [m/m] Padé approximant of (1 + x)^{1/2} at x = Â − I, in partial
      fractions (m SPD solves). Relative error ≈ 2ρ^{2m+1}, ρ = (1 − √δ)/(1 + √δ): the default
      m = 32 reaches float64 precision for δ ≳ 0.07.
    - ``"eigh"``: the reference, A = Q diag(λ) Qᵀ, A^{±1/2} = Q diag(λ^{±1/2}) Qᵀ.

    For ``inverse=True``, Newton–Schulz returns Z/‖A‖_F^{1/2}; Taylor and Padé invert their
    square root by a Cholesky factorization.

    Backward (all methods): with S = A^{1/2}, dA = S dS + dS S, so ∂L/∂A = X solves the
    Lyapunov equation S X + X S = C, C = ∂L/∂S (for R = A^{-1/2}: C = −R (∂L/∂R) R). It is
    solved in the eigenbasis of the computed root, S = Q diag(μ) Qᵀ:
    X = Q [(Qᵀ C Q)_ij / (μ_i + μ_j)] Qᵀ — exact for the computed S, well defined for repeated
    eigenvalues. ``A`` is symmetrized, ½(A + Aᵀ), so the gradient is symmetric. Double
    backward is not supported.

    Args:
        A: SPD tensor ``(..., n, n)``, float32/float64, symmetric to within
            √eps·‖A‖_F (Frobenius).
        method: ``"newton_schulz"``, ``"taylor"``, ``"pade"`` or ``"eigh"``.
        inverse: return ``A^{-1/2}`` instead of ``A^{1/2}``.
        steps: Newton–Schulz iterations / Taylor degree / Padé degree m. ``None``: adaptive
            (Newton–Schulz, Taylor) or 32 (Padé). An int runs exactly that many.
        check: warn (``RuntimeWarning``) when the forward residual — ‖I − Z Y‖_F/√n for
            Newton–Schulz, ‖Ŝ² − Â‖_F/‖Â‖_F for Taylor and Padé — stays above √eps; and, for
            ``inverse=True``, warn (:class:`RankDeficiencyWarning`) when κ(A) ≥ 1/eps (e.g.
            κ ≥ 8e6 in float32), where A^{-1/2} is not determined by the rounded entries of A.
            κ is exact for ``"eigh"`` and otherwise a lower bound from a few power and
            inverse iterations with the Cholesky factor (O(n²) each). :func:`sqrtm_ex`
            returns these diagnostics (and a status per batch element) instead of warning.

    ``A`` is first divided by an exact power of four (and the root rescaled), so any finite
    scale works.

    Raises:
        ValueError: ``A`` not square, not symmetric within tolerance, or not positive
            definite (Cholesky fails; for ``"eigh"`` a non-positive eigenvalue).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> C = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> spd = C @ C.mT + 6 * torch.eye(6, dtype=torch.float64)
        >>> R = df.sqrtm(spd)
        >>> bool((R @ R - spd).norm() <= 1e-12 * spd.norm())
        True
    """
    result = _sqrtm(A, method, inverse, steps, check, measure=check, condition=check and inverse)
    # Warnings from the diagnostics, raised here so that they point at the caller.
    residual = float(result.residual.max()) if result.residual.numel() else 0.0
    if check and residual > _sqrt_eps(A.dtype):
        _warn_unconverged(method, residual, int(result.steps.max()), A.dtype)
    if check and inverse and bool((result.condition * torch.finfo(A.dtype).eps >= 1).any()):
        _warn_singular(float(result.condition.max()), A.dtype)
    return result.value


@dataclass(frozen=True, repr=False)
class SqrtmResult(StatusResult, OneLineRepr):
    """Root and diagnostics of :func:`sqrtm_ex`, one entry per batch element.

    Attributes:
        value: ``A^{1/2}`` (or ``A^{-1/2}``), shape ``(..., n, n)``, differentiable — the
            tensor :func:`sqrtm` returns.
        status: int64 :class:`~diffnum.Status` codes, shape ``batch``: ``CONVERGED``;
            ``MAX_STEPS`` when ``residual`` is above √eps (the step budget ran out or the
            method cannot reach the tolerance in it); ``ILL_CONDITIONED`` for
            ``inverse=True`` when ``condition``·eps ≥ 1 (A^{-1/2} is not determined by the
            rounded entries of A); ``NONFINITE`` when ``value`` is not finite.
        steps: int64, shape ``batch``: Newton–Schulz iterations, Taylor terms or the Padé
            degree (0 for ``"eigh"``).
        residual: shape ``batch``: ‖I − Z Y‖_F/√n (Newton–Schulz), ‖Ŝ² − Â‖_F/‖Â‖_F (Taylor,
            Padé) or 0 (``"eigh"``, no iteration to converge).
        condition: shape ``batch``: κ(A), exact for ``"eigh"``, otherwise a lower bound from a
            few power and inverse iterations with the Cholesky factor.

    Did it fail? ``converged``, ``all_converged``, ``failures()``, ``describe()`` and
    ``raise_if_failed()``, as every result (:class:`~diffnum.Status` protocol).

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A = torch.diag(torch.logspace(0, -6, 5, dtype=torch.float64))
        >>> out = df.sqrtm_ex(A, "taylor", steps=10)  # far too few terms for κ = 1e6
        >>> out.failures(), out.steps.tolist()
        ([((), <Status.MAX_STEPS: 1>)], 10)
    """

    value: torch.Tensor
    status: torch.Tensor
    steps: torch.Tensor
    residual: torch.Tensor
    condition: torch.Tensor

    _DETAILS = ("steps", "residual", "condition")  # shown by describe()


def sqrtm_ex(
    A: torch.Tensor,
    method: str = "newton_schulz",
    inverse: bool = False,
    *,
    steps: int | None = None,
    throw: bool = False,
) -> SqrtmResult:
    """:func:`sqrtm` with its diagnostics: a :class:`SqrtmResult` (value, status, steps,
    residual, condition) instead of warnings — as ``torch.linalg.cholesky_ex`` is to
    ``cholesky``.

    The arguments are those of :func:`sqrtm` (see there for the methods and the gradient);
    every test is measured (the residual, and κ(A) by a few power and inverse iterations)
    and nothing warns. ``throw=True`` raises a :class:`~diffnum.ResultError` naming every
    batch element that did not converge. ``value`` is bit for bit what :func:`sqrtm`
    returns, with the same gradient.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> C = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> spd = C @ C.mT + 6 * torch.eye(6, dtype=torch.float64)
        >>> out = df.sqrtm_ex(spd, inverse=True)
        >>> out.all_converged, bool(out.residual < 1e-8), bool(out.condition > 1)
        (True, True, True)
    """
    if not isinstance(throw, bool):
        raise TypeError(f"throw must be a bool, got {type(throw).__name__}")
    result = _sqrtm(A, method, inverse, steps, True, measure=True, condition=True)
    if throw:
        result.raise_if_failed("sqrtm_ex")
    return result


def _sqrtm(A: torch.Tensor, method: str, inverse: bool, steps: int | None, check: bool, *,
           measure: bool, condition: bool) -> SqrtmResult:
    """The checks, the scaling and the autograd function, shared by :func:`sqrtm` and
    :func:`sqrtm_ex`; ``measure``: the Taylor/Padé residual, ``condition``: κ(A)."""
    check_matrix("A", A)
    check_one_of("method", method, _METHODS)
    if not isinstance(inverse, bool):
        raise TypeError(f"inverse must be a bool, got {type(inverse).__name__}")
    if not isinstance(check, bool):
        raise TypeError(f"check must be a bool, got {type(check).__name__}")
    if steps is not None:
        check_int_in_range("steps", steps, 1, _MAX_STEPS)
        if method == "eigh":
            raise ValueError(f"steps is not used by method='eigh', got steps={steps}")
    n = A.shape[-1]
    if A.shape[-2] != n:
        raise ValueError(f"A must be square (..., n, n), got shape {tuple(A.shape)}")
    if A.numel() == 0:
        zeros = A.new_zeros(A.shape[:-2])
        return SqrtmResult(A.clone(), zeros.long(), zeros.long(), zeros, zeros)
    # ‖A‖_F and the products below square the entries (overflow/underflow beyond ~1e±154 in
    # float64): divide by an even power of two 4^h first, exactly, and multiply the root by 2^h.
    half = torch.div(power_of_two_exponent(A), 2, rounding_mode="floor")
    A = times_power_of_two(A, -2 * half)
    with torch.no_grad():
        asymmetry = torch.linalg.matrix_norm(A - A.mT) / torch.linalg.matrix_norm(
            A
        ).clamp_min(torch.finfo(A.dtype).tiny)
    if bool((asymmetry > _sqrt_eps(A.dtype)).any()):
        raise ValueError(
            f"A must be symmetric, got relative asymmetry ‖A − Aᵀ‖_F/‖A‖_F = "
            f"{float(asymmetry.max()):.2e} > {_sqrt_eps(A.dtype):.1e}"
        )
    batch, half = A.shape[:-2], half.reshape(-1, 1, 1)
    A = _symmetrize(A).reshape(-1, n, n)
    out, taken, residual, kappa = _SquareRoot.apply(A, method, inverse, steps, measure,
                                                    condition)
    out = times_power_of_two(out, -half if inverse else half)
    value = out.reshape(*batch, n, n)
    eps = torch.finfo(A.dtype).eps
    status = worst_status(
        (~torch.isfinite(out).flatten(-2).all(-1), Status.NONFINITE),
        (kappa * eps >= 1 if inverse else torch.zeros_like(taken, dtype=torch.bool),
         Status.ILL_CONDITIONED),
        (residual > _sqrt_eps(A.dtype), Status.MAX_STEPS),
    )
    return SqrtmResult(value, status.reshape(batch), taken.reshape(batch),
                       residual.reshape(batch), kappa.reshape(batch))
