"""Recurrent LIF layer with one learnable delay per recurrent synapse."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnum._core.validation import check_count
from diffnum.interp import Dcls1d
from diffnum.snn._delays import (
    _check_spikes,
    check_delay_arguments,
    delay_values,
    one_tap_dcls,
    set_delay_positions,
)
from diffnum.snn._neurons import LIF, _check_beta, lif_step


class DelayedRecurrentLIF(nn.Module):
    r"""LIF neurons with learnable delays on their recurrent synapses:

    I_i[t] = X_i[t] + Σ_j v_ij S_j[t − 1 − e_ij],  S = LIF(I),

    with X ``(batch, num_neurons, time)`` the feedforward input current (e.g. the output of
    a :class:`DelayedLinear`), one weight v_ij and one real delay e_ij ∈ [0, max_delay − 1]
    per recurrent synapse j → i, and S = 0 before the first step. A spike reaches its
    targets 1 + e_ij steps later: at least one step, so the recurrence is causal. The LIF
    is :func:`lif`'s, u[t] = β u[t−1] + I[t], S[t] = Θ(u[t] − ϑ), then the hard or soft
    reset (``beta``, ``threshold``, ``reset``, ``surrogate``, ``alpha``, ``learn_beta`` as
    :class:`LIF`, held in ``self.neurons``); with every v_ij = 0 the layer is ``LIF`` on X.

    The recurrent synapses are a one-tap :class:`~diffnum.interp.Dcls1d` over
    ``max_delay`` (odd) cells (``self.recurrent``, built as :class:`DelayedLinear`'s and only
    used for its kernel): each forward constructs the kernel once from the weights, the
    positions and σ (so all three get gradients), and a fractional delay e = n + f is read
    through the ``version``'s interpolation: ``"v1"`` (1 − f)·S[t − 1 − n] + f·S[t − 2 − n]
    divided by 1 + 1e-7 (the DCLS normalization), ``"gauss"`` (default) a normalized
    Gaussian of width σ around e over the support (``sigma``, default max_delay / 2;
    anneal it with :class:`~diffnum.interp.SigmaSchedule`, then round). The time loop keeps
    a ring of the recurrent input due over the next ``max_delay`` steps, O(batch · n ·
    max_delay) for n = ``num_neurons``; each step is one (batch, n) × (n, max_delay·n)
    product that sends S[t] to all its future arrival steps. Backpropagation through time
    is autograd's, which keeps O(batch · n) per step (reading a window of the last
    ``max_delay`` spike vectors instead would keep a (batch, n, max_delay) copy per step).

    ``forward(current, *, return_potentials=False)`` takes ``(batch, num_neurons, time)`` or
    ``(num_neurons, time)`` currents (finite, the layer's dtype and device) and returns the
    spikes of that shape, or ``(spikes, potentials)`` with the membrane potentials u[t]
    before the reset. :func:`~diffnum.interp.dcls_layers` finds ``self.recurrent``, so
    :func:`~diffnum.interp.set_sigma`, :class:`~diffnum.interp.SigmaSchedule`,
    :func:`~diffnum.interp.parameter_groups`, :func:`~diffnum.interp.clamp_parameters` and
    :func:`~diffnum.interp.round_to_integer_taps` treat the recurrent delays with the rest;
    integer delays by ``layer.recurrent.round_positions(); layer.recurrent.use_integer_taps()``.
    float32 and float64 (``device``, ``dtype``).

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> from diffnum.snn import DelayedLinear, DelayedRecurrentLIF
        >>> net = torch.nn.Sequential(DelayedLinear(4, 8, max_delay=5),       # feedforward
        ...                           DelayedRecurrentLIF(8, max_delay=5))    # recurrent
        >>> net(torch.rand(2, 4, 20)).shape, net[1].delays().shape
        (torch.Size([2, 8, 20]), torch.Size([8, 8]))
        >>> di.set_sigma(net, 1.0)  # σ of the feedforward and of the recurrent delays
        2
    """

    def __init__(self, num_neurons: int, max_delay: int, *, beta: float = 0.5,
                 threshold: float = 1.0, reset: str = "hard", surrogate: str = "atan",
                 alpha: float = 5.0, learn_beta: bool = False, version: str = "gauss",
                 sigma: float | None = None, device=None, dtype=None) -> None:
        super().__init__()
        check_count("num_neurons", num_neurons)
        sigma = check_delay_arguments(max_delay, version, ("v1", "gauss"), sigma)
        if dtype not in (None, torch.float32, torch.float64):
            raise TypeError(f"dtype must be None, torch.float32 or torch.float64, got {dtype}")
        self.num_neurons = num_neurons
        self.max_delay = max_delay
        self.neurons = LIF(beta, threshold, reset=reset, surrogate=surrogate, alpha=alpha,
                           learn_beta=learn_beta, num_neurons=num_neurons
                           ).to(device=device, dtype=dtype)
        self.recurrent = one_tap_dcls(Dcls1d, num_neurons, num_neurons, max_delay, version,
                                      sigma, bias=False, device=device, dtype=dtype)

    @property
    def weight(self) -> torch.Tensor:
        """Recurrent weights v ``(num_neurons, num_neurons)``, v[i, j] from j to i (a view of
        ``recurrent.weight``)."""
        return self.recurrent.weight[:, :, 0]

    @property
    def P(self) -> torch.Tensor:
        return self.recurrent.P

    def delays(self) -> torch.Tensor:
        """Current (real) recurrent delays e ``(num_neurons, num_neurons)``, e[i, j] from j to
        i: a spike arrives 1 + e steps later."""
        return delay_values(self.recurrent.P, self.max_delay)

    def set_delays(self, delays: torch.Tensor) -> None:
        """Set positions from finite delays e ``(num_neurons, num_neurons)`` in
        [0, max_delay − 1]."""
        set_delay_positions(self.recurrent.P, delays, self.max_delay)

    def delay_kernel(self) -> torch.Tensor:
        """The recurrent kernel A ``(num_neurons, num_neurons, max_delay)`` by delay:
        the recurrent input is Σ_j Σ_e A[i, j, e] S_j[t − 1 − e] (differentiable in the
        weights, positions and σ; the integer taps in integer-tap mode).

        Example::

            >>> import torch
            >>> from diffnum.snn import DelayedRecurrentLIF
            >>> layer = DelayedRecurrentLIF(2, max_delay=5, version="v1")
            >>> layer.set_delays(torch.tensor([[0.0, 1.5], [4.0, 2.0]]))
            >>> kernel = layer.delay_kernel().detach()  # (to, from, delay)
            >>> kernel[0, 1].nonzero().flatten().tolist(), kernel[1, 0].nonzero().flatten().tolist()
            ([1, 2], [4])
        """
        return self.recurrent.kernel().flip(-1)  # kernel index q holds delay s − 1 − q

    def forward(self, current: torch.Tensor, *, return_potentials: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _check_spikes(current, self.num_neurons, self.recurrent.weight, name="current")
        if not isinstance(return_potentials, bool):
            raise TypeError(f"return_potentials must be a bool, "
                            f"got {type(return_potentials).__name__}")
        unbatched = current.ndim == 2
        x = current.unsqueeze(0) if unbatched else current
        batch, n, steps = x.shape
        lif = self.neurons
        beta = lif.leak()
        _check_beta(beta, x)
        spikes, potentials = [], []
        if steps:
            s = self.max_delay
            # A[i, j, e] → M[j, e·n + i]: S[t] @ M is the input S[t] sends to each neuron
            # 1 + e steps later, laid out (batch, e, n) as the ring of pending input.
            M = self.delay_kernel().permute(1, 2, 0).reshape(n, s * n)
            pending = x.new_zeros(batch, s * n)  # [:, e·n:(e+1)·n] arrives at step t + e
            u = x.new_zeros(batch, n)
            for t in range(steps):
                S, v, u = lif_step(u, x[..., t] + pending[:, :n], beta, lif.threshold,
                                   lif.reset, lif.surrogate, lif.alpha)
                spikes.append(S)
                potentials.append(v)
                if t + 1 < steps:  # advance the ring one step, then add what S[t] sends
                    pending = torch.addmm(F.pad(pending[:, n:], (0, n)), S, M)
        out = [torch.stack(seq, -1) if seq else x.new_zeros(batch, n, 0)
               for seq in (spikes, potentials)]
        if unbatched:
            out = [o.squeeze(0) for o in out]
        return (out[0], out[1]) if return_potentials else out[0]

    def extra_repr(self) -> str:
        return (f"{self.num_neurons}, max_delay={self.max_delay}, "
                f"version={self.recurrent.version!r}")
