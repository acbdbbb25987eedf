"""Shared helpers for the interp tests."""

from __future__ import annotations

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error ‖a − b‖ / ‖b‖ (elementwise ratios blow up at zero entries)."""
    a, b = a.detach().double(), b.detach().double()
    scale = b.norm().item()
    if scale == 0.0:
        return a.norm().item()
    return (a - b).norm().item() / scale


def special_positions(P: torch.Tensor, size: tuple[int, ...], generator: torch.Generator):
    """Random positions in the support with some exactly integer and some at the clamp limits."""
    d = P.shape[0]
    flat = P.reshape(d, -1)
    n = flat.shape[1]
    for i in range(d):
        lim = size[i] // 2
        flat[i] = (torch.rand(n, generator=generator, dtype=P.dtype) * 2 - 1) * lim
    k = n // 4
    flat[:, :k] = flat[:, :k].round()  # exactly integer positions
    for i in range(d):
        lim = size[i] // 2
        flat[i, k:k + max(1, k // 2)] = lim  # upper clamp limit
        flat[i, k + max(1, k // 2):2 * k] = -lim  # lower clamp limit
    return flat.reshape(P.shape)
