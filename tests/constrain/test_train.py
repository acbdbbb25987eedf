"""The trainer: one configuration switch between methods, bit-for-bit resume, honest
failure counts, metrics on disk."""

import json
import logging
import math
from dataclasses import replace

import pytest
import torch

from diffnum import ResultError, Status
from diffnum.constrain import (
    PhysicsProblem,
    TrainConfig,
    evaluate,
    particular_solution,
    problem_digest,
    train,
)
from diffnum.pde import Heat1D, uniform_grid


def heat_problem(n_train=8, n_test=4):
    """Heat equation with Dirichlet zeros: sums of three sine modes, exact references."""
    grid = uniform_grid({"x": (0.0, 1.0, 16), "t": (0.0, 0.5, 8)})
    pde = Heat1D(0.1, boundary="dirichlet")
    x, t = grid.mesh()
    g = torch.Generator().manual_seed(0)
    k = math.pi * torch.arange(1, 4, dtype=torch.float64)

    def sample(n):
        a = torch.randn(n, 3, dtype=torch.float64, generator=g)
        u0 = (a[:, :, None] * torch.sin(k[:, None] * grid.coordinates[0])).sum(1)
        modes = torch.sin(k[:, None, None] * x) * torch.exp(-0.1 * k[:, None, None] ** 2 * t)
        return u0, (a[:, :, None, None] * modes).sum(1)

    train_u0, _ = sample(n_train)
    test_u0, reference = sample(n_test)
    return PhysicsProblem(pde, grid, train_u0, test_u0, reference)


SMALL = {"n_basis": 6, "n_sampled": 64, "width": 6, "modes": 4, "depth": 1, "batch_size": 2}


@pytest.mark.parametrize("method,experts,schedule", [
    ("soft", None, "constant"), ("hard", None, "constant"), ("moe", (2, 1), "constant"),
    ("hard", None, "cosine")])
def test_resume_continues_bit_for_bit(tmp_path, method, experts, schedule):
    problem = heat_problem()
    config = TrainConfig(method=method, experts=experts, steps=6, checkpoint_every=2,
                         lr_schedule=schedule, **SMALL)
    whole = train(config, problem)
    ckpt = tmp_path / "run.pt"
    metrics = tmp_path / "metrics.jsonl"
    first = train(config, problem, checkpoint=ckpt, metrics=metrics, stop_after=3)
    assert len(first.history) == 3  # interrupted after step 3; the checkpoint holds step 2
    second = train(config, problem, checkpoint=ckpt, metrics=metrics, resume=True)
    assert second.resumed_from == 2
    for a, b in zip(whole.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in whole.history] == [h["loss"] for h in second.history]
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 7))


def test_cosine_schedule_sets_every_steps_rate():
    problem = heat_problem()
    config = TrainConfig(method="soft", steps=8, lr=1e-2, lr_schedule="cosine", **SMALL)
    rates = [h["lr"] for h in train(config, problem).history]
    assert rates == [1e-2 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)]
    constant = train(replace(config, lr_schedule="constant"), problem).history
    assert [h["lr"] for h in constant] == [1e-2] * 8
    # The default leaves the record (and so the digests of older checkpoints) unchanged.
    assert "lr_schedule" not in replace(config, lr_schedule="constant").record()
    assert config.record()["lr_schedule"] == "cosine"
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_a_different_configuration_does_not_resume(tmp_path):
    problem = heat_problem()
    ckpt = tmp_path / "run.pt"
    train(TrainConfig(method="hard", steps=2, **SMALL), problem, checkpoint=ckpt)
    again = train(TrainConfig(method="hard", steps=3, **SMALL), problem, checkpoint=ckpt,
                  resume=True)
    assert again.resumed_from == 0 and len(again.history) == 3


