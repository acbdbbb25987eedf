"""The hard-constraints experiment end to end at toy size: tables, verdicts, figures, and a
resumed run that reuses its training checkpoints."""

import json
import math

import pytest
import torch

from diffnum.reproduce import Context
from diffnum.reproduce.experiments import hard_constraints


def _toy_sizes(quick):
    return {
        "ds": dict(nx=16, nt=8, cells=32, n_train=4, n_test=2, steps=2, n_basis=4,
                   n_sampled=64, width=4, modes=(4, 3), depth=1, padding=2, ablations=True,
                   minimizer_samples=2),
        "ns": dict(n=8, nt=5, steps_ref=8, n_train=4, n_test=2, steps=2, n_basis=4,
                   n_sampled=64, width=4, modes=(3, 3, 2), depth=1, padding=1,
                   ablations=True, minimizer_samples=2),
        "scaling": dict(nx=16, nt=8, ms=(32, 64), ks=(2,), repeats=1),
    }


def _table_of(markdown, heading):
    """The first table after the paragraph that starts with ``**heading``."""
    after = markdown.split(f"**{heading}", 1)[1]
    return next(t for t in after.split("\n\n") if t.startswith("| method |"))


def test_toy_run_writes_tables_figures_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(hard_constraints, "_sizes", _toy_sizes)
    ctx = Context(out=tmp_path, quick=True, seed=0, show_progress=False)
    section = hard_constraints.run(ctx)
    for name in ("PI-SC", "PI-HC", "PI-HC-MoE (K=4)"):
        assert f"| {name} |" in section.markdown
    assert set(section.results) == {"ds", "ns", "baselines", "layer_swaps", "time_vs_m",
                                    "verdicts", "reference_physics_loss", "findings"}
    # The layer swap: each trained basis under the other layer, scored like the models.
    for label in ("ds", "ns"):
        swaps = section.results["layer_swaps"][label]
        assert [s["method"] for s in swaps] == [
            "PI-HC-MoE (K=4) layer on PI-HC's trained basis",
            "PI-HC layer on PI-HC-MoE (K=4)'s trained basis",
            "best fit to the reference in PI-HC's trained span (oracle)",
            "best fit to the reference in PI-HC-MoE (K=4)'s trained span (oracle)"]
        assert all(s["relative_l2_initial"] <= 1e-12 for s in swaps)
        # The oracle fits the reference in each span: no worse than w = 0 (u_p), and the
        # mixture's per-block fit no worse than its solve.
        rows = section.results[label]
        assert swaps[3]["relative_l2_mean"] <= rows[2]["relative_l2_mean"] + 1e-12
        assert swaps[2]["relative_l2_mean"] <= rows[1]["relative_l2_mean"] + 1e-12
        assert f"| {swaps[0]['method']} |" in section.markdown
    assert "Swapping layers after training" in section.markdown
    assert "| persistence (u = u₀) |" in section.markdown
    # Diffusion–sorption adds the mixture trained on its experts' own residuals, without
    # and with the interface conditions.
    assert [r["method"] for r in section.results["ds"]][3:5] == [
        "PI-HC-MoE (K=4, experts' residuals)", "PI-HC-MoE (K=4, experts' residuals + interface)"]
    # Both PDEs have PI-SC given the hard methods' particular solution; Navier–Stokes runs
    # every method with the rate input and adds PI-SC and PI-HC without it.
    assert [r["method"] for r in section.results["ds"]][-1] == "PI-SC on u_p"
    assert [(r["method"], r["initial_rate"]) for r in section.results["ns"]] == [
        ("PI-SC", True), ("PI-HC", True), ("PI-HC-MoE (K=4)", True), ("PI-SC on u_p", True),
        ("PI-SC, u₀ input only", False), ("PI-HC, u₀ input only", False)]
    assert not any(r["initial_rate"] for r in section.results["ds"])
    assert "The rate input ∂ₜu(t₀) = −F(u₀) (without → with): PI-SC" in section.markdown
    assert "| first-order step u₀ + t·∂ₜu(t₀) (the rate input alone) |" in _table_of(
        section.markdown, "Navier")
    assert "Best fits of the reference in the trained spans" in section.markdown
    assert "Trained on its experts' own residuals instead" in section.markdown
    assert "With the interface conditions of domain decomposition added" in section.markdown
    assert all(len(row["block_error"]) == 4 for row in section.results["ds"][1:5])
    assert "Where the error sits, block by block" in section.markdown
    assert "Over the last quarter of training the loss changed by" in section.markdown
    assert "Given the same particular solution u_p" in section.markdown
    # Diffusion–sorption's u_p (u₀ with the corner layers) is a baseline row of its own; on
    # Navier–Stokes u_p is ω₀ itself, persistence, and is not repeated.
    assert "| particular solution u_p of the elimination (w = 0) |" in _table_of(
        section.markdown, "Diffusion")
    assert not any(b["method"].startswith("particular")
                   for b in section.results["baselines"]["ns"])
    # Diffusion–sorption's loss minimizers: over every grid function, globally and block by
    # block (the experts' problems); both meet u₀ exactly.
    minimizers = [b for b in section.results["baselines"]["ds"]
                  if b["method"].startswith("loss minimizer")]
    assert [b["method"] for b in minimizers] == [
        "loss minimizer on the grid (2 u₀)",
        "loss minimizer per block, 4 experts' problems (2 u₀)"]
    assert all(b["relative_l2_initial"] <= 1e-12 for b in minimizers)
    assert "single out the solution" in " ".join(section.results["findings"]["ds"])
    for label in ("ds", "ns"):
        assert all(math.isfinite(r["heldout_loss"]) for r in section.results[label])
    # The hard-constrained predictions meet u₀ at t = 0 (the conditions are eliminated).
    for label in ("ds", "ns"):
        for row in section.results[label]:
            if row["config"] != "soft":
                assert row["relative_l2_initial"] <= 1e-12
    assert "Why, where the results differ" in section.markdown
    assert len(section.results["ds"][0]["relative_l2"]) == 2
    assert all((tmp_path / f).exists() for f in section.figures)
    assert sorted(section.results["time_vs_m"]["seconds"]) == ["PI-HC", "PI-HC-MoE (K=2)"]
    # One metrics file per run, named by its configuration's digest (seed included): the
    # mixture and its experts'-residuals variants do not overwrite each other.
    files = sorted((tmp_path / "metrics").glob("ds-moe-*.jsonl"))
    assert len(files) == 3
    for f in files:
        assert [json.loads(line)["step"] for line in f.read_text().splitlines()] == [1, 2]
    json.dumps(section.results)  # JSON-serializable as the harness stores it
    # The README block, from the results as results.json holds them, shows the report's
    # own tables (the same format, the same numbers).
    stored = json.loads(json.dumps(section.results, default=float))
    block = hard_constraints.readme(stored, "quick")
    tables = [t for t in block.split("\n\n") if t.startswith("| method |")]
    assert len(tables) == 2 and all(t in section.markdown for t in tables)
    assert "Claims checked on this machine" in block
    # Resumed: every run finds its final checkpoint and trains no further step.
    resumed = hard_constraints.run(Context(out=tmp_path, quick=True, seed=0,
                                           show_progress=False, resume=True))
    for label in ("ds", "ns"):
        for before, after in zip(section.results[label], resumed.results[label]):
            assert before["loss_curve"] == after["loss_curve"]
            assert before["relative_l2"] == after["relative_l2"]


