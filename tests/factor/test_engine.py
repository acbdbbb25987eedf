"""The projector and reconstruction equations, for every recipe built on the engine."""

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import diffnum.factor as df

# float64 identities: the engine does O(1) QRs/solves on well-conditioned k×k cores,
# so residuals are a small multiple of eps·κ; 1e-12 leaves room for κ ≲ 1e3.
EXACT = 1e-12
PROJECTOR = 1e-13


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _low_rank(m, n, r, batch=(), seed=0):
    return df.synthetic_matrix(m, n, "low_rank", rank=r, batch=batch, generator=_gen(seed))[0]


RECIPES = {
    "svd": lambda A, r: df.svd(A, r),
    "cpqr": lambda A, r: df.cpqr(A, r),
    "utv-svd": lambda A, r: df.utv(A, r, core="svd"),
    "utv-cpqr": lambda A, r: df.utv(A, r, core="cpqr"),
    "utv-lu": lambda A, r: df.utv(A, r, core="lu"),
    "utv-triangular": lambda A, r: df.utv(A, r, core="triangular"),
    "nystrom": lambda A, r: df.nystrom(A, r, generator=_gen(1)),
    "cur-optimal": lambda A, r: df.cur(A, r, select="pivoted_qr"),
    "cur-cross": lambda A, r: df.cur(A, r, select="pivoted_qr", core="cross"),
    "cur-deim": lambda A, r: df.cur(A, r, select="deim", core="cross"),
    "cr": lambda A, r: df.cr(A),
}


def _assert_exact(fac, slack=1.0):
    res = fac.residuals()
    assert res.reconstruction.max() < EXACT * slack, res.reconstruction
    assert res.projector_F.max() < PROJECTOR * slack, res.projector_F
    assert res.projector_H.max() < PROJECTOR * slack, res.projector_H


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize(("m", "n", "batch"), [(40, 25, ()), (25, 40, ()), (30, 30, (3,)),
                                               (18, 12, (2, 2))])
