"""Engine adapters: one interface over DuckDB (embedded) and PostgreSQL (a server).

An engine knows its arms (hint sets), how to plan a query under an arm
(``EXPLAIN`` as JSON), and how to run it under an arm with a time limit that
cancels a runaway plan instead of hanging the caller. Everything the model
sees of a plan goes through the engine layer, which is engine
agnostic, so one value model serves both engines.

Settings travel as ``"name=value"`` strings (TELEMETRY.md: a JSON list of
session settings). They are never pasted into SQL unchecked: names must be
identifiers and values plain words, so a snapshot cannot smuggle statements in.
"""

from __future__ import annotations

import abc
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path


class QueryError(ValueError):
    """A query or arm the engine cannot handle; the message names it."""


@dataclass(frozen=True)
class Arm:
    arm: int
    name: str
    settings: tuple[str, ...] = ()

    def settings_json(self) -> str:
        return json.dumps(list(self.settings))


@dataclass(frozen=True)
class Execution:
    latency_ms: float | None  # None when timed out
    rows: int | None
    timed_out: bool


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_VALUE = re.compile(r"^[A-Za-z0-9_.,+\- ]*$")


def parse_settings(text) -> list[tuple[str, str]]:
    """``'["enable_nestloop=off"]'`` -> ``[("enable_nestloop", "off")]``; ValueError says what is wrong."""
    try:
        items = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise ValueError(f"settings {text!r}: not JSON") from None
    if not isinstance(items, list):
        raise ValueError(f"settings {text!r}: not a JSON list")
    out = []
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"setting {item!r}: expected \"name=value\"")
        name, value = (part.strip() for part in item.split("=", 1))
        if not _NAME.match(name) or not _VALUE.match(value):
            raise ValueError(f"setting {item!r}: name must be an identifier and value a plain word")
        out.append((name, value))
    return out


_WRITE_WORDS = re.compile(
    r"\b(insert|update|delete|merge|upsert|create|drop|alter|truncate|copy|grant|revoke|call|vacuum|attach|detach|"
    r"install|load|pragma|set|reset|checkpoint|export|import|lock|refresh|comment)\b",
    re.IGNORECASE,
)


def _strip_literals_and_comments(sql: str) -> str:
    sql = re.sub(r"--[^\n]*", " ", sql)
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.DOTALL)
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    return re.sub(r'"(?:[^"]|"")*"', '""', sql)


def check_read_only(sql) -> str:
    """The statement without a trailing semicolon, if ``sql`` is exactly one read-only statement; else ValueError.

    A cheap lexical guard that needs no engine; the engines add their own
    (DuckDB opens read-only, PostgreSQL runs read-only transactions).
    """
    if not isinstance(sql, str) or not sql.strip():
        raise ValueError("empty statement")
    bare = _strip_literals_and_comments(sql).strip()
    statements = [s for s in bare.split(";") if s.strip()]
    if len(statements) != 1:
        raise ValueError(f"{len(statements)} statements; exactly one is allowed")
    first = statements[0].split(None, 1)[0].lower()
    if first not in ("select", "with", "values", "table", "from", "("):
        raise ValueError(f"a {first.upper()} statement is not read-only")
    write = _WRITE_WORDS.search(statements[0])
    if write:
        raise ValueError(f"read-only statements only, found {write.group(1).upper()}")
    return sql.strip().rstrip(";").strip()


class Engine(abc.ABC):
    """A database the optimizer steers through hint sets."""

    name: str

    @abc.abstractmethod
    def default_arms(self) -> list[Arm]:
        """The hint sets; arm 0 is the engine's own choice with no settings."""

    @abc.abstractmethod
    def connect(self, uri: str):
        """A read-only connection; QueryError names the database when it cannot be reached."""

    def _apply(self, connection, settings: list[tuple[str, str]]) -> None:
        # The same SQL on both engines; values are checked words (parse_settings), quoted as literals.
        for name, value in settings:
            connection.execute(f"SET {name} = '{value}'")

    def _reset(self, connection, settings: list[tuple[str, str]]) -> None:
        for name, _ in settings:
            connection.execute(f"RESET {name}")

    @abc.abstractmethod
    def _explain(self, connection, sql: str) -> str: ...

    @abc.abstractmethod
    def _execute(self, connection, sql: str, timeout_ms: float) -> Execution: ...

    def with_arm(self, connection, arm: Arm, work):
        settings = parse_settings(list(arm.settings))
        try:
            self._apply(connection, settings)
        except Exception as error:  # the engine rejects the setting: name the arm
            self._reset_quietly(connection, settings)
            raise QueryError(f"arm {arm.arm} ({arm.name}): the engine rejects its settings: {_first_line(error)}") from None
        try:
            return work()
        finally:
            self._reset_quietly(connection, settings)

    def _reset_quietly(self, connection, settings) -> None:
        try:
            self._reset(connection, settings)
        except Exception:  # a setting that never applied cannot be reset either
            pass

    def plan(self, connection, sql: str, arm: Arm) -> str:
        """The plan under ``arm`` as JSON text."""
        def explain():
            try:
                return self._explain(connection, sql)
            except QueryError:
                raise
            except Exception as error:
                raise QueryError(f"cannot plan: {_first_line(error)}") from None

        return self.with_arm(connection, arm, explain)

    def run(self, connection, sql: str, arm: Arm, timeout_ms: float) -> Execution:
        """Run under ``arm``; a run past ``timeout_ms`` is cancelled and reported as timed out."""
        return self.with_arm(connection, arm, lambda: self._execute(connection, sql, timeout_ms))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# --- DuckDB -------------------------------------------------------------------

