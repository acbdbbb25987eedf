"""Shared machinery of the solvers: argument checks, tolerances, batched Jacobians."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import jvp, vjp, vmap

from diffnum._core.validation import check_count, check_finite, real_floating_dtype

# Default tolerances per dtype: about sqrt(machine epsilon) relative and absolute, the usual
# accuracy limit of a step-size test (a step below ~sqrt(eps)·|y| is lost in rounding of y).
_DEFAULT_TOL = {torch.float64: 1e-8, torch.float32: 1e-4}
# Upper bound of every iteration count: a typo (10**12) raises instead of running for ever.
MAX_STEPS_LIMIT = 10**6


def as_initial_value(y0: Any) -> torch.Tensor:
    """``y0`` as a new contiguous floating tensor ``(*batch, n)`` (float64 when not a tensor).

    Always a copy, safe to write to, never ``y0`` itself (which the solve leaves untouched).
    """
    if not isinstance(y0, torch.Tensor):
        try:
            y0 = torch.as_tensor(y0, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"y0 must be a tensor (or nested sequence of floats), got {type(y0).__name__}"
            ) from None
    real_floating_dtype("y0", y0)
    if y0.ndim == 0 or y0.shape[-1] == 0:
        raise ValueError(
            f"y0 must have shape (*batch, n) with n >= 1 unknowns, got {tuple(y0.shape)}"
        )
    check_finite("y0", y0)
    # An expanded y0 (stride 0, e.g. ``torch.zeros(n).expand(batch, n)``) fails inside the
    # solvers: making it a forward-mode dual tensor (the Jacobian's JVPs) writes to it, which
    # PyTorch refuses for overlapping memory. A contiguous copy (one pass over y0) is always
    # writable, never aliases the caller's tensor or NumPy array (a solve that stops at y0
    # would otherwise return y0 itself as ``Solution.value``), and keeps y0's autograd graph.
    return y0.clone(memory_format=torch.contiguous_format)


def as_args(args: Any) -> tuple:
    """``args`` as a tuple (a single tensor is wrapped).

    Non-finite values in ``args`` are not an input error: they make the affected batch
    elements report ``Status.NONFINITE`` while the others solve normally.
    """
    if isinstance(args, torch.Tensor):
        args = (args,)
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"args must be a tuple of extra arguments of fn, got {type(args).__name__}")
    return tuple(args)


def check_tolerance(name: str, value: float | None, dtype: torch.dtype) -> float:
    """A tolerance: ``None`` gives the dtype default; otherwise a finite float ``>= 0``, and
    ``< 1`` for ``rtol`` (a relative tolerance of 1 or more accepts any answer, y = 0 too)."""
    if value is None:
        return _DEFAULT_TOL[dtype]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (value >= 0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if name == "rtol" and value >= 1:
        raise ValueError(f"rtol must be < 1 (relative to the problem's scale, 1 or more accepts "
                         f"any answer), got {value!r}")
    return float(value)


def check_tolerances(rtol: float | None, atol: float | None) -> None:
    """Validate user tolerances at solver construction (``None`` means the dtype default)."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        check_tolerance(name, value, torch.float64)
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol must not both be 0 (the solve could never converge)")


def check_max_steps(max_steps: int) -> int:
    """An iteration count in [1, 10⁶]."""
    return check_count("max_steps", max_steps, high=MAX_STEPS_LIMIT)


def evaluate_checked(name: str, fn: Callable, y: torch.Tensor, args: tuple,
                     square: bool = False) -> torch.Tensor:
    """Evaluate ``fn(y, *args)`` once and check its output against ``y``'s batch shape."""
    out = fn(y, *args)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"fn must return a tensor, got {type(out).__name__}")
    batch = tuple(y.shape[:-1])
    need = f"(*batch, n) = {(*batch, y.shape[-1])}" if square else f"(*batch, m) = {(*batch, 'm')}"
    if out.ndim != y.ndim or tuple(out.shape[:-1]) != batch or (
            square and out.shape[-1] != y.shape[-1]):
        raise ValueError(
            f"{name}: fn(y0, *args) must return shape {need} for y0 of shape "
            f"{tuple(y.shape)}, got {tuple(out.shape)}"
        )
    if out.dtype != y.dtype:
        raise TypeError(
            f"{name}: fn(y0, *args) must return dtype {y.dtype} like y0, got {out.dtype}"
        )
    return out


def unit_basis(count: int, batch: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``count`` unit vectors broadcast over ``batch``: shape ``(count, *batch, count)``."""
    eye = torch.eye(count, dtype=like.dtype, device=like.device)
    return eye.reshape(count, *([1] * len(batch)), count).expand(count, *batch, count)


def jacobian(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, m: int,
             mode: str) -> torch.Tensor:
    """Per-element Jacobian ``(*batch, m, n)`` of a batched ``fn: (*batch, n) -> (*batch, m)``.

    Batch elements are independent, so pushing the unit tangent e_j (the same for every
    element) through a JVP gives column j of every element's Jacobian at once: n forward-mode
    products for ``mode="forward"`` (cheap when m ≫ n), m reverse-mode products for
    ``mode="reverse"``. Works inside an outer autograd graph (used by :class:`UnrollAdjoint`).
    """
    n = y.shape[-1]
    batch = y.shape[:-1]
    if mode == "forward":
        tangents = unit_basis(n, batch, y)
        # One JVP per column rather than a vmap over the n tangents: vmap's batching rule for
        # a matmul with an unbatched captured matrix (u = B w, the common case here) is
        # several times slower than n plain products (measured 200 ms vs 120 ms for
        # 32 × 4096 × 16 on one thread).
        cols = [jvp(fn, (y,), (tangents[j],))[1] for j in range(n)]
        return torch.stack(cols, dim=-1)
    _, pullback = vjp(fn, y)
    cotangents = unit_basis(m, batch, y)
    rows = vmap(lambda c: pullback(c)[0])(cotangents)  # (m, *batch, n)
    return rows.movedim(0, -2)


def resolve_jacobian(jac: Any, m: int, n: int) -> str | Callable:
    """``"auto"`` picks forward mode when m >= n, reverse otherwise; a callable is used as is."""
    if callable(jac):
        return jac
    if jac not in ("auto", "forward", "reverse"):
        raise ValueError(
            f"jacobian must be 'auto', 'forward', 'reverse' or a callable "
            f"jacobian(y, *args) -> (*batch, m, n), got {jac!r}"
        )
    if jac == "auto":
        return "forward" if m >= n else "reverse"
    return jac


def make_jacobian_fn(fn: Callable, args: tuple, jac: str | Callable, m: int
                     ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``y -> J(y)`` of shape ``(*batch, m, n)`` from a mode or a user callable."""
    if callable(jac):
        def user_jacobian(y: torch.Tensor) -> torch.Tensor:
            J = jac(y, *args)
            want = (*y.shape[:-1], m, y.shape[-1])
            if not isinstance(J, torch.Tensor) or tuple(J.shape) != want:
                got = tuple(J.shape) if isinstance(J, torch.Tensor) else type(J).__name__
                raise ValueError(f"jacobian(y, *args) must return shape {want}, got {got}")
            return J
        return user_jacobian
    return lambda y: jacobian(lambda z: fn(z, *args), y, m, jac)


def max_abs(x: torch.Tensor) -> torch.Tensor:
    """∞-norm over the last dimension."""
    return x.abs().amax(dim=-1)


def batch_where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where`` with a batch mask broadcast over trailing dimensions of ``a``."""
    return torch.where(mask.reshape(*mask.shape, *([1] * (a.ndim - mask.ndim))), a, b)
