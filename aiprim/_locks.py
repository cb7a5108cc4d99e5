"""One process at a time: an exclusive lock on a file (flock), across the threads of a flow and across processes
(DVC stages, Dask or Ray workers, several `aiprim` commands) on one machine."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_path: Path):
    """Held while the caller's block runs; ``lock_path`` is created if missing and never removed."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
