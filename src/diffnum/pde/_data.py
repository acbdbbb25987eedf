"""Cached, checksummed datasets of reference solutions (diffusion–sorption, Navier–Stokes,
Burgers), deterministic per seed and loaded as a ``torch.utils.data.Dataset``."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from diffnum._core.files import atomic_write
from diffnum._core.validation import (
    check_count,
    check_int_in_range,
    check_one_of,
    check_real,
)
from diffnum.pde._checks import check_bool
from diffnum.pde._diffusion_sorption import pdebench_initial_condition, solve_diffusion_sorption_1d
from diffnum.pde._navier_stokes import solve_navier_stokes_2d

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

KINDS: dict[str, dict[str, Any]] = {
    # PDEBench's setting: 1024 cells, t ∈ [0, 500], 101 saved times.
    "diffusion-sorption": {"nx": 1024, "num_times": 101, "t_end": 500.0},
    # Periodic box of side 2π, ν = 1e-3, Gaussian random field ω₀ (α = 2.5, τ = 7), dt = 1e-2;
    # truncate_product=False makes the modes outside the 2/3 band follow the pointwise
    # equation a training residual uses (see solve_navier_stokes_2d).
    "navier-stokes": {"grid": 64, "viscosity": 1e-3, "dt": 1e-2, "steps": 500, "save_every": 50,
                      "alpha": 2.5, "tau": 7.0, "truncate_product": True},
    # Periodic x ∈ [−1, 1), random smooth zero-mean u₀ (modes k ≤ 4), exact Cole–Hopf.
    "burgers": {"nx": 256, "num_times": 51, "t_end": 1.0, "viscosity": 0.05, "modes": 4,
                "amplitude": 0.5},
}


# What each setting may be: ("int", low, high), ("float", low, low excluded) or ("bool",).
_POSITIVE, _NONNEGATIVE = ("float", 0.0, True), ("float", 0.0, False)
LIMITS: dict[str, dict[str, tuple]] = {
    "diffusion-sorption": {"nx": ("int", 3, 2**20), "num_times": ("int", 2, 10**5),
                           "t_end": _POSITIVE},
    "navier-stokes": {"grid": ("int", 4, 4096), "viscosity": _POSITIVE, "dt": _POSITIVE,
                      "steps": ("int", 0, 10**7), "save_every": ("int", 1, 10**7),
                      "alpha": _NONNEGATIVE, "tau": _NONNEGATIVE, "truncate_product": ("bool",)},
    "burgers": {"nx": ("int", 4, 2**16), "num_times": ("int", 2, 10**5), "t_end": _POSITIVE,
                "viscosity": _POSITIVE, "modes": ("int", 1, 2**15), "amplitude": _NONNEGATIVE},
}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _coerce(key: str, value: Any, limit: tuple) -> Any:
    """A setting (a Python value, or the string of ``--size KEY=VALUE``) checked against its
    limit: ints stay ints (no float or bool), floats finite and in range, bools true/false."""
    if limit[0] == "bool":
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        return check_bool(key, value)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if limit[0] == "int" else float(text)
        except ValueError:
            what = "an integer" if limit[0] == "int" else "a real number"
            raise ValueError(f"{key} must be {what}, got {text!r}") from None
    if limit[0] == "int":
        return check_count(key, value, low=limit[1], high=limit[2])
    return check_real(key, value, low=limit[1], low_open=limit[2])


def _sample_generator(seed: int, index: int) -> torch.Generator:
    """Generator of sample ``index``: the same sample for the same (seed, index), whatever n."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index) % (2**63 - 1))


def _settings(kind: str, sizes: dict[str, Any]) -> dict[str, Any]:
    check_one_of("kind", kind, tuple(KINDS))
    defaults = KINDS[kind]
    unknown = sorted(set(sizes) - set(defaults))
    if unknown:
        raise ValueError(f"unknown size(s) {unknown} for kind {kind!r}; choose from "
                         f"{sorted(defaults)}")
    settings = dict(defaults)
    for key, value in sizes.items():
        settings[key] = _coerce(key, value, LIMITS[kind][key])
    if kind == "burgers" and not settings["modes"] < settings["nx"] / 2:
        raise ValueError(f"modes must be < nx / 2 = {settings['nx'] / 2} (resolved on the grid), "
                         f"got modes={settings['modes']}")
    return settings


