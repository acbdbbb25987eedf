"""Fourier neural operator (Li et al., 2021) in 1-D, 2-D and 3-D, channels-first."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffnum._core.validation import check_count, real_floating_dtype
from diffnum.models._spectral import (
    MAX_CHANNELS,
    SpectralConv,
    check_factory_device,
    check_factory_dtype,
    check_parameter_count,
    normalize_modes,
    set_layer_sizes,
    spectral_weight_shape,
)

MAX_DEPTH = 1024
MAX_PADDING = 2**12


class _Pointwise(nn.Module):
    """A linear map over the channel dimension ``-(d+1)`` at every grid point (a 1×…×1 conv)."""

    def __init__(self, in_channels: int, out_channels: int, n_dims: int, **factory) -> None:
        super().__init__()
        self.n_dims = n_dims
        self.linear = nn.Linear(in_channels, out_channels, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = x.ndim - self.n_dims - 1
        return self.linear(x.movedim(axis, -1)).movedim(-1, axis)


def grid_coordinates(grid: Sequence[int], *, dtype=None, device=None) -> torch.Tensor:
    """Coordinates ``x_j = i_j / n_j`` ∈ [0, 1) of a periodic grid, shape ``(d, n_1, …, n_d)``.

    The grid of 2n points contains the grid of n points (its even points), which is what
    makes the coordinate channels of :class:`FNO` consistent across resolutions.

    Example::

        >>> from diffnum.models import grid_coordinates
        >>> grid_coordinates((4,)).tolist()
        [[0.0, 0.25, 0.5, 0.75]]
    """
    if not isinstance(grid, Sequence) or isinstance(grid, str) or len(grid) == 0:
        raise TypeError(f"grid must be a non-empty sequence of ints (points per dimension), got "
                        f"{grid!r:.80}")
    for n in grid:
        check_count("grid", n, high=MAX_CHANNELS)
    if len(grid) * math.prod(grid) > MAX_CHANNELS:
        raise ValueError(f"grid {tuple(grid)} has {math.prod(grid)} points, more than the limit "
                         f"{MAX_CHANNELS // len(grid)} for {len(grid)} coordinates each")
    check_factory_dtype(dtype)
    check_factory_device(device)
    axes = [torch.arange(n, dtype=dtype, device=device) / n for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _activation_module(activation: object) -> nn.Module:
    if activation is None:
        return nn.GELU()
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    if callable(activation):
        return _Lambda(activation)
    raise TypeError(
        "activation must be an nn.Module, an nn.Module class or a callable on tensors, "
        f"got {type(activation).__name__}"
    )


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class FNO(nn.Module):
    r"""Fourier neural operator mapping ``in_channels`` fields to ``out_channels`` (N basis) fields.

    For input a (shape ``(*batch, in_channels, n_1, …, n_d)``, d = ``n_dims``):

        v_0 = P a,   v_{l+1} = σ(K_l v_l + W_l v_l + b_l)  (no σ after the last layer),
        u = Q_2 σ(Q_1 v_L),

    with P, W_l, Q_1, Q_2 pointwise linear maps over channels (lifting to ``width``, the
    local path, the two-layer projection through ``projection_channels``), K_l the
    :class:`SpectralConv` keeping ``modes`` per grid dimension, σ the activation (GELU by
    default) and L = ``depth``. The output has shape ``(*batch, out_channels, n_1, …, n_d)``;
    in the hard-constraint layer its channels are the basis functions B_θ ∈ R^{P×N}.

    Options: ``append_grid=True`` (default, as neuraloperator) appends the d coordinates of
    :func:`grid_coordinates` (i_j/n_j ∈ [0, 1)) as input channels — without them a spatially
    constant input (diffusion–sorption's u₀) gives a basis constant in space, on which a
    hard constraint cannot fit any boundary layer; ``padding`` appends that many zero points at the
    end of every grid dimension after lifting and crops them before projection (for
    non-periodic problems; the Fourier layers see a periodic domain otherwise).

    Resolution: the same weights apply to any grid. The restriction of the output on a 2×
    finer grid to the coarse points equals the coarse output *exactly* only while every
    field entering a spectral convolution is band-limited below the coarse Nyquist
    frequency — true for a band-limited input with depth 1 (σ and the pointwise maps act
    point by point), or with σ = identity, and no grid channels or padding. After a
    nonlinearity the field is no longer band-limited, the coarse grid aliases it, and the
    outputs agree only up to an aliasing error that vanishes as the grid is refined.

    Example::

        >>> import torch
        >>> from diffnum.models import FNO
        >>> net = FNO(1, 4, modes=6, width=8, depth=2, n_dims=1)
        >>> net(torch.randn(3, 1, 32)).shape, net(torch.randn(3, 1, 64)).shape  # any resolution
        (torch.Size([3, 4, 32]), torch.Size([3, 4, 64]))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int | Sequence[int],
        width: int,
        depth: int,
        n_dims: int,
        *,
        activation: nn.Module | type[nn.Module] | Callable | None = None,
        padding: int = 0,
        append_grid: bool = True,
        projection_channels: int | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        set_layer_sizes(self, n_dims, in_channels, out_channels)
        self.width = check_count("width", width, high=MAX_CHANNELS)
        self.depth = check_count("depth", depth, high=MAX_DEPTH)
        self.padding = check_count("padding", padding, low=0, high=MAX_PADDING)
        self.modes = normalize_modes(modes, n_dims)
        check_factory_dtype(dtype)
        check_factory_device(device)
        if not isinstance(append_grid, bool):
            raise TypeError(f"append_grid must be a bool, got {type(append_grid).__name__}")
        self.append_grid = append_grid
        if projection_channels is None:
            projection_channels = 4 * width
        self.projection_channels = check_count("projection_channels", projection_channels,
                                               high=MAX_CHANNELS)
        lifted_in = in_channels + (n_dims if append_grid else 0)
        spectral = 2 * math.prod(spectral_weight_shape(width, width, self.modes))
        check_parameter_count(
            "in_channels, out_channels, modes, width, depth and projection_channels",
            (lifted_in + 1) * width + depth * (spectral + (width + 1) * width)
            + (width + 1) * projection_channels + (projection_channels + 1) * out_channels)
        factory = {"dtype": dtype, "device": device}
        self.lifting = _Pointwise(lifted_in, width, n_dims, **factory)
        self.spectral = nn.ModuleList(
            SpectralConv(width, width, self.modes, n_dims, **factory) for _ in range(depth)
        )
        self.pointwise = nn.ModuleList(
            _Pointwise(width, width, n_dims, **factory) for _ in range(depth)
        )
        self.activation = _activation_module(activation)
        self.projection_hidden = _Pointwise(width, self.projection_channels, n_dims, **factory)
        self.projection_out = _Pointwise(self.projection_channels, out_channels, n_dims,
                                         **factory)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Evaluate the operator on ``input`` of shape ``(*batch, in_channels, *grid)``."""
        dtype = real_floating_dtype("input", input)
        d = self.n_dims
        if input.ndim < d + 1 or input.shape[-d - 1] != self.in_channels:
            raise ValueError(
                f"input must have shape (*batch, {self.in_channels}, *grid) with {d} grid "
                f"dimensions, got shape {tuple(input.shape)}"
            )
        param = self.lifting.linear.weight
        if dtype != param.dtype:
            raise TypeError(
                f"input dtype {dtype} does not match the parameters' dtype {param.dtype}; "
                "convert one of them (e.g. model.double())"
            )
        if input.device != param.device:
            raise TypeError(f"input must be on the device of the parameters ({param.device}), "
                            f"got {input.device}")
        grid = tuple(input.shape[-d:])
        if min(grid) == 0:
            raise ValueError(f"input grid must be non-empty, got shape {tuple(input.shape)}")
        x = input
        if self.append_grid:
            coords = grid_coordinates(grid, dtype=dtype, device=input.device)
            coords = coords.expand(*input.shape[: input.ndim - d - 1], *coords.shape)
            x = torch.cat((x, coords), dim=-d - 1)
        v = self.lifting(x)
        if self.padding:
            v = F.pad(v, (0, self.padding) * d)
        for layer, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            v = spectral(v) + pointwise(v)
            if layer < self.depth - 1:
                v = self.activation(v)
        if self.padding:
            for j in range(d):
                v = v.narrow(v.ndim - d + j, 0, grid[j])
        return self.projection_out(self.activation(self.projection_hidden(v)))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, modes={self.modes}, width={self.width}, "
            f"depth={self.depth}, n_dims={self.n_dims}, padding={self.padding}, "
            f"append_grid={self.append_grid}"
        )
