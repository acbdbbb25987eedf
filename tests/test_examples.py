"""Every script in examples/ runs to completion and shows what it promises."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script):
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=script.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.strip() and "torch.return_types" not in out and "Traceback" not in done.stderr
    if script.stem == "dcls_quickstart":
        # The delays example trains: chance before, solved after, neurons that spike.
        before = float(re.search(r"before training (\d\.\d+)", out).group(1))
        after = float(re.search(r"steps: .*test accuracy (\d\.\d+)", out).group(1))
        spikes = float(re.search(r"hidden spikes per sample (\d+\.\d+)", out).group(1))
        assert before < 0.5 and after >= 0.9 and spikes > 0
    if script.stem == "optim_quickstart":
        # Muon on conv weights trains the digits CNN (chance is 0.1).
        accuracy = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
        assert accuracy >= 0.9


def test_every_pillar_has_an_example():
    names = {p.stem for p in EXAMPLES}
    assert {"factor_quickstart", "optim_quickstart", "orth_quickstart", "dcls_quickstart",
            "solve_quickstart", "pde_quickstart", "models_fno", "constrain_quickstart"} <= names
