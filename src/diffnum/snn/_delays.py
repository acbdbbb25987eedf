"""Learnable synaptic delays (a causal ``Dcls1d`` over time), readout, synthetic data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnum._core.validation import (
    check_count,
    check_finite,
    check_int_in_range,
    check_one_of,
    check_real,
    real_floating_dtype,
)
from diffnum.interp import Dcls1d, set_sigma
from diffnum.snn._neurons import leaky_integrate

MAX_SAMPLES_ELEMENTS = 2**31  # n_samples · n_channels · length of a synthetic data set


def _check_spikes(spikes: torch.Tensor, features: int, like: torch.Tensor,
                  name: str = "spikes") -> None:
    """``spikes`` (called ``name`` in errors) is a finite ``(batch, features, time)`` or
    ``(features, time)`` tensor with the dtype and device of the layer's parameter ``like``."""
    real_floating_dtype(name, spikes)
    if spikes.ndim not in (2, 3) or spikes.shape[-2] != features:
        raise ValueError(f"{name} must have shape (batch, {features}, time) or ({features}, "
                         f"time), got {tuple(spikes.shape)}")
    if spikes.dtype != like.dtype or spikes.device != like.device:
        raise TypeError(f"{name} must have the layer's dtype and device ({like.dtype}, "
                        f"{like.device}), got {spikes.dtype}, {spikes.device}")
    check_finite(name, spikes)


def check_delay_arguments(max_delay: object, version: object, versions: tuple[str, ...],
                          sigma: object) -> float | None:
    """The checks every delay layer makes: ``max_delay`` an odd count (a centred support),
    ``version`` one of ``versions``, ``sigma`` a real number and only with ``"gauss"``;
    returns ``sigma`` as a float (or None)."""
    check_int_in_range("max_delay", max_delay, 1, 2**20)
    if max_delay % 2 == 0:
        raise ValueError(f"max_delay must be odd (a centred support), got {max_delay}")
    check_one_of("version", version, versions)
    if sigma is None:
        return None
    if version != "gauss":
        raise ValueError(f"sigma is only used by version='gauss', got sigma={sigma!r} "
                         f"with version={version!r}")
    return check_real("sigma", sigma)


def set_delay_positions(P: torch.Tensor, delays: torch.Tensor, max_delay: int) -> None:
    """Write ``delays`` (one per synapse, in [0, max_delay − 1] time steps) into the time
    positions ``P[0, ..., 0]`` of a one-tap DCLS layer: delay d sits at kernel index
    s − 1 − d, i.e. position (s − 1 − d) − s // 2 for support s = ``max_delay``."""
    real_floating_dtype("delays", delays)
    shape = tuple(P.shape[1:-1])
    if tuple(delays.shape) != shape:
        raise ValueError(f"delays must have shape {shape}, got {tuple(delays.shape)}")
    check_finite("delays", delays)
    if not bool(((delays >= 0) & (delays <= max_delay - 1)).all()):
        raise ValueError(f"delays must lie in [0, {max_delay - 1}], got values in "
                         f"[{float(delays.min())}, {float(delays.max())}]")
    with torch.no_grad():
        P[0, ..., 0] = (max_delay - 1) - delays.to(P) - max_delay // 2


