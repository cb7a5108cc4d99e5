"""The one console: step lines, library messages and progress bars, all on stderr.

stdout stays for results (``--json``). The command line calls
``setup_logging`` once; everything else only asks for a logger
(``logger("query")``) or a progress reporter (``progress_bar(...)``).
Unconfigured (aiprim used as a library) these are plain ``logging`` loggers
and no bars are drawn: the host application's logging decides.

Verbosity: -1 warnings and errors only, no bars; 0 (default) aiprim's step
lines and bars, libraries' warnings; 1 also the libraries' INFO and per-epoch
lines; 2 also the messages known as noise (Lightning's product tips,
the warnings filtered below).

Importing this module imports nothing heavy: it must stay importable from
primitives and runtimes alike.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings

ROOT = "aiprim"

# Libraries that install their own stream handler when first imported, which
# doubles every line they log (Lightning's top package always does).
_SELF_HANDLED = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")

# Chatty even at INFO (a line per HTTP request, per database migration, per GX function documented at
# import): kept at WARNING under -v too.
_CHATTY = ("alembic", "httpx", "httpcore", "urllib3", "sqlalchemy", "matplotlib", "PIL", "great_expectations._docs_decorators")

# Warnings that say nothing actionable about aiprim, as (category, module, message regex): scoped by
# category and the module that warns, so the same warning from anywhere else still shows.
KNOWN_NOISE: tuple[tuple[type[Warning], str, str], ...] = (
    # Lightning 2.6 builds torch's deprecated LeafSpec on every batch; nothing to change on our side.
    (FutureWarning, "lightning.pytorch.utilities._pytree", r".*LeafSpec"),
    # MLflow's advice for PythonModels without type hints: aiprim's pyfunc takes any DataFrame on purpose.
    (UserWarning, "mlflow.pyfunc.utils.data_validation", r".*Add type hints to the `predict` method"),
    # MLflow's hint that an integer column cannot hold missing values: the integer outputs of aiprim's
    # runtimes (an arm, a shard, a server index) are never missing.
    (UserWarning, "mlflow.types.utils", r".*Inferred schema contains integer column"),
)

_verbosity: int | None = None  # None: setup_logging was not called; leave logging to the host
_open_bars = 0
_bars_lock = threading.Lock()


def logger(primitive: str | None = None) -> logging.Logger:
    """aiprim's logger, or a primitive's (its lines read ``<primitive>: message``)."""
    return logging.getLogger(f"{ROOT}.{primitive}" if primitive else ROOT)


def log(message: str, primitive: str | None = None) -> None:
    """One step line."""
    logger(primitive).info(message)


def setup_logging(verbosity: int = 0) -> None:
    """Route every logger and warning to one stderr handler, at the given verbosity.

    Idempotent: calling it again (``main`` runs once per command, tests call it
    many times in one process) replaces the handler it installed before.
    """
    global _verbosity
    _verbosity = verbosity
    library_level = logging.INFO if verbosity >= 1 else logging.WARNING
    # Read by the libraries when first imported, so they route through the root logger at our level
    # instead of installing handlers of their own.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", logging.getLevelName(library_level))

    root = logging.getLogger()
    # Ours from an earlier call, or Prefect's when it was imported first: either would print every line again.
    for handler in [h for h in root.handlers if isinstance(h, ConsoleHandler) or type(h).__name__ == "PrefectConsoleHandler"]:
        root.removeHandler(handler)
    # Prefect configures the root logger when imported, unless it already has a handler like this one.
    root.addHandler(ConsoleHandler(library_level, show_noise=verbosity >= 2))
    root.setLevel(library_level)
    own = logging.getLogger(ROOT)
    own.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)
    own.propagate = True
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("prefect").setLevel(library_level)  # in case Prefect was imported before

    logging.captureWarnings(True)  # warnings print through the handler, between the bars, not across them
    if verbosity < 2:
        for category, module, message in KNOWN_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category, module=re.escape(module) + "$")
    settle_library_loggers()


def settle_library_loggers() -> None:
    """Bring libraries imported since ``setup_logging`` under the one console.

    Lightning adds its own stream handler and sets INFO when imported, and
    MLflow prints its events ("Created version ...") straight to stderr: call
    this after importing them (the pipeline does where it builds a Trainer,
    by then both are; the registry's ``configure`` at every use of MLflow's
    store). A no-op unless the command line configured the console.
    """
    if _verbosity is None:
        return
    library_level = logging.INFO if _verbosity >= 1 else logging.WARNING
    for name in _SELF_HANDLED:
        library_logger = logging.getLogger(name)
        for handler in [h for h in library_logger.handlers if type(h) is logging.StreamHandler]:
            library_logger.removeHandler(handler)
        library_logger.setLevel(library_level)
        library_logger.propagate = True
    events = sys.modules.get("mlflow.utils.logging_utils")
    if events is not None and not isinstance(getattr(events, "MLFLOW_LOGGING_STREAM", None), _MlflowEvents):
        events.MLFLOW_LOGGING_STREAM = _MlflowEvents()


class _MlflowEvents:
    """Stands in for MLflow's event stream, which ``eprint`` writes to ("Created version '3' of model ...").

    Each event becomes an INFO record of the ``mlflow.events`` logger: shown
    with ``-v`` like any library's INFO, where by default the step lines say
    the same. ``enabled`` is MLflow's own switch (it mutes events at times).
    """

    def __init__(self):
        self.enabled = True
        self._pending = threading.local()  # print() writes a message and its newline separately

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        *lines, rest = (getattr(self._pending, "text", "") + text).split("\n")
        self._pending.text = rest
        for line in lines:
            if line.strip():
                logging.getLogger("mlflow.events").info(line)

    def flush(self) -> None:
        pass


class ConsoleHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it), around any progress bars."""

    def __init__(self, library_level: int, show_noise: bool = False):
        super().__init__()
        self.library_level = library_level
        self.show_noise = show_noise
        self.setFormatter(ConsoleFormatter())

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_own(record) and record.levelno < self.library_level:
            return False  # libraries that set their own loggers to INFO (GX, Lightning) stay quiet by default
        if not self.show_noise and (_is_product_tip(record) or _is_known_noise(record)):
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stderr
            if _open_bars:
                from tqdm import tqdm

                tqdm.write(text, file=stream)  # clears the bars, writes the line, redraws them
            else:
                stream.write(text + "\n")
                stream.flush()
        except Exception:  # noqa: BLE001  (logging must never raise into the caller)
            self.handleError(record)


