"""Update directions: the linear minimization oracle of an operator norm, batched by shape.

For a momentum matrix G the steepest direction under a norm ‖·‖ is the oracle
O = argmax_{‖O‖ ≤ 1} ⟨G, O⟩ (the "LMO" view of Muon: Pethick et al. 2025, "Training deep
learning models with norm-constrained LMOs"). Three norms share the machinery here:

- ``"spectral"`` (‖·‖₂→₂): O = U Vᵀ, the polar factor of G = U Σ Vᵀ — Muon. Computed by
  :func:`diffnum.factor.msign` with a checked Newton–Schulz schedule.
- ``"sign"`` (‖·‖₁→∞ = max |O_ij|): O = sign(G) — signSGD on a matrix.
- ``"column"`` (‖·‖₁→₂ = max_j ‖O_:j‖₂): every column of G scaled to unit ℓ₂ norm.

and one direction that is not an oracle: ``"auon"`` (Maity 2025, "AuON", arXiv:2509.24320),
U = Ĝ / √mean(cosh²(Ĝ)) with Ĝ = G/‖G‖_F — linear time, no orthogonalization. Since cosh ≥ 1,
‖U‖₂ <= ‖Ĝ‖₂ <= ‖Ĝ‖_F = 1: it bounds the step's spectral norm (its "trust region") but keeps
the singular values' ratios, where Muon sets them all near 1.

A weight of any rank (out, in, k₁, …) is treated as the matrix (out, in·k₁⋯): the linear map a
convolution applies to each input patch (its im2col form), so orthogonalizing it
orthogonalizes what the layer does to a patch. Matrices of equal shape, dtype and device are
stacked and handled in one batched call.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import torch

from diffnum.factor import msign

NORMS = ("spectral", "sign", "column", "auon")
_NORM_FLOOR = 1e-7  # torch.optim.Muon's: a zero momentum gives a zero step


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """A view of ``t`` (out, in, k₁, …) as the matrix (out, in·k₁⋯)."""
    return t.reshape(t.shape[0], -1)


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """(out, in·k₁⋯) of a parameter shape with at least two dimensions."""
    return int(shape[0]), math.prod(shape[1:])


def rms(norm: str, rows: int, cols: int) -> float:
    """Root-mean-square entry of a full-rank direction of shape (rows, cols): 1/√max for
    an orthogonal factor (‖O‖_F² = min(rows, cols)), 1 for a sign matrix, 1/√rows for unit
    columns, about 1/√(rows·cols) for AuON."""
    if norm == "spectral":
        return 1 / math.sqrt(max(rows, cols))
    if norm == "sign":
        return 1.0
    if norm == "column":
        return 1 / math.sqrt(rows)
    return 1 / math.sqrt(rows * cols)  # auon: ‖U‖_F ≈ 1 (cosh ≈ 1 on entries ≪ 1)


def oracle(G: torch.Tensor, norm: str, schedule: tuple[tuple[float, float, float], ...],
           precondition: str, compute_dtype: torch.dtype | None) -> torch.Tensor:
    """The oracle output of a stack of matrices ``G`` (..., rows, cols) for ``norm``: the
    polar factor in ``compute_dtype`` (``None``: ``G``'s), the others in ``G``'s dtype
    (bfloat16/float16 matrices handled in float32)."""
    if norm == "spectral":
        # Cast here rather than inside msign: the result then stays in compute_dtype too, and
        # the parameter update reads it as is (no pass that casts it back).
        target = compute_dtype or (G.dtype if G.dtype in (torch.float32, torch.float64)
                                   else torch.float32)
        if precondition == "frobenius":
            # X₀ = U/‖U‖_F formed here, in place on a copy in the iteration dtype — the
            # operations of torch.optim.Muon, so the two agree bitwise. (msign would first
            # scale by a power of two, which keeps the norm finite for any scale: two more
            # passes over the matrix, ~5 % of a step. Here a momentum whose squares overflow
            # or underflow the dtype, |u| > 1e19 or all |u| < 1e-22 in float32, gives a zero
            # step, as in torch.)
            X = G.to(target, copy=True)
            norm = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
            X.div_(norm.clamp_min(_NORM_FLOOR))
            return msign(X, steps=len(schedule), schedule=schedule, precondition="none",
                         check=False)
        return msign(G.to(target), steps=len(schedule), schedule=schedule,
                     precondition=precondition, check=False)
    if G.dtype not in (torch.float32, torch.float64):
        return oracle(G.float(), norm, schedule, precondition, compute_dtype).to(G.dtype)
    if norm == "sign":
        return torch.sign(G)
    floor = math.sqrt(torch.finfo(G.dtype).tiny)
    if norm == "column":
        return G / torch.linalg.vector_norm(G, dim=-2, keepdim=True).clamp_min(floor)
    G = G / torch.linalg.vector_norm(G, dim=(-2, -1), keepdim=True).clamp_min(floor)
    return G / torch.cosh(G).square().mean(dim=(-2, -1), keepdim=True).sqrt()


def directions(updates: list[torch.Tensor], norm: str,
               schedule: Callable[[tuple[int, int]], tuple[tuple[float, float, float], ...]],
               precondition: str, compute_dtype: torch.dtype | None) -> list[torch.Tensor]:
    """The direction for every tensor of ``updates`` (as matrices, see :func:`as_matrix`),
    each in its tensor's shape; ``schedule(matrix shape)`` gives the Newton–Schulz
    coefficients. Tensors of equal matrix shape, dtype and device share one batched call."""
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, u in enumerate(updates):
        buckets[(matrix_shape(u.shape), u.dtype, u.device)].append(i)
    out: list[torch.Tensor | None] = [None] * len(updates)
    for (shape, _, _), indices in buckets.items():
        triples = schedule(shape)
        if len(indices) == 1:
            i = indices[0]
            out[i] = oracle(as_matrix(updates[i]), norm, triples, precondition,
                            compute_dtype).view_as(updates[i])
            continue
        stacked = torch.stack([as_matrix(updates[i]) for i in indices])
        result = oracle(stacked, norm, triples, precondition, compute_dtype)
        for i, O in zip(indices, result.unbind(0), strict=True):
            out[i] = O.view_as(updates[i])
    return out  # type: ignore[return-value]
