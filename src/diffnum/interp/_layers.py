"""DCLS layers: thin ``nn.Module`` shells over :func:`construct_kernel` and :func:`dcls_conv`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffnum._core.summary import OneLineRepr
from diffnum._core.validation import (
    check_count,
    check_finite,
    check_int_in_range,
    check_one_of,
    check_positive,
    check_real,
    real_floating_dtype,
)
from diffnum.interp._construct import (
    CONSTRUCT_METHODS,
    MAX_ELEMENTS,
    VERSIONS,
    bilinear_support,
    check_weight_positions,
    construct_kernel,
    normalize_size,
    position_axes,
)
from diffnum.interp._conv import CONV_METHODS, PADDING_MODES, convolve


def _check_layer_arguments(in_channels: Any, out_channels: Any, kernel_count: Any,
                           groups: Any, bias: Any, dtype: Any, version: Any, padding_mode: Any,
                           construct_method: Any, conv_method: Any, position_init: Any,
                           use_implicit_gemm: Any) -> None:
    """The scalar arguments of a DCLS layer, named when wrong, and the combinations of
    version and method that cannot work."""
    check_bool("use_implicit_gemm", use_implicit_gemm)
    check_count("in_channels", in_channels)
    check_count("out_channels", out_channels)
    check_count("kernel_count", kernel_count)
    check_count("groups", groups)
    check_bool("bias", bias)
    if dtype not in (None, torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise TypeError(f"dtype must be None, torch.float32, float64, bfloat16 or float16, "
                        f"got {dtype}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels and out_channels must be divisible by groups, got "
            f"in_channels={in_channels}, out_channels={out_channels}, groups={groups}"
        )
    check_one_of("version", version, VERSIONS)
    check_one_of("padding_mode", padding_mode, PADDING_MODES)
    check_one_of("construct_method", construct_method, CONSTRUCT_METHODS)
    check_one_of("conv_method", conv_method, CONV_METHODS)
    check_one_of("position_init", position_init, POSITION_INITS)
    if version == "gauss" and construct_method == "scatter":
        raise ValueError("construct_method='scatter' is for versions 'v0'/'v1' (integer "
                         "neighbours), got version='gauss'; use 'auto', 'dense' or "
                         "'separable'")
    if version == "gauss" and conv_method == "shift":
        raise ValueError("conv_method='shift' runs over the offsets the taps touch, and a "
                         "Gaussian tap touches every offset of the support; with "
                         "version='gauss' use 'auto', 'dense' or 'fft'")


def _checked_padding(padding: Any, stride: tuple[int, ...], ndim: int) -> str | tuple[int, ...]:
    """``"same"`` (stride 1 only), ``"valid"`` or a size per convolved axis."""
    if isinstance(padding, str):
        check_one_of("padding", padding, ("same", "valid"))
        if padding == "same" and any(st != 1 for st in stride):
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        return padding
    return normalize_size("padding", padding, ndim, low=0)


def _tuple(name: str, value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return normalize_size(name, value, ndim)


def check_module(name: str, module: object) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
    return module


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def dcls_conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    P: torch.Tensor,
    SIG: torch.Tensor | None,
    bias: torch.Tensor | None = None,
    *,
    dilated_kernel_size: int | Sequence[int],
    version: str,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    construct_method: str = "auto",
    conv_method: str = "auto",
) -> torch.Tensor:
    r"""Functional DCLS convolution: ``y = conv(x, K(weight, P, SIG)) + bias``.

    K is :func:`construct_kernel`'s dense kernel (shape ``(C_out, C_in/groups, *s)``); the
    convolution is cross-correlation as in ``F.convNd``, with ``padding_mode`` as in
    ``nn.ConvNd``. ``conv_method`` picks the convolution path (see :func:`convolve`); for
    ``v0``/``v1`` the shift-and-add path runs over the offsets the taps can touch.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls1d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3)
        >>> x = torch.randn(1, 2, 16)
        >>> y = di.dcls_conv(x, layer.weight, layer.P, layer.SIG, layer.bias, dilated_kernel_size=7,
        ...                  version="gauss", padding=3)
        >>> torch.allclose(y, layer(x), atol=1e-6)
        True
    """
    check_one_of("construct_method", construct_method, CONSTRUCT_METHODS)
    check_one_of("conv_method", conv_method, CONV_METHODS)
    real_floating_dtype("input", input, low_precision=True)
    kernel = construct_kernel(weight, P, SIG, dilated_kernel_size, version,
                              method=construct_method)  # checks weight, P, SIG, the size
    if input.dtype != weight.dtype or input.device != weight.device:
        raise TypeError(f"input must have weight's dtype and device ({weight.dtype}, "
                        f"{weight.device}), got {input.dtype}, {input.device}")
    size = normalize_size("dilated_kernel_size", dilated_kernel_size, P.shape[0])
    support = _support(P, size, version) if conv_method in ("auto", "shift") else None
    return convolve(input, kernel, bias, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, padding_mode=padding_mode, method=conv_method,
                    support=support)


def _support(P: torch.Tensor, size: tuple[int, ...], version: str) -> torch.Tensor | None:
    if version in ("v0", "v1"):
        return bilinear_support(P, size, version)
    return None


@dataclass(frozen=True, repr=False)
class IntegerTaps(OneLineRepr):
    """A DCLS kernel reduced to integer taps: ``K[index[:, ..., k]] += weight[..., k]``.

    ``index`` has shape ``(d, ..., m)`` and is ordered by *kernel axis* (``index[a]`` is the
    grid index along axis ``a``), so the convention quirks of :func:`position_axes` are
    resolved here; ``size`` is the support ``s``.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls1d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3, version="v1")
        >>> layer.round_positions()
        >>> taps = di.integer_taps(layer.weight, layer.P, 7, "v1")  # exact integer taps
        >>> isinstance(taps, di.IntegerTaps), taps.size
        (True, (7,))
    """

    weight: torch.Tensor
    index: torch.Tensor
    size: tuple[int, ...]

    def __post_init__(self) -> None:
        real_floating_dtype("weight", self.weight)
        if not isinstance(self.index, torch.Tensor) or self.index.dtype != torch.long:
            raise TypeError(f"index must be a torch.long tensor, got "
                            f"{getattr(self.index, 'dtype', type(self.index).__name__)}")
        if not isinstance(self.size, Sequence):
            raise TypeError(f"size must be a sequence of ints, got {type(self.size).__name__}")
        size = normalize_size("size", self.size, len(self.size))
        object.__setattr__(self, "size", size)
        if not 1 <= len(size) <= 3 or self.index.shape != (len(size), *self.weight.shape):
            raise ValueError(f"index must have shape (d, *weight.shape) with d = len(size) in "
                             f"1..3, got {tuple(self.index.shape)} for size {size} and weight "
                             f"{tuple(self.weight.shape)}")
        for a, s in enumerate(size):
            if bool(((self.index[a] < 0) | (self.index[a] >= s)).any()):
                raise ValueError(f"index along axis {a} must lie in [0, {s - 1}] (size {s})")

    def kernel(self) -> torch.Tensor:
        """The dense kernel ``(..., *size)`` these taps describe."""
        return _tap_kernel(self.weight, self.index, self.size)


def _tap_kernel(weight: torch.Tensor, index: torch.Tensor, size: tuple[int, ...]
                ) -> torch.Tensor:
    """K[index[:, ..., k]] += weight[..., k], shape ``(..., *size)`` (differentiable in
    ``weight``)."""
    strides = [math.prod(size[a + 1:]) for a in range(len(size))]
    flat = sum(index[a] * strides[a] for a in range(len(size)))
    out = weight.new_zeros(*weight.shape[:-1], math.prod(size))
    out = out.scatter_add(-1, flat, weight)
    return out.reshape(*weight.shape[:-1], *size)


def integer_taps(
    weight: torch.Tensor, P: torch.Tensor, dilated_kernel_size: int | Sequence[int], version: str
) -> IntegerTaps:
    """Round positions to the nearest integer and return the taps (the inference form).

    For ``v0`` at integer positions this is the layer's kernel exactly; for ``v1`` up to the
    factor 1/(1 + 1e-7) of its normalization; for ``max``/``gauss`` it is the σ → 0 limit the
    spiking-delay recipe uses at inference. Raises if a rounded tap falls outside the support.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls1d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3, version="v1")
        >>> taps = di.integer_taps(layer.weight, layer.P, 7, "v1")
        >>> taps.size, taps.weight.shape
        ((7,), torch.Size([4, 2, 3]))
    """
    check_one_of("version", version, VERSIONS)
    size = check_weight_positions(weight, P, dilated_kernel_size)
    axes = position_axes(version, P.shape[0])
    index = torch.empty_like(P, dtype=torch.long)
    for i, axis in enumerate(axes):
        idx = torch.round(P[i].detach() + size[i] // 2).long()
        bad = (idx < 0) | (idx >= size[axis])
        if bool(bad.any()):
            raise ValueError(
                f"P coordinate {i} puts {int(bad.sum())} taps outside the support "
                f"[0, {size[axis] - 1}] of kernel axis {axis} after rounding; "
                "call clamp_parameters() first"
            )
        index[axis] = idx
    return IntegerTaps(weight=weight.detach().clone(), index=index, size=size)



#: Position initializations: ``"dcls"`` N(0, 0.5²) clamped to the support (the official
#: package's), ``"uniform"`` over the support, ``"lattice"`` the taps of a dilated
#: convolution (k taps per axis at the widest integer spacing that fits the support, k^d =
#: kernel_count), ``"spread"`` that lattice jittered by up to half its spacing (for any
#: kernel_count: m points evenly spaced over the smallest lattice with at least m).
POSITION_INITS = ("dcls", "uniform", "lattice", "spread")


def _lattice_side(kernel_count: int, ndim: int) -> int:
    """k with k^ndim = kernel_count, or a ValueError naming kernel_count."""
    side = round(kernel_count ** (1 / ndim))
    if side**ndim != kernel_count:
        raise ValueError(f"position_init 'lattice' places k taps per axis, so "
                         f"kernel_count must be a perfect {ndim}-th power for "
                         f"{ndim} position coordinates, got kernel_count={kernel_count}")
    return side


def _covering_side(kernel_count: int, ndim: int) -> int:
    """The smallest k with k^ndim >= kernel_count (the lattice "spread" subsamples)."""
    side = max(1, round(kernel_count ** (1 / ndim)))
    while side**ndim < kernel_count:
        side += 1
    return side


def lattice_offsets(side: int, size: int) -> torch.Tensor:
    """Centred integer positions of ``side`` taps at the widest spacing r = (size − 1) //
    (side − 1) that fits a support of ``size`` cells, as a dilated convolution's taps.

    Example::

        >>> import diffnum.interp as di
        >>> di.lattice_offsets(3, 7).tolist()  # a 3-tap kernel with dilation 3
        [-3, 0, 3]
    """
    if side == 1:
        return torch.zeros(1)
    r = max(1, (size - 1) // (side - 1))
    start = (size - 1 - r * (side - 1)) // 2
    return torch.arange(side) * r + start - size // 2


@torch.no_grad()
def init_positions(P: torch.Tensor, sizes: Sequence[int], kind: str,
                   generator: torch.Generator | None = None) -> None:
    """Fill the positions ``P`` ``(d, ..., m)`` in place by ``kind`` (``POSITION_INITS``),
    coordinate i inside its support ``sizes[i]``.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> P = torch.empty(2, 1, 1, 4)  # 2-D positions of 4 taps
        >>> di.init_positions(P, (5, 5), "lattice")
        >>> P[:, 0, 0].T.tolist()  # the 2 × 2 lattice at spacing 4
        [[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]]
    """
    d, m = P.shape[0], P.shape[-1]
    for i, size in enumerate(sizes):
        lim = size // 2
        if kind == "uniform":
            P[i].uniform_(-lim, lim, generator=generator)
        elif kind == "dcls":
            P[i].normal_(0.0, 0.5, generator=generator).clamp_(-lim, lim)
        else:
            side = _lattice_side(m, d) if kind == "lattice" else _covering_side(m, d)
            # Tap j sits at lattice point p_j, index (p_j // side^(d-1-i)) % side along
            # coordinate i: all side^d combinations for a full lattice (whichever kernel axis
            # each coordinate moves along), m of them evenly spaced in that order otherwise.
            points = torch.linspace(0, side**d - 1, m).round().long()
            index = (points // side ** (d - 1 - i)) % side
            offsets = lattice_offsets(side, size).to(P)[index]
            P[i].copy_(offsets.expand_as(P[i]))
            if kind == "spread":
                spacing = max(1, (size - 1) // max(side - 1, 1))
                jitter = torch.rand(P[i].shape, generator=generator, dtype=P.dtype,
                                    device=P.device)
                P[i].add_((jitter - 0.5) * spacing).clamp_(-lim, lim)


class _DclsBase(nn.Module):
    """Shared machinery: parameters ``weight (O, C/g, *dense, m)``, ``P``/``SIG (d, O, ...)``."""

    conv_ndim: int
    position_ndim: int
    default_version: str = "gauss"
    transposed = False  # as nn.ConvNd, for code that inspects convolutions

    @property
    def kernel_size(self) -> tuple[int, ...]:
        """Spatial size of the dense kernel the layer convolves with (the dilated support,
        after any dense axes), as ``nn.ConvNd.kernel_size``."""
        return (*self.dense_kernel_size, *self.dilated_kernel_size)

    @property
    def output_padding(self) -> tuple[int, ...]:
        """Zeros, as a non-transposed ``nn.ConvNd``."""
        return (0,) * self.conv_ndim

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_count: int,
        stride: int | Sequence[int],
        padding: int | str | Sequence[int],
        dilated_kernel_size: int | Sequence[int],
        groups: int,
        bias: bool,
        padding_mode: str,
        version: str,
        *,
        dilation: int | Sequence[int],
        dense_kernel_size: tuple[int, ...] = (),
        position_init: str = "spread",
        construct_method: str = "auto",
        conv_method: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        use_implicit_gemm: bool = True,
    ) -> None:
        super().__init__()
        _check_layer_arguments(in_channels, out_channels, kernel_count, groups, bias, dtype,
                               version, padding_mode, construct_method, conv_method,
                               position_init, use_implicit_gemm)
        # dcls's switch between its implicit-GEMM CUDA kernel and dense construction; here the
        # convolution path is chosen by conv_method, so it is accepted, kept, and has no effect.
        self.use_implicit_gemm = use_implicit_gemm
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_count = kernel_count
        self.groups = groups
        self.version = version
        self.padding_mode = padding_mode
        self.construct_method = construct_method
        self.conv_method = conv_method
        self.dense_kernel_size = tuple(dense_kernel_size)
        self.dilated_kernel_size = _tuple("dilated_kernel_size", dilated_kernel_size,
                                          self.position_ndim)
        # Several taps in a one-cell support is what nn.ConvNd's argument order produces
        # (the third argument read as kernel_size). More taps than cells in a wider support
        # stays legal: taps may share cells, as in the official package (its memory
        # benchmark puts 2000 taps in 7 × 7).
        cells = math.prod(self.dilated_kernel_size)
        if cells == 1 and kernel_count > 1:
            raise ValueError(
                f"kernel_count={kernel_count} taps in a support of "
                f"dilated_kernel_size={dilated_kernel_size} (1 cell). A DCLS layer's "
                f"third argument is kernel_count, the number of taps, not nn.Conv"
                f"{self.conv_ndim}d's kernel_size: for {kernel_count} taps in a "
                f"{kernel_count}-wide support pass dilated_kernel_size={kernel_count} (or "
                f"larger)")
        self.stride = _tuple("stride", stride, self.conv_ndim)
        self.dilation = _tuple("dilation", dilation, self.conv_ndim)
        self.padding = _checked_padding(padding, self.stride, self.conv_ndim)
        self.position_init = position_init
        # The integer-tap inference form (use_integer_taps): the taps' kernel indices as a
        # buffer, so they follow .to() and state_dict; the weights stay the live parameter.
        self.register_buffer("integer_tap_index", None)
        self._create_parameters(kernel_count, bias, {"device": device, "dtype": dtype})

    def _create_parameters(self, kernel_count: int, bias: bool, factory: dict) -> None:
        """weight, P (positions), SIG (σ, Gaussian and max versions) and bias, uninitialised
        (:meth:`reset_parameters` fills them)."""
        in_channels, out_channels, groups = self.in_channels, self.out_channels, self.groups
        shape = (*self._weight_channels(in_channels, out_channels, groups),
                 *self.dense_kernel_size, kernel_count)
        if math.prod(shape) * self.position_ndim > MAX_ELEMENTS:
            raise ValueError(
                f"in_channels, out_channels and kernel_count give P {self.position_ndim} × "
                f"{shape} = {math.prod(shape) * self.position_ndim} elements, more than "
                f"{MAX_ELEMENTS}"
            )
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.P = nn.Parameter(torch.empty(self.position_ndim, *shape, **factory))
        if self.position_init == "lattice":
            _lattice_side(kernel_count, self.position_ndim)  # validate before allocating
        if self.version in ("max", "gauss"):
            self.SIG = nn.Parameter(torch.empty(self.position_ndim, *shape, **factory))
        else:
            self.register_parameter("SIG", None)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @staticmethod
    def _weight_channels(in_channels: int, out_channels: int, groups: int) -> tuple[int, int]:
        """The weight's two channel axes, ``(C_out, C_in/groups)`` as ``nn.ConvNd``'s."""
        return out_channels, in_channels // groups

    def reset_parameters(self) -> None:
        """Kaiming-uniform weights (a = √5), positions by ``position_init`` (see the class),
        SIG = 0.23 (gauss) or 0 (max)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        with torch.no_grad():
            init_positions(self.P, self.dilated_kernel_size, self.position_init)
            if self.SIG is not None:
                self.SIG.fill_(0.23 if self.version == "gauss" else 0.0)

    def clamp_parameters(self) -> None:
        """Clamp each position coordinate to [−⌊s_i/2⌋, ⌊s_i/2⌋] (call after optimizer steps)."""
        with torch.no_grad():
            for i, s in enumerate(self.dilated_kernel_size):
                self.P[i].clamp_(-(s // 2), s // 2)

    def round_positions(self) -> None:
        """Round positions in place to the nearest integers (exact delays / taps).

        Rounding moves every tap and, for ``gauss``, drops the widths (the σ → 0 limit), so a
        trained model can lose accuracy until its weights are trained at the new taps. How
        much depends on the σ the positions were trained at, measured over seeds by
        ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/sweep_dcls_defaults.py``
        (``benchmarks/results/dcls_defaults.md``) on ``diffnum reproduce dcls``'s tasks:

        - Spiking delays (part (c), 5 seeds, 1.000 before rounding): σ annealed to 0.5 over
          the first quarter and frozen, rounding keeps 0.721 ± 0.326 (per seed 0.560, 1, 1,
          0.236, 0.812) and one epoch of the weights at the rounded delays 0.847 (the 0.236
          seed does not recover); annealed to 0.28 instead (``SigmaSchedule.for_rounding``),
          rounding keeps 1.000 in every seed. Sharpening to 0.28 only over the last quarter
          does not help (same numbers as ending at 0.5). The thesis's spiking code
          (Thvnvtos/SNN-delays) ends its σ at 0.5 and rounds (``round_pos``); its schedule and
          position rate here keep 0.291 ± 0.198, 0.891 ± 0.151 annealed to 0.28.
        - Digits canvas (part (d), 9 taps in 7×7, 3 seeds): ``v1`` at positions ×5,
          0.881 → 0.845; ``gauss`` with σ learned 0.904 → 0.644, frozen at 0.5
          0.904 → 0.852, annealed from 2 to 0.28 0.816 → 0.802; the faster the positions
          train, the more rounding costs (``gauss`` at ×1 / ×5 / ×25: 0.761 / 0.644 / 0.259).

        The recipe: train ``gauss`` delays with ``SigmaSchedule.for_rounding`` (a short
        convolutional run like the canvas: σ frozen at 0.5), round, :meth:`use_integer_taps`,
        train the weights a few steps, then export."""
        with torch.no_grad():
            self.P.round_()

    def export_integer_taps(self) -> IntegerTaps:
        """Integer taps and weights of this layer (see :func:`integer_taps`)."""
        return integer_taps(self.weight, self.P, self.dilated_kernel_size, self.version)

    def use_integer_taps(self, enabled: bool = True) -> None:
        """Switch the forward pass to integer taps at the rounded positions, or back.

        The tap indices are fixed when it is called (a buffer, ``integer_tap_index``: it
        follows ``.to()`` and ``state_dict``); the weights are the layer's own ``weight``, so
        training in this mode fine-tunes them at the integer positions (P and SIG get no
        gradient) — the recipe after :meth:`round_positions`: round, switch, train the
        weights a few steps."""
        check_bool("enabled", enabled)
        index = self.export_integer_taps().index if enabled else None
        self.register_buffer("integer_tap_index", index)

    @property
    def integer_taps(self) -> IntegerTaps | None:
        """The taps the forward pass uses in integer-tap mode (None otherwise)."""
        if self.integer_tap_index is None:
            return None
        return IntegerTaps(weight=self.weight.detach(), index=self.integer_tap_index,
                           size=self.dilated_kernel_size)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A state_dict saved in integer-tap mode carries the indices: take them on load.
        key = prefix + "integer_tap_index"
        if key in state_dict and self.integer_tap_index is None:
            self.register_buffer("integer_tap_index", torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def kernel(self) -> torch.Tensor:
        """The dense convolution kernel ``(C_out, C_in/groups, *kernel_shape)``."""
        if self.integer_tap_index is not None:
            return self._to_conv_kernel(_tap_kernel(self.weight, self.integer_tap_index,
                                                    self.dilated_kernel_size))
        return self._to_conv_kernel(construct_kernel(
            self.weight, self.P, self.SIG, self.dilated_kernel_size, self.version,
            method=self.construct_method))

    def _to_conv_kernel(self, kernel: torch.Tensor) -> torch.Tensor:
        return kernel

    def _support(self) -> torch.Tensor | None:
        """Offsets of the (learnable-axis) support that may carry value or gradient."""
        if self.conv_method not in ("auto", "shift"):
            return None
        if self.integer_tap_index is not None:
            index = self.integer_tap_index
            mask = torch.zeros(self.dilated_kernel_size, dtype=torch.bool, device=index.device)
            mask[tuple(index.reshape(len(self.dilated_kernel_size), -1))] = True
            return mask
        return _support(self.P, self.dilated_kernel_size, self.version)

    def _conv_support(self) -> torch.Tensor | None:
        return self._support()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        return convolve(input, self.kernel(), self.bias, stride=self.stride,
                        padding=self.padding, dilation=self.dilation, groups=self.groups,
                        padding_mode=self.padding_mode, method=self.conv_method,
                        support=self._conv_support())

    def _check_input(self, input: torch.Tensor) -> None:
        """``input`` is ``(N, C_in, *spatial)`` or ``(C_in, *spatial)`` in the layer's dtype
        and device."""
        real_floating_dtype("input", input, low_precision=True)
        if input.dtype != self.weight.dtype or input.device != self.weight.device:
            raise TypeError(f"input must have the layer's dtype and device ({self.weight.dtype}, "
                            f"{self.weight.device}), got {input.dtype}, {input.device}")
        if input.ndim not in (self.conv_ndim + 1, self.conv_ndim + 2):
            raise ValueError(
                f"input must have shape (N, C, *spatial) or (C, *spatial) with "
                f"{self.conv_ndim} spatial dims, got {tuple(input.shape)}"
            )
        channel_dim = input.ndim - self.conv_ndim - 1
        if input.shape[channel_dim] != self.in_channels:
            raise ValueError(
                f"input must have {self.in_channels} channels (dim {channel_dim}), "
                f"got shape {tuple(input.shape)}"
            )

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_count={self.kernel_count}, "
                f"dilated_kernel_size={self.dilated_kernel_size}, version={self.version!r}, "
                f"stride={self.stride}, padding={self.padding}")
        if self.dense_kernel_size:
            text += f", dense_kernel_size={self.dense_kernel_size}"
        if any(d != 1 for d in self.dilation):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        return text


_LAYER_DOC = r"""{d}-D convolution with learnable spacings, a drop-in for ``nn.Conv{d}d``.

    ``y = conv{d}d(x, K) + bias`` with K[j] = Σ_k w_k Φ(j − q_k)/Z_k built by
    :func:`construct_kernel` from ``weight (C_out, C_in/groups, m)``, positions
    ``P ({d}, C_out, C_in/groups, m)`` and, for ``gauss``/``max``, widths ``SIG`` of P's shape.
    Argument order and parameter layout are those of ``dcls`` 0.1.1's ``Dcls{d}d`` (so a
    ``state_dict`` copies across), plus ``nn.Conv{d}d``'s ``dilation``, ``device``, ``dtype``
    and string ``padding``. ``kernel_count`` is m, ``dilated_kernel_size`` the support s.
    Code written for ``nn.Conv{d}d`` finds ``kernel_size`` (= s), ``stride``, ``padding``,
    ``dilation``, ``groups``, ``transposed`` (False) and ``output_padding``; code written for
    ``dcls`` may pass ``use_implicit_gemm`` (kept, no effect: ``conv_method`` picks the path).
    A channels_last input gives a channels_last output. bfloat16 and float16 work where
    ``nn.Conv{d}d`` does (the kernel is built in float32, then cast). ``construct_method`` /
    ``conv_method`` pick the construction and convolution paths (``"auto"``: a cost model).
    ``position_init`` places the taps before training:
    ``"spread"`` (default, see below); ``"dcls"`` N(0, 0.5²) clamped to the support, as the
    official package, which starts 95 % of the taps within one cell of the centre (pass it
    to start a model ported from ``dcls`` where it started there); ``"uniform"`` over the
    support;
    ``"lattice"`` on a dilated convolution's taps (kernel_count = k^{d}, the widest integer
    spacing that fits), so an untrained ``v1`` layer *is* that dilated convolution (up to
    the normalization's 1/(1 + 1e-7)); ``"spread"`` that lattice jittered by up to half its
    spacing (any kernel_count: m points evenly spaced over the smallest lattice with at
    least m). With ``v0``/``v1`` the lattice is a trap: at integer positions the bilinear
    kernel's position gradient is exactly zero (as in the official package), so those taps
    never move — use ``"spread"`` there. Measured on scikit-learn's digits placed on a 32×32
    canvas (``diffnum reproduce dcls``, part (d), full run, 3 seeds, 9 taps in a 7×7
    support): gauss lattice 0.916 ± 0.011, spread 0.904 ± 0.018, dcls 0.839 ± 0.042; v1
    spread 0.879 ± 0.019, lattice 0.844 ± 0.039 (taps never moved), dcls 0.797 ± 0.015;
    a dilated 3×3 with the same weights 0.852 ± 0.052. Hence the default ``"spread"``: the
    best start for v1, within one standard deviation of the best for gauss, and far from the
    official package's start, whose taps hardly leave the centre.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls{d}d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3)
        >>> x = torch.randn(1, 2, *[8] * {d})
        >>> layer(x).shape[:2], layer.P.shape[0]  # 3 taps per kernel, {d} coordinates each
        (torch.Size([1, 4]), {d})
    """


def _dcls_init(self: _DclsBase, in_channels: int, out_channels: int, kernel_count: int,
               stride: int | Sequence[int] = 1, padding: int | str | Sequence[int] = 0,
               dilated_kernel_size: int | Sequence[int] = 1, groups: int = 1,
               bias: bool = True, padding_mode: str = "zeros", version: str = "gauss", *,
               dilation: int | Sequence[int] = 1, construct_method: str = "auto",
               conv_method: str = "auto", position_init: str = "spread", device=None,
               dtype=None, use_implicit_gemm: bool = True) -> None:
    """The ``__init__`` of :class:`Dcls1d`, :class:`Dcls2d` and :class:`Dcls3d`: ``nn.ConvNd``'s
    defaults over :class:`_DclsBase`'s arguments (one signature for the three classes)."""
    _DclsBase.__init__(self, in_channels, out_channels, kernel_count, stride, padding,
                       dilated_kernel_size, groups, bias, padding_mode, version,
                       dilation=dilation, construct_method=construct_method,
                       conv_method=conv_method, position_init=position_init,
                       device=device, dtype=dtype, use_implicit_gemm=use_implicit_gemm)


class Dcls1d(_DclsBase):
    __doc__ = _LAYER_DOC.format(d=1)
    conv_ndim = 1
    position_ndim = 1

    __init__ = _dcls_init


class Dcls2d(_DclsBase):
    __doc__ = _LAYER_DOC.format(d=2)
    conv_ndim = 2
    position_ndim = 2

    __init__ = _dcls_init


class Dcls3d(_DclsBase):
    __doc__ = _LAYER_DOC.format(d=3)
    conv_ndim = 3
    position_ndim = 3

    __init__ = _dcls_init


_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _DclsTransposeBase(_DclsBase):
    """A DCLS kernel applied with ``F.conv_transpose{d}d``: weight ``(C_in, C_out/groups, m)``,
    positions ``(d, C_in, C_out/groups, m)`` (``nn.ConvTransposeNd``'s channel layout)."""

    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_count: int,
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilated_kernel_size: int | Sequence[int] = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", version: str = "gauss", *,
                 output_padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                 construct_method: str = "auto", conv_method: str = "auto",
                 position_init: str = "spread", device=None, dtype=None) -> None:
        if isinstance(padding, str):
            raise ValueError(f"padding must be an int or a sequence of {self.conv_ndim} ints "
                             f"for a transposed convolution (no 'same'/'valid', as "
                             f"nn.ConvTranspose{self.conv_ndim}d), got {padding!r}")
        check_one_of("padding_mode", padding_mode, ("zeros",))
        # One path: F.conv_transpose{d}d with the dense kernel (the FFT and shift paths of
        # convolve() are forward correlations).
        check_one_of("conv_method", conv_method, ("auto", "dense"))
        super().__init__(in_channels, out_channels, kernel_count, stride, padding,
                         dilated_kernel_size, groups, bias, padding_mode, version,
                         dilation=dilation, construct_method=construct_method,
                         conv_method=conv_method, position_init=position_init,
                         device=device, dtype=dtype)
        self._output_padding = normalize_size("output_padding", output_padding,
                                              self.conv_ndim, low=0)
        for op, st, dil in zip(self._output_padding, self.stride, self.dilation):
            if op >= max(st, dil):
                raise ValueError(f"output_padding must be smaller than stride or dilation "
                                 f"(per axis), got output_padding={self._output_padding} with "
                                 f"stride={self.stride}, dilation={self.dilation}")

    @staticmethod
    def _weight_channels(in_channels: int, out_channels: int, groups: int) -> tuple[int, int]:
        return in_channels, out_channels // groups

    @property
    def output_padding(self) -> tuple[int, ...]:
        """Extra size added to one side of each output axis, as ``nn.ConvTransposeNd``'s."""
        return self._output_padding

    def _min_output_size(self, spatial: Sequence[int]) -> list[int]:
        """(n − 1)·stride − 2·padding + dilation·(s − 1) + 1 per axis (no output_padding)."""
        return [(n - 1) * st - 2 * p + dil * (k - 1) + 1 for n, st, p, dil, k in
                zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)]

    def _output_padding_for(self, spatial: Sequence[int],
                            output_size: Sequence[int] | None) -> tuple[int, ...]:
        least = self._min_output_size(spatial)
        if output_size is None:
            padding = self._output_padding
        else:
            if (not isinstance(output_size, Sequence) or isinstance(output_size, str)
                    or len(output_size) not in range(self.conv_ndim, self.conv_ndim + 3)
                    or not all(isinstance(v, int) and not isinstance(v, bool)
                               for v in output_size)):
                raise TypeError(f"output_size must be None or a sequence of "
                                f"{self.conv_ndim} ints (optionally after N and C), "
                                f"got {output_size!r}")
            size = tuple(output_size)[-self.conv_ndim:]
            if any(not lo <= v <= lo + st - 1 for v, lo, st in zip(size, least, self.stride)):
                raise ValueError(f"output_size must lie between {tuple(least)} and "
                                 f"{tuple(lo + st - 1 for lo, st in zip(least, self.stride))} "
                                 f"for this input and stride, got {size}")
            padding = tuple(v - lo for v, lo in zip(size, least))
        if any(lo + op < 1 for lo, op in zip(least, padding)):
            raise ValueError(f"padding={self.padding} is too large for input spatial size "
                             f"{tuple(spatial)}: the output would have size "
                             f"{tuple(lo + op for lo, op in zip(least, padding))}")
        return padding

    def forward(self, input: torch.Tensor,
                output_size: Sequence[int] | None = None) -> torch.Tensor:
        self._check_input(input)
        spatial = tuple(input.shape[-self.conv_ndim:])
        if min(spatial) < 1:
            raise ValueError(f"input must have non-empty spatial dims, got shape "
                             f"{tuple(input.shape)}")
        check_finite("input", input)
        output_padding = self._output_padding_for(spatial, output_size)
        unbatched = input.ndim == self.conv_ndim + 1
        x = input.unsqueeze(0) if unbatched else input
        out = _CONV_TRANSPOSE[self.conv_ndim](x, self.kernel(), self.bias, self.stride,
                                              self.padding, output_padding, self.groups,
                                              self.dilation)
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if any(self._output_padding):
            text += f", output_padding={self._output_padding}"
        return text


