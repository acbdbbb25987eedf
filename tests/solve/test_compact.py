"""compact=True: finished elements leave the batch, and nothing else changes — values,
statuses, iteration counts and implicit gradients are bitwise those of compact=False."""

import pytest
import torch

import diffnum.constrain._layer as layer_module
from diffnum.constrain import HardConstraint, MixtureOfExperts
from diffnum.pde import DiffusionSorption1D, uniform_grid
from diffnum.solve import Status, UnrollAdjoint, least_squares


def _residual(y, B, target, scale):
    z = (B @ y.unsqueeze(-1)).squeeze(-1)
    return scale.unsqueeze(-1) * (torch.tanh(z) - target)


def _problem(batch=6, m=40, n=5):
    g = torch.Generator().manual_seed(0)
    B = torch.randn(batch, m, n, dtype=torch.float64, generator=g) / n**0.5
    w = torch.randn(batch, n, dtype=torch.float64, generator=g)
    target = torch.tanh((B @ w.unsqueeze(-1)).squeeze(-1))
    # Elements of different difficulty finish after different numbers of steps.
    target = target + 0.05 * torch.arange(batch, dtype=torch.float64)[:, None] * torch.randn(
        batch, m, dtype=torch.float64, generator=g)
    scale = torch.linspace(0.5, 3.0, batch, dtype=torch.float64)
    return B, target, scale


def _solve(compact, B, target, scale):
    B = B.clone().requires_grad_(True)
    y0 = torch.zeros(B.shape[0], B.shape[-1], dtype=torch.float64)
    out = least_squares(_residual, y0, (B, target, scale), compact=compact,
                        jacobian=lambda y, B, t, s: s[:, None, None] * (
                            1 - torch.tanh(B @ y.unsqueeze(-1)) ** 2) * B)
    (grad,) = torch.autograd.grad(out.value.square().sum(), B)
    return out, grad


def test_compaction_changes_no_result():
    B, target, scale = _problem()
    plain, grad_plain = _solve(False, B, target, scale)
    compact, grad_compact = _solve(True, B, target, scale)
    assert len(set(plain.steps.tolist())) > 1  # elements finish at different steps
    for name in ("value", "status", "steps", "residual_norm"):
        assert torch.equal(getattr(plain, name), getattr(compact, name)), name
    assert torch.equal(grad_plain, grad_compact)


def test_compaction_in_the_mixture_changes_no_result(monkeypatch):
    pde = DiffusionSorption1D()
    grid = uniform_grid({"x": (0.0, 1.0, 32), "t": (0.0, 500.0, 12)})
    x, t = grid.mesh()
    g = torch.Generator().manual_seed(3)
    mix = torch.randn(2, 6, 8, dtype=torch.float64, generator=g)
    columns = torch.stack([x**i * (t / 500) ** j for i in range(3) for j in (1, 2)], -1)
    basis0 = columns.reshape(grid.size, 6) @ mix
    initial = torch.tensor([[0.05], [0.15]], dtype=torch.float64).expand(2, 32)
    solve = layer_module.least_squares

    def run(compact):
        def forced(*args, **kwargs):
            kwargs["compact"] = compact
            return solve(*args, **kwargs)

        monkeypatch.setattr(layer_module, "least_squares", forced)
        basis = basis0.clone().requires_grad_(True)
        moe = MixtureOfExperts(HardConstraint(pde, 96, residual_scale=500.0), (4, 1))
        out = moe(basis, grid, initial, generator=torch.Generator().manual_seed(1))
        (grad,) = torch.autograd.grad(out.u.square().sum(), basis)
        return out, grad

    plain, _ = run(False)
    compact, grad_compact = run(True)
    assert len(set(plain.solution.steps.flatten().tolist())) > 1
    assert torch.equal(plain.status, compact.status)
    # Elementwise pow (in R(u)) rounds the same values differently in the last bit in a
    # batch of another size (measured: the vectorized loop lays the data out differently),
    # so an expert's residual changes by an ulp once the running set first shrinks. Experts
    # that finished by then are bitwise equal; the later ones agree to the solve's tolerance
    # (one, in a flat valley, takes 32 steps instead of 47 to its solution; one stops at
    # max_steps in both runs).
    steps, compact_steps = plain.solution.steps, compact.solution.steps
    first = steps == steps.min()
    assert torch.equal(plain.weights[first], compact.weights[first])
    assert torch.equal(steps, torch.where(first, compact_steps, steps))
    converged = plain.converged
    torch.testing.assert_close(compact.weights[converged], plain.weights[converged],
                               rtol=1e-6, atol=1e-7)
    # (Gradients through an expert in a flat valley are as sensitive as its path: they are
    # compared bitwise on a well-conditioned problem in test_compaction_changes_no_result.)
    assert bool(torch.isfinite(grad_compact).all())


