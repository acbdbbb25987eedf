"""Ranks that disagree fail loudly, on every rank, without hanging: shape and dtype checks
before the collectives of :mod:`diffnum.constrain._distributed`, rank 0 deciding the resume
step and state, and :func:`init_distributed` (a timeout for every collective) checking its
arguments. Two gloo processes on loopback; every worker catches its errors and writes them
to a file the test reads, and the test fails (instead of waiting) past a deadline."""

import datetime
import gc
import json
import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffnum.constrain import HardConstraint, MixtureOfExperts
from diffnum.constrain._distributed import (
    agree_on_resume,
    broadcast_state,
    check_same_layout,
    gather_experts,
    init_distributed,
)

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")

TIMEOUT = 10.0  # seconds, every collective of the workers' group
DEADLINE = 90.0  # seconds for a whole 2-process run (spawning included) before it is failed


def _spawn(worker, tmp_path, *args):
    """Run ``worker(rank, tmp_path, *args)`` on 2 processes; fail the test if they hang."""
    context = mp.spawn(worker, args=(str(tmp_path), *args), nprocs=2, join=False)
    end = time.monotonic() + DEADLINE
    while not context.join(timeout=max(0.1, end - time.monotonic())):
        if time.monotonic() >= end:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"the 2 ranks did not finish within {DEADLINE} s (a hang)")
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


def _init(rank, out_dir):
    torch.set_num_threads(1)
    init_distributed("gloo", timeout_seconds=TIMEOUT, init_method=f"file://{out_dir}/init",
                     rank=rank, world_size=2)


def _write(out_dir, rank, results):
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(results, f)


def _attempt(fn):
    """{"ok": result} or {"error": type, "message": str, "seconds": time to fail}."""
    began = time.monotonic()
    try:
        return {"ok": fn()}
    except Exception as error:  # recorded for the parent to check
        return {"error": type(error).__name__, "message": str(error),
                "seconds": time.monotonic() - began}


def _moe_with_basis(n_basis):
    """A sharded MixtureOfExperts forward whose basis has ``n_basis`` functions."""
    from test_train import heat_problem

    problem = heat_problem()
    g = torch.Generator().manual_seed(4)
    basis = torch.randn(2, problem.grid.size, n_basis, dtype=torch.float64, generator=g)
    moe = MixtureOfExperts(HardConstraint(problem.pde, 64), (4, 1))
    out = moe(basis, problem.grid, problem.train_initial[:2],
              generator=torch.Generator().manual_seed(9))
    return list(out.weights.shape)


def _gather_worker(rank, out_dir):
    _init(rank, out_dir)
    group = dist.group.WORLD
    results = {}
    try:
        f64 = torch.float64
        results["shape"] = _attempt(lambda: gather_experts(
            torch.zeros(2, 3 if rank == 0 else 2, 16, dtype=f64), group, name="weights").shape)
        results["shape_grad"] = _attempt(lambda: gather_experts(
            torch.zeros(2, 1, 4 + rank, dtype=f64, requires_grad=True), group).shape)
        results["dtype"] = _attempt(lambda: gather_experts(
            torch.zeros(2, 1, 3, dtype=f64 if rank == 0 else torch.float32), group,
            name="status").shape)
        results["ndim"] = _attempt(lambda: gather_experts(torch.zeros(3, dtype=f64), group).shape)
        results["check_only"] = _attempt(lambda: check_same_layout(
            torch.zeros(rank + 1, dtype=torch.int64), group, name="steps", op="my_op"))
        results["not_tensor"] = _attempt(lambda: check_same_layout(
            torch.zeros(1) if rank == 0 else [0.0], group, name="x"))
        results["moe"] = _attempt(lambda: _moe_with_basis(5 - rank))

        def matched():  # the group is still usable, and the backward check passes
            local = torch.full((2, 1, 3), float(rank + 1), dtype=f64, requires_grad=True)
            gathered = gather_experts(local, group)
            probe = torch.arange(gathered.numel(), dtype=f64).reshape(gathered.shape)
            (gathered * probe).sum().backward()
            return {"gathered": gathered.tolist(), "grad": local.grad.tolist()}

        results["matched"] = _attempt(matched)
        results["init_twice"] = _attempt(lambda: init_distributed(
            "gloo", timeout_seconds=TIMEOUT, init_method=f"file://{out_dir}/init2", rank=rank,
            world_size=2))
    finally:
        _write(out_dir, rank, results)
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gathered(tmp_path_factory):
    """The results of both ranks of one run of _gather_worker."""
    return _spawn(_gather_worker, tmp_path_factory.mktemp("gather"))


