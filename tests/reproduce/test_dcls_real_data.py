"""Part (d) of the DCLS experiment: the digits-on-a-canvas data, the iso-parameter models
and the table / findings renderer (on fake results)."""

import math

import pytest
import torch

import diffnum.interp as interp
from diffnum.reproduce.experiments import dcls


def _fake_images(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 8, 8, generator=g) + 0.1  # every digit pixel nonzero
    return images, torch.arange(n) % 10


def test_canvas_data_shapes_placement_and_determinism():
    images, labels = _fake_images()
    train, test, offsets = dcls.canvas_digits(images, labels, torch.Generator().manual_seed(3),
                                              n_train=15)
    assert train[0].shape == (15, 1, 32, 32) and test[0].shape == (5, 1, 32, 32)
    assert train[1].shape == (15,) and test[1].shape == (5,)
    assert offsets.shape == (20, 2) and int(offsets.min()) >= 0 and int(offsets.max()) <= 16
    # every digit lands whole inside the canvas: its 16×16 upsampled pixels, zeros elsewhere
    full, _, _ = dcls.canvas_digits(images, labels, torch.Generator().manual_seed(3),
                                    n_train=20)
    order = torch.randperm(20, generator=_after_offsets(3, 20))
    for k, i in enumerate(order.tolist()):
        r, c = offsets[i].tolist()
        canvas = full[0][k, 0]
        big = images[i, 0].repeat_interleave(2, 0).repeat_interleave(2, 1)
        assert torch.equal(canvas[r:r + 16, c:c + 16], big)
        assert float(canvas.sum()) == pytest.approx(float(big.sum()), rel=1e-6)
    assert sorted(train[1].tolist() + test[1].tolist()) == sorted(labels.tolist())
    again = dcls.canvas_digits(images, labels, torch.Generator().manual_seed(3), n_train=15)
    assert torch.equal(again[0][0], train[0]) and torch.equal(again[1][1], test[1])
    other = dcls.canvas_digits(images, labels, torch.Generator().manual_seed(4), n_train=15)
    assert not torch.equal(other[2], offsets)


def _after_offsets(seed: int, n: int) -> torch.Generator:
    """The builder's generator state after drawing the offsets (the split comes next)."""
    g = torch.Generator().manual_seed(seed)
    torch.randint(0, 17, (n,), generator=g)
    torch.randint(0, 17, (n,), generator=g)
    return g


def test_canvas_data_rejects_a_digit_larger_than_the_canvas():
    images, labels = _fake_images()
    with pytest.raises(ValueError, match="does not fit"):
        dcls.canvas_digits(images, labels, torch.Generator(), canvas=12)


@pytest.mark.parametrize("name", list(dcls.canvas_models()))
def test_models_are_iso_parameter_and_keep_the_shape(name):
    spec = dcls.canvas_models()[name]
    torch.manual_seed(0)
    model = dcls.CanvasNet(spec, channels=4)
    for conv in model.depthwise():
        per_kernel = conv.weight[0].numel()  # one channel's kernel (depthwise: 1 input)
        assert per_kernel == dcls.CANVAS_TAPS == 9
        assert conv.weight.shape[0] == 4
        if spec["kind"] == "dcls":
            assert isinstance(conv, interp.Dcls2d) and conv.dilated_kernel_size == (7, 7)
            assert conv.position_init == spec["init"] and conv.version == spec["version"]
            assert conv.P.shape == (2, 4, 1, 9)
    x = torch.rand(3, 1, 32, 32)
    assert model(x).shape == (3, 10)


def test_lattice_init_starts_on_the_dilated_taps():
    torch.manual_seed(0)
    conv = dcls.canvas_depthwise(dcls.canvas_models()["DCLS gauss, lattice"], channels=2)
    taps = sorted(map(tuple, conv.P[:, 0, 0].T.tolist()))
    assert taps == sorted((a, b) for a in (-3.0, 0.0, 3.0) for b in (-3.0, 0.0, 3.0))


def test_one_training_run_is_deterministic_per_seed():
    images, labels = _fake_images(40)
    train, test, _ = dcls.canvas_digits(images, labels, torch.Generator().manual_seed(0),
                                        n_train=32)
    spec = dcls.canvas_models()["DCLS gauss, spread"]
    runs = [dcls._canvas_run(spec, 5, train, test, 1, torch.Generator().manual_seed(1))
            for _ in range(2)]
    assert runs[0]["accuracy"] == runs[1]["accuracy"]
    assert runs[0]["tap_movement"] == runs[1]["tap_movement"] > 0
    # The rounded model, as is and fine-tuned, is scored too (deterministically).
    for key in ("accuracy_rounded", "accuracy_rounded_finetuned"):
        assert runs[0][key] == runs[1][key] and 0.0 <= runs[0][key] <= 1.0
    dense = dcls._canvas_run(dcls.canvas_models()["dense 3×3"], 5, train, test, 1,
                             torch.Generator().manual_seed(1))
    assert "accuracy_rounded" not in dense


