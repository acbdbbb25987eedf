"""Solve tests run on tiny tensors: one intra-op thread avoids thread-pool contention."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # Problems here have at most a few hundred entries; a second thread only adds
    # synchronisation (10× slower on a loaded 2-core machine) and changes no result checked.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
