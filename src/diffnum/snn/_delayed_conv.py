"""Spatial convolutions with one learnable delay per synapse (a causal DCLS over time)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffnum._core.validation import (
    check_finite,
    check_one_of,
    real_floating_dtype,
)
from diffnum.interp import Dcls2_1d, Dcls3_1d
from diffnum.interp._construct import normalize_size
from diffnum.interp._conv import PADDING_MODES, check_padded_size, conv_padding
from diffnum.snn._delays import (
    check_delay_arguments,
    delay_values,
    one_tap_dcls,
    set_delay_positions,
)

_CONV = {2: F.conv2d, 3: F.conv3d}


class _DelayedConvNd(nn.Module):
    """Shared machinery; ``spatial_ndim`` spatial axes, then time, last."""

    spatial_ndim: int
    _dcls: type

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 max_delay: int, stride: int | Sequence[int] = 1,
                 padding: int | str | Sequence[int] = 0, *, dilation: int | Sequence[int] = 1,
                 groups: int = 1, padding_mode: str = "zeros", version: str = "gauss",
                 bias: bool = False, sigma: float | None = None, conv_method: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__()
        n = self.spatial_ndim
        # Spatial arguments are checked here, by their own names: the inner DCLS layer sees
        # them with the time axis appended (kernel_size is its dense_kernel_size).
        self.kernel_size = normalize_size("kernel_size", kernel_size, n)
        self.stride = normalize_size("stride", stride, n)
        self.dilation = normalize_size("dilation", dilation, n)
        if isinstance(padding, str):
            check_one_of("padding", padding, ("same", "valid"))
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"padding='same' needs stride 1, got stride={self.stride}")
            self.padding: str | tuple[int, ...] = padding
        else:
            self.padding = normalize_size("padding", padding, n, low=0)
        check_one_of("padding_mode", padding_mode, PADDING_MODES)
        sigma = check_delay_arguments(max_delay, version, ("v0", "v1", "gauss"), sigma)
        if dtype not in (None, torch.float32, torch.float64):
            raise TypeError(f"dtype must be None, torch.float32 or torch.float64, got {dtype}")
        self.padding_mode = padding_mode
        self.max_delay = max_delay
        self.conv = one_tap_dcls(self._dcls, in_channels, out_channels, max_delay, version,
                                 sigma, stride=(*self.stride, 1), padding=0,
                                 dense_kernel_size=self.kernel_size, groups=groups, bias=bias,
                                 dilation=(*self.dilation, 1), conv_method=conv_method,
                                 device=device, dtype=dtype)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    @property
    def groups(self) -> int:
        return self.conv.groups

    @property
    def weight(self) -> torch.Tensor:
        """Synaptic weights ``(out, in/groups, *kernel_size)`` (a view of ``conv.weight``)."""
        return self.conv.weight[..., 0]

    @property
    def P(self) -> torch.Tensor:
        return self.conv.P

    @property
    def bias(self) -> torch.Tensor | None:
        return self.conv.bias

    def delays(self) -> torch.Tensor:
        """Current (real) delays d = s − 1 − (P + ⌊s/2⌋), shape ``(out, in/groups,
        *kernel_size)``."""
        return delay_values(self.conv.P, self.max_delay)

    def set_delays(self, delays: torch.Tensor) -> None:
        """Set positions from finite delays ``(out, in/groups, *kernel_size)`` in
        [0, max_delay − 1]."""
        set_delay_positions(self.conv.P, delays, self.max_delay)

    def _pads(self) -> tuple[tuple[int, int], ...]:
        return conv_padding(self.padding, self.kernel_size, self.dilation, self.stride)

    def _check_spikes(self, spikes: torch.Tensor) -> None:
        n = self.spatial_ndim
        real_floating_dtype("spikes", spikes)
        layout = ", ".join(["batch", str(self.in_channels)] + ["space"] * n + ["time"])
        if spikes.ndim not in (n + 2, n + 3) or spikes.shape[-n - 2] != self.in_channels:
            raise ValueError(f"spikes must have shape ({layout}) or without batch, "
                             f"got {tuple(spikes.shape)}")
        like = self.conv.weight
        if spikes.dtype != like.dtype or spikes.device != like.device:
            raise TypeError(f"spikes must have the layer's dtype and device ({like.dtype}, "
                            f"{like.device}), got {spikes.dtype}, {spikes.device}")
        check_finite("spikes", spikes)
        check_padded_size(spikes.shape[-n - 1:-1], self._pads(), self.padding_mode,
                          self.kernel_size, self.dilation)

    def _pad_space(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial padding as ``nn.ConvNd`` (``padding``, ``padding_mode``) of ``(B, C,
        *space, T)``; the time axis is left alone."""
        pads = self._pads()
        if not any(a or b for a, b in pads):
            return x
        # An empty batch has no values to reflect or replicate (F.pad refuses it).
        mode = ("constant" if self.padding_mode == "zeros" or x.shape[0] == 0
                else self.padding_mode)
        return F.pad(x, [0, 0] + [p for pair in reversed(pads) for p in pair], mode=mode)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        self._check_spikes(spikes)
        unbatched = spikes.ndim == self.spatial_ndim + 2
        x = spikes.unsqueeze(0) if unbatched else spikes
        if x.shape[-1] == 0:  # no time steps: the output's spatial shape, with no steps
            out = self(x.new_zeros(*x.shape[:-1], 1))[..., :0]
            return out.squeeze(0) if unbatched else out
        x = self._pad_space(x)
        x = F.pad(x, (self.max_delay - 1, 0))  # causal: only past inputs reach time t
        out = self.conv(x)
        return out.squeeze(0) if unbatched else out

    def stream(self) -> DelayedConvStream:
        """A :class:`DelayedConvStream` of this layer at its delays rounded to integers
        (weights and delays as they are now), fed one time step at a time."""
        return DelayedConvStream(self)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"max_delay={self.max_delay}, version={self.conv.version!r}, "
                f"stride={self.stride}, padding={self.padding}")
        if any(d != 1 for d in self.dilation):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is not None:
            text += ", bias=True"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text


