"""Column selection: uniform, leverage scores, pivoted QR, DEIM and SPA."""

from __future__ import annotations

import torch

from diffnum._core import check_int_in_range, check_matrix, check_one_of
from diffnum.factor._checks import check_generator

SELECTION_METHODS = ("uniform", "leverage", "pivoted_qr", "deim", "spa")


def _gather_columns(A: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A[..., :, index[...]] for a batched index of shape (..., k)."""
    batch = torch.broadcast_shapes(A.shape[:-2], index.shape[:-1])
    A = A.expand(*batch, *A.shape[-2:])
    index = index.expand(*batch, index.shape[-1])
    return torch.gather(A, -1, index.unsqueeze(-2).expand(*batch, A.shape[-2], index.shape[-1]))


def pivoted_gram_schmidt(A: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column-pivoted QR by Gram–Schmidt with re-orthogonalisation: A[:, p] ≈ Q R.

    Step j picks the column whose residual (after projecting out q_1..q_{j-1}) has
    the largest norm — the pivot rule of Businger–Golub CPQR, and exactly the
    successive projection algorithm (SPA). The new direction is orthogonalised
    twice against Q (CGS2), so QᵀQ = I to working precision even for
    ill-conditioned A. Returns Q (..., m, k) and the pivots (..., k).
    """
    n = A.shape[-1]
    residual = A
    columns: list[torch.Tensor] = []
    pivots: list[torch.Tensor] = []
    taken = torch.zeros((*A.shape[:-2], n), dtype=torch.bool, device=A.device)
    for _ in range(k):
        norms = torch.linalg.vector_norm(residual, dim=-2).masked_fill(taken, -1.0)
        pivot = norms.argmax(dim=-1, keepdim=True)  # (..., 1)
        taken = taken.scatter(-1, pivot, True)
        v = _gather_columns(A, pivot)  # (..., m, 1), taken from A itself, not the residual
        for _ in range(2):  # CGS2: the second pass removes what rounding left in range(Q)
            if columns:
                Q = torch.cat(columns, dim=-1)
                v = v - Q @ (Q.mT @ v)
        norm = torch.linalg.vector_norm(v, dim=-2, keepdim=True)
        q = v / torch.where(norm > 0, norm, 1.0)
        columns.append(q)
        pivots.append(pivot)
        residual = residual - q @ (q.mT @ residual)
    return torch.cat(columns, dim=-1), torch.cat(pivots, dim=-1)


def deim_indices(V: torch.Tensor) -> torch.Tensor:
    """DEIM interpolation indices of the columns of a basis V (..., n, k).

    p₁ = argmax|v₁|; for j > 1 solve V[p, :j] c = v_{j+1}[p] and take the argmax of
    the interpolation residual |v_{j+1} − V[:, :j] c| (Chaturantabut–Sorensen).
    """
    first = V[..., :, 0].abs().argmax(dim=-1, keepdim=True)
    chosen = [first]
    for j in range(1, V.shape[-1]):
        p = torch.cat(chosen, dim=-1)  # (..., j)
        basis = V[..., :, :j]
        rows = torch.gather(basis, -2, p.unsqueeze(-1).expand(*p.shape, j))  # (..., j, j)
        target = torch.gather(V[..., :, j], -1, p).unsqueeze(-1)  # (..., j, 1)
        coeff = torch.linalg.solve(rows, target)
        residual = V[..., :, j : j + 1] - basis @ coeff
        chosen.append(residual.squeeze(-1).abs().argmax(dim=-1, keepdim=True))
    return torch.cat(chosen, dim=-1)


def _leverage_scores(A: torch.Tensor, k: int) -> torch.Tensor:
    """Rank-k column leverage scores ℓ_j = ‖V_k[j, :]‖², which sum to k."""
    Vh = torch.linalg.svd(A, full_matrices=False).Vh
    return Vh[..., :k, :].square().sum(dim=-2)


def _sample_without_replacement(weights: torch.Tensor, k: int,
                                generator: torch.Generator | None) -> torch.Tensor:
    flat = weights.reshape(-1, weights.shape[-1])
    drawn = torch.multinomial(flat, k, replacement=False, generator=generator)
    return drawn.reshape(*weights.shape[:-1], k)


def select_columns(
    A: torch.Tensor,
    k: int,
    select: str = "pivoted_qr",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose k column indices of A (..., m, n); rows are chosen by ``select_columns(A.mT, k)``.

    Rules (``select``):
        ``uniform``: k distinct columns uniformly at random.
        ``leverage``: sampled without replacement with probability ∝ rank-k
            leverage scores ‖V_k[j, :]‖² (from the SVD).
        ``pivoted_qr``: the first k pivots of column-pivoted QR.
        ``deim``: DEIM indices of the top-k right singular vectors.
        ``spa``: successive projection — take the column of largest residual norm,
            project it out, repeat. In exact arithmetic this is the pivot order of
            column-pivoted QR; both use the same Gram–Schmidt kernel.

    Returns a ``torch.long`` tensor of shape (..., k); deterministic methods
    ignore ``generator``.

    Example::

        >>> import torch
        >>> import diffnum.factor as df
        >>> A, sigma = df.synthetic_matrix(30, 20, "low_rank", rank=5,
        ...                                generator=torch.Generator().manual_seed(0))
        >>> cols = df.select_columns(A, 5, "pivoted_qr")
        >>> int(torch.linalg.matrix_rank(A[:, cols]))
        5
    """
    check_matrix("A", A)
    n = A.shape[-1]
    check_int_in_range("k", k, 1, n)
    check_one_of("select", select, SELECTION_METHODS)
    check_generator(generator)
    if select == "uniform":
        device = generator.device if generator is not None else A.device
        keys = torch.rand((*A.shape[:-2], n), generator=generator, dtype=torch.float64,
                          device=device)
        return keys.argsort(dim=-1)[..., :k].to(A.device)
    if select == "leverage":
        rank_k = min(k, min(A.shape[-2:]))
        scores = _leverage_scores(A.detach(), rank_k)
        # Columns with zero leverage can still be needed to reach k distinct picks.
        floor = scores.amax(dim=-1, keepdim=True) * torch.finfo(scores.dtype).eps
        weights = scores + floor
        # A = 0 has no leverage anywhere: every column is as good as any other.
        weights = torch.where(weights.sum(dim=-1, keepdim=True) > 0, weights, 1.0)
        return _sample_without_replacement(weights, k, generator)
    if select == "deim":
        if k > min(A.shape[-2:]):
            raise ValueError(f"k must be <= min(m, n) = {min(A.shape[-2:])} for deim, got {k}")
        Vh = torch.linalg.svd(A.detach(), full_matrices=False).Vh
        return deim_indices(Vh[..., :k, :].mT)
    if k > A.shape[-2]:
        raise ValueError(f"k must be <= m = {A.shape[-2]} for {select}, got {k}")
    # pivoted_qr and spa share the pivoted Gram–Schmidt kernel (see the docstring).
    return pivoted_gram_schmidt(A.detach(), k)[1]
