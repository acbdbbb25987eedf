"""The options the DCLS experiment's training loops take (optimizer groups, σ schedules) and
the helpers of ``benchmarks/sweep_dcls_defaults.py`` that build its settings."""

import importlib.util
from pathlib import Path

import pytest
import torch

import diffnum.interp as interp
from diffnum.reproduce.experiments import dcls

SWEEP = Path(__file__).resolve().parents[2] / "benchmarks" / "sweep_dcls_defaults.py"


def _canvas_data(n: int = 80, n_train: int = 64):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 8, 8, generator=g) + 0.1
    train, test, _ = dcls.canvas_digits(images, torch.arange(n) % 10,
                                        torch.Generator().manual_seed(0), n_train=n_train)
    return train, test


def test_canvas_run_sets_sigma_before_every_step_across_epochs():
    train, test = _canvas_data()  # 64 training images: 2 batches of 32 per epoch
    seen = []

    def sigma(step: int) -> float:
        seen.append(step)
        return 0.5

    spec = dcls.canvas_models()["DCLS gauss, spread"]
    dcls._canvas_run(spec, 5, train, test, 2, torch.Generator().manual_seed(1), sigma=sigma)
    assert seen == [0, 1, 2, 3]  # one call per step, counting on across the epochs


def test_canvas_run_trains_with_the_groups_it_is_given():
    train, test = _canvas_data()
    spec = dcls.canvas_models()["DCLS v1, spread"]

    def frozen_positions(model):
        positions = [layer.P for layer in interp.dcls_layers(model)]
        ids = {id(p) for p in positions}
        return [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": 1e-2},
                {"params": positions, "lr": 0.0}]

    frozen = dcls._canvas_run(spec, 5, train, test, 1, torch.Generator().manual_seed(1),
                              groups=frozen_positions)
    default = dcls._canvas_run(spec, 5, train, test, 1, torch.Generator().manual_seed(1))
    assert frozen["tap_movement"] == 0.0 < default["tap_movement"]


def test_train_delays_follows_the_schedule_and_rounding_gives_integer_delays():
    data = dcls._delay_data(128, torch.Generator().manual_seed(0))  # 2 batches of 64
    model = dcls._snn_model(False, 0)
    seen = []

    def sigma(step: int) -> float:
        seen.append(step)
        return 3.0 - step / 2

    curve = dcls._train_delays(model, data, 2, torch.Generator().manual_seed(1), sigma=sigma)
    assert seen == [0, 1, 2, 3] and len(curve) == 2
    sig = model[0].conv.SIG
    assert torch.allclose(sig, torch.full_like(sig, 1.5 - 0.27)) and not sig.requires_grad
    P = model[0].P.detach()
    assert float((P - P.round()).abs().max()) > 0  # real delays so far
    out = dcls._round_delays(model, data, torch.Generator().manual_seed(2))
    assert set(out) == {"integer_delay_accuracy", "integer_delay_finetuned_accuracy"}
    assert torch.equal(model[0].P, model[0].P.round())
    assert model[0].conv.integer_taps is not None


def test_train_delays_scales_the_position_rate():
    data = dcls._delay_data(64, torch.Generator().manual_seed(0))
    moved = []
    for scale in (1e-6, 50.0):
        model = dcls._snn_model(False, 0)
        start = model[0].P.detach().clone()
        dcls._train_delays(model, data, 1, torch.Generator().manual_seed(1),
                           position_lr_scale=scale)
        moved.append(float((model[0].P.detach() - start).abs().max()))
    assert moved[0] < 1e-5 < moved[1]


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_dcls_defaults", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_groups_decay_only_the_positions(sweep):
    model = dcls.CanvasNet(dcls.canvas_models()["DCLS gauss, spread"], channels=4)
    groups = sweep._groups(25.0, 0.01)(model)
    weights, positions, widths = groups
    layers = interp.dcls_layers(model)
    assert {id(p) for p in positions["params"]} == {id(layer.P) for layer in layers}
    assert {id(p) for p in widths["params"]} == {id(layer.SIG) for layer in layers}
    assert positions["weight_decay"] == 0.01 and widths["weight_decay"] == 0.0
    assert weights["weight_decay"] == dcls.CANVAS_WEIGHT_DECAY
    assert positions["lr"] == widths["lr"] == pytest.approx(25 * dcls.CANVAS_LR)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    v1 = dcls.CanvasNet(dcls.canvas_models()["DCLS v1, spread"], channels=4)
    assert len(sweep._groups(1.0, 0.0)(v1)) == 2  # no widths group without widths


def test_sweep_snn_schedules(sweep):
    settings = sweep.snn_settings(400)
    assert len({s["name"] for s in settings}) == len(settings) == 5
    before, thesis, thesis_floor, floor, late = (s["sigma"] for s in settings)
    assert before(0) == dcls.SNN["max_delay"] / 2 and before(100) == 0.5
    assert [s["scale"] for s in settings] == [50.0, 150.0, 150.0, 50.0, 50.0]
    assert thesis(0) == pytest.approx(8.27) and thesis(200) == 0.5
    assert thesis(100) == pytest.approx(8.27 * (0.5 / 8.27) ** 0.5)  # geometric
    assert thesis_floor(0) == pytest.approx(8.27) and thesis_floor(200) == pytest.approx(0.28)
    assert floor(0) == 12.5 and floor(100) == pytest.approx(0.28)
    assert late(299) == 0.5 and late(300) == 0.5 and late(350) == pytest.approx(0.39)
    assert late(400) == pytest.approx(0.28)
    assert [s["end"] for s in settings] == pytest.approx([0.5, 0.5, 0.28, 0.28, 0.28])


def test_sweep_canvas_settings(sweep):
    settings = sweep.canvas_settings(100)
    assert len({s["name"] for s in settings}) == len(settings)
    assert {(s["version"], s["scale"]) for s in settings if s["sigma"] is None
            and s["position_decay"] == 0} == {(v, k) for v in ("gauss", "v1")
                                              for k in (1.0, 5.0, 25.0)}
    scheduled = [s["sigma"] for s in settings if s["sigma"] is not None]
    assert [(f(0), f(50)) for f in scheduled] == pytest.approx([(2.0, 0.5), (2.0, 0.28),
                                                                (0.5, 0.5)])
    assert [s["version"] for s in settings if s["position_decay"] > 0] == ["gauss"]
