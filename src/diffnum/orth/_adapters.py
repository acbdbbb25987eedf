"""Fine-tuning adapters: ``adapt(model, target_modules, method, **options)`` wraps frozen
``nn.Linear`` / ``nn.Conv2d`` layers in trainable adapters that can be merged into the weight
and unmerged from it.

Convention. A layer's weight is read as the matrix W (out, d): d = in_features for a linear
layer, d = in/groups·k₁·k₂ for a convolution (its im2col form, as in :func:`orthogonal`).
Orthogonal adapters act on the input side, W' = W R with R ∈ O(d), so that a linear layer
computes y = x W'ᵀ + b = (x Rᵀ) Wᵀ + b. This side keeps the rows of W (the neurons) at the same
lengths and mutual angles: W' W'ᵀ = W R Rᵀ Wᵀ = W Wᵀ (the hyperspherical energy of OFT).
qGOFT's quasi-Givens form (its default) multiplies by a product R̃ of free 2×2 blocks, kept
near orthogonal by a soft penalty only. Additive adapters (LoRA, PiSSA) add a rank-r matrix,
W' = W + s·B A; SVFT adds U M Vᵀ, a sparse combination of W's own singular vector pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffnum._core.validation import (
    check_count,
    check_flag,
    check_one_of,
    check_positive,
    real_floating_dtype,
)
from diffnum.orth._maps import (
    _inverse,
    _orders,
    _wy_factor,
    butterfly,
    cayley,
    cayley_neumann,
    givens,
    householder,
)

__all__ = [
    "ADAPTERS",
    "Adapter",
    "adapt",
    "adapter_state_dict",
    "load_adapter_state_dict",
    "merge_adapters",
    "orthogonality_penalty",
    "trainable_parameters",
    "unmerge_adapters",
]

#: The ``method`` names :func:`adapt` accepts.
ADAPTERS = ("oft", "hra", "boft", "qgoft", "lora", "pissa", "svft")
_OPTIONS = {
    "oft": ("block_size", "map", "terms", "input_centric"),
    "hra": ("r", "input_centric"),
    "boft": ("block_size", "factors", "input_centric"),
    "qgoft": ("rounds", "relax", "input_centric"),
    "lora": ("r", "alpha"),
    "pissa": ("r", "svd"),
    "svft": ("r", "pattern", "width", "entries", "seed", "svd"),
}
_LAYERS = (nn.Linear, nn.Conv2d)


def _skew_from_vector(theta: torch.Tensor, size: int) -> torch.Tensor:
    """Skew A (..., size, size) whose strict upper triangle holds ``theta`` (..., size(size−1)/2)
    in row-major order (the storage of OFT's and BOFT's blocks: half the entries of a block)."""
    rows, cols = torch.triu_indices(size, size, 1, device=theta.device)
    flat = theta.new_zeros(*theta.shape[:-1], size * size)
    upper = flat.index_copy(-1, rows * size + cols, theta).unflatten(-1, (size, size))
    return upper - upper.mT


def _rotate_blocks(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """x Rᵀ for R = blockdiag(blocks), x (..., q·b), blocks (q, b, b), without forming R:
    OFTv2's input-centric product (catalogue #20), O(d·b) per row instead of O(d²)."""
    q, b = blocks.shape[0], blocks.shape[-1]
    z = x.reshape(*x.shape[:-1], q, b)
    return torch.einsum("...qj,qij->...qi", z, blocks).reshape(x.shape)


