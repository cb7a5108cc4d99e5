"""``aiprim stack up|down|status``: the production-shaped stack as local processes on 127.0.0.1.

A PostgreSQL cluster of our own holds every store: MLflow's runs and registry
(database ``mlflow``) and its users (``mlflow_auth``), the Optuna studies
(``optuna``) and Prefect's state (``prefect``). Beside it: an MLflow tracking
server with proxied artifacts behind MLflow's basic-auth app, a Prefect server
behind its auth string with a process work pool and one worker, and
optuna-dashboard over the Optuna database.

Everything lives under ``<AIPRIM_HOME>/.stack/``: ``state.json`` (pids, URLs,
logs), ``credentials.json`` and ``stack.env`` (mode 0600: the secrets the
clients need), ``logs/<service>.log``, the cluster and the artifacts. The
cluster and the credentials outlive ``down``, so a later ``up`` finds the same
runs, models and studies; ``down --purge`` removes the folder.

Every service starts in a session of its own and its pid (= its process group
and session id) is recorded with the process's start time, so ``down`` signals
exactly what ``up`` started, never a process that reused a pid.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import time
from pathlib import Path

from .errors import AiprimError
from .ui import console_script, dashboard_config, stop_session, write_private

SERVICES = ("postgres", "mlflow", "prefect", "prefect_worker", "optuna_dashboard")
DATABASES = ("mlflow", "mlflow_auth", "optuna", "prefect")
WORK_POOL = "aiprim-process"
MLFLOW_ADMIN = "admin"
PREFECT_USER = "aiprim"
STARTUP_TIMEOUT_S = 600.0  # all services together; MLflow and Prefect migrate their schemas: minutes on two busy cores
STOP_GRACE_S = 20.0


class StackError(AiprimError):
    """A stack problem the user can act on; its message never holds a secret (see ``mask``)."""


# --- where things are -----------------------------------------------------------

def stack_dir() -> Path:
    from aiprim.settings import home

    return home() / ".stack"


def _state_path() -> Path:
    return stack_dir() / "state.json"


def _credentials_path() -> Path:
    return stack_dir() / "credentials.json"


def env_path() -> Path:
    """The client environment of a running stack: ``set -a; . .stack/stack.env; set +a``."""
    return stack_dir() / "stack.env"


def _log_path(service: str) -> Path:
    return stack_dir() / "logs" / f"{service}.log"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise StackError(f"{path}: not valid JSON ({error.msg}); `aiprim stack down --purge` starts over") from None


# --- secrets -------------------------------------------------------------------

def _credentials() -> dict:
    """The stack's secrets: kept from an earlier ``up`` (the cluster and MLflow's users remember them), else new."""
    known = _read_json(_credentials_path())
    if known:
        return known
    made = {"postgres_password": secrets.token_urlsafe(24),
            "mlflow_username": MLFLOW_ADMIN, "mlflow_password": secrets.token_urlsafe(24),
            "prefect_auth_string": f"{PREFECT_USER}:{secrets.token_urlsafe(24)}",
            # MLflow's auth app signs its CSRF tokens with it; the same across its workers and restarts.
            "mlflow_flask_secret_key": secrets.token_urlsafe(32)}
    write_private(_credentials_path(), json.dumps(made, indent=2))
    return made


def mask(text: str, credentials: dict | None = None) -> str:
    """``text`` with every stack secret and every password of a URL replaced by ``***``."""
    from urllib.parse import quote

    credentials = credentials if credentials is not None else (_read_json(_credentials_path()) or {})
    for key, value in credentials.items():
        if not key.endswith("username") and value:
            for form in {value, quote(value, safe=""), value.split(":", 1)[-1]}:
                text = text.replace(form, "***")
    return re.sub(r"(://[^:/@\s]+):[^@/\s]+@", r"\1:***@", text)


# --- processes -----------------------------------------------------------------

def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _is_ours(entry: dict) -> bool:
    """The recorded process is still the one we started (not a newer process that reused its pid)."""
    ticks = _start_ticks(entry["pid"])
    return ticks is not None and ticks == entry.get("start_ticks")


def _spawn(service: str, command: list[str], env: dict[str, str]) -> dict:
    import subprocess

    log = _log_path(service)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=stack_dir(), start_new_session=True)
    return {"pid": process.pid, "start_ticks": _start_ticks(process.pid), "log": str(log), "_process": process}


def _stop(entry: dict, grace_s: float) -> None:
    """SIGTERM to the service's process group, then SIGKILL to whatever of its session is left."""
    if _is_ours(entry):
        stop_session(entry["pid"], grace_s)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any client setting that would point a server at another server or store."""
    drop = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL",
            "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY", "AIPRIM_OPTUNA_STORAGE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", **extra)
    return env


# --- state ---------------------------------------------------------------------

def _load_state() -> dict:
    return _read_json(_state_path()) or {"services": {}}


def _save_state(state: dict) -> None:
    public = {"services": {name: {k: v for k, v in entry.items() if not k.startswith("_")}
                           for name, entry in state["services"].items()},
              **{k: v for k, v in state.items() if k != "services"}}
    _state_path().parent.mkdir(parents=True, exist_ok=True)
    _state_path().write_text(json.dumps(public, indent=2))


def status() -> dict:
    """``{"services": {name: {"url", "pid", "log", "auth", "alive"}}}`` of the stack ``up`` started (empty: none)."""
    state = _load_state()
    services = {}
    for name in SERVICES:
        entry = state["services"].get(name)
        if entry:
            services[name] = {"url": entry["url"], "pid": entry["pid"], "log": entry["log"], "auth": entry["auth"],
                              "alive": _is_ours(entry)}
    return {"services": services, "env": str(env_path()) if env_path().exists() else None}


def is_up() -> bool:
    return any(s["alive"] for s in status()["services"].values())


# --- up ------------------------------------------------------------------------

def client_environment(state: dict, credentials: dict) -> dict[str, str]:
    """What a client (``aiprim run``, ``aiprim tune``, MLflow's client, Prefect's) needs to use the stack."""
    ports = state["ports"]
    return {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        "MLFLOW_TRACKING_USERNAME": credentials["mlflow_username"],
        "MLFLOW_TRACKING_PASSWORD": credentials["mlflow_password"],
        "AIPRIM_OPTUNA_STORAGE": _postgres(state, credentials).url("optuna", "postgresql+psycopg"),
        "PREFECT_API_URL": f"http://127.0.0.1:{ports['prefect']}/api",
        "PREFECT_API_AUTH_STRING": credentials["prefect_auth_string"],
    }


def _postgres(state: dict, credentials: dict):
    from aiprim.primitives.query._postgres import LocalPostgres

    return LocalPostgres(directory=state["postgres_dir"], port=state["ports"]["postgres"],
                         settings={"max_connections": "200"}, password=credentials["postgres_password"])


def _postgres_dir() -> Path:
    """The cluster's folder: under .stack/ when the server's user can reach it; else a folder in /tmp.

    As root the server runs as ``postgres``, which cannot enter a private project folder (pytest's, a home)."""
    import subprocess
    import tempfile

    wanted = stack_dir() / "postgres"
    if os.geteuid() != 0:
        return wanted
    from aiprim.primitives.query._postgres import server_user

    wanted.mkdir(parents=True, exist_ok=True)
    reachable = subprocess.run(["runuser", "-u", server_user(), "--", "test", "-x", str(stack_dir())],
                               capture_output=True).returncode == 0
    if reachable:
        return wanted
    wanted.rmdir()
    return Path(tempfile.mkdtemp(prefix="aiprim-stack-pg-"))


def _wait_for(check, what: str, entry: dict, deadline: float) -> None:
    """Poll ``check()`` until it is true; fail naming the service and its log when it exits or times out."""
    process = entry.get("_process")
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what} exited with status {process.returncode} before answering (see {entry['log']})")
        if check():
            return
        time.sleep(0.5)
    raise StackError(f"{what} did not answer within {STARTUP_TIMEOUT_S:.0f} s (see {entry['log']})")


