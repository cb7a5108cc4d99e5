"""Timed measurements get the machine to themselves.

A query latency or a kernel runtime measured while another branch trains is
that branch's noise, recorded as telemetry and then scored as the model's
regret. Steps a primitive declares ``timed_steps`` hold the machine lock
exclusively; every other step holds it shared, so branches still train side
by side but never beside a measurement. The lock is a file (flock) in the
machine's folder (``settings.machine_dir``), not the project's, so it holds
across the threads of one flow, across processes (DVC stages, Dask workers)
and across projects on one machine.

A waiting measurement takes the turnstile first, so shared holders arriving
after it queue behind it instead of starving it.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager

from ..settings import machine_dir


@contextmanager
def machine_lock(exclusive: bool, waiting: str | None = None):
    """Hold the machine shared (most steps) or exclusively (a timed measurement). ``waiting``, when given, is
    said once if the lock is not free at once (the holder may be another project's step)."""
    try:
        folder = machine_dir()
    except OSError as error:  # a bad AIPRIM_MACHINE_DIR stays bad: an AiprimError, which no retry repeats
        from .errors import AiprimError

        raise AiprimError(f"cannot create the machine lock's folder {error.filename} (AIPRIM_MACHINE_DIR): "
                          f"{error.strerror or error}") from None
    with open(folder / "machine.turnstile", "a") as turnstile, open(folder / "machine.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(lock, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting:
                    from .._console import log

                    log(f"{waiting} (lock: {folder / 'machine.lock'})")
                fcntl.flock(lock, mode)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
