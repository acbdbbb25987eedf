"""The reproduce harness and the command line, with a tiny stand-in experiment."""

import json

import pytest

import diffnum
import diffnum.reproduce
from diffnum import cli
from diffnum.reproduce import Context, Experiment, Section, _harness, markdown_table

CALLS = []


def _tiny(ctx: Context) -> Section:
    CALLS.append(ctx.seed)
    path = ctx.figure_path("tiny.png")
    path.write_bytes(b"not really a png")
    return Section(title="Tiny", markdown="a table:\n\n" + markdown_table(["x"], [[1.5]]),
                   results={"value": 1.5, "seed": ctx.seed},
                   figures=(str(path.relative_to(ctx.out)),))


@pytest.fixture
def tiny_registry(monkeypatch):
    CALLS.clear()
    registry = {"tiny": Experiment(name="tiny", title="Tiny", run=_tiny)}
    monkeypatch.setattr(_harness, "available_experiments", lambda: registry)
    monkeypatch.setattr(diffnum.reproduce, "available_experiments", lambda: registry)
    return registry


def test_report_results_and_figures_are_written(tmp_path, tiny_registry):
    _harness.run(["tiny"], out=tmp_path, quick=True, seed=3, show_progress=False)
    report = (tmp_path / "report.md").read_text()
    assert "## Tiny" in report and "| 1.5 |" in report and "figures/tiny.png" in report
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mode"] == "quick" and results["seed"] == 3
    assert results["experiments"]["tiny"]["results"] == {"value": 1.5, "seed": 3}
    assert results["environment"]["diffnum"] == diffnum.__version__


def test_resume_reuses_finished_experiments_only_with_equal_settings(tmp_path, tiny_registry):
    _harness.run(["tiny"], out=tmp_path, quick=True, seed=1, show_progress=False)
    _harness.run(["tiny"], out=tmp_path, quick=True, seed=1, resume=True, show_progress=False)
    assert CALLS == [1]  # the second run came from the atomic cache
    _harness.run(["tiny"], out=tmp_path, quick=True, seed=2, resume=True, show_progress=False)
    assert CALLS == [1, 2]  # another seed is another experiment
    # A corrupted cache entry is ignored, never trusted.
    (tmp_path / ".cache" / "tiny-quick-seed2.json").write_text("{not json")
    _harness.run(["tiny"], out=tmp_path, quick=True, seed=2, resume=True, show_progress=False)
    assert CALLS == [1, 2, 2]
    assert not list((tmp_path / ".cache").glob("*.tmp"))


def test_unknown_experiment_is_named(tmp_path, tiny_registry):
    with pytest.raises(ValueError, match=r"unknown experiment\(s\) \['nope'\]"):
        _harness.run(["nope"], out=tmp_path)


def test_cli_reproduce_and_version(tmp_path, tiny_registry, capsys):
    assert cli.main(["reproduce", "tiny", "--quick", "--no-progress",
                     "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").exists()
    assert cli.main(["reproduce", "bogus", "--out", str(tmp_path)]) == 2
    assert "unknown target" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert diffnum.__version__ in capsys.readouterr().out


def test_real_experiments_are_discovered():
    assert "factor" in _harness.available_experiments()


def test_bench_without_benchmarks_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["bench", "--dir", str(tmp_path)]) == 2
    assert "no bench_*.py files" in capsys.readouterr().err


