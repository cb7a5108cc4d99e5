"""Ctrl-C stops the flow's branches too, not only the thread that receives it.

Prefect runs the branches of ``retrain`` in worker threads. SIGINT raises KeyboardInterrupt in the main
thread only, and Prefect's thread pool then waits for every branch to finish: seen, a version trained,
registered and promoted as champion 25 s after the user pressed Ctrl-C. So SIGINT also sets a flag that
every step checks before it starts and that training checks after every batch; a branch that sees it
raises ``Interrupted``, and nothing after that point is registered or promoted. A step already moving an
alias finishes that move (it takes well under a second).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from .errors import AiprimError

_stop = threading.Event()


class Interrupted(AiprimError):
    """The run was interrupted (Ctrl-C); raised by a branch at its next check."""


def raise_if_interrupted(where: str) -> None:
    if _stop.is_set():
        raise Interrupted(f"interrupted before {where}")


def request_stop() -> None:
    _stop.set()


@contextmanager
def interrupts_stop_branches():
    """While a command runs: SIGINT sets the flag, then raises KeyboardInterrupt in the main thread as before."""
    # Only over Python's own handler: a SIGINT the caller ignores (a background job) or handles stays theirs.
    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)

    def handler(signum, frame):
        _stop.set()
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    if install:
        signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        _stop.clear()  # the branches have been joined: a later command in this process starts afresh


def stop_training_callback():
    """A Lightning callback that ends ``fit`` with ``Interrupted`` after the batch during which SIGINT came."""
    from lightning.pytorch.callbacks import Callback

    class _StopOnInterrupt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            raise_if_interrupted("the rest of training")

    return _StopOnInterrupt()
