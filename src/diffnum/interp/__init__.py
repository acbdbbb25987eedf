"""Interpolation kernels with learnable positions, and DCLS layers built on them.

Map of the pillar:

- :func:`construct_kernel` — the DCLS kernel K[j] = Σ_k w_k Φ(j − q_k)/Z_k for versions
  ``v0`` (bilinear), ``v1`` (normalized bilinear), ``max`` (triangle) and ``gauss``, with the
  exact semantics and parameter layout of ``dcls`` 0.1.1; dense reference, scatter
  (O(m·2^d)) and separable (exact, O(m·Σs)) constructions. :func:`position_axes` tells
  which kernel axis each position coordinate moves along.
- Layers :class:`Dcls1d`, :class:`Dcls2d`, :class:`Dcls3d` (drop-in ``nn.ConvNd``), partial
  variants :class:`Dcls2_1d`, :class:`Dcls3_1d`, :class:`Dcls2dK1d`; transposed
  :class:`DclsTranspose1d`, :class:`DclsTranspose2d` (drop-in ``nn.ConvTransposeNd``, the
  adjoints of ``Dcls1d``/``Dcls2d`` with the same parameters); functional
  :func:`dcls_conv`; :func:`convolve` (dense-kernel convolution with path selection).
- Position initializations ``POSITION_INITS`` (``position_init=`` of every layer):
  :func:`init_positions`, :func:`lattice_offsets` (a dilated convolution's taps).
- Training helpers: :func:`clamp_parameters`, :func:`parameter_groups` (position/width
  learning-rate multiplier, no weight decay), :func:`set_sigma` and :class:`SigmaSchedule`.
- The wider primitive: :func:`splat` (values at real coordinates → grid) and its adjoint
  :func:`gather` (grid → values at real coordinates), kernels nearest / linear / gaussian /
  triangle / cubic B-spline, differentiable w.r.t. values, coordinates and widths;
  :func:`spline_coefficients` (cubic prefilter, as ``scipy.ndimage.spline_filter``).
- Inference: ``layer.round_positions()``, :func:`integer_taps` / ``layer.export_integer_taps()``
  → :class:`IntegerTaps`, and ``layer.use_integer_taps()``; :func:`round_to_integer_taps`
  does the three for every layer of a model (then train the weights a few steps).

Arguments are checked up front and bad ones raise ``ValueError``/``TypeError`` naming the
argument: tensors must be float32/float64 with matching dtype and device, and finite (NaN/inf
positions would become garbage indices, and the FFT path would spread a NaN over the whole
output); sizes, strides, paddings are ints with sanity bounds (``MAX_SIZE`` per axis,
``MAX_ELEMENTS`` per tensor, in ``_construct``).
"""

from diffnum.interp._construct import construct_kernel, position_axes
from diffnum.interp._conv import convolve
from diffnum.interp._layers import (
    POSITION_INITS,
    Dcls1d,
    Dcls2_1d,
    Dcls2d,
    Dcls2dK1d,
    Dcls3_1d,
    Dcls3d,
    DclsTranspose1d,
    DclsTranspose2d,
    IntegerTaps,
    clamp_parameters,
    dcls_conv,
    dcls_layers,
    init_positions,
    integer_taps,
    lattice_offsets,
    parameter_groups,
    round_to_integer_taps,
)
from diffnum.interp._sigma import SigmaSchedule, set_sigma
from diffnum.interp._splat import gather, splat, spline_coefficients

__all__ = [
    "POSITION_INITS",
    "Dcls1d",
    "Dcls2_1d",
    "Dcls2d",
    "Dcls2dK1d",
    "Dcls3_1d",
    "Dcls3d",
    "DclsTranspose1d",
    "DclsTranspose2d",
    "IntegerTaps",
    "SigmaSchedule",
    "clamp_parameters",
    "construct_kernel",
    "convolve",
    "dcls_conv",
    "dcls_layers",
    "gather",
    "init_positions",
    "integer_taps",
    "lattice_offsets",
    "parameter_groups",
    "position_axes",
    "round_to_integer_taps",
    "set_sigma",
    "splat",
    "spline_coefficients",
]