def _entry(values):
    mean = sum(values) / len(values)
    std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
           if len(values) > 1 else float("nan"))
    return {"values": values, "mean": mean, "std": std}


def _fake_results(seeds: int = 2) -> dict:
    accuracy = {"dense 3×3": 0.5, "dilated 3×3, r=3": 0.6, "DCLS gauss, dcls": 0.62,
                "DCLS gauss, lattice": 0.8, "DCLS gauss, spread": 0.7}
    movement = {"DCLS gauss, dcls": 0.9, "DCLS gauss, lattice": 0.0, "DCLS gauss, spread": 0.3}
    models = {}
    for name, spec in dcls.canvas_models(("gauss",)).items():
        values = [accuracy[name] + 0.01 * k for k in range(seeds)]
        models[name] = {**spec, "weights_per_kernel": 9,
                        "positions_per_kernel": 18 if spec["kind"] == "dcls" else 0,
                        "widths_per_kernel": 18 if spec["kind"] == "dcls" else 0,
                        "accuracy": _entry(values), "epoch_seconds": 1.0,
                        "tap_movement": movement.get(name)}
        if spec["kind"] == "dcls":
            models[name]["accuracy_rounded"] = _entry([v - 0.2 for v in values])
            models[name]["accuracy_rounded_finetuned"] = _entry([v - 0.01 for v in values])
    return {"available": True, "lr": 1e-2, "position_lr_scale": 5.0, "weight_decay": 0.01,
            "epochs": 3, "seeds": seeds, "batch": 32, "channels": 16, "versions": ["gauss"],
            "train": 1347, "test": 450, "models": models}


def test_findings_are_computed_from_the_numbers():
    canvas = _fake_results()
    text = dcls.canvas_findings(canvas)
    assert text.index("DCLS gauss, lattice 0.805") < text.index("DCLS gauss, spread 0.705") \
        < text.index("DCLS gauss, dcls 0.625") < text.index("dilated 3×3, r=3 0.605") \
        < text.index("dense 3×3 0.505")
    assert "DCLS gauss, lattice, is +0.200 against the dilated" in text
    assert "beats it by more than 2 seed std" in text
    assert "'dcls' moved the taps most" in text
    assert "DCLS gauss, lattice did not move at all" in text
    table = dcls.canvas_table(canvas)
    assert ("| DCLS gauss, lattice | 9 | 18 (+18) | 0.805 ± 0.007 | 0.605 ± 0.007 | "
            "0.795 ± 0.007 | 1.00 | 0.000 |") in table
    assert "| dense 3×3 | 9 | 0 | 0.505 ± 0.007 | — | — | 1.00 | — |" in table
    # Rounding: the mean cost over the DCLS models, and what the fine-tune brings back.
    assert "costs 0.200 accuracy on average" in text
    assert "(0.712 → 0.512" in text and "brings it to 0.702" in text


def test_findings_with_one_seed_and_a_losing_dcls():
    canvas = _fake_results(seeds=1)
    for m in canvas["models"].values():
        if m["kind"] == "dcls":
            m["accuracy"] = _entry([0.3])
    text = dcls.canvas_findings(canvas)
    assert "is -0.300 against the dilated" in text and "one seed" in text
    assert "0.300 |" in dcls.canvas_table(canvas) and "±" not in dcls.canvas_table(canvas)


def test_readme_block_includes_part_d_and_tolerates_old_results():
    canvas = _fake_results()
    base = {
        "recovery": {"DCLS v1": {"median_mse": 0.1, "median_kernel_error": 0.2,
                                 "median_targets_hit": 2, "recovered": 1, "runs": 2},
                     "dilated conv (k=3, r=7)": {"median_mse": 0.3, "runs": 1, "recovered": 0,
                                                 "median_kernel_error": 0.8,
                                                 "median_targets_hit": 0}},
        "iso_parameter": {"dilated k=3, r=7": {"weights": 64, "positions": 0,
                                               "test_accuracy": 0.6, "seconds": 1.0},
                          "DCLS v1 m=3, s=15": {"weights": 64, "positions": 48,
                                                "test_accuracy": 0.9, "seconds": 2.0}},
        "delays": {"learned delays": {"test_accuracy": 0.9, "integer_delay_accuracy": 0.85},
                   "zero delays": {"test_accuracy": 0.3}},
    }
    old = dcls.readme(base, "quick")
    assert "canvas" not in old
    block = dcls.readme({**base, "canvas_digits": canvas}, "full")
    assert "(d) real digits on a canvas" in block and "lr 0.01" in block
    assert dcls.canvas_table(canvas) in block and dcls.canvas_findings(canvas) in block
    missing = dcls.readme({**base, "canvas_digits": {"available": False, "reason": "no sklearn",
                                                    "channels": 16}}, "quick")
    assert "Not run: no sklearn." in missing
