"""Tests for the pure maps of diffnum.orth: orthogonality, parity with torch's maps on the same
base, gradcheck, the Cayley–Neumann bound, Givens expressiveness and bad arguments."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.parametrizations import orthogonal as torch_orthogonal

from diffnum.orth import (
    _maps,
    butterfly,
    cayley,
    cayley_neumann,
    givens,
    givens_schedule,
    householder,
    matrix_exp,
    polar,
)

F64 = torch.float64
# Exact maps in float64: a few hundred roundings of O(1) entries, ‖QᵀQ − I‖_max ~ 1e-15;
# 1e-13 is the bar and leaves two orders of margin.
EXACT_TOL = 1e-13


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _skew(*shape, dtype=F64, seed=0, scale=1.0):
    X = scale * torch.randn(*shape, dtype=dtype, generator=_gen(seed))
    return X - X.mT


def _orth_error(Q):
    k = Q.shape[-1]
    eye = torch.eye(k, dtype=Q.dtype)
    return float((Q.mT @ Q - eye).abs().amax())


def _givens_theta(batch, d, seed=0, dtype=F64):
    rounds = d - 1 + d % 2
    return torch.randn(*batch, rounds, d // 2, dtype=dtype, generator=_gen(seed))


def _exact_maps():
    """(name, Q builder over (batch, d, columns)) for every exact map."""
    return {
        "cayley": lambda b, d, k: cayley(_skew(*b, d, d), columns=k),
        "matrix_exp": lambda b, d, k: matrix_exp(_skew(*b, d, d), columns=k),
        "householder": lambda b, d, k: householder(
            torch.randn(*b, d, d, dtype=F64, generator=_gen(1)), columns=k),
        "givens": lambda b, d, k: givens(_givens_theta(b, d), d, columns=k),
        "butterfly": lambda b, d, k: butterfly(_skew(*b, 3, d // 2, 2, 2), columns=k)
        if d == 8 else butterfly(_skew(*b, 1, 1, d, d), columns=k),
        "polar": lambda b, d, k: polar(torch.randn(*b, d, k or d, dtype=F64,
                                                   generator=_gen(2))),
    }


@pytest.mark.parametrize("name", list(_exact_maps()))
@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
@pytest.mark.parametrize("d", [5, 8])
def test_exact_maps_are_orthogonal_in_float64(name, batch, d):
    build = _exact_maps()[name]
    Q = build(batch, d, None)
    assert Q.shape == (*batch, d, d)
    assert _orth_error(Q) <= EXACT_TOL
    assert _orth_error(Q.mT) <= EXACT_TOL
    # Stiefel: the first k columns, computed directly, equal the square map's.
    S = build(batch, d, 3)
    assert S.shape == (*batch, d, 3)
    assert _orth_error(S) <= EXACT_TOL
    if name != "polar":  # polar(n×k) is its own map, not a slice of a square one
        torch.testing.assert_close(S, Q[..., :3], rtol=0, atol=1e-14)


def test_special_orthogonal_maps_have_determinant_one():
    for Q in (cayley(_skew(6, 6)), matrix_exp(_skew(6, 6)), givens(_givens_theta((), 7), 7),
              butterfly(_skew(2, 2, 2, 2))):
        assert abs(float(torch.linalg.det(Q)) - 1) <= 1e-13
    V = torch.randn(5, 3, dtype=F64, generator=_gen(0))
    assert abs(float(torch.linalg.det(householder(V))) + 1) <= 1e-13  # (−1)^3


def _torch_map(base, orthogonal_map):
    """torch's orthogonal map applied to ``base`` (no trivialization: the raw map)."""
    layer = torch.nn.Linear(base.shape[1], base.shape[0], bias=False, dtype=F64)
    torch_orthogonal(layer, orthogonal_map=orthogonal_map, use_trivialization=False)
    # torch runs right_inverse at registration only for householder; set the base directly.
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(base)
    return layer.weight.detach()


@pytest.mark.parametrize("shape", [(6, 6), (7, 3)])
def test_cayley_and_exp_match_torch_on_the_same_base(shape):
    # torch: A = X.tril() − X.tril()ᵀ padded to n×n; Cayley (I + A/2)(I − A/2)⁻¹ = cayley(−A/2).
    n, k = shape
    X = torch.randn(*shape, dtype=F64, generator=_gen(3))
    L = torch.cat([X.tril(), X.new_zeros(n, n - k)], dim=-1)
    A = L - L.mT
    torch.testing.assert_close(cayley(-A / 2, columns=k), _torch_map(X, "cayley"),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(matrix_exp(A, columns=k), _torch_map(X, "matrix_exp"),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 6), (7, 3)])
