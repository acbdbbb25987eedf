"""Pseudoinverses: the four Penrose conditions, torch.linalg.pinv, Strang's formulas."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import diffnum.factor as df


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _penrose_residuals(A, P):
    """Relative residuals of AXA = A, XAX = X, (AX)ᵀ = AX, (XA)ᵀ = XA."""
    n = torch.linalg.matrix_norm
    AX, XA = A @ P, P @ A
    return [
        (n(AX @ A - A) / n(A)).max(),
        (n(XA @ P - P) / n(P)).max(),
        (n(AX - AX.mT) / n(AX)).max(),
        (n(XA - XA.mT) / n(XA)).max(),
    ]


CASES = {
    "full-rank tall": lambda: torch.randn(30, 12, dtype=torch.float64, generator=_gen(1)),
    "full-rank wide": lambda: torch.randn(12, 30, dtype=torch.float64, generator=_gen(2)),
    "rank-deficient": lambda: df.synthetic_matrix(25, 20, "rank_deficient", rank=4,
                                                  generator=_gen(3))[0],
    "low-rank batched": lambda: df.synthetic_matrix(18, 14, "low_rank", rank=5, batch=(3,),
                                                    generator=_gen(4))[0],
}


@pytest.mark.parametrize("method", ["svd", "cr", "randomized"])
@pytest.mark.parametrize("case", list(CASES))
def test_penrose_conditions_and_torch_agreement(method, case):
    A = CASES[case]()
    P = df.pinv(A, method, generator=_gen(5))
    assert P.shape == A.mT.shape
    # Each condition is a product of O(1) factors of size κ(A_r) ≲ 1e2 here: 1e-12 is
    # a few hundred eps·κ, as for torch.linalg.pinv itself.
    for residual in _penrose_residuals(A, P):
        assert residual < 1e-12
    torch.testing.assert_close(P, torch.linalg.pinv(A), atol=1e-10, rtol=1e-10)


@given(m=st.integers(1, 20), n=st.integers(1, 20), data=st.data())
def test_pinv_property(m, n, data):
    r = data.draw(st.integers(1, min(m, n)))
    method = data.draw(st.sampled_from(["svd", "cr", "randomized"]))
    A = df.synthetic_matrix(m, n, "low_rank", rank=r, generator=_gen(m + 31 * n))[0]
    P = df.pinv(A, method, generator=_gen(1))
    torch.testing.assert_close(P, torch.linalg.pinv(A), atol=1e-10, rtol=1e-9)


def test_pinv_float32_and_autograd():
    A = torch.randn(5, 4, dtype=torch.float64, generator=_gen(6), requires_grad=True)
    torch.autograd.gradcheck(lambda a: df.pinv(a, "svd"), (A,))
    torch.autograd.gradcheck(lambda a: df.pinv(a, "cr"), (A,))
    P32 = df.pinv(A.detach().float(), "cr")
    assert P32.dtype == torch.float32
    torch.testing.assert_close(P32, torch.linalg.pinv(A.detach().float()), atol=1e-4, rtol=1e-4)


def _strang_error(C, R, formula):
    P = df.strang_pinv(C, R, formula, generator=_gen(7))
    ref = torch.linalg.pinv(C @ R)
    return float(torch.linalg.matrix_norm(P - ref) / torch.linalg.matrix_norm(ref))


def test_strang_formula_1_is_right_exactly_when_C_and_R_have_full_rank():
    g = _gen(8)
    C = torch.randn(8, 3, dtype=torch.float64, generator=g)
    R = torch.randn(3, 6, dtype=torch.float64, generator=g)
    for formula in (1, 2, 3):
        assert _strang_error(C, R, formula) < 1e-13
    # C with dependent columns (the paper's counterexample): (1) fails, (2) and (3) hold.
    C_bad = torch.cat([C[:, :2], C[:, :1]], dim=1)
    assert _strang_error(C_bad, R, 1) > 1e-2
    # R with dependent rows fails the same way.
    R_bad = torch.cat([R[:2], 2 * R[:1]], dim=0)
    assert _strang_error(C, R_bad, 1) > 1e-2
    for C_, R_ in ((C_bad, R), (C, R_bad)):
        for formula in (2, 3):
            assert _strang_error(C_, R_, formula) < 1e-13


def test_strang_formula_3_needs_rank_preserving_sketches():
    g = _gen(9)
    C = torch.randn(8, 3, dtype=torch.float64, generator=g)
    R = torch.randn(3, 6, dtype=torch.float64, generator=g)
    A = C @ R
    P_good = torch.randn(8, 3, dtype=torch.float64, generator=g)
    Q_bad = torch.randn(6, 2, dtype=torch.float64, generator=g)  # rank(AQ) = 2 < 3
    good = df.strang_pinv(C, R, 3, P=P_good, Q=torch.randn(6, 4, dtype=torch.float64,
                                                           generator=g))
    bad = df.strang_pinv(C, R, 3, P=P_good, Q=Q_bad)
    ref = torch.linalg.pinv(A)
    assert torch.linalg.matrix_norm(good - ref) < 1e-12
    assert torch.linalg.matrix_norm(bad - ref) > 1e-2 * torch.linalg.matrix_norm(ref)


def test_bad_arguments():
    A = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="method must be one of"):
        df.pinv(A, "qr")
    with pytest.raises(ValueError, match="C and R must be conformable"):
        df.strang_pinv(A, A)
    with pytest.raises(ValueError, match="formula must be 1, 2 or 3"):
        df.strang_pinv(A, A.mT, formula=4)


def test_randomized_pinv_warns_when_the_sketch_is_below_the_rank():
    A = torch.randn(40, 30, dtype=torch.float64, generator=_gen(10))  # rank 30
    with pytest.warns(df.RankDeficiencyWarning, match="below rank"):
        df.pinv(A, "randomized", k=5, oversample=2, generator=_gen(11))