_TRANSPOSE_DOC = r"""{d}-D transposed convolution with learnable spacings, the counterpart of
    :class:`Dcls{d}d` as ``nn.ConvTranspose{d}d`` is of ``nn.Conv{d}d``.

    ``y = conv_transpose{d}d(x, K) + bias``: every input sample spreads the kernel over the
    output, y[n, o, i·stride − padding + j·dilation] += Σ_c x[n, c, i] K[c, o, j] (channels
    within a group), with K[c, o, j] = Σ_k w_k Φ(j − q_k)/Z_k built by
    :func:`construct_kernel` from ``weight (C_in, C_out/groups, m)``, positions
    ``P ({d}, C_in, C_out/groups, m)`` and, for ``gauss``/``max``, widths ``SIG`` of P's
    shape: ``nn.ConvTranspose{d}d``'s weight layout, input channels first. Output size per
    axis (n − 1)·stride − 2·padding + dilation·(s − 1) + output_padding + 1, as torch's.

    It is the adjoint of :class:`Dcls{d}d` with the *same* ``weight``, ``P`` and ``SIG``:
    ``Dcls{d}d(A, B, …)`` and ``DclsTranspose{d}d(B, A, …)`` (channels swapped; same
    kernel_count, stride, padding, dilated_kernel_size, groups, version, dilation; no bias)
    have parameters of the same shapes (a ``state_dict`` copies across) and satisfy
    ⟨Dcls{d}d(x), y⟩ = ⟨x, DclsTranspose{d}d(y)⟩; ``output_padding`` (or
    ``forward(y, output_size=x.shape)``) gives back x's size when the stride drops a remainder.

    Arguments are :class:`Dcls{d}d`'s plus keyword ``output_padding`` (per axis, smaller than
    the stride or the dilation). As ``nn.ConvTranspose{d}d``: ``padding`` is ints only
    (no ``'same'``/``'valid'``) and ``padding_mode`` only ``"zeros"``. ``conv_method`` is
    ``"auto"`` or ``"dense"``: one path, ``F.conv_transpose{d}d`` with the dense kernel.
    ``round_positions``, ``use_integer_taps``, ``clamp_parameters``, :func:`set_sigma` and
    :func:`parameter_groups` work as on :class:`Dcls{d}d`.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> down = di.Dcls{d}d(2, 4, 3, stride=2, padding=2, dilated_kernel_size=5, bias=False)
        >>> up = di.DclsTranspose{d}d(4, 2, 3, stride=2, padding=2, dilated_kernel_size=5,
        ...                          bias=False, output_padding=1)
        >>> up.load_state_dict(down.state_dict())  # the same weight, P, SIG
        <All keys matched successfully>
        >>> x, y = torch.randn(1, 2, *[12] * {d}), torch.randn(1, 4, *[6] * {d})
        >>> up(y).shape == x.shape  # (6 − 1)·2 − 2·2 + (5 − 1) + 1 + 1 = 12 per axis
        True
        >>> bool(torch.allclose((down(x) * y).sum(), (x * up(y)).sum(), atol=1e-3))  # adjoint
        True
    """


