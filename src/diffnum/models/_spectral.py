"""Spectral convolution: keep the lowest Fourier modes, multiply them by complex weights."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from diffnum._core.validation import (
    check_count,
    check_int_in_range,
    real_floating_dtype,
)

_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
MAX_CHANNELS = 2**31
# Parameters one model may allocate (2**30 float64 = 8 GiB): a typo (modes=2**20) raises a
# named error instead of a failed or swapping allocation.
MAX_PARAMETERS = 2**30


def check_parameter_count(names: str, count: int) -> None:
    """Raise ``ValueError`` if ``count`` parameters exceed :data:`MAX_PARAMETERS`."""
    if count > MAX_PARAMETERS:
        raise ValueError(f"{names} give {count} parameters, more than the limit "
                         f"{MAX_PARAMETERS}")


def set_layer_sizes(layer: nn.Module, n_dims: int, in_channels: int, out_channels: int) -> None:
    """Check, in this order, and store ``layer.n_dims`` (1 to 3), ``layer.in_channels`` and
    ``layer.out_channels`` (positive, at most :data:`MAX_CHANNELS`): a spectral layer or an FNO."""
    layer.n_dims = check_int_in_range("n_dims", n_dims, 1, 3)
    layer.in_channels = check_count("in_channels", in_channels, high=MAX_CHANNELS)
    layer.out_channels = check_count("out_channels", out_channels, high=MAX_CHANNELS)


def check_factory_device(device: object) -> None:
    """``device`` of new parameters: None or anything ``torch.device`` accepts."""
    if device is None:
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must name a torch device, got {device!r}") from None


def normalize_modes(modes: int | Sequence[int], n_dims: int) -> tuple[int, ...]:
    """``modes`` as a tuple of ``n_dims`` positive ints (an int is repeated)."""
    if isinstance(modes, int) and not isinstance(modes, bool):
        modes = (modes,) * n_dims
    if not isinstance(modes, Sequence) or isinstance(modes, str):
        raise TypeError(
            f"modes must be an int or a sequence of {n_dims} ints, got {type(modes).__name__}"
        )
    if len(modes) != n_dims:
        raise ValueError(
            f"modes must have one entry per grid dimension (n_dims={n_dims}), got {tuple(modes)}"
        )
    for m in modes:
        check_int_in_range("modes", m, 1, 2**31)
    return tuple(modes)


def spectral_weight_shape(
    in_channels: int, out_channels: int, modes: Sequence[int]
) -> tuple[int, ...]:
    """Shape of the complex weight of :func:`spectral_conv`: ``(C_in, C_out, 2m_1, …, m_d)``.

    Every grid dimension but the last holds the frequencies 0 … m−1 at indices 0 … m−1 and
    −m … −1 at indices m … 2m−1 (the layout of ``torch.fft.fftfreq``); the last (real-FFT)
    dimension holds 0 … m_d−1. ``modes`` has 1 to 3 entries (one per grid dimension).

    Example::

        >>> from diffnum.models import spectral_weight_shape
        >>> spectral_weight_shape(2, 3, (4, 5))  # the first axis keeps ±4 modes, the last 0..4
        (2, 3, 8, 5)
    """
    check_count("in_channels", in_channels, high=MAX_CHANNELS)
    check_count("out_channels", out_channels, high=MAX_CHANNELS)
    if not isinstance(modes, Sequence) or isinstance(modes, str):
        raise TypeError(f"modes must be a sequence of 1 to 3 ints (one per grid dimension), got "
                        f"{type(modes).__name__}")
    check_int_in_range("len(modes)", len(modes), 1, 3)
    *full, last = normalize_modes(modes, len(modes))
    return (in_channels, out_channels, *(2 * m for m in full), last)


def check_factory_dtype(dtype: object) -> None:
    """``dtype`` of new parameters: None (the default dtype), float32 or float64."""
    if dtype is not None and dtype not in _COMPLEX_OF:
        raise TypeError(f"dtype must be None, torch.float32 or torch.float64, got {dtype}")


def _kept(n: int, m: int) -> tuple[int, int]:
    """How many non-negative (p) and negative (q) frequencies of |k| ≤ m a grid of n holds.

    A grid of n points resolves the frequencies −⌊n/2⌋ … ⌈n/2⌉−1 (the Nyquist bin of an even
    n is −n/2, as in ``fftfreq``), so p = min(m, ⌈n/2⌉), q = min(m, ⌊n/2⌋) and p + q ≤ n.
    """
    return min(m, (n + 1) // 2), min(m, n // 2)


def _check_spectral_inputs(input: torch.Tensor, weight: torch.Tensor) -> int:
    dtype = real_floating_dtype("input", input)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dtype != _COMPLEX_OF[dtype]:
        raise TypeError(
            f"weight must be complex with the precision of input ({_COMPLEX_OF[dtype]} for "
            f"{dtype} input), got {weight.dtype}"
        )
    if weight.device != input.device:
        raise TypeError(f"weight must be on the device of input ({input.device}), got "
                        f"{weight.device}")
    n_dims = weight.ndim - 2
    if not 1 <= n_dims <= 3:
        raise ValueError(
            "weight must have shape (C_in, C_out, 2m_1, ..., m_d) with d in {1, 2, 3}, "
            f"got shape {tuple(weight.shape)}"
        )
    bad = [s for s in weight.shape[2:-1] if s % 2]
    if bad or min(weight.shape) == 0:
        raise ValueError(
            "weight must have non-empty dimensions and an even size 2m along every grid "
            f"dimension but the last, got shape {tuple(weight.shape)}"
        )
    if input.ndim < n_dims + 1:
        raise ValueError(
            f"input must have shape (*batch, C_in, *grid) with {n_dims} grid dimensions, "
            f"got shape {tuple(input.shape)}"
        )
    if input.shape[-n_dims - 1] != weight.shape[0]:
        raise ValueError(
            f"input has {input.shape[-n_dims - 1]} channels at dimension {-n_dims - 1} "
            f"(shape {tuple(input.shape)}) but weight expects C_in = {weight.shape[0]}"
        )
    if min(input.shape[-n_dims:]) == 0:
        raise ValueError(f"input grid must be non-empty, got shape {tuple(input.shape)}")
    return n_dims


def spectral_conv(input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    r"""Fourier-layer convolution: ``y = F⁻¹(R · (F x)|_{|k| < m})`` over the last d dims.

    With x̂ = rfftn(x) over the grid dimensions (the last d of ``input``, shape
    ``(*batch, C_in, n_1, …, n_d)``), the output is

        ŷ_o(k) = Σ_i R_{i,o}(k) x̂_i(k)   for −m_j ≤ k_j < m_j (j < d), 0 ≤ k_d < m_d,

    ŷ = 0 at every other frequency, and y = irfftn(ŷ) on the input grid, so
    ``y`` has shape ``(*batch, C_out, n_1, …, n_d)``. Equivalently y = Re F⁻¹(c·ŷ) with
    c = 1 on the k_d = 0 and Nyquist planes and 2 elsewhere. ``weight`` is R, complex with
    the precision of ``input``, laid out as :func:`spectral_weight_shape` says; the number
    of modes m is read from its shape.

    Grids too small for the modes are handled by truncation, not an error: a grid of n
    points only holds the frequencies −⌊n/2⌋ … ⌈n/2⌉−1 (0 … ⌊n/2⌋ along the last, real-FFT
    dimension), and the weights of frequencies it cannot hold have nothing to multiply (they
    get zero gradient). This is what makes the layer the same operator at every resolution:
    for an input band-limited below the coarse grid's Nyquist frequency, a finer grid gives
    the same output function sampled at the finer points.

    Example::

        >>> import torch
        >>> from diffnum.models import spectral_conv, spectral_weight_shape
        >>> x = torch.randn(1, 1, 16, dtype=torch.float64)
        >>> w = torch.zeros(spectral_weight_shape(1, 1, (16 // 2 + 1,)), dtype=torch.complex128)
        >>> w[...] = 1  # identity multiplier on every kept mode
        >>> torch.allclose(spectral_conv(x, w), x)
        True
    """
    n_dims = _check_spectral_inputs(input, weight)
    grid = tuple(input.shape[-n_dims:])
    dims = tuple(range(-n_dims, 0))
    if input.numel() == 0:  # an empty batch: FFT libraries reject it; zero gradients, not None
        batch = input.shape[: input.ndim - n_dims - 1]
        link = 0 * (input.sum() + torch.view_as_real(weight).sum())
        return input.new_zeros(*batch, weight.shape[1], *grid) + link
    spectrum = torch.fft.rfftn(input, dim=dims)
    block = weight
    # Gather the kept corner blocks: along each full-FFT dimension, the first p and last q
    # bins of the spectrum pair with the first p and last q entries of the 2m weight entries.
    for j in range(n_dims - 1):
        axis_x, axis_w = spectrum.ndim - n_dims + j, 2 + j
        p, q = _kept(grid[j], weight.shape[axis_w] // 2)
        n, two_m = grid[j], weight.shape[axis_w]
        spectrum = torch.cat(
            (spectrum.narrow(axis_x, 0, p), spectrum.narrow(axis_x, n - q, q)), dim=axis_x
        )
        block = torch.cat((block.narrow(axis_w, 0, p), block.narrow(axis_w, two_m - q, q)),
                          dim=axis_w)
    kept_last = min(weight.shape[-1], grid[-1] // 2 + 1)
    spectrum = spectrum.narrow(-1, 0, kept_last)
    block = block.narrow(-1, 0, kept_last)

    batch = spectrum.shape[: spectrum.ndim - n_dims - 1]
    spectrum = spectrum.reshape(math.prod(batch), *spectrum.shape[len(batch):])
    out = torch.einsum("bi...,io...->bo...", spectrum, block)

    # Scatter back: zeros between the positive and negative blocks, then up to n_d//2 + 1.
    for j in range(n_dims - 1):
        axis = 2 + j
        p, q = _kept(grid[j], weight.shape[axis] // 2)
        gap = grid[j] - p - q
        if gap:
            zeros_shape = list(out.shape)
            zeros_shape[axis] = gap
            out = torch.cat(
                (out.narrow(axis, 0, p), out.new_zeros(zeros_shape), out.narrow(axis, p, q)),
                dim=axis,
            )
    tail = grid[-1] // 2 + 1 - kept_last
    if tail:
        out = torch.cat((out, out.new_zeros(*out.shape[:-1], tail)), dim=-1)
    y = torch.fft.irfftn(out, s=grid, dim=dims)
    return y.reshape(*batch, *y.shape[1:])


class SpectralConv(nn.Module):
    r"""Spectral convolution layer over ``n_dims`` ∈ {1, 2, 3} grid dimensions.

    ``y = irfftn(R · rfftn(x)|_{lowest modes})``, see :func:`spectral_conv`. Input
    ``(*batch, in_channels, n_1, …, n_d)``, output ``(*batch, out_channels, n_1, …, n_d)``,
    at any grid size (grids smaller than the modes are truncated, not rejected).

    The complex weight R is stored as a real parameter ``weight`` of shape
    ``(*spectral_weight_shape(...), 2)`` (real and imaginary parts), so ``.double()``,
    optimizers and distributed wrappers treat it like any real parameter; the ``complex_weight``
    property views it as complex. Initialization: Re R, Im R ~ N(0, 1/(2·C_in)), so that
    E|R|² = 1/C_in and each kept mode keeps its variance on average.

    Example::

        >>> import torch
        >>> from diffnum.models import SpectralConv
        >>> SpectralConv(2, 3, modes=(4, 4), n_dims=2)(torch.randn(1, 2, 16, 16)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int | Sequence[int],
        n_dims: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        set_layer_sizes(self, n_dims, in_channels, out_channels)
        self.modes = normalize_modes(modes, n_dims)
        check_factory_dtype(dtype)
        check_factory_device(device)
        shape = spectral_weight_shape(in_channels, out_channels, self.modes)
        check_parameter_count("in_channels, out_channels and modes", 2 * math.prod(shape))
        self.weight = nn.Parameter(torch.empty(*shape, 2, dtype=dtype, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re R, Im R ~ N(0, 1/(2·C_in))."""
        with torch.no_grad():
            self.weight.normal_(0.0, (2.0 * self.in_channels) ** -0.5)

    @property
    def complex_weight(self) -> torch.Tensor:
        """R as a complex tensor (a view of ``weight``; gradients flow to it)."""
        return torch.view_as_complex(self.weight)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Apply :func:`spectral_conv` with this layer's weight."""
        return spectral_conv(input, self.complex_weight)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, modes={self.modes}, "
            f"n_dims={self.n_dims}"
        )
