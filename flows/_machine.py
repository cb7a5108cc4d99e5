"""Timed measurements get the machine to themselves.

A query latency or a kernel runtime measured while another branch trains is
that branch's noise, recorded as telemetry and then scored as the model's
regret. Steps a primitive declares ``timed_steps`` hold the machine lock
exclusively; every other step holds it shared, so branches still train side
by side but never beside a measurement. The lock is a file (flock), so it
holds across the threads of one flow and across processes (DVC stages,
Dask workers) on one machine.

A waiting measurement takes the turnstile first, so shared holders arriving
after it queue behind it instead of starving it.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager

from ..settings import state_dir


@contextmanager
def machine_lock(exclusive: bool):
    """Hold the machine shared (most steps) or exclusively (a timed measurement)."""
    folder = state_dir()
    with open(folder / "machine.turnstile", "a") as turnstile, open(folder / "machine.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
