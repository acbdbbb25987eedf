"""Part (e) of the DCLS experiment: the digits read row by row as spike trains, the fixed
random delays, the gain-share arithmetic and a toy-sized end-to-end run."""

import pytest
import torch

from diffnum.reproduce._harness import Context
from diffnum.reproduce.experiments import dcls


def _fake_images(n: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10


def test_row_spikes_shape_determinism_and_a_known_pattern():
    images, _ = _fake_images(5)
    x = dcls.row_spikes(images)
    assert x.shape == (5, 8, 8 * dcls.ROW_STEPS) and x.dtype == images.dtype
    assert torch.equal(x, dcls.row_spikes(images))
    # A known image: the diagonal bright (1.0), one pixel exactly at the threshold, one just
    # below; rows are time, columns are channels, one spike at the first step of each row.
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0].fill_diagonal_(1.0)
    image[0, 0, 2, 5] = 0.5
    image[0, 0, 3, 6] = 0.49
    x = dcls.row_spikes(image, steps_per_row=4)[0]
    expected = torch.zeros(8, 32)
    for r in range(8):
        expected[r, 4 * r] = 1.0  # column r fires when row r starts
    expected[5, 8] = 1.0  # row 2, column 5: at the threshold spikes
    assert torch.equal(x, expected)
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_rows_split_is_fixed_and_complete():
    images, labels = _fake_images()
    a = dcls._rows_data(images, labels, n_train=64)
    b = dcls._rows_data(images, labels, n_train=64)
    assert a[0].shape == (64, 8, 32) and a[2].shape == (16, 8, 32)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert sorted(a[1].tolist() + a[3].tolist()) == sorted(labels.tolist())


def test_fixed_random_delays_stay_frozen_while_the_weights_train():
    images, labels = _fake_images()
    data = dcls._rows_data(images, labels, n_train=64)  # one batch of 64 per epoch
    drawn = dcls.random_delays(torch.Generator().manual_seed(3))
    assert drawn.shape == (64, 8) and torch.equal(drawn, drawn.round())
    assert 0 <= float(drawn.min()) and float(drawn.max()) <= dcls.ROWS_NET["max_delay"] - 1
    assert len(drawn.unique()) > 5  # spread over the range, not one value
    model = dcls._snn_model(False, 0, dcls.ROWS_NET, drawn)
    P = model[0].P.detach().clone()
    weight = model[0].conv.weight.detach().clone()
    assert not model[0].P.requires_grad
    assert torch.allclose(model[0].delays(), drawn)
    dcls._train_delays(model, data, 2, torch.Generator().manual_seed(1))
    assert torch.equal(model[0].P, P) and torch.allclose(model[0].delays(), drawn)
    assert not torch.equal(model[0].conv.weight, weight)  # the weights did train
    sig = model[0].conv.SIG
    assert torch.allclose(sig, torch.zeros_like(sig)) and not sig.requires_grad  # σ = 0.27


def test_gain_share_arithmetic():
    assert dcls.gain_share(0.8, 0.6, 0.75) == pytest.approx(0.75)
    assert dcls.gain_share(0.8, 0.6, 0.5) == pytest.approx(-0.5)
    assert dcls.gain_share(0.6, 0.6, 0.7) is None and dcls.gain_share(0.5, 0.6, 0.7) is None


def test_part_e_end_to_end_at_toy_size(tmp_path):
    ctx = Context(out=tmp_path, quick=True, seed=0, show_progress=False)
    rows = dcls._rows(ctx, epochs=1, seeds=2, n_train=64, data=_fake_images())
    assert rows["available"] and rows["train"] == 64 and rows["test"] == 16
    assert rows["length"] == 32 and list(rows["models"]) == list(dcls.ROWS_MODELS)
    learned = rows["models"]["learned delays"]
    assert set(learned) == {"test_accuracy", "integer_delay_accuracy",
                            "integer_delay_finetuned_accuracy"}
    assert set(rows["models"]["zero delays"]) == {"test_accuracy"}
    assert len(learned["test_accuracy"]["values"]) == 2
    means = [rows["models"][n]["test_accuracy"]["mean"] for n in dcls.ROWS_MODELS]
    assert rows["random_gain_share"] == dcls.gain_share(*means)
    table, text = dcls.rows_table(rows), dcls.rows_findings(rows)
    assert table.count("\n") == 4 and "fixed random delays" in table
    assert f"learned delays {means[0]:.3f}, zero delays {means[1]:.3f}" in text


def test_findings_and_readme_of_part_e_from_fake_numbers():
    def entry(v):
        return {"values": [v - 0.01, v + 0.01], "mean": v, "std": 0.014}

    rows = {"available": True, "epochs": 3, "seeds": 2, "steps_per_row": 4, "threshold": 0.5,
            "lr": 0.01, "position_lr_scale": 50.0, "batch": 64, "n_channels": 8,
            "n_classes": 10, "max_delay": 25, "hidden": 64, "train": 1347, "test": 450,
            "length": 32, "random_gain_share": 0.5,
            "models": {"learned delays": {"test_accuracy": entry(0.9),
                                          "integer_delay_accuracy": entry(0.85),
                                          "integer_delay_finetuned_accuracy": entry(0.88)},
                       "zero delays": {"test_accuracy": entry(0.6)},
                       "fixed random delays": {"test_accuracy": entry(0.75)}}}
    text = dcls.rows_findings(rows)
    assert "gain +0.300 over zero delays" in text and "gain +0.150, i.e. 50% of" in text
    assert "by -0.050 (0.900 → 0.850)" in text and "gives 0.880" in text
    assert "| learned delays | 0.900 ± 0.014 | 0.850 ± 0.014 | 0.880 ± 0.014 |" in \
        dcls.rows_table(rows)
    assert dcls.rows_findings({"available": False, "reason": "no sklearn"}) == \
        "Not run: no sklearn."
    assert dcls._rows_summary(rows)[0][1].endswith("(50%)")


def test_readme_block_includes_part_e_only_when_stored():
    base = {
        "recovery": {"DCLS v1": {"median_mse": 0.1, "median_kernel_error": 0.2,
                                 "median_targets_hit": 2, "recovered": 1, "runs": 2}},
        "iso_parameter": {"DCLS v1 m=3, s=15": {"weights": 64, "positions": 48,
                                                "test_accuracy": 0.9, "seconds": 2.0}},
        "delays": {"learned delays": {"test_accuracy": 0.9, "integer_delay_accuracy": 0.85},
                   "zero delays": {"test_accuracy": 0.3}},
    }
    assert "spike trains" not in dcls.readme(base, "quick")
    missing = {"available": False, "reason": "no sklearn", "steps_per_row": 4,
               "threshold": 0.5, **dcls.ROWS_NET}
    block = dcls.readme({**base, "digit_rows": missing}, "quick")
    assert "(e) digits as spike trains" in block and "Not run: no sklearn." in block
