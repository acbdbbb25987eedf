"""The optim experiment's pieces (corpus, models, optimizer split, schedule maps, the tables
and the README block) and a toy end-to-end run that resumes from its stage checkpoints."""

import hashlib
import json
import math
import sys

import numpy as np
import pytest
import torch

from diffnum.factor import POLAR_PRESETS, polar_band
from diffnum.reproduce import Context
from diffnum.reproduce.experiments import optim


def test_corpus_is_deterministic_and_checksummed():
    first, second = optim.load_corpus(), optim.load_corpus()
    assert first.sha256 == second.sha256 and torch.equal(first.data, second.data)
    assert first.sha256 == hashlib.sha256(first.data.numpy().tobytes()).hexdigest()[:12]
    assert first.files and set(first.files) | set(first.missing) == set(optim.STDLIB_FILES)
    assert list(first.files) == sorted(first.files)  # the fixed, sorted order
    assert len(first.data) - first.split == int(0.1 * len(first.data))


def test_corpus_skips_missing_files_in_order(tmp_path):
    (tmp_path / "b.py").write_bytes(b"bb")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_bytes(b"a")
    corpus = optim.load_corpus(tmp_path, ("b.py", "gone.py", "pkg/a.py"))
    assert corpus.files == ("b.py", "pkg/a.py") and corpus.missing == ("gone.py",)
    assert bytes(corpus.data.tolist()) == b"bb\na\n"
    with pytest.raises(FileNotFoundError, match="none of"):
        optim.load_corpus(tmp_path, ("gone.py",))


def test_models_have_the_right_shapes_and_optimizer_split():
    g = torch.Generator().manual_seed(0)
    lm = optim.CharLM(16, 2, 1, 8, g)
    x = torch.randint(0, 256, (3, 8))
    assert lm(x).shape == (3, 8, 256)
    again = optim.CharLM(16, 2, 1, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(lm.parameters(), again.parameters()))
    opt = optim.make_optimizer("Muon", lm, 1e-2)
    assert sorted(set(optim.muon_shapes(opt))) == [(16, 16), (16, 64), (64, 16)]
    adamw = next(g for g in opt.param_groups if g["algorithm"] == "adamw")
    assert {id(p) for p in lm.adamw_parameters()} <= {id(p) for p in adamw["params"]}
    cnn = optim.DigitsCNN(torch.Generator().manual_seed(0))
    assert cnn(torch.rand(5, 1, 8, 8)).shape == (5, 10)
    opt = optim.make_optimizer("Muon", cnn, 1e-2)
    assert optim.muon_shapes(opt) == [(16, 9), (32, 144), (64, 288)]  # 4-D conv weights
    assert isinstance(optim.make_optimizer("AdamW", cnn, 1e-3), torch.optim.AdamW)
    for name in optim.OPTIMIZERS[1:]:
        assert "Newton–Schulz steps" in optim.describe(optim.make_optimizer(name, lm, 1e-3))


def test_schedule_maps_stay_in_their_exact_bands():
    maps = optim._schedule_maps(points=801)
    assert set(maps["maps"]) == set(optim.schedules())
    for label, m in maps["maps"].items():
        triples = optim.schedules()[label][2]
        band = polar_band(triples, lower=optim.DESIGN_LOWER)
        assert m["band"]["min"] == band.min and m["band"]["max"] == band.max
        assert band.min - 1e-12 <= m["grid_min"] and m["grid_max"] <= band.max + 1e-12
    assert maps["maps"]["polar_express (first 5)"]["steps"] == 5
    # Who uses which schedule is read from the optimizers' defaults.
    assert maps["maps"]["muon"]["used_by"].startswith("Muon")
    assert maps["maps"]["turbo_muon"]["used_by"] == "TurboMuon"
    assert maps["maps"]["turbo_muon"]["start"] == "aol"
    assert all(m["lifted_from"] is None or 1e-4 <= m["lifted_from"] <= 1
               for m in maps["maps"].values())
    x = np.array([0.5])
    a, b, c = POLAR_PRESETS["muon"][0]
    assert optim.compose(POLAR_PRESETS["muon"][:1], x)[0] == pytest.approx(
        a * 0.5 + b * 0.5**3 + c * 0.5**5)