def test_householder_matches_torch_on_the_same_base(shape):
    # torch: v_i = e_i + (strictly lower part of column i), Q = H(v₁)⋯H(v_k) E_k, then column i
    # times int(X_ii) (torch keeps ±1 there). A unit diagonal makes that factor 1.
    n, k = shape
    X = torch.randn(*shape, dtype=F64, generator=_gen(4))
    X.diagonal().fill_(1.0)
    V = X.tril(-1) + torch.eye(n, k, dtype=F64)
    torch.testing.assert_close(householder(V, columns=k), _torch_map(X, "householder"),
                               rtol=0, atol=1e-12)


def test_householder_wy_factor_is_the_ut_transform():
    # The recurrence's T satisfies T⁻¹ = triu(VᵀV, 1) + diag(VᵀV)/2 and Q = ∏ H(v_i) densely.
    from diffnum.orth._maps import _wy_factor

    V = torch.randn(2, 7, 4, dtype=F64, generator=_gen(5))
    G = V.mT @ V
    T = _wy_factor(V)
    inverse = G.triu(1) + torch.diag_embed(G.diagonal(dim1=-2, dim2=-1)) / 2
    torch.testing.assert_close(T @ inverse, torch.eye(4, dtype=F64).expand(2, 4, 4),
                               rtol=0, atol=1e-13)
    dense = torch.eye(7, dtype=F64).expand(2, 7, 7)
    for i in range(4):
        v = V[..., i:i + 1]
        dense = dense @ (torch.eye(7, dtype=F64) - 2 * v @ v.mT / (v.mT @ v))
    torch.testing.assert_close(householder(V), dense, rtol=0, atol=1e-13)


