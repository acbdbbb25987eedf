"""``orthogonal(module, name, map, **options)``: one line that keeps a weight orthogonal, as a
``torch.nn.utils.parametrize`` parametrization."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from diffnum._core.validation import check_count, check_one_of, real_floating_dtype
from diffnum.orth._maps import (
    _butterfly_levels,
    butterfly,
    cayley,
    cayley_neumann,
    givens,
    householder,
    matrix_exp,
    polar,
    skew_from_lower,
)

__all__ = ["MAPS", "orthogonal"]

#: The map names ``orthogonal`` accepts.
MAPS = ("cayley", "cayley_neumann", "matrix_exp", "householder", "givens", "butterfly", "polar")
_OPTIONS = {"cayley": (), "cayley_neumann": ("terms",), "matrix_exp": (),
            "householder": ("reflections",), "givens": ("rounds",),
            "butterfly": ("block_size", "factors"), "polar": ()}
# Maps stored as Q = B · f(θ) with a buffer B (dynamic trivialization): assigning Q sets B = Q
# and θ = 0, exact for every orthogonal Q. Householder and polar invert their own map.
_TRIVIALIZED = ("cayley", "cayley_neumann", "matrix_exp", "givens", "butterfly")


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


class _Orthogonal(nn.Module):
    """Parametrization of a weight of ``shape`` as (a batch of) matrices with orthonormal
    columns, or rows when the matrix is wide. See :func:`orthogonal`."""

    def __init__(self, shape: torch.Size, map: str, flatten: bool, options: dict,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.map = map
        if flatten:
            self.batch, (rows, cols) = (), (shape[0], math.prod(shape[1:]))
        else:
            self.batch, (rows, cols) = tuple(shape[:-2]), tuple(shape[-2:])
        self.rows, self.cols = rows, cols
        self.transposed = rows < cols
        self.n, self.k = max(rows, cols), min(rows, cols)
        self.options = self._checked_options(options)
        self.initializing = True
        if map in _TRIVIALIZED:
            eye = torch.eye(self.n, dtype=dtype, device=device)
            self.register_buffer("base", eye.expand(*self.batch, self.n, self.n).clone())

    def _checked_options(self, options: dict) -> dict:
        n, k = self.n, self.k
        allowed = _OPTIONS[self.map]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise TypeError(f"orthogonal(map={self.map!r}) got unexpected option(s) {unknown}; "
                            f"it takes {list(allowed) or 'no options'}")
        out = dict(options)
        if self.map == "cayley_neumann":
            out["terms"] = check_count("terms", options.get("terms", 5), high=10_000)
        elif self.map == "householder":
            low = k if k < n else n - 1
            out["reflections"] = check_count("reflections", options.get("reflections", k),
                                             low=max(low, 1), high=4 * n)
        elif self.map == "givens":
            full = n - 1 + n % 2
            out["rounds"] = check_count("rounds", options.get("rounds", full), high=10 * n)
            if n < 2:
                raise ValueError(f"map='givens' needs a matrix side n >= 2, got n={n}")
        elif self.map == "butterfly":
            b = check_count("block_size", options.get("block_size", 2), low=1, high=n)
            if n % b:
                raise ValueError(f"block_size must divide the matrix side n={n}, got {b}")
            groups = n // b
            power_of_two = groups & (groups - 1) == 0
            # Butterfly factors join half-blocks: they need an even b and n/b = 2^L.
            top = _butterfly_levels(n, b) + 1 if power_of_two and b % 2 == 0 else 1
            out["block_size"] = b
            out["factors"] = check_count("factors", options.get("factors", top), high=top)
        return out

    def base_shape(self) -> tuple[int, ...]:
        """Shape of the trainable tensor (``parametrizations.<name>.original``)."""
        n, k, o = self.n, self.k, self.options
        if self.map == "householder":
            return (*self.batch, n, o["reflections"])
        if self.map == "givens":
            return (*self.batch, o["rounds"], n // 2)
        if self.map == "butterfly":
            b = o["block_size"]
            return (*self.batch, o["factors"], n // b, b, b)
        return (*self.batch, n, k)

    def _map(self, X: torch.Tensor) -> torch.Tensor:
        k = self.k
        if self.map == "cayley":
            return cayley(skew_from_lower(X), columns=k, check=False)
        if self.map == "cayley_neumann":
            return cayley_neumann(skew_from_lower(X), self.options["terms"], columns=k,
                                  check=False)
        if self.map == "matrix_exp":
            return matrix_exp(skew_from_lower(X), columns=k, check=False)
        if self.map == "householder":
            return householder(X, columns=k, check=False)
        if self.map == "givens":
            return givens(X, self.n, columns=k)
        if self.map == "butterfly":
            L = X.tril(-1)
            return butterfly(L - L.mT, columns=k, check=False)
        return polar(X)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Q = self._map(X)
        if self.map in _TRIVIALIZED:
            Q = self.base @ Q
        if self.transposed:
            Q = Q.mT
        return Q.reshape(self.shape)

    def _tall(self, W: torch.Tensor) -> torch.Tensor:
        M = W.reshape(*self.batch, self.rows, self.cols)
        return M.mT if self.transposed else M

    @torch.no_grad()
    def right_inverse(self, W: torch.Tensor) -> torch.Tensor:
        """The trainable tensor for the weight ``W``: at registration for the nearest
        orthogonal matrix to ``W``, afterwards for ``W`` itself (which must be orthogonal)."""
        if not isinstance(W, torch.Tensor) or tuple(W.shape) != self.shape:
            got = tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__
            raise ValueError(f"weight must have the parametrized shape {self.shape}, got {got}")
        Q = self._tall(W)
        if self.initializing:
            Q = self._nearest(Q)
        else:
            self._check_orthonormal(Q)
        if self.map in _TRIVIALIZED:
            self.base = _completed(Q).to(self.base.dtype)
            return W.new_zeros(self.base_shape())
        if self.map == "polar":
            return Q.clone()
        return _reflection_vectors(Q, self.options["reflections"])

    def _nearest(self, M: torch.Tensor) -> torch.Tensor:
        """Polar factor (nearest matrix with orthonormal columns); for a square Householder
        weight, the nearest with determinant (−1)^reflections (Kabsch), all that r
        reflections reach."""
        U, _, Vh = torch.linalg.svd(M, full_matrices=False)
        if self.map == "householder" and self.n == self.k:
            want = (-1.0) ** self.options["reflections"]
            flip = torch.linalg.det(U @ Vh) * want < 0
            sign = torch.ones(*U.shape[:-2], U.shape[-1], dtype=U.dtype, device=U.device)
            sign[..., -1] = torch.where(flip, -1.0, 1.0).to(U.dtype)
            U = U * sign.unsqueeze(-2)
        return U @ Vh

    def _check_orthonormal(self, Q: torch.Tensor) -> None:
        eye = torch.eye(self.k, dtype=Q.dtype, device=Q.device)
        error = float((Q.mT @ Q - eye).abs().amax()) if Q.numel() else 0.0
        tol = 10 * self.n * torch.finfo(Q.dtype).eps
        if not error <= tol:
            side = "rows" if self.transposed else "columns"
            raise ValueError(f"weight must have orthonormal {side} to be assigned to an "
                             f"orthogonal parametrization: max |QᵀQ − I| = {error:.3g}, needs "
                             f"<= {tol:.3g}; project it first, e.g. with diffnum.orth.polar")


def _completed(Q: torch.Tensor) -> torch.Tensor:
    """An orthogonal (..., n, n) whose first k columns are Q (..., n, k) exactly."""
    n, k = Q.shape[-2], Q.shape[-1]
    if n == k:
        return Q.clone()
    full = torch.linalg.qr(Q, mode="complete").Q
    return torch.cat([Q, full[..., k:]], dim=-1)


def _reflections_one(Q: torch.Tensor, r: int) -> torch.Tensor:
    """Unit vectors V (n, r) with H(v₁)⋯H(v_r) E_k = Q for one Q (n, k) in float64: Householder
    reduction of Q to E_k with every reflection taking the column to +e_j (Parlett's formula
    v_j = −‖x_{j+1:}‖²/(x_j + 1) when x_j > 0, so no cancellation), then padding."""
    n, k = Q.shape
    Y = Q.clone()
    vectors = []
    for j in range(k):
        x = Y[j:, j]
        v = torch.zeros(n, dtype=Y.dtype)
        tail2 = float(x[1:] @ x[1:])
        if tail2 == 0.0 and float(x[0]) > 0:
            continue  # already e_j: no reflection at this step
        v[j] = x[0] - 1 if float(x[0]) <= 0 else -tail2 / (x[0] + 1)
        v[j + 1:] = x[1:]
        v = v / torch.linalg.vector_norm(v)
        # v is zero above row j and Y's columns before j are done: update the trailing block
        # in place (one pass over it instead of three over all of Y).
        Y[j:, j:].addr_(v[j:], v[j:] @ Y[j:, j:], alpha=-2)
        vectors.append(v)
    extra = r - len(vectors)
    last = torch.zeros(n, dtype=Y.dtype)
    last[-1] = 1.0
    if extra < 0 or (extra % 2 and k == n):
        raise ValueError(f"weight has determinant {float(torch.linalg.det(Q)):+.0f}, which a "
                         f"product of reflections={r} Householder reflections (determinant "
                         f"{(-1) ** r:+d}) cannot reach; use reflections={r + 1} or {r - 1}")
    # e_n is orthogonal to E_k when k < n: H(e_n) E_k = E_k. A repeated pair is the identity.
    vectors += [last] * extra
    return torch.stack(vectors, dim=-1)


def _reflection_vectors(Q: torch.Tensor, r: int) -> torch.Tensor:
    n, k = Q.shape[-2], Q.shape[-1]
    flat = Q.reshape(-1, n, k).double()
    V = torch.stack([_reflections_one(q, r) for q in flat]).to(Q.dtype)
    V = V.reshape(*Q.shape[:-2], n, r)
    error = float((householder(V, columns=k, check=False) - Q).abs().amax())
    tol = 10 * n * torch.finfo(Q.dtype).eps
    if not error <= tol:  # rounding only; kept as a check on the construction
        raise ValueError(f"weight could not be written as {r} reflections to working precision "
                         f"(max error {error:.3g} > {tol:.3g})")
    return V


def orthogonal(module: nn.Module, name: str = "weight", map: str = "cayley",
               **options: object) -> nn.Module:
    """Keep ``module.<name>`` orthogonal: register a ``torch.nn.utils.parametrize``
    parametrization W = f(θ) with θ unconstrained (as ``geotorch.orthogonal``).

    The weight is read as a matrix (…, m, n): a batch over leading dimensions, except for
    convolutions (``nn.Conv1d/2d/3d`` and their transposes), whose weight (c₀, c₁, k₁, …) is
    the matrix (c₀, c₁·k₁⋯) — the map the layer applies to one input patch (its im2col form),
    so the layer maps patches isometrically (it is not an orthogonal operator on whole
    images). A tall matrix (m ≥ n) gets orthonormal columns (QᵀQ = I_n, the first n columns of
    a square map: Stiefel), a wide one orthonormal rows (the transpose, as torch does).

    ``map`` and its ``options`` (θ is ``module.parametrizations.<name>.original``), for the
    tall view with side n ≥ k:

    ==================  =======================  ==============================================
    map                 θ                        options
    ==================  =======================  ==============================================
    ``cayley``          (…, n, k), A from tril   —
    ``cayley_neumann``  (…, n, k), A from tril   ``terms`` (5): Neumann terms (not exact)
    ``matrix_exp``      (…, n, k), A from tril   —
    ``householder``     (…, n, r) vectors        ``reflections`` r (k; square: n)
    ``givens``          (…, rounds, n // 2)      ``rounds`` (n − 1, odd n: n)
    ``butterfly``       (…, m, n/b, b, b)        ``block_size`` b (2), ``factors`` m (all)
    ``polar``           (…, n, k) = W's shape    —
    ==================  =======================  ==============================================

    (A = L − Lᵀ with L the strictly lower part of θ padded with zero columns to n×n, as in
    torch.) Initial value and assignment (``module.weight = Q``, via ``right_inverse``):

    - at registration the weight becomes the polar factor of the current weight (its nearest
      orthogonal matrix); for a square ``householder`` weight the nearest one with
      determinant (−1)^r (r reflections reach only those);
    - an assigned Q must already be orthogonal (to 10·n·eps) or ``ValueError`` is raised;
      it is then represented exactly: ``householder`` by a Householder reduction of Q
      (every reflection sends its column to +e_j, so no sign matrix is needed; square Q needs
      det Q = (−1)^r); ``polar`` stores Q itself; ``cayley``, ``cayley_neumann``,
      ``matrix_exp``, ``givens`` and ``butterfly`` use a dynamic trivialization (torch's
      default): the weight is B·f(θ) with a buffer B (``parametrizations.<name>[0].base``)
      and assigning sets B to Q (completed to n×n) and θ to 0, where f(0) = I. No matrix
      logarithm or inverse Cayley map is taken, so any Q in O(n) — determinant −1 and
      eigenvalue −1 included — is assigned exactly.

    Training moves W continuously, so det W never changes (for square W): a weight that
    starts with determinant −1 cannot reach a target with determinant +1. Assign a start in
    the right component (``module.weight = torch.eye(n)``) when that matters.
    ``cayley_neumann`` and ``butterfly`` are adapters near the identity: the first is
    orthogonal only to O(‖A‖^k), the second has m·(n/b)·b(b − 1)/2 < n(n − 1)/2 angles.

    Args:
        module: the module holding the weight.
        name: the name of a float32/float64 tensor of ``module`` with at least 2 dimensions.
        map: one of ``MAPS`` (see the table).
        **options: the map's options (table); any other keyword raises ``TypeError``.

    Returns:
        ``module``, parametrized in place.

    Example::

        >>> import torch
        >>> from diffnum.orth import orthogonal
        >>> layer = orthogonal(torch.nn.Linear(3, 5, dtype=torch.float64), map="householder")
        >>> W = layer.weight  # (5, 3): orthonormal columns
        >>> bool(torch.allclose(W.T @ W, torch.eye(3, dtype=torch.float64), atol=1e-14))
        True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    check_one_of("map", map, MAPS)
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"name must name a tensor of the module, got {name!r}, which is "
                         f"{type(weight).__name__} on {type(module).__name__}")
    real_floating_dtype(f"module.{name}", weight)
    if weight.ndim < 2:
        raise ValueError(f"module.{name} must have at least 2 dimensions (a matrix), got "
                         f"shape {tuple(weight.shape)}")
    flatten = _is_conv(module) and weight.ndim > 2
    parametrization = _Orthogonal(weight.shape, map, flatten, options, weight.dtype,
                                  weight.device)
    parametrize.register_parametrization(module, name, parametrization, unsafe=True)
    parametrization.initializing = False
    return module