class Adapter(nn.Module):
    """A frozen layer (``base_layer``) and a trainable change of its weight, W ↦ W'; the
    layer computes with W'. Made by :func:`adapt` (one subclass per method).

    ``merge()`` writes W' into ``base_layer.weight`` and the forward becomes the base layer's
    own; ``unmerge()`` writes W back (orthogonal adapters: W' Rᵀ = W R Rᵀ; Cayley–Neumann,
    which is orthogonal only approximately: W' R⁻¹ by a solve; additive: W' − s·B A), so the
    round trip is exact to rounding (relaxed ``qgoft``: W' R̃⁻¹ with its 2×2 blocks inverted
    in closed form; ``svft``: W' − U M Vᵀ). Adapter tensors are the module's own parameters
    (``named_parameters(recurse=False)``); ``adapted_weight()`` is W' (differentiable).

    Example::

        >>> import torch
        >>> from diffnum.orth import Adapter, adapt
        >>> model = adapt(torch.nn.Sequential(torch.nn.Linear(8, 4)), ["0"], "oft", block_size=4)
        >>> isinstance(model[0], Adapter), model[0].merged
        (True, False)
        >>> model[0].merge().merged
        True
    """

    method = ""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.merged = False
        weight = base_layer.weight
        self.out_features = weight.shape[0]
        self.in_size = math.prod(weight.shape[1:])

    def _matrix(self) -> torch.Tensor:
        return self.base_layer.weight.reshape(self.out_features, self.in_size)

    def _adapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _unadapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _linear_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.adapted_weight(), self.base_layer.bias)

    def adapted_weight(self) -> torch.Tensor:
        """W' in the shape of ``base_layer.weight`` (the weight itself once merged)."""
        weight = self.base_layer.weight
        if self.merged:
            return weight
        return self._adapt_matrix(self._matrix()).reshape(weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        if isinstance(self.base_layer, nn.Linear):
            return self._linear_forward(x)
        return self.base_layer._conv_forward(x, self.adapted_weight(), self.base_layer.bias)

    @torch.no_grad()
    def merge(self) -> Adapter:
        """Fold the adapter into ``base_layer.weight`` (W ← W'); the forward is then the base
        layer's. Raises ``RuntimeError`` if already merged. Returns ``self``."""
        if self.merged:
            raise RuntimeError(f"{type(self).__name__} is already merged; unmerge() first")
        weight = self.base_layer.weight
        weight.copy_(self._adapt_matrix(self._matrix()).reshape(weight.shape))
        self.merged = True
        return self

    @torch.no_grad()
    def unmerge(self) -> Adapter:
        """Undo :meth:`merge` (W ← W' with the adapter taken out). Raises ``RuntimeError`` if
        not merged. Returns ``self``."""
        if not self.merged:
            raise RuntimeError(f"{type(self).__name__} is not merged; merge() first")
        weight = self.base_layer.weight
        weight.copy_(self._unadapt_matrix(self._matrix()).reshape(weight.shape))
        self.merged = False
        return self

    def extra_repr(self) -> str:
        return f"method={self.method!r}, merged={self.merged}"


class _OrthogonalAdapter(Adapter):
    """W' = W R, R ∈ O(d) from the adapter's parameters; R = I at initialization."""

    def __init__(self, base_layer: nn.Module, input_centric: bool) -> None:
        super().__init__(base_layer)
        # Convolutions always compute with W' (rotating im2col patches would need unfold).
        self.input_centric = input_centric and isinstance(base_layer, nn.Linear)

    def rotation(self) -> torch.Tensor:
        """R (d, d), dense."""
        raise NotImplementedError

    def rotate_input(self, x: torch.Tensor) -> torch.Tensor:
        """x Rᵀ for x (..., d)."""
        return x @ self.rotation().mT

    def _adapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return M @ self.rotation()

    def _unadapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return M @ self.rotation().mT

    def _linear_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_centric:  # y = (x Rᵀ) Wᵀ + b: R is never multiplied into W
            return self.base_layer(self.rotate_input(x))
        return super()._linear_forward(x)


class _OFT(_OrthogonalAdapter):
    method = "oft"

    def __init__(self, base_layer: nn.Module, block_size: int, map: str, terms: int,
                 input_centric: bool) -> None:
        super().__init__(base_layer, input_centric)
        self.block_size, self.map, self.terms = block_size, map, terms
        b = block_size
        weight = base_layer.weight
        self.skew = nn.Parameter(weight.new_zeros(self.in_size // b, b * (b - 1) // 2))

    def blocks(self) -> torch.Tensor:
        """The diagonal blocks of R, (d/b, b, b)."""
        A = _skew_from_vector(self.skew, self.block_size)
        if self.map == "cayley":
            return cayley(A, check=False)
        return cayley_neumann(A, self.terms, check=False)

    def rotation(self) -> torch.Tensor:
        return torch.block_diag(*self.blocks())

    def rotate_input(self, x: torch.Tensor) -> torch.Tensor:
        return _rotate_blocks(x, self.blocks())

    def _adapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        # By column blocks: (W R)_{:, q} = W_{:, q} B_q.
        blocks = self.blocks()
        q, b = blocks.shape[0], self.block_size
        return (M.reshape(-1, q, b).transpose(0, 1) @ blocks).transpose(0, 1).reshape(M.shape)

    def _unadapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        if self.map == "cayley":
            return super()._unadapt_matrix(M)
        # Cayley–Neumann's R is orthogonal only to O(‖A‖^k): invert it instead of transposing.
        return torch.linalg.solve(self.rotation(), M, left=False)

    def extra_repr(self) -> str:
        terms = f", terms={self.terms}" if self.map == "cayley_neumann" else ""
        return (f"{super().extra_repr()}, block_size={self.block_size}, map={self.map!r}"
                f"{terms}, input_centric={self.input_centric}")


class _HRA(_OrthogonalAdapter):
    method = "hra"

    def __init__(self, base_layer: nn.Module, r: int, input_centric: bool) -> None:
        super().__init__(base_layer, input_centric)
        weight = base_layer.weight
        # Pairs of equal unit vectors, v_{2i} = v_{2i+1}: H(v)H(v) = I, so R = I at the start
        # (to rounding of the compact WY form), and the pairs separate as training moves them.
        half = torch.randn(self.in_size, r // 2, dtype=weight.dtype, device=weight.device)
        half = half / torch.linalg.vector_norm(half, dim=0)
        self.vectors = nn.Parameter(half.repeat_interleave(2, dim=1))

    def rotation(self) -> torch.Tensor:
        return householder(self.vectors, check=False)

    def rotate_input(self, x: torch.Tensor) -> torch.Tensor:
        # x Rᵀ = x (I − V T Vᵀ)ᵀ = x − ((x V) Tᵀ) Vᵀ: O(d r) per row.
        V = self.vectors
        return x - ((x @ V) @ _wy_factor(V).mT) @ V.mT

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r={self.vectors.shape[1]}, "
                f"input_centric={self.input_centric}")


class _BOFT(_OrthogonalAdapter):
    method = "boft"

    def __init__(self, base_layer: nn.Module, block_size: int, factors: int,
                 input_centric: bool) -> None:
        super().__init__(base_layer, input_centric)
        b = self.block_size = block_size
        weight = base_layer.weight
        self.skew = nn.Parameter(weight.new_zeros(factors, self.in_size // b, b * (b - 1) // 2))

    def rotation(self) -> torch.Tensor:
        return butterfly(_skew_from_vector(self.skew, self.block_size), check=False)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, block_size={self.block_size}, "
                f"factors={self.skew.shape[0]}, input_centric={self.input_centric}")


class _QGOFT(_OrthogonalAdapter):
    """GOFT, qGOFT's strict form (``relax=False``): W' = W G₁⋯G_R, exact Givens rounds."""

    method = "qgoft"
    relax = False

    def __init__(self, base_layer: nn.Module, rounds: int, input_centric: bool) -> None:
        super().__init__(base_layer, input_centric)
        weight = base_layer.weight
        self.angles = nn.Parameter(weight.new_zeros(rounds, self.in_size // 2))

    def rotation(self) -> torch.Tensor:
        return givens(self.angles, self.in_size)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, rounds={self.angles.shape[0]}, relax=False, "
                f"input_centric={self.input_centric}")


def _pair_rounds(X: torch.Tensor, blocks: torch.Tensor, rounds: Iterable[int]) -> torch.Tensor:
    """X P_{r₁} P_{r₂} ⋯ for the rounds r₁, r₂, … in the order given, X (..., d): P_r is the
    identity but for the 2×2 block ``blocks[r, p]`` in rows/columns (i, j) of pair p of round r
    of :func:`givens_schedule` (round r mod R_full, as :func:`givens`). Right-multiplying by P_r
    maps the columns (x_i, x_j) of every pair to (x_i, x_j) B_{r,p}; the pairs of a round are
    disjoint, so a round is one gather, one batched 2×2 product and one scatter: O(d) per row,
    never a d×d product."""
    d, h = X.shape[-1], blocks.shape[-3]
    orders = _orders(d, blocks.shape[0], X.device)
    for r in rounds:
        order = orders[r % orders.shape[0]]  # pairs (i₀, j₀, i₁, j₁, …), then the bye (odd d)
        Z = X.index_select(-1, order)
        mixed = torch.einsum("...pa,pab->...pb", Z[..., :2 * h].unflatten(-1, (h, 2)),
                             blocks[r]).flatten(-2)
        X = torch.cat([mixed, Z[..., 2 * h:]], dim=-1).index_select(-1, _inverse(order))
    return X


class _QuasiGOFT(_OrthogonalAdapter):
    """qGOFT (``relax=True``): W' = W R̃, R̃ = P₀ P₁ ⋯ P_{R−1}, every Givens 2×2 block
    replaced by a free 2×2 block B_{r,p} (Ma et al. 2024, Eq. 5), identity at the start.
    R̃ is orthogonal only while every block is; :meth:`orthogonality_penalty` is the paper's
    soft constraint. ``rotation()`` is R̃ (dense), the name shared with the orthogonal
    adapters."""

    method = "qgoft"
    relax = True

    def __init__(self, base_layer: nn.Module, rounds: int, input_centric: bool) -> None:
        super().__init__(base_layer, input_centric)
        weight = base_layer.weight
        eye = torch.eye(2, dtype=weight.dtype, device=weight.device)
        self.blocks = nn.Parameter(eye.expand(rounds, self.in_size // 2, 2, 2).clone())

    def _rounds(self) -> range:
        return range(self.blocks.shape[0])

    def rotation(self) -> torch.Tensor:
        eye = torch.eye(self.in_size, dtype=self.blocks.dtype, device=self.blocks.device)
        return _pair_rounds(eye, self.blocks, self._rounds())

    def rotate_input(self, x: torch.Tensor) -> torch.Tensor:
        # x R̃ᵀ = x P_{R−1}ᵀ ⋯ P₀ᵀ: the transposed blocks, last round first.
        return _pair_rounds(x, self.blocks.mT, reversed(self._rounds()))

    def _adapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return _pair_rounds(M, self.blocks, self._rounds())

    def _unadapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        # W' R̃⁻¹ = W' P_{R−1}⁻¹ ⋯ P₀⁻¹, each block inverted in closed form.
        B = self.blocks
        det = B[..., 0, 0] * B[..., 1, 1] - B[..., 0, 1] * B[..., 1, 0]
        if not bool(torch.isfinite(det).all()) or bool((det == 0).any()):
            raise RuntimeError("a quasi-Givens block of this qgoft adapter is singular: the "
                               "merged weight cannot be unmerged")
        adj = torch.stack([B[..., 1, 1], -B[..., 0, 1], -B[..., 1, 0], B[..., 0, 0]], dim=-1)
        inverse = (adj / det[..., None]).unflatten(-1, (2, 2))
        return _pair_rounds(M, inverse, reversed(self._rounds()))

    def orthogonality_penalty(self) -> torch.Tensor:
        """Σ_{r,p} ⟨α_{r,p}, β_{r,p}⟩², the two vectors of every block (the rows of B here,
        the columns of the paper's G̃ = Bᵀ): zero exactly when every block has orthogonal
        rows, B Bᵀ diagonal."""
        B = self.blocks
        return (B[..., 0, :] * B[..., 1, :]).sum(-1).square().sum()

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, rounds={self.blocks.shape[0]}, relax=True, "
                f"input_centric={self.input_centric}")


class _LowRank(Adapter):
    """W' = W + s·B A with A (r, d), B (out, r): LoRA (B = 0 at the start, s = α/r) and PiSSA
    (A, B from the top-r singular triplets, s = 1, W replaced by the residual)."""

    def __init__(self, base_layer: nn.Module, method: str, r: int, alpha: float | None,
                 svd: str) -> None:
        super().__init__(base_layer)
        self.method = method
        weight = base_layer.weight
        if method == "lora":
            self.scale = (r if alpha is None else alpha) / r
            A = weight.new_empty(r, self.in_size)
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))  # torch's nn.Linear init, as PEFT
            B = weight.new_zeros(self.out_features, r)
        else:
            self.scale = 1.0
            B, A = _principal_factors(self._matrix().detach(), r, svd)
            with torch.no_grad():
                weight.sub_((B @ A).reshape(weight.shape))  # the frozen residual W − B A
        self.lora_A = nn.Parameter(A)
        self.lora_B = nn.Parameter(B)

    def delta(self) -> torch.Tensor:
        """s·B A (out, d)."""
        return self.scale * (self.lora_B @ self.lora_A)

    def _adapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return M + self.delta()

    def _unadapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return M - self.delta()

    def _linear_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.scale * ((x @ self.lora_A.mT) @ self.lora_B.mT)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.lora_A.shape[0]}, scale={self.scale:g}"


def _top_singular(W: torch.Tensor, r: int, svd: str, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-r singular triplets U_r (out, r), σ (r,), V_rᵀ (r, d) of W (PiSSA, SVFT):
    ``svd="exact"`` by ``torch.linalg.svd``, ``"randomized"`` by :func:`diffnum.factor.rsvd`
    (oversampling 10, two power iterations, ``generator`` or torch's global generator)."""
    if svd == "exact":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        return U[:, :r], S[:r], Vh[:r]
    from diffnum.factor import rsvd

    return rsvd(W, r, generator=generator)


def _principal_factors(W: torch.Tensor, r: int, svd: str) -> tuple[torch.Tensor, torch.Tensor]:
    """B = U_r Σ_r^{1/2}, A = Σ_r^{1/2} V_rᵀ from the top-r singular triplets of W (PiSSA)."""
    U, S, Vh = _top_singular(W, r, svd)
    root = S.sqrt()
    return (U * root).contiguous(), (root[:, None] * Vh).contiguous()


# The sparsity patterns of SVFT's M (Lingam et al. 2024, Sec. 3.1).
_SVFT_PATTERNS = ("plain", "banded", "random", "topk")


def _svft_pattern(pattern: str, r: int, width: int, entries: int, seed: int,
                  U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, column) indices, row-major, of the learnable entries of the r×r matrix M."""
    if pattern == "plain":
        flat = torch.arange(r) * (r + 1)
    elif pattern == "banded":
        i, j = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
        flat = torch.nonzero(((i - j).abs() <= width).flatten()).squeeze(-1)
    elif pattern == "random":
        g = torch.Generator().manual_seed(seed)
        flat = torch.randperm(r * r, generator=g)[:entries].sort().values
    else:  # topk: the k largest alignments |u_iᵀ v_j| (sign-free: a singular pair's sign is
        # arbitrary, and flipping u_i flips every u_iᵀ v_j of its row)
        align = (U.mT @ V).abs().flatten().cpu()
        flat = torch.sort(align, descending=True, stable=True).indices[:entries].sort().values
    device = U.device
    return (flat // r).to(device), (flat % r).to(device)


class _SVFT(Adapter):
    """W' = W + U M Vᵀ with U (out, r), V (d, r) the top-r singular vectors of W (frozen
    buffers) and M (r, r) zero but for the learnable ``coefficients`` at (``rows``,
    ``cols``)."""

    method = "svft"

    def __init__(self, base_layer: nn.Module, r: int, pattern: str, width: int, entries: int,
                 seed: int, svd: str) -> None:
        super().__init__(base_layer)
        self.pattern = pattern
        W = self._matrix().detach()
        generator = torch.Generator(device=W.device).manual_seed(seed)
        U, _, Vh = _top_singular(W, r, svd, generator)
        # A singular pair (u_i, v_i) is defined up to a common sign, which LAPACK picks
        # differently across dtypes and builds, and u_i v_jᵀ (i ≠ j) sees it: fix it so that
        # the largest-magnitude entry of every u_i is positive, and saved coefficients mean the
        # same update wherever the SVD is recomputed.
        peak = U.gather(0, U.abs().argmax(0, keepdim=True))
        sign = torch.where(peak < 0, -1.0, 1.0).to(U.dtype)
        U, V = (U * sign).contiguous(), (Vh.mT * sign).contiguous()
        rows, cols = _svft_pattern(pattern, r, width, entries, seed, U, V)
        self.register_buffer("U", U)
        self.register_buffer("V", V)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.coefficients = nn.Parameter(W.new_zeros(rows.numel()))

    def coefficient_matrix(self) -> torch.Tensor:
        """M (r, r): the coefficients at their pattern's entries, zero elsewhere."""
        r = self.U.shape[1]
        M = self.coefficients.new_zeros(r, r)
        return M.index_put((self.rows, self.cols), self.coefficients)

    def delta(self) -> torch.Tensor:
        """U M Vᵀ (out, d)."""
        return (self.U @ self.coefficient_matrix()) @ self.V.mT

    def _adapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return M + self.delta()

    def _unadapt_matrix(self, M: torch.Tensor) -> torch.Tensor:
        return M - self.delta()

    def _linear_forward(self, x: torch.Tensor) -> torch.Tensor:
        # x W'ᵀ + b = x Wᵀ + b + ((x V) Mᵀ) Uᵀ: O((d + out)·r + |Ω|) per row beyond the base.
        return self.base_layer(x) + ((x @ self.V) @ self.coefficient_matrix().mT) @ self.U.mT

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r={self.U.shape[1]}, pattern={self.pattern!r}, "
                f"entries={self.coefficients.numel()}")


def _svft_options(options: dict, out: int, d: int, where: str) -> dict:
    """SVFT's options for a weight ``(out, d)`` (``where`` names the layer in errors): rank,
    pattern of the coefficient matrix, SVD, seed, band width and entries, in that order."""
    o: dict = {}
    r = o["r"] = check_count("r", options.get("r", min(out, d)), high=min(out, d))
    o["pattern"] = options.get("pattern", "plain")
    check_one_of("pattern", o["pattern"], _SVFT_PATTERNS)
    o["svd"] = options.get("svd", "exact")
    check_one_of("svd", o["svd"], ("exact", "randomized"))
    o["seed"] = check_count("seed", options.get("seed", 0), low=0, high=2**63 - 1)
    if "width" in options and o["pattern"] != "banded":
        raise TypeError("width applies to pattern='banded' only")
    if "entries" in options and o["pattern"] not in ("random", "topk"):
        raise TypeError("entries applies to pattern='random' and pattern='topk' only")
    o["width"] = 0
    if o["pattern"] == "banded":
        if r < 2:
            raise ValueError(f"pattern='banded' needs r >= 2 for off-diagonals, got r={r} "
                             f"for {where}")
        o["width"] = check_count("width", options.get("width", min(2, r - 1)), high=r - 1)
    o["entries"] = r
    if o["pattern"] in ("random", "topk"):
        o["entries"] = check_count("entries", options.get("entries", r), high=r * r)
    if o["pattern"] == "topk" and out != d:
        raise ValueError(f"pattern='topk' ranks the alignments u_iᵀv_j of left and right "
                         f"singular vectors, which needs a square weight; {where} is not")
    return o


def _checked_options(method: str, options: dict, name: str, layer: nn.Module) -> dict:
    """The constructor arguments for one layer, defaults filled in, or an error naming the
    option (and the layer ``name`` when the option does not fit its size)."""
    unknown = sorted(set(options) - set(_OPTIONS[method]))
    if unknown:
        raise TypeError(f"adapt(method={method!r}) got unexpected option(s) {unknown}; it "
                        f"takes {list(_OPTIONS[method])}")
    weight = layer.weight
    real_floating_dtype(f"{name}.weight", weight)
    out, d = weight.shape[0], math.prod(weight.shape[1:])
    where = f"layer {name!r} (weight as a matrix ({out}, {d}))"
    o = {}
    if "input_centric" in _OPTIONS[method]:
        o["input_centric"] = check_flag("input_centric", options.get("input_centric", True))
    if method in ("oft", "boft"):
        b = check_count("block_size", options.get("block_size", 32 if method == "oft" else 4))
        if d % b:
            raise ValueError(f"block_size must divide the input size d={d} of {where}, got {b}")
        o["block_size"] = b
    if method == "oft":
        o["map"] = options.get("map", "cayley")
        check_one_of("map", o["map"], ("cayley", "cayley_neumann"))
        if "terms" in options and o["map"] != "cayley_neumann":
            raise TypeError("terms applies to map='cayley_neumann' only")
        o["terms"] = check_count("terms", options.get("terms", 5), high=10_000)
    elif method == "boft":
        b, groups = o["block_size"], d // o["block_size"]
        dense = groups & (groups - 1) == 0 and b % 2 == 0
        top = groups.bit_length() if dense else 1  # log2(d/b) + 1
        if "factors" not in options and top == 1 and groups > 1:
            raise ValueError(f"boft needs an even block_size with d/block_size a power of two "
                             f"for butterfly factors; {where} has d={d}, block_size={b}: pass "
                             f"factors=1 for a block-diagonal R (OFT)")
        o["factors"] = check_count("factors", options.get("factors", top), high=top)
    elif method == "hra":
        r = check_count("r", options.get("r", 8), low=2, high=max(d, 2))
        if r % 2 or r > d:
            raise ValueError(f"r must be even (reflections come in equal pairs, R = I at the "
                             f"start) and <= d={d} for {where}, got {r}")
        o["r"] = r
    elif method == "qgoft":
        if d < 2:
            raise ValueError(f"qgoft needs an input size d >= 2, {where} has d={d}")
        full = d - 1 + d % 2
        default = min(full, max(1, math.ceil(math.log2(d))))
        o["rounds"] = check_count("rounds", options.get("rounds", default), high=full)
        o["relax"] = check_flag("relax", options.get("relax", True))
    elif method == "svft":
        o.update(_svft_options(options, out, d, where))
    elif method in ("lora", "pissa"):
        o["r"] = check_count("r", options.get("r", 8), high=min(out, d))
        if method == "lora":
            alpha = options.get("alpha")
            o["alpha"] = None if alpha is None else check_positive("alpha", alpha)
            o["svd"] = "exact"
        else:
            o["svd"] = options.get("svd", "exact")
            check_one_of("svd", o["svd"], ("exact", "randomized"))
            o["alpha"] = None
    return o


def _make_adapter(method: str, layer: nn.Module, o: dict) -> Adapter:
    if method == "oft":
        return _OFT(layer, o["block_size"], o["map"], o["terms"], o["input_centric"])
    if method == "hra":
        return _HRA(layer, o["r"], o["input_centric"])
    if method == "boft":
        return _BOFT(layer, o["block_size"], o["factors"], o["input_centric"])
    if method == "qgoft":
        kind = _QuasiGOFT if o["relax"] else _QGOFT
        return kind(layer, o["rounds"], o["input_centric"])
    if method == "svft":
        return _SVFT(layer, o["r"], o["pattern"], o["width"], o["entries"], o["seed"], o["svd"])
    return _LowRank(layer, method, o["r"], o["alpha"], o["svd"])


def _targets(model: nn.Module, target_modules: object) -> list[str]:
    if isinstance(target_modules, str) or not isinstance(target_modules, Sequence):
        raise TypeError(f"target_modules must be a list of module names or name suffixes, "
                        f"got {target_modules!r}")
    if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
        raise TypeError(f"target_modules must be a non-empty list of non-empty str, got "
                        f"{list(target_modules)!r}")
    names = [n for n, _ in model.named_modules() if n]
    chosen, unknown = {}, []
    for target in target_modules:
        hits = [n for n in names if n == target or n.endswith("." + target)]
        if not hits:
            unknown.append(target)
        chosen.update(dict.fromkeys(hits))
    if unknown:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(f"target_modules names no module of the model: {unknown}; its "
                         f"modules are {shown}")
    return list(chosen)


def adapt(model: nn.Module, target_modules: Sequence[str], method: str = "oft",
          **options: object) -> nn.Module:
    """Wrap the targeted ``nn.Linear`` / ``nn.Conv2d`` layers of ``model`` in adapters and
    freeze everything else: afterwards only adapter tensors require grad.

    The layer's weight is the matrix W (out, d) (a convolution's (out, in/groups·k·k)); each
    method starts at W' = W, so the adapted model computes what the original did:

    - ``oft`` (catalogue #20): W R, R = blockdiag(R₁, …, R_{d/b}), R_q = cayley(A_q), A_q skew
      b×b. Options ``block_size`` b (32, must divide d), ``map`` ("cayley" or
      "cayley_neumann"), ``terms`` (5, Cayley–Neumann only), ``input_centric`` (True).
    - ``hra`` (catalogue #9): W H(v₁)⋯H(v_r) in compact WY form. Options ``r`` (8, even,
      2 ≤ r ≤ d), ``input_centric``.
    - ``boft`` (catalogue #80): W F_{m−1}⋯F₀, the butterfly of :func:`butterfly`. Options
      ``block_size`` b (4), ``factors`` m (all log₂(d/b) + 1: R dense; d/b must be a power of
      two and b even unless ``factors=1``), ``input_centric``.
    - ``qgoft`` (catalogue #2; Ma et al., "Parameter Efficient Quasi-Orthogonal Fine-Tuning
      via Givens Rotation", ICML 2024, arXiv:2404.04316): W P₀ P₁ ⋯ P_{R−1}, R rounds of
      disjoint coordinate pairs (the schedule of :func:`givens`), P_r the identity but for a
      2×2 block B_{r,p} on the rows/columns (i, j) of each pair p. With ``relax=True`` (the
      default: the paper's qGOFT, Sec. 4.2, Eq. 5) every block is a free 2×2 matrix with 4
      parameters, tensor ``blocks`` (R, ⌊d/2⌋, 2, 2), identity at the start (App. B,
      Alg. 1): its two row vectors α, β (the columns of the paper's G̃ = Bᵀ, our W' = W R̃
      being the transpose of its R W) take free lengths (norm adjustment) and a free angle
      between them (angular adjustment), softly pulled back to ⟨α, β⟩ = 0 by
      :func:`orthogonality_penalty` (Σ⟨α, β⟩², weight λ in the loss: the caller adds it).
      A neuron w's coordinates (w_i, w_j) become (w_i, w_j) B, of squared length
      (w_i, w_j) B Bᵀ (w_i, w_j)ᵀ, B Bᵀ = [[‖α‖², ⟨α, β⟩], [⟨α, β⟩, ‖β‖²]] (Eq. 6).
      ``relax=False`` is the paper's strict GOFT (Sec. 4.1): B = [[cos θ, −sin θ],
      [sin θ, cos θ]], tensor ``angles`` (R, ⌊d/2⌋) at θ = 0, R exactly orthogonal.
      Options ``rounds`` (⌈log₂ d⌉, at most d − 1, or d for odd d, which spans SO(d)),
      ``relax`` (True), ``input_centric``. Unlike the paper's Eq. 3 (rounds of d/2, d/4, …
      pairs, d − 1 in all) every round here holds ⌊d/2⌋ pairs of the round-robin schedule.
    - ``lora``: W + (α/r) B A, A (r, d), B (out, r). Options ``r`` (8, ≤ min(out, d)),
      ``alpha`` (r).
    - ``pissa`` (catalogue-001 [93]; the spectral adapters #30, #61 start from the same split):
      W_res + B A from the top-r SVD of W. Options ``r`` (8), ``svd`` ("exact" or "randomized").
    - ``svft`` (Lingam et al., "SVFT: Parameter-Efficient Fine-Tuning with Singular Vectors",
      arXiv:2405.19597, Sec. 3.1, Eq. 1): W + U M Vᵀ = U_r(Σ_r + M)V_rᵀ + (the rest of W),
      U (out, r), V (d, r) the top-r singular vectors of W (frozen buffers ``U``, ``V``), M
      (r, r) zero but for the learnable ``coefficients`` on a fixed pattern Ω (buffers
      ``rows``, ``cols``), all zero at the start (W' = W exactly). ``pattern``: "plain"
      (M diagonal: r coefficients, a change of the singular values), "banded" (|i − j| ≤
      ``width`` (2): r(2w + 1) − w(w + 1) coefficients), "random" (``entries`` (r) entries
      drawn with ``seed`` (0)), "topk" (the ``entries`` largest |u_iᵀv_j|, square weights
      only; the paper says "top-k alignments u_iᵀv_j" — the absolute value is this
      package's reading, since the sign of a singular pair is arbitrary). Options ``r``
      (min(out, d), the paper's full-rank setting; smaller r truncates, App. C.3),
      ``pattern`` ("plain"), ``width``, ``entries``, ``seed`` (the random pattern and the
      randomized SVD), ``svd`` ("exact" or "randomized").

    Orthogonal methods (R acts on the input side, W' = W R) keep the rows of W — the
    neurons — at their lengths and mutual angles (W'W'ᵀ = W Wᵀ): OFT's preserved
    hyperspherical energy. Relaxed ``qgoft`` does not keep them: a block with orthogonal rows
    is B = D Q (D diagonal, Q orthogonal), which scales coordinates, and the penalty is soft.
    Their parameters start
    at R = I: the skew parameters of ``oft`` and ``boft`` and the angles of strict ``qgoft``
    at zero, relaxed ``qgoft``'s blocks at I (R = I exactly); ``hra`` starts with
    r/2 random unit vectors, each repeated (v_{2i} = v_{2i+1}, so H(v)H(v) = I and R = I to
    rounding), and needs an even r ≤ d. ``map="cayley_neumann"`` (OFTv2) replaces the solve by
    ``terms`` Neumann terms (not exactly orthogonal: ‖R_qᵀR_q − I‖₂ = ‖A_q‖₂^{2·terms} for odd
    ``terms``). ``input_centric=True``
    (default) evaluates a linear layer as y = (x Rᵀ) Wᵀ + b without forming W R (for ``oft``
    blockwise, for ``hra`` as x − ((x V) Tᵀ) Vᵀ, for relaxed ``qgoft`` round by round);
    convolutions always use W'. ``lora`` starts
    A as torch's ``nn.Linear`` init and B at zero. ``pissa`` splits W = W_res + B A with
    B = U_r Σ_r^{1/2}, A = Σ_r^{1/2} V_rᵀ (``svd="exact"``: ``torch.linalg.svd``;
    ``"randomized"``: :func:`diffnum.factor.rsvd`, for large layers) and replaces the frozen
    weight by W_res (so W' = W only to rounding).

    Args:
        model: the model, changed in place.
        target_modules: names of submodules, or suffixes of them after a dot
            (``["q_proj", "layers.0.fc"]``, as PEFT); every entry must match a module.
        method: one of ``ADAPTERS``.
        **options: the method's options (list above); others raise ``TypeError``.

    Returns:
        ``model``, with each target replaced by an :class:`Adapter` holding it as
        ``base_layer``.

    Example::

        >>> import torch
        >>> from diffnum.orth import adapt, trainable_parameters
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(),
        ...                             torch.nn.Linear(16, 4))
        >>> x = torch.randn(3, 16)
        >>> y = model(x)
        >>> model = adapt(model, ["0", "2"], "oft", block_size=4)
        >>> trainable_parameters(model)  # (16/4 blocks)·(4·3/2) per layer
        48
        >>> torch.equal(model(x), y)  # R = I at the start
        True
        >>> qgoft = adapt(torch.nn.Sequential(torch.nn.Linear(16, 8)), ["0"], "qgoft")
        >>> trainable_parameters(qgoft)  # ⌈log₂ 16⌉ = 4 rounds of 8 free 2×2 blocks
        128
        >>> trainable_parameters(adapt(torch.nn.Sequential(torch.nn.Linear(16, 8)), ["0"],
        ...                            "qgoft", relax=False))  # GOFT: one angle per block
        32
        >>> svft = adapt(torch.nn.Sequential(torch.nn.Linear(16, 8)), ["0"], "svft",
        ...              pattern="banded", width=2)
        >>> trainable_parameters(svft)  # r = min(8, 16) = 8: 8·(2·2 + 1) − 2·3
        34
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_one_of("method", method, ADAPTERS)
    names = _targets(model, target_modules)
    prepared = []
    for name in names:
        layer = model.get_submodule(name)
        parts = name.split(".")
        inside = [".".join(parts[:i]) for i in range(1, len(parts))]
        if isinstance(layer, Adapter) or any(isinstance(model.get_submodule(n), Adapter)
                                             for n in inside):
            raise ValueError(f"target_modules: {name!r} is already an adapter or inside one; "
                             f"adapt each layer once")
        if type(layer) not in _LAYERS:
            raise TypeError(f"target_modules: {name!r} is a {type(layer).__name__}; adapters "
                            f"wrap nn.Linear and nn.Conv2d")
        prepared.append((name, layer, _checked_options(method, options, name, layer)))
    # Every check passed: only now change the model.
    model.requires_grad_(False)
    for name, layer, o in prepared:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, _make_adapter(method, layer, o))
    return model


def _adapters(model: nn.Module) -> list[tuple[str, Adapter]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(n, m) for n, m in model.named_modules() if isinstance(m, Adapter)]


def _adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{name}.{p_name}" if name else p_name: p
            for name, module in _adapters(model)
            for p_name, p in module.named_parameters(recurse=False)}


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of ``model`` alone (detached copies), keyed as in
    ``model.state_dict()``; the frozen base weights are not included.

    For ``pissa`` the base weight holds the residual W_res, which a fresh ``adapt`` of the
    same base model recomputes; the state holds A and B. For ``svft`` the singular vectors U, V
    are buffers, outside this state: a fresh ``adapt`` recomputes them from the same base
    weight, each pair's sign fixed (largest-magnitude entry of u_i positive) so that the
    coefficients mean the same update for any LAPACK build and dtype (the pairs of repeated
    singular values are not unique; such a weight needs the full ``model.state_dict()``).

    Example::

        >>> import torch
        >>> from diffnum.orth import adapt, adapter_state_dict
        >>> model = adapt(torch.nn.Sequential(torch.nn.Linear(8, 8)), ["0"], "lora", r=2)
        >>> sorted(adapter_state_dict(model))
        ['0.lora_A', '0.lora_B']
    """
    return {k: p.detach().clone() for k, p in _adapter_parameters(model).items()}


def load_adapter_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]
                            ) -> nn.Module:
    """Copy the tensors of :func:`adapter_state_dict` into the adapters of ``model`` (adapted
    with the same targets, method and sizes). The keys must match exactly and no adapter may
    be merged, else ``ValueError``. Returns ``model``.

    Example::

        >>> import torch
        >>> from diffnum.orth import adapt, adapter_state_dict, load_adapter_state_dict
        >>> a = adapt(torch.nn.Sequential(torch.nn.Linear(8, 8)), ["0"], "hra", r=2)
        >>> b = adapt(torch.nn.Sequential(torch.nn.Linear(8, 8)), ["0"], "hra", r=2)
        >>> _ = load_adapter_state_dict(b, adapter_state_dict(a))
        >>> torch.equal(a[0].vectors, b[0].vectors)
        True
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got "
                        f"{type(state_dict).__name__}")
    params = _adapter_parameters(model)
    missing, unexpected = sorted(set(params) - set(state_dict)), sorted(set(state_dict)
                                                                       - set(params))
    if missing or unexpected:
        raise ValueError(f"state_dict does not match the model's adapters: missing {missing}, "
                         f"unexpected {unexpected}")
    merged = [n for n, m in _adapters(model) if m.merged]
    if merged:
        raise ValueError(f"model has merged adapters {merged}; unmerge them before loading")
    for key, p in params.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor) or value.shape != p.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"state_dict[{key!r}] must have shape {tuple(p.shape)}, got {got}")
    with torch.no_grad():
        for key, p in params.items():
            p.copy_(state_dict[key])
    return model


def trainable_parameters(model: nn.Module) -> int:
    """The number of scalars in parameters of ``model`` that require grad.

    Example::

        >>> import torch
        >>> from diffnum.orth import adapt, trainable_parameters
        >>> model = adapt(torch.nn.Sequential(torch.nn.Linear(10, 6)), ["0"], "lora", r=2)
        >>> trainable_parameters(model)  # A (2, 10) and B (6, 2)
        32
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def orthogonality_penalty(model: nn.Module) -> torch.Tensor:
    """qGOFT's soft orthogonality regularizer (Ma et al. 2024, Sec. 4.2 and Alg. 1, line 8):
    Σ over the ``qgoft`` adapters with ``relax=True`` of Σ_{r,p} ⟨α_{r,p}, β_{r,p}⟩², the
    inner product of the two vectors of every quasi-Givens 2×2 block. Add λ times it to the
    training loss (the paper tunes λ in {0.001, …, 0.5}; 0.001–0.05 in its experiments). A
    scalar tensor, differentiable in the blocks; zero (a plain ``0.0`` tensor) when the model
    has no such adapter.

    Example::

        >>> import torch
        >>> from diffnum.orth import adapt, orthogonality_penalty
        >>> model = adapt(torch.nn.Sequential(torch.nn.Linear(4, 4)), ["0"], "qgoft")
        >>> orthogonality_penalty(model).detach()  # identity blocks at the start
        tensor(0.)
        >>> with torch.no_grad():
        ...     model[0].blocks[0, 0] = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
        >>> orthogonality_penalty(model).detach()  # rows (1, 1) and (0, 1): ⟨α, β⟩² = 1
        tensor(1.)
    """
    terms = [m.orthogonality_penalty() for _, m in _adapters(model)
             if isinstance(m, _QuasiGOFT)]
    return sum(terms[1:], terms[0]) if terms else torch.zeros(())


def merge_adapters(model: nn.Module) -> nn.Module:
    """:meth:`Adapter.merge` every unmerged adapter of ``model``; returns ``model``.

    Example::

        >>> import torch
        >>> from diffnum.orth import adapt, merge_adapters
        >>> model = merge_adapters(adapt(torch.nn.Sequential(torch.nn.Linear(4, 4)), ["0"],
        ...                              "qgoft"))
        >>> model[0].merged
        True
    """
    for _, module in _adapters(model):
        if not module.merged:
            module.merge()
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """:meth:`Adapter.unmerge` every merged adapter of ``model``; returns ``model``.

    Example::

        >>> import torch
        >>> from diffnum.orth import adapt, merge_adapters, unmerge_adapters
        >>> model = adapt(torch.nn.Sequential(torch.nn.Linear(4, 4)), ["0"], "qgoft")
        >>> unmerge_adapters(merge_adapters(model))[0].merged
        False
    """
    for _, module in _adapters(model):
        if module.merged:
            module.unmerge()
    return model
