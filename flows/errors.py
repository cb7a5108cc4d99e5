"""Errors the command line reports as one readable line (no traceback without --debug)."""

from __future__ import annotations


class AiprimError(Exception):
    """Base of the errors a user can act on."""


class ValidationFailed(AiprimError):
    def __init__(self, report, quarantined):
        self.report, self.quarantined = report, quarantined
        where = f"; quarantined in {quarantined}" if quarantined else ""
        super().__init__(report.summary() + where)


class TrainingFailed(AiprimError):
    pass
