"""Argument checks that raise errors naming the argument, what it got and what it needs."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

_FLOATING = (torch.float32, torch.float64)


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def real_floating_dtype(name: str, x: torch.Tensor, *, low_precision: bool = False
                        ) -> torch.dtype:
    """Return ``x.dtype`` if it is float32/float64 (or bfloat16/float16 where
    ``low_precision`` allows it), else raise ``TypeError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    allowed = _FLOATING + (_LOW_PRECISION if low_precision else ())
    if x.dtype not in allowed:
        need = "float32, float64, bfloat16 or float16" if low_precision else "float32 or float64"
        raise TypeError(f"{name} must be {need}, got {x.dtype}")
    return x.dtype


def tracing() -> bool:
    """True inside ``torch.compile`` / ``torch.jit.trace``: data-reading checks (which need
    a value on the host, a graph break or a trace baked to one input) are skipped there;
    the eager call checks them."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or ±inf (not checked while :func:`tracing`)."""
    if tracing():
        return
    # One reduction pass first: a finite sum proves every entry finite (NaN and ±inf
    # propagate). Only when it is not finite (or finite values overflowed) look closer.
    if x.numel() == 0 or bool(torch.isfinite(x.detach().sum())):
        return
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite entries")


def check_matrix(name: str, x: torch.Tensor, *, finite: bool = True,
                 low_precision: bool = False) -> torch.Tensor:
    """Check ``x`` is a real floating (batched) matrix ``(..., m, n)``; return it."""
    real_floating_dtype(name, x, low_precision=low_precision)
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


def check_real(name: str, value: object, *, low: float = -math.inf, high: float = math.inf,
               low_open: bool = False, high_open: bool = False) -> float:
    """Check that ``value`` is a finite real number in the range and return it as a float.

    ``low_open``/``high_open`` exclude the end: ``check_real("rtol", v, low=0, low_open=True)``
    needs 0 < v. A bool is not a number here; NaN and ±inf are rejected by name.
    """
    scalar_tensor = (isinstance(value, torch.Tensor) and value.numel() == 1
                     and not value.is_complex())
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or scalar_tensor):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must lie in {left}{low}, {high}{right}, got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """A finite real number > 0, as a float."""
    return check_real(name, value, low=0.0, low_open=True)


def check_count(name: str, value: object, *, low: int = 1, high: int = 10**9) -> int:
    """An int in ``[low, high]`` — the upper bound keeps a typo (``10**12`` iterations) from
    running for ever."""
    return check_int_in_range(name, value, low, high)


def check_same_dtype_device(named: dict[str, torch.Tensor]) -> None:
    """Raise ``TypeError`` naming the tensors whose dtype or device differ from the first's."""
    items = [(k, v) for k, v in named.items() if isinstance(v, torch.Tensor)]
    if not items:
        return
    first_name, first = items[0]
    for name, tensor in items[1:]:
        if tensor.dtype != first.dtype:
            raise TypeError(f"{name} must have the dtype of {first_name} ({first.dtype}), "
                            f"got {tensor.dtype}")
        if tensor.device != first.device:
            raise TypeError(f"{name} must be on the device of {first_name} ({first.device}), "
                            f"got {tensor.device}")


def check_nonempty(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` has no entries (FFTs and LAPACK fail obscurely there)."""
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")


def check_flag(name: str, value: object) -> bool:
    """A ``bool`` (``throw="no"`` would otherwise be true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value
