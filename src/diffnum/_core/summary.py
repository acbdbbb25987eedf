"""One-line ``repr`` for result dataclasses that hold tensors."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

_MAX_FIELD = 60  # characters of one non-tensor field's repr


def short(value: Any) -> str:
    """A field's value in a few characters: a tensor by shape and dtype (a scalar tensor by
    its value), a container by its length, anything else by a truncated ``repr``."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1 and value.ndim == 0:
            return f"{value.item():.4g}" if value.is_floating_point() else str(value.item())
        shape = "×".join(map(str, value.shape)) or "scalar"
        return f"tensor({shape}, {str(value.dtype).removeprefix('torch.')})"
    if isinstance(value, dict):
        return "{" + ", ".join(map(str, list(value)[:4])) + (", …}" if len(value) > 4 else "}")
    if isinstance(value, (list, tuple)):
        if len(value) > 4:
            return f"{type(value).__name__} of {len(value)}"
        inner = ", ".join(short(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' * (len(value) == 1)})"
    text = repr(value).replace("\n", " ")
    return text if len(text) <= _MAX_FIELD else text[:_MAX_FIELD - 1] + "…"


def one_line(obj: Any, *extra: str) -> str:
    """``Name(field=…, …, extra…)`` on one line, each field shortened by :func:`short`."""
    parts = [f"{f.name}={short(getattr(obj, f.name))}" for f in dataclasses.fields(obj)
             if f.repr]
    return f"{type(obj).__name__}({', '.join([*parts, *extra])})"


class OneLineRepr:
    """Mixin for result dataclasses (declared with ``repr=False``): ``repr`` is
    :func:`one_line`, tensors by shape and dtype — the dataclass default prints them whole."""

    __slots__ = ()

    def __repr__(self) -> str:
        return one_line(self)