def test_a_checkpoint_of_another_problem_does_not_resume(tmp_path, caplog):
    problem = heat_problem()
    longer = TrainConfig(method="hard", steps=3, checkpoint_every=1, **SMALL)
    ckpt = tmp_path / "run.pt"
    # A checkpoint after 2 of 3 steps on one problem ...
    train(longer, problem, checkpoint=ckpt, stop_after=2)
    # ... and resume it on problems that differ in the PDE, the collocated points or the data.
    others = {
        "pde": PhysicsProblem(Heat1D(0.2, boundary="dirichlet"), problem.grid,
                              problem.train_initial, problem.test_initial,
                              problem.test_solution),
        "data": PhysicsProblem(problem.pde, problem.grid, 2 * problem.train_initial,
                               problem.test_initial, problem.test_solution),
    }
    for name, other in others.items():
        assert problem_digest(other) != problem_digest(problem), name
        with caplog.at_level(logging.WARNING, logger="diffnum.constrain._train"):
            again = train(longer, other, checkpoint=ckpt, resume=True, stop_after=1)
        assert again.resumed_from == 0, name
        assert "written for another problem" in caplog.text
        train(longer, problem, checkpoint=ckpt, stop_after=2)  # put the original back
    # The same problem resumes; so does a checkpoint written before the digest existed.
    assert train(longer, problem, checkpoint=ckpt, resume=True).resumed_from == 2
    train(longer, problem, checkpoint=ckpt, stop_after=2)
    state = torch.load(ckpt, weights_only=True)
    del state["problem"]
    torch.save(state, ckpt)
    assert train(longer, problem, checkpoint=ckpt, resume=True).resumed_from == 2


def test_nonfinite_loss_skips_the_step_and_is_counted():
    problem = heat_problem()
    bad = PhysicsProblem(problem.pde, problem.grid,
                         problem.train_initial.clone().index_fill_(1, torch.tensor([3]), math.nan),
                         problem.test_initial, problem.test_solution)
    result = train(TrainConfig(method="hard", steps=3, batch_size=8,
                               **{k: v for k, v in SMALL.items() if k != "batch_size"}), bad)
    assert result.skipped_steps == 3
    assert all(h["skipped"] for h in result.history)
    assert result.solver_failures > 0
    # The parameters never moved.
    fresh = train(TrainConfig(method="hard", steps=1, batch_size=8,
                              **{k: v for k, v in SMALL.items() if k != "batch_size"}),
                  bad, stop_after=0)
    for a, b in zip(result.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)


def test_training_lowers_the_physics_loss_and_evaluates():
    problem = heat_problem()
    result = train(TrainConfig(method="moe", experts=(2, 1), steps=25, lr=1e-2, **SMALL),
                   problem)
    losses = [h["loss"] for h in result.history]
    assert min(losses[-5:]) < 0.5 * losses[0]
    report = evaluate(result.model, problem)
    assert report.relative_l2.shape == (4,) and report.converged_fraction == 1.0
    assert report.status.shape == (4, 2) and report.all_converged and report.failures() == []
    # Lower loss must mean a better solution: the held-out error falls well below the
    # untrained model's (measured 0.53 against 1.03).
    untrained = train(TrainConfig(method="moe", experts=(2, 1), steps=25, lr=1e-2, **SMALL),
                      problem, stop_after=0)
    before = evaluate(untrained.model, problem).relative_l2_mean
    assert report.relative_l2_mean < 0.7 * before


@pytest.mark.parametrize("method", ["soft", "hard", "moe"])
def test_evaluation_marks_a_nonfinite_prediction_and_scores_the_rest(method):
    problem = heat_problem()
    experts = {"experts": (2, 1)} if method == "moe" else {}
    model = train(TrainConfig(method=method, steps=2, **experts, **SMALL), problem).model
    clean = evaluate(model, problem)
    initial = problem.test_initial.clone()
    initial[2, 5] = float("nan")
    bad = evaluate(model, PhysicsProblem(problem.pde, problem.grid, problem.train_initial,
                                         initial, problem.test_solution))
    k = 2 if method == "moe" else 1
    assert bad.status.shape == (4, k) and bad.nonfinite_predictions == 1
    assert all(index[0] == 2 and status == Status.NONFINITE
               for index, status in bad.failures()) and len(bad.failures()) == k
    assert "batch element (2, 0): NONFINITE" in bad.describe()
    with pytest.raises(ResultError, match="NONFINITE"):
        bad.raise_if_failed()
    # The other held-out u₀ score exactly as without the NaN (each is solved on its own).
    finite = [0, 1, 3]
    assert torch.equal(bad.relative_l2[finite], clean.relative_l2[finite])
    assert bad.relative_l2_mean == pytest.approx(float(clean.relative_l2[finite].mean()),
                                                 rel=1e-15)
    assert (bad.steps is None) == (method == "soft")


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="experts"):
        TrainConfig(method="moe")
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="pinn")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)