class DuckDBEngine(Engine):
    """DuckDB, embedded. Arms toggle optimizer passes (join ordering, build/probe side
    selection, join filter pushdown) because DuckDB has no per-operator enable switches."""

    name = "duckdb"

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def default_arms(self) -> list[Arm]:
        return [
            Arm(0, "native"),
            Arm(1, "no join ordering", ("disabled_optimizers=join_order",)),
            Arm(2, "no build-side flip", ("disabled_optimizers=build_side_probe_side",)),
            Arm(3, "no join filter pushdown", ("disabled_optimizers=join_filter_pushdown",)),
            Arm(4, "written order, no flip", ("disabled_optimizers=join_order,build_side_probe_side",)),
            Arm(5, "no statistics propagation", ("disabled_optimizers=statistics_propagation",)),
        ]

    def connect(self, uri: str):
        import duckdb

        path = Path(uri)
        if not path.exists():
            raise QueryError(f"database {uri}: DuckDB file not found")
        try:
            connection = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as error:
            raise QueryError(f"database {uri}: cannot open ({_first_line(error)})") from None
        if self.threads:
            connection.execute(f"SET threads = {int(self.threads)}")
        return connection

    def _explain(self, connection, sql):
        rows = connection.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()
        return rows[0][1]

    def _execute(self, connection, sql, timeout_ms):
        import duckdb

        timer = threading.Timer(timeout_ms / 1000.0, connection.interrupt)
        started = time.perf_counter()
        timer.start()
        try:
            rows = connection.execute(sql).fetchall()
        except duckdb.InterruptException:
            return Execution(None, None, True)
        except duckdb.Error as error:
            raise QueryError(f"cannot run: {_first_line(error)}") from None
        finally:
            timer.cancel()
        elapsed = (time.perf_counter() - started) * 1000.0
        if elapsed > timeout_ms:  # finished in the instant the timer fired
            return Execution(None, None, True)
        return Execution(elapsed, len(rows), False)


# --- PostgreSQL ---------------------------------------------------------------

class PostgresEngine(Engine):
    """A PostgreSQL server. Arms are Bao's hint sets over the planner's enable_* switches."""

    name = "postgres"

    def default_arms(self) -> list[Arm]:
        return [
            Arm(0, "native"),
            Arm(1, "no nested loop", ("enable_nestloop=off",)),
            Arm(2, "no hash join", ("enable_hashjoin=off",)),
            Arm(3, "no merge join", ("enable_mergejoin=off",)),
            Arm(4, "hash joins only", ("enable_nestloop=off", "enable_mergejoin=off")),
            Arm(5, "no index scans", ("enable_indexscan=off", "enable_indexonlyscan=off")),
            Arm(6, "no sequential scans", ("enable_seqscan=off",)),
        ]

    def connect(self, uri: str):
        import psycopg

        try:
            # prepare_threshold=None: psycopg otherwise prepares a statement from its fifth execution on,
            # and PostgreSQL keeps that cached plan after `SET enable_* = off`, so every arm ran one plan.
            connection = psycopg.connect(uri, autocommit=True, connect_timeout=5, prepare_threshold=None)
        except psycopg.Error as error:
            raise QueryError(f"database {redact(uri)}: cannot connect ({_first_line(error)})") from None
        # Every statement runs in a read-only transaction: a write cannot slip through.
        connection.execute("SET default_transaction_read_only = on")
        return connection

    def _explain(self, connection, sql):
        import psycopg

        try:
            plan = connection.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchone()[0]
        except psycopg.Error as error:
            raise QueryError(f"cannot plan: {_first_line(error)}") from None
        return plan if isinstance(plan, str) else json.dumps(plan)

    def _execute(self, connection, sql, timeout_ms):
        import psycopg

        connection.execute(f"SET statement_timeout = {max(1, int(timeout_ms))}")
        started = time.perf_counter()
        try:
            rows = connection.execute(sql).fetchall()
        except psycopg.errors.QueryCanceled:
            return Execution(None, None, True)
        except psycopg.Error as error:
            raise QueryError(f"cannot run: {_first_line(error)}") from None
        finally:
            connection.execute("RESET statement_timeout")
        return Execution((time.perf_counter() - started) * 1000.0, len(rows), False)


def redact(uri: str) -> str:
    """A DSN with its password masked, fit for an error line."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri)


ENGINES = {"duckdb": DuckDBEngine, "postgres": PostgresEngine}


def engine_named(name: str, **options) -> Engine:
    if name not in ENGINES:
        raise QueryError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})")
    return ENGINES[name](**options)


def engine_for_uri(uri: str) -> Engine:
    return engine_named("postgres" if str(uri).startswith(("postgresql://", "postgres://")) else "duckdb")


def engine_of(connection) -> Engine:
    """The engine behind a live connection, without importing either driver."""
    module = type(connection).__module__
    if module.startswith("duckdb") or module.startswith("_duckdb"):
        return DuckDBEngine()
    if module.startswith("psycopg"):
        return PostgresEngine()
    raise QueryError(f"unsupported connection type {type(connection).__qualname__} (DuckDB or psycopg 3)")


def arms_from_table(frame) -> list[Arm]:
    return [Arm(int(r.arm), str(r.name), tuple(f"{n}={v}" for n, v in parse_settings(r.settings)))
            for r in frame.sort_values("arm").itertuples()]
