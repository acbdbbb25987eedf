"""The constrained layer and the trainer's model speak the result protocol: a
``ConstrainedSolution`` contains the solver's ``Solution``, ``ConstrainedModel.forward``
returns a frozen ``ModelOutput``."""

from __future__ import annotations

import math

import pytest
import torch

from diffnum.constrain import (
    ConstrainedModel,
    HardConstraint,
    MixtureOfExperts,
    ModelOutput,
    _layer,
)
from diffnum.constrain._train import TrainConfig
from diffnum.solve import Solution, SolveError, Status


def _heat_layer_case(batch: int = 3):
    from diffnum.pde import Heat1D, uniform_grid

    grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.2, 9)})
    x, t = grid.mesh()
    # Powers t¹, t²: with a t⁰ column B − B(·, t₀) would lose rank, and the t₀ rows of the
    # residual make LM crawl along such a null space (an exact zero beside a 1e-3 ridge).
    monomials = torch.stack([x**i * (t / 0.2)**j for i in range(3) for j in (1, 2)],
                            -1).reshape(grid.size, 6)
    mix = torch.randn(batch, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    basis = monomials @ mix
    initial = torch.sin(math.pi * grid.coordinates[0]).expand(batch, 16)
    return Heat1D(0.1, boundary="dirichlet"), grid, basis, initial


def test_constrained_solution_contains_the_solvers_solution(monkeypatch):
    pde, grid, basis, initial = _heat_layer_case()
    seen = []

    def spy(*args, **kwargs):
        seen.append(_layer_least_squares(*args, **kwargs))
        return seen[-1]

    _layer_least_squares = _layer.least_squares
    monkeypatch.setattr(_layer, "least_squares", spy)
    basis = basis.clone()
    basis[1, 5 * 9 + 4, 2] = float("nan")  # expert 0 of element 1 sees a NaN
    out = MixtureOfExperts(HardConstraint(pde, 48), (2, 1))(
        basis, grid, initial, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 1 and out.solution is seen[0]
    assert isinstance(out.solution, Solution)
    assert out.weights is out.solution.value and out.status is out.solution.status
    assert out.solution.value.shape == (3, 2, 6) and out.solution.steps.shape == (3, 2)
    failed = out.failures()
    assert failed == out.solution.failures() and ((1, 0), Status.NONFINITE) in failed
    assert out.describe() == out.solution.describe() != ""
    with pytest.raises(SolveError, match=rf"{len(failed)} of 6 batch element\(s\) failed"):
        out.raise_if_failed()
    with pytest.raises(SolveError, match=r"MixtureOfExperts: \d+ of 6 .*\n.*\(1, 0\): NONFINITE"):
        MixtureOfExperts(HardConstraint(pde, 48), (2, 1))(
            basis, grid, initial, generator=torch.Generator().manual_seed(0), throw=True)
    with pytest.raises(TypeError, match="throw must be True or False"):
        HardConstraint(pde, 48)(basis, grid, initial, throw=1)
    # More than one batch dimension: the solver's fields reshaped to the caller's batch.
    out2 = HardConstraint(pde, 48)(basis.reshape(3, 1, *basis.shape[1:]), grid,
                                   initial.reshape(3, 1, 16),
                                   generator=torch.Generator().manual_seed(0))
    assert isinstance(out2.solution, Solution) and out2.solution is not seen[-1]
    assert out2.solution.value.shape == (3, 1, 1, 6)
    assert torch.equal(out2.solution.status.flatten(), seen[-1].status.flatten())
    assert torch.equal(out2.solution.steps.flatten(), seen[-1].steps.flatten())
    assert "converged" in repr(out2) and "\n" not in repr(out2)


def test_model_output_is_a_dataclass_with_the_protocol():
    pde, grid, _, initial = _heat_layer_case(2)
    small = dict(n_basis=4, n_sampled=None, width=4, modes=4, depth=1)
    hard = ConstrainedModel(TrainConfig(method="hard", **small), pde, grid)(initial)
    assert isinstance(hard, ModelOutput) and hard.u.shape == (2, 16, 9)
    assert hard.solution.u is hard.u and hard.failures() == hard.solution.failures() == []
    assert hard.all_converged and hard.describe() == ""
    hard.raise_if_failed()  # nothing failed
    soft = ConstrainedModel(TrainConfig(method="soft", **small), pde, grid)(initial)
    assert soft.solution is None and soft.failures() == [] and soft.all_converged
    with pytest.raises(TypeError, match="solution must be None or a ConstrainedSolution"):
        ModelOutput(hard.u, hard.solution.solution)
    with pytest.raises(AttributeError):
        hard.u = None  # frozen
    with pytest.raises(TypeError):
        _u, _solution = hard  # no longer a tuple
