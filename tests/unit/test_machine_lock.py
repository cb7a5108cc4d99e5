"""The machine lock: timed steps run alone, other steps side by side, a waiting measurement is not starved, and
the lock is the machine's, not the project's."""

import os
import subprocess
import sys
import threading
import time

from aiprim.flows._machine import machine_lock


def _hold(exclusive, entered, release, log, name):
    with machine_lock(exclusive):
        log.append(f"{name} in")
        entered.set()
        release.wait(10)
        log.append(f"{name} out")


def _start(exclusive, log, name):
    entered, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_hold, args=(exclusive, entered, release, log, name), daemon=True)
    thread.start()
    return thread, entered, release


def test_shared_holders_overlap(tmp_path, monkeypatch):
    monkeypatch.setenv("AIPRIM_HOME", str(tmp_path))
    monkeypatch.setenv("AIPRIM_MACHINE_DIR", str(tmp_path / "machine"))
    log = []
    a, a_in, a_go = _start(False, log, "a")
    b, b_in, b_go = _start(False, log, "b")
    assert a_in.wait(5) and b_in.wait(5)  # both inside at once
    a_go.set(), b_go.set()
    a.join(5), b.join(5)


def test_a_measurement_waits_for_training_and_later_training_waits_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AIPRIM_HOME", str(tmp_path))
    monkeypatch.setenv("AIPRIM_MACHINE_DIR", str(tmp_path / "machine"))
    log = []
    train, train_in, train_go = _start(False, log, "train")
    assert train_in.wait(5)
    measure, measure_in, measure_go = _start(True, log, "measure")
    time.sleep(0.3)
    assert not measure_in.is_set()  # the measurement waits for the training step to leave
    later, later_in, later_go = _start(False, log, "later")
    time.sleep(0.3)
    assert not later_in.is_set()  # a step arriving after the waiting measurement queues behind it
    train_go.set()
    assert measure_in.wait(5)
    time.sleep(0.3)
    assert not later_in.is_set()  # nothing runs beside the measurement
    measure_go.set()
    assert later_in.wait(5)
    later_go.set()
    for thread in (train, measure, later):
        thread.join(5)
    assert log == ["train in", "train out", "measure in", "measure out", "later in", "later out"]


def test_another_projects_measurement_waits_and_says_so(tmp_path, monkeypatch):
    """Two projects (two AIPRIM_HOMEs: two clones, or DVC's queued experiments) share one machine: a step of one
    that times things waits for the other's training step, and says what it waits for."""
    monkeypatch.setenv("AIPRIM_HOME", str(tmp_path / "one"))
    monkeypatch.setenv("AIPRIM_MACHINE_DIR", str(tmp_path / "machine"))
    code = ("from aiprim._console import setup_logging\nfrom aiprim.flows._machine import machine_lock\nsetup_logging()\n"
            "with machine_lock(True, waiting='compiler: snapshot waits for the machine'):\n    print('measuring', flush=True)\n")
    env = {**os.environ, "AIPRIM_HOME": str(tmp_path / "other")}
    with machine_lock(exclusive=False):  # this project's training step
        other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(2.0)
        assert other.poll() is None  # the other project's measurement waits
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0 and out == "measuring\n", err
    assert "compiler: snapshot waits for the machine" in err and "machine.lock" in err


def test_a_machine_lock_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capsys):
    from aiprim.flows.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("AIPRIM_HOME", str(tmp_path / "project"))
    monkeypatch.setenv("AIPRIM_MACHINE_DIR", str(blocker / "machine"))
    assert main(["step", "snapshot", "balancer", "--dir", str(tmp_path / "stage")]) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"aiprim: error: cannot create the machine lock's folder {blocker / 'machine'} (AIPRIM_MACHINE_DIR): "
                     "Not a directory"], lines
    assert not (tmp_path / "stage").exists() or not any((tmp_path / "stage").iterdir())
