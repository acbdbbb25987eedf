"""Dataset generation: determinism, checksum/sidecar/settings validation and regeneration,
the Burgers data against its PDE, and the ``diffnum data generate`` CLI."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from diffnum.cli import main as cli_main
from diffnum.pde import (
    Burgers1D,
    dataset_paths,
    generate_dataset,
    load_dataset,
    uniform_grid,
)

TINY = {
    "diffusion-sorption": {"nx": 32, "num_times": 6, "t_end": 50.0},
    "navier-stokes": {"grid": 16, "steps": 10, "save_every": 5},
    "burgers": {"nx": 32, "num_times": 6},
}


@pytest.mark.parametrize("kind", list(TINY))
def test_deterministic_per_seed(kind, tmp_path):
    a = load_dataset(kind, 3, 7, tmp_path / "a", **TINY[kind])
    b = load_dataset(kind, 3, 7, tmp_path / "b", **TINY[kind])
    c = load_dataset(kind, 3, 8, tmp_path / "c", **TINY[kind])
    prefix = load_dataset(kind, 2, 7, tmp_path / "d", **TINY[kind])
    assert len(a) == 3 and a.solution.shape[:2] == (3, a.times.shape[0])
    torch.testing.assert_close(a.solution, b.solution, rtol=0, atol=0)
    assert not torch.equal(a.initial, c.initial)  # another seed, other samples
    # Sample i depends on (seed, i) only: the first two of n = 3 equal those of n = 2.
    torch.testing.assert_close(prefix.solution, a.solution[:2], rtol=0, atol=0)
    assert bool(torch.isfinite(a.solution).all())
    # u(t = 0) is the initial condition; Cole–Hopf's −2νφ_x/φ leaves ~1e-12 of round-off.
    torch.testing.assert_close(a[1]["initial"], a.solution[1, 0], rtol=0, atol=1e-10)


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "no-sidecar", "bad-sidecar"])
def test_damaged_cache_is_detected_logged_and_regenerated(damage, tmp_path, caplog):
    sizes = TINY["diffusion-sorption"]
    good = load_dataset("diffusion-sorption", 2, 0, tmp_path, **sizes).solution.clone()
    data_path, sidecar = dataset_paths("diffusion-sorption", 2, 0, tmp_path)
    if damage == "flip-byte":
        _corrupt(data_path)
    elif damage == "truncate":  # a partial write
        data_path.write_bytes(data_path.read_bytes()[: data_path.stat().st_size // 3])
    elif damage == "no-sidecar":
        sidecar.unlink()
    else:
        sidecar.write_text("{not json")
    with pytest.raises(RuntimeError, match="not usable"):
        load_dataset("diffusion-sorption", 2, 0, tmp_path, generate=False, **sizes)
    with caplog.at_level(logging.WARNING, logger="diffnum.pde._data"):
        again = load_dataset("diffusion-sorption", 2, 0, tmp_path, **sizes)
    assert any("regenerating" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(again.solution, good, rtol=0, atol=0)
    meta = json.loads(sidecar.read_text())
    assert meta["settings"]["nx"] == 32 and len(meta["sha256"]) == 64
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_settings_mismatch_regenerates_and_valid_cache_is_reused(tmp_path, caplog):
    path = generate_dataset("burgers", 2, 0, tmp_path, **TINY["burgers"])
    mtime = path.stat().st_mtime_ns
    assert generate_dataset("burgers", 2, 0, tmp_path, **TINY["burgers"]) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    with caplog.at_level(logging.WARNING, logger="diffnum.pde._data"):
        other = load_dataset("burgers", 2, 0, tmp_path, nx=16, num_times=6)
    assert other.solution.shape == (2, 6, 16)
    assert any("settings mismatch" in r.getMessage() for r in caplog.records)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        generate_dataset("heat", 2, 0, tmp_path)
    with pytest.raises(ValueError, match="unknown size"):
        generate_dataset("burgers", 2, 0, tmp_path, grid=3)
    with pytest.raises(ValueError, match="n must satisfy"):
        generate_dataset("burgers", 0, 0, tmp_path)


def test_burgers_data_satisfy_the_pde(tmp_path):
    # Cole–Hopf is exact: with spectral x derivatives the residual of the data on their own
    # grid is the FD error of u_t alone (order 4), small against |u_t| ~ 1 and shrinking.
    errors = []
    for nt in (41, 81):
        data = load_dataset("burgers", 1, 3, tmp_path / str(nt), nx=64, num_times=nt,
                            t_end=0.1)
        torch.testing.assert_close(data.solution[0, 0], data.initial[0], rtol=0, atol=1e-10)
        grid = uniform_grid({"t": (0.0, 0.1, nt), "x": (-1.0, 1.0, 64)}, periodic=("x",))
        pde = Burgers1D(0.05, method="spectral", accuracy=4)
        errors.append(float(pde.residual(data.solution[0], grid).abs().max()))
    # Design order 4 (±0.3 as in test_equations; observed 3.8 on a short horizon, t ≤ 0.1:
    # over longer ones the fronts steepen and n_t = 41 → 81 is still pre-asymptotic, ~3.3).
    assert abs(math.log2(errors[0] / errors[1]) - 4) <= 0.3, errors
    assert errors[1] <= 1e-4


def test_cli_data_generate(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["data", "generate", "navier-stokes", "--n", "2", "--seed", "1", "--out", str(out),
            "--size", "grid=16", "--size", "steps=4", "--size", "save_every=2"]
    assert cli_main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli_main(argv) == 0  # the same settings again: a cache hit, said as such
    assert capsys.readouterr().out.startswith("cached: ")
    assert cli_main([*argv, "--overwrite"]) == 0
    assert "wrote" in capsys.readouterr().out
    data = load_dataset("navier-stokes", 2, 1, out, generate=False, grid=16, steps=4, save_every=2)
    assert data.solution.shape == (2, 3, 16, 16)
    assert cli_main(["data", "generate", "burgers", "--n", "1", "--out", str(out),
                     "--size", "bogus"]) == 2
    assert cli_main(["data", "generate", "burgers", "--n", "1", "--out", str(out),
                     "--size", "grid=4"]) == 2