@pytest.mark.parametrize("adjoint", ["implicit", "unrolled"])
def test_a_nonfinite_element_adds_exact_zeros_to_shared_gradients(adjoint):
    # Element 2's B holds a NaN; θ enters every element's target. Its gradient, with element 2
    # masked out of the loss, equals that of the same batch with a finite B (no NaN·0):
    # implicit adjoint with compact=True, and unrolled.
    B, target, scale = _problem(batch=4)
    theta = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    options = ({"compact": True} if adjoint == "implicit"
               else {"adjoint": UnrollAdjoint()})

    def gradient(B):
        y0 = torch.zeros(B.shape[0], B.shape[-1], dtype=torch.float64)
        out = least_squares(_residual, y0, (B, target + theta * 0.01, scale), **options)
        keep = torch.tensor([True, True, False, True])
        (grad,) = torch.autograd.grad(torch.where(keep[:, None], out.value, 0.0).sum(), theta)
        return out, grad

    poisoned = B.clone()
    poisoned[2, 3, 0] = float("nan")
    out, grad = gradient(poisoned)
    assert out.status.tolist()[2] == int(Status.NONFINITE)
    clean, reference = gradient(B)
    # Equal to rounding, not bitwise: once element 2 leaves, the others run in a smaller batch,
    # and MKL's batched GEMM may round by batch count (measured on an AMD EPYC: JᵀJ of a 40×5
    # batch of 3 and of 2 of its elements differ in the last bit).
    torch.testing.assert_close(out.value[[0, 1, 3]], clean.value[[0, 1, 3]],
                               rtol=1e-13, atol=0)
    assert torch.isfinite(grad)
    torch.testing.assert_close(grad, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonfinite_element_leaves_the_others_gradients_exact_when_they_finish_together(bad):
    # Identical healthy elements finish on the same step, so the running set the adjoint
    # evaluates equals the last one the iteration indexed: the adjoint must still index the
    # arguments with autograd on (a cached, graph-less subset cut w* off from B: the gradient
    # then missed the implicit term, or autograd found w* unused).
    B, target, scale = _problem(batch=1)
    B, target, scale = B.expand(3, -1, -1), target.expand(3, -1), scale.expand(3)

    def gradient(B):
        B = B.clone().requires_grad_(True)
        y0 = torch.zeros(3, B.shape[-1], dtype=torch.float64)
        out = least_squares(_residual, y0, (B, target, scale), compact=True)
        (grad,) = torch.autograd.grad(out.value[0].square().sum(), B)
        return out, grad

    poisoned = B.clone()
    poisoned[1, 3, 0] = bad
    out, grad = gradient(poisoned)
    clean, reference = gradient(B)
    assert out.status.tolist() == [0, int(Status.NONFINITE), 0]
    assert out.steps[0] == out.steps[2] == clean.steps[0]
    assert bool(reference[0].abs().max() > 0)
    torch.testing.assert_close(grad, reference, rtol=1e-12, atol=0)
