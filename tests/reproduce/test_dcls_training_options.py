"""The options the DCLS experiment's training loops take (optimizer groups, σ schedules)."""

import torch

import diffnum.interp as interp
from diffnum.reproduce.experiments import dcls


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
