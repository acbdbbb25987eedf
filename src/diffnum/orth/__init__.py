"""Orthogonal parametrizations: maps from unconstrained parameters to O(d) and the Stiefel
manifold, and one line that keeps a weight orthogonal.

Map of the pillar:

- Pure maps, batched over leading dimensions, float32/float64, differentiable; each takes
  ``columns=k`` for the first k columns (a Stiefel point QᵀQ = I_k):
  :func:`cayley` (Q = (I − A)(I + A)⁻¹, A skew, one solve), :func:`cayley_neumann`
  (OFTv2's truncated Neumann series, products only, with its error bound),
  :func:`matrix_exp` (Q = exp(A)), :func:`householder` (HRA's reflections in compact WY
  form I − V T Vᵀ), :func:`givens` (qGOFT's rotations in rounds of disjoint pairs, the
  round-robin :func:`givens_schedule`), :func:`butterfly` (BOFT's block-diagonal Cayley
  factors with butterfly permutations) and :func:`polar` (the polar factor U Vᵀ, by
  :func:`diffnum.factor.msign` with an SVD, as a projection; a backward that is finite at
  repeated singular values).
- :func:`orthogonal` — ``orthogonal(module, "weight", map="cayley", **options)`` registers a
  ``torch.nn.utils.parametrize`` parametrization (linear and conv weights, batched weights,
  wide weights by transposition) with an exact ``right_inverse``; ``MAPS`` holds the map
  names it accepts.
"""

from diffnum.orth._maps import (
    butterfly,
    cayley,
    cayley_neumann,
    givens,
    givens_schedule,
    householder,
    matrix_exp,
    polar,
)
from diffnum.orth._parametrize import MAPS, orthogonal

__all__ = [
    "MAPS",
    "butterfly",
    "cayley",
    "cayley_neumann",
    "givens",
    "givens_schedule",
    "householder",
    "matrix_exp",
    "orthogonal",
    "polar",
]