class DclsTranspose1d(_DclsTransposeBase):
    __doc__ = _TRANSPOSE_DOC.format(d=1)
    conv_ndim = 1
    position_ndim = 1


class DclsTranspose2d(_DclsTransposeBase):
    __doc__ = _TRANSPOSE_DOC.format(d=2)
    conv_ndim = 2
    position_ndim = 2


class _DclsPartial(_DclsBase):
    """Positions learned along the last axis only; the leading axes are a dense kernel."""

    position_ndim = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_count: int,
                 stride: int | Sequence[int] = 1, padding: int | str | Sequence[int] = 0,
                 dense_kernel_size: int | Sequence[int] = 1,
                 dilated_kernel_size: int | Sequence[int] = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", version: str = "gauss", *,
                 dilation: int | Sequence[int] = 1, construct_method: str = "auto",
                 conv_method: str = "auto", position_init: str = "uniform", device=None,
                 dtype=None, use_implicit_gemm: bool = True) -> None:
        dense = _tuple("dense_kernel_size", dense_kernel_size, self.conv_ndim - 1)
        super().__init__(in_channels, out_channels, kernel_count, stride, padding,
                         dilated_kernel_size, groups, bias, padding_mode, version,
                         dilation=dilation, dense_kernel_size=dense, position_init=position_init,
                         construct_method=construct_method, conv_method=conv_method,
                         device=device, dtype=dtype, use_implicit_gemm=use_implicit_gemm)

    def _conv_support(self) -> torch.Tensor | None:
        mask = self._support()
        if mask is None:
            return None
        return mask.expand(*self.dense_kernel_size, *mask.shape)


