"""Checkpoints and cached datasets are read without running code, and a bad one — crafted,
truncated, empty, garbage, of another configuration — is logged by name and the run starts
afresh instead of ending in a traceback."""

import hashlib
import json
import logging
import pickle
from dataclasses import asdict, replace

import pytest
import torch
from test_train import SMALL, heat_problem

from diffnum.constrain import TrainConfig, train
from diffnum.pde import dataset_paths, load_dataset

# Checkpoint handling is the same for every method; PI-SC is the fastest to train (the
# resume tests in test_train.py load PI-HC and MoE checkpoints with weights_only=True).
CONFIG = TrainConfig(method="soft", steps=2, checkpoint_every=1, **SMALL)
LOGGER = "diffnum.constrain._train"


@pytest.fixture(scope="module")
def problem():
    return heat_problem()


@pytest.fixture(scope="module")
def fresh(problem):
    """CONFIG trained without any checkpoint: what a run that starts afresh must equal."""
    return train(CONFIG, problem)


class _Plant:
    """Unpickling this creates ``marker``: the code a crafted checkpoint would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _assert_fresh(result, fresh):
    """The run started at step 0 and is the run without any checkpoint, bit for bit."""
    assert result.resumed_from == 0
    assert [h["loss"] for h in result.history] == [h["loss"] for h in fresh.history]
    for a, b in zip(result.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)


def _warned_about(caplog, path, words):
    return any(str(path) in r.getMessage() and words in r.getMessage()
               for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_a_crafted_checkpoint_runs_no_code_and_the_run_starts_afresh(tmp_path, caplog,
                                                                     container, problem, fresh):
    # The payload is live: plain unpickling does create a file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Plant(probe))).close()
    assert probe.exists()
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run.pt"
    payload = {"config": asdict(CONFIG), "model": _Plant(marker), "optimizer": {}, "step": 1,
               "sample_generator": torch.zeros(1), "history": [{}]}
    if container == "torch.save":
        torch.save(payload, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(payload, protocol=2))
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            result = train(CONFIG, problem, checkpoint=ckpt, resume=True)
    finally:  # checked first, even if train() raised
        assert not marker.exists(), "loading the checkpoint ran the code inside it"
    assert _warned_about(caplog, ckpt, "unsafe")
    _assert_fresh(result, fresh)
    # The bad file was replaced by a genuine checkpoint, which loads with weights_only=True.
    assert torch.load(ckpt, weights_only=True)["step"] == CONFIG.steps


def _genuine(path, problem):
    train(CONFIG, problem, checkpoint=path)
    return torch.load(path, weights_only=True)


def _damage(kind, ckpt, problem):
    """Write a damaged checkpoint of kind ``kind``; return the words the log should hold."""
    if kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "truncated":
        _genuine(ckpt, problem)
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    elif kind == "garbage":
        ckpt.write_bytes(bytes(range(256)) * 8)
    elif kind == "not-a-checkpoint":
        torch.save({"weights": torch.ones(3)}, ckpt)
        return "not a training checkpoint"
    elif kind == "history-of-other-length":
        torch.save({**_genuine(ckpt, problem), "history": []}, ckpt)
        return "history"
    elif kind == "tensors-of-other-shapes":
        state = _genuine(ckpt, problem)
        state["model"] = {k: torch.zeros(1, dtype=v.dtype) for k, v in state["model"].items()}
        torch.save(state, ckpt)
        return "does not fit"
    return "unreadable"


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "not-a-checkpoint",
                                  "history-of-other-length", "tensors-of-other-shapes"])
def test_a_damaged_checkpoint_is_named_in_the_log_and_the_run_starts_afresh(tmp_path, caplog,
                                                                            kind, problem, fresh):
    ckpt = tmp_path / "run.pt"
    words = _damage(kind, ckpt, problem)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = train(CONFIG, problem, checkpoint=ckpt, resume=True)
    assert _warned_about(caplog, ckpt, words)
    _assert_fresh(result, fresh)


def test_a_checkpoint_of_another_configuration_starts_afresh(tmp_path, caplog, problem, fresh):
    ckpt = tmp_path / "run.pt"
    train(replace(CONFIG, seed=1), problem, checkpoint=ckpt)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = train(CONFIG, problem, checkpoint=ckpt, resume=True)
    assert _warned_about(caplog, ckpt, "different configuration")
    _assert_fresh(result, fresh)


def test_a_genuine_checkpoint_resumes_with_weights_only(tmp_path, caplog, problem):
    ckpt = tmp_path / "run.pt"
    train(CONFIG, problem, checkpoint=ckpt, stop_after=1)
    assert torch.load(ckpt, weights_only=True)["step"] == 1
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = train(CONFIG, problem, checkpoint=ckpt, resume=True)
    assert result.resumed_from == 1 and not caplog.records


def test_the_digest_tells_configurations_apart_and_is_stable():
    digest = CONFIG.digest
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert TrainConfig(method="soft", steps=2, checkpoint_every=1, **SMALL).digest == digest
    assert replace(CONFIG).digest == digest
    others = {replace(CONFIG, seed=1).digest, replace(CONFIG, steps=3).digest,
              replace(CONFIG, method="hard").digest,
              replace(CONFIG, method="moe", experts=(2, 1)).digest}
    assert len(others) == 4 and digest not in others


def test_a_crafted_dataset_with_a_matching_checksum_runs_no_code_and_is_regenerated(
        tmp_path, caplog):
    sizes = {"nx": 16, "num_times": 4}
    good = load_dataset("burgers", 1, 0, tmp_path, **sizes).solution.clone()
    data_path, sidecar = dataset_paths("burgers", 1, 0, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"initial": _Plant(marker)}, data_path)
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = hashlib.sha256(data_path.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match="not usable"):
        load_dataset("burgers", 1, 0, tmp_path, generate=False, **sizes)
    with caplog.at_level(logging.WARNING, logger="diffnum.pde._data"):
        again = load_dataset("burgers", 1, 0, tmp_path, **sizes)
    assert not marker.exists()
    assert any("regenerating" in r.getMessage() and str(data_path) in r.getMessage()
               for r in caplog.records)
    torch.testing.assert_close(again.solution, good, rtol=0, atol=0)