# -- generators: each returns {"initial": (n, ...), "solution": (n, nt, ...), "times", "x"} ----
def _diffusion_sorption(n: int, seed: int, s: dict[str, Any]) -> dict[str, torch.Tensor]:
    initial = torch.cat([pdebench_initial_condition(1, s["nx"],
                                                    generator=_sample_generator(seed, i))
                         for i in range(n)])
    traj = solve_diffusion_sorption_1d(initial, t_end=s["t_end"], num_times=s["num_times"])
    return {"initial": initial, "solution": traj.solution, "times": traj.times, "x": traj.x}


def gaussian_random_field(n: int, *, alpha: float = 2.5, tau: float = 7.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-mean periodic field on an n × n grid with spectrum ω̂_k ∝ ξ_k (|k|² + τ²)^{−α/2},
    ξ_k standard complex normal, scaled to unit standard deviation; float64.

    Example::

        >>> import torch
        >>> from diffnum.pde import gaussian_random_field
        >>> w = gaussian_random_field(16, generator=torch.Generator().manual_seed(0))
        >>> w.shape, abs(float(w.mean())) < 1e-12  # zero mean on the periodic box
        (torch.Size([16, 16]), True)
    """
    check_count("n", n, low=2, high=2**14)
    alpha = check_real("alpha", alpha, low=0.0)
    tau = check_real("tau", tau, low=0.0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    kr = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)
    amplitude = (k[:, None] ** 2 + kr[None, :] ** 2 + tau**2) ** (-alpha / 2)
    noise = torch.randn(2, n, n // 2 + 1, dtype=torch.float64, generator=generator)
    spectrum = amplitude * torch.complex(noise[0], noise[1])
    spectrum[0, 0] = 0
    field = torch.fft.irfft2(spectrum, s=(n, n))
    std = float(field.std())
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"alpha={alpha} and tau={tau} give a field of standard deviation {std} "
                         f"on {n} x {n} points (its spectrum under- or overflows float64)")
    return field / std


def _navier_stokes(n: int, seed: int, s: dict[str, Any]) -> dict[str, torch.Tensor]:
    initial = torch.stack([gaussian_random_field(s["grid"], alpha=s["alpha"], tau=s["tau"],
                                                 generator=_sample_generator(seed, i))
                           for i in range(n)])
    traj = solve_navier_stokes_2d(initial, viscosity=s["viscosity"], dt=s["dt"],
                                  steps=s["steps"], save_every=s["save_every"],
                                  truncate_product=bool(s["truncate_product"]))
    if traj.cfl > 0.5:
        logger.warning("navier-stokes data: largest CFL number %.3g > 0.5; reduce dt", traj.cfl)
    x = 2 * math.pi * torch.arange(s["grid"], dtype=torch.float64) / s["grid"]
    return {"initial": initial, "solution": traj.vorticity, "times": traj.times, "x": x}


def _burgers(n: int, seed: int, s: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Cole–Hopf: u = −2ν ∂_x log φ, φ_t = ν φ_xx, φ₀ = exp(−U₀/(2ν)), U₀' = u₀; with u₀ a
    zero-mean trigonometric polynomial U₀ is periodic, and the heat equation is solved exactly
    mode by mode (φ̂_k(t) = φ̂_k(0) e^{−νk²t}), so the result is exact up to the spectral
    resolution of φ₀ (smooth: ‖U₀‖/(2ν) ≤ 50 is required to keep φ's dynamic range)."""
    nx, nu, modes = s["nx"], s["viscosity"], s["modes"]
    # φ₀ is smooth but not band-limited: work on ≥ 256 points (spectral error ~1e-15 there for
    # the default sizes) and keep every ``factor``-th point.
    factor = max(1, math.ceil(256 / nx))
    fine = nx * factor
    x = -1 + 2 * torch.arange(fine, dtype=torch.float64) / fine
    times = torch.linspace(0, s["t_end"], s["num_times"], dtype=torch.float64)
    q = math.pi * torch.arange(1, modes + 1, dtype=torch.float64)  # wavenumbers of period 2
    kx = math.pi * torch.fft.fftfreq(fine, d=1.0 / fine, dtype=torch.float64)
    initial, solution = [], []
    for i in range(n):
        coeff = torch.randn(2, modes, dtype=torch.float64, generator=_sample_generator(seed, i))
        coeff = coeff * s["amplitude"] / torch.arange(1, modes + 1)
        phase = q[:, None] * x[None, :]
        u0 = (coeff[0, :, None] * torch.cos(phase) + coeff[1, :, None] * torch.sin(phase)).sum(0)
        potential = (coeff[0, :, None] * torch.sin(phase) / q[:, None]
                     - coeff[1, :, None] * torch.cos(phase) / q[:, None]).sum(0)  # U₀' = u₀
        exponent = -(potential - potential.max()) / (2 * nu)
        if float(exponent.max()) > 50:
            raise ValueError("burgers: amplitude/viscosity too large for Cole–Hopf in float64 "
                             f"(range of U₀/(2ν) = {float(exponent.max()):.3g} > 50)")
        phi_hat = torch.fft.fft(torch.exp(exponent))
        decay = torch.exp(-nu * kx[None, :] ** 2 * times[:, None])
        phi = torch.fft.ifft(phi_hat * decay).real
        phi_x = torch.fft.ifft(1j * kx * phi_hat * decay).real
        initial.append(u0[::factor])
        solution.append((-2 * nu * phi_x / phi)[:, ::factor])
    return {"initial": torch.stack(initial), "solution": torch.stack(solution), "times": times,
            "x": x[::factor]}


_GENERATORS: dict[str, Callable[[int, int, dict[str, Any]], dict[str, torch.Tensor]]] = {
    "diffusion-sorption": _diffusion_sorption,
    "navier-stokes": _navier_stokes,
    "burgers": _burgers,
}


# -- files ------------------------------------------------------------------------------
def dataset_paths(kind: str, n: int, seed: int, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(data file, JSON sidecar) of a dataset: ``OUT/KIND-nN-seedS.pt`` and ``.json``.

    Example::

        >>> from diffnum.pde import dataset_paths
        >>> [p.name for p in dataset_paths("navier-stokes", 8, 3, "data")]
        ['navier-stokes-n8-seed3.pt', 'navier-stokes-n8-seed3.json']
    """
    _check_identity(kind, n, seed, out_dir)
    stem = Path(out_dir) / f"{kind}-n{n}-seed{seed}"
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def _check_identity(kind: str, n: int, seed: int, out_dir: str | os.PathLike) -> None:
    check_one_of("kind", kind, tuple(KINDS))
    check_int_in_range("n", n, 1, 10**7)
    check_int_in_range("seed", seed, 0, 2**62)
    if not isinstance(out_dir, str | os.PathLike):
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__}")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"out_dir must be a directory, got {str(out_dir)!r} (not a directory)")


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors holding NaN or ±inf."""
    return [k for k, v in tensors.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected(kind: str, n: int, seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "kind": kind, "n": n, "seed": seed,
            "settings": settings}


def _validate(data_path: Path, sidecar_path: Path, expected: dict[str, Any]) -> str | None:
    """None if the cached dataset is complete and matches; else the reason it is not."""
    if not data_path.exists():
        return f"{data_path} is missing"
    if not sidecar_path.exists():
        return f"sidecar {sidecar_path} is missing"
    try:
        meta = json.loads(sidecar_path.read_text())
    except (OSError, ValueError) as error:
        return f"sidecar {sidecar_path} is unreadable ({error})"
    if not isinstance(meta, dict):
        return f"sidecar {sidecar_path} is not a JSON object"
    for key, value in expected.items():
        if meta.get(key) != value:
            return f"{key} mismatch: cached {meta.get(key)!r}, requested {value!r}"
    digest = _sha256(data_path)
    if meta.get("sha256") != digest:
        return f"checksum mismatch for {data_path}: sidecar {meta.get('sha256')}, file {digest}"
    return None


def generate_dataset(kind: str, n: int, seed: int, out_dir: str | os.PathLike, *,
                     overwrite: bool = False, **sizes: Any) -> Path:
    """Generate (or reuse) ``n`` reference solutions of ``kind`` and return the data file.

    ``kind`` is ``"diffusion-sorption"``, ``"navier-stokes"`` or ``"burgers"``; ``sizes``
    override the defaults in ``KINDS[kind]``. Sample i depends only on (seed, i) and the
    settings, so the result is deterministic per seed. The tensors (``initial`` (n, …),
    ``solution`` (n, nt, …), ``times``, ``x``) go to ``OUT/KIND-nN-seedS.pt`` and a JSON
    sidecar records the settings and the SHA-256 of the data file; both are written atomically
    (temporary file + ``os.replace``), the sidecar last, so a crash leaves no file that
    validates. An existing dataset is reused only if its sidecar, settings and checksum all
    match; otherwise the reason is logged and it is regenerated.

    Example::

        >>> import tempfile
        >>> import diffnum.pde as pde
        >>> out = tempfile.mkdtemp()
        >>> path = pde.generate_dataset("burgers", 2, 0, out)
        >>> path.name, path.with_suffix(".json").exists()  # data and a checksummed sidecar
        ('burgers-n2-seed0.pt', True)
    """
    _check_identity(kind, n, seed, out_dir)
    check_bool("overwrite", overwrite)
    settings = _settings(kind, sizes)
    out = Path(out_dir)
    data_path, sidecar_path = dataset_paths(kind, n, seed, out)
    expected = _expected(kind, n, seed, settings)
    if not overwrite:
        reason = _validate(data_path, sidecar_path, expected)
        if reason is None:
            reason = _read_tensors(data_path, n)[1]
        if reason is None:
            logger.info("reusing %s (checksum and settings match)", data_path)
            return data_path
        if data_path.exists() or sidecar_path.exists():
            logger.warning("regenerating %s: %s", data_path, reason)
    logger.info("generating %d %s samples (seed %d) into %s", n, kind, seed, data_path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in
               _GENERATORS[kind](n, seed, settings).items()}
    bad = _non_finite(tensors)
    if bad:  # never write (and checksum) NaN data; the solvers should have raised already
        raise ValueError(f"{kind} settings {settings} give non-finite values in {bad}; "
                         "check the physics constants and the time step")
    out.mkdir(parents=True, exist_ok=True)
    sidecar_path.unlink(missing_ok=True)  # never leave an old sidecar beside new data
    atomic_write(data_path, lambda f: torch.save(tensors, f))
    meta = {**expected, "sha256": _sha256(data_path), "file": data_path.name,
            "shapes": {k: list(v.shape) for k, v in tensors.items()}}
    atomic_write(sidecar_path, lambda f: f.write((json.dumps(meta, indent=1) + "\n").encode()))
    return data_path


class PDEDataset(Dataset):
    """Reference solutions as a map-style dataset: item i is ``{"initial": u₀ⁱ,
    "solution": uⁱ}`` (solution shape (nt, …)); ``times``, ``x``, ``settings`` and ``path``
    describe the whole set.

    Example::

        >>> import tempfile
        >>> import diffnum.pde as pde
        >>> out = tempfile.mkdtemp()
        >>> data = pde.load_dataset("burgers", 2, 0, out)
        >>> sorted(data[0]), isinstance(data, pde.PDEDataset)
        (['initial', 'solution'], True)
    """

    def __init__(self, path: Path, tensors: dict[str, torch.Tensor], settings: dict[str, Any]):
        if not isinstance(tensors, dict):
            raise TypeError(f"tensors must be a dict of tensors, got {type(tensors).__name__}")
        reason = _check_layout(tensors, None)
        if reason is not None:
            raise ValueError(f"tensors {reason}")
        self.path = path
        self.initial = tensors["initial"]
        self.solution = tensors["solution"]
        self.times = tensors["times"]
        self.x = tensors["x"]
        self.settings = settings

    def __len__(self) -> int:
        return self.solution.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"initial": self.initial[index], "solution": self.solution[index]}


def _read_tensors(data_path: Path, n: int) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(tensors, None) if ``data_path`` holds the n samples :func:`generate_dataset` writes,
    else (None, reason). Read with ``weights_only=True``, so no code runs even if the file and
    its checksum were both crafted; a file that passed the checksum but does not load or has
    the wrong layout is a reason to regenerate, not a traceback."""
    try:
        tensors = torch.load(data_path, map_location="cpu", weights_only=True)
    except Exception as error:  # deliberately broad: any failure means "not usable"
        return None, f"{data_path} does not load ({type(error).__name__})"
    reason = _check_layout(tensors, n)
    return (tensors, None) if reason is None else (None, f"{data_path} {reason}")


def _check_layout(tensors: object, n: int | None) -> str | None:
    """None if ``tensors`` holds the four finite tensors of a dataset (n samples), else why."""
    names = ("initial", "solution", "times", "x")
    if not isinstance(tensors, dict) or not all(isinstance(tensors.get(k), torch.Tensor)
                                                for k in names):
        return f"lacks one of the tensors {list(names)}"
    if tensors["solution"].ndim == 0 or tensors["initial"].ndim == 0:
        return "holds scalar initial/solution tensors"
    count = tensors["solution"].shape[0]
    if tensors["initial"].shape[0] != count or (n is not None and count != n):
        return (f"holds {count} solutions and {tensors['initial'].shape[0]} initial values, "
                f"expected {count if n is None else n}")
    bad = _non_finite({k: tensors[k] for k in names})
    if bad:
        return f"holds non-finite values (NaN or inf) in {bad}"
    return None


def load_dataset(kind: str, n: int, seed: int, out_dir: str | os.PathLike, *,
                 generate: bool = True, **sizes: Any) -> PDEDataset:
    """Load a dataset made by :func:`generate_dataset` with the same arguments.

    The sidecar, settings and checksum are verified before the file is read (with
    ``weights_only=True``); a missing, partial, corrupted or mismatched dataset, or one that
    does not load as the expected tensors, is logged and regenerated (``generate=True``) or
    raises ``RuntimeError`` (``generate=False``); it is never used as it is. So is a dataset
    holding NaN or inf (an older version wrote such files for non-finite settings).

    Example::

        >>> import tempfile
        >>> import diffnum.pde as pde
        >>> out = tempfile.mkdtemp()
        >>> data = pde.load_dataset("burgers", 2, 0, out)  # generated on first use, then cached
        >>> len(data), tuple(data.solution.shape)
        (2, (2, 51, 256))
    """
    _check_identity(kind, n, seed, out_dir)
    check_bool("generate", generate)
    settings = _settings(kind, sizes)
    data_path, sidecar_path = dataset_paths(kind, n, seed, out_dir)
    tensors = None
    reason = _validate(data_path, sidecar_path, _expected(kind, n, seed, settings))
    if reason is None:
        tensors, reason = _read_tensors(data_path, n)
    if reason is not None:
        if not generate:
            raise RuntimeError(f"dataset {data_path} is not usable: {reason}")
        if data_path.exists() or sidecar_path.exists():
            logger.warning("dataset %s is not usable (%s); regenerating", data_path, reason)
        generate_dataset(kind, n, seed, out_dir, overwrite=True, **sizes)
        tensors, reason = _read_tensors(data_path, n)
        if reason is not None:
            raise RuntimeError(f"freshly generated dataset {data_path} is not usable: {reason}")
    return PDEDataset(data_path, tensors, settings)
