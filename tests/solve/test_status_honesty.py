"""CONVERGED must mean converged: NaN midway is NONFINITE, shape changes are rejected, and an
expanded (stride-0) y0 solves like a contiguous one."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from diffnum.solve import (
    AndersonAcceleration,
    Broyden,
    FixedPointIteration,
    GaussNewton,
    LevenbergMarquardt,
    Newton,
    Status,
    UnrollAdjoint,
    fixed_point,
    least_squares,
    root,
)

DT = torch.float64
TIGHT = {"rtol": 1e-13, "atol": 1e-13}
ROOT_SOLVERS = [Newton(**TIGHT), Broyden(**TIGHT)]
FIXED_POINT_SOLVERS = [AndersonAcceleration(**TIGHT), FixedPointIteration(**TIGHT)]
C, NC, D, M = (int(Status.CONVERGED), int(Status.NONFINITE), int(Status.DIVERGED),
               int(Status.MAX_STEPS))


def _ids(solvers):
    return [type(s).__name__ for s in solvers]


# ---------------------------------------------------------------- root: NaN midway is NONFINITE


@pytest.mark.parametrize("solver", ROOT_SOLVERS, ids=_ids(ROOT_SOLVERS))
def test_root_nan_outside_domain_is_nonfinite_per_element(solver):
    # F(y) = y² − c. Element 1 is NaN for y > 2, so its root 3 is out of reach: the line search
    # meets NaN at every full step and finally stalls just below 2. Element 3 (y² + 1, no real
    # root, finite everywhere) still fails as before, without NONFINITE.
    c = torch.tensor([[4.0], [9.0], [2.0], [-1.0]], dtype=DT)
    nan_where = torch.tensor([[False], [True], [False], [False]])

    def F(y):
        return torch.where(nan_where & (y > 2), torch.nan, y**2 - c)

    sol = root(F, torch.full((4, 1), 0.5, dtype=DT), solver=solver)
    assert sol.status[:3].tolist() == [C, NC, C]
    assert int(sol.status[3]) in (D, M)
    torch.testing.assert_close(sol.value[[0, 2], 0], torch.tensor([2.0, 2.0**0.5], dtype=DT),
                               rtol=0, atol=1e-10)
    # The NaN element keeps its last finite iterate (on the finite side of the boundary).
    assert 1.5 < float(sol.value[1, 0]) <= 2.0
    assert bool(torch.isfinite(sol.residual_norm).all())
    assert "batch element (1,): NONFINITE" in sol.describe()


@pytest.mark.parametrize("solver", ROOT_SOLVERS, ids=_ids(ROOT_SOLVERS))
def test_root_fn_turning_nan_after_some_calls_is_nonfinite(solver):
    # From the 3rd call of fn on, element 1 is NaN everywhere; the others must not notice.
    c = torch.tensor([[4.0], [9.0], [2.0]], dtype=DT)
    calls = [0]

    def F(y):
        calls[0] += 1
        out = y**2 - c
        if calls[0] >= 3:
            out = out.clone()
            out[1] = torch.nan
        return out

    sol = root(F, torch.full((3, 1), 0.5, dtype=DT), solver=solver)
    assert sol.status.tolist() == [C, NC, C]
    torch.testing.assert_close(sol.value[[0, 2], 0], torch.tensor([2.0, 2.0**0.5], dtype=DT),
                               rtol=0, atol=1e-10)
    assert bool(torch.isfinite(sol.value).all())


@pytest.mark.parametrize("solver", ROOT_SOLVERS, ids=_ids(ROOT_SOLVERS))
def test_root_nonfinite_jacobian_is_nonfinite(solver):
    c = torch.tensor([[4.0], [9.0], [2.0]], dtype=DT)
    poisoned = torch.tensor([False, True, False])

    def jac(y):
        J = torch.diag_embed(2 * y)
        return torch.where(poisoned[:, None, None], torch.inf, J)

    sol = root(lambda y: y**2 - c, torch.full((3, 1), 0.5, dtype=DT), solver=solver,
               jacobian=jac)
    assert sol.status.tolist() == [C, NC, C]
    torch.testing.assert_close(sol.value[[0, 2], 0], torch.tensor([2.0, 2.0**0.5], dtype=DT),
                               rtol=0, atol=1e-10)


def test_root_nonfinite_element_gets_zero_gradient_others_exact():
    # Implicit gradient: dy*/dc = 1 / (2 √c) for converged elements; none for the NaN one.
    c = torch.tensor([[4.0], [9.0], [2.0]], dtype=DT, requires_grad=True)
    nan_where = torch.tensor([[False], [True], [False]])

    def F(y, c):
        return torch.where(nan_where & (y > 2), torch.nan, y**2 - c)

    sol = root(F, torch.full((3, 1), 0.5, dtype=DT), (c,), solver=Newton(**TIGHT))
    assert sol.status.tolist() == [C, NC, C]
    (grad,) = torch.autograd.grad(sol.value.sum(), c)
    expected = torch.tensor([[0.25], [0.0], [0.5 / 2.0**0.5]], dtype=DT)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=0)


def test_fixed_point_nan_midway_is_nonfinite_per_element():
    # The fixed-point solvers already label NaN NONFINITE; pinned here alongside root.
    a = torch.tensor([[0.5], [0.5], [0.9]], dtype=DT)
    calls = [0]

    def T(y):
        calls[0] += 1
        out = a * y + 1
        if calls[0] >= 4:
            out = out.clone()
            out[1] = torch.nan
        return out

    for solver in FIXED_POINT_SOLVERS:
        calls[0] = 0
        sol = fixed_point(T, torch.zeros(3, 1, dtype=DT), solver=solver, max_steps=500)
        assert sol.status.tolist() == [C, NC, C]
        # residual <= 1e-13·(1 + |y|), error = residual / (1 − a) <= 1.1e-11.
        torch.testing.assert_close(sol.value[[0, 2], 0], torch.tensor([2.0, 10.0], dtype=DT),
                                   rtol=0, atol=1e-10)


# ------------------------------------------------------ fixed_point / root: shape changes raise


@pytest.mark.parametrize("bad", ["n_plus_1", "broadcast_batch", "broadcast_n"])
def test_fixed_point_rejects_wrong_shape_at_first_evaluation(bad):
    y0 = torch.zeros(3, 2, dtype=DT)
    wrong = {
        "n_plus_1": lambda y: torch.cat([0.5 * y, y[..., :1]], -1),         # (3, 3)
        "broadcast_batch": lambda y: (0.5 * y).expand(4, 3, 2),              # (4, 3, 2)
        "broadcast_n": lambda y: 0.5 * y[..., :1],                           # (3, 1)
    }[bad]
    got = re.escape(str(tuple(wrong(y0).shape)))
    with pytest.raises(ValueError, match=(r"fixed_point: fn\(y0, \*args\) must return shape "
                                          r"\(\*batch, n\) = \(3, 2\) .* got " + got)):
        fixed_point(wrong, y0)


def _changes_shape_after(calls_ok: int, kind: str):
    calls = [0]

    def T(y):
        calls[0] += 1
        out = 0.5 * y + 1
        if calls[0] <= calls_ok:
            return out
        # Each wrong shape broadcasts against y (or is concatenated) without complaint from
        # torch; the shape stays bounded, so an unchecked solve would end, not blow up.
        if kind == "n_plus_1":
            return torch.cat([out, out[..., :1]], -1)
        if kind == "row":
            return out[:1]
        return out.expand(2, 3, 2) if out.ndim == 2 else out
    return T


WRONG = [("n_plus_1", r"\(3, 3\)"), ("row", r"\(1, 2\)"), ("leading", r"\(2, 3, 2\)")]


@pytest.mark.parametrize("kind,got", WRONG)
@pytest.mark.parametrize("solver", [*FIXED_POINT_SOLVERS, None],
                         ids=[*_ids(FIXED_POINT_SOLVERS), "UnrollAdjoint"])
def test_fixed_point_rejects_shape_change_during_solve(solver, kind, got):
    kwargs = {"solver": solver} if solver is not None else {"adjoint": UnrollAdjoint()}
    y0 = torch.zeros(3, 2, dtype=DT)
    with pytest.raises(ValueError, match=(r"fixed_point: fn\(y, \*args\) must return the shape "
                                          r"of y, \(3, 2\) = \(\*batch, n\), got " + got)):
        fixed_point(_changes_shape_after(3, kind), y0, **kwargs)


def test_fixed_point_rejects_shape_change_in_gradient_evaluation():
    # Right shape while solving (no grad), broadcast once autograd records the re-evaluation.
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=DT, requires_grad=True)

    def T(y, c):
        out = 0.5 * y + c
        return out.expand(2, *out.shape) if torch.is_grad_enabled() else out

    with pytest.raises(ValueError, match=r"must return the shape of y, \(3, 2\).*got \(2, 3, 2\)"):
        fixed_point(T, torch.zeros(3, 2, dtype=DT), (c,))


def test_fixed_point_rejects_dtype_change_during_solve():
    calls = [0]

    def T(y):
        calls[0] += 1
        out = 0.5 * y + 1
        return out if calls[0] <= 2 else out.float()

    with pytest.raises(TypeError, match=r"fixed_point: fn\(y, \*args\) must return dtype "
                                        r"torch.float64 like y, got torch.float32"):
        fixed_point(T, torch.zeros(3, 2, dtype=DT))


@pytest.mark.parametrize("kind,got", WRONG)
@pytest.mark.parametrize("solver", ROOT_SOLVERS, ids=_ids(ROOT_SOLVERS))
def test_root_rejects_shape_change_during_solve(solver, kind, got):
    with pytest.raises(ValueError, match=(r"root: fn\(y, \*args\) must return the shape of y, "
                                          r"\(3, 2\) = \(\*batch, n\), got " + got)):
        root(_changes_shape_after(2, kind), torch.zeros(3, 2, dtype=DT), solver=solver)


def test_shape_check_leaves_correct_solves_alone():
    sol = fixed_point(lambda y: 0.5 * y + 1, torch.zeros(3, 2, dtype=DT),
                      solver=AndersonAcceleration(**TIGHT))
    assert sol.all_converged
    torch.testing.assert_close(sol.value, torch.full((3, 2), 2.0, dtype=DT), rtol=0, atol=1e-12)


# ------------------------------------------------------------------- expanded (stride-0) y0

C3 = torch.tensor([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]], dtype=DT)


def _least_squares(y0):
    # Overdetermined (m = 4 > n = 2), zero residual at y = C3: r = [y − c, 0.1 (y² − c²)].
    def r(y):
        return torch.cat([y - C3, 0.1 * (y**2 - C3**2)], -1)
    return least_squares(r, y0, solver=LevenbergMarquardt(**TIGHT))


def _least_squares_gn(y0):
    return least_squares(lambda y: torch.cat([y - C3, 0.1 * (y - C3)], -1), y0,
                         solver=GaussNewton(**TIGHT))


def _root(y0):
    return root(lambda y: y + 0.3 * y**3 - (C3 + 0.3 * C3**3), y0, solver=Newton(**TIGHT))


def _root_broyden(y0):
    return root(lambda y: y + 0.3 * y**3 - (C3 + 0.3 * C3**3), y0, solver=Broyden(**TIGHT))


def _fixed_point(y0):
    return fixed_point(lambda y: 0.5 * y + 0.5 * C3, y0, solver=AndersonAcceleration(**TIGHT))


SOLVES = {"least_squares_lm": _least_squares, "least_squares_gn": _least_squares_gn,
          "root_newton": _root, "root_broyden": _root_broyden, "fixed_point": _fixed_point}


@pytest.mark.parametrize("name", list(SOLVES))
def test_expanded_y0_solves_like_contiguous(name):
    y0 = torch.zeros(2, dtype=DT).expand(3, 2)
    assert 0 in y0.stride()
    sol = SOLVES[name](y0)
    assert sol.all_converged
    # Every element found its own solution: the rows of the iterate are independent memory.
    torch.testing.assert_close(sol.value, C3, rtol=0, atol=1e-10)
    reference = SOLVES[name](torch.zeros(3, 2, dtype=DT))
    torch.testing.assert_close(sol.value, reference.value, rtol=0, atol=0)
    assert sol.status.tolist() == reference.status.tolist()
    assert sol.steps.tolist() == reference.steps.tolist()
    assert bool((y0 == 0).all())


@pytest.mark.parametrize("name", list(SOLVES))
def test_non_contiguous_and_numpy_y0_left_untouched(name):
    transposed = torch.zeros(2, 3, dtype=DT).T  # (3, 2), a non-contiguous view
    assert not transposed.is_contiguous()
    array = np.zeros((3, 2))
    for y0 in (transposed, array):
        sol = SOLVES[name](y0)
        assert sol.all_converged
        torch.testing.assert_close(sol.value, C3, rtol=0, atol=1e-10)
    assert bool((transposed == 0).all()) and bool((array == 0).all())


@pytest.mark.parametrize("solve", [root, fixed_point], ids=["root", "fixed_point"])
def test_solution_at_y0_does_not_alias_y0(solve):
    # y0 already solves the problem: no step is taken, yet value must be a new tensor, so
    # writing to it cannot change the caller's y0.
    y0 = torch.full((3, 2), 2.0, dtype=DT)
    fn = (lambda y: y - 2.0) if solve is root else (lambda y: 0.5 * y + 1.0)
    sol = solve(fn, y0)
    assert sol.all_converged and sol.steps.tolist() == [0, 0, 0]
    assert sol.value.data_ptr() != y0.data_ptr()
    sol.value.add_(1.0)
    assert bool((y0 == 2.0).all())


def test_expanded_y0_with_gradient_through_unrolled_solve():
    # An expanded y0 that requires grad: the copy keeps its graph. F(y) = y − c has J = I, so
    # the first Newton step lands on c whatever y0 is: dy*/dy0 = I − J⁻¹J = 0, exactly.
    base = torch.zeros(2, dtype=DT, requires_grad=True)
    sol = root(lambda y: y - C3, base.expand(3, 2), solver=Newton(**TIGHT),
               adjoint=UnrollAdjoint())
    assert sol.all_converged
    torch.testing.assert_close(sol.value.detach(), C3, rtol=0, atol=1e-12)
    sol.value.sum().backward()
    assert base.grad is not None
    torch.testing.assert_close(base.grad, torch.zeros(2, dtype=DT), rtol=0, atol=1e-15)


def _null_space_problem(seed: int):
    """r = [A y − b; ε y] with A of rank 2 in R³ (20 rows): the null direction of A is curved
    by ε² alone. Start 10 units along it."""
    g = torch.Generator().manual_seed(seed)
    A = (torch.randn(3, 20, 2, dtype=DT, generator=g)
         @ torch.randn(3, 2, 3, dtype=DT, generator=g))
    b = torch.randn(3, 20, dtype=DT, generator=g)
    null = torch.linalg.svd(A).Vh[..., -1, :]
    return A, b, 10 * null


def _ridge_residual(y, A, b, eps):
    return torch.cat([(A @ y.unsqueeze(-1)).squeeze(-1) - b, eps * y], -1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lm_reports_a_null_space_only_a_tiny_ridge_curves_as_ill_conditioned(seed):
    # ε = 1e-5: curvature 1e-10 along the null direction against columns of order 1-10; cond
    # of [A; εI] is ~1e6, so the normal equations (cond² ~1e12) do not determine y to
    # rtol = 1e-8 in float64. LM's steps along it are accepted, keep moving y and lower ½‖r‖²
    # by nothing; the wander test must say so (ILL_CONDITIONED within a few steps). Measured
    # without it: CONVERGED after 25–100 steps 5e-6 to 1.5e-4 from the minimizer, or MAX_STEPS.
    A, b, y0 = _null_space_problem(seed)
    solver = LevenbergMarquardt(rtol=1e-8, atol=1e-8)
    out = least_squares(_ridge_residual, y0, (A, b, 1e-5), solver=solver, max_steps=100)
    assert out.status.tolist() == [int(Status.ILL_CONDITIONED)] * 3
    assert int(out.steps.max()) <= 20
    # ... while ε = 1e-2 curves it enough: CONVERGED, at the ridge-regularized minimizer.
    out = least_squares(_ridge_residual, y0, (A, b, 1e-2), solver=solver, max_steps=100)
    assert out.all_converged
    eye = 1e-2 * torch.eye(3, dtype=DT).expand(3, 3, 3)
    rhs = torch.cat([b, torch.zeros(3, 3, dtype=DT)], -1).unsqueeze(-1)
    expected = torch.linalg.lstsq(torch.cat([A, eye], -2), rhs).solution[..., 0]
    torch.testing.assert_close(out.value, expected, rtol=1e-8, atol=0)  # measured ≤ 8e-11
