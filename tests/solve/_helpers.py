"""Gradient comparisons shared by the solve tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def directional_fd(loss: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                   directions: Sequence[torch.Tensor], h: float) -> float:
    """Central difference (L(θ + h d) − L(θ − h d)) / 2h, perturbing ``params`` in place."""
    with torch.no_grad():
        for p, d in zip(params, directions):
            p.add_(h * d)
        plus = float(loss())
        for p, d in zip(params, directions):
            p.sub_(2 * h * d)
        minus = float(loss())
        for p, d in zip(params, directions):
            p.add_(h * d)
    return (plus - minus) / (2 * h)


def directional_grad(loss: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                     directions: Sequence[torch.Tensor]) -> float:
    """∇L · d by autograd."""
    grads = torch.autograd.grad(loss(), list(params), allow_unused=True)
    return float(sum((g * d).sum() for g, d in zip(grads, directions) if g is not None))


def relative_error(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)