class Dcls2_1d(_DclsPartial):
    """2-D convolution, dense ``dense_kernel_size`` along H, learnable spacings along W.

    ``weight (C_out, C_in/groups, k_H, m)``, ``P``/``SIG (1, C_out, C_in/groups, k_H, m)``;
    kernel ``(C_out, C_in/groups, k_H, s)``. The 2-D analogue of ``dcls``'s ``Dcls3_1d``.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls2_1d(2, 4, kernel_count=3, padding=(1, 3), dense_kernel_size=3,
        ...                     dilated_kernel_size=7)
        >>> layer(torch.randn(1, 2, 8, 8)).shape, tuple(layer.weight.shape)  # (C_out, C_in, k_H, m)
        (torch.Size([1, 4, 8, 8]), (4, 2, 3, 3))
    """

    conv_ndim = 2


class Dcls3_1d(_DclsPartial):
    """3-D convolution, dense ``dense_kernel_size`` (2 ints) on the leading axes, learnable
    spacings along the last axis, as ``dcls`` 0.1.1's ``Dcls3_1d`` (same layout and init:
    ``weight (C_out, C_in/groups, k_0, k_1, m)``, ``P (1, C_out, C_in/groups, k_0, k_1, m)``,
    positions uniform over the support).

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls3_1d(2, 4, kernel_count=3, padding=(1, 1, 3), dense_kernel_size=(3, 3),
        ...                     dilated_kernel_size=7)
        >>> layer(torch.randn(1, 2, 6, 6, 8)).shape
        torch.Size([1, 4, 6, 6, 8])
    """

    conv_ndim = 3


