"""Orthogonal fine-tuning on real data: a small CNN pretrained on scikit-learn's handwritten
digits 0–4 is adapted to the digits 5–9 by every adapter of :func:`diffnum.orth.adapt` at
near-equal trainable parameter counts, against full fine-tuning and a linear probe; target
accuracy, accuracy kept on 0–4, step time and the change of the adapted layers' neuron
geometry (hyperspherical energy, pairwise angles)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import diffnum
from diffnum._core.files import atomic_write
from diffnum._core.markdown import markdown_table
from diffnum.orth import Adapter, adapt, orthogonality_penalty, trainable_parameters
from diffnum.reproduce._harness import Context, Experiment, Section
from diffnum.reproduce._plot import pyplot, save_figure
from diffnum.reproduce.experiments._digits import load_digits_data

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ settings
SPLIT_SEED = 20_261_202  # the train/test split is fixed, whatever the run's seed
TRAIN_FRACTION = 0.75
VALIDATION_FRACTION = 0.2  # of the target training images, held out for the lr sweep
SOURCE, TARGET = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
ADAPTED = ("conv2", "fc")  # the layers every adapter wraps
ORTHOGONAL = ("oft", "boft", "hra", "goft")
ADDITIVE = ("lora", "pissa", "svft")
# Per adapted layer (conv2: W 32 × 64, fc: W 64 × 128) the options of each method, chosen so
# that the totals are within 5 % of OFT's with block size 8 (672 adapter parameters): SVFT
# banded w = 3 at full rank 32(2·3 + 1) − 12 + 64(2·3 + 1) − 12 = 648, qGOFT's 2×2 blocks
# 4·32 (1 round) + 4·2·64 (2 rounds) = 640.
METHODS: dict[str, dict[str, dict[str, Any]] | None] = {
    "head only": None,
    "full": None,
    "lora": {"conv2": {"r": 3}, "fc": {"r": 2}},
    "pissa": {"conv2": {"r": 3}, "fc": {"r": 2}},
    "svft": {"conv2": {"pattern": "banded", "width": 3}, "fc": {"pattern": "banded", "width": 3}},
    "oft": {"conv2": {"block_size": 8}, "fc": {"block_size": 8}},
    "boft": {"conv2": {"block_size": 2, "factors": 6}, "fc": {"block_size": 2, "factors": 7}},
    "hra": {"conv2": {"r": 2}, "fc": {"r": 4}},
    "goft": {"conv2": {"rounds": 7, "relax": False}, "fc": {"rounds": 7, "relax": False}},
    "qgoft": {"conv2": {"rounds": 1}, "fc": {"rounds": 2}},
}
#: The ``adapt`` method of each entry of ``METHODS`` whose name is not one.
ADAPT_METHOD = {"goft": "qgoft"}
#: λ of qGOFT's soft orthogonality penalty λ Σ⟨α, β⟩² in the loss during the lr sweep; then
#: λ is chosen from ``QGOFT_LAMBDAS`` (the range Ma et al. 2024 used) at qGOFT's chosen lr.
QGOFT_LAMBDA = 0.01
QGOFT_LAMBDAS = (1e-3, 1e-2, 5e-2)
LABELS = {"head only": "head only", "full": "full FT", "lora": "LoRA", "pissa": "PiSSA",
          "svft": "SVFT", "oft": "OFT", "boft": "BOFT", "hra": "HRA", "goft": "GOFT",
          "qgoft": "qGOFT"}
BUDGET_METHOD = "oft"
#: A pairwise-angle change (degrees) up to which a method counts as keeping the neurons'
#: geometry: far above float32 rounding of an exact rotation, far below a learned change.
ANGLE_KEPT = 1e-2


#: How many half-decades the lr sweep may add beyond its grid for a method whose best lr is
#: at an edge (a baseline tuned as well as the method: the report flags an edge it keeps).
LR_EXTENSIONS = 2


def _beyond_edge(rows: list[list[float]]) -> float | None:
    """The next lr of the 1–3 half-decade sequence beyond the sweep's edge when the lowest
    validation loss of ``rows`` ([lr, loss] pairs) sits at that edge, else None.

    Example::

        >>> from diffnum.reproduce.experiments.orth import _beyond_edge
        >>> _beyond_edge([[0.01, 0.5], [0.03, 0.2], [0.1, 0.1]])  # best at the top: go up
        0.3
        >>> _beyond_edge([[0.01, 0.1], [0.03, 0.2]]), _beyond_edge([[0.01, 0.2], [0.03, 0.1],
        ...                                                          [0.1, 0.3]])
        (0.003, None)
    """
    finite = [r for r in rows if _finite(r[1])]
    if len(rows) < 2 or not finite:
        return None
    best = min(finite, key=lambda r: r[1])[0]
    lrs = sorted(r[0] for r in rows)
    if best == lrs[-1]:
        return float(f"{lrs[-1] * (3 if f'{lrs[-1]:.0e}'.startswith('1') else 10 / 3):.0e}")
    if best == lrs[0]:
        return float(f"{lrs[0] / (10 / 3 if f'{lrs[0]:.0e}'.startswith('1') else 3):.0e}")
    return None


def _best(rows: list[list[float]]) -> float:
    """The setting of the lowest finite validation loss among [setting, loss] rows."""
    return min(rows, key=lambda r: (r[1] if _finite(r[1]) else math.inf))[0]


def _lambda_text(r: dict[str, Any]) -> str:
    """How qGOFT's λ was set, from the results."""
    rows = r.get("lambda_sweep") or []
    if not rows:
        return f"λ = {r.get('qgoft_lambda', QGOFT_LAMBDA):g}"
    losses = ", ".join(f"{lam:g}: {loss:.3f}" for lam, loss in rows)
    return (f"λ = {QGOFT_LAMBDA:g} in the lr sweep, then chosen at qGOFT's lr by the same "
            f"validation loss — {losses} — λ = {r['qgoft_lambda']:g}")


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(pretrain_epochs=20, epochs=15, batch=32, lrs=(3e-3, 1e-2, 3e-2, 1e-1),
                    seeds=3)
    return dict(pretrain_epochs=40, epochs=40, batch=32, lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
                seeds=3)


