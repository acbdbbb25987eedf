"""The hard-constraint layer and its mixture of experts: closed forms, exactness of K = 1,
implicit gradients against finite differences, failure reporting."""

import itertools
import math

import pytest
import torch

from diffnum.constrain import (
    HardConstraint,
    MixtureOfExperts,
    expert_index,
    expert_residual,
    interface_jumps,
    interior_mask,
    partition_domain,
)
from diffnum.pde import Burgers1D, DiffusionSorption1D, Heat1D, NavierStokes2D, uniform_grid
from diffnum.solve import ImplicitAdjoint, LevenbergMarquardt, Status, UnrollAdjoint


def _heat_problem(batch=2, n=6, nx=16, nt=9, seed=0, time_powers=(0, 1)):
    grid = uniform_grid({"x": (0.0, 1.0, nx), "t": (0.0, 0.2, nt)})
    pde = Heat1D(0.1, boundary="dirichlet")
    x, t = grid.mesh()
    g = torch.Generator().manual_seed(seed)
    # Smooth columns: polynomials in x and t times random coefficients.
    tau = t / 0.2  # columns of order one, so that the weights are too
    monomials = torch.stack([x**i * tau**j for i in range(3) for j in time_powers], -1).reshape(
        grid.size, 6)
    mix = torch.randn(batch, 6, n, dtype=torch.float64, generator=g)
    basis = monomials @ mix
    initial = torch.sin(math.pi * grid.coordinates[0]).expand(batch, nx)
    return pde, grid, basis, initial