def _raised_on_both(results, key, error, *parts):
    for rank, result in enumerate(results):
        got = result[key]
        assert got.get("error") == error, f"rank {rank}, {key}: {got}"
        for part in parts:
            assert part in got["message"], f"rank {rank}, {key}: {part!r} not in {got}"
        # Raised by the check, not by the process group's timeout.
        assert got["seconds"] < TIMEOUT / 2, f"rank {rank}, {key}: {got}"


def test_gather_experts_shape_mismatch_raises_on_every_rank(gathered):
    _raised_on_both(gathered, "shape", "ValueError",
                    "gather_experts on 2 ranks", "the ranks disagree on weights",
                    "rank 0 has weights of shape (2, 3, 16), rank 1 has (2, 2, 16)")
    assert "raised on rank 0" in gathered[0]["shape"]["message"]
    assert "raised on rank 1" in gathered[1]["shape"]["message"]


def test_gather_experts_shape_mismatch_with_grad_raises_on_every_rank(gathered):
    _raised_on_both(gathered, "shape_grad", "ValueError",
                    "rank 0 has local experts of shape (2, 1, 4), rank 1 has (2, 1, 5)")


def test_gather_experts_dtype_mismatch_raises_on_every_rank(gathered):
    _raised_on_both(gathered, "dtype", "ValueError",
                    "rank 0 has status of dtype torch.float64, rank 1 has torch.float32")
    assert "shape" not in gathered[0]["dtype"]["message"]  # the shapes agree


def test_gather_experts_needs_an_expert_dimension_on_every_rank(gathered):
    _raised_on_both(gathered, "ndim", "ValueError", "2 dimensions at least", "(3,)")


def test_check_same_layout_names_the_operation_and_refuses_non_tensors(gathered):
    _raised_on_both(gathered, "check_only", "ValueError",
                    "my_op on 2 ranks", "rank 0 has steps of shape (1,), rank 1 has (2,)")
    _raised_on_both(gathered, "not_tensor", "TypeError", "rank 1 passed something else")


def test_mixture_of_experts_with_different_bases_per_rank_raises_on_every_rank(gathered):
    # Rank 0's basis has 5 functions, rank 1's 4: the experts' weights cannot be gathered.
    _raised_on_both(gathered, "moe", "ValueError",
                    "rank 0 has local experts of shape (2, 2, 5), rank 1 has (2, 2, 4)")


def test_group_still_works_after_the_errors(gathered):
    expected = [[[1.0] * 3, [2.0] * 3]] * 2
    probe = torch.arange(12, dtype=torch.float64).reshape(2, 2, 3)
    for rank, result in enumerate(gathered):
        assert result["matched"]["ok"]["gathered"] == expected, result["matched"]
        # Every rank's loss is the same, so the summed cotangent is 2 × its slice of probe.
        assert result["matched"]["ok"]["grad"] == (2 * probe[:, rank:rank + 1]).tolist()


def test_init_distributed_refuses_a_second_group(gathered):
    _raised_on_both(gathered, "init_twice", "RuntimeError", "already initialized")


