"""Errors the command line reports as one readable line (no traceback without --debug)."""

from __future__ import annotations

from pathlib import Path


class AiprimError(Exception):
    """Base of the errors a user can act on."""


class ValidationFailed(AiprimError):
    def __init__(self, report, quarantined):
        self.report, self.quarantined = report, quarantined
        where = f"; quarantined in {quarantined}" if quarantined else ""
        super().__init__(report.summary() + where)


def describe_failure(error: BaseException) -> str:
    """One line for a failed branch; an MLflow server that does not answer is named as such.

    MLflow's own message for it is a urllib3 retry chain ("API request to http://.../api/2.0/... failed with
    exception HTTPConnectionPool(...): Max retries exceeded ... Connection refused") after its retries ran out.
    """
    import re
    from urllib.parse import urlsplit

    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    unreachable = re.search(r"API request to (?:endpoint )?(\S+) failed with exception (HTTPS?)ConnectionPool\("
                            r"host='([^']+)', port=(\d+)\).*?(Connection refused|timed out|Connection reset|"
                            r"Connection aborted|RemoteDisconnected)", text)
    if unreachable:
        endpoint, scheme, host, port, why = unreachable.groups()
        server = f"{scheme.lower()}://{host}:{port}"
        return (f"the MLflow tracking server at {server} does not answer ({why.lower()} on {urlsplit(endpoint).path}, "
                f"after MLflow's retries): start it again (`aiprim stack up` restarts a stack's) and rerun")
    return text


def retry_can_help(error: BaseException) -> bool:
    """Whether a step's retry may succeed where its first try failed: retries repeat I/O (a remote store, a
    server that restarts); input that is wrong (a bad snapshot, config or argument) stays wrong, and retrying it
    only repeats the failure after the delays."""
    return not isinstance(error, (AiprimError, ValueError, LookupError, TypeError))


def hide_library_tracebacks() -> None:
    """Keep Prefect's reports of a failed task or flow off the console, and tracebacks off Prefect's other records.

    A failed branch is reported once, as ``aiprim: error: <primitive>: <reason>`` (and the retrain flow's own
    line naming the branch); Prefect's engine reports the same failure per task, subflow and branch (five
    lines for one bad snapshot), which buries that line. ``--debug`` keeps them. Only the console's handler
    drops them: the records reach Prefect's API handler (its logger's own, run first) whole, so the Prefect
    UI still has them.
    """
    import logging

    from aiprim._console import ConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, ConsoleHandler) and not any(isinstance(f, _WithoutPrefectFailureReports) for f in handler.filters):
            handler.addFilter(_WithoutPrefectFailureReports())


class _WithoutPrefectFailureReports:
    # The loggers Prefect's engine reports task and flow failures on; aiprim's own lines on them (a flow's
    # run logger) come from aiprim's files and stay.
    RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")

    def filter(self, record) -> bool:
        import logging

        if record.name in self.RUN_LOGGERS and record.levelno >= logging.ERROR and _from_prefect(record.pathname):
            return False
        if record.exc_info and record.name.split(".")[0] == "prefect":
            record.exc_info = None
            record.exc_text = None
        return True


def _from_prefect(path: str) -> bool:
    import prefect

    return Path(path).resolve().is_relative_to(Path(prefect.__file__).resolve().parent)
