"""Spiking neurons, surrogate gradients and learnable synaptic delays (built on ``interp``).

Map of the pillar:

- :func:`spike` — Heaviside forward, surrogate derivative backward (``atan``, ``sigmoid``,
  ``fast_sigmoid``).
- :func:`lif` / :class:`LIF` — multi-step leaky integrate-and-fire,
  u[t] = β u[t−1] + I[t], hard or soft reset, fixed or learned leak;
  :func:`leaky_integrate` — the same with an infinite threshold (readout).
- :class:`DelayedLinear` — I_i[t] = Σ_j w_ij S_j[t − d_ij], a causal
  :class:`~diffnum.interp.Dcls1d` over time with one Gaussian (or bilinear) tap per synapse;
  σ annealing via :class:`~diffnum.interp.SigmaSchedule`, integer delays by
  ``round_positions()``; :class:`DelayStream` (``layer.stream(batch)``) runs it one time
  step at a time on a ring buffer.
- :class:`DelayedConv1d` / :class:`DelayedConv2d` — a spatial convolution with one delay per
  synapse (out, in, spatial tap), I[o, x, t] = Σ_{c,i} w_oci S_c[x + i, t − d_oci], for
  ``(batch, channels, *space, time)``: a causal :class:`~diffnum.interp.Dcls2_1d` /
  :class:`~diffnum.interp.Dcls3_1d` (dense over space, one tap over time);
  :class:`DelayedConvStream` (``layer.stream()``) runs it one step at a time.
- :class:`DelayedRecurrentLIF` — LIF neurons with learnable delays on their recurrent
  synapses, I_i[t] = X_i[t] + Σ_j v_ij S_j[t − 1 − e_ij] (at least one step: causal); the
  recurrent kernel is a one-tap :class:`~diffnum.interp.Dcls1d` as in
  :class:`DelayedLinear` (same versions, σ annealing, rounding), the time loop a ring of
  the input due over the next ``max_delay`` steps.
- :class:`Readout` and :func:`readout_logits` — potentials to logits (time sum / mean / max).
- :func:`delayed_coincidence` — synthetic spike trains whose class is set by inter-channel
  delays only.

Tensors are ``(batch, features, time)`` throughout (``(batch, channels, *space, time)`` for
the delayed convolutions). Arguments are checked up front; bad ones
raise ``ValueError``/``TypeError`` naming the argument. Non-finite currents, spikes and
potentials are rejected (not propagated): a NaN compares false against the threshold and
would otherwise read as "no spike". An empty time axis gives an empty result.
"""

from diffnum.snn._delayed_conv import DelayedConv1d, DelayedConv2d, DelayedConvStream
from diffnum.snn._delays import (
    DelayedLinear,
    DelayStream,
    Readout,
    delayed_coincidence,
    readout_logits,
)
from diffnum.snn._neurons import LIF, leaky_integrate, lif, spike
from diffnum.snn._recurrent import DelayedRecurrentLIF

__all__ = [
    "LIF",
    "DelayStream",
    "DelayedConv1d",
    "DelayedConv2d",
    "DelayedConvStream",
    "DelayedLinear",
    "DelayedRecurrentLIF",
    "Readout",
    "delayed_coincidence",
    "leaky_integrate",
    "lif",
    "readout_logits",
    "spike",
]