# ------------------------------------------------------------------------------ data, model
def split_digits(images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """The fixed split (a permutation from a constant seed, the first 75 % for training) into
    the source task (digits 0–4) and the target task (5–9, relabelled 0–4)."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    cut = int(TRAIN_FRACTION * len(labels))
    parts = {}
    for task, digits in (("source", SOURCE), ("target", TARGET)):
        for part, idx in (("train", order[:cut]), ("test", order[cut:])):
            x, y = images[idx], labels[idx]
            keep = (y >= digits[0]) & (y <= digits[-1])
            parts[f"{task}_{part}"] = (x[keep], y[keep] - digits[0])
    return parts


class DigitsNet(nn.Module):
    """conv 3×3 (1→16) + ReLU + 2×2 max-pool, conv 2×2 stride 2 (16→32) + ReLU, linear
    128→64 + ReLU, linear head 64→5. The two adapted layers have power-of-two input sizes
    (64 = 16·2·2 and 128), which BOFT's butterfly needs."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 2, stride=2)
        self.fc = nn.Linear(128, 64)
        self.head = nn.Linear(64, len(SOURCE))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    _init_layer(m, generator)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x)).flatten(1)
        return F.relu(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _init_layer(m: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialization, drawn from ``generator``."""
    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(m.weight[0].numel())
    nn.init.uniform_(m.bias, -bound, bound, generator=generator)


# ------------------------------------------------------------------------------ geometry
def _matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's (adapted) weight as the matrix (out, in·k…), float64, detached."""
    weight = layer.adapted_weight() if isinstance(layer, Adapter) else layer.weight
    return weight.detach().reshape(weight.shape[0], -1).double()


def hyperspherical_energy(W: torch.Tensor) -> float:
    """Σ_{i≠j} 1/‖ŵ_i − ŵ_j‖ over the unit-normalized rows ŵ_i (the neurons) of W (out, d):
    the hyperspherical energy that OFT keeps unchanged."""
    U = W / torch.linalg.vector_norm(W, dim=1, keepdim=True)
    distances = torch.cdist(U, U)
    off = ~torch.eye(len(U), dtype=torch.bool)
    return float((1 / distances[off]).sum())


def neuron_angles(W: torch.Tensor) -> torch.Tensor:
    """The pairwise angles (degrees) between the rows of W, i < j."""
    U = W / torch.linalg.vector_norm(W, dim=1, keepdim=True)
    i, j = torch.triu_indices(len(U), len(U), 1)
    return torch.rad2deg(torch.arccos((U[i] * U[j]).sum(1).clamp(-1, 1)))


def geometry_change(before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """Relative change of the hyperspherical energy and the largest change of a pairwise
    neuron angle (degrees) from ``before`` to ``after``."""
    e0, e1 = hyperspherical_energy(before), hyperspherical_energy(after)
    return {"energy_change": abs(e1 - e0) / e0,
            "angle_change": float((neuron_angles(after) - neuron_angles(before)).abs().max())}


# ------------------------------------------------------------------------------ checkpoints
def _key_hash(key: dict[str, Any]) -> str:
    text = json.dumps({**key, "version": diffnum.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _stage(ctx: Context, name: str, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()`` saved as a JSON checkpoint named by ``key``'s hash; ``--resume`` reuses a
    checkpoint of the same key."""
    mode = "quick" if ctx.quick else "full"
    path = ctx.checkpoint_path(f"orth-{name}-{mode}-seed{ctx.seed}-{_key_hash(key)}.json")
    if ctx.resume and path.exists():
        try:
            return json.loads(path.read_text())["value"]
        except (OSError, ValueError, KeyError):
            logger.info("checkpoint %s is unreadable; recomputing", path)
    value = compute()
    text = json.dumps({"value": value})
    atomic_write(path, lambda f: f.write(text.encode()))
    return json.loads(text)["value"]


def _pretrained(ctx: Context, parts: dict[str, Any], s: dict[str, Any], seed: int,
                key: dict[str, Any]) -> tuple[DigitsNet, float]:
    """The CNN trained on the source task for ``seed`` and its source test accuracy; the
    weights are a checkpoint that ``--resume`` reuses."""
    mode = "quick" if ctx.quick else "full"
    key = {**key, "pretrain_epochs": s["pretrain_epochs"], "batch": s["batch"], "seed": seed}
    path = ctx.checkpoint_path(f"orth-pretrain-{mode}-seed{ctx.seed}-{_key_hash(key)}.pt")
    model = DigitsNet(ctx.generator(100 + seed))
    if ctx.resume and path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model, _accuracy(model, *parts["source_test"])
        except (OSError, RuntimeError, ValueError):
            logger.info("checkpoint %s is unreadable; pretraining again", path)
    x, y = parts["source_train"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = ctx.generator(200 + seed)
    for _ in range(s["pretrain_epochs"]):
        for idx in torch.randperm(len(y), generator=order).split(s["batch"]):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return model, _accuracy(model, *parts["source_test"])


# ------------------------------------------------------------------------------ adaptation
@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def prepare(pretrained: DigitsNet, method: str, head_generator: torch.Generator,
            seed: int) -> DigitsNet:
    """A copy of ``pretrained`` with a fresh target head (drawn from ``head_generator``, the
    same for every method of a seed) and ``method``'s trainable parameters: the head alone
    (``"head only"``), everything (``"full"``), or the head and adapters on ``ADAPTED``.
    ``seed`` seeds torch's generator for HRA's start vectors (restored afterwards)."""
    model = copy.deepcopy(pretrained)
    model.head = nn.Linear(64, len(TARGET))
    with torch.no_grad():
        _init_layer(model.head, head_generator)
    options = METHODS[method]
    if method == "full":
        model.requires_grad_(True)
        return model
    model.requires_grad_(False)
    if options is not None:
        with torch.random.fork_rng():  # HRA draws its start vectors from torch's generator
            torch.manual_seed(seed)
            for layer in ADAPTED:
                adapt(model, [layer], ADAPT_METHOD.get(method, method), **options[layer])
        for m in model.modules():  # each adapt() freezes the whole model, earlier adapters too
            if isinstance(m, Adapter):
                m.requires_grad_(False)
                for p in m.parameters(recurse=False):
                    p.requires_grad_(True)
    model.head.requires_grad_(True)
    return model


def adapt_run(pretrained: DigitsNet, method: str, lr: float, seed: int,
              train: tuple[torch.Tensor, torch.Tensor], s: dict[str, Any],
              head_generator: torch.Generator, order: torch.Generator,
              penalty: float = QGOFT_LAMBDA) -> tuple[DigitsNet, list[float]]:
    """Train ``method`` on the target task (Adam, ``lr``; qGOFT adds ``penalty`` times its
    orthogonality penalty to the loss); returns the model (with the new head) and the
    seconds of every step (forward, backward, optimizer step)."""
    model = prepare(pretrained, method, head_generator, seed)
    penalty = penalty if method == "qgoft" else 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    x, y = train
    seconds = []
    for _ in range(s["epochs"]):
        for idx in torch.randperm(len(y), generator=order).split(s["batch"]):
            start = time.perf_counter()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            if penalty:
                loss = loss + penalty * orthogonality_penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seconds.append(time.perf_counter() - start)
    return model, seconds


def evaluate(model: DigitsNet, pretrained: DigitsNet, parts: dict[str, Any]) -> dict[str, Any]:
    """Target test accuracy (new head), source test accuracy kept (the pretrained source head
    on the adapted features) and the geometry change of the adapted layers."""
    source_model = copy.deepcopy(model)
    source_model.head = pretrained.head
    geometry = [geometry_change(_matrix(getattr(pretrained, n)), _matrix(getattr(model, n)))
                for n in ADAPTED]
    return {"target": _accuracy(model, *parts["target_test"]),
            "kept": _accuracy(source_model, *parts["source_test"]),
            "energy_change": max(g["energy_change"] for g in geometry),
            "angle_change": max(g["angle_change"] for g in geometry)}


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(model(x), y))


def parameter_counts(pretrained: DigitsNet) -> dict[str, dict[str, int]]:
    """Trainable parameters of each method: all, and those besides the new head."""
    counts = {}
    for method in METHODS:
        model = prepare(pretrained, method, torch.Generator().manual_seed(0), 0)
        total = trainable_parameters(model)
        counts[method] = {"total": total, "adapter": total - trainable_parameters(model.head)}
    return counts


# ------------------------------------------------------------------------------ helpers
def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    return {"values": list(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan")}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _pm(entry: dict[str, Any], digits: int = 3) -> str:
    if not _finite(entry["std"]):
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def _std(entry: dict[str, Any]) -> float:
    return entry["std"] if _finite(entry["std"]) else 0.0


# ------------------------------------------------------------------------------ experiment
def _hra_seed(ctx: Context, seed: int) -> int:
    """The torch seed of HRA's start vectors for ``seed`` of a run with ``ctx.seed``."""
    return ctx.seed * 1_000_003 + seed


def _experiment(ctx: Context, s: dict[str, Any]) -> dict[str, Any]:
    data = load_digits_data()
    if data is None:
        return {"available": False,
                "reason": "scikit-learn is not installed (pip install scikit-learn)"}
    parts = split_digits(*data)
    key = {"sizes": s, "images": len(data[1]), "split_seed": SPLIT_SEED,
           "methods": {m: o for m, o in METHODS.items()}, "qgoft_lambda": QGOFT_LAMBDA}
    xt, yt = parts["target_train"]
    cut = len(yt) - int(VALIDATION_FRACTION * len(yt))
    fit, held = (xt[:cut], yt[:cut]), (xt[cut:], yt[cut:])

    models = {}
    source_accuracy = []
    for seed in range(s["seeds"]):
        models[seed], acc = _pretrained(ctx, parts, s, seed, key)
        source_accuracy.append(acc)

    def trial(method: str, lr: float) -> list[float]:
        model, _ = adapt_run(models[0], method, lr, _hra_seed(ctx, 0), fit, s,
                             ctx.generator(300), ctx.generator(400))
        return [lr, _loss(model, *held)]

    swept = _stage(ctx, "sweep", {**key, "lr_extensions": LR_EXTENSIONS},
                   lambda: _lr_sweep(ctx, s["lrs"], trial))
    chosen = {m: _best(rows) for m, rows in swept.items()}

    def lambda_sweep() -> list[list[float]]:
        return [[lam, _loss(adapt_run(models[0], "qgoft", chosen["qgoft"], _hra_seed(ctx, 0),
                                      fit, s, ctx.generator(300), ctx.generator(400),
                                      penalty=lam)[0], *held)] for lam in QGOFT_LAMBDAS]

    lambdas = (_stage(ctx, "lambda", {**key, "lr": chosen["qgoft"], "lambdas": QGOFT_LAMBDAS},
                      lambda_sweep) if "qgoft" in METHODS else [])
    penalty = _best(lambdas) if lambdas else QGOFT_LAMBDA

    chosen_key = {**key, "chosen": chosen}
    if penalty != QGOFT_LAMBDA:  # (keeps the key of runs made before λ was swept)
        chosen_key["qgoft_lambda_chosen"] = penalty
    runs = _stage(ctx, "seeds", chosen_key,
                  lambda: _adapt_seeds(ctx, s, models, parts, chosen, penalty))
    counts = parameter_counts(models[0])
    return {
        "available": True, "sizes": s, "images": len(data[1]),
        "threads": torch.get_num_threads(),
        "split": {k: len(v[1]) for k, v in parts.items()},
        "sweep_fit": len(fit[1]), "sweep_validation": len(held[1]),
        "options": {m: o for m, o in METHODS.items() if o is not None},
        "source_accuracy": _mean_std(source_accuracy),
        "sweep": swept, "chosen_lr": chosen, "lambda_sweep": lambdas, "qgoft_lambda": penalty,
        "parameters": counts,
        "budget": counts[BUDGET_METHOD]["adapter"],
        "head_parameters": counts["head only"]["total"],
        **_per_method(runs),
    }


def _lr_sweep(ctx: Context, lrs: Sequence[float], trial: Callable[[str, float], list[float]]
              ) -> dict[str, list[list[float]]]:
    """``trial(method, lr)`` = [lr, validation loss] for every method and lr of ``lrs``, then
    up to LR_EXTENSIONS more lrs beyond an edge of the grid where the best lr lies on it;
    each method's rows sorted by lr."""
    out: dict[str, list[list[float]]] = {}
    jobs = [(m, lr) for m in METHODS for lr in lrs]
    for method, lr in ctx.progress(jobs, desc="orth: lr sweep"):
        out.setdefault(method, []).append(trial(method, lr))
    for method, rows in ctx.progress(list(out.items()), desc="orth: lr sweep edges"):
        for _ in range(LR_EXTENSIONS):
            beyond = _beyond_edge(rows)
            if beyond is None:
                break
            rows.append(trial(method, beyond))
        rows.sort()
    return out


def _adapt_seeds(ctx: Context, s: dict[str, Any], models: dict[int, DigitsNet],
                 parts: dict[str, Any], chosen: dict[str, float], penalty: float
                 ) -> list[dict[str, Any]]:
    """Every method adapted from every seed's pretrained model at its chosen lr (qGOFT with
    ``penalty``), with its evaluation and step times."""
    out = []
    jobs = [(seed, m) for seed in range(s["seeds"]) for m in METHODS]
    for seed, method in ctx.progress(jobs, desc="orth: adaptation"):
        model, seconds = adapt_run(models[seed], method, chosen[method],
                                   _hra_seed(ctx, seed), parts["target_train"], s,
                                   ctx.generator(300 + seed), ctx.generator(400 + seed),
                                   penalty=penalty)
        out.append({"method": method, "seed": seed, "step_seconds": seconds[5:] or seconds,
                    **evaluate(model, models[seed], parts)})
    return out


def _per_method(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Target and kept accuracy (mean, std), largest energy and angle change and median step
    time per method over the seeds' ``runs``."""
    by = {m: [r for r in runs if r["method"] == m] for m in METHODS}
    return {
        "target": {m: _mean_std([r["target"] for r in rs]) for m, rs in by.items()},
        "kept": {m: _mean_std([r["kept"] for r in rs]) for m, rs in by.items()},
        "energy_change": {m: max(r["energy_change"] for r in rs) for m, rs in by.items()},
        "angle_change": {m: max(r["angle_change"] for r in rs) for m, rs in by.items()},
        "step_ms": {m: 1e3 * statistics.median(t for r in rs for t in r["step_seconds"])
                    for m, rs in by.items()},
    }


# ------------------------------------------------------------------------------ report
def results_table(r: dict[str, Any]) -> str:
    seeds = r["sizes"]["seeds"]
    return markdown_table(
        ["method", "trainable (adapters + head)", "lr", f"target acc 5–9 ({seeds} seeds)",
         "kept acc 0–4", "max Δ neuron angle (°)", "rel. Δ energy", "step ms (median)"],
        [[LABELS[m], f"{r['parameters'][m]['adapter']:,} + {r['head_parameters']:,}"
          if m != "head only" else f"0 + {r['head_parameters']:,}",
          f"{r['chosen_lr'][m]:g}", _pm(r["target"][m]), _pm(r["kept"][m]),
          f"{r['angle_change'][m]:.2e}", f"{r['energy_change'][m]:.2e}",
          f"{r['step_ms'][m]:.2f}"] for m in r["target"]])


def _forgetting(target: dict[str, Any], kept: dict[str, Any], base: str) -> list[str]:
    """A sentence per orthogonal adapter on what it keeps of 0–4 against ``base`` (LoRA) and
    at what target accuracy, then how many keep more than LoRA by more than the seed spread."""
    label, methods, text = LABELS, list(target), []
    for m in [m for m in ORTHOGONAL if m in methods]:
        diff = kept[m]["mean"] - kept[base]["mean"]
        spread = _std(kept[m]) + _std(kept[base])
        if abs(diff) <= spread:
            verdict = "within the sum of the two seed standard deviations"
        else:
            verdict = ("less forgetting than LoRA by more than" if diff > 0
                       else "more forgetting than LoRA by more than") + \
                " the sum of the two seed standard deviations"
        tdiff = target[m]["mean"] - target[base]["mean"]
        text.append(f"{label[m]} keeps {kept[m]['mean']:.3f} on 0–4 against LoRA's "
                    f"{kept[base]['mean']:.3f} ({diff:+.3f}; {verdict}, {spread:.3f}), at "
                    f"{tdiff:+.3f} target accuracy.")
    verdicts = [m for m in ORTHOGONAL if m in methods
                and kept[m]["mean"] - kept[base]["mean"] > _std(kept[m]) + _std(kept[base])]
    count = sum(m in methods for m in ORTHOGONAL)
    verb = "keeps" if len(verdicts) == 1 else "keep"
    text.append(f"{len(verdicts)} of the {count} orthogonal adapters {verb} more of 0–4 than "
                "LoRA by more than the seed spread" + (
                    f" ({', '.join(label[m] for m in verdicts)})." if verdicts else "."))
    return text


def findings(r: dict[str, Any]) -> list[str]:
    """The report's sentences, each computed from the stored numbers."""
    target, kept, angle = r["target"], r["kept"], r["angle_change"]
    methods = list(target)
    label = LABELS
    text = []
    ranked = sorted(methods, key=lambda m: -target[m]["mean"])
    text.append("Ranked by target accuracy: " + " > ".join(
        f"{label[m]} {target[m]['mean']:.3f}" for m in ranked) + ".")
    ranked = sorted(methods, key=lambda m: -kept[m]["mean"])
    text.append("Ranked by accuracy kept on 0–4 (the pretrained model had "
                f"{r['source_accuracy']['mean']:.3f}): " + " > ".join(
                    f"{label[m]} {kept[m]['mean']:.3f}" for m in ranked) + ".")
    adapters = [m for m in methods if m in r["options"]]
    counts = [r["parameters"][m]["adapter"] for m in adapters]
    budget = r["budget"]
    text.append(f"Adapter parameters range from {min(counts):,} to {max(counts):,} "
                f"({100 * (min(counts) / budget - 1):+.0f} % to "
                f"{100 * (max(counts) / budget - 1):+.0f} % of OFT's {budget:,}); full "
                f"fine-tuning trains {r['parameters']['full']['adapter']:,} backbone "
                "parameters.")
    base = "lora"
    text += _forgetting(target, kept, base)
    limit = ANGLE_KEPT
    keep = [m for m in methods if angle[m] <= limit and m != "head only"]
    move = [m for m in methods if angle[m] > limit]
    if keep:
        text.append(f"Pairwise neuron angles of the adapted layers stay within {limit:g}° for "
                    + ", ".join(f"{label[m]} ({angle[m]:.1e}°)" for m in keep) + ".")
    if move:
        text.append("They change by more for " + ", ".join(
            f"{label[m]} (up to {angle[m]:.2f}°)" for m in move) + ".")
    base_ms = r["step_ms"][base]
    text.append("Median step time relative to LoRA's "
                f"{base_ms:.2f} ms: " + ", ".join(
                    f"{label[m]} {r['step_ms'][m] / base_ms:.2f}×" for m in methods
                    if m != base) + ".")
    edge = [m for m, rows in r["sweep"].items() if len(rows) > 1
            and r["chosen_lr"][m] in (min(x[0] for x in rows), max(x[0] for x in rows))]
    if edge:
        text.append("The chosen lr is at the edge of its sweep for " + ", ".join(
            label[m] for m in edge) + f" after {LR_EXTENSIONS} extensions: a value beyond it "
                    "might do better.")
    else:
        text.append("Every chosen lr is inside its sweep.")
    return text


def _figure(ctx: Context, r: dict[str, Any]) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in r["target"]:
        t, k = r["target"][m], r["kept"][m]
        marker = ("o" if m in ORTHOGONAL else "s" if m in ADDITIVE
                  else "D" if m == "qgoft" else "^")
        axes[0].errorbar(k["mean"], t["mean"], xerr=_std(k), yerr=_std(t), fmt=marker,
                         capsize=3, label=LABELS[m])
        axes[0].annotate(LABELS[m], (k["mean"], t["mean"]), textcoords="offset points",
                         xytext=(4, 4), fontsize=8)
    axes[0].set(xlabel="accuracy kept on 0–4 (source head)",
                ylabel="target accuracy on 5–9",
                title=f"digits 0–4 → 5–9, mean ± std of {r['sizes']['seeds']} seeds")
    axes[0].legend(fontsize=7, loc="best")
    names = list(r["angle_change"])
    values = [max(r["angle_change"][m], 1e-8) for m in names]
    axes[1].bar([LABELS[m] for m in names], values,
                color=["tab:green" if m in ORTHOGONAL else "tab:gray" for m in names])
    axes[1].set_yscale("log")
    axes[1].axhline(ANGLE_KEPT, color="k", lw=0.8, ls="--")
    axes[1].set(ylabel="max change of a pairwise neuron angle (°)",
                title="adapted layers' neuron geometry (floor 1e-8)")
    axes[1].tick_params(axis="x", rotation=30)
    return [save_figure(ctx, fig, "orth_transfer.png")]


def describe(r: dict[str, Any]) -> str:
    s, n = r["sizes"], r["split"]
    opts = "; ".join(f"{LABELS[m]} " + ", ".join(
        f"{layer} {' '.join(f'{k}={v}' for k, v in o.items())}" for layer, o in lo.items())
        for m, lo in r["options"].items())
    return (
        f"scikit-learn's {r['images']} 8×8 handwritten digits, split once (fixed seed) into "
        f"{100 * TRAIN_FRACTION:.0f} % training and the rest test: source task 0–4 "
        f"({n['source_train']} training, {n['source_test']} test images), target task 5–9 "
        f"({n['target_train']} training, {n['target_test']} test). Per seed a CNN (conv 3×3 "
        "1→16, max-pool, conv 2×2 stride 2 16→32, linear 128→64, linear head 64→5) is "
        f"pretrained on the source task for {s['pretrain_epochs']} epochs (Adam, lr 0.003; "
        f"source test accuracy {_pm(r['source_accuracy'])}). For the target task every method "
        "gets a fresh 5-way head (the same initial head for every method of a seed) that "
        "trains with it; forgetting is measured by putting the pretrained source head back "
        "on the adapted network and scoring the source test images. The adapters wrap conv2 "
        f"(W 32×64) and fc (W 64×128): {opts}; OFT uses exact Cayley blocks, GOFT exact "
        "Givens rotations, qGOFT free 2×2 blocks (quasi-Givens) with λ Σ⟨α, β⟩² added to "
        f"the loss ({_lambda_text(r)}), SVFT a banded M on all singular "
        "vectors (full rank), LoRA α = r. Full fine-tuning trains "
        "every weight, head only trains the head alone. Each method trains "
        f"{s['epochs']} epochs of batch {s['batch']} with Adam at the lr chosen on seed 0 by "
        f"the validation loss (trained on {r['sweep_fit']} of the target training images, "
        f"scored on the other {r['sweep_validation']}) from {list(s['lrs'])} (extended by up "
        f"to {LR_EXTENSIONS} half-decades where the best lr sat at an edge), then "
        f"{s['seeds']} seeds (pretrained model, head, HRA start vectors and batch order) "
        "train on all target training images. Neuron geometry: for each adapted layer, W' "
        "(the adapted weight as a matrix) against the pretrained W, the relative change of "
        "the hyperspherical energy Σ_{i≠j} 1/‖ŵ_i − ŵ_j‖ of the unit rows and the largest "
        "change of a pairwise angle between rows, the larger of the two layers and over "
        "seeds. An orthogonal adapter keeps W'W'ᵀ = W Wᵀ (the neurons' lengths and mutual "
        "angles) but not the layer's outputs W R x, so the source head can still lose "
        "accuracy on the adapted features. Step times are medians of forward + backward + "
        f"Adam step, {r['threads']} thread(s), on a machine possibly shared with other jobs."
    )


def summary_table(r: dict[str, Any]) -> str:
    if not r.get("available"):
        return ""
    return markdown_table(
        ["method", "target acc", "kept acc", "max Δ angle (°)"],
        [[LABELS[m], _pm(r["target"][m]), _pm(r["kept"][m]), f"{r['angle_change'][m]:.1e}"]
         for m in r["target"]])


def run(ctx: Context) -> Section:
    r = _experiment(ctx, _sizes(ctx.quick))
    if not r["available"]:
        return Section(title="Orthogonal fine-tuning (orth)",
                       markdown=f"Skipped: {r['reason']}.", results=r)
    figures = _figure(ctx, r)
    markdown = "\n".join([describe(r), "", results_table(r), "", " ".join(findings(r)), ""])
    return Section(title="Orthogonal fine-tuning (orth)", markdown=markdown, results=r,
                   figures=tuple(figures), summary_table=summary_table(r))


def readme(results: dict[str, Any], mode: str) -> str:
    """The README block, from the stored results."""
    command = "diffnum reproduce orth" + (" --quick" if mode == "quick" else "")
    if not results.get("available"):
        return f"**Orthogonal fine-tuning** (`{command}`) skipped: {results['reason']}."
    s = results["sizes"]
    return "\n".join([
        f"**Orthogonal fine-tuning** (`{command}`, seed 0) — a CNN pretrained on "
        "scikit-learn's digits 0–4, adapted to 5–9 with a fresh head (kept accuracy: the "
        f"source head back on the adapted network), {s['epochs']} epochs, lr from a sweep, "
        f"{s['seeds']} seeds:", "", results_table(results), "",
        " ".join(findings(results))])


EXPERIMENT = Experiment(name="orth", title="Orthogonal fine-tuning", run=run, order=50,
                        readme=readme)
