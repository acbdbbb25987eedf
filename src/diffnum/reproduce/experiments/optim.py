"""Muon-family optimizers on real data: a character-level transformer on the Python standard
library's own source, a small CNN on scikit-learn's handwritten digits with its conv weights
orthogonalized, and the Newton–Schulz singular-value map of each coefficient schedule."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import diffnum
from diffnum._core.files import atomic_write
from diffnum._core.markdown import markdown_table
from diffnum.factor import POLAR_PRESETS, polar_band, polar_schedule
from diffnum.optim import Muon, Root, TurboMuon
from diffnum.reproduce._harness import Context, Experiment, Section
from diffnum.reproduce._plot import pyplot, save_figure
from diffnum.reproduce.experiments._digits import load_digits_data

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ settings
#: Standard-library modules whose source is the corpus, in this (sorted) order; one that a
#: Python version lacks (pathlib.py became a package in 3.13) is skipped and reported.
STDLIB_FILES = tuple(sorted((
    "argparse.py", "collections/__init__.py", "contextlib.py", "dataclasses.py", "enum.py",
    "functools.py", "inspect.py", "json/decoder.py", "pathlib.py", "textwrap.py", "typing.py",
)))
VALIDATION_FRACTION = 0.1
OPTIMIZERS = ("AdamW", "Muon", "TurboMuon", "Root")
DIGITS_OPTIMIZERS = ("AdamW", "Muon")
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)  # AdamW's, also those of the AdamW group inside the Muon family
DIGITS_TRAIN = 1347  # of 1797 images (75 %); the rest is the test set
DIGITS_SPLIT_SEED = 20_240_901  # the split is fixed, whatever the run's seed
DIGITS_VALIDATION = 247  # the last images of the training part, for the lr sweep
DESIGN_LOWER = 1e-3  # the smallest σ₀ the schedules are compared on


def _sizes(quick: bool) -> dict[str, Any]:
    # One lr sweep per optimizer, each chosen to bracket the optimum that trial runs at both
    # sizes found (the report says when a chosen lr lands on the edge of its sweep).
    muon_lrs = (1e-2, 3e-2, 1e-1)
    lm_lrs = {"AdamW": (1e-3, 3e-3, 1e-2), **{o: muon_lrs for o in OPTIMIZERS[1:]}}
    if quick:
        return {
            "lm": dict(d_model=64, heads=4, layers=2, context=64, batch=32, steps=200,
                       warmup=20, eval_every=25, eval_windows=256, lrs=lm_lrs, seeds=1),
            "digits": dict(epochs=8, batch=64, lrs=(1e-3, 3e-3, 1e-2, 3e-2), seeds=3),
        }
    return {
        "lm": dict(d_model=96, heads=4, layers=2, context=128, batch=32, steps=800,
                   warmup=50, eval_every=100, eval_windows=256, lrs=lm_lrs, seeds=3),
        "digits": dict(epochs=20, batch=64, lrs=(1e-3, 3e-3, 1e-2, 3e-2), seeds=3),
    }


# ------------------------------------------------------------------------------ corpus
@dataclass(frozen=True)
class Corpus:
    """The concatenated source files as bytes (vocabulary 256) and where they came from."""

    data: torch.Tensor  # uint8, (n,)
    files: tuple[str, ...]
    missing: tuple[str, ...]
    sha256: str  # first 12 hex digits of the SHA-256 of the bytes

    @property
    def split(self) -> int:
        """Index of the first validation byte: the last 10 % are held out."""
        return len(self.data) - int(VALIDATION_FRACTION * len(self.data))


def load_corpus(root: str | Path | None = None, files: Sequence[str] = STDLIB_FILES) -> Corpus:
    """The bytes of ``files`` (relative to the standard library's directory, or ``root``)
    concatenated in the given order, each followed by a newline; missing ones are skipped."""
    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    found, missing, chunks = [], [], []
    for name in files:
        path = root / name
        if path.is_file():
            found.append(name)
            chunks.append(path.read_bytes() + b"\n")
        else:
            missing.append(name)
    if not found:
        raise FileNotFoundError(f"none of {list(files)} exists under {root}")
    raw = b"".join(chunks)
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return Corpus(data=data, files=tuple(found), missing=tuple(missing),
                  sha256=hashlib.sha256(raw).hexdigest()[:12])


# ------------------------------------------------------------------------------ model
class Block(nn.Module):
    """Pre-norm transformer block: causal multi-head attention and a 4× GELU MLP, with
    separate q, k, v and output matrices (each its own matrix for Muon)."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model, bias=False)
                                            for _ in range(4))
        self.up = nn.Linear(d_model, 4 * d_model, bias=False)
        self.down = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        y = self.norm1(x)
        q, k, v = (m(y).view(B, T, self.heads, D // self.heads).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class CharLM(nn.Module):
    """Byte-level causal transformer: token and learned position embeddings, ``layers``
    blocks, a final LayerNorm and an untied output head. Initialized from ``generator``
    (normal, std 0.02; the residual projections scaled by 1/√(2·layers))."""

    def __init__(self, d_model: int, heads: int, layers: int, context: int,
                 generator: torch.Generator, vocab: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.empty(context, d_model))
        self.blocks = nn.ModuleList(Block(d_model, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.ndim < 2:
                    continue  # LayerNorm: ones and zeros
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(
                    ("out.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x) + self.position[: x.shape[1]]
        for block in self.blocks:
            z = block(z)
        return self.head(self.norm(z))

    def adamw_parameters(self) -> list[nn.Parameter]:
        """The embeddings and the output head: AdamW even under Muon (standard practice)."""
        return [self.embed.weight, self.position, self.head.weight]


class DigitsCNN(nn.Module):
    """Three 3×3 convolutions (16, 32, 64 channels, a 2×2 max-pool after the second), global
    average pooling and a linear head; PyTorch's default initialization drawn from
    ``generator``."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, 10)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                    bound = 1 / math.sqrt(m.weight[0].numel())
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def adamw_parameters(self) -> list[nn.Parameter]:
        return [self.head.weight]


def make_optimizer(name: str, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """``name`` of :data:`OPTIMIZERS` on ``model``. AdamW: every parameter. Muon family: the
    model's ``adamw_parameters()`` as an explicit AdamW group, every other matrix (conv
    weights as (out, in·k·k)) to Muon, vectors to its AdamW group; one lr for both groups
    (``adjust_lr="match_rms_adamw"``), the same decay and betas as AdamW."""
    if name == "AdamW":
        return torch.optim.AdamW(model.parameters(), lr=lr, betas=BETAS,
                                 weight_decay=WEIGHT_DECAY)
    cls = {"Muon": Muon, "TurboMuon": TurboMuon, "Root": Root}[name]
    special = model.adamw_parameters()
    ids = {id(p) for p in special}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return cls([{"params": special, "algorithm": "adamw"}, {"params": rest}], lr=lr,
               weight_decay=WEIGHT_DECAY, betas=BETAS, adjust_lr="match_rms_adamw")


def describe(optimizer: torch.optim.Optimizer) -> str:
    """The Newton–Schulz settings of a Muon-family optimizer's Muon group, in words."""
    g = next(g for g in optimizer.param_groups if g.get("algorithm") == "muon")
    dtype = str(g["compute_dtype"]).replace("torch.", "")
    text = (f"{len(g['schedule'])} Newton–Schulz steps from the {g['precondition']} start "
            f"in {dtype}")
    if g["clip_quantile"] is not None:
        text += f", clipped at the {g['clip_quantile']:g}-quantile"
    return text


def muon_shapes(optimizer: torch.optim.Optimizer) -> list[tuple[int, int]]:
    """(out, in·k…) of every parameter an optimizer orthogonalizes."""
    return [(p.shape[0], p[0].numel()) for g in optimizer.param_groups
            if g.get("algorithm") == "muon" for p in g["params"]]


# ------------------------------------------------------------------------------ helpers
def _mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return {"values": list(values),
            "mean": statistics.fmean(finite) if finite else float("nan"),
            "std": statistics.stdev(finite) if len(finite) > 1 else float("nan")}


def _pm(entry: dict[str, Any], digits: int = 3) -> str:
    """"mean ± std" (std over seeds; the mean alone for one seed), from stored results."""
    mean, std = entry["mean"], entry["std"]
    if not _finite(mean):
        return "diverged"
    if not _finite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _median_ms(values: Sequence[float]) -> float:
    return 1e3 * statistics.median(values) if values else float("nan")


def _stage(ctx: Context, name: str, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()``, saved as a JSON checkpoint; with ``--resume`` a checkpoint written for
    the same ``key`` (sizes, corpus, seed, version) is reused instead of recomputed."""
    mode = "quick" if ctx.quick else "full"
    path = ctx.checkpoint_path(f"optim-{name}-{mode}-seed{ctx.seed}.json")
    key = json.loads(json.dumps({**key, "version": diffnum.__version__}, default=str))
    if ctx.resume and path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = None
        if isinstance(stored, dict) and stored.get("key") == key and "value" in stored:
            return stored["value"]
        logger.info("checkpoint %s is stale or unreadable; recomputing", path)
    value = compute()
    text = json.dumps({"key": key, "value": value})
    atomic_write(path, lambda f: f.write(text.encode()))
    return json.loads(text)["value"]  # as a resumed run reads it (tuples become lists)


# ------------------------------------------------------------------------------ (a) LM
@dataclass
class _LMRun:
    """One training run of the round-robin: its model, optimizer, schedule and records."""

    optimizer: str
    lr: float
    seed: int
    model: CharLM
    opt: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    batches: torch.Generator
    step_seconds: list[float] = field(default_factory=list)
    opt_seconds: list[float] = field(default_factory=list)
    curve: list[list[float]] = field(default_factory=list)  # [step, seconds, val loss]


def _windows(data: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    return data[starts.unsqueeze(1) + torch.arange(length + 1)].long()


@torch.no_grad()
def _val_loss(model: CharLM, windows: torch.Tensor, batch: int = 256) -> float:
    total = 0.0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch]
        total += float(F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten(),
                                       reduction="sum"))
    return total / (windows.shape[0] * (windows.shape[1] - 1))


def _eval_windows(val: torch.Tensor, length: int, count: int) -> torch.Tensor:
    """``count`` non-overlapping held-out windows (of ``length`` + 1 bytes), spread evenly over
    the held-out split; every evaluation, curves and final loss, uses these."""
    starts = torch.arange(0, len(val) - length - 1, length)
    pick = torch.linspace(0, len(starts) - 1, min(count, len(starts))).round().long()
    return _windows(val, starts[pick], length)


def _lr_lambda(steps: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10 % of the peak at the last step."""
    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup)
        return ramp * (0.1 + 0.45 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    return factor


def _train_lm(ctx: Context, corpus: Corpus, s: dict[str, Any],
              jobs: Sequence[tuple[str, float, int]], desc: str) -> list[dict[str, Any]]:
    """Train one run per (optimizer, lr, seed) job, all in one round-robin: each step, every
    run takes its step in turn (the order rotating), so each one's step times are measured
    under the same conditions. A seed fixes the initialization and the batches, whatever the
    optimizer."""
    T, steps = s["context"], s["steps"]
    train, val = corpus.data[:corpus.split], corpus.data[corpus.split:]
    windows = _eval_windows(val, T, s["eval_windows"])
    runs = []
    for optimizer, lr, seed in jobs:
        model = CharLM(s["d_model"], s["heads"], s["layers"], T, ctx.generator(100 + seed))
        opt = make_optimizer(optimizer, model, lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, s["warmup"]))
        runs.append(_LMRun(optimizer, lr, seed, model, opt, schedule,
                           ctx.generator(200 + seed)))
    for step in ctx.progress(range(steps), desc=desc):
        shift = step % len(runs)
        for run in runs[shift:] + runs[:shift]:
            if step % s["eval_every"] == 0:
                run.curve.append([step, sum(run.step_seconds),
                                  _val_loss(run.model, windows)])
            idx = torch.randint(0, len(train) - T - 1, (s["batch"],), generator=run.batches)
            w = _windows(train, idx, T)
            start = time.perf_counter()
            loss = F.cross_entropy(run.model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            middle = time.perf_counter()
            run.opt.step()
            run.schedule.step()
            end = time.perf_counter()
            run.step_seconds.append(end - start)
            run.opt_seconds.append(end - middle)
    out = []
    for run in runs:
        final = _val_loss(run.model, windows)
        run.curve.append([steps, sum(run.step_seconds), final])
        out.append({"optimizer": run.optimizer, "lr": run.lr, "seed": run.seed,
                    "curve": run.curve, "final": final if math.isfinite(final) else None,
                    # the first steps (allocation, warm-up) are left out when there are more
                    "step_seconds": run.step_seconds[5:] or run.step_seconds,
                    "opt_seconds": run.opt_seconds[5:] or run.opt_seconds,
                    "muon_shapes": muon_shapes(run.opt)})
    return out


def _choose(sweep: dict[str, list[list[float]]]) -> dict[str, float]:
    """The lr of each optimizer's lowest finite score (the first on ties)."""
    chosen = {}
    for name, rows in sweep.items():
        finite = [(v, lr) for lr, v in rows if v is not None and math.isfinite(v)]
        chosen[name] = min(finite)[1] if finite else rows[0][0]
    return chosen


def _loss_at(curve: list[list[float]], step: float) -> float:
    """Validation loss at (fractional) ``step``, linear between evaluations."""
    return float(np.interp(step, [c[0] for c in curve], [c[2] for c in curve]))


def _language_model(ctx: Context, corpus: Corpus, s: dict[str, Any]) -> dict[str, Any]:
    key = {"sizes": s, "corpus": corpus.sha256}
    sweep_runs = _stage(ctx, "lm-sweep", key, lambda: _train_lm(
        ctx, corpus, s, [(o, lr, 0) for o in OPTIMIZERS for lr in s["lrs"][o]],
        f"optim (a): lr sweep, {sum(map(len, s['lrs'].values()))} runs interleaved"))
    sweep = {o: [[r["lr"], r["final"]] for r in sweep_runs if r["optimizer"] == o]
             for o in OPTIMIZERS}
    chosen = _choose(sweep)
    extra = [(o, chosen[o], seed) for seed in range(1, s["seeds"]) for o in OPTIMIZERS]
    seed_runs = _stage(ctx, "lm-seeds", {**key, "chosen": chosen}, lambda: _train_lm(
        ctx, corpus, s, extra, f"optim (a): {len(extra)} more seed runs interleaved")
    ) if extra else []
    runs = {o: [r for r in sweep_runs + seed_runs
                if r["optimizer"] == o and r["lr"] == chosen[o]] for o in OPTIMIZERS}
    all_runs = sweep_runs + seed_runs
    times = {o: [t for r in all_runs if r["optimizer"] == o for t in r["step_seconds"]]
             for o in OPTIMIZERS}
    median = {o: statistics.median(t) for o, t in times.items()}
    # Training time at step k is taken as k × the optimizer's median step (interleaved):
    # robust to stalls of the machine, which the sums of measured steps are not.
    budget = {o: s["steps"] * median[o] for o in OPTIMIZERS}
    equal_seconds = min(budget.values())
    curves = {}
    for o, rs in runs.items():
        steps = [c[0] for c in rs[0]["curve"]]
        curves[o] = {"step": steps, "seconds": [k * median[o] for k in steps],
                     "loss": [statistics.fmean(r["curve"][i][2] for r in rs)
                              for i in range(len(steps))]}
    windows = _eval_windows(corpus.data[corpus.split:], s["context"], s["eval_windows"])
    model = CharLM(s["d_model"], s["heads"], s["layers"], s["context"], ctx.generator(100))
    root = next(g for g in make_optimizer("Root", model, 1e-3).param_groups
                if g["algorithm"] == "muon")
    return {
        "sizes": s,
        "parameters": sum(p.numel() for p in model.parameters()),
        "eval_windows": windows.shape[0],
        "eval_bytes": windows.shape[0] * s["context"],
        "settings": {o: describe(make_optimizer(o, model, 1e-3)) for o in OPTIMIZERS[1:]},
        "root_shape_table": sorted(root["shape_schedules"] or ()),
        "root_clip": root["clip_quantile"],
        "muon_parameters": _muon_count(sweep_runs),
        "muon_shapes": sorted({tuple(x) for x in _first(sweep_runs, "Muon")["muon_shapes"]}),
        "sweep": sweep,
        "chosen_lr": chosen,
        "final": {o: _mean_std([r["final"] for r in rs]) for o, rs in runs.items()},
        "seeds": {o: [r["seed"] for r in rs] for o, rs in runs.items()},
        "step_ms": {o: 1e3 * median[o] for o in OPTIMIZERS},
        "step_ms_mean": {o: 1e3 * statistics.fmean(t) for o, t in times.items()},
        "opt_step_ms": {o: _median_ms([t for r in all_runs if r["optimizer"] == o
                                       for t in r["opt_seconds"]]) for o in OPTIMIZERS},
        "timed_steps": {o: len(t) for o, t in times.items()},
        "budget_seconds": budget,
        "equal_time": {"seconds": equal_seconds,
                       "fastest": min(budget, key=budget.get),
                       "loss": {o: _mean_std([_loss_at(r["curve"], equal_seconds / median[o])
                                              for r in rs]) for o, rs in runs.items()}},
        "curves": curves,
    }


def _first(runs: list[dict[str, Any]], optimizer: str) -> dict[str, Any]:
    return next(r for r in runs if r["optimizer"] == optimizer)


def _muon_count(runs: list[dict[str, Any]]) -> int:
    return sum(a * b for a, b in _first(runs, "Muon")["muon_shapes"])


# ------------------------------------------------------------------------------ (b) digits
def digits_split(images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The fixed split: a permutation from a constant seed, the first 1347 for training."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    train, test = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
    return (images[train], labels[train]), (images[test], labels[test])


def torch_muon_refuses(model: nn.Module) -> str:
    """What ``torch.optim.Muon`` says to the conv weights of ``model``."""
    muon = getattr(torch.optim, "Muon", None)
    if muon is None:
        return f"torch {torch.__version__} has no torch.optim.Muon"
    weights = [p for p in model.parameters() if p.ndim > 2]
    try:
        muon(weights)
    except (ValueError, TypeError) as error:
        return f"torch.optim.Muon refuses them ({str(error).split(' whereas')[0]})"
    return "torch.optim.Muon accepts them"


@torch.no_grad()
def _classify(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = model(x)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def _train_digits(ctx: Context, train: tuple[torch.Tensor, torch.Tensor],
                  test: tuple[torch.Tensor, torch.Tensor], s: dict[str, Any],
                  jobs: Sequence[tuple[str, float, int]], desc: str) -> list[dict[str, Any]]:
    """Train one CNN per (optimizer, lr, seed) job in one round-robin (as the LM); scored on
    ``test`` after every epoch."""
    x, y = train
    runs = []
    for optimizer, lr, seed in jobs:
        model = DigitsCNN(ctx.generator(300 + seed))
        runs.append({"optimizer": optimizer, "lr": lr, "seed": seed, "model": model,
                     "opt": make_optimizer(optimizer, model, lr),
                     "order": ctx.generator(400 + seed), "seconds": [], "curve": []})
    per_epoch = len(y) // s["batch"]
    for _ in ctx.progress(range(s["epochs"]), desc=desc):
        orders = [torch.randperm(len(y), generator=r["order"]) for r in runs]
        for i in range(per_epoch):
            shift = i % len(runs)
            for r, order in (list(zip(runs, orders))[shift:] + list(zip(runs, orders))[:shift]):
                idx = order[i * s["batch"]:(i + 1) * s["batch"]]
                start = time.perf_counter()
                loss = F.cross_entropy(r["model"](x[idx]), y[idx])
                r["opt"].zero_grad(set_to_none=True)
                loss.backward()
                r["opt"].step()
                r["seconds"].append(time.perf_counter() - start)
        for r in runs:
            r["curve"].append(_classify(r["model"], *test))
    return [{"optimizer": r["optimizer"], "lr": r["lr"], "seed": r["seed"],
             "loss": r["curve"][-1][0], "accuracy": r["curve"][-1][1],
             "curve": r["curve"], "step_seconds": r["seconds"][5:] or r["seconds"],
             "muon_shapes": muon_shapes(r["opt"])} for r in runs]


def _digits(ctx: Context, s: dict[str, Any]) -> dict[str, Any]:
    data = load_digits_data()
    if data is None:
        return {"available": False,
                "reason": "scikit-learn is not installed (pip install scikit-learn)"}
    (x, y), test = digits_split(*data)
    fit = (x[:-DIGITS_VALIDATION], y[:-DIGITS_VALIDATION])
    held = (x[-DIGITS_VALIDATION:], y[-DIGITS_VALIDATION:])
    key = {"sizes": s, "images": len(data[1])}
    sweep_runs = _stage(ctx, "digits-sweep", key, lambda: _train_digits(
        ctx, fit, held, s, [(o, lr, 0) for o in DIGITS_OPTIMIZERS for lr in s["lrs"]],
        "optim (b): digits lr sweep"))
    sweep = {o: [[r["lr"], r["loss"]] for r in sweep_runs if r["optimizer"] == o]
             for o in DIGITS_OPTIMIZERS}
    chosen = _choose(sweep)
    jobs = [(o, chosen[o], seed) for seed in range(s["seeds"]) for o in DIGITS_OPTIMIZERS]
    runs = _stage(ctx, "digits-seeds", {**key, "chosen": chosen}, lambda: _train_digits(
        ctx, (x, y), test, s, jobs, f"optim (b): digits, {len(jobs)} runs"))
    by = {o: [r for r in runs if r["optimizer"] == o] for o in DIGITS_OPTIMIZERS}
    return {
        "available": True, "sizes": s, "images": len(data[1]), "train": len(y),
        "test": len(test[1]), "sweep_train": len(fit[1]), "sweep_validation": len(held[1]),
        "sweep": sweep, "chosen_lr": chosen,
        "accuracy": {o: _mean_std([r["accuracy"] for r in rs]) for o, rs in by.items()},
        "loss": {o: _mean_std([r["loss"] for r in rs]) for o, rs in by.items()},
        "step_ms": {o: _median_ms([t for r in rs for t in r["step_seconds"]])
                    for o, rs in by.items()},
        "curves": {o: {"accuracy": [statistics.fmean(r["curve"][e][1] for r in rs)
                                    for e in range(s["epochs"])],
                       "loss": [statistics.fmean(r["curve"][e][0] for r in rs)
                                for e in range(s["epochs"])]} for o, rs in by.items()},
        "muon_shapes": _first(runs, "Muon")["muon_shapes"],
        "torch_muon": torch_muon_refuses(DigitsCNN(torch.Generator().manual_seed(0))),
    }


# ------------------------------------------------------------------------------ (c) schedules
def schedules() -> dict[str, tuple[str, str, tuple[tuple[float, float, float], ...]]]:
    """``{label: (used by, start, triples)}`` of the schedules compared; which optimizer uses
    each (and from which start) is read from the optimizers' own defaults. The designed one
    has ``polar_schedule``'s default safety factor (named in its label)."""
    safety = inspect.signature(polar_schedule).parameters["safety"].default
    found = {
        "muon": POLAR_PRESETS["muon"],
        "polar_express (first 5)": POLAR_PRESETS["polar_express"][:5],
        "turbo_muon": POLAR_PRESETS["turbo_muon"],
        f"polar_schedule(5, lower={DESIGN_LOWER:g}), safety {safety:g}":
            polar_schedule(5, lower=DESIGN_LOWER),
    }
    model = CharLM(8, 2, 1, 4, torch.Generator().manual_seed(0))
    groups = {o: next(g for g in make_optimizer(o, model, 1e-3).param_groups
                      if g["algorithm"] == "muon") for o in OPTIMIZERS[1:]}
    out = {}
    for label, triples in found.items():
        triples = tuple(tuple(float(x) for x in t) for t in triples)
        users = [(o, g) for o, g in groups.items() if tuple(g["schedule"]) == triples]
        used_by = ", ".join(o + (" (shapes outside its table)" if g["shape_schedules"] else "")
                            for o, g in users) or "—"
        start = ", ".join(sorted({g["precondition"] for _, g in users})) or "—"
        out[label] = (used_by, start, triples)
    return out


def compose(triples: Sequence[Sequence[float]], x: np.ndarray) -> np.ndarray:
    """σ₀ ↦ p_K ∘ ⋯ ∘ p_1 (σ₀), p(σ) = aσ + bσ³ + cσ⁵: what the steps do to a singular value."""
    for a, b, c in triples:
        x2 = x * x
        x = x * (a + x2 * (b + c * x2))
    return x


LIFT = 0.5  # the table's "lifted from" column: the smallest σ₀ beyond which σ_out >= LIFT


def _lifted_from(grid: np.ndarray, mapped: np.ndarray) -> float | None:
    """The smallest grid σ₀ from which every larger grid point maps to at least LIFT."""
    below = np.flatnonzero(mapped < LIFT)
    if len(below) == 0:
        return float(grid[0])
    return float(grid[below[-1] + 1]) if below[-1] + 1 < len(grid) else None


def _schedule_maps(points: int = 4001) -> dict[str, Any]:
    grid = np.logspace(-4, 0, points)
    inside = grid >= DESIGN_LOWER
    out = {}
    for label, (used_by, start, triples) in schedules().items():
        band = polar_band(triples, lower=DESIGN_LOWER)
        mapped = compose(triples, grid)
        out[label] = {
            "used_by": used_by, "start": start, "steps": len(triples),
            "band": {"min": band.min, "max": band.max, "error": band.error},
            "grid_min": float(mapped[inside].min()), "grid_max": float(mapped[inside].max()),
            "at_1e-4": float(mapped[0]), "sigma_out": mapped.tolist(),
            "lifted_from": _lifted_from(grid, mapped),
        }
    return {"sigma_in": grid.tolist(), "maps": out, "lower": DESIGN_LOWER}


# ------------------------------------------------------------------------------ figures
def _figures(ctx: Context, lm: dict[str, Any], digits: dict[str, Any],
             maps: dict[str, Any]) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    names = []
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    seeds = len(next(iter(lm["seeds"].values())))
    for i, (name, c) in enumerate(lm["curves"].items()):
        label = f"{name} (lr {lm['chosen_lr'][name]:g})"
        axes[0].plot(c["step"], c["loss"], color=f"C{i}", label=label)
        axes[1].plot(c["seconds"], c["loss"], color=f"C{i}", label=label)
        rows = lm["sweep"][name]
        axes[2].semilogx([lr for lr, _ in rows],
                         [v if v is not None else np.nan for _, v in rows],
                         marker="o", color=f"C{i}", label=name)
    axes[1].axvline(lm["equal_time"]["seconds"], color="gray", ls=":", lw=1,
                    label=f"equal time ({lm['equal_time']['seconds']:.1f} s)")
    # From the lowest loss to the highest at the second evaluation (the first is the
    # untrained model's, far above everything after).
    trained = [v for c in lm["curves"].values() for v in c["loss"][1:] if _finite(v)]
    early = [c["loss"][1] for c in lm["curves"].values() if len(c["loss"]) > 1
             and _finite(c["loss"][1])]
    for ax in axes[:2]:
        if trained and early and max(early) > min(trained):
            low, high = min(trained), max(early)
            ax.set_ylim(low - 0.05 * (high - low), high)
        ax.set_ylabel("validation loss (nats/byte)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set(title=f"(a) held-out loss vs step (mean of {seeds} seed(s))", xlabel="step")
    axes[1].set(title="(a) held-out loss vs training time",
                xlabel="seconds (steps × median interleaved step)")
    axes[2].set(title="(a) lr sweep, seed 0: final held-out loss", xlabel="lr",
                ylabel="validation loss")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3, which="both")
    names.append(save_figure(ctx, fig, "optim_lm.png"))

    if digits.get("available"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, (name, c) in enumerate(digits["curves"].items()):
            epochs = range(1, len(c["accuracy"]) + 1)
            label = f"{name} (lr {digits['chosen_lr'][name]:g})"
            axes[0].plot(epochs, c["accuracy"], marker="o", color=f"C{i}", label=label)
            axes[1].semilogy(epochs, c["loss"], marker="o", color=f"C{i}", label=label)
        for ax in axes:
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0].set(title="(b) digits: test accuracy (mean of seeds)", xlabel="epoch",
                    ylabel="accuracy")
        axes[1].set(title="(b) digits: test loss (mean of seeds)", xlabel="epoch",
                    ylabel="cross-entropy")
        for ax in axes:
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, which="both")
        names.append(save_figure(ctx, fig, "optim_digits.png"))

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (label, m) in enumerate(maps["maps"].items()):
        b = m["band"]
        ax.semilogx(maps["sigma_in"], m["sigma_out"], color=f"C{i}",
                    label=f"{label}, {m['steps']} steps: [{b['min']:.3f}, {b['max']:.3f}]")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axvline(maps["lower"], color="gray", ls=":", lw=1,
               label=f"σ₀ = {maps['lower']:g} (bands over [{maps['lower']:g}, 1])")
    ax.set(xlabel="σ_in (singular value after the start's scaling)", ylabel="σ_out",
           title="(c) Newton–Schulz singular-value map of each schedule", xlim=(1e-4, 1))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    names.append(save_figure(ctx, fig, "optim_schedules.png"))
    return names


# ------------------------------------------------------------------------------ tables
def _sweep_cell(rows: list[list[float]]) -> str:
    return ", ".join(f"{lr:g}: " + (f"{v:.3f}" if _finite(v) else "diverged")
                     for lr, v in rows)


def lm_table(lm: dict[str, Any]) -> str:
    eq = lm["equal_time"]
    seeds = len(next(iter(lm["seeds"].values())))
    return markdown_table(
        ["optimizer", "lr sweep (seed 0: final loss)", "chosen lr",
         f"final val loss ({seeds} seed{'s' if seeds > 1 else ''})",
         f"val loss at {eq['seconds']:.1f} s", "step ms (median)", "optimizer.step ms"],
        [[o, _sweep_cell(lm["sweep"][o]), f"{lm['chosen_lr'][o]:g}", _pm(lm["final"][o]),
          _pm(eq["loss"][o]), f"{lm['step_ms'][o]:.1f}", f"{lm['opt_step_ms'][o]:.2f}"]
         for o in lm["final"]])


def digits_table(d: dict[str, Any]) -> str:
    seeds = d["sizes"]["seeds"]
    return markdown_table(
        ["optimizer", "lr sweep (validation loss)", "chosen lr",
         f"test accuracy ({seeds} seeds)", "test loss", "step ms (median)"],
        [[o, _sweep_cell(d["sweep"][o]), f"{d['chosen_lr'][o]:g}", _pm(d["accuracy"][o], 4),
          _pm(d["loss"][o], 4), f"{d['step_ms'][o]:.2f}"] for o in d["accuracy"]])


def schedule_table(maps: dict[str, Any]) -> str:
    lower = maps["lower"]
    return markdown_table(
        ["schedule", "used by", "start", "steps", f"band min on [{lower:g}, 1]", "band max",
         "worst abs(σ − 1)", "σ_out at σ₀ = 1e-4", f"σ_out >= {LIFT:g} from σ₀ ="],
        [[label, m["used_by"], m["start"], m["steps"], f"{m['band']['min']:.4f}",
          f"{m['band']['max']:.4f}", f"{m['band']['error']:.4f}", f"{m['at_1e-4']:.2e}",
          "never" if m["lifted_from"] is None else f"{m['lifted_from']:.2e}"]
         for label, m in maps["maps"].items()])


def summary_table(results: dict[str, Any]) -> str:
    lm, d = results["lm"], results["digits"]
    rows = []
    for o in OPTIMIZERS:
        acc = (_pm(d["accuracy"][o], 4) if d.get("available") and o in d["accuracy"]
               else "—")
        rows.append([o, _pm(lm["final"][o]), f"{lm['step_ms'][o]:.1f}", acc])
    return markdown_table(["optimizer", "char-LM val loss", "LM step ms", "digits test acc"],
                          rows)


# ------------------------------------------------------------------------------ findings
def _finite(value: float | None) -> bool:
    """False for NaN in memory and null once stored in results.json."""
    return value is not None and math.isfinite(value)


def _spread(entry: dict[str, Any]) -> float | None:
    return entry["std"] if _finite(entry["std"]) else None


def _versus(name: str, entry: dict[str, Any], base: dict[str, Any], what: str,
            lower_is_better: bool, digits: int = 3) -> str:
    """How ``entry`` compares with ``base`` (AdamW), against the seeds' spread."""
    if not (_finite(entry["mean"]) and _finite(base["mean"])):
        return f"{name}: {what} not finite for " + (
            "AdamW" if _finite(entry["mean"]) else name)
    diff = entry["mean"] - base["mean"]
    better = diff < 0 if lower_is_better else diff > 0
    text = (f"{name}: {what} {entry['mean']:.{digits}f} against AdamW's "
            f"{base['mean']:.{digits}f} ({'better' if better else 'worse'} by "
            f"{abs(diff):.{digits}f}")
    a, b = _spread(entry), _spread(base)
    if a is None or b is None:
        return text + "; one seed, no spread measured)"
    inside = abs(diff) <= a + b
    return text + (f", {'within' if inside else 'more than'} the sum of the two seed "
                   f"standard deviations, {a + b:.{digits}f})")


def _edges(sweep: dict[str, list[list[float]]], chosen: dict[str, float]) -> str:
    out = []
    for o, rows in sweep.items():
        lrs = [lr for lr, _ in rows]
        if len(lrs) > 1 and chosen[o] in (min(lrs), max(lrs)):
            end = "largest" if chosen[o] == max(lrs) else "smallest"
            out.append(f"{o}'s chosen lr {chosen[o]:g} is the {end} of its sweep")
    if not out:
        return "Every chosen lr is inside its sweep."
    return ("; ".join(out) + ": a value beyond it might do better, and the comparison "
            "is only as good as the sweep.")


def lm_findings(lm: dict[str, Any]) -> list[str]:
    final, eq = lm["final"], lm["equal_time"]
    ranked = sorted((o for o in final if _finite(final[o]["mean"])),
                    key=lambda o: final[o]["mean"])
    text = [f"Ranked by final validation loss: {' < '.join(ranked)}."]
    text += [_versus(o, final[o], final["AdamW"], "final loss", True) + "."
             for o in OPTIMIZERS[1:]]
    family = [final[o]["mean"] for o in OPTIMIZERS[1:] if _finite(final[o]["mean"])]
    if len(family) > 1:
        text.append(f"The Muon family's final losses span {max(family) - min(family):.3f} "
                    f"({min(family):.3f} to {max(family):.3f}).")
    text.append(_edges(lm["sweep"], lm["chosen_lr"]))
    base = lm["step_ms"]["AdamW"]
    text.append("Median training step (forward, backward, optimizer; all runs interleaved "
                "step by step): " + ", ".join(
                    f"{o} {lm['step_ms'][o]:.1f} ms ({lm['step_ms'][o] / base:.2f}× AdamW)"
                    for o in OPTIMIZERS)
                + "; of which optimizer.step: " + ", ".join(
                    f"{o} {lm['opt_step_ms'][o]:.2f} ms" for o in OPTIMIZERS) + ".")
    at = sorted((o for o in eq["loss"] if _finite(eq["loss"][o]["mean"])),
                key=lambda o: eq["loss"][o]["mean"])
    text.append(f"At equal wall-clock — {eq['seconds']:.1f} s of training, the budget of "
                f"the fastest ({eq['fastest']}), with time taken as steps × each optimizer's "
                "median step and losses interpolated between evaluations — the order is "
                f"{' < '.join(at)}"
                + (" (the same as at equal steps)." if at == ranked
                   else " (not the order at equal steps)."))
    mean = lm.get("step_ms_mean", {})
    stalled = [o for o in mean if mean[o] > 1.2 * lm["step_ms"][o]]
    if stalled:
        text.append("Mean steps exceeded medians ("
                    + ", ".join(f"{o} {mean[o]:.1f} against {lm['step_ms'][o]:.1f} ms"
                                for o in stalled)
                    + "): some steps stalled, which is why time is counted in median steps.")
    return text


def digits_findings(d: dict[str, Any]) -> list[str]:
    acc, loss, ms = d["accuracy"], d["loss"], d["step_ms"]
    return [_versus("Muon", acc["Muon"], acc["AdamW"], "test accuracy", False, 4) + ".",
            _versus("Muon", loss["Muon"], loss["AdamW"], "test loss", True, 4) + ".",
            _edges(d["sweep"], d["chosen_lr"]),
            f"Median step: Muon {ms['Muon']:.2f} ms, AdamW {ms['AdamW']:.2f} ms "
            f"({ms['Muon'] / ms['AdamW']:.2f}×)."]


def schedule_findings(maps: dict[str, Any]) -> list[str]:
    m = maps["maps"]
    best = min(m, key=lambda k: m[k]["band"]["error"])
    worst = max(m, key=lambda k: m[k]["band"]["error"])
    slack = max(max(v["grid_max"] - v["band"]["max"], v["band"]["min"] - v["grid_min"])
                for v in m.values())
    return [
        f"On [{maps['lower']:g}, 1] the smallest worst-case |σ − 1| is {best}'s "
        f"({m[best]['band']['error']:.4f}), the largest {worst}'s "
        f"({m[worst]['band']['error']:.4f}).",
        f"Check: on {len(maps['sigma_in'])} log-spaced σ₀ the composed polynomials stay "
        f"inside the exact bands from polar_band (largest excursion {slack:.1e}"
        + (", i.e. none)." if slack <= 1e-12 else ").")]


def root_note(lm: dict[str, Any]) -> str:
    table = [tuple(k) for k in lm["root_shape_table"]]
    hits = [s for s in lm["muon_shapes"] if (min(s), max(s)) in table]
    if hits:
        return (f"Root used its per-shape triples for {len(hits)} of the "
                f"{len(lm['muon_shapes'])} matrix shapes here.")
    sides = sorted({min(k) for k in table})
    return (f"None of this model's {len(lm['muon_shapes'])} matrix shapes is in Root's "
            f"per-shape table ({len(table)} entries, smaller dimension {sides}), so Root "
            "ran Muon's triple here; what set it apart from Muon was the "
            f"{lm['root_clip']:g}-quantile clipping and float32 iteration.")


# ------------------------------------------------------------------------------ run
def run(ctx: Context) -> Section:
    sizes = _sizes(ctx.quick)
    corpus = load_corpus()
    lm = _language_model(ctx, corpus, sizes["lm"])
    digits = _digits(ctx, sizes["digits"])
    maps = _schedule_maps()
    figures = _figures(ctx, lm, digits, maps)
    results = {
        "corpus": {"python": ".".join(map(str, sys.version_info[:3])),
                   "files": list(corpus.files), "missing": list(corpus.missing),
                   "bytes": len(corpus.data), "train_bytes": corpus.split,
                   "validation_bytes": len(corpus.data) - corpus.split,
                   "sha256_12": corpus.sha256},
        "lm": lm,
        "digits": digits,
        # The maps themselves are in the figure; results keep each schedule's numbers.
        "schedules": {label: {k: v for k, v in m.items() if k != "sigma_out"}
                      for label, m in maps["maps"].items()},
    }
    parts = (_lm_text(results["corpus"], lm, sizes["lm"]) + _digits_text(digits)
             + _schedule_text(maps))
    return Section(title="Muon-family optimizers (optim)", markdown="\n".join(parts),
                   results=results, figures=tuple(figures),
                   summary_table=summary_table(results))


def _lm_text(c: dict[str, Any], lm: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """Part (a) of the report: the language model's setup, table and findings."""
    missing = (f" Not in this Python, skipped: {', '.join(c['missing'])}." if c["missing"]
               else "")
    shapes = ", ".join(f"{a}×{b}" for a, b in lm["muon_shapes"])
    seeds = s["seeds"]
    return [
        f"**(a) Character-level language model on real text.** The corpus is the source of "
        f"{len(c['files'])} modules of this Python's ({c['python']}) standard library "
        f"({', '.join(c['files'])}), concatenated in that order: {c['bytes']:,} bytes, "
        f"SHA-256 {c['sha256_12']}… (it differs between Python versions).{missing} Byte-level "
        f"(vocabulary 256); the last {100 * VALIDATION_FRACTION:.0f} % "
        f"({c['validation_bytes']:,} bytes) is held out. Model: a pre-norm causal transformer, "
        f"{s['layers']} layers, d = {s['d_model']}, {s['heads']} heads, context "
        f"{s['context']}, {lm['parameters']:,} parameters, float32. Every optimizer gets "
        f"{s['steps']} steps of batch {s['batch']}, linear warm-up over {s['warmup']} steps "
        "then cosine decay to 10 %, weight decay "
        f"{WEIGHT_DECAY:g} and betas {BETAS} (AdamW's, and those of the AdamW group of the "
        "Muon family). Muon family: embeddings and the output head in an explicit AdamW "
        f"group; the other matrices ({lm['muon_parameters']:,} parameters; shapes {shapes}) "
        "orthogonalized, `adjust_lr=\"match_rms_adamw\"` so one lr serves both groups; "
        "each optimizer's defaults otherwise (" + "; ".join(
            f"{o}: {v}" for o, v in lm["settings"].items()) + "). The lr is chosen "
        "per optimizer on seed 0 by the final held-out loss from the values in the sweep "
        "column (there is no separate test split: the reported loss is on the split the lr "
        f"was chosen on), then {seeds} seed(s) at that lr (a seed fixes the initialization "
        "and the batches, the same for every optimizer). Every evaluation uses the same "
        f"{lm['eval_windows']} non-overlapping held-out windows ({lm['eval_bytes']:,} bytes) "
        "spread evenly over the held-out split.",
        "", lm_table(lm), "",
        " ".join(lm_findings(lm)) + " " + root_note(lm),
        "",
    ]


def _digits_text(digits: dict[str, Any]) -> list[str]:
    """Part (b) of the report: orthogonalized convolutions on the digits, or why skipped."""
    if digits["available"]:
        d = digits
        dshapes = ", ".join(f"{a}×{b}" for a, b in d["muon_shapes"])
        return [
            f"**(b) Orthogonalized convolutions on real digits.** scikit-learn's "
            f"{d['images']} 8×8 handwritten digits, a fixed split of {d['train']} training "
            f"and {d['test']} test images. A CNN of three 3×3 convolutions; Muon "
            f"orthogonalizes the conv weights as (out, in·3·3) matrices ({dshapes}) — "
            f"{d['torch_muon']} — and runs AdamW on the head and biases. The lr is chosen "
            f"per optimizer on seed 0 by validation loss (trained on {d['sweep_train']} "
            f"training images, scored on the other {d['sweep_validation']}), then "
            f"{d['sizes']['seeds']} seeds train on all {d['train']} for "
            f"{d['sizes']['epochs']} epochs of batch {d['sizes']['batch']} and are scored "
            "on the test images.",
            "", digits_table(d), "", " ".join(digits_findings(d)), ""]
    return [f"**(b) Orthogonalized convolutions on real digits** skipped: "
            f"{digits['reason']}.", ""]


def _schedule_text(maps: dict[str, Any]) -> list[str]:
    """Part (c) of the report: the Newton–Schulz schedules' maps."""
    return [
        "**(c) Newton–Schulz schedules.** Each step maps a singular value by "
        "p(σ) = aσ + bσ³ + cσ⁵; the figure shows the composition over σ₀ ∈ [1e-4, 1] (σ₀: "
        "after the start's scaling, Frobenius or AOL), the table the exact image of "
        f"[{maps['lower']:g}, 1] from `polar_band` and, on a grid of "
        f"{len(maps['sigma_in'])} log-spaced σ₀, the smallest σ₀ from which every larger one "
        f"comes out at least {LIFT:g}.",
        "", schedule_table(maps), "", " ".join(schedule_findings(maps)), ""]


def readme(results: dict[str, Any], mode: str) -> str:
    """The README block: the three tables of the run, from its stored results."""
    command = "diffnum reproduce optim" + (" --quick" if mode == "quick" else "")
    c, lm, d = results["corpus"], results["lm"], results["digits"]
    s = lm["sizes"]
    lines = [
        f"**Muon-family optimizers** (`{command}`, seed 0) — (a) a {s['layers']}-layer "
        f"byte-level transformer on {c['bytes']:,} bytes of Python {c['python']}'s standard "
        f"library source (SHA-256 {c['sha256_12']}…), {s['steps']} steps each, lr from a "
        "sweep:", "", lm_table(lm), "", " ".join(lm_findings(lm)), ""]
    if d.get("available"):
        lines += ["(b) A CNN on scikit-learn's 8×8 digits, conv weights orthogonalized by "
                  "Muon as (out, in·k·k) matrices:", "", digits_table(d), ""]
    else:
        lines += [f"(b) Digits skipped: {d['reason']}.", ""]
    lines += ["(c) Newton–Schulz schedules, exact band of σ₀ ∈ "
              f"[{DESIGN_LOWER:g}, 1]:", "", schedule_table({"lower": DESIGN_LOWER,
                                                             "maps": results["schedules"]})]
    return "\n".join(lines)


EXPERIMENT = Experiment(name="optim", title="Muon-family optimizers", run=run, order=40,
                        readme=readme)