class ConsoleFormatter(logging.Formatter):
    """``[aiprim 12:00:01] query: message`` for aiprim, ``[12:00:01 WARNING mlflow.x] message`` for libraries."""

    def __init__(self):
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        when = self.formatTime(record, self.datefmt)
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if _is_own(record):
            primitive = record.name[len(ROOT) + 1:]
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            return f"[{ROOT} {when}] {primitive + ': ' if primitive else ''}{level}{message}"
        if record.name == "py.warnings":
            return f"[{when} warning] {message.rstrip()}"
        return f"[{when} {record.levelname} {record.name}] {message}"


def _is_own(record: logging.LogRecord) -> bool:
    return record.name == ROOT or record.name.startswith(ROOT + ".")


def _is_known_noise(record: logging.LogRecord) -> bool:
    """A captured warning of KNOWN_NOISE that a library showed anyway.

    MLflow wraps some calls in ``catch_warnings`` + ``simplefilter("once")``,
    which puts its warnings ahead of any filter; their captured text
    (``path/to/module.py:12: Category: message``) is matched instead.
    """
    if record.name != "py.warnings":
        return False
    text = record.getMessage()
    return any(module.replace(".", "/") + ".py:" in text.replace(os.sep, "/") and f"{category.__name__}: " in text
               and re.search(message, text) for category, module, message in KNOWN_NOISE)