def _fake_results(digits_available=True):
    entry = {"values": [1.5, 1.7], "mean": 1.6, "std": 0.1}
    lm = {"sizes": {"layers": 2, "steps": 10, "seeds": 2},
          "sweep": {o: [[1e-3, 1.7], [3e-3, 1.6], [1e-2, None]] for o in optim.OPTIMIZERS},
          "chosen_lr": {o: 3e-3 for o in optim.OPTIMIZERS},
          "final": {o: dict(entry, mean=1.6 - 0.1 * i) for i, o in enumerate(optim.OPTIMIZERS)},
          "seeds": {o: [0, 1] for o in optim.OPTIMIZERS},
          "step_ms": {o: 10.0 + i for i, o in enumerate(optim.OPTIMIZERS)},
          "step_ms_mean": {o: 10.0 + i for i, o in enumerate(optim.OPTIMIZERS)},
          "opt_step_ms": {o: 1.0 for o in optim.OPTIMIZERS},
          "equal_time": {"seconds": 0.1, "fastest": "AdamW",
                         "loss": {o: entry for o in optim.OPTIMIZERS}}}
    digits = {"available": False, "reason": "scikit-learn is not installed"}
    if digits_available:
        digits = {"available": True, "sizes": {"seeds": 3},
                  "sweep": {o: [[1e-2, 0.1]] for o in optim.DIGITS_OPTIMIZERS},
                  "chosen_lr": {o: 1e-2 for o in optim.DIGITS_OPTIMIZERS},
                  "accuracy": {o: {"mean": 0.98, "std": None}
                               for o in optim.DIGITS_OPTIMIZERS},
                  "loss": {o: {"mean": 0.05, "std": 0.01} for o in optim.DIGITS_OPTIMIZERS},
                  "step_ms": {o: 2.0 for o in optim.DIGITS_OPTIMIZERS}}
    schedules = {"muon": {"used_by": "Muon", "start": "Frobenius", "steps": 5,
                          "band": {"min": 0.47, "max": 1.2, "error": 0.53},
                          "at_1e-4": 0.01, "grid_min": 0.47, "grid_max": 1.2,
                          "lifted_from": 1.07e-3}}
    return {"corpus": {"bytes": 1000, "python": "3.11.7", "sha256_12": "abcdef012345"},
            "lm": lm, "digits": digits, "schedules": schedules}


def test_readme_renders_the_tables_from_stored_results():
    results = json.loads(json.dumps(_fake_results()))
    block = optim.readme(results, "quick")
    assert "`diffnum reproduce optim --quick`" in block and "abcdef012345" in block
    assert "| AdamW | 0.001: 1.700, 0.003: 1.600, 0.01: diverged | 0.003 | 1.600 ± 0.100 |" in block
    assert "| Muon | 0.01: 0.100 | 0.01 | 0.9800 | 0.0500 ± 0.0100 | 2.00 |" in block
    assert ("| muon | Muon | Frobenius | 5 | 0.4700 | 1.2000 | 0.5300 | 1.00e-02 | 1.07e-03 |"
            in block)
    assert "Ranked by final validation loss: Root < TurboMuon < Muon < AdamW." in block
    skipped = optim.readme(json.loads(json.dumps(_fake_results(False))), "full")
    assert "`diffnum reproduce optim`" in skipped and "Digits skipped" in skipped
    table = optim.summary_table(results)
    assert table.startswith("| optimizer |") and "| TurboMuon | 1.400 ± 0.100 | 12.0 | — |" in table


def _toy_sizes(quick):
    return {
        "lm": dict(d_model=16, heads=2, layers=1, context=16, batch=4, steps=6, warmup=2,
                   eval_every=3, eval_windows=8, seeds=2,
                   lrs={"AdamW": (1e-3, 3e-3), **{o: (1e-2,) for o in optim.OPTIMIZERS[1:]}}),
        "digits": dict(epochs=1, batch=512, lrs=(1e-2, 3e-2), seeds=2),
    }


