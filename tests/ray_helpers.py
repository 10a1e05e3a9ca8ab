"""A local Ray for the tests that run work on it (the pruning search, the frontier)."""
from __future__ import annotations

import pytest

STARTUP_TIMEOUT = "timed out during startup"  # Ray's message when its raylet misses the fixed 30 s wait


def start_local_ray(ray, num_cpus: int = 1) -> None:
    """A small local Ray in this process; skips the test when the machine is too loaded
    for its raylet to start within Ray's start-up wait (twice)."""
    for _ in range(2):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for a slow start
            ray.shutdown()
            if STARTUP_TIMEOUT not in str(exc):
                raise
    pytest.skip("a local Ray node did not start within Ray's start-up wait (machine overloaded)")
