"""Surrogate-gradient spikes and multi-step leaky integrate-and-fire neurons."""

from __future__ import annotations

import math

import torch
from torch import nn

from diffnum._core.validation import check_one_of, real_floating_dtype

SURROGATES = ("atan", "sigmoid", "fast_sigmoid")


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
    """
    check_one_of("surrogate", surrogate, SURROGATES)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return _Spike.apply(x, surrogate, float(alpha))


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
    ``beta`` is a float or a tensor broadcastable to ``current[..., 0]`` (e.g. per neuron).
    """
    real_floating_dtype("current", current)
    check_one_of("reset", reset, ("hard", "soft"))
    u = torch.zeros_like(current[..., 0])
    spikes = []
    for t in range(current.shape[-1]):
        u = beta * u + current[..., t]
        s = spike(u - threshold, surrogate, alpha)
        u = u * (1 - s) if reset == "hard" else u - threshold * s
        spikes.append(s)
    return torch.stack(spikes, dim=-1)


class LIF(nn.Module):
    """Multi-step LIF neurons on ``(batch, neurons, time)`` (see :func:`lif`).

    ``learn_beta=True`` learns one leak per neuron, β = sigmoid(w) ∈ (0, 1)
    (``num_neurons`` required); otherwise β is the fixed ``beta``.
    """

    def __init__(self, beta: float = 0.5, threshold: float = 1.0, *, reset: str = "hard",
                 surrogate: str = "atan", alpha: float = 5.0, learn_beta: bool = False,
                 num_neurons: int | None = None) -> None:
        super().__init__()
        if not 0 < beta < 1:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        check_one_of("reset", reset, ("hard", "soft"))
        check_one_of("surrogate", surrogate, SURROGATES)
        self.threshold, self.reset, self.surrogate, self.alpha = threshold, reset, surrogate, alpha
        if learn_beta:
            if num_neurons is None or num_neurons < 1:
                raise ValueError(f"learn_beta needs num_neurons >= 1, got {num_neurons}")
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

    ``current`` is ``(..., T)``; returns the membrane potentials ``(..., T)``.
    """
    real_floating_dtype("current", current)
    u = torch.zeros_like(current[..., 0])
    out = []
    for t in range(current.shape[-1]):
        u = beta * u + current[..., t]
        out.append(u)
    return torch.stack(out, dim=-1)
