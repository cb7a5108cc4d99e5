"""The UIs over the project's stores: MLflow, Prefect and optuna-dashboard, on 127.0.0.1.

Each server starts in a session of its own, so that stopping it can reach
everything it started: MLflow's uvicorn workers, its job runner and huey
consumers, Prefect's API workers. Stopping sends SIGTERM to the whole process
group, then SIGKILL to whatever of the session is left after a grace period.

A store that is already a server (``MLFLOW_TRACKING_URI=http://...``,
``PREFECT_API_URL``) is not started again: its URL is printed as it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aiprim.settings import shown_url

from ._interrupt import Terminated, sigterm_raises
from .errors import AiprimError

DEFAULT_PORTS = {"mlflow": 5000, "prefect": 4200, "optuna": 8080}
STARTUP_TIMEOUT_S = 180.0  # Prefect's server takes tens of seconds to migrate and start on two busy cores
STOP_GRACE_S = 15.0


class ServerFailed(AiprimError):
    """A UI server exited or did not answer; the message names it and its log."""


@dataclass
class Server:
    """One UI: the command that serves it, where it answers, and (once started) its process."""

    name: str
    url: str
    health_path: str
    command: list[str] = field(default_factory=list)  # empty: an external server, not ours to start or stop
    env: dict[str, str] | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def external(self) -> bool:
        return not self.command

    def start(self) -> None:
        if self.external or self.process is not None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # A session of its own: the group id is the server's pid, and Ctrl-C in the terminal
            # reaches only us, so we decide the order in which things stop.
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + self.health_path, timeout=3) as response:
                return response.status < 500
        except urllib.error.HTTPError as error:
            return error.code < 500
        except (OSError, ValueError):
            return False

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_until_answering(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.exited() is not None:
                raise ServerFailed(f"the {self.name} server exited with status {self.process.returncode} "
                                   f"before answering (see {self.log_path})")
            if self.answers():
                return
            time.sleep(0.5)
        where = f" (see {self.log_path})" if self.log_path else ""
        raise ServerFailed(f"the {self.name} server did not answer at {shown_url(self.url)} within {STARTUP_TIMEOUT_S:.0f} s{where}")

    def terminate(self) -> None:
        """SIGTERM to the server's process group (its session's leader group)."""
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGTERM)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to the server's process group, SIGKILL to anything of its session left after ``grace_s``."""
        if self.process is None:
            return
        stop_session(self.process.pid, grace_s, self.process)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_session(session: int, grace_s: float, leader: subprocess.Popen | None = None) -> None:
    """SIGTERM to the process group of a session's leader, SIGKILL to anything of the session left after
    ``grace_s`` (or once the session is empty and ``leader``, when given, has exited)."""
    _signal_group(session, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if (leader is None or leader.poll() is not None) and not session_members(session):
            break
        time.sleep(0.2)
    # Children that moved to a group of their own are still in the session: they go too.
    _signal_group(session, signal.SIGKILL)
    for pid in session_members(session):
        _signal_pid(pid, signal.SIGKILL)


def session_members(session_id: int) -> list[int]:
    """Live (not zombie) processes of a session, from /proc; empty where there is no /proc."""
    members = []
    proc = Path("/proc")
    if not proc.is_dir():
        return members
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after the command name (which may hold spaces and parentheses): state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == session_id and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def console_script(name: str) -> str:
    """A console script of this environment (the venv's, even when its bin/ is not on PATH)."""
    return str(Path(sys.executable).parent / name)


def _server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def _log_path(name: str) -> Path:
    from aiprim.settings import state_dir

    return state_dir() / "ui" / f"{name}.log"


def mlflow_server(host: str, port: int) -> Server:
    """The MLflow UI over the project's tracking store (SQLite by default), or the tracking server in use."""
    from aiprim import settings
    from aiprim.registry._store import _configured, tracking_uri

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return Server("mlflow", uri, "/health")
    artifacts = settings.artifact_root(_configured["artifacts"])
    command = [console_script("mlflow"), "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
               # aiprim's experiments name their artifact folder themselves; one worker is plenty for one user.
               "--default-artifact-root", artifacts, "--no-serve-artifacts", "--workers", "1"]
    # The environment's MLFLOW_TRACKING_URI would be the server's own address for a client, never its store.
    env = {k: v for k, v in _server_env().items() if k != "MLFLOW_TRACKING_URI"}
    # MLflow's job runner (GenAI evaluation jobs, which aiprim never submits) is eight more processes importing
    # MLflow: half of the server's start-up CPU. Set the variable to true to have it anyway.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return Server("mlflow", f"http://{host}:{port}", "/health", command, env, _log_path("mlflow"))


def prefect_server(host: str, port: int) -> Server:
    """The Prefect UI and API over the project's Prefect home, or the server ``PREFECT_API_URL`` names."""
    external = os.environ.get("PREFECT_API_URL")
    if external:
        return Server("prefect", external.rstrip("/").removesuffix("/api"), "/api/health")
    command = [console_script("prefect"), "server", "start", "--host", host, "--port", str(port)]
    env = _server_env(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                      PREFECT_UI_API_URL=f"http://{host}:{port}/api")
    return Server("prefect", f"http://{host}:{port}", "/api/health", command, env, _log_path("prefect"))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created so from the start (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def dashboard_config(path: Path, storage: str, host: str, port: int) -> Path:
    """optuna-dashboard's settings as a private TOML file: a storage URL may hold a password, which must not sit
    on a command line (every local user's ``ps`` shows it)."""
    import json

    settings = {"storage": storage, "host": host, "port": port, "quiet": True}
    write_private(path, "[optuna_dashboard]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return path


def optuna_server(host: str, port: int, storage: str) -> Server:
    """optuna-dashboard over the studies' storage (SQLite by default, any RDB URL)."""
    import optuna

    # optuna-dashboard opens a storage without creating its tables: a project that never tuned has none yet.
    optuna.storages.RDBStorage(storage)
    config = dashboard_config(_log_path("optuna-dashboard").with_suffix(".toml"), storage, host, port)
    command = [console_script("optuna-dashboard"), "--from-config", str(config)]
    return Server("optuna", f"http://{host}:{port}", "/api/meta", command, _server_env(), _log_path("optuna-dashboard"))


def project_servers(cfg: dict, host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> list[Server]:
    """The three UIs over the stores ``cfg`` names (``flows.config.load()`` points MLflow at its store)."""
    from aiprim.settings import optuna_storage

    ports = {**DEFAULT_PORTS, **(ports or {})}
    _check_host(host)
    return [mlflow_server(host, ports["mlflow"]), prefect_server(host, ports["prefect"]),
            optuna_server(host, ports["optuna"], optuna_storage(cfg["optuna"]["storage"]))]


def _check_host(host: str) -> None:
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # The embedded stores have no authentication: serving them beyond this machine would publish them.
        raise AiprimError(f"--host {host}: the UIs bind to a loopback address only (127.0.0.1, ::1 or localhost)")


class RunningServers:
    """Start servers, wait until each answers, and stop all of them on exit, whatever the exit."""

    def __init__(self, servers: list[Server], timeout_s: float = STARTUP_TIMEOUT_S):
        self.servers, self.timeout_s = servers, timeout_s

    def __enter__(self) -> list[Server]:
        try:
            for server in self.servers:
                server.start()
            deadline = time.monotonic() + self.timeout_s
            for server in self.servers:
                if not server.external or server.answers():
                    server.wait_until_answering(deadline)
                else:
                    raise ServerFailed(f"the {server.name} server at {shown_url(server.url)} does not answer")
        except BaseException:
            self.stop()
            raise
        return self.servers

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        # A second Ctrl-C or SIGTERM while stopping would leave the rest running: hold them until all are down.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for server in self.servers:  # all at once: their grace periods overlap
                server.terminate()
            deadline = time.monotonic() + STOP_GRACE_S
            for server in reversed(self.servers):
                server.stop(max(0.0, deadline - time.monotonic()))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def serve(servers: list[Server]) -> int:
    """Start the UIs, print their URLs, serve until Ctrl-C or SIGTERM, stop everything; 0 on a requested stop."""
    try:
        with sigterm_raises(), RunningServers(servers):
            for server in servers:
                note = " (already running, not ours)" if server.external else ""
                print(f"{server.name + ':':<8} {shown_url(server.url)}{note}", flush=True)
            print("(Ctrl-C stops them)", flush=True)
            while True:
                for server in servers:
                    if server.exited() is not None:
                        raise ServerFailed(f"the {server.name} server exited with status {server.process.returncode} "
                                           f"(see {server.log_path}); stopped the others")
                time.sleep(0.5)
    except (KeyboardInterrupt, Terminated):
        print("stopped the UIs", flush=True)
        return 0


def print_commands(host: str = "127.0.0.1") -> None:
    """How to open the UIs by hand (what ``aiprim ui`` prints without --launch)."""
    from aiprim.registry._store import tracking_uri

    def script(name: str) -> str:  # as short as it can be and still run from the caller's folder
        path = Path(console_script(name))
        return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)

    print("Open the UIs:")
    print(f"  MLflow:  {script('mlflow')} server --backend-store-uri {shown_url(tracking_uri())} --host {host} --port {DEFAULT_PORTS['mlflow']}")
    print(f"  Prefect: {script('prefect')} server start --host {host} --port {DEFAULT_PORTS['prefect']}")
    print("  (or `aiprim ui --launch` for these and optuna-dashboard)")