def test_training_is_deterministic_per_seed(tmp_path):
    ctx = Context(out=tmp_path, quick=True, seed=0, show_progress=False)
    corpus = optim.load_corpus()
    sizes = _toy_sizes(True)["lm"]
    jobs = [("Muon", 1e-2, 0), ("AdamW", 1e-3, 0), ("Muon", 1e-2, 1)]
    first, second = (optim._train_lm(ctx, corpus, sizes, jobs, "x") for _ in range(2))
    assert [r["curve"][-1][2] for r in first] == [r["curve"][-1][2] for r in second]
    assert [[c[2] for c in r["curve"]] for r in first] == [[c[2] for c in r["curve"]]
                                                           for r in second]
    assert first[0]["final"] != first[2]["final"]  # another seed, another run
    # Every optimizer of a seed starts from the same weights and sees the same batches.
    assert first[0]["curve"][0][2] == first[1]["curve"][0][2]


def test_findings_survive_a_diverged_optimizer():
    results = json.loads(json.dumps(_fake_results()))
    results["lm"]["final"]["Root"] = {"values": [None], "mean": None, "std": None}
    results["lm"]["equal_time"]["loss"]["Root"] = {"values": [None], "mean": None, "std": None}
    text = " ".join(optim.lm_findings(results["lm"]))
    assert "Root: final loss not finite for Root" in text
    assert "Ranked by final validation loss: TurboMuon < Muon < AdamW." in text
    assert "| Root | 0.001: 1.700, 0.003: 1.600, 0.01: diverged | 0.003 | diverged |" in (
        optim.lm_table(results["lm"]))


def _fake_digits():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1797, 1, 8, 8, generator=g), torch.randint(0, 10, (1797,), generator=g)


def test_toy_run_writes_tables_figures_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(optim, "_sizes", _toy_sizes)
    monkeypatch.setattr(optim, "load_digits_data", _fake_digits)
    section = optim.run(Context(out=tmp_path, quick=True, seed=0, show_progress=False))
    results = section.results
    lm, digits = results["lm"], results["digits"]
    assert lm["chosen_lr"]["Muon"] == 1e-2 and lm["seeds"]["Root"] == [0, 1]
    assert all(math.isfinite(lm["final"][o]["mean"]) for o in optim.OPTIMIZERS)
    assert len(lm["final"]["AdamW"]["values"]) == 2 and lm["timed_steps"]["Muon"] == 2
    assert lm["curves"]["Muon"]["step"] == [0, 3, 6]
    assert digits["available"] and digits["muon_shapes"] == [[16, 9], [32, 144], [64, 288]]
    assert "refuses" in digits["torch_muon"] or "no torch.optim.Muon" in digits["torch_muon"]
    for name in optim.OPTIMIZERS:
        assert f"| {name} |" in section.markdown
    assert "Ranked by final validation loss" in section.markdown
    assert all((tmp_path / f).exists() for f in section.figures)
    stored = json.loads(json.dumps(results, default=float))
    block = optim.readme(stored, "quick")
    tables = [t for t in block.split("\n\n") if t.startswith("| ")]
    assert len(tables) == 3 and all(t in section.markdown for t in tables)
    assert section.summary_table.startswith("| optimizer |")
    # The same seed gives the same losses; --resume reads the stage checkpoints back.
    resumed = optim.run(Context(out=tmp_path, quick=True, seed=0, show_progress=False,
                                resume=True))
    assert resumed.results["lm"]["final"] == lm["final"]
    assert resumed.results["digits"]["accuracy"] == digits["accuracy"]


def test_digits_part_is_skipped_without_scikit_learn(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # the import fails
    assert optim.load_digits_data() is None
    monkeypatch.setattr(optim, "_sizes", _toy_sizes)
    section = optim.run(Context(out=tmp_path, quick=True, seed=0, show_progress=False))
    assert section.results["digits"] == {
        "available": False, "reason": "scikit-learn is not installed (pip install scikit-learn)"}
    assert "**(b) Orthogonalized convolutions on real digits** skipped: scikit-learn" in (
        section.markdown)
    assert "| AdamW |" in section.summary_table and "| — |" in section.summary_table
    assert "Digits skipped" in optim.readme(json.loads(json.dumps(section.results)), "quick")


def test_real_digits_split_is_fixed():
    pytest.importorskip("sklearn")
    images, labels = optim.load_digits_data()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    (xa, ya), (_, yb) = optim.digits_split(images, labels)
    (xc, _), _ = optim.digits_split(images, labels)
    assert len(ya) == 1347 and len(yb) == 450 and torch.equal(xa, xc)