def _is_product_tip(record: logging.LogRecord) -> bool:
    # Lightning advertises its cloud products at INFO on every Trainer: "💡 Tip: ... try installing litlogger".
    return record.name.split(".")[0] in _SELF_HANDLED and "Tip:" in str(record.msg)


# --- progress -----------------------------------------------------------------

def bars_enabled() -> bool:
    """Bars only on a terminal, only under the configured console, never with TQDM_DISABLE or -q."""
    if _verbosity is None or _verbosity < 0 or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        return False
    return sys.stderr.isatty()


class Progress:
    """Progress of one long step: a bar on a terminal, else a line every ``lines_every`` steps.

    Every step is also logged at DEBUG (shown with ``-v``). Several threads may
    each hold one: bars are labelled with the primitive and stack, and lines
    are whole lines.
    """

    def __init__(self, log_to: logging.Logger, what: str, total: int, unit: str = "it", lines_every: int | None = 1,
                 initial: int = 0):
        global _open_bars
        self.log_to, self.what, self.total, self.lines_every, self.count = log_to, what, total, lines_every, initial
        self.bar = None
        if bars_enabled():
            from tqdm import tqdm

            primitive = log_to.name[len(ROOT) + 1:] if log_to.name.startswith(ROOT + ".") else ROOT
            with _bars_lock:
                _open_bars += 1
            self.bar = tqdm(total=total, initial=initial, desc=f"{primitive}: {what}", unit=unit, file=sys.stderr,
                            leave=False, dynamic_ncols=True, disable=False)

    def advance(self, note: str = "", steps: int = 1) -> None:
        self.count += steps
        line = f"{self.what} {self.count}/{self.total}" + (f": {note}" if note else "")
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(steps)
            self.log_to.debug(line)
            return
        due = self.lines_every and (self.count % self.lines_every == 0 or self.count >= self.total)
        self.log_to.log(logging.INFO if due else logging.DEBUG, line)

    def iterate(self, items, note=None):
        """Yield the items, advancing once each is done (``continue`` included); closes at the end.

        ``note``: a callable giving the line's note once an item is done.
        """
        try:
            for item in items:
                yield item
                self.advance(note() if note else "")
        finally:
            self.close()

    def close(self) -> None:
        global _open_bars
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            with _bars_lock:
                _open_bars -= 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(primitive: str | None, what: str, total: int, unit: str = "it", lines_every: int | None = 1) -> Progress:
    """``with progress_bar("query", "running queries", len(queries), lines_every=20) as bar: ... bar.advance(note)``."""
    return Progress(logger(primitive), what, total, unit, lines_every)


def epoch_progress():
    """A Lightning callback: one bar per fit, advanced each epoch with val/loss alongside.

    Without a terminal each epoch is a DEBUG line (``-v``). The primitive's name
    comes from the module of its LightningModule (``aiprim.primitives.<name>``).
    """
    from lightning.pytorch.callbacks import Callback

    class EpochProgress(Callback):
        def __init__(self):
            self.progress = None

        def on_fit_start(self, trainer, module):
            self.progress = Progress(logger(_primitive_of(module)), "epochs", trainer.max_epochs, unit="epoch",
                                     lines_every=None, initial=trainer.current_epoch)

        def on_train_epoch_end(self, trainer, module):
            if self.progress is None:
                return
            metrics = trainer.callback_metrics
            shown = [k for k in ("val/loss", "train/loss") if k in metrics and metrics[k].numel() == 1]
            self.progress.advance(", ".join(f"{k} {float(metrics[k]):.4g}" for k in shown))

        def on_fit_end(self, trainer, module):
            self._close()

        def on_exception(self, trainer, module, exception):
            self._close()

        def _close(self):
            if self.progress is not None:
                self.progress.close()
                self.progress = None

    return EpochProgress()


def _primitive_of(module) -> str | None:
    parts = type(module).__module__.split(".")
    if "primitives" in parts[:-1]:
        return parts[parts.index("primitives") + 1]
    return None
