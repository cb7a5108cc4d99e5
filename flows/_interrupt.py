"""An interrupted flow stops its branches too, not only the thread that the interrupt reaches.

Prefect runs the branches of ``retrain`` in worker threads. Ctrl-C raises KeyboardInterrupt, and SIGTERM
(Prefect's handler) TerminationSignal, in the main thread only, which waits for the branches; Prefect's
thread pool then joins every branch: seen, a version trained, registered and promoted as champion 25 s
after Ctrl-C. So whatever ends that wait early sets a flag that every step checks before it starts and
that training checks after every batch; a branch that sees it raises ``Interrupted``, and nothing after
that point is registered or promoted. A step already moving an alias finishes that move (well under a
second).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from .errors import AiprimError

_stop = threading.Event()


class Interrupted(AiprimError):
    """The flow was interrupted (Ctrl-C, SIGTERM); raised by a branch at its next check."""


def raise_if_interrupted(where: str) -> None:
    if _stop.is_set():
        raise Interrupted(f"interrupted before {where}")


def request_stop() -> None:
    _stop.set()


def reset() -> None:
    _stop.clear()


@contextmanager
def branches_stop_with_the_wait():
    """Around the main thread's wait for the branches: an interrupt raised there stops them too."""
    reset()  # a new run of branches (an earlier interrupted run in this process has been joined)
    try:
        yield
    except BaseException:
        request_stop()
        raise


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as KeyboardInterrupt is for Ctrl-C."""


@contextmanager
def sigterm_raises():
    """While a command runs, SIGTERM raises ``Terminated`` instead of ending the process where it stands.

    Python's default for SIGTERM skips every ``finally`` and ``atexit``: each `aiprim run` stopped so (by
    ``timeout``, a supervisor, a container's stop) left its temporary Prefect API server running, orphaned.
    Prefect's own SIGTERM bridge, installed while a flow runs, ends by re-sending the signal to the handler it
    found, this one. A handler someone else installed stays theirs.
    """
    install = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def handler(signum, frame):
        raise Terminated

    if install:
        signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_training_callback():
    """A Lightning callback that ends ``fit`` with ``Interrupted`` after the batch during which the flag was set."""
    from lightning.pytorch.callbacks import Callback

    class _StopOnInterrupt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            raise_if_interrupted("the rest of training")

    return _StopOnInterrupt()