def delay_values(P: torch.Tensor, max_delay: int) -> torch.Tensor:
    """The (real) delays d = s − 1 − (P + ⌊s/2⌋) of a one-tap DCLS layer's time positions
    ``P[0, ..., 0]`` (detached), for support s = ``max_delay``: the inverse of
    :func:`set_delay_positions`."""
    return (max_delay - 1) - (P.detach()[0, ..., 0] + max_delay // 2)


def one_tap_dcls(dcls: type[nn.Module], in_channels: int, out_channels: int, max_delay: int,
                 version: str, sigma: float | None, **options) -> nn.Module:
    """A DCLS layer ``dcls`` with one tap per synapse over a support of ``max_delay`` steps,
    the delays drawn uniformly over the whole range, and σ = ``sigma`` (default
    max_delay / 2, frozen) for ``version="gauss"``: the synapses of every delay layer."""
    layer = dcls(in_channels, out_channels, 1, dilated_kernel_size=max_delay, version=version,
                 position_init="uniform", **options)
    if version == "gauss":
        set_sigma(layer, sigma if sigma is not None else max_delay / 2, learnable=False)
    return layer


class DelayedLinear(nn.Module):
    r"""Fully connected layer with one learnable delay per synapse:
    I_i[t] = Σ_j w_ij S_j[t − d_ij], d_ij ∈ [0, max_delay − 1].

    A :class:`~diffnum.interp.Dcls1d` with ``kernel_count=1`` and support
    ``max_delay`` (odd) over the time axis, with causal (left) padding of ``max_delay − 1``.
    Input and output are ``(batch, features, time)``. The kernel index q = P + ⌊s/2⌋ maps to
    delay d = s − 1 − q. ``version="gauss"`` with σ annealed (``set_sigma``/``SigmaSchedule``)
    then ``round_positions()`` gives exact integer delays at inference.

    Training recipe, measured on ``diffnum reproduce dcls``'s delayed-coincidence task
    (T_d = 25, 640 steps, 5 seeds; ``PYTHONPATH=src OMP_NUM_THREADS=1 python
    benchmarks/sweep_dcls_defaults.py``, ``benchmarks/results/dcls_defaults.md``): Adam,
    ``parameter_groups(model, 1e-2, position_lr_scale=50)``, cosine decay, and
    ``SigmaSchedule.for_rounding(max_delay / 2, total_steps)`` (σ from this layer's initial
    T_d/2 to 0.28 over the first quarter) before ``conv.round_positions()`` and
    ``conv.use_integer_taps()``: all 5 seeds keep 1.000 with integer delays, where ending σ
    at 0.5 keeps 0.721 ± 0.326, and the thesis's spiking code's schedule and position rate
    (Thvnvtos/SNN-delays: SIG from T_d//3 down to 0.23 by half the epochs, positions at
    150 × the weight rate) 0.291 ± 0.198.

    Example::

        >>> import torch
        >>> from diffnum.snn import DelayedLinear
        >>> layer = DelayedLinear(5, 3, max_delay=11)  # one learnable delay per synapse
        >>> layer(torch.zeros(2, 5, 20)).shape, layer.delays().shape
        (torch.Size([2, 3, 20]), torch.Size([3, 5]))
    """

    def __init__(self, in_features: int, out_features: int, max_delay: int, *,
                 version: str = "gauss", bias: bool = False, sigma: float | None = None,
                 conv_method: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        check_count("in_features", in_features)
        check_count("out_features", out_features)
        sigma = check_delay_arguments(max_delay, version, ("v1", "gauss"), sigma)
        self.max_delay = max_delay
        self.conv = one_tap_dcls(Dcls1d, in_features, out_features, max_delay, version, sigma,
                                 bias=bias, conv_method=conv_method, device=device, dtype=dtype)

    @property
    def P(self) -> torch.Tensor:
        return self.conv.P

    def delays(self) -> torch.Tensor:
        """Current (real) delays d = s − 1 − (P + ⌊s/2⌋), shape (out, in)."""
        return delay_values(self.conv.P, self.max_delay)

    def set_delays(self, delays: torch.Tensor) -> None:
        """Set positions from finite delays ``(out, in)`` in [0, max_delay − 1]."""
        set_delay_positions(self.conv.P, delays, self.max_delay)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        _check_spikes(spikes, self.conv.in_channels, self.conv.weight)
        if spikes.shape[-1] == 0:  # no time steps: nothing to delay
            return spikes.new_zeros(*spikes.shape[:-2], self.conv.out_channels, 0)
        return self.conv(F.pad(spikes, (self.max_delay - 1, 0)))

    def stream(self, batch_size: int) -> DelayStream:
        """A :class:`DelayStream` of this layer at its delays rounded to integers (weights
        and delays as they are now), fed one time step at a time."""
        return DelayStream(self, batch_size)


class DelayStream:
    """:class:`DelayedLinear` one time step at a time, on integer delays: a ring buffer of
    the last ``max_delay`` input steps, I_i[t] = Σ_j w_ij S_j[t − d_ij] (+ b_i), with
    d_ij = round(delay) and S[t] = 0 before the first step — the form a neuromorphic or online
    deployment runs. Memory O(batch · in · max_delay); each step gathers one past input per
    synapse. Equal to the layer in integer-tap mode (``layer.conv.round_positions();
    layer.conv.use_integer_taps()``) applied to the whole sequence.

    Example::

        >>> import torch
        >>> from diffnum.snn import DelayedLinear
        >>> layer = DelayedLinear(3, 2, max_delay=5)
        >>> stream = layer.stream(batch_size=1)
        >>> [stream.step(torch.ones(1, 3)).shape for _ in range(2)]
        [torch.Size([1, 2]), torch.Size([1, 2])]
    """

    def __init__(self, layer: DelayedLinear, batch_size: int) -> None:
        if not isinstance(layer, DelayedLinear):
            raise TypeError(f"layer must be a DelayedLinear, got {type(layer).__name__}")
        check_count("batch_size", batch_size)
        conv = layer.conv
        with torch.no_grad():
            taps = conv.export_integer_taps()  # rounds, and checks the taps stay inside
            self.delays = (layer.max_delay - 1) - taps.index[0, :, :, 0]  # (out, in)
            self.weight = conv.weight[:, :, 0].detach().clone()  # (out, in)
            self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.length = layer.max_delay
        self.buffer = self.weight.new_zeros(batch_size, conv.in_channels, self.length)
        self._inputs = torch.arange(conv.in_channels, device=self.weight.device)
        self.time = 0

    def reset(self) -> None:
        """Forget every past input (a new sequence starts)."""
        self.buffer.zero_()
        self.time = 0

    def step(self, spikes: torch.Tensor) -> torch.Tensor:
        """Feed S[t] ``(batch, in)``; return I[t] ``(batch, out)``."""
        batch, features, _ = self.buffer.shape
        if (not isinstance(spikes, torch.Tensor) or spikes.shape != (batch, features)
                or spikes.dtype != self.buffer.dtype):
            got = (f"{tuple(spikes.shape)} {spikes.dtype}" if isinstance(spikes, torch.Tensor)
                   else type(spikes).__name__)
            raise ValueError(f"spikes must be a {self.buffer.dtype} tensor of shape "
                             f"({batch}, {features}), got {got}")
        self.buffer[:, :, self.time % self.length] = spikes
        slots = (self.time - self.delays) % self.length  # (out, in)
        past = self.buffer[:, self._inputs, slots]  # (batch, out, in)
        self.time += 1
        current = (past * self.weight).sum(-1)
        return current if self.bias is None else current + self.bias


class Readout(nn.Module):
    """Linear layer into leaky integrators with an infinite threshold (no spikes).

    ``forward`` returns membrane potentials ``(batch, classes, time)``; :func:`readout_logits`
    reduces them over time for a cross-entropy loss.

    Example::

        >>> import torch
        >>> from diffnum.snn import Readout
        >>> Readout(3, 2)(torch.zeros(4, 3, 7)).shape  # membrane potentials over time
        torch.Size([4, 2, 7])
    """

    def __init__(self, in_features: int, out_features: int, beta: float = 0.5) -> None:
        super().__init__()
        check_count("in_features", in_features)
        check_count("out_features", out_features)
        beta = check_real("beta", beta, low=0.0, high=1.0)
        self.linear = nn.Linear(in_features, out_features)
        self.beta = beta

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        _check_spikes(spikes, self.linear.in_features, self.linear.weight)
        current = self.linear(spikes.transpose(-1, -2)).transpose(-1, -2)
        return leaky_integrate(current, self.beta)


def readout_logits(potentials: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Logits from readout potentials ``(..., classes, T)``: time ``sum``, ``mean`` or ``max``.

    Example::

        >>> import torch
        >>> from diffnum.snn import readout_logits
        >>> readout_logits(torch.ones(2, 3, 5)).tolist()  # summed over the last (time) axis
        [[5.0, 5.0, 5.0], [5.0, 5.0, 5.0]]
    """
    check_one_of("reduce", reduce, ("sum", "mean", "max"))
    real_floating_dtype("potentials", potentials)
    if potentials.ndim < 1 or potentials.shape[-1] == 0:
        raise ValueError(f"potentials must have shape (..., classes, T) with T >= 1, "
                         f"got {tuple(potentials.shape)}")
    check_finite("potentials", potentials)
    if reduce == "max":
        return potentials.amax(-1)
    return potentials.sum(-1) if reduce == "sum" else potentials.mean(-1)


def delayed_coincidence(
    n_samples: int,
    *,
    n_channels: int = 6,
    n_classes: int = 4,
    length: int = 50,
    max_delay: int = 21,
    noise_spikes: int = 0,
    pattern_seed: int = 0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spike trains whose class is set only by inter-channel delays.

    Class k fires channel c once at t0 + o_{k,c}, where the offsets o_{k,·} are a random
    permutation (drawn from ``pattern_seed``) of the slots 0, g, 2g, … with
    g = (max_delay − 1) // (n_channels − 1): no two spikes of a sample are closer than g
    steps, so nothing coincides without delays. Every sample has one spike per channel and a
    random onset t0 ∈ [0, length − 2·max_delay + 1] (followed by at least ``max_delay`` quiet
    steps), so counts and onsets carry no class information; ``noise_spikes`` random spikes
    are added per sample.

    Returns ``(spikes (n, channels, length), labels (n,), offsets (classes, channels))``.

    Example::

        >>> import torch
        >>> from diffnum.snn import delayed_coincidence
        >>> spikes, labels, _ = delayed_coincidence(8, generator=torch.Generator().manual_seed(0))
        >>> spikes.shape, labels.shape
        (torch.Size([8, 6, 50]), torch.Size([8]))
    """
    check_count("n_samples", n_samples)
    check_int_in_range("n_classes", n_classes, 2, 2**16)
    check_int_in_range("n_channels", n_channels, 2, 2**16)
    check_int_in_range("max_delay", max_delay, n_channels, 2**20)
    check_count("length", length)
    if length < 2 * max_delay:
        raise ValueError(f"length must be >= 2·max_delay = {2 * max_delay}, got {length}")
    if n_samples * n_channels * length > MAX_SAMPLES_ELEMENTS:
        raise ValueError(f"n_samples·n_channels·length = {n_samples * n_channels * length} "
                         f"exceeds {MAX_SAMPLES_ELEMENTS} elements")
    check_int_in_range("noise_spikes", noise_spikes, 0, n_channels * length)
    check_int_in_range("pattern_seed", pattern_seed, 0, 2**63 - 1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    gap = (max_delay - 1) // (n_channels - 1)
    patterns = torch.Generator().manual_seed(pattern_seed)
    offsets = torch.stack([torch.randperm(n_channels, generator=patterns) * gap
                           for _ in range(n_classes)])
    labels = torch.randint(0, n_classes, (n_samples,), generator=generator)
    onset = torch.randint(0, length - 2 * max_delay + 2, (n_samples, 1), generator=generator)
    times = onset + offsets[labels]  # (n, channels)
    spikes = torch.zeros(n_samples, n_channels, length)
    spikes.scatter_(2, times.unsqueeze(-1), 1.0)
    if noise_spikes:
        idx = torch.randint(0, n_channels * length, (n_samples, noise_spikes),
                            generator=generator)
        spikes.view(n_samples, -1).scatter_(1, idx, 1.0)
    return spikes, labels, offsets