def _http(url: str, auth: tuple[str, str] | str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    """(HTTP status, body) of one GET, or POST of ``body`` (status 0: no answer); ``auth`` is (user, password)
    or a Prefect auth string."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    if auth is not None:
        token = auth if isinstance(auth, str) else f"{auth[0]}:{auth[1]}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        # Generous: a server's first request (schema checks, the admin user's password hash) is slow on busy cores.
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (OSError, ValueError):
        return 0, b""


def _http_status(url: str, auth: tuple[str, str] | str | None = None) -> int:
    return _http(url, auth)[0]


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _create_databases(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        existing = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                connection.execute(f'CREATE DATABASE "{name}"')


def _create_optuna_schema(url: str) -> None:
    """optuna-dashboard opens a storage without creating its tables; Optuna's own storage creates them."""
    import optuna

    optuna.storages.RDBStorage(url).remove_session()


def up(log=print) -> dict:
    """Start the stack, wait until every service answers, write ``stack.env``; returns ``status()``.

    A stack already running is an error (its URLs are in ``aiprim stack status``). A stack with some services
    down (an MLflow server that crashed or was killed) gets those restarted, on the same ports and with the
    same credentials, so its clients' environment stays valid; the services still up are left alone. A service
    that fails to start stops everything this call started.
    """
    previous = _load_state()
    running = {name for name, entry in previous["services"].items() if _is_ours(entry)}
    if running >= set(SERVICES):
        raise StackError(f"the stack is already up (see `aiprim stack status`; client environment: {env_path()})")
    if running and "postgres" not in running:
        # Every other service holds connections to it and its port: restart them all together.
        raise StackError(f"postgres is down while {', '.join(sorted(running))} still run: "
                         "`aiprim stack down`, then `aiprim stack up`")
    stack_dir().mkdir(parents=True, exist_ok=True)
    credentials = _credentials()
    if running:
        state = {"services": {name: previous["services"][name] for name in running}, "ports": previous["ports"],
                 "postgres_dir": previous["postgres_dir"]}
    else:
        state = {"services": {}, "ports": {name: _free_port() for name in ("postgres", "mlflow", "prefect", "optuna_dashboard")},
                 "postgres_dir": previous.get("postgres_dir") if Path(previous.get("postgres_dir") or "/nonexistent",
                                                                     "data", "PG_VERSION").exists() else None}
    try:
        _start_all(state, credentials, log, keep=running)
    except BaseException as error:
        for name in reversed(SERVICES):
            if name in state["services"] and name not in running:
                _stop(state["services"][name], STOP_GRACE_S)
        _save_state({**state, "services": {name: state["services"][name] for name in running}})
        if isinstance(error, KeyboardInterrupt):
            raise
        if isinstance(error, StackError):
            raise StackError(mask(str(error), credentials)) from None
        raise StackError(f"stack up failed: {mask(f'{type(error).__name__}: {error}', credentials)}") from None
    environment = client_environment(state, credentials)
    write_private(env_path(), "".join(f"{k}={shlex.quote(v)}\n" for k, v in environment.items()))
    return status()


def _start_all(state: dict, credentials: dict, log, keep: set[str] = frozenset()) -> None:
    """Start every service but those in ``keep`` (running already), then wait until each answers."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    ports = state["ports"]

    # PostgreSQL: a cluster of our own (kept across down/up), password-protected (SCRAM), 127.0.0.1 only.
    if state["postgres_dir"] is None:
        state["postgres_dir"] = str(_postgres_dir())
        pg = _postgres(state, credentials)
        pg.init_cluster()
    pg = _postgres(state, credentials)
    if "postgres" not in keep:
        entry = _spawn("postgres", pg.server_command(), _clean_env())
        state["services"]["postgres"] = {**entry, "url": f"postgresql://127.0.0.1:{ports['postgres']}",
                                         "auth": "password (scram-sha-256)"}
        _save_state(state)
    _wait_for(lambda: _postgres_answers(pg.dsn), "postgres", state["services"]["postgres"], deadline)
    _create_databases(pg.dsn)
    log(f"postgres          {state['services']['postgres']['url']}")

    # MLflow and Prefect start together: each takes seconds to import and migrate its schema.
    if "mlflow" not in keep:
        state["services"]["mlflow"] = _start_mlflow(state, credentials, pg)
    if "prefect" not in keep:
        state["services"]["prefect"] = _start_prefect(state, credentials, pg)
    _save_state(state)
    _create_optuna_schema(pg.url("optuna", "postgresql+psycopg"))
    if "optuna_dashboard" not in keep:
        state["services"]["optuna_dashboard"] = _start_dashboard(state, pg)
    _save_state(state)
    mlflow_auth = (credentials["mlflow_username"], credentials["mlflow_password"])
    mlflow_url = state["services"]["mlflow"]["url"]
    _wait_for(lambda: _http_status(f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", mlflow_auth) == 200,
              "the MLflow server", state["services"]["mlflow"], deadline)
    log(f"mlflow            {mlflow_url}")
    prefect_api = f"{state['services']['prefect']['url']}/api"
    auth_string = credentials["prefect_auth_string"]
    _wait_for(lambda: _http_status(f"{prefect_api}/health") == 200 and
              _http_status(f"{prefect_api}/admin/version", auth_string) == 200,
              "the Prefect server", state["services"]["prefect"], deadline)
    log(f"prefect           {state['services']['prefect']['url']}")
    dashboard = state["services"]["optuna_dashboard"]
    _wait_for(lambda: _http_status(f"{dashboard['url']}/api/meta") == 200, "optuna-dashboard", dashboard, deadline)
    log(f"optuna_dashboard  {dashboard['url']}")

    if "prefect_worker" not in keep:
        state["services"]["prefect_worker"] = _start_worker(state, credentials)
    _save_state(state)
    _wait_for(lambda: _worker_online(prefect_api, auth_string),
              "the Prefect worker", state["services"]["prefect_worker"], deadline)
    log(f"prefect_worker    pool {WORK_POOL}")


def _worker_online(prefect_api: str, auth_string: str) -> bool:
    code, payload = _http(f"{prefect_api}/work_pools/{WORK_POOL}/workers/filter", auth_string, body={})
    return code == 200 and any(worker.get("status") == "ONLINE" for worker in json.loads(payload))


def _start_mlflow(state: dict, credentials: dict, pg) -> dict:
    port = state["ports"]["mlflow"]
    artifacts = stack_dir() / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    auth_config = stack_dir() / "mlflow" / "basic_auth.ini"
    # The database URLs hold the cluster's password: in a 0600 file and the environment, never on a command line.
    write_private(auth_config, "\n".join([
        "[mlflow]",
        "default_permission = NO_PERMISSIONS",
        f"database_uri = {pg.url('mlflow_auth', 'postgresql+psycopg')}".replace("%", "%%"),
        f"admin_username = {credentials['mlflow_username']}",
        f"admin_password = {credentials['mlflow_password']}".replace("%", "%%"),
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth", ""]))
    command = [console_script("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
               "--app-name", "basic-auth", "--serve-artifacts", "--artifacts-destination", str(artifacts)]
    env = _clean_env(MLFLOW_BACKEND_STORE_URI=pg.url("mlflow", "postgresql+psycopg"), MLFLOW_AUTH_CONFIG_PATH=str(auth_config),
                     MLFLOW_FLASK_SERVER_SECRET_KEY=credentials["mlflow_flask_secret_key"])
    return {**_spawn("mlflow", command, env), "url": f"http://127.0.0.1:{port}", "auth": "basic (MLflow basic-auth app)"}


def _start_prefect(state: dict, credentials: dict, pg) -> dict:
    port = state["ports"]["prefect"]
    command = [console_script("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = _clean_env(PREFECT_HOME=str(stack_dir() / "prefect"),
                     PREFECT_SERVER_API_AUTH_STRING=credentials["prefect_auth_string"],
                     PREFECT_SERVER_DATABASE_CONNECTION_URL=pg.url("prefect", "postgresql+asyncpg"),
                     PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api")
    return {**_spawn("prefect", command, env), "url": f"http://127.0.0.1:{port}", "auth": "basic (Prefect auth string)"}


def _start_dashboard(state: dict, pg) -> dict:
    port = state["ports"]["optuna_dashboard"]
    config = dashboard_config(stack_dir() / "optuna_dashboard.toml", pg.url("optuna", "postgresql+psycopg"), "127.0.0.1", port)
    command = [console_script("optuna-dashboard"), "--from-config", str(config)]
    return {**_spawn("optuna_dashboard", command, _clean_env()), "url": f"http://127.0.0.1:{port}",
            "auth": "none (optuna-dashboard has no authentication; bound to 127.0.0.1)"}


def _start_worker(state: dict, credentials: dict) -> dict:
    command = [console_script("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", "aiprim-worker-1"]
    # The worker's flow runs use the stack as `aiprim run` would after sourcing stack.env.
    from aiprim.settings import home

    env = _clean_env(PREFECT_HOME=str(stack_dir() / "prefect"), AIPRIM_HOME=str(home()),
                     PREFECT_WORKER_QUERY_SECONDS="2", **client_environment(state, credentials))
    return {**_spawn("prefect_worker", command, env), "url": f"{WORK_POOL} (work pool)", "auth": "client of the Prefect server"}


# --- down ----------------------------------------------------------------------

def down(purge: bool = False, grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop exactly the services ``up`` recorded (clients first, the database last); returns their names."""
    state = _load_state()
    stopped = []
    for name in reversed(SERVICES):
        entry = state["services"].get(name)
        if entry and _is_ours(entry):
            _stop(entry, grace_s)
            stopped.append(name)
    _save_state({**state, "services": {}})
    env_path().unlink(missing_ok=True)
    if purge:
        if state.get("postgres_dir") and not Path(state["postgres_dir"]).is_relative_to(stack_dir()):
            shutil.rmtree(state["postgres_dir"], ignore_errors=True)
        shutil.rmtree(stack_dir(), ignore_errors=True)
    return stopped


# --- command line --------------------------------------------------------------

def command(args) -> int:
    """``aiprim stack up|down|status [--json] [--purge]``."""
    from aiprim._console import log

    if args.action == "up":
        up(log=lambda line: log(f"stack: {line}"))
        _print_status(status())
        print(f"\nclient environment (credentials; mode 0600): set -a; . {env_path()}; set +a")
        return 0
    if args.action == "run":
        from . import stack_run

        return stack_run.command(args)
    if args.action == "down":
        stopped = down(purge=args.purge)
        print(f"stopped: {', '.join(stopped)}" if stopped else "the stack was not running")
        return 0
    current = status()
    if args.json:
        print(json.dumps({"services": current["services"]}))
    elif not current["services"]:
        print("the stack is not running (`aiprim stack up` starts it)")
    else:
        _print_status(current)
    return 0


def _print_status(current: dict) -> None:
    for name, service in current["services"].items():
        state = "up" if service["alive"] else "DOWN"
        print(f"{name:<17} {state:<5} {service['url']:<32} pid {service['pid']:<8} log {service['log']}")
