"""Test-wide settings: deterministic threads and a bounded hypothesis profile."""

import os

import torch
from hypothesis import HealthCheck, settings

# Two threads match the CI machine; results then do not depend on the host's core count.
torch.set_num_threads(min(2, os.cpu_count() or 1))

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,  # linear algebra timing varies with load; correctness is what is checked
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