def test_experts_residual_is_the_mixtures_own_loss():
    """residual='experts': the PDE term is the mean square of expert_residual (no interface
    terms); it trains, resumes under its own digest, and a K = 1 'experts' loss would be the
    assembled one (checked through the residuals themselves)."""
    from dataclasses import replace

    from diffnum.constrain import expert_residual, interior_mask, physics_loss
    from diffnum.constrain._train import ConstrainedModel

    problem = heat_problem()
    base = TrainConfig(method="moe", experts=(2, 1), steps=3, **SMALL)
    own = replace(base, residual="experts")
    assert own.digest != base.digest and own.name == "PI-HC-MoE (K=2, experts' residuals)"
    torch.manual_seed(0)
    model = ConstrainedModel(own, problem.pde, problem.grid)
    initial = problem.train_initial[:2]
    out = model(initial, torch.Generator().manual_seed(1))
    u, solution = out.u, out.solution
    loss, parts = physics_loss(model, initial, u, solution)
    F = expert_residual(problem.pde, solution.terms, solution.weights, problem.grid, (2, 1),
                        solution.particular)
    mask = interior_mask(problem.pde, problem.grid)
    assert parts["pde"] == pytest.approx(float(F[..., mask].square().mean()), rel=1e-12)
    assert float(loss) == pytest.approx(sum(parts.values()), rel=1e-12)  # weights 1
    # The assembled residual differs only next to the block interface.
    G = problem.pde.residual(u, problem.grid)
    # (x, t) after t₀; blocks x = 0..7 and 8..15; Heat1D's u_xx has a 5-point stencil, so
    # nodes 6..9 straddle the interface.
    gap = (F - G).abs().amax(0)[:, 1:]
    assert float(gap[[*range(0, 6), *range(10, 16)]].max()) < 1e-10
    assert float(gap[6:10].min(1).values.min()) > 1e-6
    with pytest.raises(ValueError, match="needs the mixture's solution"):
        physics_loss(model, initial, u)
    result = train(own, problem)
    assert len(result.history) == 3 and all(math.isfinite(h["loss"]) for h in result.history)


def test_coupled_residual_adds_the_interface_jumps_to_the_experts_loss():
    """residual='coupled': the experts' own residuals plus boundary_weight × the mean square
    of interface_jumps; with one expert it is the experts' (and so the assembled) loss."""
    from dataclasses import replace

    from diffnum.constrain import interface_jumps, physics_loss
    from diffnum.constrain._train import ConstrainedModel

    problem = heat_problem()
    own = TrainConfig(method="moe", experts=(2, 1), steps=3, residual="experts", **SMALL)
    coupled = replace(own, residual="coupled", boundary_weight=7.0)
    assert coupled.name == "PI-HC-MoE (K=2, experts' residuals + interface)"
    torch.manual_seed(0)
    model = ConstrainedModel(coupled, problem.pde, problem.grid)
    initial = problem.train_initial[:2]
    out = model(initial, torch.Generator().manual_seed(1))
    loss, parts = physics_loss(model, initial, out.u, out.solution)
    model.config = own
    own_loss, _ = physics_loss(model, initial, out.u, out.solution)
    jumps = interface_jumps(out.solution.basis, out.solution.weights, problem.grid, (2, 1))
    assert jumps.shape == (2, 2 * problem.grid.shape[1]) and float(jumps.abs().max()) > 1e-6
    assert parts["interface"] == pytest.approx(float(jumps.square().mean()), rel=1e-12)
    assert float(loss) == pytest.approx(float(own_loss) + 7.0 * parts["interface"], rel=1e-12)
    result = train(coupled, problem)
    assert len(result.history) == 3 and all(math.isfinite(h["loss"]) for h in result.history)


