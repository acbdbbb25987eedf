"""Maps from unconstrained parameters to orthogonal matrices, batched over leading dimensions.

Every map returns Q (..., d, d) with QᵀQ = I, or its first ``columns`` columns (a point on the
Stiefel manifold, QᵀQ = I_k), and is differentiable by autograd (the polar factor by a custom
backward). The skew-symmetric inputs are checked to be skew unless ``check=False``.
"""

from __future__ import annotations

import functools
import math

import torch

from diffnum._core.validation import (
    check_count,
    check_flag,
    check_matrix,
    real_floating_dtype,
    tracing,
)
from diffnum.factor import msign

__all__ = [
    "butterfly",
    "cayley",
    "cayley_neumann",
    "givens",
    "givens_schedule",
    "householder",
    "matrix_exp",
    "polar",
]

# Largest |A + Aᵀ| accepted as skew, in units of eps·max|A|: constructions such as X − Xᵀ
# are exactly skew; a few roundings of a product are allowed for skew matrices built otherwise.
_SKEW_ULPS = 64


def _check_skew(name: str, A: torch.Tensor, check: bool) -> None:
    check_matrix(name, A, finite=check)
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(f"{name} must be square (..., d, d), got shape {tuple(A.shape)}")
    if not check or tracing():
        return
    scale = float(A.detach().abs().amax()) if A.numel() else 0.0
    asym = float((A.detach() + A.detach().mT).abs().amax())
    if asym > _SKEW_ULPS * torch.finfo(A.dtype).eps * scale:
        raise ValueError(f"{name} must be skew-symmetric (A = -Aᵀ), got max |A + Aᵀ| = "
                         f"{asym:.3g} for max |A| = {scale:.3g}; build it as X - X.mT")


def _columns(name: str, columns: object, d: int) -> int:
    if columns is None:
        return d
    return check_count(name, columns, low=1, high=d)