class Dcls2dK1d(_DclsBase):
    """A 1-D learnable-spacing kernel inside a 2-D convolution (``dcls``'s ``Dcls2dK1d``).

    The kernel ``(C_out, C_in/groups, s)`` lies along H (``flat_dim=0``, kernel ``s × 1``)
    or W (``flat_dim=1``, kernel ``1 × s``). Default version ``v1`` as in the package.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls2dK1d(2, 4, kernel_count=3, padding=(3, 0), dilated_kernel_size=7)
        >>> layer(torch.randn(1, 2, 8, 8)).shape, tuple(layer.kernel().shape)  # a 7 × 1 kernel
        (torch.Size([1, 4, 8, 8]), (4, 2, 7, 1))
    """

    conv_ndim = 2
    position_ndim = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_count: int,
                 stride: int | Sequence[int] = 1, padding: int | str | Sequence[int] = 0,
                 dilated_kernel_size: int | Sequence[int] = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", version: str = "v1",
                 flat_dim: int = 0, *, dilation: int | Sequence[int] = 1,
                 construct_method: str = "auto", conv_method: str = "auto", device=None,
                 dtype=None, use_implicit_gemm: bool = True) -> None:
        check_int_in_range("flat_dim", flat_dim, 0, 1)
        self.flat_dim = flat_dim
        super().__init__(in_channels, out_channels, kernel_count, stride, padding,
                         dilated_kernel_size, groups, bias, padding_mode, version,
                         dilation=dilation, construct_method=construct_method,
                         conv_method=conv_method, device=device, dtype=dtype,
                         use_implicit_gemm=use_implicit_gemm)

    def _to_conv_kernel(self, kernel: torch.Tensor) -> torch.Tensor:
        return kernel.unsqueeze(-1 - self.flat_dim)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        s = self.dilated_kernel_size[0]
        return (s, 1) if self.flat_dim == 0 else (1, s)

    def _conv_support(self) -> torch.Tensor | None:
        mask = self._support()
        return None if mask is None else mask.unsqueeze(-1 - self.flat_dim)


