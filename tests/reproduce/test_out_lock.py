"""One run at a time per output directory (a pid/host lock, stale ones taken over, released on
every exit), and per-experiment caches keyed by seed and mode, a malformed one recomputed."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

import diffnum
import diffnum.reproduce
from diffnum import cli
from diffnum.reproduce import Context, Experiment, Section, _harness

CALLS = []
SEEN_LOCKS = []


def _tiny(ctx: Context) -> Section:
    CALLS.append(ctx.seed)
    SEEN_LOCKS.append(json.loads((ctx.out / _harness.LOCK_NAME).read_text()))
    return Section(title="Tiny", markdown="tiny", results={"seed": ctx.seed})


def _fails(ctx: Context) -> Section:
    raise RuntimeError("experiment failed")


def _interrupted(ctx: Context) -> Section:
    raise KeyboardInterrupt


@pytest.fixture
def tiny_registry(monkeypatch):
    CALLS.clear()
    SEEN_LOCKS.clear()
    registry = {e.name: e for e in (Experiment(name="tiny", title="Tiny", run=_tiny),
                                    Experiment(name="fails", title="Fails", run=_fails),
                                    Experiment(name="interrupted", title="Int", run=_interrupted))}
    monkeypatch.setattr(_harness, "available_experiments", lambda: registry)
    monkeypatch.setattr(diffnum.reproduce, "available_experiments", lambda: registry)
    return registry


@pytest.fixture
def live_pid():
    """The pid of a process that is alive for the whole test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(out, pid, host=None):
    lock = out / _harness.LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "started": "2024-01-01T00:00:00"}))
    return lock


def test_the_lock_is_held_during_the_run_and_released_after(tmp_path, tiny_registry):
    _harness.run(["tiny"], out=tmp_path, show_progress=False)
    assert SEEN_LOCKS[0]["pid"] == os.getpid()
    assert SEEN_LOCKS[0]["host"] == socket.gethostname()
    assert not (tmp_path / _harness.LOCK_NAME).exists()
    assert not list(tmp_path.glob(f"{_harness.LOCK_NAME}*"))  # no temporary files either


@pytest.mark.parametrize("name,error", [("fails", RuntimeError),
                                        ("interrupted", KeyboardInterrupt)])
def test_the_lock_is_released_when_the_run_fails(tmp_path, tiny_registry, name, error):
    with pytest.raises(error):
        _harness.run([name], out=tmp_path, show_progress=False)
    assert not (tmp_path / _harness.LOCK_NAME).exists()


def test_a_live_owner_is_refused_and_its_lock_kept(tmp_path, tiny_registry, live_pid, capsys):
    lock = _write_lock(tmp_path, live_pid)
    before = lock.read_text()
    with pytest.raises(_harness.OutputLockedError, match=f"pid {live_pid}") as caught:
        _harness.run(["tiny"], out=tmp_path, show_progress=False)
    assert str(lock) in str(caught.value)
    # The command line: exit code 2 and one line on stderr, no traceback.
    assert cli.main(["reproduce", "tiny", "--no-progress", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another run" in err and "Traceback" not in err
    assert CALLS == [] and lock.read_text() == before


def test_a_lock_from_another_host_is_refused(tmp_path, tiny_registry, dead_pid):
    _write_lock(tmp_path, dead_pid, host=f"not-{socket.gethostname()}")
    with pytest.raises(_harness.OutputLockedError, match="not-"):
        _harness.run(["tiny"], out=tmp_path, show_progress=False)
    assert CALLS == []


@pytest.mark.parametrize("content", ["dead pid", "empty", "not json"])
def test_a_stale_lock_is_taken_over_and_logged(tmp_path, tiny_registry, dead_pid, caplog,
                                               content):
    lock = tmp_path / _harness.LOCK_NAME
    if content == "dead pid":
        _write_lock(tmp_path, dead_pid)
    else:
        lock.write_text("" if content == "empty" else "{pid")
    with caplog.at_level(logging.WARNING, logger="diffnum.reproduce._harness"):
        _harness.run(["tiny"], out=tmp_path, show_progress=False)
    assert CALLS == [0]
    assert any("taking over stale lock" in r.getMessage() and str(lock) in r.getMessage()
               for r in caplog.records)
    assert not lock.exists()


def test_caches_of_other_seeds_and_modes_live_side_by_side(tmp_path, tiny_registry):
    for seed, quick in [(0, True), (1, True), (0, False)]:
        _harness.run(["tiny"], out=tmp_path, quick=quick, seed=seed, show_progress=False)
    assert len(list((tmp_path / ".cache").glob("tiny-*.json"))) == 3
    for seed, quick in [(0, True), (1, True), (0, False)]:
        _harness.run(["tiny"], out=tmp_path, quick=quick, seed=seed, resume=True,
                     show_progress=False)
    assert CALLS == [0, 1, 0]  # every resumed run came from its own cache


def _cache_file(out, seed=0, quick=True):
    return _harness._cache_path(Context(out=out, quick=quick, seed=seed), "tiny")


def _cache(section):
    return json.dumps({"quick": True, "seed": 0, "version": diffnum.__version__,
                       **({} if section is None else {"section": section})}).encode()


SECTION = {"title": "", "markdown": "", "results": {}, "figures": [], "summary_table": ""}


@pytest.mark.parametrize("content", [
    b"{not json",
    b"\xff\xfe",
    b"[1, 2]",
    _cache(None),
    _cache({**SECTION, "title": 1}),
    _cache({**SECTION, "figures": ["../outside.png"]}),
], ids=["bad-json", "bad-utf8", "not-an-object", "no-section", "wrong-type", "escaping-figure"])
def test_a_malformed_cache_file_is_logged_and_recomputed(tmp_path, tiny_registry, caplog,
                                                         content):
    out = tmp_path / "out"
    _harness.run(["tiny"], out=out, quick=True, show_progress=False)
    path = _cache_file(out)
    path.write_bytes(content)
    (tmp_path / "outside.png").write_bytes(b"")  # exists, but is not inside --out
    with caplog.at_level(logging.WARNING, logger="diffnum.reproduce._harness"):
        _harness.run(["tiny"], out=out, quick=True, resume=True, show_progress=False)
    assert CALLS == [0, 0]
    assert any(str(path) in r.getMessage() and "recomputing" in r.getMessage()
               for r in caplog.records)
    assert json.loads(path.read_text())["section"]["results"] == {"seed": 0}  # rewritten