_DOC = r"""{d}-D convolution over space with one learnable delay per synapse, for spikes
    ``(batch, channels, {space}, time)``:

    I[b, o, {x}, t] = Σ_c Σ_({i}) w[o, c, {i}] S[b, c, {xi}, t − d[o, c, {i}]] (+ bias[o]),

    one weight and one real delay d ∈ [0, max_delay − 1] per synapse (out channel, in
    channel, spatial tap), S = 0 before the first step (causal: no future input) and
    the spatial index as in ``nn.Conv{d}d`` (stride, padding, dilation, groups). It is
    :class:`DelayedLinear`'s construction with a dense spatial kernel: a
    :class:`~diffnum.interp.{dcls}` (``self.conv``) with ``kernel_count=1``, dense axes
    ``kernel_size`` and support ``max_delay`` (odd) along time, the input left-padded by
    ``max_delay − 1`` steps; delay d sits at kernel index s − 1 − d. A fractional delay
    d = n + f is read through the ``version``'s interpolation kernel: ``"v0"`` exactly
    (1 − f)·S[t − n] + f·S[t − n − 1]; ``"v1"`` the same divided by 1 + 1e-7 (the DCLS
    normalization); ``"gauss"`` (default, as ``DelayedLinear``) a normalized Gaussian of
    width σ around d (``sigma``, default max_delay/2; anneal it with
    :class:`~diffnum.interp.SigmaSchedule`, then round).

    Supported: float32/float64 (``device``, ``dtype``), ``stride``, ``padding`` (ints or
    ``'same'``/``'valid'``), ``padding_mode`` (``zeros``, ``reflect``, ``replicate``,
    ``circular``: space only, time is always zero-padded), ``dilation``, ``groups``,
    ``bias``, ``conv_method`` (the inner layer's); :meth:`delays`/:meth:`set_delays`
    (shape ``(out, in/groups, *kernel_size)``); integer delays for inference by
    ``layer.conv.round_positions(); layer.conv.use_integer_taps()`` (or
    :func:`~diffnum.interp.round_to_integer_taps` on a model); streaming on those integer
    delays by :meth:`stream` (a :class:`DelayedConvStream`). Not supported: stride or
    dilation along time, delays beyond max_delay − 1 (clamp with
    ``layer.conv.clamp_parameters()``), bfloat16/float16.

    Example::

        >>> import torch
        >>> from diffnum.snn import DelayedConv{d}d
        >>> layer = DelayedConv{d}d(2, 4, kernel_size=3, max_delay=5, padding=1)
        >>> layer(torch.zeros(1, 2, {shape}, 10)).shape, layer.delays().shape
        (torch.Size([1, 4, {shape}, 10]), torch.Size([4, 2, {kshape}]))
    """