def _eye(d: int, k: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(d, k, dtype=like.dtype, device=like.device)


def cayley(A: torch.Tensor, *, columns: int | None = None, check: bool = True) -> torch.Tensor:
    """Cayley map Q = (I − A)(I + A)⁻¹ of a skew-symmetric A (..., d, d).

    I + A is invertible for every skew A (its eigenvalues are 1 + iλ), and the factors commute,
    so Q = (I + A)⁻¹(I − A) is computed by one linear solve (no inverse). Q lies in SO(d) and
    has no eigenvalue −1; the inverse is the same formula, A = (I + Q)⁻¹(I − Q). OFTv2
    (catalogue #20) writes R = (I + S)(I − S)⁻¹ with S = −A; torch's ``orthogonal(...,
    orthogonal_map="cayley")`` uses (I + A/2)(I − A/2)⁻¹, that is ``cayley(-A / 2)``.

    Args:
        A: skew-symmetric float32/float64 tensor (..., d, d).
        columns: return only the first ``columns`` columns (the Stiefel point Q E_k; only
            those k columns are solved for). Default: all d.
        check: ``False`` skips the finiteness and skew-symmetry tests (no host sync).

    Returns:
        Q (..., d, columns), orthonormal columns.

    Example::

        >>> import torch
        >>> from diffnum.orth import cayley
        >>> X = torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> Q = cayley(X - X.mT)
        >>> bool(torch.allclose(Q.mT @ Q, torch.eye(4, dtype=torch.float64), atol=1e-14))
        True
    """
    _check_skew("A", A, check_flag("check", check))
    d = A.shape[-1]
    k = _columns("columns", columns, d)
    eye = _eye(d, d, A)
    return torch.linalg.solve(eye + A, (eye - A)[..., :k])


def cayley_neumann(A: torch.Tensor, terms: int = 5, *, columns: int | None = None,
                   check: bool = True) -> torch.Tensor:
    """Cayley map with a truncated Neumann series for the inverse (OFTv2, catalogue #20):
    Q̃ = (I − A) N_k, N_k = Σ_{i<k} (−A)^i ≈ (I + A)⁻¹, k = ``terms``, A skew (..., d, d).

    Only matrix products (no solve): Q̃ is the degree-k polynomial in A, evaluated by
    Paterson–Stockmeyer (3 d×d products for k = 5, ~2√k in general). Q̃ is
    orthogonal only approximately; it is not renormalized (compose with :func:`polar` for
    that). Error bounds, with ρ = ‖A‖₂ < 1:

    - (I + A) N_k = I − (−A)^k, so the inverse's error is E = (I + A)⁻¹ − N_k
      = (I + A)⁻¹(−A)^k and ‖E‖₂ ≤ ρ^k/(1 − ρ) (Neumann bound on ‖(I + A)⁻¹‖₂, any A).
      For skew A, I + A is normal with |1 + iλ| ≥ 1, so ‖E‖₂ ≤ ρ^k.
    - Q̃ = Q(I − P) with P = (−A)^k and Q = cayley(A) (all rational in A, so they
      commute): ‖Q̃ − Q‖₂ = ρ^k. Since QᵀQ = I and Pᵀ = (−1)^k P,
      Q̃ᵀQ̃ − I = −(Pᵀ + P) + PᵀP. A is normal with eigenvalues iλ_j, so
      ‖Q̃ᵀQ̃ − I‖₂ = max_j | |1 − (−iλ_j)^k|² − 1 |, which is exactly ρ^{2k} for odd k
      (then Pᵀ = −P) and at most 2ρ^k + ρ^{2k} for even k.

    Odd ``terms`` are therefore much closer to orthogonal (ρ^{2k} against ~2ρ^k). The bound
    needs ρ < 1; for ρ ≥ 1 the series diverges and Q̃ is not close to orthogonal.

    Args:
        A: skew-symmetric float32/float64 tensor (..., d, d).
        terms: number k >= 1 of series terms (k = 1: N = I, Q̃ = I − A).
        columns: first ``columns`` columns only (Q̃ E_k, computed on those columns).
        check: ``False`` skips the finiteness and skew-symmetry tests.

    Example::

        >>> import torch
        >>> from diffnum.orth import cayley, cayley_neumann
        >>> X = 0.05 * torch.randn(6, 6, dtype=torch.float64,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> A = X - X.mT
        >>> rho = float(torch.linalg.matrix_norm(A, 2))
        >>> err = float(torch.linalg.matrix_norm(cayley_neumann(A, 5) - cayley(A), 2))
        >>> abs(err - rho**5) < 1e-15
        True
    """
    _check_skew("A", A, check_flag("check", check))
    check_count("terms", terms, low=1, high=10_000)
    d = A.shape[-1]
    k = _columns("columns", columns, d)
    # Q̃ = (I − A) N_k = Σ_{i≤K} c_i A^i, K = terms: c_0 = 1, c_i = 2(−1)^i, c_K = (−1)^K.
    K = terms
    coefficients = [1.0] + [2.0 * (-1) ** i for i in range(1, K)] + [float((-1) ** K)]
    # Paterson–Stockmeyer: powers A², …, A^s (s − 1 products of d×d), then Horner in A^s over
    # blocks B_j = Σ_{i<s} c_{js+i} A^i, each step one product with the d×k slab. s = 1 is
    # plain Horner on the slab; s is chosen for the fewest flops (K = 5, k = d: 3 products).
    s = min(range(1, K + 2), key=lambda s: (s - 1) * d + (-(-(K + 1) // s) - 1) * k)
    powers = [None, A]
    for _ in range(2, s + 1):
        powers.append(powers[-1] @ A)

    def block(j: int) -> torch.Tensor:
        out = None
        for i in range(s):
            if j * s + i > K:
                break
            c = coefficients[j * s + i]
            if i == 0:
                term = c * _eye(d, k, A)
            else:
                term = c * powers[i][..., :k]
            out = term if out is None else out + term
        return out

    m = -(-(K + 1) // s)  # blocks B_0 … B_{m−1}
    Y = block(m - 1)
    for j in reversed(range(m - 1)):
        Y = powers[s] @ Y + block(j)
    return Y.expand(*A.shape[:-2], d, k)


def matrix_exp(A: torch.Tensor, *, columns: int | None = None,
               check: bool = True) -> torch.Tensor:
    """Exponential map Q = exp(A) of a skew-symmetric A (..., d, d), in SO(d).

    ``torch.linalg.matrix_exp`` (scaling and squaring with a Padé/Taylor approximant); exp is
    onto SO(d) (every rotation has a real skew logarithm), so this map reaches every
    rotation, and only rotations (det exp(A) = e^{tr A} = 1).

    Args:
        A: skew-symmetric float32/float64 tensor (..., d, d).
        columns: first ``columns`` columns only (the full exponential is still formed).
        check: ``False`` skips the finiteness and skew-symmetry tests.

    Example::

        >>> import math, torch
        >>> from diffnum.orth import matrix_exp
        >>> A = torch.tensor([[0.0, -math.pi / 2], [math.pi / 2, 0.0]], dtype=torch.float64)
        >>> matrix_exp(A).round(decimals=12) + 0.0  # rotation by 90 degrees
        tensor([[ 0., -1.],
                [ 1.,  0.]], dtype=torch.float64)
    """
    _check_skew("A", A, check_flag("check", check))
    k = _columns("columns", columns, A.shape[-1])
    return torch.linalg.matrix_exp(A)[..., :k]


def _wy_factor(V: torch.Tensor) -> torch.Tensor:
    """T (..., r, r) upper triangular with H(v₁)⋯H(v_r) = I − V T Vᵀ: the inverse of
    T⁻¹ = triu(VᵀV, 1) + diag(VᵀV)/2 (Puglisi; Joffrain et al.), by one triangular solve. It is
    the T of the forward recurrence T_j = [[T_{j−1}, −τ_j T_{j−1} V_{<j}ᵀ v_j], [0, τ_j]],
    τ_j = 2/‖v_j‖² (LAPACK's ``larft``), without its r steps."""
    gram = V.mT @ V
    inverse = gram.triu(1) + torch.diag_embed(gram.diagonal(dim1=-2, dim2=-1) / 2)
    eye = torch.eye(V.shape[-1], dtype=V.dtype, device=V.device)
    return torch.linalg.solve_triangular(inverse, eye.expand_as(inverse), upper=True)


def householder(V: torch.Tensor, *, columns: int | None = None,
                check: bool = True) -> torch.Tensor:
    """Product of r Householder reflections in compact WY form (HRA, catalogue #9):
    Q = H(v₁) H(v₂) ⋯ H(v_r) = I − V T Vᵀ, H(v) = I − 2 v vᵀ/‖v‖², V = [v₁ … v_r] (..., d, r).

    T (r×r, upper triangular) comes from the standard forward recurrence (LAPACK's ``larft``);
    equivalently T⁻¹ = triu(VᵀV, 1) + diag(VᵀV)/2. Q has determinant (−1)^r. The reflection
    of v and of c·v (c ≠ 0) are the same; no v may be zero. torch's ``orthogonal(...,
    orthogonal_map="householder")`` uses v_i = e_i + (strictly lower part of column i) and then
    multiplies column i by the sign of the base's diagonal entry.

    Args:
        V: float32/float64 tensor (..., d, r), r >= 1 non-zero reflection vectors as columns.
        columns: first ``columns`` columns only, I E_k − V T (Vᵀ E_k) (cost O(d r k)).
        check: ``False`` skips the finiteness and non-zero tests.

    Example::

        >>> import torch
        >>> from diffnum.orth import householder
        >>> v = torch.tensor([[1.0], [1.0]], dtype=torch.float64)  # mirror: the line y = -x
        >>> householder(v)
        tensor([[ 0., -1.],
                [-1.,  0.]], dtype=torch.float64)
    """
    check_matrix("V", V, finite=check_flag("check", check))
    d = V.shape[-2]
    k = _columns("columns", columns, d)
    if check and not tracing():
        norms = torch.linalg.vector_norm(V.detach(), dim=-2)
        if bool((norms == 0).any()):
            raise ValueError(f"V must have non-zero columns (reflection vectors), got "
                             f"{int((norms == 0).sum())} zero columns in shape {tuple(V.shape)}")
    T = _wy_factor(V)
    return _eye(d, k, V) - V @ (T @ V[..., :k, :].mT)


def givens_schedule(d: int) -> torch.Tensor:
    """The round-robin (circle method) schedule of disjoint coordinate pairs for
    :func:`givens`: an int64 tensor (R, ⌊d/2⌋, 2) of pairs (i, j), i < j, with R = d − 1 rounds
    for even d and R = d for odd d. Every pair of {0, …, d−1} appears exactly once, so the R
    rounds hold d(d − 1)/2 rotations = dim SO(d).

    Even d: player d − 1 is fixed, the others sit on a circle; round r pairs (r, d − 1) and
    (r + s, r − s) mod (d − 1) for s = 1 … d/2 − 1. Odd d: the same on d + 1 players, the
    pair with the extra player (a bye) left out.

    Example::

        >>> from diffnum.orth import givens_schedule
        >>> givens_schedule(4).tolist()
        [[[0, 3], [1, 2]], [[1, 3], [0, 2]], [[2, 3], [0, 1]]]
    """
    check_count("d", d, low=2, high=1 << 20)
    return _schedule(d).clone()


@functools.lru_cache(maxsize=4)
def _schedule(d: int) -> torch.Tensor:
    n = d + d % 2
    r = torch.arange(n - 1).unsqueeze(-1)
    s = torch.arange(1, n // 2).unsqueeze(0)
    first = torch.stack([r, torch.full_like(r, n - 1)], dim=-1)  # (n − 1, 1, 2)
    rest = torch.stack([(r + s) % (n - 1), (r - s) % (n - 1)], dim=-1)
    pairs = torch.cat([first, rest], dim=1)
    if d % 2:  # the pair with the extra player n − 1 = d is the bye: always pair 0
        pairs = pairs[:, 1:]
    pairs = torch.stack([pairs.amin(-1), pairs.amax(-1)], dim=-1)
    return pairs.reshape(n - 1, d // 2, 2).contiguous()


def givens(theta: torch.Tensor, d: int, *, columns: int | None = None) -> torch.Tensor:
    """Product of Givens rotations in rounds of disjoint pairs (qGOFT, catalogue #2):
    Q = G₁ G₂ ⋯ G_R, G_r = ∏_{(i,j) ∈ round r} G(i, j, θ_{r,p}), where G(i, j, θ) is the
    identity but for [[cos θ, −sin θ], [sin θ, cos θ]] in rows/columns (i, j).

    Round r uses the pairs of round r mod R_full of :func:`givens_schedule` (R_full = d − 1
    for even d, d for odd d: with ⌊d/2⌋ pairs per round, odd d needs d rounds to reach the
    d(d − 1)/2 angles of SO(d)). Within a round the pairs are disjoint, so a round is applied
    to all rows at once (one row gather and one batched 2×2 product per round, O(d k) work),
    never as a d×d product. The backward keeps the rounds' outputs while they take at most
    256 MiB and otherwise recovers each round's input from its output by the inverse rotation,
    so memory stays O(d k) for any number of rounds (under ``torch.func`` transforms, and for a
    double backward — ``create_graph=True`` — the plain autograd graph is used instead).

    Expressiveness: with the full R_full rounds there are d(d − 1)/2 angles, dim SO(d). At
    θ = 0 the derivative ∂Q/∂θ_{r,p} = e_j e_iᵀ − e_i e_jᵀ runs over a basis of the skew
    matrices (each pair once), so the map is a local diffeomorphism there and its image
    contains a neighbourhood of I. That the image is all of SO(d) is qGOFT's claim for
    parallel rounds; it is not proved here for this schedule, and is tested instead: fitting
    random targets in SO(6) by optimizing θ reaches ‖Q − Q*‖ < 1e-8 (tests/orth). Q is always
    in SO(d) (det 1).

    Args:
        theta: float32/float64 angles (..., R, ⌊d/2⌋), R >= 1 rounds (``R = R_full`` for the
            full parametrization; fewer rounds are cheaper, as in qGOFT).
        d: matrix size, >= 2.
        columns: first ``columns`` columns only (the rounds act on d×k).

    Example::

        >>> import torch
        >>> from diffnum.orth import givens
        >>> g = torch.Generator().manual_seed(0)
        >>> theta = torch.randn(5, 2, dtype=torch.float64, generator=g)
        >>> Q = givens(theta, 5)  # d = 5: 5 rounds of 2 pairs, 10 = dim SO(5) angles
        >>> float((Q.mT @ Q - torch.eye(5, dtype=torch.float64)).abs().max()) < 1e-14
        True
    """
    real_floating_dtype("theta", theta)
    check_count("d", d, low=2, high=1 << 20)
    if theta.ndim < 2 or theta.shape[-1] != d // 2 or theta.shape[-2] == 0:
        raise ValueError(f"theta must have shape (..., rounds, d // 2) = (..., R, {d // 2}) "
                         f"with R >= 1 for d={d}, got {tuple(theta.shape)}")
    k = _columns("columns", columns, d)
    if theta.requires_grad and torch.is_grad_enabled() and not _functorch(theta):
        return _Givens.apply(theta, d, k)
    recorded = (torch.is_grad_enabled() and theta.requires_grad) or _functorch(theta)
    dual = torch.autograd.forward_ad.unpack_dual(theta).tangent is not None
    return _givens_forward(theta, d, k, buffered=not (recorded or dual))


def _functorch(t: torch.Tensor) -> bool:
    """Whether ``t`` is wrapped by a torch.func transform (jacfwd, vmap, ...), which the custom
    backward of :class:`_Givens` does not support: those take the traceable path."""
    wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return wrapped is None or bool(wrapped(t))  # unknown torch: always the traceable path


def _orders(d: int, rounds: int, device: torch.device) -> torch.Tensor:
    """(min(rounds, R_full), d): round r's row order, its pairs (i₀, j₀, i₁, j₁, …), then the
    bye (odd d). In this order round r mixes rows 2p and 2p + 1: ⌊d/2⌋ 2×2 products."""
    schedule = _schedule(d)[:rounds]
    parts = [schedule.reshape(schedule.shape[0], -1)]
    if d % 2:
        total = d * (d - 1) // 2
        parts.append(total - schedule.sum(dim=(-2, -1)).unsqueeze(-1))
    return torch.cat(parts, dim=-1).to(device)


def _inverse(order: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)
    return inv


def _rotations(theta: torch.Tensor) -> torch.Tensor:
    """(..., R, h, 2, 2): [[cos θ, −sin θ], [sin θ, cos θ]] for every angle."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([c, -s, s, c], dim=-1).unflatten(-1, (2, 2))


def _mix(M: torch.Tensor, Y: torch.Tensor, h: int,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """The 2×2 products M_p (rows 2p, 2p + 1 of Y) for p < h; the bye row (odd d) is kept.
    ``out``: a slab shaped like Y to write into (no autograd), else a new tensor."""
    pairs = Y[..., :2 * h, :].unflatten(-2, (h, 2))
    if out is not None:
        torch.matmul(M, pairs, out=out[..., :2 * h, :].unflatten(-2, (h, 2)))
        if Y.shape[-2] > 2 * h:
            out[..., 2 * h:, :].copy_(Y[..., 2 * h:, :])
        return out
    out = (M @ pairs).flatten(-3, -2)
    if Y.shape[-2] > 2 * h:
        out = torch.cat([out, Y[..., 2 * h:, :]], dim=-2)
    return out


def _givens_forward(theta: torch.Tensor, d: int, k: int, keep: list | None = None,
                    buffered: bool = False) -> torch.Tensor:
    """Q = G₁(G₂(⋯(G_R E_k))), the last round applied first. The rows are kept in the order of
    the round being applied (:func:`_orders`), so a round is one gather of the rows (from the
    previous round's order) and one batched 2×2 product: O(d k) per round. ``keep``: a list
    that receives each round's output (round R − 1 first), in that round's order.

    ``buffered`` (no autograd): the rounds write into two slabs allocated once, in turn, rather
    than into two new d×k tensors each (on CPU a fresh large tensor costs its page faults,
    measured 2–3× the arithmetic of an elementwise pass); the values are the same."""
    orders = _orders(d, theta.shape[-2], theta.device)
    rounds, h = theta.shape[-2], d // 2
    M = _rotations(theta)
    Z = _eye(d, k, theta).expand(*theta.shape[:-2], d, k)
    if buffered:  # the gathered rows, and the rounds' outputs (each round overwrites it)
        gathered = torch.empty(Z.shape, dtype=Z.dtype, device=Z.device)
        work = torch.empty_like(gathered) if keep is None else None
    previous = None  # inverse of the order Z is in; None: natural order
    for r in reversed(range(rounds)):
        order = orders[r % orders.shape[0]]
        index = order if previous is None else previous[order]
        if buffered:
            rows = torch.index_select(Z, -2, index, out=gathered)
            Z = _mix(M[..., r, :, :, :], rows, h,
                     out=work if keep is None else torch.empty_like(rows))
        else:
            Z = _mix(M[..., r, :, :, :], Z.index_select(-2, index), h)
        if keep is not None:
            keep.append(Z)
        previous = _inverse(order)
    return Z.index_select(-2, previous)


# Rounds' outputs are kept for the backward while they take at most this many bytes; beyond,
# the backward recomputes them (inverse rotations), so memory stays O(d k) for any rounds.
_GIVENS_KEEP_BYTES = 1 << 28


class _Givens(torch.autograd.Function):
    """:func:`givens` with a backward in O(d k) memory for many rounds: the rounds are
    rotations, so the backward can recover each round's input from its output (the transposed
    2×2 products) instead of saving R intermediate d×k slabs; it keeps them when they take at
    most ``_GIVENS_KEEP_BYTES`` (then only the cotangent is carried back). For a pair with
    outputs (z₀, z₁) and cotangents (g₀, g₁), ∂(z₀, z₁)/∂θ = (−z₁, z₀), so
    ∂L/∂θ = g₁·z₀ − g₀·z₁."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, d: int, k: int) -> torch.Tensor:
        batch = math.prod(theta.shape[:-2])
        size = theta.shape[-2] * batch * d * k * theta.element_size()
        keep = [] if size <= _GIVENS_KEEP_BYTES else None
        Q = _givens_forward(theta, d, k, keep, buffered=True)
        ctx.save_for_backward(theta, Q, *(keep or []))
        ctx.d = d
        return Q

    @staticmethod
    def backward(ctx, G: torch.Tensor):
        theta, Q, *kept = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True (a double backward): the kept slabs were made without a
            # graph, so differentiate the plain forward instead — O(R d k) memory.
            with torch.enable_grad():
                Q = _givens_forward(theta, ctx.d, Q.shape[-1])
                (grad,) = torch.autograd.grad(Q, theta, G, create_graph=True)
            return grad, None, None
        return _givens_backward(theta, Q, kept, G, ctx.d), None, None


def _givens_backward(theta: torch.Tensor, Q: torch.Tensor, kept: list, G: torch.Tensor,
                     d: int) -> torch.Tensor:
    """∂L/∂θ of :class:`_Givens` from the output Q (and the rounds' outputs if ``kept``)."""
    h, rounds, k = d // 2, theta.shape[-2], Q.shape[-1]
    orders = _orders(d, theta.shape[-2], theta.device)
    Mt = _rotations(theta).mT
    order = orders[0]
    grad = torch.empty_like(theta)
    # With the rounds' outputs kept, only the cotangent is carried back (kept[-1] is round
    # 0's output, applied last); otherwise outputs and cotangents travel side by side
    # (…, d, 2k): one gather and one product for both, the outputs recovered by the
    # inverse rotations.
    G = G.expand_as(Q)
    W = G if kept else torch.cat([Q, G], dim=-1)
    # Two slabs for the whole loop: a round mixes W into ``mixed``, whose rows are gathered
    # back into W in the next round's order (see ``buffered`` in _givens_forward).
    W = W.index_select(-2, order)
    mixed = torch.empty_like(W)
    for r in range(rounds):  # the first round (r = 0) was applied last
        pairs = W[..., :2 * h, :].unflatten(-2, (h, 2))
        if kept:
            Z, g = kept[rounds - 1 - r][..., :2 * h, :].unflatten(-2, (h, 2)), pairs
        else:
            Z, g = pairs[..., :k], pairs[..., k:]
        outer = g @ Z.mT  # (…, h, 2, 2): g_a · z_b
        grad[..., r, :] = outer[..., 1, 0] - outer[..., 0, 1]
        if r == rounds - 1:
            break
        nxt = orders[(r + 1) % orders.shape[0]]
        _mix(Mt[..., r, :, :, :], W, h, out=mixed)
        torch.index_select(mixed, -2, _inverse(order)[nxt], out=W)
        order = nxt
    return grad


def _butterfly_levels(d: int, b: int) -> int:
    if d % b:
        raise ValueError(f"blocks must describe d = (d/b)·b with b = block size, got {d}/{b}")
    groups = d // b
    levels = groups.bit_length() - 1
    if groups != 1 << levels:
        raise ValueError(f"butterfly needs d/b a power of two (d = b·2^L), got d/b = {groups} "
                         f"(d={d}, b={b})")
    return levels


def butterfly(blocks: torch.Tensor, *, columns: int | None = None,
              check: bool = True) -> torch.Tensor:
    """Butterfly product of block-diagonal orthogonal factors (BOFT, catalogue #80):
    Q = F_{m−1} ⋯ F₁ F₀, F_ℓ = P_ℓᵀ blockdiag(cayley(A_{ℓ,0}), …, cayley(A_{ℓ,d/b−1})) P_ℓ.

    Structure, for block size b (even when m > 1) and d = b·2^L: split the indices into
    2^{L+1} half-blocks of h = b/2 consecutive indices, numbered u. Factor ℓ joins half-block u
    with half-block u XOR 2^ℓ into one block of size b (ℓ = 0: the contiguous blocks, OFT's
    block diagonal; ℓ ≥ 1: the Cooley–Tukey butterfly strides h·2^ℓ). The permutation P_ℓ
    gathers each such pair of half-blocks (lower u first), and block q = hi·2^ℓ + lo holds the
    half-blocks u = hi·2^{ℓ+1} + lo and u + 2^ℓ. With all m = L + 1 = log₂(d/b) + 1 factors
    every output coordinate depends on every input (Q is dense); for b = 2 this is the classic
    butterfly with log₂ d factors of disjoint 2×2 rotations. Parameters: m·(d/b)·b(b − 1)/2.
    m = 1 is OFT's block-diagonal R (then b need not be even). Q is in SO(d).

    Args:
        blocks: skew-symmetric blocks (..., m, d/b, b, b), 1 <= m <= log₂(d/b) + 1.
        columns: first ``columns`` columns only (the factors act on d×k).
        check: ``False`` skips the finiteness and skew-symmetry tests.

    Example::

        >>> import torch
        >>> from diffnum.orth import butterfly
        >>> X = torch.randn(3, 4, 2, 2, dtype=torch.float64,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> Q = butterfly(X - X.mT)  # d = 8, b = 2, m = 3 = log2(8) factors
        >>> Q.shape, bool((Q.abs() > 0).all())  # dense
        (torch.Size([8, 8]), True)
    """
    check = check_flag("check", check)
    if not isinstance(blocks, torch.Tensor) or blocks.ndim < 4:
        got = tuple(blocks.shape) if isinstance(blocks, torch.Tensor) else type(blocks).__name__
        raise ValueError(f"blocks must have shape (..., m, d/b, b, b), got {got}")
    _check_skew("blocks", blocks, check)
    m, groups, b = blocks.shape[-4], blocks.shape[-3], blocks.shape[-1]
    d = groups * b
    levels = _butterfly_levels(d, b) if m > 1 else 0
    if m > levels + 1:
        raise ValueError(f"blocks holds m={m} factors, but d={d}, b={b} has at most "
                         f"log2(d/b) + 1 = {levels + 1}")
    if m > 1 and b % 2:
        raise ValueError(f"butterfly with m={m} > 1 factors needs an even block size, got b={b}")
    k = _columns("columns", columns, d)
    batch = blocks.shape[:-4]
    R = cayley(blocks, check=False)  # (..., m, d/b, b, b)
    Q = _eye(d, k, blocks).expand(*batch, d, k)
    h = b // 2
    for level in range(m):
        if level == 0:
            x = Q.reshape(*batch, groups, b, k)
            Q = (R[..., 0, :, :, :] @ x).reshape(*batch, d, k)
            continue
        # rows u = hi·2^{ℓ+1} + bit·2^ℓ + lo (half-blocks of h rows): gather (hi, lo) blocks.
        stride = 1 << level
        x = Q.reshape(*batch, d // (2 * h * stride), 2, stride, h, k)
        x = x.transpose(-4, -3).reshape(*batch, groups, b, k)
        x = R[..., level, :, :, :] @ x
        x = x.reshape(*batch, d // (2 * h * stride), stride, 2, h, k).transpose(-4, -3)
        Q = x.reshape(*batch, d, k)
    return Q


class _Polar(torch.autograd.Function):
    """Polar factor Q of a tall full-rank X = Q H (H = (XᵀX)^{1/2}) with the backward
    ∇X = Q L⁻¹(QᵀG − GᵀQ) + (I − QQᵀ) G H⁻¹, L(Y) = Y H + H Y, solved in H's eigenbasis:
    finite for repeated singular values (the SVD's own backward is not, e.g. at X = Q)."""

    @staticmethod
    def forward(ctx, X: torch.Tensor) -> torch.Tensor:
        Q = msign(X, method="svd", check=False)
        ctx.save_for_backward(X, Q)
        return Q

    @staticmethod
    def backward(ctx, G: torch.Tensor) -> torch.Tensor:
        # Differentiable ops of X, G and the output Q: a double backward runs through them
        # (through eigh, so not at repeated singular values).
        X, Q = ctx.saved_tensors
        H = Q.mT @ X
        sigma, V = torch.linalg.eigh((H + H.mT) / 2)
        QtG = Q.mT @ G
        C = V.mT @ (QtG - QtG.mT) @ V
        inner = V @ (C / (sigma[..., :, None] + sigma[..., None, :])) @ V.mT
        grad = Q @ inner
        if X.shape[-2] > X.shape[-1]:
            outside = G - Q @ QtG
            grad = grad + outside @ (V / sigma[..., None, :]) @ V.mT
        return grad


def polar(X: torch.Tensor) -> torch.Tensor:
    """Orthogonal polar factor Q = U Vᵀ of X = U Σ Vᵀ (..., n, k): the nearest matrix with
    orthonormal columns (rows when n < k) in the Frobenius and spectral norms.

    Used as a projection (a retraction onto the Stiefel manifold). The value is
    :func:`diffnum.factor.msign` with ``method="svd"``: its Newton–Schulz method converges to
    U Vᵀ only as fast as the smallest singular value allows and Muon's quintic stops in a
    band around 1, while the SVD gives U Vᵀ to rounding (‖QᵀQ − I‖ ~ 1e-15 in float64). The
    backward is custom: with H = QᵀX, ∇X = Q L⁻¹(QᵀG − GᵀQ) + (I − QQᵀ) G H⁻¹,
    L(Y) = YH + HY, which stays finite at repeated singular values (at X = Q, where the SVD's
    own backward is NaN). X must have full rank min(n, k).

    Example::

        >>> import torch
        >>> from diffnum.orth import polar
        >>> X = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> Q = polar(X)
        >>> bool(torch.allclose(Q.mT @ Q, torch.eye(3, dtype=torch.float64), atol=1e-14))
        True
    """
    check_matrix("X", X)
    if X.shape[-2] < X.shape[-1]:
        return _Polar.apply(X.mT).mT
    return _Polar.apply(X)


def skew_from_lower(X: torch.Tensor) -> torch.Tensor:
    """A = L − Lᵀ with L the strictly lower part of the square top of X (..., n, k), padded
    with zero columns to (..., n, n): torch's base-to-skew rule for its orthogonal maps."""
    n, k = X.shape[-2], X.shape[-1]
    L = X.tril(-1)
    if n != k:
        L = torch.cat([L, L.new_zeros(*L.shape[:-1], n - k)], dim=-1)
    return L - L.mT