def test_residual_setting_is_checked_and_old_checkpoints_stay_valid():
    with pytest.raises(ValueError, match="residual"):
        TrainConfig(method="hard", residual="experts")
    with pytest.raises(ValueError, match="residual"):
        TrainConfig(method="moe", experts=(2, 1), residual="bogus")
    # A setting added later is left out of the record while it holds its default, so that
    # the digests (checkpoint names) of runs that never used it do not change.
    config = TrainConfig(method="hard")
    assert "residual" not in config.record()
    assert config.digest == "137bf8bffa24"  # the digest before the setting existed


def test_train_leaves_the_global_random_state_alone():
    # The run is reproducible from config.seed, and the caller's torch RNG is not reseeded.
    problem = heat_problem()
    config = TrainConfig(method="hard", steps=2, n_sampled=32, n_basis=4, width=8,
                         modes=(4, 3), depth=1, padding=0, batch_size=2)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = train(config, problem)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(999)
    second = train(config, problem)
    assert [h["loss"] for h in first.history] == [h["loss"] for h in second.history]


def test_soft_on_the_particular_solution():
    """lift=True: PI-SC's network predicts u − u_p, u_p the elimination's particular solution;
    a zero network output gives u_p itself, the setting is checked, old digests stay."""
    from dataclasses import replace

    from diffnum.constrain._train import ConstrainedModel

    problem = heat_problem()
    config = TrainConfig(method="soft", lift=True, steps=2, **SMALL)
    assert config.name == "PI-SC on u_p" and "lift" in config.record()
    assert "lift" not in replace(config, lift=False).record()
    model = ConstrainedModel(config, problem.pde, problem.grid)
    last = model.backbone.projection_out.linear
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    initial = problem.test_initial[:2]
    u = model(initial).u
    empty = torch.zeros(2, problem.grid.size, 1, dtype=torch.float64)
    _, u_p = problem.pde.lift(empty, problem.grid, initial)  # by hand, as the helper does
    assert torch.equal(u, u_p.reshape(u.shape))
    assert torch.equal(particular_solution(problem.pde, problem.grid, initial), u)
    result = train(config, problem)
    assert all(math.isfinite(h["loss"]) for h in result.history)
    with pytest.raises(ValueError, match="lift=True is for method='soft'"):
        TrainConfig(method="hard", lift=True)
    with pytest.raises(TypeError, match="lift must be True or False"):
        TrainConfig(method="soft", lift=1)


@pytest.mark.parametrize("method", ["soft", "hard"])
def test_initial_rate_input_is_the_pdes_rate_at_t0(method):
    """initial_rate=True: the second input channel is ∂ₜu(·, t₀) = −F(u₀), here κ·u₀,xx of
    the heat equation, which for sin(kx) modes is −κk²·u₀ up to the stencil's O(h²) error,
    constant along t; the first channel is u₀ as before; it trains; the setting is checked
    and absent from old digests."""
    from dataclasses import replace

    from diffnum.constrain._train import ConstrainedModel

    problem = heat_problem()
    config = TrainConfig(method=method, initial_rate=True, steps=2, **SMALL)
    assert "initial_rate" in config.record()
    assert "initial_rate" not in replace(config, initial_rate=False).record()
    model = ConstrainedModel(config, problem.pde, problem.grid)
    x = problem.grid.coordinates[0]
    u0 = torch.stack([torch.sin(math.pi * x), torch.sin(3 * math.pi * x)]).double()
    inputs = model.network_input(u0)
    assert inputs.shape == (2, 2, *problem.grid.shape)
    assert torch.equal(inputs[:, 0], u0[..., None].expand(2, *problem.grid.shape))
    rate = inputs[:, 1]
    assert torch.equal(rate, rate[..., :1].expand_as(rate))  # broadcast along t
    for row, k in zip(rate[..., 0], (math.pi, 3 * math.pi)):
        exact = -0.1 * k**2 * torch.sin(k * x)
        gap = float((row - exact)[1:-1].abs().max() / exact.abs().max())
        assert gap < 0.05 * (k / math.pi) ** 2  # O((kh)²) on 16 nodes
    plain = ConstrainedModel(replace(config, initial_rate=False), problem.pde, problem.grid)
    assert torch.equal(plain.network_input(u0)[:, 0], inputs[:, 0])
    result = train(config, problem)
    assert all(math.isfinite(h["loss"]) for h in result.history)
    with pytest.raises(TypeError, match="initial_rate must be True or False"):
        TrainConfig(initial_rate=1)
