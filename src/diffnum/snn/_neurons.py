"""Surrogate-gradient spikes and multi-step leaky integrate-and-fire neurons."""

from __future__ import annotations

import math

import torch
from torch import nn

from diffnum._core.validation import (
    check_count,
    check_finite,
    check_one_of,
    check_positive,
    check_real,
    check_same_dtype_device,
    real_floating_dtype,
)

SURROGATES = ("atan", "sigmoid", "fast_sigmoid")


def _check_current(name: str, current: torch.Tensor) -> None:
    """A real floating ``(..., T)`` tensor of finite values.

    NaN/inf are rejected rather than propagated: a NaN compares false against the threshold,
    so it would silently read as "no spike" (and reset nothing).
    """
    real_floating_dtype(name, current)
    if current.ndim < 1:
        raise ValueError(f"{name} must have shape (..., T) with a time axis, got a 0-d tensor")
    check_finite(name, current)


def _check_beta(beta: float | torch.Tensor, current: torch.Tensor) -> None:
    """β in [0, 1]: a real number, or a tensor broadcastable to ``current[..., 0]``."""
    if not isinstance(beta, torch.Tensor):
        check_real("beta", beta, low=0.0, high=1.0)
        return
    real_floating_dtype("beta", beta)
    check_same_dtype_device({"current": current, "beta": beta})
    state = current.shape[:-1]
    try:
        fits = torch.broadcast_shapes(beta.shape, state) == state
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"beta must broadcast to current's shape without time {tuple(state)}, "
                         f"got {tuple(beta.shape)}")
    check_finite("beta", beta)
    if beta.numel() and not bool(((beta >= 0) & (beta <= 1)).all()):
        raise ValueError(f"beta must lie in [0, 1], got values in "
                         f"[{float(beta.min())}, {float(beta.max())}]")


class _Spike(torch.autograd.Function):
    """Heaviside forward Θ(x); the backward uses the derivative of a smooth surrogate."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kind = kind
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        a = ctx.alpha
        if ctx.kind == "atan":
            # d/dx [arctan(π/2·α·x)/π + 1/2]
            d = (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)
        elif ctx.kind == "sigmoid":
            s = torch.sigmoid(a * x)
            d = a * s * (1 - s)
        else:  # fast sigmoid: x / (1 + α|x|) rescaled, derivative 1 / (1 + α|x|)²
            d = 1 / (1 + a * x.abs()) ** 2
        return grad * d, None, None


def spike(x: torch.Tensor, surrogate: str = "atan", alpha: float = 5.0) -> torch.Tensor:
    r"""S = Θ(x) forward; backward with the surrogate derivative:

    ``atan``: (α/2) / (1 + (π α x / 2)²); ``sigmoid``: α σ(αx)(1 − σ(αx));
    ``fast_sigmoid``: 1 / (1 + α|x|)².

    Example::

        >>> import torch
        >>> from diffnum.snn import spike
        >>> x = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
        >>> s = spike(x)  # Heaviside forward, ATan surrogate backward
        >>> s.tolist(), bool((torch.autograd.grad(s.sum(), x)[0] > 0).all())
        ([0.0, 1.0, 1.0], True)
    """
    real_floating_dtype("x", x)
    check_finite("x", x)  # NaN ≥ 0 is false: a NaN would silently read as "no spike"
    check_one_of("surrogate", surrogate, SURROGATES)
    return _Spike.apply(x, surrogate, check_positive("alpha", alpha))


def lif(
    current: torch.Tensor,
    beta: float | torch.Tensor = 0.5,
    threshold: float = 1.0,
    *,
    reset: str = "hard",
    surrogate: str = "atan",
    alpha: float = 5.0,
) -> torch.Tensor:
    r"""Multi-step leaky integrate-and-fire over the last (time) axis.

    u[t] = β u[t−1] + I[t], S[t] = Θ(u[t] − ϑ), then ``hard`` reset u ← u (1 − S) or
    ``soft`` reset u ← u − ϑ S. ``current`` is ``(..., T)``; returns spikes ``(..., T)``.
    ``beta`` is a number or a tensor broadcastable to ``current[..., 0]`` (e.g. per neuron),
    in [0, 1]; ``threshold`` and ``alpha`` are positive. Non-finite currents are rejected
    (``ValueError`` naming ``current``): a NaN would otherwise read as "no spike".

    Example::

        >>> import torch
        >>> from diffnum.snn import lif
        >>> lif(torch.full((1, 1, 6), 0.6), beta=0.9).flatten().tolist()  # time is the last axis
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    """
    _check_current("current", current)
    _check_beta(beta, current)
    threshold = check_positive("threshold", threshold)
    check_one_of("reset", reset, ("hard", "soft"))
    check_one_of("surrogate", surrogate, SURROGATES)
    alpha = check_positive("alpha", alpha)
    if current.shape[-1] == 0:
        return torch.zeros_like(current)
    u = torch.zeros_like(current[..., 0])
    spikes = []
    for t in range(current.shape[-1]):
        s, _, u = lif_step(u, current[..., t], beta, threshold, reset, surrogate, alpha)
        spikes.append(s)
    return torch.stack(spikes, dim=-1)


def lif_step(u: torch.Tensor, current: torch.Tensor, beta: float | torch.Tensor,
             threshold: float, reset: str, surrogate: str, alpha: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of :func:`lif` on checked arguments: v = β u + I, S = Θ(v − ϑ), then the
    reset; returns ``(S, v, u after the reset)``. The loop of :func:`lif` and of the
    recurrent layers, so that they stay one neuron model."""
    v = beta * u + current
    s = _Spike.apply(v - threshold, surrogate, alpha)
    return s, v, (v * (1 - s) if reset == "hard" else v - threshold * s)