def test_exact_at_rank(name, m, n, batch):
    A = _low_rank(m, n, 6, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", df.RankDeficiencyWarning)
        fac = RECIPES[name](A, 6)
    assert fac.F.shape[:-2] == batch
    _assert_exact(fac)


@pytest.mark.parametrize("name", list(RECIPES))
def test_exact_at_rank_from_rank_deficient_factors(name):
    A, _ = df.synthetic_matrix(35, 28, "rank_deficient", rank=5, generator=_gen(3))
    _assert_exact(RECIPES[name](A, 5))


@given(m=st.integers(2, 30), n=st.integers(2, 30), data=st.data())
def test_exact_reconstruction_property(m, n, data):
    r = data.draw(st.integers(1, min(m, n)))
    seed = data.draw(st.integers(0, 2**16))
    name = data.draw(st.sampled_from(["svd", "cpqr", "utv-svd", "cur-optimal", "nystrom"]))
    A = _low_rank(m, n, r, seed=seed)
    _assert_exact(RECIPES[name](A, r))


@given(m=st.integers(2, 30), n=st.integers(2, 30), data=st.data())
def test_cr_exact_up_to_the_conditioning_of_its_pivot_columns(m, n, data):
    r = data.draw(st.integers(1, min(m, n)))
    A = _low_rank(m, n, r, seed=data.draw(st.integers(0, 2**16)))
    fac = df.cr(A)
    assert fac.F.shape[-1] == r
    # The leftmost independent columns can be nearly dependent (κ(C) up to ~1e5 here);
    # every residual is then a solve with C, bounded by a small multiple of eps·κ(C)
    # (≤ 3.2 eps·κ(C) over a 2500-case sweep), so the tolerances scale by 10·eps·κ(C).
    kappa = float(torch.linalg.cond(fac.F))
    _assert_exact(fac, slack=max(1.0, 10 * torch.finfo(A.dtype).eps * kappa / PROJECTOR))


@pytest.mark.parametrize("name", ["svd", "cpqr", "utv-svd", "cur-optimal", "nystrom"])
def test_oblique_projectors_are_idempotent(name):
    A = _low_rank(20, 16, 5)
    fac = RECIPES[name](A, 5)
    PF, PH = fac.projectors()
    torch.testing.assert_close(PF @ PF, PF, atol=1e-12, rtol=0)
    torch.testing.assert_close(PH @ PH, PH, atol=1e-12, rtol=0)
    # P_F A P_H = A: the consistency condition of the reconstruction equation.
    torch.testing.assert_close(PF @ A @ PH, A, atol=1e-12, rtol=0)


def test_core_is_independent_of_W_when_YtF_is_identity():
    A = _low_rank(24, 18, 4)
    base = df.cpqr(A, 4)
    W = torch.randn(4, 4, dtype=torch.float64, generator=_gen(5))
    again = df.meta_factorize(A, base.F, base.H, W=W)
    torch.testing.assert_close(base.F.mT @ base.Y, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(again.G, base.G, atol=1e-12, rtol=0)


def test_rank_deficient_projector_warns_and_general_solution_holds_for_every_W():
    A = _low_rank(20, 15, 3)
    svd = df.svd(A, 3)
    # F with a repeated column: BᵀF is singular, so the engine must pseudo-invert.
    F = torch.cat([svd.F, svd.F[:, :1]], dim=-1)
    H = torch.cat([svd.H, svd.H[:, :1]], dim=-1)
    with pytest.warns(df.RankDeficiencyWarning, match="rank deficient"):
        fac0 = df.meta_factorize(A, F, H)
    assert fac0.rank_deficient
    W = torch.randn(4, 4, dtype=torch.float64, generator=_gen(7))
    with pytest.warns(df.RankDeficiencyWarning):
        facW = df.meta_factorize(A, F, H, W=W)
    # G now depends on W, yet every member of the Penrose family reconstructs A.
    assert (facW.G - fac0.G).abs().max() > 1e-3
    for fac in (fac0, facW):
        _assert_exact(fac)


def test_truncated_svd_meets_eckart_young_exactly():
    A, sigma = df.synthetic_matrix(60, 45, "geometric", decay=0.8, generator=_gen(2))
    for k in (1, 5, 20):
        err = torch.linalg.matrix_norm(A - df.svd(A, k).reconstruct())
        best = sigma[k:].norm()
        assert abs(err / best - 1) < 1e-10
        assert torch.allclose(df.svd(A, k).G, torch.diag(sigma[:k]), atol=1e-12)


def test_nystrom_error_is_near_the_range_finder_error_for_the_same_sketch():
    A, sigma = df.synthetic_matrix(200, 150, "geometric", decay=0.85, generator=_gen(4))
    k = 20
    for seed in range(3):
        fac = df.nystrom(A, k, generator=_gen(seed))
        err = torch.linalg.matrix_norm(A - fac.reconstruct())
        Q = torch.linalg.qr(A @ fac.info["omega"]).Q
        hmt = torch.linalg.matrix_norm(A - Q @ (Q.mT @ A))
        # Nakatsukasa (2020), eq. (4.2): ‖A − Â‖ ≤ ‖(I − P_AΩ)A‖ + ‖P_{AΩ,Ψ}(I − P_AΩ)A‖, the
        # second term ≈ √(k/(ℓ−k−1)) ≈ 1.5 times the first for ℓ = 1.5k Gaussian Ψ.
        assert hmt >= sigma[k:].norm() * (1 - 1e-12)
        assert err <= 3 * hmt


def test_gradients_flow_through_the_engine():
    A = _low_rank(8, 6, 3).requires_grad_()
    F = torch.randn(8, 3, dtype=torch.float64, generator=_gen(1), requires_grad=True)
    H = torch.randn(6, 3, dtype=torch.float64, generator=_gen(2), requires_grad=True)
    torch.autograd.gradcheck(lambda a, f, h: df.meta_factorize(a, f, h).G, (A, F, H))


@pytest.mark.parametrize(("args", "message"), [
    ((torch.ones(3),), "A must have at least 2 dimensions"),
    ((torch.full((3, 3), float("nan")),), "A must be finite"),
    ((torch.ones(3, 3, dtype=torch.float64), torch.ones(4, 2, dtype=torch.float64)),
     "F must have 3 rows"),
    ((torch.ones(3, 3, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float32)),
     "F must have the dtype of A"),
    ((torch.ones(3, 3, dtype=torch.int64),), "A must be float32 or float64"),
])
def test_bad_input_names_the_argument(args, message):
    full = list(args) + [torch.ones(3, 2, dtype=args[0].dtype if args[0].is_floating_point()
                                    else torch.float64)] * (3 - len(args))
    with pytest.raises((ValueError, TypeError), match=message):
        df.meta_factorize(*full)


def test_recipe_k_out_of_range_is_rejected():
    A = _low_rank(6, 5, 2)
    for fn in (df.svd, df.cpqr, df.utv, df.nystrom, df.cur):
        with pytest.raises(ValueError, match="k must satisfy 1 <= k <= 5"):
            fn(A, 6)
    with pytest.raises(ValueError, match="core must be one of"):
        df.utv(A, 2, core="qr")


def test_float32_path():
    A = _low_rank(30, 20, 4).float()
    for name in ("svd", "cpqr", "cur-optimal", "nystrom"):
        fac = RECIPES[name](A, 4)
        assert fac.G.dtype == torch.float32
        # float32: eps ≈ 6e-8 times the κ ≈ 100 of the low-rank family.
        assert fac.residuals().reconstruction < 1e-4


@pytest.mark.parametrize("name", ["svd", "cpqr", "utv-svd", "nystrom", "cur-optimal"])
def test_recipes_are_differentiable(name):
    # Away from ties (distinct σ, distinct pivot norms) every recipe is a smooth function
    # of A, so autograd through the engine must match finite differences.
    A = df.synthetic_matrix(7, 5, "geometric", decay=0.5, generator=_gen(9))[0]
    A = A.requires_grad_()
    torch.autograd.gradcheck(lambda a: RECIPES[name](a, 3).reconstruct(), (A,))


def test_oversampled_test_matrices_still_give_exact_projectors():
    A = _low_rank(30, 22, 5)
    base = df.svd(A, 5)
    B = torch.randn(30, 9, dtype=torch.float64, generator=_gen(20))  # k' = 9 > k = 5
    D = torch.randn(22, 7, dtype=torch.float64, generator=_gen(21))
    fac = df.meta_factorize(A, base.F, base.H, B=B, D=D)
    torch.testing.assert_close(fac.Y.mT @ fac.F, torch.eye(5, dtype=torch.float64),
                               atol=1e-13, rtol=0)
    _assert_exact(fac)


def test_too_few_test_columns_are_reported_not_hidden():
    A = _low_rank(40, 30, 5)
    base = df.svd(A, 5)
    B = torch.randn(40, 3, dtype=torch.float64, generator=_gen(22))  # cannot capture rank 5
    with pytest.warns(df.RankDeficiencyWarning, match="projector equation holds only"):
        df.meta_factorize(A, base.F, base.H, B=B)


def test_ill_conditioned_core_is_reported():
    A, _ = df.synthetic_matrix(80, 60, "geometric", decay=0.5, generator=_gen(23))
    with pytest.warns(df.RankDeficiencyWarning):
        df.cur(A, 45)  # σ₄₅/σ₁ ≈ 3e-14: the selected C is numerically rank deficient


def test_refinement_never_increases_the_residual():
    A, _ = df.synthetic_matrix(80, 60, "geometric", decay=0.5, generator=_gen(23))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", df.RankDeficiencyWarning)
        fac = df.cur(A, 40)
        errors = [float(df.meta_factorize(A, fac.F, fac.H, refine=r).residuals().reconstruction)
                  for r in (0, 1, 2)]
    assert errors[1] <= errors[0] and errors[2] <= errors[1]


def test_cr_warns_when_leftmost_columns_are_nearly_dependent():
    g = _gen(24)
    basis = torch.randn(30, 5, dtype=torch.float64, generator=g)
    first = torch.stack([basis[:, 0], basis[:, 0] + 1e-9 * basis[:, 1]], dim=1)
    A = torch.cat([first, basis @ torch.randn(5, 18, dtype=torch.float64, generator=g)], dim=1)
    with pytest.warns(df.RankDeficiencyWarning, match="nearly dependent"):
        df.cr(A)


def test_W_must_match_dtype_and_batch():
    A = _low_rank(8, 6, 2)
    fac = df.svd(A, 2)
    with pytest.raises(TypeError, match="W must have the dtype of A"):
        df.meta_factorize(A, fac.F, fac.H, W=torch.ones(2, 2))
    with pytest.raises(ValueError, match="W's batch dimensions"):
        df.meta_factorize(A, fac.F, fac.H, W=torch.ones(3, 2, 2, dtype=torch.float64))


def test_utv_cores_have_the_stated_structure():
    A = _low_rank(20, 15, 6)
    G_svd = df.utv(A, 6, core="svd").G
    torch.testing.assert_close(G_svd, torch.diag(G_svd.diagonal()), atol=1e-12, rtol=0)
    G_urv = df.utv(A, 6, core="cpqr").G
    torch.testing.assert_close(G_urv, G_urv.triu(), atol=1e-12, rtol=0)
    G_ulv = df.utv(A, 6, core="triangular").G
    torch.testing.assert_close(G_ulv, G_ulv.tril(), atol=1e-12, rtol=0)


def test_rank_tolerance_has_one_name():
    """rtol everywhere; the former names (rcond in meta_factorize and nystrom, tol in cr) are
    gone, not shimmed."""
    A, _ = df.synthetic_matrix(30, 20, "low_rank", rank=5,
                               generator=torch.Generator().manual_seed(0))
    U, _, Vh = torch.linalg.svd(A)
    F, H = U[:, :5], Vh[:5].mT
    calls = [
        (lambda **kw: df.meta_factorize(A, F, H, **kw), "rcond"),
        (lambda **kw: df.nystrom(A, 5, generator=torch.Generator().manual_seed(1), **kw),
         "rcond"),
        (lambda **kw: df.cr(A, **kw), "tol"),
    ]
    for call, old in calls:
        torch.testing.assert_close(call(rtol=1e-10).reconstruct(), A, rtol=0, atol=1e-12)
        with pytest.raises(TypeError, match=old):
            call(**{old: 1e-10})