def dcls_layers(module: nn.Module) -> list[_DclsBase]:
    """Every DCLS layer inside ``module`` (itself included).

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> net = torch.nn.Sequential(di.Dcls1d(2, 2, 3, dilated_kernel_size=5, padding=2),
        ...                           torch.nn.ReLU(), torch.nn.Conv1d(2, 2, 1))
        >>> len(di.dcls_layers(net))
        1
    """
    check_module("module", module)
    return [m for m in module.modules() if isinstance(m, _DclsBase)]


def clamp_parameters(module: nn.Module) -> None:
    """Call ``clamp_parameters()`` on every DCLS layer of ``module``.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls1d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3)
        >>> x = torch.randn(1, 2, 16)
        >>> with torch.no_grad():
        ...     _ = layer.P.fill_(100.0)  # a step that threw the taps out of the support
        >>> di.clamp_parameters(layer)
        >>> bool(layer.P.abs().max() <= 3)
        True
    """
    for layer in dcls_layers(module):
        layer.clamp_parameters()


def round_to_integer_taps(module: nn.Module) -> list[_DclsBase]:
    """Clamp, round and switch every DCLS layer of ``module`` to integer-tap mode; returns
    the layers. The first half of the recipe after training (see
    :meth:`~Dcls2d.round_positions` for its measured cost): then train the weights a few
    steps — the positions no longer receive gradients — and export.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> net = torch.nn.Sequential(di.Dcls1d(2, 2, 3, dilated_kernel_size=7, padding=3))
        >>> layers = di.round_to_integer_taps(net)
        >>> bool((layers[0].P == layers[0].P.round()).all()), layers[0].integer_taps is not None
        (True, True)
    """
    layers = dcls_layers(module)
    for layer in layers:
        layer.clamp_parameters()
        layer.round_positions()
        layer.use_integer_taps()
    return layers