class LIF(nn.Module):
    """Multi-step LIF neurons on ``(batch, neurons, time)`` (see :func:`lif`).

    ``learn_beta=True`` learns one leak per neuron, β = sigmoid(w) ∈ (0, 1)
    (``num_neurons`` required); otherwise β is the fixed ``beta``.

    Example::

        >>> import torch
        >>> from diffnum.snn import LIF
        >>> LIF(0.9)(torch.full((1, 1, 6), 0.6)).flatten().tolist()
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    """

    def __init__(self, beta: float = 0.5, threshold: float = 1.0, *, reset: str = "hard",
                 surrogate: str = "atan", alpha: float = 5.0, learn_beta: bool = False,
                 num_neurons: int | None = None) -> None:
        super().__init__()
        beta = check_real("beta", beta, low=0.0, high=1.0, low_open=True, high_open=True)
        threshold = check_positive("threshold", threshold)
        alpha = check_positive("alpha", alpha)
        check_one_of("reset", reset, ("hard", "soft"))
        check_one_of("surrogate", surrogate, SURROGATES)
        if not isinstance(learn_beta, bool):
            raise TypeError(f"learn_beta must be a bool, got {type(learn_beta).__name__}")
        self.threshold, self.reset, self.surrogate, self.alpha = threshold, reset, surrogate, alpha
        if learn_beta:
            if num_neurons is None:
                raise ValueError("learn_beta needs num_neurons (one leak per neuron), got None")
            check_count("num_neurons", num_neurons)
            logit = math.log(beta / (1 - beta))
            self.beta_logit = nn.Parameter(torch.full((num_neurons,), logit))
        else:
            self.register_parameter("beta_logit", None)
            self.beta = beta

    def leak(self) -> float | torch.Tensor:
        """β (a float, or a per-neuron tensor when learned)."""
        return self.beta if self.beta_logit is None else torch.sigmoid(self.beta_logit)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        return lif(current, self.leak(), self.threshold, reset=self.reset,
                   surrogate=self.surrogate, alpha=self.alpha)


def leaky_integrate(current: torch.Tensor, beta: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Readout neurons with an infinite threshold: u[t] = β u[t−1] + I[t], no spikes.

    ``current`` is ``(..., T)`` (finite); returns the membrane potentials ``(..., T)``.

    Example::

        >>> import torch
        >>> from diffnum.snn import leaky_integrate
        >>> leaky_integrate(torch.ones(1, 4), beta=0.5).flatten().tolist()  # v_t = β v_{t-1} + I_t
        [1.0, 1.5, 1.75, 1.875]
    """
    _check_current("current", current)
    _check_beta(beta, current)
    if current.shape[-1] == 0:
        return torch.zeros_like(current)
    u = torch.zeros_like(current[..., 0])
    out = []
    for t in range(current.shape[-1]):
        u = beta * u + current[..., t]
        out.append(u)
    return torch.stack(out, dim=-1)
