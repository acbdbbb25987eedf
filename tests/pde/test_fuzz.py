"""Fuzz suite over the public API of ``diffnum.pde`` (and the ``diffnum data`` CLI).

Every bad input either gives a finite, correct result or raises ``ValueError``/``TypeError``
whose message names the argument — never a raw torch/MKL/scipy/Python error, a silent NaN or
a hang. :func:`classify` sorts one call into {ok, named, raw, garbage, hang}; ``CASES`` is the
census of bad-input classes (run all of it with ``python tests/pde/test_fuzz.py``), the
hypothesis tests below draw bad values around it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import signal
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffnum.cli import main as cli_main
from diffnum.pde import (
    Advection1D,
    Burgers1D,
    DiffusionSorption1D,
    Grid,
    Heat1D,
    MethodOfLines,
    NavierStokes2D,
    PDEDataset,
    burgers_sine_cole_hopf,
    dataset_paths,
    differentiate,
    differentiate_basis,
    finite_difference,
    gaussian_random_field,
    generate_dataset,
    load_dataset,
    pdebench_initial_condition,
    solve_diffusion_sorption_1d,
    solve_navier_stokes_2d,
    spectral_derivative,
    stacked_residual,
    stencil_weights,
    uniform_grid,
    velocity_from_vorticity,
)

F32, F64 = torch.float32, torch.float64
NAN, INF = float("nan"), float("inf")
OUTCOMES = ("ok", "named", "raw", "garbage", "hang")


# -- the classifier -----------------------------------------------------------------------
class _Timeout(BaseException):
    pass


def _tensors(obj, depth=0):
    """Every tensor inside a result (tensors, sequences, mappings, dataclasses, datasets)."""
    if depth > 4:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, depth + 1)
    elif isinstance(obj, tuple | list):
        for v in obj:
            yield from _tensors(v, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module | type):
        for v in vars(obj).values():
            yield from _tensors(v, depth + 1)


def _names_it(error: BaseException, names: tuple[str, ...]) -> bool:
    """The message names one of ``names`` and the error was raised by our code, not from
    inside torch/numpy/scipy."""
    message = str(error)
    if not any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", message) for n in names):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    last = frames[-1].filename if frames else ""
    return not re.search(r"site-packages|/torch/|/numpy/|/scipy/", last)


def classify(call: Callable[[], object], name: str | tuple[str, ...], *, expect: str = "error",
             check: Callable[[object], bool] | None = None, propagate: bool = False,
             errors: tuple[type[BaseException], ...] = (ValueError, TypeError),
             timeout: float = 5.0) -> tuple[str, str]:
    """(outcome, detail) of ``call()``: ``named`` (an error of ``errors`` naming ``name``),
    ``raw`` (any other error), ``hang`` (past ``timeout`` s), ``garbage`` (non-finite output
    unless ``propagate``, ``check`` fails, or ``expect="error"`` and it returned) or ``ok``."""
    names = (name,) if isinstance(name, str) else tuple(name)

    def alarm(*_):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        result = call()
    except _Timeout:
        return "hang", f"> {timeout} s"
    except errors as error:
        if _names_it(error, names):
            return "named", str(error)
        return "raw", f"{type(error).__name__}: {error}"[:300]
    except Exception as error:
        return "raw", f"{type(error).__name__}: {error}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expect == "error":
        return "garbage", f"accepted: returned {type(result).__name__}"
    if not propagate:
        for t in _tensors(result):
            if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
                return "garbage", f"non-finite output of shape {tuple(t.shape)}"
    if check is not None and not check(result):
        return "garbage", "wrong result"
    return "ok", ""


@dataclass
class Case:
    kind: str  # the bad-input class
    label: str
    call: Callable[[], object]
    name: str | tuple[str, ...]  # what the error message must name
    expect: str = "error"  # "error": must raise a named error; "either": ok or named
    check: Callable[[object], bool] | None = None
    propagate: bool = False
    errors: tuple[type[BaseException], ...] = (ValueError, TypeError)

    def run(self) -> tuple[str, str]:
        return classify(self.call, self.name, expect=self.expect, check=self.check,
                        propagate=self.propagate, errors=self.errors)


# -- fixtures -------------------------------------------------------------------------------
def _xt(periodic=True, nx=8, nt=5, dtype=F64):
    return uniform_grid({"x": (-1.0, 1.0, nx), "t": (0.0, 1.0, nt)},
                        periodic=("x",) if periodic else (), dtype=dtype)


def _ds_grid(nx=9, nt=5):
    return uniform_grid({"x": (0.0, 1.0, nx), "t": (0.0, 1.0, nt)})


def _xyt(n=8, nt=5):
    side = 2 * math.pi
    return uniform_grid({"x": (0.0, side, n), "y": (0.0, side, n), "t": (0.0, 0.1, nt)},
                        periodic=("x", "y"))


def _randn(*shape, dtype=F64, device=None):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(
        device or "cpu")


def _field(grid, *batch, dtype=F64):
    return _randn(*batch, *grid.shape, dtype=dtype)


def _basis(grid, n=3, *batch, dtype=F64, device=None):
    return _randn(*batch, grid.size, n, dtype=dtype, device=device)


def _shape(*shape):
    return lambda r: tuple(r.shape) == shape


def _heat_stack(*, ridge=1e-4, rows=None, weights=None, basis=None, initial=None, pde=None,
                grid=None, terms=None):
    g = _xt(periodic=False)
    p = Heat1D(boundary="dirichlet") if pde is None else pde
    b = _basis(g) if basis is None else basis
    t = p.basis_terms(b, g) if terms is None else terms
    w = _randn(3) if weights is None else weights
    u0 = torch.zeros(8, dtype=F64) if initial is None else initial
    return stacked_residual(p, t, w, b, g if grid is None else grid, u0, rows=rows, ridge=ridge)


def _ns_solve(n=8, *batch, **kw):
    initial = _randn(*batch, n, n)
    return solve_navier_stokes_2d(initial, **{"steps": 2, **kw})


def _ds_solve(initial=None, **kw):
    initial = torch.full((2, 8), 0.1, dtype=F64) if initial is None else initial
    return solve_diffusion_sorption_1d(initial, **{"t_end": 1.0, "num_times": 3, **kw})


TINY = {
    "diffusion-sorption": {"nx": 8, "num_times": 3, "t_end": 1.0},
    "navier-stokes": {"grid": 8, "steps": 2, "save_every": 1},
    "burgers": {"nx": 16, "num_times": 3},
}


def _generate(kind, **sizes):
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_dataset(kind, 1, 0, tmp, **{**TINY[kind], **sizes})
        return torch.load(path, weights_only=True)


class CliRejected(ValueError):
    """``diffnum data generate`` exited with 2 and this one-line message."""


def _cli(kind, *args, out=None):
    """Run ``diffnum data generate KIND ARGS --out OUT`` (a temporary directory by default):
    the loaded data and sidecar if it wrote them; :class:`CliRejected` with the message if it
    exited 2 with one line."""
    with tempfile.TemporaryDirectory() as tmp:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = cli_main(["data", "generate", kind, *args, "--out", out or tmp])
        lines = err.getvalue().strip().splitlines()
        if rc == 2 and len(lines) == 1:
            raise CliRejected(lines[0])
        if rc != 0:
            raise RuntimeError(f"exit code {rc}, stderr {err.getvalue()!r}")
        (sidecar,) = Path(tmp).glob("*.json")
        meta = json.loads(sidecar.read_text())
        return {"data": torch.load(sidecar.with_suffix(".pt"), weights_only=True), "meta": meta}


def _cli_size(kind, **sizes):
    return _cli(kind, *(a for k, v in {**TINY[kind], **sizes}.items()
                        for a in ("--size", f"{k}={v}")), "--n", "1")


def _nan_dataset(*, generate):
    """A Burgers dataset whose solution holds a NaN under a valid sidecar and checksum (as the
    old code wrote for viscosity=nan), then loaded."""
    sizes = {"nx": 16, "num_times": 3}
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_dataset("burgers", 1, 0, tmp, **sizes)
        tensors = torch.load(path, weights_only=True)
        tensors["solution"][0, 1, 2] = NAN
        torch.save(tensors, path)
        sidecar = path.with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        sidecar.write_text(json.dumps(meta))
        data = load_dataset("burgers", 1, 0, tmp, generate=generate, **sizes)
        return {"initial": data.initial, "solution": data.solution}


def _meta(device_tensor):
    return device_tensor.to("meta")


# -- the census --------------------------------------------------------------------------
CASES = [
    # ---- non-finite floats ----
    Case("nonfinite", "uniform_grid stop=nan", lambda: uniform_grid({"x": (0.0, NAN, 8)}),
         "axes"),
    Case("nonfinite", "Grid(spacing=nan)", lambda: Grid(("x",), (torch.zeros(3, dtype=F64),),
                                                        (NAN,), (False,)), "spacing"),
    Case("nonfinite", "finite_difference spacing=nan",
         lambda: finite_difference(_randn(8), NAN), "spacing"),
    Case("nonfinite", "spectral_derivative length=inf",
         lambda: spectral_derivative(_randn(8), INF), "length"),
    Case("nonfinite", "Heat1D(diffusivity=nan)", lambda: Heat1D(NAN), "diffusivity"),
    Case("nonfinite", "Burgers1D(viscosity=inf)", lambda: Burgers1D(INF), "viscosity"),
    Case("nonfinite", "Advection1D(velocity=nan)", lambda: Advection1D(NAN), "velocity"),
    Case("nonfinite", "Heat1D dirichlet boundary_values=(nan, 0)",
         lambda: Heat1D(boundary="dirichlet", boundary_values=(NAN, 0.0)).boundary_residual(
             _field(_xt(False)), _xt(False)), "boundary_values"),
    Case("nonfinite", "Heat1D.exact_solution(phase=nan)",
         lambda: Heat1D().exact_solution(_xt(), phase=NAN), "phase"),
    Case("nonfinite", "DiffusionSorption1D(diffusivity=nan)",
         lambda: DiffusionSorption1D(diffusivity=NAN), "diffusivity"),
    Case("nonfinite", "DiffusionSorption1D(left_value=inf)",
         lambda: DiffusionSorption1D(left_value=INF), "left_value"),
    Case("nonfinite", "DiffusionSorption1D(initial_layer=nan)",
         lambda: DiffusionSorption1D(initial_layer=NAN), "initial_layer"),
    Case("nonfinite", "NavierStokes2D(viscosity=nan)", lambda: NavierStokes2D(NAN), "viscosity"),
    Case("nonfinite", "NavierStokes2D(forcing=nan field)",
         lambda: NavierStokes2D(forcing=torch.full((8, 8, 5), NAN, dtype=F64)).residual(
             _field(_xyt()), _xyt()), "forcing"),
    Case("nonfinite", "NavierStokes2D.exact_taylor_green(amplitude=nan)",
         lambda: NavierStokes2D().exact_taylor_green(_xyt(), amplitude=NAN), "amplitude"),
    Case("nonfinite", "velocity_from_vorticity length=nan",
         lambda: velocity_from_vorticity(_randn(8, 8), NAN), "length"),
    Case("nonfinite", "solve_navier_stokes_2d viscosity=nan",
         lambda: _ns_solve(viscosity=NAN), "viscosity"),
    Case("nonfinite", "solve_navier_stokes_2d forcing=nan",
         lambda: _ns_solve(forcing=torch.full((8, 8), NAN, dtype=F64)), "forcing"),
    Case("nonfinite", "solve_navier_stokes_2d blows up (dt=50)",
         lambda: _ns_solve(dt=50.0, steps=40), "dt"),
    Case("nonfinite", "solve_diffusion_sorption_1d t_end=nan",
         lambda: _ds_solve(t_end=NAN), "t_end"),
    Case("nonfinite", "solve_diffusion_sorption_1d rtol=nan", lambda: _ds_solve(rtol=NAN), "rtol"),
    Case("nonfinite", "burgers_sine_cole_hopf viscosity=nan",
         lambda: burgers_sine_cole_hopf(_randn(4), torch.ones(4, dtype=F64), NAN), "viscosity"),
    Case("nonfinite", "burgers_sine_cole_hopf t=nan",
         lambda: burgers_sine_cole_hopf(_randn(4), torch.full((4,), NAN, dtype=F64), 0.1), "t"),
    Case("nonfinite", "gaussian_random_field alpha=nan",
         lambda: gaussian_random_field(8, alpha=NAN), "alpha"),
    Case("nonfinite", "gaussian_random_field alpha=1e3 (zero field)",
         lambda: gaussian_random_field(8, alpha=1e3), "alpha"),
    Case("nonfinite", "stacked_residual ridge=inf", lambda: _heat_stack(ridge=INF), "ridge"),
    Case("nonfinite", "generate_dataset burgers viscosity=nan",
         lambda: _generate("burgers", viscosity=NAN), "viscosity"),
    Case("nonfinite", "generate_dataset navier-stokes alpha=nan",
         lambda: _generate("navier-stokes", alpha=NAN), "alpha"),
    Case("nonfinite", "generate_dataset navier-stokes dt=inf",
         lambda: _generate("navier-stokes", dt=INF), "dt"),
    Case("nonfinite", "generate_dataset diffusion-sorption t_end=nan",
         lambda: _generate("diffusion-sorption", t_end=NAN), "t_end"),
    # ---- floats out of range (zero, negative) ----
    Case("range", "finite_difference spacing=0", lambda: finite_difference(_randn(8), 0.0),
         "spacing"),
    Case("range", "Heat1D(diffusivity=-1)", lambda: Heat1D(-1.0), "diffusivity"),
    Case("range", "DiffusionSorption1D(porosity=1.5)",
         lambda: DiffusionSorption1D(porosity=1.5), "porosity"),
    Case("range", "DiffusionSorption1D(initial_layer=-1)",
         lambda: DiffusionSorption1D(initial_layer=-1.0), "initial_layer"),
    Case("range", "velocity_from_vorticity length=0",
         lambda: velocity_from_vorticity(_randn(8, 8), 0.0), "length"),
    Case("range", "velocity_from_vorticity length=-1",
         lambda: velocity_from_vorticity(_randn(8, 8), -1.0), "length"),
    Case("range", "solve_navier_stokes_2d dt=0", lambda: _ns_solve(dt=0.0), "dt"),
    Case("range", "solve_diffusion_sorption_1d atol=-1", lambda: _ds_solve(atol=-1.0), "atol"),
    Case("range", "gaussian_random_field tau=-1",
         lambda: gaussian_random_field(8, tau=-1.0), "tau"),
    Case("range", "stacked_residual ridge=-1", lambda: _heat_stack(ridge=-1.0), "ridge"),
    Case("range", "generate_dataset burgers viscosity=0",
         lambda: _generate("burgers", viscosity=0.0), "viscosity"),
    Case("range", "generate_dataset burgers t_end=-1",
         lambda: _generate("burgers", t_end=-1.0), "t_end"),
    Case("range", "generate_dataset burgers amplitude=-1",
         lambda: _generate("burgers", amplitude=-1.0), "amplitude"),
    Case("range", "generate_dataset navier-stokes viscosity=-1",
         lambda: _generate("navier-stokes", viscosity=-1.0), "viscosity"),
    Case("range", "generate_dataset diffusion-sorption t_end=0",
         lambda: _generate("diffusion-sorption", t_end=0.0), "t_end"),
    # ---- wrong types: bools/strings where a number is expected, non-tensors, non-grids ----
    Case("type", "uniform_grid start=True", lambda: uniform_grid({"x": (True, 2.0, 4)}), "axes"),
    Case("type", "uniform_grid start='a'", lambda: uniform_grid({"x": ("a", 2.0, 4)}), "axes"),
    Case("type", "finite_difference spacing=True", lambda: finite_difference(_randn(8), True),
         "spacing"),
    Case("type", "finite_difference spacing='a'", lambda: finite_difference(_randn(8), "a"),
         "spacing"),
    Case("type", "finite_difference periodic='yes'",
         lambda: finite_difference(_randn(8), 0.1, periodic="yes"), "periodic"),
    Case("type", "finite_difference dim=0.5",
         lambda: finite_difference(_randn(8), 0.1, dim=0.5), "dim"),
    Case("type", "stencil_weights offsets=list", lambda: stencil_weights([-1, 0, 1], 2),
         "offsets", "either", lambda r: r == (1.0, -2.0, 1.0)),
    Case("type", "stencil_weights offsets with nan", lambda: stencil_weights((0, NAN, 1), 1),
         "offsets"),
    Case("type", "stencil_weights derivative=True", lambda: stencil_weights((0, 1, 2), True),
         "derivative"),
    Case("type", "differentiate u=list", lambda: differentiate([1.0] * 8, _xt(), "x"), "u"),
    Case("type", "differentiate grid=dict", lambda: differentiate(_field(_xt()), {}, "x"),
         "grid"),
    Case("type", "differentiate_basis grid=None",
         lambda: differentiate_basis(_basis(_xt()), None, "x"), "grid"),
    Case("type", "Heat1D(diffusivity=True)", lambda: Heat1D(True), "diffusivity"),
    Case("type", "Burgers1D(viscosity='a')", lambda: Burgers1D("a"), "viscosity"),
    Case("type", "Advection1D(velocity=True)", lambda: Advection1D(True), "velocity"),
    Case("type", "Heat1D boundary_values=('a', 0)",
         lambda: Heat1D(boundary="dirichlet", boundary_values=("a", 0.0)).boundary_residual(
             _field(_xt(False)), _xt(False)), "boundary_values"),
    Case("type", "Heat1D boundary_values callable of wrong shape",
         lambda: Heat1D(boundary="dirichlet", boundary_values=(lambda t: t[:2], 0.0))
         .boundary_residual(_field(_xt(False)), _xt(False)), "boundary_values"),
    Case("type", "Heat1D.exact_solution(wavenumber=1.5)",
         lambda: Heat1D().exact_solution(_xt(), wavenumber=1.5), "wavenumber"),
    Case("type", "Advection1D.exact_solution(initial='a')",
         lambda: Advection1D().exact_solution(_xt(), "a"), "initial"),
    Case("type", "Heat1D.residual(grid='g')", lambda: Heat1D().residual(_field(_xt()), "g"),
         "grid"),
    Case("type", "Heat1D.residual_from_basis_terms(terms=list)",
         lambda: Heat1D().residual_from_basis_terms([1, 2], _randn(3)), "terms"),
    Case("type", "Heat1D.initial_residual(initial='a')",
         lambda: Heat1D().initial_residual(_field(_xt()), _xt(), "a"), "initial"),
    Case("type", "DiffusionSorption1D(left_value=True)",
         lambda: DiffusionSorption1D(left_value=True), "left_value"),
    Case("type", "DiffusionSorption1D(cauchy_sign=True)",
         lambda: DiffusionSorption1D(cauchy_sign=True), "cauchy_sign"),
    Case("type", "DiffusionSorption1D(cauchy_sign=-1.0)",
         lambda: DiffusionSorption1D(cauchy_sign=-1.0), "cauchy_sign"),
    Case("type", "MethodOfLines(pde='x')", lambda: MethodOfLines("x", 8), "pde"),
    Case("type", "NavierStokes2D(forcing='a')",
         lambda: NavierStokes2D(forcing="a").residual(_field(_xyt()), _xyt()), "forcing"),
    Case("type", "NavierStokes2D.initial_residual(u='a')",
         lambda: NavierStokes2D().initial_residual("a", _xyt(), 0.0), "u"),
    Case("type", "NavierStokes2D.boundary_residual(u='a')",
         lambda: NavierStokes2D().boundary_residual("a", _xyt()), "u"),
    Case("type", "NavierStokes2D.exact_taylor_green(amplitude='a')",
         lambda: NavierStokes2D().exact_taylor_green(_xyt(), amplitude="a"), "amplitude"),
    Case("type", "velocity_from_vorticity length=True",
         lambda: velocity_from_vorticity(_randn(8, 8), True), "length"),
    Case("type", "velocity_from_vorticity dims='xy'",
         lambda: velocity_from_vorticity(_randn(8, 8), 1.0, dims="xy"), "dims"),
    Case("type", "solve_navier_stokes_2d dt=True", lambda: _ns_solve(dt=True), "dt"),
    Case("type", "solve_navier_stokes_2d forcing='a'", lambda: _ns_solve(forcing="a"),
         "forcing"),
    Case("type", "solve_diffusion_sorption_1d rtol=True", lambda: _ds_solve(rtol=True), "rtol"),
    Case("type", "pdebench_initial_condition dtype=int64",
         lambda: pdebench_initial_condition(2, 8, dtype=torch.int64), "dtype"),
    Case("type", "pdebench_initial_condition generator='g'",
         lambda: pdebench_initial_condition(2, 8, generator="g"), "generator"),
    Case("type", "gaussian_random_field alpha='a'",
         lambda: gaussian_random_field(8, alpha="a"), "alpha"),
    Case("type", "stacked_residual ridge=True", lambda: _heat_stack(ridge=True), "ridge"),
    Case("type", "stacked_residual pde='x'", lambda: _heat_stack(pde="x", terms={}), "pde"),
    Case("type", "stacked_residual grid='g'", lambda: _heat_stack(grid="g"), "grid"),
    Case("type", "generate_dataset burgers nx=True",
         lambda: _generate("burgers", nx=True), "nx"),
    Case("type", "generate_dataset burgers nx=32.7",
         lambda: _generate("burgers", nx=32.7), "nx"),
    Case("type", "generate_dataset navier-stokes truncate_product='maybe'",
         lambda: _generate("navier-stokes", truncate_product="maybe"), "truncate_product"),
    Case("type", "generate_dataset overwrite='yes'",
         lambda: _generate("burgers", overwrite="yes"), "overwrite"),
    Case("type", "PDEDataset(tensors={})", lambda: PDEDataset(Path("x.pt"), {}, {}), "tensors"),
    Case("type", "dataset_paths n='3'", lambda: dataset_paths("burgers", "3", 0, "."), "n"),
    # ---- counts: zero, negative, huge, float, bool ----
    Case("count", "uniform_grid points=10**12", lambda: uniform_grid({"x": (0.0, 1.0, 10**12)}),
         "axes"),
    Case("count", "finite_difference accuracy=2.0",
         lambda: finite_difference(_randn(8), 0.1, accuracy=2.0), "accuracy"),
    Case("count", "spectral_derivative derivative=10**6",
         lambda: spectral_derivative(_randn(64), 1e-3, derivative=10**6), "derivative"),
    Case("count", "stencil_weights 10**4 offsets",
         lambda: stencil_weights(tuple(range(10**4)), 1), "offsets"),
    Case("count", "Heat1D(accuracy=2.0)",
         lambda: Heat1D(accuracy=2.0).residual(_field(_xt()), _xt()), "accuracy"),
    Case("count", "Heat1D.exact_solution(wavenumber=True)",
         lambda: Heat1D().exact_solution(_xt(), wavenumber=True), "wavenumber"),
    Case("count", "NavierStokes2D(accuracy=2.0)",
         lambda: NavierStokes2D(accuracy=2.0).residual(_field(_xyt()), _xyt()), "accuracy"),
    Case("count", "DiffusionSorption1D.method_of_lines(nx=10**12)",
         lambda: DiffusionSorption1D().method_of_lines(10**12), "nx"),
    Case("count", "solve_navier_stokes_2d steps=10**12", lambda: _ns_solve(steps=10**12),
         "steps"),
    Case("count", "solve_navier_stokes_2d save_every=0", lambda: _ns_solve(save_every=0),
         "save_every"),
    Case("count", "solve_diffusion_sorption_1d num_times=10**12",
         lambda: _ds_solve(num_times=10**12), "num_times"),
    Case("count", "pdebench_initial_condition n=10**6, nx=10**7",
         lambda: pdebench_initial_condition(10**6, 10**7), ("n", "nx")),
    Case("count", "gaussian_random_field n=1", lambda: gaussian_random_field(1), "n"),
    Case("count", "gaussian_random_field n=0", lambda: gaussian_random_field(0), "n"),
    Case("count", "gaussian_random_field n=10**6", lambda: gaussian_random_field(10**6), "n"),
    Case("count", "generate_dataset burgers nx=0", lambda: _generate("burgers", nx=0), "nx"),
    Case("count", "generate_dataset burgers nx=-4", lambda: _generate("burgers", nx=-4), "nx"),
    Case("count", "generate_dataset burgers modes=0", lambda: _generate("burgers", modes=0),
         "modes"),
    Case("count", "generate_dataset burgers modes=100 (beyond Nyquist)",
         lambda: _generate("burgers", modes=10**4), "modes"),
    Case("count", "generate_dataset burgers num_times=0",
         lambda: _generate("burgers", num_times=0), "num_times"),
    Case("count", "generate_dataset navier-stokes grid=2",
         lambda: _generate("navier-stokes", grid=2), "grid"),
    Case("count", "generate_dataset navier-stokes steps=-1",
         lambda: _generate("navier-stokes", steps=-1), "steps"),
    Case("count", "generate_dataset diffusion-sorption nx=2",
         lambda: _generate("diffusion-sorption", nx=2), "nx"),
    Case("count", "generate_dataset n=0",
         lambda: generate_dataset("burgers", 0, 0, tempfile.gettempdir()), "n"),
    Case("count", "load_dataset n=True",
         lambda: load_dataset("burgers", True, 0, tempfile.gettempdir(), generate=False), "n"),
    # ---- dtype / device disagreement ----
    Case("dtype", "residual_from_basis_terms float32 terms, float64 weights",
         lambda: Heat1D().residual_from_basis_terms(
             Heat1D().basis_terms(_basis(_xt(), dtype=F32), _xt()), _randn(3)), "weights"),
    Case("dtype", "residual_from_basis_terms weights on meta",
         lambda: Heat1D().residual_from_basis_terms(
             Heat1D().basis_terms(_basis(_xt()), _xt()), _meta(_randn(3))), "weights"),
    Case("dtype", "stacked_residual float32 weights, float64 basis",
         lambda: _heat_stack(weights=_randn(3, dtype=F32)), "weights"),
    Case("dtype", "NavierStokes2D.residual_from_basis_terms float32 weights",
         lambda: NavierStokes2D().residual_from_basis_terms(
             NavierStokes2D().basis_terms(_basis(_xyt()), _xyt()), _randn(3, dtype=F32)),
         "weights"),
    Case("dtype", "uniform_grid dtype=int64",
         lambda: uniform_grid({"x": (0.0, 1.0, 4)}, dtype=torch.int64), "dtype"),
    # ---- NaN / float / out-of-range values used as indices ----
    Case("index", "stacked_residual rows float with nan",
         lambda: _heat_stack(rows=torch.tensor([0.0, NAN, 2.0])), "rows"),
    Case("index", "stacked_residual rows out of range",
         lambda: _heat_stack(rows=torch.tensor([0, 10**6])), "rows"),
    Case("index", "velocity_from_vorticity dims=(0, 0)",
         lambda: velocity_from_vorticity(_randn(8, 8), 1.0, dims=(0, 0)), "dims"),
    Case("index", "velocity_from_vorticity dims=(5, 6)",
         lambda: velocity_from_vorticity(_randn(8, 8), 1.0, dims=(5, 6)), "dims"),
    # ---- shapes ----
    Case("shape", "spectral_derivative u with 0 points",
         lambda: spectral_derivative(torch.zeros(2, 0, dtype=F64), 1.0), "u"),
    Case("shape", "Heat1D.initial_residual initial of wrong shape",
         lambda: Heat1D().initial_residual(_field(_xt()), _xt(), _randn(3)), "initial"),
    Case("shape", "Heat1D.constraint_rows basis of wrong size",
         lambda: Heat1D(boundary="dirichlet").constraint_rows(
             _randn(7, 3), _xt(False), torch.zeros(8, dtype=F64)), "basis"),
    Case("shape", "Heat1D.constraint_rows initial of wrong shape",
         lambda: Heat1D(boundary="dirichlet").constraint_rows(
             _basis(_xt(False)), _xt(False), _randn(3)), "initial"),
    Case("shape", "Heat1D.residual_from_basis_terms terms of mixed shapes",
         lambda: Heat1D().residual_from_basis_terms(
             {"u_t": _randn(40, 3), "u_xx": _randn(39, 3)}, _randn(3)), "terms"),
    Case("shape", "NavierStokes2D.residual_from_basis_terms missing term",
         lambda: NavierStokes2D().residual_from_basis_terms({"u": _randn(5, 3)}, _randn(3)),
         "terms"),
    Case("shape", "NavierStokes2D.initial_residual u of wrong shape",
         lambda: NavierStokes2D().initial_residual(_randn(8, 8), _xyt(), 0.0), "u"),
    Case("shape", "NavierStokes2D(forcing of wrong shape)",
         lambda: NavierStokes2D(forcing=_randn(3, 3)).residual(_field(_xyt()), _xyt()),
         "forcing"),
    Case("shape", "solve_navier_stokes_2d forcing of wrong shape",
         lambda: _ns_solve(forcing=_randn(3, 3)), "forcing"),
    Case("shape", "stacked_residual initial of wrong shape",
         lambda: _heat_stack(initial=_randn(3)), "initial"),
    Case("shape", "DiffusionSorption1D.cauchy_rows basis of wrong size",
         lambda: DiffusionSorption1D().cauchy_rows(_randn(7, 3), _ds_grid()), "basis"),
    # ---- empty batches (must work and return empty, or raise a named error) ----
    Case("empty", "finite_difference empty batch",
         lambda: finite_difference(torch.zeros(0, 8, dtype=F64), 0.1), "u", "either",
         _shape(0, 8)),
    Case("empty", "spectral_derivative empty batch",
         lambda: spectral_derivative(torch.zeros(0, 8, dtype=F64), 1.0), "u", "either",
         _shape(0, 8)),
    Case("empty", "Burgers1D.residual empty batch",
         lambda: Burgers1D().residual(_field(_xt(), 0), _xt()), "u", "either",
         _shape(0, 8, 5)),
    Case("empty", "Burgers1D.basis_terms empty batch",
         lambda: Burgers1D().basis_terms(_basis(_xt(), 3, 0), _xt())["u_xx"], "basis", "either",
         _shape(0, 40, 3)),
    Case("empty", "Heat1D.lift empty batch",
         lambda: Heat1D(boundary="dirichlet").lift(
             _basis(_xt(False), 3, 0), _xt(False), torch.zeros(0, 8, dtype=F64))[0], "basis",
         "either", _shape(0, 40, 3)),
    Case("empty", "DiffusionSorption1D.enforce_boundary empty batch",
         lambda: DiffusionSorption1D().enforce_boundary(_field(_ds_grid(), 0), _ds_grid()), "u",
         "either", _shape(0, 9, 5)),
    Case("empty", "NavierStokes2D.residual empty batch",
         lambda: NavierStokes2D().residual(_field(_xyt(), 0), _xyt()), "u", "either",
         _shape(0, 8, 8, 5)),
    Case("empty", "NavierStokes2D.basis_terms empty batch",
         lambda: NavierStokes2D().basis_terms(_basis(_xyt(), 2, 0), _xyt())["velocity_x"],
         "basis", "either", _shape(0, 320, 2)),
    Case("empty", "velocity_from_vorticity empty batch",
         lambda: velocity_from_vorticity(torch.zeros(0, 8, 8, dtype=F64), 1.0)[0], "omega",
         "either", _shape(0, 8, 8)),
    Case("empty", "solve_navier_stokes_2d empty batch",
         lambda: _ns_solve(8, 0).vorticity, "initial", "either", _shape(0, 3, 8, 8)),
    Case("empty", "solve_diffusion_sorption_1d empty batch",
         lambda: _ds_solve(torch.zeros(0, 8, dtype=F64)).solution, "initial", "either",
         _shape(0, 3, 8)),
    Case("empty", "stacked_residual empty batch",
         lambda: _heat_stack(basis=_basis(_xt(False), 3, 0), weights=_randn(0, 3),
                             initial=torch.zeros(0, 8, dtype=F64)), "basis", "either",
         lambda r: r.shape[0] == 0),
    # ---- recent additions: lift, initial_free, collocation_mask, initial_layer, ... ----
    Case("type", "Heat1D.lift initial of wrong shape",
         lambda: Heat1D(boundary="dirichlet").lift(_basis(_xt(False)), _xt(False), _randn(3)),
         "initial"),
    Case("type", "Heat1D.lift grid='g'",
         lambda: Heat1D().lift(_basis(_xt()), "g", torch.zeros(8, dtype=F64)), "grid"),
    Case("type", "Heat1D.initial_free(grid=None)", lambda: Heat1D().initial_free(None), "grid"),
    Case("type", "DiffusionSorption1D.collocation_mask(grid=1)",
         lambda: DiffusionSorption1D().collocation_mask(1), "grid"),
    Case("type", "DiffusionSorption1D(initial_layer='a')",
         lambda: DiffusionSorption1D(initial_layer="a"), "initial_layer"),
    Case("type", "DiffusionSorption1D.enforce_boundary(u='a')",
         lambda: DiffusionSorption1D().enforce_boundary("a", _ds_grid()), "u"),
    Case("type", "NavierStokes2D(dealias=1)", lambda: NavierStokes2D(dealias=1), "dealias"),
    Case("type", "NavierStokes2D.lift(grid of x, t)",
         lambda: NavierStokes2D().lift(_basis(_xt()), _xt(), 0.0), "grid"),
    Case("type", "solve_navier_stokes_2d truncate_product='no'",
         lambda: _ns_solve(truncate_product="no"), "truncate_product"),
    # ---- stored data and the CLI ----
    Case("data", "load_dataset of NaN data, generate=False",
         lambda: _nan_dataset(generate=False), "non-finite", errors=(RuntimeError, ValueError)),
    Case("data", "load_dataset of NaN data, generate=True (regenerates)",
         lambda: _nan_dataset(generate=True), "non-finite", "either",
         errors=(RuntimeError, ValueError)),
    Case("data", "CLI --size viscosity=nan", lambda: _cli_size("burgers", viscosity="nan"),
         "viscosity", errors=(CliRejected,)),
    Case("data", "CLI --size viscosity=-1", lambda: _cli_size("burgers", viscosity="-1"),
         "viscosity", errors=(CliRejected,)),
    Case("data", "CLI --size nx=0", lambda: _cli_size("burgers", nx="0"), "nx",
         errors=(CliRejected,)),
    Case("data", "CLI --size nx=1.5", lambda: _cli_size("burgers", nx="1.5"), "nx",
         errors=(CliRejected,)),
    Case("data", "CLI --size dt=inf", lambda: _cli_size("navier-stokes", dt="inf"), "dt",
         errors=(CliRejected,)),
    Case("data", "CLI --size t_end=0", lambda: _cli_size("diffusion-sorption", t_end="0"),
         "t_end", errors=(CliRejected,)),
    Case("data", "CLI --n 0", lambda: _cli("burgers", "--n", "0"), "n", errors=(CliRejected,)),
    Case("data", "CLI --size truncate_product=False is False",
         lambda: _cli_size("navier-stokes", truncate_product="False"), "truncate_product",
         "either", lambda r: r["meta"]["settings"]["truncate_product"] is False,
         errors=(CliRejected,)),
    Case("data", "CLI --out is a file",
         lambda: _cli("burgers", "--n", "1", out=__file__), ("out_dir", "--out"),
         errors=(CliRejected,)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_census_case(case):
    outcome, detail = case.run()
    assert outcome in ("ok", "named"), f"{case.kind}: {outcome}: {detail}"


# -- properties -----------------------------------------------------------------------------
_BAD_ANY = [NAN, INF, -INF, True, False, "1.0", None, [1.0]]
_BAD_POSITIVE = st.one_of(st.sampled_from([*_BAD_ANY, 0.0, -0.0, -1e-300]),
                          st.floats(max_value=0.0, allow_nan=False))
_BAD_REAL = st.sampled_from(_BAD_ANY)

# (argument, kind of bad values, call(value)); each call must raise a named error.
FLOAT_ARGS = [
    ("diffusivity", _BAD_POSITIVE, lambda v: Heat1D(v)),
    ("viscosity", _BAD_POSITIVE, lambda v: Burgers1D(v)),
    ("velocity", _BAD_REAL, lambda v: Advection1D(v)),
    ("viscosity", _BAD_POSITIVE, lambda v: NavierStokes2D(v)),
    ("diffusivity", _BAD_POSITIVE, lambda v: DiffusionSorption1D(diffusivity=v)),
    ("porosity", _BAD_POSITIVE, lambda v: DiffusionSorption1D(porosity=v)),
    ("density", _BAD_POSITIVE, lambda v: DiffusionSorption1D(density=v)),
    ("freundlich_k", _BAD_POSITIVE, lambda v: DiffusionSorption1D(freundlich_k=v)),
    ("freundlich_n", _BAD_POSITIVE, lambda v: DiffusionSorption1D(freundlich_n=v)),
    ("left_value", _BAD_REAL, lambda v: DiffusionSorption1D(left_value=v)),
    ("initial_layer", _BAD_REAL, lambda v: DiffusionSorption1D(initial_layer=v)),
    ("spacing", _BAD_POSITIVE, lambda v: finite_difference(_randn(8), v)),
    ("length", _BAD_POSITIVE, lambda v: spectral_derivative(_randn(8), v)),
    ("length", _BAD_POSITIVE, lambda v: velocity_from_vorticity(_randn(8, 8), v)),
    ("phase", _BAD_REAL, lambda v: Heat1D().exact_solution(_xt(), phase=v)),
    ("amplitude", _BAD_REAL, lambda v: NavierStokes2D().exact_taylor_green(_xyt(), amplitude=v)),
    ("length", _BAD_POSITIVE, lambda v: _ns_solve(length=v, steps=0)),
    ("viscosity", _BAD_POSITIVE, lambda v: _ns_solve(viscosity=v, steps=0)),
    ("dt", _BAD_POSITIVE, lambda v: _ns_solve(dt=v, steps=0)),
    ("t_end", _BAD_POSITIVE, lambda v: _ds_solve(torch.zeros(0, 8, dtype=F64), t_end=v)),
    ("rtol", _BAD_POSITIVE, lambda v: _ds_solve(torch.zeros(0, 8, dtype=F64), rtol=v)),
    ("atol", _BAD_POSITIVE, lambda v: _ds_solve(torch.zeros(0, 8, dtype=F64), atol=v)),
    ("viscosity", _BAD_POSITIVE,
     lambda v: burgers_sine_cole_hopf(torch.zeros(2), torch.zeros(2), v)),
    ("alpha", _BAD_REAL, lambda v: gaussian_random_field(8, alpha=v)),
    ("tau", _BAD_REAL, lambda v: gaussian_random_field(8, tau=v)),
    ("ridge", _BAD_REAL, lambda v: _heat_stack(ridge=v)),
    ("boundary_values", _BAD_REAL,
     lambda v: Heat1D(boundary="dirichlet", boundary_values=(0.0, v))),
]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_bad_floats_raise_named_errors(data):
    name, values, call = data.draw(st.sampled_from(FLOAT_ARGS))
    value = data.draw(values)
    outcome, detail = classify(lambda: call(value), name)
    assert outcome == "named", (name, value, outcome, detail)


_BAD_COUNT = st.one_of(st.integers(max_value=0), st.integers(min_value=10**10, max_value=10**30),
                       st.sampled_from([True, False, 2.0, 1.5, NAN, "3", None]))

# (argument, call(value)) for counts that must be an int >= 1 with a sane upper bound.
COUNT_ARGS = [
    ("nx", lambda v: DiffusionSorption1D().method_of_lines(v)),
    ("n", lambda v: pdebench_initial_condition(v, 8)),
    ("nx", lambda v: pdebench_initial_condition(2, v)),
    ("n", lambda v: gaussian_random_field(v)),
    ("save_every", lambda v: _ns_solve(save_every=v)),
    ("num_times", lambda v: _ds_solve(torch.zeros(0, 8, dtype=F64), num_times=v)),
    ("accuracy", lambda v: Burgers1D(accuracy=v)),
    ("accuracy", lambda v: NavierStokes2D(accuracy=v)),
    ("accuracy", lambda v: DiffusionSorption1D(accuracy=v)),
    ("n", lambda v: generate_dataset("burgers", v, 0, tempfile.gettempdir())),
]


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_bad_counts_raise_named_errors(data):
    name, call = data.draw(st.sampled_from(COUNT_ARGS))
    value = data.draw(_BAD_COUNT)
    outcome, detail = classify(lambda: call(value), name)
    assert outcome == "named", (name, value, outcome, detail)


# Every dataset setting with values it must reject (before any generation starts).
BAD_SIZES = {
    "diffusion-sorption": {"nx": ["0", "2", "-8", "1.5", "True", "10**9"],
                           "num_times": ["0", "1", "x"], "t_end": ["nan", "inf", "0", "-1"]},
    "navier-stokes": {"grid": ["0", "3", "-64", "2.5"], "viscosity": ["nan", "0", "-1e-3"],
                      "dt": ["inf", "0", "-0.1"], "steps": ["-1", "1e3", "10000000000000"],
                      "save_every": ["0", "-1"], "alpha": ["nan", "-1"],
                      "tau": ["inf", "-1"], "truncate_product": ["maybe", "2"]},
    "burgers": {"nx": ["0", "-4", "3"], "num_times": ["0", "1"], "t_end": ["nan", "0"],
                "viscosity": ["nan", "inf", "0", "-0.1"], "modes": ["0", "-1", "100"],
                "amplitude": ["nan", "-1", "inf"]},
}
_SIZE_CASES = [(k, key, v) for k, sizes in BAD_SIZES.items() for key, values in sizes.items()
               for v in values]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(_SIZE_CASES))
def test_bad_dataset_settings_are_rejected_by_name(case):
    kind, key, value = case
    with tempfile.TemporaryDirectory() as tmp:
        outcome, detail = classify(
            lambda: generate_dataset(kind, 1, 0, tmp, **{**TINY[kind], key: value}), key)
        assert outcome == "named", (case, outcome, detail)
        assert not list(Path(tmp).iterdir()), "nothing may be written for rejected settings"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(["data", "generate", kind, "--n", "1", "--out", tmp,
                           *(a for k, v in {**TINY[kind], key: value}.items()
                             for a in ("--size", f"{k}={v}"))])
        lines = err.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1 and key in lines[0], (case, rc, lines)


_BATCH = st.lists(st.integers(0, 3), max_size=2).map(tuple)


@settings(max_examples=30, deadline=None)
@given(batch=_BATCH, n=st.integers(4, 12), k=st.integers(1, 3),
       dtype=st.sampled_from([F32, F64]), derivative=st.integers(0, 3))
def test_spectral_derivative_any_batch(batch, n, k, dtype, derivative):
    # d^m/dx^m sin(k x) on a period 2π, exact for |k| < n/2; empty batches give empty results.
    k = min(k, (n - 1) // 2)
    x = 2 * math.pi * torch.arange(n, dtype=F64) / n
    u = torch.sin(k * x).to(dtype).expand(*batch, n)
    out = spectral_derivative(u, 2 * math.pi, derivative=derivative)
    assert out.shape == u.shape and out.dtype == dtype
    exact = (k**derivative) * torch.sin(k * x + derivative * math.pi / 2)
    tol = 1e-4 * k**derivative if dtype == F32 else 1e-10 * k**derivative
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, exact.to(dtype).expand_as(out), rtol=0, atol=tol)


@settings(max_examples=20, deadline=None)
@given(batch=_BATCH, pde=st.sampled_from(["heat", "burgers", "advection", "ns", "ds"]),
       dtype=st.sampled_from([F32, F64]))
def test_residuals_on_any_batch_are_finite_and_shaped(batch, pde, dtype):
    if pde == "ns":
        obj, grid = NavierStokes2D(), _xyt()
    elif pde == "ds":
        obj, grid = DiffusionSorption1D(), _ds_grid()
    else:
        obj = {"heat": Heat1D, "burgers": Burgers1D, "advection": Advection1D}[pde]()
        grid = _xt(dtype=dtype)
    u = _field(grid, *batch, dtype=dtype)
    r = obj.residual(u, grid)
    assert r.shape == u.shape and bool(torch.isfinite(r).all())
    basis = _basis(grid, 2, *batch, dtype=dtype)
    w = _randn(*batch, 2, dtype=dtype)
    terms = obj.basis_terms(basis, grid)
    rb = obj.residual_from_basis_terms(terms, w)
    assert rb.shape == (*batch, grid.size)
    torch.testing.assert_close(rb.reshape(u.shape),
                               obj.residual((basis @ w.unsqueeze(-1)).reshape(u.shape), grid),
                               rtol=1e-3 if dtype == F32 else 1e-9,
                               atol=1e-3 if dtype == F32 else 1e-9)


@settings(max_examples=20, deadline=None)
@given(a=st.sampled_from([F32, F64]), b=st.sampled_from([F32, F64]),
       which=st.sampled_from(["terms", "stack"]))
def test_dtype_disagreement_is_named(a, b, which):
    grid = _xt(False)
    basis = _basis(grid, dtype=a)
    w = _randn(3, dtype=b)
    pde = Heat1D(boundary="dirichlet")
    if which == "terms":
        def call():
            return pde.residual_from_basis_terms(pde.basis_terms(basis, grid), w)
    else:
        def call():
            return _heat_stack(basis=basis, weights=w)
    outcome, detail = classify(call, "weights", expect="error" if a != b else "either")
    assert outcome == ("named" if a != b else "ok"), (a, b, outcome, detail)


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(st.one_of(st.integers(-100, 100), st.floats(allow_nan=True)),
                     min_size=1, max_size=5))
def test_rows_of_any_value_are_used_or_named(rows):
    grid = _xt(False)
    as_int = all(isinstance(r, int) for r in rows)
    tensor = torch.tensor(rows) if as_int else torch.tensor(rows, dtype=F64)
    outcome, detail = classify(lambda: _heat_stack(rows=tensor), "rows",
                               expect="either" if as_int else "error")
    valid = as_int and all(-grid.size <= r < grid.size for r in rows)
    assert outcome == ("ok" if valid else "named"), (rows, outcome, detail)


if __name__ == "__main__":  # the census: counts per bad-input class
    import collections
    import resource
    import sys

    # A case that allocates without bound fails (a raw error) instead of exhausting memory.
    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))

    table = collections.defaultdict(collections.Counter)
    for case in CASES:
        outcome, detail = case.run()
        table[case.kind][outcome] += 1
        if outcome not in ("ok", "named") or "-v" in sys.argv:
            print(f"{outcome:8s} {case.kind:10s} {case.label}: {detail[:160]}")
    print(f"{'class':10s} " + " ".join(f"{o:>8s}" for o in OUTCOMES))
    for kind, counts in table.items():
        print(f"{kind:10s} " + " ".join(f"{counts[o]:8d}" for o in OUTCOMES))
    total = sum(table.values(), collections.Counter())
    print(f"{'total':10s} " + " ".join(f"{total[o]:8d}" for o in OUTCOMES))