def test_linear_pde_gives_the_closed_form_least_squares_weights():
    pde, grid, basis, initial = _heat_problem()
    layer = HardConstraint(pde, None, ridge=1e-3, constraints="rows")
    out = layer(basis, grid, initial)
    assert bool(out.converged.all())
    terms = pde.basis_terms(basis, grid)
    # F(Bw) = (B_t − κ B_xx) w at the interior points (every t, not x ∈ {0, 1}).
    interior = interior_mask(pde, grid).reshape(-1)
    assert int(interior.sum()) == (16 - 2) * 9
    A_pde = (terms["u_t"] - 0.1 * terms["u_xx"])[:, interior]
    C, c, _ = pde.constraint_rows(basis, grid, initial)
    eye = 1e-3 * torch.eye(basis.shape[-1], dtype=torch.float64).expand(2, -1, -1)
    A = torch.cat([A_pde, C, eye], dim=-2)
    rhs = torch.cat([torch.zeros(2, A_pde.shape[-2], dtype=torch.float64), c,
                     torch.zeros(2, basis.shape[-1], dtype=torch.float64)], -1)
    expected = torch.linalg.lstsq(A, rhs.unsqueeze(-1)).solution.squeeze(-1)
    # One LM step on a linear problem is the damped normal-equation solve; its convergence
    # test (rtol 1e-8 on the step) leaves at most ~1e-8 relative to |w|.
    torch.testing.assert_close(out.weights[:, 0], expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(out.u, (basis @ out.weights[:, 0].unsqueeze(-1)).reshape(
        2, *grid.shape), rtol=0, atol=0)


def test_eliminated_conditions_give_the_closed_form_and_hold_exactly():
    # Powers t¹, t²: the lifted basis keeps full rank. (With t⁰ its null space is curved by the
    # ridge alone, 1e-6 against columns of order 10², which is float64's resolution at
    # rtol = 1e-8: whether LM settles there or is reported ILL_CONDITIONED is then decided by
    # rounding, measured to differ between an Intel and an AMD CPU.)
    pde, grid, basis, initial = _heat_problem(time_powers=(1, 2))
    out = HardConstraint(pde, None, ridge=1e-3)(basis, grid, initial)
    assert bool(out.converged.all())
    lifted, particular = pde.lift(basis, grid, initial)
    terms = pde.basis_terms(lifted, grid)
    p_terms = pde.field_terms(particular.reshape(2, *grid.shape), grid)
    interior = interior_mask(pde, grid).reshape(-1)
    A = (terms["u_t"] - 0.1 * terms["u_xx"])[:, interior]
    f = (p_terms["u_t"] - 0.1 * p_terms["u_xx"]).reshape(2, -1)[:, interior]
    eye = 1e-3 * torch.eye(basis.shape[-1], dtype=torch.float64).expand(2, -1, -1)
    rhs = torch.cat([-f, torch.zeros(2, basis.shape[-1], dtype=torch.float64)], -1)
    expected = torch.linalg.lstsq(torch.cat([A, eye], -2), rhs.unsqueeze(-1)).solution[..., 0]
    torch.testing.assert_close(out.weights[:, 0], expected, rtol=1e-7, atol=1e-9)
    # u = u_p + B̃ w meets u₀ at t₀ (open interval) and g at both ends, exactly.
    assert float(pde.initial_residual(out.u, grid, initial).abs().max()) == 0.0
    assert float(pde.boundary_residual(out.u, grid).abs().max()) == 0.0
    assert float(out.violation["initial"].max()) == 0.0
    assert float(out.violation["boundary"].max()) == 0.0


@pytest.mark.parametrize("constraints", ["eliminate", "rows"])
def test_realizable_solution_leaves_no_residual_at_the_sampled_points(constraints):
    # u = x² + 2κt solves the heat equation, and finite differences of order 2 are exact on
    # quadratics, so a basis spanning it admits r = 0 (ridge off).
    kappa = 0.1
    grid = uniform_grid({"x": (0.0, 1.0, 17), "t": (0.0, 0.2, 9)})
    x, t = grid.mesh()
    pde = Heat1D(kappa, boundary="dirichlet", boundary_values=(lambda s: 2 * kappa * s,
                                                               lambda s: 1 + 2 * kappa * s),
                 accuracy=2)
    basis = torch.stack([torch.ones_like(x), x, x**2, t, x * t, torch.cos(3 * x)], -1)
    basis = basis.reshape(1, grid.size, 6)
    initial = grid.coordinates[0] ** 2
    tol = 1e-10
    layer = HardConstraint(pde, 64, ridge=0.0, solver=LevenbergMarquardt(rtol=tol, atol=tol),
                           constraints=constraints)
    out = layer(basis, grid, initial, generator=torch.Generator().manual_seed(3))
    assert bool(out.converged.all())
    assert float(out.solution.residual_norm.max()) <= tol
    exact = x**2 + 2 * kappa * t
    torch.testing.assert_close(out.u[0], exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("constraints", ["eliminate", "rows"])
@pytest.mark.parametrize("pde_kind", ["heat", "burgers", "diffusion-sorption"])
def test_single_expert_mixture_is_the_hard_constraint_exactly(pde_kind, constraints):
    pde, grid, basis, initial = _heat_problem(batch=3)
    if pde_kind == "burgers":
        pde = Burgers1D(0.05, boundary="dirichlet")
    elif pde_kind == "diffusion-sorption":
        pde = DiffusionSorption1D()
        initial = 0.1 * torch.ones(3, 16, dtype=torch.float64)
    layer = HardConstraint(pde, 48, constraints=constraints)
    a = layer(basis, grid, initial, generator=torch.Generator().manual_seed(7))
    b = MixtureOfExperts(layer, (1, 1))(basis, grid, initial,
                                        generator=torch.Generator().manual_seed(7))
    for name in ("u", "weights", "status"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("value", "status", "steps", "residual_norm"):
        assert torch.equal(getattr(a.solution, name), getattr(b.solution, name)), name
    for name in ("pde", "initial", "boundary"):
        assert torch.equal(a.violation[name], b.violation[name]), name


def test_experts_fit_their_own_blocks_and_route_rows():
    pde, grid, basis, initial = _heat_problem(batch=2, nx=16, nt=8)
    layer = HardConstraint(pde, 64, constraints="rows")
    replicate = MixtureOfExperts(layer, {"x": 4})
    out = replicate(basis, grid, initial, generator=torch.Generator().manual_seed(1))
    assert out.weights.shape == (2, 4, 6) and bool(out.converged.all())
    # u on block k is B w_k (the same N-term dot products, summed by another kernel).
    blocks = partition_domain(basis, grid, (4, 1))
    index = expert_index(grid, (4, 1))
    # Equal within the rounding bound of an N-term dot product, N·eps·Σ|B_i w_i|: where the
    # terms cancel, the two kernels' summation orders differ by more than eps·|u|.
    eps = torch.finfo(torch.float64).eps
    for k in range(4):
        w = out.weights[:, k].unsqueeze(-1)
        gap = out.u.reshape(2, -1)[:, index[k]] - (blocks[:, k] @ w)[..., 0]
        bound = 6 * eps * (blocks[:, k].abs() @ w.abs())[..., 0]
        assert bool((gap.abs() <= bound).all()), float((gap.abs() / bound).max())
    # replicate: every expert has all 14 initial rows (the corners belong to the boundary
    # conditions) + 16 boundary rows; partition: its own.
    assert out.stats["constraint_rows_per_expert"] == 14 + 2 * 8
    part = MixtureOfExperts(layer, (2, 2), routing="partition")(
        basis, grid, initial, generator=torch.Generator().manual_seed(1))
    # The largest share: 7 initial + 4 boundary rows (corner blocks at t = 0).
    assert part.stats["constraint_rows_per_expert"] == 7 + 4
    assert bool(part.converged.all())


def test_experts_hold_the_conditions_exactly_on_their_blocks():
    pde = DiffusionSorption1D()
    _, grid, basis, _ = _heat_problem(batch=2, nx=16, nt=8)
    initial = torch.tensor([[0.05], [0.18]], dtype=torch.float64).expand(2, 16)
    out = MixtureOfExperts(HardConstraint(pde, 64, residual_scale=500.0), (4, 1))(
        basis, grid, initial, generator=torch.Generator().manual_seed(1))
    lifted, particular = pde.lift(basis, grid, initial)
    index = expert_index(grid, (4, 1))
    for k in range(4):
        expected = particular[:, index[k]] + (lifted[:, index[k]] @ out.weights[:, k, :, None])[
            ..., 0]
        torch.testing.assert_close(out.u.reshape(2, -1)[:, index[k]], expected, rtol=1e-13,
                                   atol=1e-14)
    # Relative error at t = 0 (open interval) and on both boundaries, per expert.
    at_start = pde.initial_residual(out.u, grid, initial).abs().amax(-1)
    assert float((at_start / initial.abs().amax(-1)).max()) <= 1e-12
    assert float(pde.boundary_residual(out.u, grid).abs().max()) <= 1e-15
    assert float(out.violation["initial"].max()) <= 1e-12
    assert float(out.violation["boundary"].max()) <= 1e-15
    # The same basis with the paper's rows fits the conditions only in a least-squares sense,
    # and the violation shows.
    paper = HardConstraint(pde, 64, residual_scale=500.0, constraints="rows")
    rows = MixtureOfExperts(paper, (4, 1))(basis, grid, initial,
                                           generator=torch.Generator().manual_seed(1))
    assert float(rows.violation["boundary"].max()) > 1e-3


def test_analytic_hessian_is_the_autograd_hessian():
    from diffnum.constrain._layer import _ExpertProblem

    g = torch.Generator().manual_seed(2)
    b, K, M, N = 2, 3, 20, 5
    for pde in (DiffusionSorption1D(), Burgers1D(0.05, boundary="dirichlet")):
        n_terms = len(pde.terms)
        problem = _ExpertProblem(pde, tuple(pde.terms), 1e-4)
        T = 0.1 * torch.randn(b, K, n_terms, M, N, dtype=torch.float64, generator=g)
        p = torch.rand(b, K, n_terms, M, dtype=torch.float64, generator=g)
        s = 3 * torch.rand(b, K, M, dtype=torch.float64, generator=g)
        C = torch.randn(b, K, 4, N, dtype=torch.float64, generator=g)
        c = torch.randn(b, K, 4, dtype=torch.float64, generator=g)
        w = 0.1 * torch.randn(b, K, N, dtype=torch.float64, generator=g)
        H = problem.hessian(w, T, p, s, C, c)

        def half_square(flat, T=T, p=p, s=s, C=C, c=c, problem=problem):
            r = problem.residual(flat.reshape(b, K, N), T, p, s, C, c)
            return 0.5 * (r * r).sum()

        full = torch.autograd.functional.hessian(half_square, w.reshape(-1))
        full = full.reshape(b, K, N, b, K, N)
        blocks = torch.stack([torch.stack([full[i, k, :, i, k, :] for k in range(K)])
                              for i in range(b)])
        assert float((H - blocks).abs().max()) <= 1e-10 * float(blocks.abs().max())


def test_expert_residual_with_one_expert_is_the_field_residual():
    _, grid, basis, _ = _heat_problem()
    pde = Burgers1D(0.05, boundary="dirichlet")
    w = torch.randn(2, 1, basis.shape[-1], dtype=torch.float64)
    terms = pde.basis_terms(basis, grid)
    u = (basis @ w[:, 0].unsqueeze(-1)).reshape(2, *grid.shape)
    # Both evaluate the same linear difference operators, summed in a different order.
    torch.testing.assert_close(expert_residual(pde, terms, w, grid), pde.residual(u, grid),
                               rtol=1e-12, atol=1e-12)


def _gradient_check(adjoint, pde, grid, basis0, initial, experts, constraints):
    g = torch.Generator().manual_seed(11)
    direction = 0.05 * torch.randn(basis0.shape, dtype=torch.float64, generator=g)
    probe = torch.randn(basis0.shape[0], *grid.shape, dtype=torch.float64, generator=g)
    layer = HardConstraint(pde, 40, adjoint=adjoint, solver=None, ridge=1e-3,
                           constraints=constraints)
    moe = MixtureOfExperts(layer, experts)

    def loss(s):
        basis = basis0 + s * direction
        out = moe(basis, grid, initial, generator=torch.Generator().manual_seed(5))
        assert bool(out.converged.all())
        return (out.u * probe).sum() + (out.weights**2).sum()

    s = torch.zeros((), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(s), s)
    # Central differences, Richardson-extrapolated: (4 D(h/2) − D(h))/3 cancels the h² term,
    # which is large here (the loss is strongly curved in s).
    h = 1e-4
    with torch.no_grad():
        def central(step):
            return (loss(torch.tensor(step, dtype=torch.float64))
                    - loss(torch.tensor(-step, dtype=torch.float64))) / (2 * step)

        fd = (4 * central(h / 2) - central(h)) / 3
    return grad, fd


@pytest.mark.parametrize("constraints", ["eliminate", "rows"])
@pytest.mark.parametrize("experts", [(1, 1), (2, 1)])
def test_implicit_gradients_equal_finite_differences_and_unrolling(experts, constraints):
    # With the conditions eliminated, B − B(·, t₀) of a column constant in t is 0, which
    # would leave the solve rank-deficient and the loss rough at the finite-difference step:
    # there every column varies in t. (With rows, such columns are what fits u₀.)
    eliminate = constraints == "eliminate"
    pde, grid, basis, _ = _heat_problem(batch=2, n=5, time_powers=(1, 2) if eliminate else (0, 1))
    pde = Burgers1D(0.05, boundary="dirichlet")  # nonlinear in w
    initial = 0.5 * torch.sin(math.pi * grid.coordinates[0]).expand(2, 16)
    basis = (2.0 if eliminate else 0.5) * basis
    implicit, fd = _gradient_check(ImplicitAdjoint(), pde, grid, basis, initial, experts,
                                   constraints)
    unrolled, _ = _gradient_check(UnrollAdjoint(), pde, grid, basis, initial, experts,
                                  constraints)
    # Extrapolated differences leave O(h⁴) ~ 1e-10 relative and rounding ~ε/h; converged LM
    # iterates (rtol 1e-8) differ from w* by ~1e-8; 1e-6 relative is the bar.
    assert abs(float(implicit - fd)) <= 1e-6 * abs(float(fd))
    assert abs(float(implicit - unrolled)) <= 1e-6 * abs(float(fd))


@pytest.mark.parametrize("constraints", ["eliminate", "rows"])
def test_nan_in_one_basis_is_reported_and_does_not_reach_the_others(constraints):
    eliminate = constraints == "eliminate"
    pde, grid, basis, initial = _heat_problem(batch=3,
                                              time_powers=(1, 2) if eliminate else (0, 1))
    pde = Burgers1D(0.05, boundary="dirichlet")
    basis = basis.clone()
    basis[1, 5 * 9 + 4, 2] = float("nan")  # an interior point (x₅, t₄) of expert 0's block
    out = MixtureOfExperts(HardConstraint(pde, 48, constraints=constraints), (2, 1))(
        basis, grid, initial, generator=torch.Generator().manual_seed(0))
    assert bool(out.converged[[0, 2]].all())
    assert bool(torch.isfinite(out.u[[0, 2]]).all())
    # Expert 1's block and its rows never touch the NaN: it converges on its own.
    assert out.status[1].tolist() == [int(Status.NONFINITE), int(Status.CONVERGED)]
    assert out.failures() == [((1, 0), Status.NONFINITE)]


def test_navier_stokes_partitioned_initial_condition():
    grid = uniform_grid({"x": (0.0, 2 * math.pi, 8), "y": (0.0, 2 * math.pi, 8),
                         "t": (0.0, 0.1, 6)}, periodic=("x", "y"))
    pde = NavierStokes2D(1e-2)
    basis = torch.randn(1, grid.size, 6, dtype=torch.float64)
    x, y, _ = grid.mesh()
    basis[..., 0] = (torch.cos(x) * torch.cos(y)).reshape(-1)
    omega0 = torch.cos(grid.coordinates[0])[:, None] * torch.cos(grid.coordinates[1])[None, :]
    moe = MixtureOfExperts(HardConstraint(pde, 64, constraints="rows"), (2, 2, 1),
                           routing="partition")
    out = moe(basis, grid, omega0, generator=torch.Generator().manual_seed(0))
    assert out.stats["constraint_rows_per_expert"] == 16  # a quadrant of the 8 × 8 initial
    assert out.status.shape == (1, 4) and out.u.shape == (1, 8, 8, 6)


def test_bad_input_is_named():
    pde, grid, basis, initial = _heat_problem()
    with pytest.raises(ValueError, match="n_sampled"):
        HardConstraint(pde, 0)
    with pytest.raises(ValueError, match="multiple of the 4 experts"):
        MixtureOfExperts(HardConstraint(pde, 30), (4, 1))
    with pytest.raises(ValueError, match="n_sampled=16384 is more than the grid's 144 points"):
        HardConstraint(pde, 16384)(basis, grid, initial)
    with pytest.raises(ValueError, match="constraints"):
        HardConstraint(pde, 30, constraints="soft")
    with pytest.raises(ValueError, match="basis must have shape"):
        HardConstraint(pde, 30)(basis[:, :-1], grid, initial)
    with pytest.raises(ValueError, match="initial must broadcast"):
        HardConstraint(pde, 30)(basis, grid, initial[:, :-1])
    with pytest.raises(ValueError, match="routing"):
        MixtureOfExperts(HardConstraint(pde, 30), (2, 1), routing="nearest")
    with pytest.raises(TypeError, match=r"an instance such as Heat1D\(\.\.\.\), got the class"):
        HardConstraint(Heat1D)


def test_a_failed_solve_adds_exact_zeros_to_shared_gradients():
    # One parameter θ shapes every element's basis; element 1's basis holds a NaN (added, so
    # that the user's own code multiplies no NaN in its backward pass). With the user's loss
    # masking element 1 out, θ's gradient is finite and equals that of the same batch with a
    # finite element 1 (same collocation draws), also masked.
    pde, grid, basis, initial = _heat_problem(batch=3, time_powers=(1, 2))
    pde = Burgers1D(0.05, boundary="dirichlet")
    theta = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    layer = MixtureOfExperts(HardConstraint(pde, 48), (2, 1))

    def gradient(inputs):
        out = layer(inputs + theta * 0.1 * basis.flip(-1), grid, initial,
                    generator=torch.Generator().manual_seed(0))
        keep = torch.tensor([True, False, True])
        loss = torch.where(keep[:, None, None], out.u, 0.0).square().sum()
        (grad,) = torch.autograd.grad(loss, theta)
        return out, grad

    poisoned = basis.clone()
    poisoned[1, 5 * 9 + 4, 2] = float("nan")
    out, grad = gradient(poisoned)
    assert out.status[1].tolist() == [int(Status.NONFINITE), int(Status.CONVERGED)]
    assert bool(torch.isnan(out.u[1]).any())
    clean, reference = gradient(basis)
    assert bool(clean.converged.all())
    assert torch.isfinite(grad)
    torch.testing.assert_close(grad, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("experts", [None, (2, 1)])
@pytest.mark.parametrize("poison", ["basis", "initial"])
def test_a_failed_element_leaves_the_others_gradients_to_the_basis_exact(experts, poison):
    # Equal elements: the healthy ones finish on the same steps; element 1 fails (NaN in
    # its basis or in its u₀). Element 0's loss has the gradient to the basis that it has in
    # a clean batch: the implicit term through w* included (a found defect lost it).
    pde, grid, basis, initial = _heat_problem(batch=1, time_powers=(1, 2))
    basis, initial = basis.expand(3, -1, -1), initial.expand(3, -1)  # equal elements
    layer = HardConstraint(pde)
    layer = layer if experts is None else MixtureOfExperts(layer, experts)

    def gradient(basis, initial):
        basis = basis.clone().requires_grad_(True)
        out = layer(basis, grid, initial)
        (grad,) = torch.autograd.grad(out.u[0].square().sum(), basis)
        return out, grad

    bad_basis, bad_initial = basis.clone(), initial.clone()
    if poison == "basis":
        bad_basis[1, 5 * 9 + 4, 2] = float("nan")
    else:
        bad_initial[1, 7] = float("nan")
    out, grad = gradient(bad_basis, bad_initial)
    clean, reference = gradient(basis, initial)
    assert bool(out.converged[[0, 2]].all())
    assert int(out.status[1].flatten()[0]) == int(Status.NONFINITE)
    assert torch.equal(out.solution.steps[0], out.solution.steps[2])
    assert torch.equal(out.u[0], clean.u[0])
    torch.testing.assert_close(grad, reference, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("experts", [None, (2, 1)])
def test_the_pde_violation_is_the_rms_over_the_collocated_rows(experts):
    # Every point of a block sampled (n_sampled=None): the initial and boundary points are
    # rows of weight 0 and must not dilute the RMS (a new user saw 0.674 for 0.720).
    pde, grid, basis, initial = _heat_problem(batch=2, time_powers=(1, 2))
    layer = HardConstraint(pde, None, residual_scale=3.0, ridge=1e-2)
    layer = layer if experts is None else MixtureOfExperts(layer, experts)
    out = layer(basis, grid, initial)
    F = 3.0 * expert_residual(pde, out.terms, out.weights, grid, experts, out.particular)
    owner = torch.zeros(grid.size, dtype=torch.long)
    for k, block in enumerate(expert_index(grid, experts or (1, 1))):
        owner[block] = k
    mask = interior_mask(pde, grid).reshape(-1)
    for k in range(out.violation["pde"].shape[-1]):
        rows = mask & (owner == k)
        expected = F.flatten(1)[:, rows].square().mean(-1).sqrt()
        torch.testing.assert_close(out.violation["pde"][:, k], expected, rtol=1e-12, atol=0)
    assert bool((out.violation["pde"] > 0).all())


def test_a_float32_basis_converges_with_float32_tolerances():
    # The layer's default solver takes its tolerances from the dtype (1e-4 in float32): with
    # float64's 1e-8 every float32 solve ran into max_steps.
    # Powers t¹, t² so that B − B(·, t₀) keeps full rank: along an exact null space beside the
    # ridge, float32 rounding sets the step and LM wanders (u unchanged, w not settling).
    pde, grid, basis, initial = _heat_problem(time_powers=(1, 2))
    out = HardConstraint(pde, None, ridge=1e-3)(basis.float(), grid, initial.float())
    assert out.u.dtype == torch.float32
    assert bool(out.converged.all()) and int(out.solution.steps.max()) < 50
    reference = HardConstraint(pde, None, ridge=1e-3)(basis, grid, initial)
    torch.testing.assert_close(out.u.double(), reference.u, rtol=0, atol=1e-3)


def test_a_float32_basis_with_a_null_space_finishes_early_with_an_honest_status():
    # Powers t⁰, t¹: B − B(·, t₀) loses the t⁰ columns, a 3-dimensional null space that only
    # the ridge curves (1e-6 against columns of order 10², below float32's resolution of
    # JᵀJ). Measured before the solver's wander test: MAX_STEPS after all 50 steps. The field
    # is settled all the same: it matches the float64 solve, which converges.
    # Which of the two statuses an element gets is decided by rounding: the damped steps along
    # the null space may stay below the step test (CONVERGED, measured on an AMD EPYC: 4–6
    # steps) or grow until the wander test fires (ILL_CONDITIONED, measured on an Intel Xeon).
    pde, grid, basis, initial = _heat_problem(time_powers=(0, 1))
    out = HardConstraint(pde, None, ridge=1e-3)(basis.float(), grid, initial.float())
    assert set(out.status.flatten().tolist()) <= {int(Status.CONVERGED),
                                                  int(Status.ILL_CONDITIONED)}
    assert int(out.solution.steps.max()) < 20
    reference = HardConstraint(pde, None, ridge=1e-3)(basis, grid, initial)
    # (float64 sits at its own threshold here, see the elimination test above.)
    assert set(reference.status.flatten().tolist()) <= {int(Status.CONVERGED),
                                                        int(Status.ILL_CONDITIONED)}
    torch.testing.assert_close(out.u.double(), reference.u, rtol=0, atol=1e-3)


def _jumps_by_loops(fields, grid, layout):
    """u_k − u_k′ on the two lines either side of each interface, point by point."""
    owner = expert_index(grid, layout)
    own = torch.empty(grid.size, dtype=torch.long)
    own[owner] = torch.arange(owner.shape[0])[:, None]
    own = own.reshape(grid.shape)
    out = []
    for axis, blocks in enumerate(layout):
        n = grid.shape[axis]
        for start in [b * (n // blocks) for b in range(1, blocks)] + (
                [0] if grid.periodic[axis] and blocks > 1 else []):
            for index in itertools.product(*[range(m) for m in grid.shape]):
                if index[axis] not in ((start - 1) % n, start):
                    continue
                left, right = list(index), list(index)
                left[axis], right[axis] = (start - 1) % n, start
                k, kk = own[tuple(left)], own[tuple(right)]
                out.append(float(fields[(*index, k)] - fields[(*index, kk)]))
    return sorted(out)


@pytest.mark.parametrize("layout, periodic", [((4, 1), ()), ((2, 2), ()), ((2, 3), ("x",))])
def test_interface_jumps_compare_neighbours_on_both_lines(layout, periodic):
    grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 6)}, periodic=periodic)
    g = torch.Generator().manual_seed(3)
    basis = torch.randn(2, grid.size, 3, dtype=torch.float64, generator=g)
    weights = torch.randn(2, math.prod(layout), 3, dtype=torch.float64, generator=g)
    jumps = interface_jumps(basis, weights, grid, layout)
    fields = (basis @ weights.mT).reshape(2, *grid.shape, -1)
    for b in range(2):
        expected = _jumps_by_loops(fields[b], grid, layout)
        assert jumps[b].sort().values.tolist() == pytest.approx(expected, abs=1e-14)
    # Experts that agree leave no jump at all.
    same = weights[:, :1].expand_as(weights)
    assert torch.equal(interface_jumps(basis, same, grid, layout), torch.zeros_like(jumps))


def test_interface_jumps_of_one_expert_are_empty_and_bad_weights_are_named():
    grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 6)})
    basis = torch.ones(1, grid.size, 2, dtype=torch.float64)
    assert interface_jumps(basis, torch.ones(1, 1, 2, dtype=torch.float64), grid,
                           (1, 1)).shape == (1, 0)
    with pytest.raises(ValueError, match=r"weights must have shape \(\*batch, K = 4, N\)"):
        interface_jumps(basis, torch.ones(1, 2, 2, dtype=torch.float64), grid, (4, 1))