@pytest.mark.parametrize("d", [2, 5, 6, 9])
def test_givens_schedule_is_a_round_robin(d):
    S = givens_schedule(d)
    rounds = d - 1 + d % 2
    assert S.shape == (rounds, d // 2, 2)
    pairs = {tuple(p) for p in S.reshape(-1, 2).tolist()}
    assert len(pairs) == d * (d - 1) // 2  # every pair once
    for r in range(rounds):  # disjoint within a round
        assert len(set(S[r].reshape(-1).tolist())) == 2 * (d // 2)


def test_givens_equals_the_dense_product_of_rotations():
    d = 5
    theta = _givens_theta((), d, seed=6)
    dense = torch.eye(d, dtype=F64)
    for r, pairs in enumerate(givens_schedule(d).tolist()):
        for p, (i, j) in enumerate(pairs):
            c, s = torch.cos(theta[r, p]), torch.sin(theta[r, p])
            G = torch.eye(d, dtype=F64)
            G[i, i], G[j, j], G[i, j], G[j, i] = c, c, -s, s
            dense = dense @ G
    torch.testing.assert_close(givens(theta, d), dense, rtol=0, atol=1e-14)


def _givens_by_index_copy(theta, d, k):
    """The straightforward form of :func:`givens` (two gathers and two index_copy per round),
    plain autograd: the reference for the fast form and its custom backward."""
    schedule = givens_schedule(d)
    Q = torch.eye(d, k, dtype=theta.dtype).expand(*theta.shape[:-2], d, k)
    cos, sin = torch.cos(theta).unsqueeze(-1), torch.sin(theta).unsqueeze(-1)
    for r in reversed(range(theta.shape[-2])):
        i, j = schedule[r % schedule.shape[0]].unbind(-1)
        c, s = cos[..., r, :, :], sin[..., r, :, :]
        rows_i, rows_j = Q[..., i, :], Q[..., j, :]
        Q = Q.index_copy(-2, i, c * rows_i - s * rows_j).index_copy(-2, j, s * rows_i
                                                                   + c * rows_j)
    return Q


@pytest.mark.parametrize("d", [2, 3, 6, 9, 16])
@pytest.mark.parametrize("rounds_of", [lambda d: 1, lambda d: d - 1 + d % 2, lambda d: 2 * d + 1])
@pytest.mark.parametrize("keep", [True, False])
def test_givens_fast_form_and_its_backward_match_the_reference(d, rounds_of, keep, monkeypatch):
    # keep=False: the backward recovers the rounds' outputs by inverse rotations.
    if not keep:
        monkeypatch.setattr(_maps, "_GIVENS_KEEP_BYTES", 0)
    # Batched, Stiefel columns, more rounds than the schedule (it wraps around), odd d (bye).
    theta = torch.randn(2, rounds_of(d), d // 2, dtype=F64, generator=_gen(21))
    k = max(1, d // 2)
    G = torch.randn(2, d, k, dtype=F64, generator=_gen(22))
    ours, ref = theta.clone().requires_grad_(), theta.clone().requires_grad_()
    Q, Q_ref = givens(ours, d, columns=k), _givens_by_index_copy(ref, d, k)
    torch.testing.assert_close(Q, Q_ref, rtol=0, atol=1e-14)
    grad, = torch.autograd.grad(Q, ours, G)  # the O(d k)-memory custom backward
    grad_ref, = torch.autograd.grad(Q_ref, ref, G)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-12)
    with torch.no_grad():  # the traceable path
        torch.testing.assert_close(givens(theta, d, columns=k), Q_ref, rtol=0, atol=1e-14)


def test_givens_schedule_matches_the_circle_method_loop():
    for d in range(2, 12):
        n = d + d % 2
        rounds = []
        for r in range(n - 1):
            pairs = [(r, n - 1)] + [((r + s) % (n - 1), (r - s) % (n - 1))
                                    for s in range(1, n // 2)]
            rounds.append([[min(i, j), max(i, j)] for i, j in pairs if max(i, j) < d])
        assert givens_schedule(d).tolist() == rounds


@pytest.mark.parametrize("terms", [1, 2, 3, 5, 6, 9])
@pytest.mark.parametrize("columns", [None, 2])
def test_cayley_neumann_polynomial_equals_horner(terms, columns):
    # Q̃ = (I − A) N_k with N_k by Horner, N ← I − A N: the definition, on the slab.
    A = _skew(3, 7, 7, seed=23, scale=0.1)
    k = columns or 7
    E = torch.eye(7, k, dtype=F64).expand(3, 7, k)
    N = E
    for _ in range(terms - 1):
        N = E - A @ N
    torch.testing.assert_close(cayley_neumann(A, terms, columns=columns), N - A @ N,
                               rtol=0, atol=1e-15)


def _fit_givens(target, theta, d, max_steps=150):
    """Levenberg–Marquardt on the d² residuals Q(θ) − Q* over the d(d − 1)/2 angles."""

    def residual(t):
        return (givens(t, d) - target).reshape(-1)

    damping = 1e-3
    for _ in range(max_steps):
        r = residual(theta)
        if float(r.norm()) < 1e-12:
            break
        J = torch.func.jacfwd(residual)(theta).reshape(r.numel(), -1)
        step = torch.linalg.solve(J.T @ J + damping * torch.eye(J.shape[1], dtype=F64),
                                  -J.T @ r)
        trial = theta + step.reshape(theta.shape)
        if float(residual(trial).norm()) < float(r.norm()):
            theta, damping = trial, max(damping / 3, 1e-12)
        else:
            damping *= 4
    return float(torch.linalg.matrix_norm(givens(theta, d) - target))


def test_givens_reaches_random_targets_in_so6():
    # Expressiveness of the d − 1 = 5 full rounds (15 angles = dim SO(6)): every random target
    # is fitted to ‖Q − Q*‖_F < 1e-8. The loss is not convex in θ (local minima at ~0.02–0.2
    # from some starts), so each target gets up to 10 uniform random starts. Measured on 40
    # Haar targets: all reached, 33 from the first start, none needing more than 4.
    d = 6
    g = _gen(0)
    for _ in range(3):
        target, R = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=g))
        target = target * R.diagonal().sign()
        if torch.linalg.det(target) < 0:
            target[:, 0] = -target[:, 0]
        errors = []
        for _ in range(10):
            theta = (torch.rand(d - 1, d // 2, dtype=F64, generator=g) * 2 - 1) * torch.pi
            errors.append(_fit_givens(target, theta, d))
            if errors[-1] < 1e-8:
                break
        assert min(errors) < 1e-8, errors


def test_butterfly_structure():
    # m = 1 is OFT's block diagonal; all log2(d/b) + 1 factors make Q dense; fewer do not.
    X = _skew(1, 4, 2, 2, seed=7)
    Q = butterfly(X)
    torch.testing.assert_close(Q[:2, :2], cayley(X[0, 0]), rtol=0, atol=1e-15)
    assert float(Q[:2, 2:].abs().max()) == 0.0
    assert bool((butterfly(_skew(3, 4, 2, 2)).abs() > 1e-12).all())  # d = 8, 3 factors
    assert not bool((butterfly(_skew(2, 4, 2, 2)).abs() > 1e-12).all())
    # Factor ℓ = 1 with b = 2 pairs index i with i XOR 2: identity first factor, then check.
    Y = torch.zeros(2, 4, 2, 2, dtype=F64)
    Y[1] = _skew(4, 2, 2, seed=8)
    Q = butterfly(Y)
    for i in range(8):
        assert set(Q[:, i].nonzero().reshape(-1).tolist()) <= {i, i ^ 2}


def _neumann_cases():
    # (‖A‖₂, terms): odd and even k, small and moderate ρ.
    return [(0.1, 3), (0.3, 4), (0.5, 5), (0.8, 6), (0.8, 7)]


@pytest.mark.parametrize(("rho", "terms"), _neumann_cases())
def test_cayley_neumann_error_bound(rho, terms):
    A = _skew(3, 8, 8, seed=9)
    A = rho * A / torch.linalg.matrix_norm(A, 2)[:, None, None]
    eye = torch.eye(8, dtype=F64)
    # Truncated inverse: ‖(I + A)⁻¹ − N_k‖₂ ≤ ρ^k (skew) ≤ ρ^k/(1 − ρ) (any A).
    N = cayley_neumann(A, terms) @ torch.linalg.inv(eye - A)  # = N_k, since Q̃ = (I − A)N_k
    inverse_error = torch.linalg.matrix_norm(torch.linalg.inv(eye + A) - N, 2)
    assert bool((inverse_error <= rho**terms * (1 + 1e-8) + 1e-15).all())
    assert bool((inverse_error <= rho**terms / (1 - rho)).all())
    # ‖Q̃ − Q‖₂ = ρ^k, and ‖Q̃ᵀQ̃ − I‖₂ equals the eigenvalue formula of the docstring.
    Qt = cayley_neumann(A, terms)
    distance = torch.linalg.matrix_norm(Qt - cayley(A), 2)
    torch.testing.assert_close(distance, torch.full_like(distance, rho**terms), rtol=1e-10,
                               atol=0)
    orth_error = torch.linalg.matrix_norm(Qt.mT @ Qt - eye, 2)
    lam = torch.linalg.eigvals(A).imag  # eigenvalues iλ_j
    z = (-1j * lam.to(torch.complex128)) ** terms
    exact = ((1 - z).abs() ** 2 - 1).abs().amax(-1)
    torch.testing.assert_close(orth_error, exact, rtol=1e-8, atol=1e-15)
    bound = rho ** (2 * terms) if terms % 2 else 2 * rho**terms + rho ** (2 * terms)
    assert bool((orth_error <= bound * (1 + 1e-8) + 1e-15).all())  # + rounding
    if terms % 2:
        torch.testing.assert_close(orth_error, torch.full_like(orth_error, rho ** (2 * terms)),
                                   rtol=1e-8, atol=1e-16)


def test_cayley_inverse_is_the_same_formula():
    # A = (I + Q)⁻¹(I − Q) for Q = cayley(A): the docstring's inverse.
    A = _skew(2, 5, 5, seed=10)
    Q, eye = cayley(A), torch.eye(5, dtype=F64)
    torch.testing.assert_close(torch.linalg.solve(eye + Q, eye - Q), A, rtol=0, atol=1e-12)


def _gradcheck(fn, *inputs):
    return torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_every_map():
    X = torch.randn(2, 4, 4, dtype=F64, generator=_gen(11), requires_grad=True)
    assert _gradcheck(lambda X: cayley(X - X.mT), X)
    assert _gradcheck(lambda X: cayley(X - X.mT, columns=2), X)
    assert _gradcheck(lambda X: cayley_neumann(0.2 * (X - X.mT), 4), X)
    assert _gradcheck(lambda X: matrix_exp(X - X.mT), X)
    V = torch.randn(2, 5, 3, dtype=F64, generator=_gen(12), requires_grad=True)
    assert _gradcheck(householder, V)
    assert _gradcheck(lambda V: householder(V, columns=2), V)
    theta = _givens_theta((2,), 5, seed=13).requires_grad_()
    assert _gradcheck(lambda t: givens(t, 5), theta)
    B = torch.randn(3, 4, 2, 2, dtype=F64, generator=_gen(14), requires_grad=True)
    assert _gradcheck(lambda B: butterfly(B - B.mT), B)
    P = torch.randn(2, 5, 3, dtype=F64, generator=_gen(15), requires_grad=True)
    assert _gradcheck(polar, P)
    assert _gradcheck(polar, P.detach().mT.clone().requires_grad_())


@pytest.mark.parametrize("keep_bytes", [1 << 28, 0])
def test_second_derivatives_of_givens_and_polar(monkeypatch, keep_bytes):
    """Double backward (Hessian-vector products, gradient penalties) through the custom
    backwards: gradgradcheck, with and without the kept rounds."""
    import diffnum.orth._maps as maps

    monkeypatch.setattr(maps, "_GIVENS_KEEP_BYTES", keep_bytes)
    theta = _givens_theta((2,), 5, seed=21).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda t: givens(t, 5, columns=3), (theta,),
                                        eps=1e-6, atol=1e-7, rtol=1e-5)
    P = torch.randn(2, 5, 3, dtype=F64, generator=_gen(22), requires_grad=True)
    assert torch.autograd.gradgradcheck(polar, (P,), eps=1e-6, atol=1e-7, rtol=1e-5)
    # The first backward without create_graph still takes the O(d k) path.
    theta.grad = None
    (givens(theta, 5) ** 2).sum().backward()
    assert theta.grad is not None and theta.grad.grad_fn is None


def test_polar_gradient_is_finite_at_an_orthogonal_point():
    # All singular values equal: the SVD's backward divides by σ_i² − σ_j² = 0 there.
    Q = torch.linalg.qr(torch.randn(5, 5, dtype=F64, generator=_gen(16))).Q
    assert _gradcheck(polar, Q.clone().requires_grad_())
    X = Q.clone().requires_grad_()
    polar(X).sum().backward()
    assert bool(torch.isfinite(X.grad).all())


def test_float32_maps_are_orthogonal_to_float32_rounding():
    # float32 eps is 1.2e-7; a d = 16 map rounds a few dozen times: 1e-5 is ~100 eps.
    f32 = torch.float32
    X = torch.randn(2, 16, 16, generator=_gen(17))
    A = X - X.mT
    outputs = [cayley(A), matrix_exp(A), cayley_neumann(0.01 * A, 7), householder(X),
               givens(_givens_theta((2,), 16, dtype=f32), 16),
               butterfly(_skew(4, 8, 2, 2, dtype=f32)), polar(X)]
    for Q in outputs:
        assert Q.dtype == f32
        assert _orth_error(Q) <= 1e-5


@pytest.mark.parametrize(("call", "match"), [
    (lambda: cayley(torch.randn(3, 3, dtype=F64)), "A must be skew"),
    (lambda: cayley(torch.zeros(3, 4, dtype=F64)), "A must be square"),
    (lambda: cayley(torch.zeros(3, 3, dtype=torch.int64)), "A must be float32"),
    (lambda: cayley(torch.zeros(3, 3), columns=4), "columns must satisfy"),
    (lambda: cayley_neumann(torch.zeros(3, 3), 0), "terms must satisfy"),
    (lambda: cayley_neumann(torch.zeros(3, 3), 2.0), "terms must be an int"),
    (lambda: householder(torch.zeros(4, 2)), "V must have non-zero columns"),
    (lambda: givens(torch.zeros(3, 3), 5), r"theta must have shape"),
    (lambda: givens(torch.zeros(3, 2), 1), "d must satisfy"),
    (lambda: butterfly(torch.zeros(4, 4, 2, 2)), "at most log2"),
    (lambda: butterfly(torch.zeros(2, 3, 2, 2)), "power of two"),
    (lambda: butterfly(torch.zeros(2, 2, 3, 3)), "even block size"),
    (lambda: polar(torch.zeros(3)), "X must have at least 2 dimensions"),
    (lambda: polar(torch.full((2, 2), float("nan"))), "X must be finite"),
])
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
