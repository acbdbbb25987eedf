"""Basis networks: Fourier neural operators in 1-D, 2-D and 3-D.

Map of the pillar (channels-first layout ``(*batch, C, n_1, …, n_d)`` as ``torch.nn.ConvNd``;
float32 and float64):

- :func:`spectral_conv` — y = irfftn(R · rfftn(x)) keeping the lowest ``modes`` per grid
  dimension (both signs of k on all but the last, real-FFT dimension), complex weights R of
  shape :func:`spectral_weight_shape`; grids smaller than the modes are truncated, so one
  set of weights is one operator at every resolution. :class:`SpectralConv` is its module
  (real parameter storage, complex view).
- :class:`FNO` — lifting, ``depth`` Fourier layers σ(K v + W v), two-layer projection to
  ``out_channels`` (the N basis functions of the hard-constraint layer); optional grid
  coordinate channels (:func:`grid_coordinates`) and zero padding for non-periodic domains.
"""

from diffnum.models._fno import FNO, grid_coordinates
from diffnum.models._spectral import SpectralConv, spectral_conv, spectral_weight_shape

__all__ = [
    "FNO",
    "SpectralConv",
    "grid_coordinates",
    "spectral_conv",
    "spectral_weight_shape",
]
