"""Argument checks that raise errors naming the argument, what it got and what it needs."""

from __future__ import annotations

from collections.abc import Iterable

import torch

_FLOATING = (torch.float32, torch.float64)


def real_floating_dtype(name: str, x: torch.Tensor) -> torch.dtype:
    """Return ``x.dtype`` if it is float32/float64, else raise ``TypeError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATING:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    return x.dtype


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or ±inf."""
    # One reduction pass first: a finite sum proves every entry finite (NaN and ±inf
    # propagate). Only when it is not finite (or finite values overflowed) look closer.
    if x.numel() == 0 or bool(torch.isfinite(x.detach().sum())):
        return
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite entries")


def check_matrix(name: str, x: torch.Tensor, *, finite: bool = True) -> torch.Tensor:
    """Check ``x`` is a real floating (batched) matrix ``(..., m, n)``; return it."""
    real_floating_dtype(name, x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., m, n), got shape {tuple(x.shape)}"
        )
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have non-empty matrix dimensions, got {tuple(x.shape)}")
    if finite:
        check_finite(name, x)
    return x


def check_int_in_range(name: str, value: object, low: int, high: int) -> int:
    """Check ``low <= value <= high`` for an integer ``value``; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must satisfy {low} <= {name} <= {high}, got {value}")
    return value


def check_one_of(name: str, value: object, allowed: Iterable[object]) -> None:
    """Check ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def check_same_batch(names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> None:
    """Check two batched matrices have broadcastable leading (batch) dimensions."""
    try:
        torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"{names[0]} and {names[1]} must have broadcastable batch dimensions, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        ) from None
