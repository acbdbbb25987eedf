"""The documentation site builds from the repository in strict mode: a broken snippet, a
missing page or a docstring the API reference cannot parse fails here."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_docs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    constrain = (tmp_path / "site" / "pillars" / "constrain" / "index.html").read_text()
    assert "HardConstraint" in constrain and "PhysicsPDE" in (
        tmp_path / "site" / "pillars" / "pde" / "index.html").read_text()
    # The README's generated results reach the site unchanged.
    assert "PI-HC-MoE (K=4, experts" in (tmp_path / "site" / "results" / "index.html").read_text()


def test_readme_points_inside_the_repository():
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme


def test_every_public_name_has_a_runnable_example():
    """Each public name's docstring has a ``>>>`` example; pytest runs them as doctests."""
    import importlib
    import inspect

    missing = []
    for pillar in ("factor", "optim", "orth", "interp", "snn", "solve", "pde", "models",
                   "constrain"):
        module = importlib.import_module(f"diffnum.{pillar}")
        # Constants (tables of published coefficients) cannot carry a docstring: they must
        # be named in the pillar's map (the module docstring) instead.
        missing += [f"{pillar}.{name}" for name in module.__all__
                    if (">>>" not in (inspect.getdoc(getattr(module, name)) or "")
                        if callable(getattr(module, name))
                        else name not in (module.__doc__ or ""))]
    assert not missing, missing


def test_every_docstring_example_runs_pasted_into_a_fresh_interpreter():
    """pytest's doctests see their module's globals; a user pasting an example does not. Each
    example is run here with empty globals, so it must import every name it uses."""
    import doctest
    import importlib
    import pkgutil

    import diffnum

    finder = doctest.DocTestFinder(exclude_empty=True)
    failed, examples = [], 0
    for info in pkgutil.walk_packages(diffnum.__path__, "diffnum."):
        module = importlib.import_module(info.name)
        for test in finder.find(module, info.name, globs={}):
            runner = doctest.DocTestRunner(
                optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            report: list[str] = []
            result = runner.run(test, out=report.append)
            examples += result.attempted
            if result.failed:
                failed.append((test.name, "".join(report)[-400:]))
    assert examples > 300  # the package's examples were found and run
    assert not failed, failed
