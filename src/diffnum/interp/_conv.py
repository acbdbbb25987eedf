"""Convolution with a constructed dense kernel: padding handling and the dense path."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from diffnum._core.validation import (
    check_count,
    check_finite,
    check_one_of,
    check_same_dtype_device,
    real_floating_dtype,
    tracing,
)
from diffnum.interp._construct import MAX_SIZE, normalize_size

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
    values = normalize_size("padding", padding, ndim, low=0)
    return tuple((v, v) for v in values)


def check_padded_size(
    spatial: Sequence[int], pads: tuple[tuple[int, int], ...], padding_mode: str,
    kernel_shape: Sequence[int], dilation: Sequence[int],
) -> None:
    """Raise, naming ``padding`` or ``input``, where ``F.pad`` or ``F.convNd`` would fail."""
    for n, (before, after) in zip(spatial, pads):
        if padding_mode == "reflect" and max(before, after) >= n:
            raise ValueError(f"padding must be smaller than the input's size {n} with "
                             f"padding_mode='reflect', got {(before, after)}")
        if padding_mode == "circular" and max(before, after) > n:
            raise ValueError(f"padding must be at most the input's size {n} with "
                             f"padding_mode='circular', got {(before, after)}")
        if padding_mode == "replicate" and max(before, after) > 0 and n == 0:
            raise ValueError("input must have non-empty spatial dims with "
                             "padding_mode='replicate'")
    padded = [n + a + b for n, (a, b) in zip(spatial, pads)]
    span = [d * (k - 1) + 1 for k, d in zip(kernel_shape, dilation)]
    if any(p < s for p, s in zip(padded, span)):
        raise ValueError(f"input's padded spatial size {tuple(padded)} must be at least the "
                         f"dilated kernel's {tuple(span)}")


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


CONV_METHODS = ("auto", "dense", "fft", "shift")


def _next_fast_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n (pocketfft is fastest on those lengths)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _dilate(kernel: torch.Tensor, dilation: tuple[int, ...]) -> torch.Tensor:
    if all(d == 1 for d in dilation):
        return kernel
    shape = [(k - 1) * d + 1 for k, d in zip(kernel.shape[2:], dilation)]
    out = kernel.new_zeros(*kernel.shape[:2], *shape)
    index = (slice(None), slice(None), *(slice(None, None, d) for d in dilation))
    out[index] = kernel
    return out


def _dft_matrix(k: int, n: int, like: torch.Tensor) -> torch.Tensor:
    """[Re | Im] of the real-input DFT, shape (k, 2·(n//2 + 1)): x @ D = [Re x̂, Im x̂]."""
    return _dft_matrix_cached(k, n, like.dtype, like.device)


@functools.lru_cache(maxsize=32)
def _dft_matrix_cached(k: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    j = torch.arange(k, dtype=torch.float64).unsqueeze(1)
    f = torch.arange(n // 2 + 1, dtype=torch.float64)
    angle = (2 * math.pi / n) * torch.remainder(j * f, n)  # reduce j·f first: exact phases
    return torch.cat([angle.cos(), -angle.sin()], dim=1).to(dtype=dtype, device=device)


def fft_conv(
    input: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor:
    """Cross-correlation through the FFT: Y(f) = Σ_c X_c(f) · conj(K_oc(f)).

    The transform length only needs to cover the padded input (the circular wrap-around
    lands on outputs that a valid correlation discards), rounded up to a fast length.
    """
    ndim = kernel.ndim - 2
    if any(padding):
        input = F.pad(input, [p for p in reversed(padding) for _ in range(2)])
    kernel = _dilate(kernel, dilation)
    spatial = input.shape[2:]
    ksize = kernel.shape[2:]
    out_full = [n - k + 1 for n, k in zip(spatial, ksize)]
    if any(o < 1 for o in out_full):
        raise ValueError(
            f"kernel {tuple(ksize)} is larger than the padded input {tuple(spatial)}"
        )
    lengths = [_next_fast_size(n) for n in spatial]
    dims = tuple(range(-ndim, 0))
    X = torch.fft.rfftn(input, s=lengths, dim=dims)
    batch = input.shape[0]
    out_channels, per_group = kernel.shape[:2]
    freq = X.shape[2:]
    if per_group == 1:
        Kf = torch.fft.rfftn(kernel, s=lengths, dim=dims)
        Xg = X.reshape(batch, groups, 1, *freq)
        Y = Xg * Kf.conj().reshape(groups, out_channels // groups, *freq)
    else:
        # One real GEMM per (group, frequency) (PyTorch's batched complex matmul is far slower
        # on CPU). With K̂ = Ar + iAi, Y = X·conj(K̂): Re Y = XrAr + XiAi, Im Y = XiAr − XrAi,
        # i.e. [[Xr, Xi], [Xi, −Xr]] @ [Ar; Ai] — the batch side is stacked, not the kernel.
        n_freq = math.prod(freq)
        og = out_channels // groups
        Xg = torch.view_as_real(X.reshape(batch, groups, per_group, n_freq))
        Xg = Xg.permute(1, 3, 4, 0, 2)  # (G, F, 2, B, Cg)
        Xr, Xi = Xg[:, :, 0], Xg[:, :, 1]
        lhs = torch.cat([torch.cat([Xr, Xi], dim=-1), torch.cat([Xi, -Xr], dim=-1)], dim=-2)
        if ndim == 1:
            # Short 1-D kernels: the spectrum is one real GEMM with the k × F DFT matrix
            # (no zero-padding to the transform length, no complex intermediates).
            Kg = (kernel.reshape(-1, ksize[0]) @ _dft_matrix(ksize[0], lengths[0], kernel))
            Kg = Kg.reshape(groups, og, per_group, 2, n_freq).permute(0, 4, 3, 2, 1)
        else:
            Kg = torch.view_as_real(torch.fft.rfftn(kernel, s=lengths, dim=dims))
            Kg = Kg.reshape(groups, og, per_group, n_freq, 2).permute(0, 3, 4, 2, 1)
        rhs = Kg.reshape(groups * n_freq, 2 * per_group, og)
        Y = torch.bmm(lhs.reshape(groups * n_freq, 2 * batch, 2 * per_group), rhs)
        Y = Y.reshape(groups, *freq, 2, batch, og).movedim(-3, -1)  # (G, *F, B, Og, 2)
        Y = torch.view_as_complex(Y.contiguous())
        Y = Y.movedim(ndim + 1, 0).movedim(ndim + 2, 2)  # (B, G, Og, *F)
    y = torch.fft.irfftn(Y.reshape(batch, out_channels, *freq), s=lengths, dim=dims)
    index = (slice(None), slice(None),
             *(slice(0, o, s) for o, s in zip(out_full, stride)))
    y = y[index]
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * ndim))
    return y


def shift_conv(
    input: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    support: torch.Tensor,
) -> torch.Tensor:
    """Sparse im2col: gather the input at the A offsets of ``support`` only, then one GEMM,
    y = Σ_{δ ∈ support} K[:, :, δ] · x(· + δ); cost O(A) instead of O(Πs) per output.

    ``support`` must cover every offset where K is non-zero *or* has a non-zero derivative
    with respect to the DCLS parameters; other offsets contribute nothing either way.
    """
    ndim = kernel.ndim - 2
    if any(padding):
        input = F.pad(input, [p for p in reversed(padding) for _ in range(2)])
    spatial = list(input.shape[2:])
    ksize = kernel.shape[2:]
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, d, s in zip(spatial, ksize, dilation, stride)]
    if any(o < 1 for o in out):
        raise ValueError(
            f"kernel {tuple(ksize)} (dilation {dilation}) is larger than the padded input "
            f"{tuple(spatial)}"
        )
    batch = input.shape[0]
    out_channels, per_group = kernel.shape[:2]
    og = out_channels // groups
    if tracing():  # static shapes: every offset (those outside the support add exact zeros)
        offsets = torch.cartesian_prod(*[torch.arange(k, device=input.device)
                                         for k in ksize]).reshape(-1, ndim)
        support = torch.ones(tuple(ksize), dtype=torch.bool, device=input.device)
    else:
        offsets = support.nonzero()  # (A, ndim)
    n_active = offsets.shape[0]
    if n_active == 0:
        y = input.new_zeros(batch, out_channels, *out) + 0 * kernel.sum()
    else:
        device = input.device
        in_strides = [math.prod(spatial[a + 1:]) for a in range(ndim)]
        base = torch.zeros((), dtype=torch.long, device=device)
        for a in range(ndim):
            t = torch.arange(out[a], device=device) * stride[a] * in_strides[a]
            base = base.unsqueeze(-1) + t
        shift = sum(offsets[:, a] * dilation[a] * in_strides[a] for a in range(ndim))
        index = (shift.reshape(-1, *([1] * ndim)) + base).reshape(-1)  # (A·n_out,)
        n_out = math.prod(out)
        flat = input.reshape(batch, groups, per_group, -1)
        cols = flat.index_select(-1, index).reshape(batch, groups, per_group * n_active, n_out)
        taps = kernel.reshape(groups, og, per_group, -1)
        if not tracing():
            taps = taps[..., support.reshape(-1)]
        if per_group == 1 and og == 1:
            y = (cols * taps.reshape(1, groups, n_active, 1)).sum(2, keepdim=True)
            y = y.reshape(batch, out_channels, *out)
        else:
            # One GEMM per group with the batch folded into the columns (G, CgA, B·n).
            cols = cols.permute(1, 2, 0, 3).reshape(groups, per_group * n_active, -1)
            y = torch.bmm(taps.reshape(groups, og, per_group * n_active), cols)
            y = y.reshape(groups, og, batch, n_out).permute(2, 0, 1, 3)
            y = y.reshape(batch, out_channels, *out)
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * ndim))
    return y


# Relative per-element costs, calibrated on a 2-core x86 CPU (forward + backward, float32):
# per MAC of a GEMM-based direct convolution; per MAC of a grouped/depthwise one (PyTorch's CPU
# backward for those is far slower per MAC); per FFT point per log2-length; per complex MAC in
# the frequency domain; per gathered input element of the sparse im2col (memory bound).
_DENSE_MAC = 1.0
_DEPTHWISE_MAC = 12.0
_FFT_POINT = 6.0
_FFT_MAC = 4.0
_GATHER = 20.0


def conv_costs(
    input_shape: Sequence[int], kernel_shape: Sequence[int], groups: int,
    stride: Sequence[int], dilation: Sequence[int], active_offsets: int | None,
) -> dict[str, float]:
    """Estimated relative cost of each path (the cost model behind ``method="auto"``).

    dense ∝ N·C_out·(C_in/g)·n_out·Πk, fft ∝ (N·C_in + C_out·C_in/g + N·C_out)·n·log n
    + N·C_out·(C_in/g)·n, shift ∝ N·C_out·(C_in/g)·n_out·A + N·C_in·A·n_out (A = active
    offsets).
    """
    batch, channels = input_shape[:2]
    spatial = list(input_shape[2:])
    out_channels, per_group = kernel_shape[:2]
    ksize = [d * (k - 1) + 1 for k, d in zip(kernel_shape[2:], dilation)]
    n_taps = math.prod(kernel_shape[2:])
    out = [(n - k) // s + 1 for n, k, s in zip(spatial, ksize, stride)]
    n_out = math.prod(out)
    macs = batch * out_channels * per_group * n_out
    dense = macs * n_taps * (_DEPTHWISE_MAC if per_group == 1 and groups > 1 else _DENSE_MAC)
    points = math.prod([_next_fast_size(n) for n in spatial])
    log_n = math.log2(max(points, 2))
    transforms = (batch * channels + out_channels * per_group + batch * out_channels) * points
    fft = transforms * log_n * _FFT_POINT + batch * out_channels * per_group * points * _FFT_MAC
    costs = {"dense": dense, "fft": fft}
    if active_offsets is not None:
        costs["shift"] = (macs * _DENSE_MAC + batch * channels * n_out * _GATHER) * active_offsets
    return costs


def choose_conv_method(
    input_shape: Sequence[int], kernel_shape: Sequence[int], groups: int,
    stride: Sequence[int], dilation: Sequence[int], active_offsets: int | None,
) -> str:
    """Cheapest path under :func:`conv_costs`."""
    costs = conv_costs(input_shape, kernel_shape, groups, stride, dilation, active_offsets)
    return min(costs, key=costs.get)


def _check_kernel_arguments(input: torch.Tensor, kernel: torch.Tensor,
                            bias: torch.Tensor | None, method: str, padding_mode: str) -> int:
    """The tensors and choices of :func:`convolve`, named when wrong; the spatial ndim."""
    check_one_of("method", method, CONV_METHODS)
    check_one_of("padding_mode", padding_mode, PADDING_MODES)
    real_floating_dtype("input", input, low_precision=True)
    real_floating_dtype("kernel", kernel, low_precision=True)
    check_same_dtype_device({"input": input, "kernel": kernel, "bias": bias})
    ndim = kernel.ndim - 2
    if ndim not in (1, 2, 3):
        raise ValueError(f"kernel must have shape (C_out, C_in/groups, *k) with 1 to 3 spatial "
                         f"dims, got {tuple(kernel.shape)}")
    if bias is not None and tuple(bias.shape) != (kernel.shape[0],):
        raise ValueError(f"bias must have shape (C_out,) = ({kernel.shape[0]},), "
                         f"got {tuple(bias.shape)}")
    return ndim


def _checked_support(support: Any, kernel: torch.Tensor, method: str) -> torch.Tensor | None:
    """The support mask of :func:`convolve`, checked; for ``method="shift"`` without one, the
    offsets where a constant kernel is non-zero."""
    if support is not None:
        if not isinstance(support, torch.Tensor) or support.dtype != torch.bool:
            raise TypeError(f"support must be a boolean tensor, got "
                            f"{getattr(support, 'dtype', type(support).__name__)}")
        if tuple(support.shape) != tuple(kernel.shape[2:]):
            raise ValueError(f"support must have the kernel's spatial shape "
                             f"{tuple(kernel.shape[2:])}, got {tuple(support.shape)}")
    if method == "shift" and support is None:
        if kernel.requires_grad:
            raise ValueError("method='shift' on a kernel that requires grad needs a support "
                             "mask (offsets with non-zero value or derivative)")
        support = (kernel != 0).flatten(0, 1).any(0)
    return support


def _run_conv(method: str, x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None,
              stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
              groups: int, support: torch.Tensor | None) -> torch.Tensor:
    """The chosen path on the padded input."""
    if method == "fft" and x.dtype in (torch.bfloat16, torch.float16):
        # torch.fft has no bfloat16 (and CPU no float16): transform in float32.
        return fft_conv(x.float(), kernel.float(), None if bias is None else bias.float(),
                        stride, padding, dilation, groups).to(x.dtype)
    if method == "fft":
        return fft_conv(x, kernel, bias, stride, padding, dilation, groups)
    if method == "shift":
        return shift_conv(x, kernel, bias, stride, padding, dilation, groups, support)
    return dense_conv(x, kernel, bias, stride, padding, dilation, groups)


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
    support: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-correlate ``input (N, C, *spatial)`` (or unbatched) with a dense ``kernel``.

    Same arguments and result as ``F.convNd`` / ``nn.ConvNd`` (``padding`` may be
    ``'same'``/``'valid'``, ``padding_mode`` as in ``nn.ConvNd``). ``method``: ``"dense"``
    (``F.convNd``), ``"fft"`` (cost O(log n) per point, independent of the kernel size),
    ``"shift"`` (shift-and-add over the offsets of ``support``, a boolean mask over the kernel
    grid covering every offset where the kernel is non-zero or has a non-zero derivative), or
    ``"auto"`` (cheapest under :func:`conv_costs`).

    Example::

        >>> import torch
        >>> import diffnum.interp as di
        >>> x, kernel = torch.randn(1, 2, 16), torch.randn(4, 2, 7)
        >>> y = di.convolve(x, kernel, None, padding=3, method="fft")
        >>> torch.allclose(y, torch.nn.functional.conv1d(x, kernel, padding=3), atol=1e-5)
        True
    """
    ndim = _check_kernel_arguments(input, kernel, bias, method, padding_mode)
    stride_t = normalize_size("stride", stride, ndim)
    dilation_t = normalize_size("dilation", dilation, ndim)
    check_count("groups", groups, high=MAX_SIZE)
    if kernel.shape[0] % groups:
        raise ValueError(f"groups must divide the kernel's C_out = {kernel.shape[0]}, "
                         f"got groups={groups}")
    unbatched = input.ndim == ndim + 1
    if unbatched:
        input = input.unsqueeze(0)
    if input.ndim != ndim + 2 or input.shape[1] != kernel.shape[1] * groups:
        raise ValueError(
            f"input must have shape (N, {kernel.shape[1] * groups}, *spatial) with {ndim} "
            f"spatial dims for this kernel and groups={groups}, got {tuple(input.shape)}"
        )
    # A NaN/inf would not stay local on the FFT path (it spreads over the whole output).
    check_finite("input", input)
    check_finite("kernel", kernel)
    if bias is not None:
        check_finite("bias", bias)
    support = _checked_support(support, kernel, method)
    pads = conv_padding(padding, kernel.shape[2:], dilation_t, stride_t)
    check_padded_size(input.shape[2:], pads, padding_mode, kernel.shape[2:], dilation_t)
    x, sym = pad_input(input, pads, padding_mode)
    if x.shape[0] == 0:
        method = "dense"  # an empty batch: F.convNd returns it empty, nothing to choose
    if method == "auto":
        padded = [int(n) + 2 * p for n, p in zip(x.shape[2:], sym)]  # ints under jit.trace
        # Traced or compiled, the choice is made from static shapes alone (dense or fft): the
        # shift path's cost depends on how many offsets the taps touch, a value in the data.
        active = int(support.sum()) if support is not None and not tracing() else None
        method = choose_conv_method([*map(int, x.shape[:2]), *padded],
                                    [*map(int, kernel.shape)], groups, stride_t,
                                    dilation_t, active)
    out = _run_conv(method, x, kernel, bias, stride_t, sym, dilation_t, groups, support)
    if out.ndim in (4, 5):  # channels_last in, channels_last out, as nn.Conv2d/3d
        fmt = torch.channels_last if out.ndim == 4 else torch.channels_last_3d
        if input.is_contiguous(memory_format=fmt) and not input.is_contiguous():
            out = out.contiguous(memory_format=fmt)
    return out.squeeze(0) if unbatched else out