class DelayedConv1d(_DelayedConvNd):
    __doc__ = _DOC.format(d=1, space="length", x="x", i="i", xi="x·stride − padding + i·dilation",
                          dcls="Dcls2_1d", shape="8", kshape="3")
    spatial_ndim = 1
    _dcls = Dcls2_1d


class DelayedConv2d(_DelayedConvNd):
    __doc__ = _DOC.format(d=2, space="height, width", x="y, x", i="i, j",
                          xi="y·s₀ − p₀ + i·δ₀, x·s₁ − p₁ + j·δ₁", dcls="Dcls3_1d",
                          shape="6, 6", kshape="3, 3")
    spatial_ndim = 2
    _dcls = Dcls3_1d


class DelayedConvStream:
    """:class:`DelayedConv1d`/:class:`DelayedConv2d` one time step at a time, on integer
    delays d = round(delay): a buffer of the last ``max_delay`` (spatially padded) input
    frames, and at each step one convolution of that window with the layer's integer-tap
    kernel, I[t] = Σ w · S[t − d] over each synapse's spatial tap (S = 0 before the first
    step). Memory O(batch · in · padded space · max_delay). Equal to the layer in integer-tap
    mode (``layer.conv.round_positions(); layer.conv.use_integer_taps()``) applied to the
    whole sequence. The batch and spatial sizes are fixed by the first step.

    Example::

        >>> import torch
        >>> from diffnum.snn import DelayedConv1d
        >>> stream = DelayedConv1d(2, 3, kernel_size=3, max_delay=5, padding=1).stream()
        >>> [stream.step(torch.ones(1, 2, 8)).shape for _ in range(2)]
        [torch.Size([1, 3, 8]), torch.Size([1, 3, 8])]
    """

    def __init__(self, layer: _DelayedConvNd) -> None:
        if not isinstance(layer, _DelayedConvNd):
            raise TypeError(f"layer must be a DelayedConv1d or DelayedConv2d, "
                            f"got {type(layer).__name__}")
        conv = layer.conv
        with torch.no_grad():
            taps = conv.export_integer_taps()  # rounds, and checks the taps stay inside
            self.kernel = taps.kernel()  # (out, in/groups, *kernel_size, max_delay)
            self.bias = None if conv.bias is None else conv.bias.detach().clone()
        self.layer = layer
        self.buffer: torch.Tensor | None = None
        self.time = 0

    def reset(self) -> None:
        """Forget every past input (a new sequence starts)."""
        self.buffer = None
        self.time = 0

    def step(self, spikes: torch.Tensor) -> torch.Tensor:
        """Feed S[t] ``(batch, in, *space)``; return I[t] ``(batch, out, *space_out)``."""
        layer = self.layer
        n = layer.spatial_ndim
        if not isinstance(spikes, torch.Tensor) or spikes.ndim != n + 2:
            got = (tuple(spikes.shape) if isinstance(spikes, torch.Tensor)
                   else type(spikes).__name__)
            raise ValueError(f"spikes must be a tensor of shape (batch, {layer.in_channels}, "
                             f"*space) with {n} spatial dims, got {got}")
        layer._check_spikes(spikes.unsqueeze(-1))
        frame = layer._pad_space(spikes.unsqueeze(-1))
        if self.buffer is None:
            self.buffer = frame.new_zeros(*frame.shape[:-1], layer.max_delay)
        elif frame.shape[:-1] != self.buffer.shape[:-1]:
            raise ValueError(f"spikes must keep the first step's shape "
                             f"{tuple(self.buffer.shape[:n + 2])} (after padding), got "
                             f"{tuple(spikes.shape)}")
        self.buffer = torch.cat([self.buffer[..., 1:], frame], dim=-1)  # oldest first
        self.time += 1
        out = _CONV[n + 1](self.buffer, self.kernel, self.bias, (*layer.stride, 1), 0,
                           (*layer.dilation, 1), layer.groups)
        return out.squeeze(-1)
