"""The orth experiment's pieces (split, model, parameter counts, geometry measure, findings)
and a toy end-to-end run on the real digits that resumes from its checkpoints."""

import copy
import json
import re
import sys

import pytest
import torch

from diffnum.reproduce import Context
from diffnum.reproduce.experiments import orth

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def parts():
    return orth.split_digits(*orth.load_digits_data())


def test_split_is_fixed_disjoint_and_relabelled(parts):
    again = orth.split_digits(*orth.load_digits_data())
    assert all(torch.equal(parts[k][0], again[k][0]) for k in parts)
    assert sum(len(v[1]) for v in parts.values()) == 1797
    for v in parts.values():
        assert set(v[1].tolist()) == set(range(5))
    # Source and target images are different digits: no target image is a source image.
    source = {tuple(x.flatten().tolist()) for x in parts["source_test"][0]}
    assert not source & {tuple(x.flatten().tolist()) for x in parts["target_test"][0]}


def test_every_method_starts_at_the_pretrained_features_with_near_equal_counts():
    pretrained = orth.DigitsNet(torch.Generator().manual_seed(0))
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    heads = []
    for method in orth.METHODS:
        model = orth.prepare(pretrained, method, torch.Generator().manual_seed(2), 0)
        # PiSSA and HRA start at the base to rounding; the others exactly.
        torch.testing.assert_close(model.features(x), pretrained.features(x), rtol=0,
                                   atol=1e-5)
        heads.append(model.head.weight.detach())
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert {"head.weight", "head.bias"} <= trainable
        if orth.METHODS[method] is not None:  # adapters on both layers, nothing else
            assert all(n.startswith(("conv2.", "fc.", "head.")) for n in trainable)
            assert any(n.startswith("conv2.") for n in trainable)
            assert any(n.startswith("fc.") for n in trainable)
    assert all(torch.equal(heads[0], h) for h in heads)  # one initial head for all
    counts = orth.parameter_counts(pretrained)
    budget = counts[orth.BUDGET_METHOD]["adapter"]
    assert budget == 672 and counts["head only"] == {"total": 325, "adapter": 0}
    for method, options in orth.METHODS.items():
        if options is not None:
            assert abs(counts[method]["adapter"] / budget - 1) <= 0.05, method


def test_qgoft_is_relaxed_and_trains_with_its_penalty_goft_is_strict(monkeypatch):
    pretrained = orth.DigitsNet(torch.Generator().manual_seed(0))
    calls = []

    def counted(model):
        value = orth_penalty(model)
        calls.append(float(value.detach()))
        return value

    orth_penalty = orth.orthogonality_penalty
    monkeypatch.setattr(orth, "orthogonality_penalty", counted)
    g = torch.Generator().manual_seed(1)
    train = (torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g))
    sizes = dict(epochs=2, batch=4)
    for method, relaxed in (("qgoft", True), ("goft", False)):
        calls.clear()
        model, _ = orth.adapt_run(pretrained, method, 0.05, 0, train, sizes,
                                  torch.Generator().manual_seed(2),
                                  torch.Generator().manual_seed(3))
        adapters = [m for m in model.modules() if isinstance(m, orth.Adapter)]
        assert len(adapters) == 2 and all(a.relax is relaxed for a in adapters)
        if relaxed:  # λ Σ⟨α, β⟩² in every step's loss: 0 at the identity start, then > 0
            assert len(calls) == 4 and calls[0] == 0.0 and calls[-1] > 0.0
        else:
            assert calls == []