def _resume_worker(rank, out_dir):
    _init(rank, out_dir)
    results = {}
    try:
        # Only rank 0 sees a checkpoint (step 7); rank 1 would start afresh.
        results["step"] = _attempt(lambda: agree_on_resume(7 if rank == 0 else 0, None))
        # Only rank 1 sees one: rank 0 decides, so both start afresh.
        results["step_rank1_only"] = _attempt(lambda: agree_on_resume(0 if rank == 0 else 5,
                                                                      dist.group.WORLD))
        results["strict"] = _attempt(lambda: agree_on_resume(7 if rank == 0 else 0, None,
                                                             strict=True))
        results["strict_agreed"] = _attempt(lambda: agree_on_resume(4, None, strict=True))
        results["invalid"] = _attempt(lambda: agree_on_resume(3 if rank == 0 else -1, None))
        generator = torch.Generator().manual_seed(3)
        mine = {"step": 7, "history": [{"loss": 0.5, "skipped": False}],
                "model": {"w": torch.arange(6, dtype=torch.float64).reshape(2, 3) / 7},
                "sample_generator": generator.get_state()} if rank == 0 else None

        def state():
            got = broadcast_state(mine, None)
            return {"step": got["step"], "history": got["history"],
                    "w": got["model"]["w"].tolist(),
                    "generator": torch.Generator().set_state(got["sample_generator"])
                    .initial_seed()}

        results["state"] = _attempt(state)
        # Rank 0 has no checkpoint, rank 1 has one: every rank starts afresh.
        results["no_state"] = _attempt(lambda: broadcast_state(
            None if rank == 0 else {"step": 5}, None))
        results["unreadable"] = _attempt(lambda: broadcast_state(
            {"object": datetime.date(2024, 1, 1)} if rank == 0 else None, None))
        results["after"] = _attempt(lambda: agree_on_resume(rank, None))
    finally:
        _write(out_dir, rank, results)
        dist.destroy_process_group()


def test_rank_zero_decides_the_resume_step_and_state(tmp_path):
    results = _spawn(_resume_worker, tmp_path)
    for rank, result in enumerate(results):
        assert result["step"] == {"ok": 7}, (rank, result["step"])
        assert result["step_rank1_only"] == {"ok": 0}, (rank, result["step_rank1_only"])
        assert result["state"]["ok"] == {
            "step": 7, "history": [{"loss": 0.5, "skipped": False}],
            "w": (torch.arange(6, dtype=torch.float64).reshape(2, 3) / 7).tolist(),
            "generator": 3}, (rank, result["state"])
        assert result["no_state"] == {"ok": None}, (rank, result["no_state"])
        assert result["after"] == {"ok": 0}, (rank, result["after"])
        assert result["strict_agreed"] == {"ok": 4}, (rank, result["strict_agreed"])
    _raised_on_both(results, "strict", "RuntimeError", "rank 0 has step 7, rank 1 has 0")
    _raised_on_both(results, "invalid", "ValueError", "rank 1 passed another value")
    # Rank 1 cannot rebuild a date with weights_only=True: both ranks raise.
    _raised_on_both(results, "unreadable", "RuntimeError",
                    "rank 1 could not read rank 0's state back")


def test_helpers_without_a_process_group_return_their_input():
    assert not dist.is_initialized()
    check_same_layout(torch.zeros(2), None)
    assert agree_on_resume(4, None) == 4
    state = {"step": 2}
    assert broadcast_state(state, None) is state
    with pytest.raises(TypeError, match="step must be an int"):
        agree_on_resume(True, None)
    with pytest.raises(ValueError, match="step must satisfy"):
        agree_on_resume(-1, None)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"timeout_seconds": 0}, ValueError, "timeout_seconds"),
    ({"timeout_seconds": -5.0}, ValueError, "timeout_seconds"),
    ({"timeout_seconds": math.nan}, ValueError, "timeout_seconds must be finite"),
    ({"timeout_seconds": math.inf}, ValueError, "timeout_seconds must be finite"),
    ({"timeout_seconds": 1e300}, ValueError, "timeout_seconds is too large"),
    ({"timeout_seconds": True}, TypeError, "timeout_seconds must be a real number"),
    ({"timeout_seconds": "10"}, TypeError, "timeout_seconds must be a real number"),
    ({"backend": ""}, TypeError, "backend must be a non-empty str"),
    ({"backend": None}, TypeError, "backend must be a non-empty str"),
    ({"init_method": "/tmp/init"}, ValueError, "init_method must be None or a URL"),
    ({"init_method": 3}, TypeError, "init_method must be None or a str"),
    ({"rank": 2, "world_size": 2}, ValueError, "rank must satisfy 0 <= rank <= 1"),
    ({"rank": -1, "world_size": 2}, ValueError, "rank must satisfy"),
    ({"rank": 1.0, "world_size": 2}, TypeError, "rank must be an int"),
    ({"rank": 0, "world_size": 0}, ValueError, "world_size must satisfy"),
    ({"rank": 0, "world_size": False}, TypeError, "world_size must be an int"),
])
def test_init_distributed_checks_its_arguments(monkeypatch, kwargs, error, match):
    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    args = {"timeout_seconds": 5.0, "init_method": "file:///nowhere/init", "rank": 0,
            "world_size": 1, **kwargs}
    backend = args.pop("backend", "gloo")
    with pytest.raises(error, match=match):
        init_distributed(backend, **args)
    assert not calls and not dist.is_initialized()


