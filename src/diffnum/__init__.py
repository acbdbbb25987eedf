"""diffnum — differentiable structured numerics for PyTorch.

Pillars (each a subpackage with its own map in its ``__init__`` docstring):

- :mod:`diffnum.factor` — meta-factorization (projector and reconstruction
  equations), SVD / QR / UTV / Nyström / CUR recipes, pseudoinverses,
  randomized sketches, polar factor by Newton–Schulz, matrix square root.
- :mod:`diffnum.orth` — orthogonal parametrizations (Cayley, Cayley–Neumann, exp,
  Householder, Givens, butterfly, polar) and ``orthogonal(module, name, map)``.
- :mod:`diffnum.interp` — interpolation kernels with learnable positions, splat /
  gather, and the DCLS layers ``Dcls1d/2d/3d`` (drop-in ``nn.ConvNd``).
- :mod:`diffnum.snn` — spiking neurons, surrogate gradients, learnable synaptic
  delays built on ``Dcls1d``.
- :mod:`diffnum.solve` — least squares, root, fixed point and linear solves with
  implicit (or unrolled) gradients.
- :mod:`diffnum.pde` — grids, derivative operators, PDE residuals, reference solvers.
- :mod:`diffnum.models` — Fourier neural operators emitting basis channels.

Every call that can fail answers "did it fail?" the same way: its result has a ``status``
tensor of :class:`Status` codes (one per batch element), ``failures()``, ``describe()`` and
``raise_if_failed()``, which raises a :class:`ResultError` (see ``diffnum._core.status``).

The command line (``diffnum reproduce``, ``diffnum bench``) lives in
:mod:`diffnum.cli`; nothing in the library imports it.
"""

from importlib.metadata import PackageNotFoundError, version

from diffnum._core.status import ResultError, Status

try:
    __version__ = version("diffnum")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["ResultError", "Status", "__version__"]