def test_geometry_change_is_zero_for_a_rotation_and_not_for_a_perturbation():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(16, 24, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(24, 24, generator=g, dtype=torch.float64))
    rotated = orth.geometry_change(W, W @ Q)
    assert rotated["energy_change"] < 1e-12 and rotated["angle_change"] < 1e-6
    moved = orth.geometry_change(W, W + 0.5 * torch.randn(16, 24, generator=g,
                                                           dtype=torch.float64))
    assert moved["energy_change"] > 1e-5 and moved["angle_change"] > 1
    assert orth.neuron_angles(W).shape == (16 * 15 // 2,)


@pytest.fixture
def one_thread():
    """The toy models are tiny: with the suite's two threads on two busy cores their steps
    wait on each other (a toy run took 20 s there against 1.6 s on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _toy_sizes(quick):
    return dict(pretrain_epochs=2, epochs=1, batch=128, lrs=(1e-2, 3e-2), seeds=2)


def _check_findings(r, text):
    """Every number-carrying sentence of the findings agrees with the results."""
    target, kept = r["target"], r["kept"]
    ranked = re.search(r"Ranked by target accuracy: (.*?)\.(?= )", text).group(1)
    names = [part.rsplit(" ", 1)[0] for part in ranked.split(" > ")]
    assert names == [orth.LABELS[m] for m in sorted(target, key=lambda m: -target[m]["mean"])]
    for m in orth.ORTHOGONAL:
        diff = kept[m]["mean"] - kept["lora"]["mean"]
        spread = orth._std(kept[m]) + orth._std(kept["lora"])
        sentence = re.search(rf"{orth.LABELS[m]} keeps .*?target accuracy\.", text).group(0)
        assert f"({diff:+.3f};" in sentence
        if abs(diff) <= spread:
            assert "within the sum" in sentence
        else:
            assert ("less forgetting" if diff > 0 else "more forgetting") in sentence
    better = [m for m in orth.ORTHOGONAL
              if kept[m]["mean"] - kept["lora"]["mean"]
              > orth._std(kept[m]) + orth._std(kept["lora"])]
    verb = "keeps" if len(better) == 1 else "keep"
    assert f"{len(better)} of the 4 orthogonal adapters {verb} more" in text
    for m in r["angle_change"]:
        if m != "head only" and r["angle_change"][m] <= orth.ANGLE_KEPT:
            assert f"{orth.LABELS[m]} ({r['angle_change'][m]:.1e}°)" in text
        elif r["angle_change"][m] > orth.ANGLE_KEPT:
            assert f"{orth.LABELS[m]} (up to {r['angle_change'][m]:.2f}°)" in text


def test_toy_run_reports_the_numbers_it_measured_and_resumes(tmp_path, monkeypatch,
                                                             one_thread):
    monkeypatch.setattr(orth, "_sizes", _toy_sizes)
    ctx = Context(out=tmp_path, quick=True, seed=0, show_progress=False)
    section = orth.run(ctx)
    r = json.loads(json.dumps(section.results, default=float))
    assert r["available"] and set(r["target"]) == set(orth.METHODS)
    # The sweep holds the grid, plus up to LR_EXTENSIONS half-decades beyond the edge where
    # the best lr sat; the chosen lr is the best one swept, inside unless extensions ran out.
    for m, rows in r["sweep"].items():
        lrs = [lr for lr, _ in rows]
        assert lrs == sorted(lrs) and {1e-2, 3e-2} <= set(lrs)
        assert len(lrs) <= 2 + orth.LR_EXTENSIONS
        best = min(rows, key=lambda row: row[1])[0]
        assert r["chosen_lr"][m] == best
        if len(lrs) < 2 + orth.LR_EXTENSIONS:
            assert lrs[0] < best < lrs[-1]
    # qGOFT's λ: swept over the paper's range at qGOFT's lr, the best one trains the seeds.
    assert [lam for lam, _ in r["lambda_sweep"]] == list(orth.QGOFT_LAMBDAS)
    assert r["qgoft_lambda"] == min(r["lambda_sweep"], key=lambda row: row[1])[0]
    assert "then chosen at qGOFT's lr by the same validation loss" in section.markdown
    for m in orth.METHODS:
        assert len(r["target"][m]["values"]) == 2 and len(r["kept"][m]["values"]) == 2
        assert 0 <= r["target"][m]["mean"] <= 1 and r["step_ms"][m] > 0
    # The linear probe leaves the backbone alone: it keeps the source accuracy exactly.
    assert r["kept"]["head only"]["values"] == r["source_accuracy"]["values"]
    assert r["angle_change"]["head only"] == 0
    for m in orth.ORTHOGONAL:  # exact rotations keep the neurons' angles (float32 rounding)
        assert r["angle_change"][m] < orth.ANGLE_KEPT and r["energy_change"][m] < 1e-6
    assert r["angle_change"]["full"] > orth.ANGLE_KEPT
    text = " ".join(orth.findings(r))
    _check_findings(r, text)
    assert text in section.markdown
    assert all((tmp_path / f).exists() for f in section.figures)
    block = orth.readme(r, "quick")
    assert "`diffnum reproduce orth --quick`" in block and orth.results_table(r) in block
    assert orth.results_table(r) in section.markdown
    assert section.summary_table.startswith("| method |")
    # --resume reuses the pretrained weights and the stage checkpoints: the same numbers.
    resumed = orth.run(Context(out=tmp_path, quick=True, seed=0, show_progress=False,
                               resume=True))
    assert resumed.results["target"] == section.results["target"]
    assert resumed.results["kept"] == section.results["kept"]


def test_findings_follow_the_numbers():
    entry = {"values": [0.5, 0.5], "mean": 0.5, "std": 0.01}
    methods = list(orth.METHODS)
    r = {"sizes": {"seeds": 2}, "options": {m: o for m, o in orth.METHODS.items() if o},
         "source_accuracy": {"mean": 0.99, "std": 0.0},
         "target": {m: dict(entry, mean=0.9 + 0.01 * i) for i, m in enumerate(methods)},
         "kept": {m: copy.deepcopy(entry) for m in methods},
         "parameters": {m: {"adapter": 672, "total": 997} for m in methods},
         "budget": 672, "head_parameters": 325,
         "angle_change": {m: 1e-5 if m in orth.ORTHOGONAL else 50.0 for m in methods},
         "energy_change": {m: 0.0 for m in methods},
         "step_ms": {m: 2.0 for m in methods}, "chosen_lr": {m: 1e-2 for m in methods},
         "sweep": {m: [[3e-3, 1.0], [1e-2, 0.5], [3e-2, 0.7]] for m in methods}}
    r["kept"]["hra"]["mean"] = 0.6  # +0.1 > 0.02: less forgetting
    r["kept"]["oft"]["mean"] = 0.51  # +0.01 <= 0.02: within the spread
    r["kept"]["boft"]["mean"] = 0.4  # -0.1: more forgetting
    r["angle_change"]["head only"] = 0.0
    text = " ".join(orth.findings(r))
    assert "HRA keeps 0.600 on 0–4 against LoRA's 0.500 (+0.100; less forgetting" in text
    assert "OFT keeps 0.510 on 0–4 against LoRA's 0.500 (+0.010; within" in text
    assert "BOFT keeps 0.400 on 0–4 against LoRA's 0.500 (-0.100; more forgetting" in text
    assert "1 of the 4 orthogonal adapters keeps more of 0–4 than LoRA by more than the " \
        "seed spread (HRA)." in text
    assert "Every chosen lr is inside its sweep." in text
    assert text.startswith("Ranked by target accuracy: qGOFT 0.990 > GOFT 0.980 > HRA 0.970")
    _check_findings(r, text)
    r["chosen_lr"]["lora"] = 3e-2
    assert "edge of its sweep for LoRA" in " ".join(orth.findings(r))


def test_skipped_without_scikit_learn(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    section = orth.run(Context(out=tmp_path, quick=True, seed=0, show_progress=False))
    assert section.results["available"] is False and "Skipped" in section.markdown
    assert "skipped" in orth.readme(section.results, "quick")
