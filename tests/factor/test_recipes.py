"""Recipe-specific facts: pivots, cores, selections, sketches and the randomized SVD."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

import diffnum.factor as df


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_cpqr_matches_scipy_pivots_and_R():
    A = torch.randn(40, 25, dtype=torch.float64, generator=_gen(0))
    fac = df.cpqr(A, 25)
    _, R, piv = scipy.linalg.qr(A.numpy(), mode="economic", pivoting=True)
    np.testing.assert_array_equal(fac.info["pivots"].numpy(), piv)
    # Same pivots, so R agrees up to the sign of each row (Householder vs Gram–Schmidt).
    np.testing.assert_allclose(np.abs(fac.info["R"].numpy()), np.abs(R), atol=1e-12)
    torch.testing.assert_close(fac.G, torch.eye(25, dtype=torch.float64), atol=1e-12, rtol=0)


def test_cpqr_q_is_orthonormal_for_ill_conditioned_input():
    A, _ = df.synthetic_matrix(60, 40, "geometric", decay=0.5, generator=_gen(1))  # κ ≈ 5e11
    fac = df.cpqr(A, 40)
    Q = fac.F
    # CGS2 keeps QᵀQ = I to a few eps regardless of κ(A) (Giraud et al. 2005).
    torch.testing.assert_close(Q.mT @ Q, torch.eye(40, dtype=torch.float64), atol=1e-14, rtol=0)
    # The projector equation is solved through QR(H), not HᵀH, so κ(A)² ≫ 1/eps is harmless.
    assert not fac.rank_deficient
    assert fac.residuals().reconstruction < 1e-14


def test_cr_finds_rref_pivot_columns_and_identity_block():
    g = _gen(2)
    C0 = torch.randn(7, 3, dtype=torch.float64, generator=g)
    # R0 in reduced row echelon form with pivots in columns 0, 2, 5.
    R0 = torch.zeros(3, 8, dtype=torch.float64)
    R0[:, [0, 2, 5]] = torch.eye(3, dtype=torch.float64)
    R0[0, 1] = 2.0
    R0[:2, 3:5] = torch.randn(2, 2, dtype=torch.float64, generator=g)
    R0[:, 6:] = torch.randn(3, 2, dtype=torch.float64, generator=g)
    fac = df.cr(C0 @ R0)
    assert fac.info["columns"].tolist() == [0, 2, 5]
    torch.testing.assert_close(fac.info["C"], C0, atol=1e-14, rtol=0)
    torch.testing.assert_close(fac.info["R"], R0, atol=1e-12, rtol=0)


def test_cr_rejects_batches_of_different_rank():
    A = torch.stack([torch.eye(3, dtype=torch.float64),
                     torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))])
    with pytest.raises(ValueError, match="same numerical rank"):
        df.cr(A)


def test_cur_cores_are_what_the_spec_says():
    A, _ = df.synthetic_matrix(30, 20, "low_rank", rank=5, generator=_gen(3))
    opt = df.cur(A, 5, core="optimal")
    C, R = opt.F, opt.H.mT
    torch.testing.assert_close(opt.G, torch.linalg.pinv(C) @ A @ torch.linalg.pinv(R),
                               atol=1e-10, rtol=1e-10)
    cross = df.cur(A, 5, core="cross")
    I, J = cross.info["rows"], cross.info["columns"]
    torch.testing.assert_close(cross.G, torch.linalg.inv(A[I][:, J]), atol=1e-9, rtol=1e-10)


def test_cur_below_rank_optimal_core_beats_cross_core():
    A, sigma = df.synthetic_matrix(80, 60, "algebraic", decay=1.5, generator=_gen(4))
    k = 10
    err = {core: torch.linalg.matrix_norm(A - df.cur(A, k, core=core).reconstruct())
           for core in df._recipes.CUR_CORES}
    # C⁺AR⁺ minimises ‖A − C U R‖_F over U, so it can only do better than A(I,J)⁻¹.
    assert err["optimal"] <= err["cross"] * (1 + 1e-12)
    assert err["optimal"] >= sigma[k:].norm() * (1 - 1e-12)  # and never beats Eckart–Young


@pytest.mark.parametrize("method", ["uniform", "leverage", "pivoted_qr", "deim", "spa"])
def test_selection_returns_k_distinct_valid_indices(method):
    A = torch.randn(2, 12, 30, dtype=torch.float64, generator=_gen(5))
    idx = df.select_columns(A, 8, method, generator=_gen(6))
    assert idx.shape == (2, 8) and idx.dtype == torch.long
    for row in idx:
        assert len(set(row.tolist())) == 8 and 0 <= row.min() and row.max() < 30


def test_spa_is_the_pivot_order_of_cpqr():
    A = torch.randn(15, 25, dtype=torch.float64, generator=_gen(7))
    spa = df.select_columns(A, 10, "spa")
    _, _, piv = scipy.linalg.qr(A.numpy(), pivoting=True)
    np.testing.assert_array_equal(spa.numpy(), piv[:10])


def test_deim_matches_a_direct_transcription_of_the_algorithm():
    A = torch.randn(20, 30, dtype=torch.float64, generator=_gen(8))
    k = 6
    V = np.linalg.svd(A.numpy(), full_matrices=False)[2][:k].T
    p = [int(np.argmax(np.abs(V[:, 0])))]
    for j in range(1, k):
        c = np.linalg.solve(V[p, :j], V[p, j])
        p.append(int(np.argmax(np.abs(V[:, j] - V[:, :j] @ c))))
    assert df.select_columns(A, k, "deim").tolist() == p


def test_leverage_sampling_never_picks_zero_leverage_columns():
    A = torch.zeros(10, 20, dtype=torch.float64)
    A[:, :6] = torch.randn(10, 6, dtype=torch.float64, generator=_gen(9))
    for seed in range(10):
        idx = df.select_columns(A, 5, "leverage", generator=_gen(seed))
        assert idx.max() < 6


def test_uniform_selection_is_reproducible_per_seed():
    A = torch.randn(5, 50, dtype=torch.float64)
    a = df.select_columns(A, 10, "uniform", generator=_gen(1))
    b = df.select_columns(A, 10, "uniform", generator=_gen(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sketch", ["gaussian", "rademacher", "sparse_sign"])
def test_range_finder_is_exact_above_the_rank(sketch):
    A, _ = df.synthetic_matrix(50, 40, "low_rank", rank=6, generator=_gen(10))
    Q = df.range_finder(A, 6, oversample=4, power_iters=1, sketch=sketch, generator=_gen(11))
    torch.testing.assert_close(Q.mT @ Q, torch.eye(10, dtype=torch.float64), atol=1e-14, rtol=0)
    assert torch.linalg.matrix_norm(A - Q @ (Q.mT @ A)) < 1e-13


@pytest.mark.parametrize("power_iters", [0, 1, 2])
def test_rsvd_is_within_the_hmt_bound(power_iters):
    A, sigma = df.synthetic_matrix(300, 200, "algebraic", decay=1.0, generator=_gen(12))
    k, p = 15, 10
    tail = sigma[k:].norm()
    errs = []
    for seed in range(5):
        U, S, Vh = df.rsvd(A, k, oversample=p, power_iters=power_iters, generator=_gen(seed))
        errs.append(torch.linalg.matrix_norm(A - (U * S.unsqueeze(-2)) @ Vh))
        torch.testing.assert_close(U.mT @ U, torch.eye(k, dtype=torch.float64), atol=1e-13,
                                   rtol=0)
    # HMT Thm 10.5: E‖A − QQᵀA‖_F ≤ √(1 + k/(p−1)) · (Σ_{j>k} σ_j²)^½ for q = 0 (power
    # iterations only shrink it), and truncating QQᵀA to rank k adds at most that tail
    # once more (HMT §9.4). The bound is on the expectation: check the mean of 5 draws.
    bound = (1 + math.sqrt(1 + k / (p - 1))) * tail
    assert torch.stack(errs).mean() <= bound
    assert torch.stack(errs).min() >= tail * (1 - 1e-12)  # Eckart–Young is a lower bound


def test_rsvd_power_iterations_reach_eckart_young_on_fast_decay():
    A, sigma = df.synthetic_matrix(256, 256, "geometric", decay=0.9, generator=_gen(13))
    U, S, Vh = df.rsvd(A, 32, oversample=10, power_iters=2, generator=_gen(14))
    err = torch.linalg.matrix_norm(A - (U * S.unsqueeze(-2)) @ Vh)
    assert err <= 1.01 * sigma[32:].norm()


@given(m=st.integers(3, 25), n=st.integers(3, 25), batch=st.sampled_from([(), (2,), (2, 1)]))
def test_rsvd_shapes(m, n, batch):
    A = torch.randn(*batch, m, n, dtype=torch.float64, generator=_gen(m * n))
    k = min(m, n) // 2 + 1
    U, S, Vh = df.rsvd(A, k, generator=_gen(1))
    assert U.shape == (*batch, m, k) and S.shape == (*batch, k) and Vh.shape == (*batch, k, n)


def test_sketch_and_range_finder_reject_bad_arguments():
    A = torch.randn(6, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="sketch must be one of"):
        df.range_finder(A, 2, sketch="cauchy")
    with pytest.raises(ValueError, match="oversample must be a non-negative int"):
        df.rsvd(A, 2, oversample=-1)
    with pytest.raises(ValueError, match="k must satisfy"):
        df.rsvd(A, 0)
    with pytest.raises(ValueError, match="select must be one of"):
        df.select_columns(A, 2, "random")


@pytest.mark.parametrize("power_iters", [1, 2])
def test_range_finder_meets_the_power_scheme_bound(power_iters):
    A, sigma = df.synthetic_matrix(300, 200, "algebraic", decay=1.0, generator=_gen(15))
    k, p, q = 15, 10, power_iters
    errs = []
    for seed in range(5):
        Q = df.range_finder(A, k, oversample=p, power_iters=q, generator=_gen(seed))
        errs.append(torch.linalg.matrix_norm(A - Q @ (Q.mT @ A), ord=2))
    # HMT Cor. 10.10 (power scheme, spectral norm), in expectation:
    # E‖A − QQᵀA‖ ≤ [(1 + √(k/(p−1))) σ_{k+1}^r + e√(k+p)/p (Σ_{j>k} σ_j^{2r})^½]^{1/r},
    # r = 2q + 1.
    r = 2 * q + 1
    tail = sigma[k:]
    bound = ((1 + math.sqrt(k / (p - 1))) * tail[0] ** r
             + math.e * math.sqrt(k + p) / p * tail.pow(2 * r).sum().sqrt()) ** (1 / r)
    mean = torch.stack(errs).mean()
    # Q has k + p columns, so σ_{k+p+1} is the best any such basis can do.
    assert sigma[k + p] * (1 - 1e-12) <= mean <= bound
