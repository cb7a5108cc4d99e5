"""The console of ``aiprim run``: step lines for every step, each line once, no library noise.

One real run of the small profile (the balancer beside a third-party
primitive: the ``small_run`` fixture), its stderr a pipe (so no progress bars:
lines only, as in a log file or CI).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

pytestmark = pytest.mark.slow

STEP_LINES = {
    "snapshot": r"balancer: snapshot \w+ \(",
    "validate": r"balancer: snapshot \w+ valid in",
    "tune": r"balancer: tuned \d+ new trials",
    "train": r"balancer: trained run \w+",
    "evaluate": r"balancer: evaluated ",
    "register": r"balancer: registered aiprim-balancer version \d+",
    "promote": r"balancer: version \d+ (promoted to champion|not promoted)",
}
STEP_PREFIX = re.compile(r"^\[aiprim \d\d:\d\d:\d\d\] ")
PROGRESS = re.compile(r": [\w ]+ \d+/\d+(: |$)")  # "balancer: tuning 1/2: trial 0 complete, ..."
# Product adverts and library chatter that must not reach the console.
NOISE = re.compile(r"Tip:|litlogger|litmodels|anonymous usage|prefect\.io/docs|GPU available|TPU available|"
                   r"Successfully registered model|Created version|Trainer\.fit. stopped")
WARNING = re.compile(r"Warning\b|\bwarning\]|\bWARNING\b|\bINFO\b")


@pytest.fixture(scope="module")
def console(small_run):
    return small_run


def test_every_step_has_its_line(console):
    steps = [line for line in console.stderr.splitlines() if STEP_PREFIX.match(line)]
    missing = [step for step, pattern in STEP_LINES.items() if not any(re.search(pattern, line) for line in steps)]
    assert not missing, f"no step line for {missing}:\n{console.stderr}"


def test_stdout_holds_only_the_summary(console):
    assert "[aiprim " not in console.stdout, console.stdout
    assert "balancer" in console.stdout and "promoted" in console.stdout, console.stdout


def test_no_line_twice(console):
    # Timestamps stripped: a library that logs through two handlers prints the same text in the same second.
    lines = [STEP_PREFIX.sub("", line).strip() for line in (console.stderr + console.stdout).splitlines()]
    repeated = [line for line, n in Counter(lines).items() if n > 1 and line and not PROGRESS.search(line)]
    assert not repeated, f"printed more than once: {repeated}\n{console.stderr}"


def test_no_adverts_warnings_or_library_chatter(console):
    noisy = [line for line in console.stderr.splitlines() if NOISE.search(line) or WARNING.search(line)]
    assert not noisy, "\n".join(noisy)


def test_every_stderr_line_is_aiprims(console):
    # Anything else is a library writing to stderr past the one console.
    foreign = [line for line in console.stderr.splitlines() if line.strip() and not STEP_PREFIX.match(line)]
    assert not foreign, "\n".join(foreign)