@pytest.mark.skipif(dist.is_nccl_available(), reason="NCCL is available in this build")
def test_init_distributed_refuses_an_unavailable_backend(monkeypatch):
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("called"))
    with pytest.raises(ValueError, match="'nccl' is not available"):
        init_distributed("nccl", timeout_seconds=5.0)


def test_init_distributed_passes_the_timeout(monkeypatch):
    calls = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: calls.append((a, k)))
    group = init_distributed("gloo", timeout_seconds=12.5, init_method="file:///x/init",
                             rank=1, world_size=3)
    assert group is dist.group.WORLD
    assert calls == [(("gloo",), {"init_method": "file:///x/init",
                                  "timeout": datetime.timedelta(seconds=12.5),
                                  "rank": 1, "world_size": 3})]
    calls.clear()
    init_distributed(timeout_seconds=60)  # env://, as torchrun sets up
    assert calls == [(("gloo",), {"init_method": None, "timeout": datetime.timedelta(seconds=60),
                                  "rank": -1, "world_size": -1})]




def _resume_config():
    from test_train import SMALL

    from diffnum.constrain import TrainConfig

    return TrainConfig(method="moe", experts=(2, 1), steps=4, checkpoint_every=1, **SMALL)


def _checkpoint_resume_run(rank, directory):
    from test_train import heat_problem

    from diffnum.constrain import train

    # Each rank its own checkpoint path, and only rank 0's file exists.
    result = train(_resume_config(), heat_problem(),
                   checkpoint=f"{directory}/rank{rank}/ckpt.pt", resume=True)
    torch.save({"from": result.resumed_from, "params": result.model.state_dict(),
                "losses": [h["loss"] for h in result.history]},
               f"{directory}/out{rank}.pt")


def _checkpoint_resume_worker(rank, directory):
    torch.set_num_threads(1)
    init_distributed("gloo", timeout_seconds=20, init_method=f"file://{directory}/init",
                     rank=rank, world_size=2)
    try:
        _checkpoint_resume_run(rank, directory)
        # The trained (DDP) model is gone with the run's frame; both ranks then leave
        # together, so neither tears the group down under the other (a SIGABRT at exit,
        # "terminate called without an active exception", seen in 1 of 4 CI runs).
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_a_checkpoint_only_rank_zero_sees_resumes_every_rank(tmp_path):
    from test_train import heat_problem

    from diffnum.constrain import train

    problem = heat_problem()
    train(_resume_config(), problem, checkpoint=tmp_path / "rank0" / "ckpt.pt", stop_after=2)
    full = train(_resume_config(), problem)
    mp.spawn(_checkpoint_resume_worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"out{rank}.pt", weights_only=True)
        assert got["from"] == 2
        torch.testing.assert_close(got["losses"], [h["loss"] for h in full.history],
                                   rtol=1e-10, atol=0)
        for name, value in full.model.state_dict().items():
            torch.testing.assert_close(got["params"][name], value, rtol=1e-9, atol=1e-12)
