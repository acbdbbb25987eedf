"""One result protocol: every call that can fail answers "did it fail?" the same way —
a ``status`` of :class:`diffnum.Status` codes per batch element, ``failures()`` as
``(batch index, Status)`` pairs, ``describe()`` one line per failed element, and
``raise_if_failed()`` / ``throw=True`` raising a :class:`diffnum.ResultError`."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import diffnum.factor as df
from diffnum import ResultError, Status
from diffnum._core import status as core_status
from diffnum.solve import Solution, SolveError, least_squares


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


# A well-conditioned and an ill-conditioned SPD matrix: 60 Taylor terms reach √eps for the
# first (Z = I − Â has spectral radius < 0.7), nowhere near it for the second (κ = 1e8).
WELL = torch.diag(_f64([1.0, 1.2, 1.4, 1.6]))
ILL = torch.diag(torch.logspace(0, -8, 4, dtype=torch.float64))


def _spd(n: int, seed: int) -> torch.Tensor:
    C = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return C @ C.mT + n * torch.eye(n, dtype=torch.float64)


def test_one_status_enum_for_every_pillar():
    import diffnum.solve

    assert diffnum.solve.Status is Status is core_status.Status
    assert issubclass(SolveError, ResultError) and issubclass(ResultError, RuntimeError)
    assert [int(s) for s in Status] == [0, 1, 2, 3, 4]  # stored codes never change meaning
    assert all(isinstance(s.message, str) and s.message for s in Status)
    assert set(diffnum.__all__) >= {"Status", "ResultError"}


# ---- sqrtm_ex


@pytest.mark.parametrize("method", ["newton_schulz", "taylor", "pade", "eigh"])
@pytest.mark.parametrize("inverse", [False, True])
def test_sqrtm_ex_converged_is_sqrtm_with_diagnostics(method, inverse):
    A = torch.stack([_spd(6, 0), _spd(6, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = df.sqrtm(A, method, inverse)
        out = df.sqrtm_ex(A, method, inverse)
    assert torch.equal(out.value, plain)
    assert out.all_converged and out.failures() == [] and out.describe() == ""
    assert out.status.shape == out.steps.shape == out.residual.shape == (2,)
    assert out.status.dtype == out.steps.dtype == torch.int64
    assert bool((out.residual <= math.sqrt(torch.finfo(A.dtype).eps)).all())
    # κ: exact for eigh, a lower bound otherwise (never above the truth).
    truth = torch.linalg.cond(A)
    assert bool((out.condition <= truth * (1 + 1e-10)).all())
    assert bool((out.condition >= 0.5 * truth).all())
    assert int(out.steps.min()) >= (0 if method == "eigh" else 1)


def test_sqrtm_ex_not_converged_names_the_element():
    out = df.sqrtm_ex(torch.stack([WELL, ILL]), "taylor", steps=60)
    assert out.failures() == [((1,), Status.MAX_STEPS)]
    assert out.converged.tolist() == [True, False] and out.steps.tolist() == [60, 60]
    assert float(out.residual[1]) > math.sqrt(torch.finfo(torch.float64).eps)
    assert out.describe().startswith("batch element (1,): MAX_STEPS — ")
    assert "steps=60" in out.describe() and "condition=1.000e+08" in out.describe()
    # The thin function still warns, from the same diagnostics.
    with pytest.warns(RuntimeWarning, match="did not reach the tolerance"):
        df.sqrtm(torch.stack([WELL, ILL]), "taylor", steps=60)


def test_sqrtm_ex_one_newton_schulz_step_is_not_convergence():
    out = df.sqrtm_ex(ILL, steps=1)
    assert out.failures() == [((), Status.MAX_STEPS)] and int(out.steps) == 1
    assert df.sqrtm_ex(ILL).all_converged  # the adaptive budget does converge


def test_sqrtm_ex_inverse_of_a_numerically_singular_matrix_is_ill_conditioned():
    A = torch.diag(torch.tensor([1.0, 1e-8]))  # κ = 1e8 > 1/eps in float32
    for method in ("eigh", "newton_schulz"):
        out = df.sqrtm_ex(A, method, inverse=True)
        assert out.failures() == [((), Status.ILL_CONDITIONED)], method
        assert float(out.condition) * torch.finfo(torch.float32).eps >= 1
        with pytest.warns(df.RankDeficiencyWarning, match="numerically singular"):
            df.sqrtm(A, method, inverse=True)
    # The forward root of the same matrix is well determined.
    assert Status.ILL_CONDITIONED not in [s for _, s in df.sqrtm_ex(A, "eigh").failures()]


def test_sqrtm_ex_throw_raises_result_error():
    with pytest.raises(ResultError, match=r"sqrtm_ex: 1 of 2 batch element\(s\) failed:\n"
                                          r"batch element \(1,\): MAX_STEPS"):
        df.sqrtm_ex(torch.stack([WELL, ILL]), "taylor", steps=60, throw=True)
    df.sqrtm_ex(WELL, "taylor", steps=60, throw=True)  # nothing failed: no error
    with pytest.raises(TypeError, match="throw must be a bool"):
        df.sqrtm_ex(WELL, throw=1)


@pytest.mark.parametrize("method", ["newton_schulz", "pade"])
@pytest.mark.parametrize("inverse", [False, True])
def test_sqrtm_ex_gradient_is_sqrtm_gradient(method, inverse):
    A = _spd(5, 3).requires_grad_(True)
    weight = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (g_plain,) = torch.autograd.grad((df.sqrtm(A, method, inverse) * weight).sum(), A)
    (g_ex,) = torch.autograd.grad((df.sqrtm_ex(A, method, inverse).value * weight).sum(), A)
    assert torch.equal(g_plain, g_ex)
    # Symmetrized inside, as in test_sqrtm: finite differences perturb one entry at a time.
    A = _spd(4, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda M: df.sqrtm_ex(0.5 * (M + M.mT), method, inverse).value, (A,))


def test_sqrtm_ex_diagnostics_carry_no_gradient():
    A = _spd(4, 6).requires_grad_(True)
    out = df.sqrtm_ex(A)
    assert out.value.requires_grad
    assert not (out.residual.requires_grad or out.condition.requires_grad
                or out.steps.requires_grad)


def test_sqrtm_ex_empty_and_batched_shapes():
    out = df.sqrtm_ex(torch.zeros(0, 4, 4, dtype=torch.float64))  # an empty batch
    assert out.value.shape == (0, 4, 4) and out.status.shape == (0,) and out.failures() == []
    out = df.sqrtm_ex(torch.stack([torch.stack([WELL, ILL])] * 2), "taylor", steps=60)
    assert out.failures() == [((0, 1), Status.MAX_STEPS), ((1, 1), Status.MAX_STEPS)]


# ---- msign_ex


def _rank_one_and_full(seed: int = 1) -> torch.Tensor:
    M = torch.randn(2, 8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    M[1] = M[1, :, :1] @ M[1, :1, :]  # rank 1: seven singular values are zero
    return M


def test_msign_ex_converged_is_msign_with_diagnostics():
    M = torch.randn(3, 16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = df.msign(M)
        out = df.msign_ex(M)
    assert torch.equal(out.value, plain)
    assert out.all_converged and out.failures() == [] and out.describe() == ""
    assert out.steps.tolist() == [5, 5, 5]
    lo, hi = out.band
    s = torch.linalg.svdvals(out.value)
    assert lo - 1e-9 <= float(s.min()) and float(s.max()) <= hi + 1e-9
    assert 0 < out.threshold < 1e-2


def test_msign_ex_rank_deficient_element_is_ill_conditioned():
    M = _rank_one_and_full()
    out = df.msign_ex(M)
    assert out.failures() == [((1,), Status.ILL_CONDITIONED)]
    assert out.describe().startswith("batch element (1,): ILL_CONDITIONED — ")
    with pytest.warns(df.RankDeficiencyWarning, match="singular values below"):
        plain = df.msign(M)
    assert torch.equal(plain, out.value)
    # One step lifts far less: an ill-conditioned but full-rank M fails it as well.
    one = df.msign_ex(torch.diag(_f64([1.0, 1e-6])), steps=1)
    assert one.failures() == [((), Status.ILL_CONDITIONED)] and one.steps.tolist() == 1
    with pytest.raises(ResultError, match="msign_ex: 1 of 2"):
        df.msign_ex(M, throw=True)


def test_msign_ex_zero_svd_and_tall_inputs():
    assert df.msign_ex(torch.zeros(3, 4)).all_converged  # M = 0 maps to 0 by design
    out = df.msign_ex(_rank_one_and_full(), method="svd")
    assert out.all_converged and out.band is None and out.threshold is None
    assert out.steps.tolist() == [0, 0]
    tall = df.msign_ex(_rank_one_and_full().mT)  # m > n is transposed inside
    assert tall.failures() == [((1,), Status.ILL_CONDITIONED)]
    assert tall.value.shape == (2, 12, 8)


# ---- MetaFactorization


def _nearly_dependent() -> torch.Tensor:
    g = torch.Generator().manual_seed(24)
    basis = torch.randn(30, 5, dtype=torch.float64, generator=g)
    first = torch.stack([basis[:, 0], basis[:, 0] + 1e-9 * basis[:, 1]], dim=1)
    return torch.cat([first, basis @ torch.randn(5, 18, dtype=torch.float64, generator=g)],
                     dim=1)


def test_meta_factorization_status():
    A, _ = df.synthetic_matrix(30, 20, "low_rank", rank=5,
                               generator=torch.Generator().manual_seed(0))
    fac = df.svd(torch.stack([A, 2 * A]), k=5)
    assert fac.status.tolist() == [0, 0] and fac.failures() == [] and fac.all_converged
    with pytest.warns(df.RankDeficiencyWarning) as caught:  # "nearly dependent" from cr too
        bad = df.cr(_nearly_dependent())
    assert any("projector equation holds only" in str(w.message) for w in caught)
    assert bad.failures() == [((), Status.ILL_CONDITIONED)]
    assert "projector_F=" in bad.describe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = df.meta_factorize(torch.stack([bad.A, bad.A]), bad.F, bad.H)  # F, H unbatched
    assert both.failures() == [((0,), Status.ILL_CONDITIONED), ((1,), Status.ILL_CONDITIONED)]
    assert both.describe().count("projector_H=") == 2
    with pytest.raises(ResultError, match="meta_factorize: 1 of 1"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df.meta_factorize(bad.A, bad.F, bad.H, throw=True)


def test_truncated_pseudoinverse_fallback_is_a_flag_not_a_failure():
    A = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    F = A[:, :1].repeat(1, 2)  # two equal columns: BᵀF is singular
    H = torch.eye(4, dtype=torch.float64)[:, :2]
    with pytest.warns(df.RankDeficiencyWarning, match="truncated pseudoinverse"):
        fac = df.meta_factorize(A, F, H, throw=True)  # does not raise
    assert fac.rank_deficient and fac.all_converged and fac.failures() == []


def test_meta_factorization_checks_a_given_status():
    fac = df.svd(torch.eye(4, dtype=torch.float64), 2)
    fields = {k: v for k, v in fac.__dict__.items()}
    with pytest.raises(TypeError, match="status must be None or an integer tensor"):
        df.MetaFactorization(**{**fields, "status": torch.zeros(3, dtype=torch.int64)})
    with pytest.raises(TypeError, match="status must be None or an integer tensor"):
        df.MetaFactorization(**{**fields, "status": torch.zeros(())})
    made = df.MetaFactorization(**{**fields, "status": None})
    assert made.status.dtype == torch.int64 and made.status.shape == ()


# ---- the same situation reads the same in every result class


def test_failures_and_describe_agree_across_result_classes():
    """Element 1 of a batch of 2 used up its steps: a solve, a square root and a constrained
    layer answer with the same failures() and the same describe() head."""
    sol = Solution(value=torch.zeros(2, 1, dtype=torch.float64), status=torch.tensor([0, 1]),
                   steps=torch.tensor([3, 60]), residual_norm=_f64([0.0, 1e-3]))
    root = df.sqrtm_ex(torch.stack([WELL, ILL]), "taylor", steps=60)
    assert sol.failures() == root.failures() == [((1,), Status.MAX_STEPS)]
    head = "batch element (1,): MAX_STEPS — " + Status.MAX_STEPS.message + "; steps=60"
    assert sol.describe().startswith(head) and root.describe().startswith(head)
    for result, error in ((sol, SolveError), (root, ResultError)):
        with pytest.raises(error) as caught:
            result.raise_if_failed("call")
        assert str(caught.value).splitlines() == ["call: 1 of 2 batch element(s) failed:",
                                                  result.describe()]
    # A solve that really ran: NONFINITE at the same place in every reading.
    target = _f64([[1.0], [float("nan")]])
    ls = least_squares(lambda y: y - target, torch.zeros(2, 1, dtype=torch.float64))
    assert ls.failures() == [((1,), Status.NONFINITE)]
    assert ls.describe().startswith("batch element (1,): NONFINITE — produced non-finite")


def test_results_print_on_one_line():
    for out, name in ((df.sqrtm_ex(torch.stack([WELL] * 64)), "SqrtmResult"),
                      (df.msign_ex(torch.randn(64, 32, 48)), "MsignResult")):
        text = repr(out)
        assert text.startswith(f"{name}(value=tensor(64×") and "\n" not in text, text
        assert len(text) < 400, text