def parameter_groups(
    module: nn.Module, lr: float, *, weight_decay: float = 0.0, position_lr_scale: float = 1.0
) -> list[dict]:
    """Optimizer groups: positions and widths of DCLS layers at ``lr · position_lr_scale``
    with no weight decay; every other parameter at ``lr`` with ``weight_decay``.

    Why these defaults (measured by ``PYTHONPATH=src OMP_NUM_THREADS=1 python
    benchmarks/sweep_dcls_defaults.py``, numbers in ``benchmarks/results/dcls_defaults.md``):
    on the digits canvas of ``diffnum reproduce dcls`` (part (d): 630 AdamW steps at lr 1e-2,
    spread init, 3 seeds) ``position_lr_scale`` 1 / 5 / 25 gives test accuracy
    0.867 / 0.904 / 0.891 for ``gauss`` and 0.870 / 0.881 / 0.851 for ``v1`` (seed std
    0.01–0.04). ×5 helps ``gauss`` in a run this short (+0.037, 2.4 pooled seed stds) and
    ``v1`` only within the noise (+0.011); ×25 helps neither, and the further the taps travel
    the more rounding them costs (``gauss``: 0.761 / 0.644 / 0.259 once rounded). Adam moves a
    position by about its learning rate per step, so the multiplier that pays depends on how
    many steps a run has: the default stays 1, the value of the thesis's vision code
    (K-H-Ismail/ConvNeXt-dcls trains positions at the base learning rate), and short runs pass
    their own (part (d) uses 5, the spiking delays of part (c) 50; the thesis's spiking code,
    Thvnvtos/SNN-delays, 150 × a weight learning rate of 1e-3). Positions never get weight
    decay, as in both codes: decay pulls the taps toward the kernel centre, and 0.01 of it on
    the canvas's positions changed nothing measurable (0.900 ± 0.023 against
    0.904 ± 0.019 without).

    The spacing group carries ``"algorithm": "adamw"``, so
    ``diffnum.optim.Muon(parameter_groups(model, lr))`` orthogonalizes the DCLS weights (as
    (out, in·taps) matrices) and trains the positions with AdamW; torch's optimizers ignore
    the key.

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> layer = di.Dcls1d(2, 4, kernel_count=3, dilated_kernel_size=7, padding=3)
        >>> x = torch.randn(1, 2, 16)
        >>> groups = di.parameter_groups(layer, 1e-3, position_lr_scale=5.0)
        >>> [g["lr"] for g in groups]  # weights and bias, then positions at 5× the rate
        [0.001, 0.005]
    """
    check_module("module", module)  # before the float checks: the first argument first
    check_positive("lr", lr)
    check_real("weight_decay", weight_decay, low=0.0)
    check_positive("position_lr_scale", position_lr_scale)
    spacing_ids = set()
    spacing = []
    for layer in dcls_layers(module):
        for p in (layer.P, layer.SIG):
            if p is not None and id(p) not in spacing_ids:
                spacing_ids.add(id(p))
                spacing.append(p)
    others = [p for p in module.parameters() if id(p) not in spacing_ids]
    groups = []
    if others:
        groups.append({"params": others, "lr": lr, "weight_decay": weight_decay})
    if spacing:
        # "algorithm": "adamw" routes the spacings to AdamW in diffnum.optim.Muon (a position
        # tensor is no matrix to orthogonalize); torch's optimizers ignore the extra key.
        groups.append({"params": spacing, "lr": lr * position_lr_scale, "weight_decay": 0.0,
                       "algorithm": "adamw"})
    return groups
