"""Exact solutions used as references: Cole–Hopf for viscous Burgers."""

from __future__ import annotations

import math

import numpy as np
import torch

from diffnum._core.validation import check_finite, check_positive


def burgers_sine_cole_hopf(x: torch.Tensor, t: torch.Tensor, viscosity: float) -> torch.Tensor:
    """Exact solution of u_t + u u_x = ν u_xx with u(x, 0) = −sin(πx), by Cole–Hopf.

    u = −2ν φ_x/φ with φ = K_t * φ₀, φ₀(y) = exp(−U₀(y)/2ν), U₀(y) = ∫₀^y u₀ = (cos πy − 1)/π:

        u(x, t) = ∫ ((x − y)/t) e^{L(y)} dy / ∫ e^{L(y)} dy,  L(y) = −(x − y)²/4νt − U₀(y)/2ν.

    Both integrals are evaluated by the trapezoidal rule on a window around x wide enough that
    e^{L} falls below e^{−40} of its peak (the window grows with ΔU₀/2ν = 1/πν), with nodes
    resolving both the heat kernel (width √(2νt)) and φ₀ (width √(2ν/π)); the integrand is
    smooth and negligible at the window ends, so the rule converges geometrically. L is shifted
    by its maximum before exponentiating, so small ν does not overflow. Computed in float64
    (returned in the dtype of ``x``); x and t broadcast; t = 0 gives u₀. The solution is
    2-periodic in x and vanishes at x = ±1, so it serves the periodic and the Dirichlet problem
    on [−1, 1]. Reference data: computed in NumPy, so no gradient flows to x or t.

    Example::

        >>> import torch
        >>> from diffnum.pde import burgers_sine_cole_hopf
        >>> x = torch.tensor([0.5], dtype=torch.float64)
        >>> float(burgers_sine_cole_hopf(x, torch.zeros(1, dtype=torch.float64), 0.01))  # −sin(πx)
        -1.0
    """
    nu = check_positive("viscosity", viscosity)
    x, t = _real("x", x), _real("t", t)
    out_dtype = x.dtype if x.is_floating_point() else torch.float64
    try:
        xs, ts = torch.broadcast_tensors(x, t)
    except RuntimeError:
        raise ValueError(f"x and t must broadcast, got shapes {tuple(x.shape)} and "
                         f"{tuple(t.shape)}") from None
    xn = xs.detach().cpu().double().numpy().reshape(-1)
    tn = ts.detach().cpu().double().numpy().reshape(-1)
    if (tn < 0).any():
        raise ValueError("t must be >= 0")
    result = -np.sin(np.pi * xn)
    positive = tn > 0
    # Window half-width W: (x − y)²/4νt must exceed the spread of U₀/2ν (1/πν) by 40.
    spread = 1.0 / (math.pi * nu) + 40.0
    for tv in np.unique(tn[positive]):
        sel = np.nonzero(tn == tv)[0]
        width = math.sqrt(4 * nu * tv * spread)
        step = min(math.sqrt(2 * nu * tv), math.sqrt(2 * nu / math.pi)) / 8
        n_nodes = 2 * math.ceil(width / step) + 1
        s = np.linspace(-width, width, n_nodes)  # y − x
        for start in range(0, sel.size, 4096):  # bound memory at 4096 × n_nodes
            idx = sel[start : start + 4096]
            y = xn[idx, None] + s[None, :]
            log_w = -(s**2)[None, :] / (4 * nu * tv) - (np.cos(np.pi * y) - 1) / (2 * math.pi * nu)
            weights = np.exp(log_w - log_w.max(axis=1, keepdims=True))
            # Trapezoid end weights are irrelevant: the integrand is < e^{-40} there.
            result[idx] = (weights @ (-s / tv)) / weights.sum(axis=1)
    return torch.from_numpy(result.reshape(xs.shape)).to(dtype=out_dtype, device=xs.device)


def _real(name: str, value: object) -> torch.Tensor:
    """A finite real tensor (or number) as a tensor."""
    if isinstance(value, bool) or not isinstance(value, torch.Tensor | int | float):
        raise TypeError(f"{name} must be a real tensor or number, got {type(value).__name__}")
    value = torch.as_tensor(value)
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {value.dtype}")
    check_finite(name, value)
    return value