def test_swapped_model_leaves_the_original_alone():
    import torch

    from diffnum.constrain import MixtureOfExperts, TrainConfig
    from diffnum.constrain._train import ConstrainedModel
    from diffnum.pde import Heat1D, uniform_grid

    grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 0.1, 6)})
    pde = Heat1D(0.1, boundary="dirichlet")
    config = TrainConfig(method="hard", n_basis=3, n_sampled=None, width=4, modes=(3, 2),
                         depth=1)
    model = ConstrainedModel(config, pde, grid)
    moe = MixtureOfExperts(model.layer, (2, 1), distributed=False)
    swapped = hard_constraints._swapped(model, moe)
    assert swapped.layer is moe and model.layer is not moe
    assert swapped.backbone is model.backbone
    initial = torch.sin(torch.pi * grid.coordinates[0]).unsqueeze(0).double()
    out = swapped(initial)
    u, solution = out.u, out.solution
    assert solution.weights.shape[-2] == 2 and u.shape == (1, *grid.shape)


def test_block_errors_add_up_to_the_mean_squared_relative_error():
    """Where the error sits: the blocks' shares of a prediction's squared error sum to the
    mean over samples of its squared relative L2 error, and an error confined to one block
    shows only there."""
    from diffnum.constrain import PhysicsProblem, expert_index
    from diffnum.pde import Heat1D, uniform_grid

    grid = uniform_grid({"x": (0.0, 1.0, 8), "t": (0.0, 1.0, 4)})
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(3, 8, 4, dtype=torch.float64, generator=g)
    problem = PhysicsProblem(Heat1D(0.1), grid, reference[:, :, 0], reference[:, :, 0],
                             reference)
    u = reference + 0.1 * torch.randn(3, 8, 4, dtype=torch.float64, generator=g)
    shares = hard_constraints._block_error(u, problem, (4, 1))
    relative = (u - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
    assert sum(shares) == pytest.approx(float(relative.square().mean()), rel=1e-12)
    only = reference.clone().flatten(1)
    only[:, expert_index(grid, (4, 1))[2]] += 1.0
    shares = hard_constraints._block_error(only.reshape(3, 8, 4), problem, (4, 1))
    assert shares[:2] == [0.0, 0.0] and shares[3] == 0.0 and shares[2] > 0


def test_the_flattening_finding_reads_the_last_quarter_of_each_curve():
    falling = [1.0] * 30 + [0.5] * 5 + [0.25] * 5  # last eighth half of the one before
    flat = [1.0] * 40
    assert hard_constraints._late_change(falling) == pytest.approx(-0.5)
    assert hard_constraints._late_change(flat) == 0.0
    assert math.isnan(hard_constraints._late_change([1.0] * 8))
    text = hard_constraints._flattening_finding(
        [{"method": "A", "loss_curve": falling}, {"method": "B", "loss_curve": flat}])
    assert text.endswith("-50 % (A), +0 % (B) (median of the last eighth against the eighth "
                         "before): A still falling by more than 5 %, so the budget stops "
                         "before its loss has flattened; B not falling by more than 5 %.")


def _minimizers(block, whole):
    return [{"method": "loss minimizer on the grid (4 u₀)", "relative_l2_mean": whole},
            {"method": "loss minimizer per block, 4 experts' problems (4 u₀)",
             "relative_l2_mean": block}]


def test_the_block_minimizer_finding_compares_the_experts_problems_with_the_global_one():
    swap = {"relative_l2_mean": 0.008}
    moe = {"relative_l2_mean": 0.031}
    text, = hard_constraints._block_minimizer_finding(moe, _minimizers(0.0313, 0.0055), swap)
    assert text.startswith("The experts' problems do not single out the solution")
    assert "0.031 from the reference against 0.0055" in text and "(5.7× farther)" in text
    assert "mixture's 0.031 is at that level" in text and "reach 0.008" in text
    text, = hard_constraints._block_minimizer_finding(
        {"relative_l2_mean": 0.05}, _minimizers(0.0313, 0.0055), swap)
    assert "0.05 is above that level" in text
    text, = hard_constraints._block_minimizer_finding(moe, _minimizers(0.006, 0.0055), swap)
    assert text.startswith("The experts' problems single out the solution about as well")
    assert hard_constraints._block_minimizer_finding(moe, _minimizers(1, 1)[:1], swap) == []


def test_quick_sizes_leave_out_the_ablation_runs():
    """The quick run trains the compared methods and PI-SC on u_p; the full run adds the
    mixture's residual variants (diffusion–sorption) and the runs without the rate input
    (Navier–Stokes)."""
    def names(quick, label):
        sizes = hard_constraints._sizes(quick)[label]
        return [hard_constraints._name(label, c)
                for c in hard_constraints._configs(label, sizes, 0)]

    main = ["PI-SC", "PI-HC", "PI-HC-MoE (K=4)", "PI-SC on u_p"]
    assert names(True, "ds") == names(True, "ns") == main
    assert names(False, "ds") == [*main[:3], "PI-HC-MoE (K=4, experts' residuals)",
                                  "PI-HC-MoE (K=4, experts' residuals + interface)", main[3]]
    assert names(False, "ns") == [*main, "PI-SC, u₀ input only", "PI-HC, u₀ input only"]
