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
- :func:`adapt` — ``adapt(model, ["q_proj", ...], method="oft", **options)`` wraps frozen
  ``nn.Linear`` / ``nn.Conv2d`` layers in fine-tuning adapters (``ADAPTERS``: OFT with Cayley or
  Cayley–Neumann blocks and an input-centric forward, HRA, BOFT, qGOFT's quasi-Givens rounds
  (or strict Givens, GOFT), LoRA, PiSSA, SVFT), each an :class:`Adapter` with ``merge()`` /
  ``unmerge()``; :func:`adapter_state_dict`, :func:`load_adapter_state_dict`,
  :func:`merge_adapters`, :func:`unmerge_adapters`, :func:`trainable_parameters`,
  :func:`orthogonality_penalty` (qGOFT's soft orthogonality regularizer).
"""

from diffnum.orth._adapters import (
    ADAPTERS,
    Adapter,
    adapt,
    adapter_state_dict,
    load_adapter_state_dict,
    merge_adapters,
    orthogonality_penalty,
    trainable_parameters,
    unmerge_adapters,
)
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
    "ADAPTERS",
    "MAPS",
    "Adapter",
    "adapt",
    "adapter_state_dict",
    "butterfly",
    "cayley",
    "cayley_neumann",
    "givens",
    "givens_schedule",
    "householder",
    "load_adapter_state_dict",
    "matrix_exp",
    "merge_adapters",
    "orthogonal",
    "orthogonality_penalty",
    "polar",
    "trainable_parameters",
    "unmerge_adapters",
]