def test_atomic_write_respects_the_umask(tmp_path):
    import os

    from diffnum._core.files import atomic_write

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a" / "f.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "f.bin").read_bytes() == b"x"
    assert (tmp_path / "a" / "f.bin").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.bin"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    import pytest

    from diffnum._core.files import atomic_write

    (tmp_path / "f").write_text("old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "f", boom)
    assert (tmp_path / "f").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_ctrl_c_is_one_line_naming_the_experiment(tmp_path, monkeypatch, capsys):
    def interrupted(ctx):
        raise KeyboardInterrupt

    registry = {"tiny": Experiment(name="tiny", title="Tiny", run=_tiny),
                "slow-one": Experiment(name="slow-one", title="Slow", run=interrupted)}
    monkeypatch.setattr(_harness, "available_experiments", lambda: registry)
    monkeypatch.setattr(diffnum.reproduce, "available_experiments", lambda: registry)
    assert cli.main(["reproduce", "tiny", "slow_one", "--no-progress",
                     "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "interrupted during 'slow-one'" in err and "tiny finished" in err
    assert "--resume" in err and "Traceback" not in err
    assert (tmp_path / ".cache" / "tiny-full-seed0.json").exists()  # kept for --resume


def test_resumed_experiments_are_announced(tmp_path, tiny_registry, capsys):
    _harness.run(["tiny"], out=tmp_path, show_progress=False)
    _harness.run(["tiny"], out=tmp_path, resume=True, show_progress=True)
    assert "tiny: reused from" in capsys.readouterr().err


def test_help_lists_the_targets_and_both_spellings_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "dcls, factor, hard-constraints" in out
    assert cli._spelled("hard_constraints") == "hard-constraints"
    (tmp_path / "bench_two_words.py").write_text("def main(quick):\n    print('ran', quick)\n")
    for spelling in ("two_words", "two-words"):
        assert cli.main(["bench", spelling, "--dir", str(tmp_path), "--quick"]) == 0
        assert "ran True" in capsys.readouterr().out


def test_bench_results_go_beside_dir(tmp_path, monkeypatch):
    from diffnum import _bench

    monkeypatch.chdir(tmp_path)
    bench_dir = tmp_path / "elsewhere"
    bench_dir.mkdir()
    (bench_dir / "bench_demo.py").write_text(
        "from diffnum._bench import write_results\n"
        "def main(quick):\n"
        "    write_results('demo', 'diffnum bench demo', [{'a': 1}], ['a'], [[1]])\n")
    monkeypatch.setattr(_bench, "results_directory", _bench.results_directory)
    assert cli.main(["bench", "demo", "--dir", str(bench_dir)]) == 0
    assert (bench_dir / "results" / "demo.json").exists()
    assert not (tmp_path / "benchmarks").exists()


def _tiny_readme(results, mode):
    return markdown_table(["value", "mode"], [[results["value"], mode]])


def test_readme_blocks_are_written_from_the_results(tmp_path, monkeypatch, capsys):
    registry = {"tiny": Experiment(name="tiny", title="Tiny", run=_tiny, readme=_tiny_readme)}
    monkeypatch.setattr(_harness, "available_experiments", lambda: registry)
    monkeypatch.setattr(diffnum.reproduce, "available_experiments", lambda: registry)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- reproduce:quick:tiny -->\nstale\n"
                      "<!-- /reproduce:quick:tiny -->\noutro\n")
    out = tmp_path / "out"
    assert cli.main(["reproduce", "tiny", "--quick", "--no-progress", "--out", str(out),
                     "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    # The block is exactly what the experiment's readme function makes of results.json.
    results = json.loads((out / "results.json").read_text())
    block = _tiny_readme(results["experiments"]["tiny"]["results"], "quick")
    assert f"<!-- reproduce:quick:tiny -->\n{block}\n<!-- /reproduce:quick:tiny -->" in text
    # The full-mode block is missing: a one-line error naming the markers, exit 2.
    assert cli.main(["reproduce", "tiny", "--no-progress", "--out", str(out),
                     "--readme", str(readme)]) == 2
    assert "<!-- reproduce:full:tiny -->" in capsys.readouterr().err


def test_factor_and_dcls_readme_blocks_read_stored_results():
    """The README functions take results as results.json holds them (NaN stored as null)."""
    from diffnum.reproduce.experiments import dcls, factor

    cell = {"error": 0.125, "eckart_young": 0.1, "seconds": 0.002}
    table = {recipe: {f: dict(cell) for f in factor.FAMILIES} for recipe in ("svd", "cr")}
    for family in factor.FAMILIES:
        if "decay" in family:
            table["cr"][family] = {"error": None, "seconds": None}
    block = factor.readme({"sizes": {"m": 30, "n": 20, "k": 5}, "table": table}, "quick")
    assert "30×20 float64, k = 5" in block and "1.25e-01 (2.0 ms)" in block
    assert "| cr | 1.25e-01 (2.0 ms) | — | — |" in block and "Eckart–Young" in block
    results = {"recovery": {"DCLS v1": {"median_mse": 0.5, "median_kernel_error": 1.0,
                                        "median_targets_hit": 2, "recovered": 1, "runs": 4}},
               "iso_parameter": {"dense k=3": {"weights": 64, "positions": 0,
                                               "test_accuracy": 0.75, "seconds": 0.5}},
               "delays": {"learned delays": {"test_accuracy": 1.0,
                                             "integer_delay_accuracy": 1.0},
                          "zero delays": {"test_accuracy": 0.25}}}
    block = dcls.readme(results, "full")
    assert "`diffnum reproduce dcls`" in block and "| DCLS v1 | 0.5 | 1 | 2 | 1/4 |" in block
    assert "| zero delays | 0.25 | — |" in block


def test_report_html_is_one_self_contained_page(tmp_path, tiny_registry):
    _harness.run(["tiny"], out=tmp_path, quick=True, show_progress=False)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "<h2>Tiny</h2>" in page
    assert "data:image/png;base64," in page and "figures/tiny.png" not in page


def test_bench_timing_helpers_time_each_function():
    # torch.utils.benchmark.Timer underneath: every function timed, in seconds, and a slower
    # function measured slower (a sleep is a lower bound no scheduler can shorten).
    import time

    from diffnum._bench import interleaved_times, median_time

    times = interleaved_times({"fast": lambda: None, "slow": lambda: time.sleep(0.01)},
                              repeats=3, warmup=0)
    assert set(times) == {"fast", "slow"}
    assert times["slow"] >= 0.01 > times["fast"] >= 0
    assert median_time(lambda: time.sleep(0.005), repeats=3) >= 0.005
