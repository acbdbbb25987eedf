"""Convolution with a constructed dense kernel: padding handling and the dense path."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffnum._core.validation import check_one_of

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def conv_padding(
    padding: int | str | Sequence[int],
    kernel_shape: Sequence[int],
    dilation: Sequence[int],
    stride: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Per-dimension (before, after) padding, as ``nn.ConvNd`` resolves ``'same'``/``'valid'``."""
    ndim = len(kernel_shape)
    if isinstance(padding, str):
        check_one_of("padding", padding, ("same", "valid"))
        if padding == "valid":
            return ((0, 0),) * ndim
        if any(s != 1 for s in stride):
            raise ValueError(f"padding='same' needs stride 1, got stride={tuple(stride)}")
        pads = []
        for k, d in zip(kernel_shape, dilation):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    values = (padding,) * ndim if isinstance(padding, int) else tuple(padding)
    if len(values) != ndim or any(not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(
            f"padding must be 'same', 'valid', a non-negative int or {ndim} of them, "
            f"got {padding!r}"
        )
    return tuple((v, v) for v in values)


def pad_input(
    input: torch.Tensor, pads: tuple[tuple[int, int], ...], padding_mode: str
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Apply padding explicitly when the convolution cannot (non-zero mode or asymmetric).

    Returns the (possibly padded) input and the symmetric padding left for the convolution.
    """
    symmetric = all(a == b for a, b in pads)
    if padding_mode == "zeros" and symmetric:
        return input, tuple(a for a, _ in pads)
    flat = [p for pair in reversed(pads) for p in pair]
    mode = "constant" if padding_mode == "zeros" else padding_mode
    return F.pad(input, flat, mode=mode), (0,) * len(pads)


def dense_conv(
    input: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor:
    """``F.convNd`` on an already padded input (the reference path)."""
    return _CONV[kernel.ndim - 2](input, kernel, bias, stride, padding, dilation, groups)


CONV_METHODS = ("auto", "dense")


def choose_conv_method(
    input_shape: Sequence[int], kernel_shape: Sequence[int], groups: int,
    taps_hint: int | None,
) -> str:
    """Cost model picking the convolution path (only the dense path so far)."""
    return "dense"


def convolve(
    input: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    method: str = "auto",
    taps_hint: int | None = None,
) -> torch.Tensor:
    """Cross-correlate ``input (N, C, *spatial)`` (or unbatched) with a dense ``kernel``.

    Same arguments and result as ``nn.ConvNd``; ``taps_hint`` (an upper bound of non-zero taps
    per kernel) lets the cost model choose a path that exploits sparsity.
    """
    check_one_of("method", method, CONV_METHODS)
    check_one_of("padding_mode", padding_mode, PADDING_MODES)
    ndim = kernel.ndim - 2
    stride_t = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
    dilation_t = (dilation,) * ndim if isinstance(dilation, int) else tuple(dilation)
    unbatched = input.ndim == ndim + 1
    if unbatched:
        input = input.unsqueeze(0)
    pads = conv_padding(padding, kernel.shape[2:], dilation_t, stride_t)
    x, sym = pad_input(input, pads, padding_mode)
    if method == "auto":
        method = choose_conv_method(x.shape, kernel.shape, groups, taps_hint)
    out = dense_conv(x, kernel, bias, stride_t, sym, dilation_t, groups)
    return out.squeeze(0) if unbatched else out
