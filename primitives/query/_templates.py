"""What a query is, beyond its plan: its template and how selective its constants are (after Kepler).

A query's *template* is its SQL with every literal replaced by ``?``; its
*fingerprint* a hash of that text, so the same statement with other constants
is the same template, and a user's own query log groups itself without a
``template`` column. Its *parameters* are the literals, in order.

A *selectivity probe* is a ``COUNT(*)`` over one base table with the constant
predicates the query puts on that table (``t.genre_id = 6 AND t.year BETWEEN
1990 AND 2000``): the true number of rows that survive, which is what a
planner's estimate gets wrong on skewed data. The probe statements are built
once per template with sqlglot (parsing takes milliseconds) and filled with a
query's literals by string substitution on the hot path (microseconds); their
counts are cached per constant tuple.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

# A string literal ('it''s'), or a number that is not part of a name (t1, x.5) and not a marker.
_LITERAL = re.compile(r"'(?:[^']|'')*'|(?<![\w.$])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
_MARKER = re.compile(r"'__aiprim_(\d+)__'")
MAX_PROBES = 8           # probe slots per query: the model's input width is fixed
FEATURES_PER_PROBE = 3   # log10 surviving rows, log10 selectivity, present
N_AGGREGATES = 2         # over all probes: log10 of the product of surviving rows, and of the selectivities
N_FEATURES = MAX_PROBES * FEATURES_PER_PROBE + 2 * N_AGGREGATES  # ... and both relative to the template's usual values


def split_literals(sql: str) -> tuple[str, list[str]]:
    """(the template text with ``?`` for every literal, the literals in order)."""
    values: list[str] = []

    def keep(match: re.Match) -> str:
        values.append(match.group(0))
        return "?"

    return _LITERAL.sub(keep, " ".join(sql.split())), values


def fingerprint(sql: str) -> str:
    """The template's id: a short hash of the SQL with its constants stripped."""
    return hashlib.sha1(split_literals(sql)[0].lower().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Probe:
    table: str       # the base table, as written in the query
    count_sql: str   # COUNT(*) with the table's constant predicates; literals as '__aiprim_<i>__' markers


def probes_of(sql: str, dialect: str = "duckdb") -> tuple[Probe, ...]:
    """The selectivity probes of a query's template (at most ``MAX_PROBES``, in the order the tables appear).

    Only a plain SELECT's FROM and JOIN tables are probed, each with the conjuncts of its WHERE and ON
    clauses that name that table alone and hold a constant. A statement sqlglot cannot read has no probes.
    """
    import sqlglot
    from sqlglot import exp

    skeleton, values = split_literals(sql)
    marked = iter(range(len(values)))
    text = re.sub(r"\?", lambda _: f"'__aiprim_{next(marked)}__'", skeleton)
    try:
        tree = sqlglot.parse_one(text, dialect=dialect)
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError, StopIteration):
        return ()
    if not isinstance(tree, exp.Select):
        return ()
    tables: dict[str, str] = {}
    for table in [tree.args.get("from") or tree.args.get("from_")] + list(tree.args.get("joins") or []):
        if table is None:
            continue
        node = table.this if not isinstance(table, exp.Table) else table
        if isinstance(node, exp.Table):
            tables[node.alias_or_name] = node.sql(dialect=dialect).split(" AS ")[0].split(" ")[0]
    def conjuncts(node):
        return list(node.flatten()) if isinstance(node, exp.And) else [node]

    conditions = conjuncts(tree.args["where"].this) if tree.args.get("where") else []
    for join in tree.args.get("joins") or []:
        if join.args.get("on") is not None:
            conditions += conjuncts(join.args["on"])
    by_alias: dict[str, list[str]] = {}
    for condition in conditions:
        owners = {column.table or (next(iter(tables)) if len(tables) == 1 else "") for column in condition.find_all(exp.Column)}
        constant = any(_MARKER.fullmatch(literal.sql(dialect=dialect)) for literal in condition.find_all(exp.Literal))
        if len(owners) == 1 and constant and next(iter(owners)) in tables:
            by_alias.setdefault(next(iter(owners)), []).append(condition.sql(dialect=dialect))
    # Equivalence classes, as a planner derives them: `t.country_id = tc.id AND tc.id = 15` also means
    # `t.country_id = 15`, which is what makes the probe of t see the correlation the query selects on.
    for alias, column, literal in _implied_equalities(conditions, tables, dialect):
        implied = f"{alias}.{column} = {literal}"
        if implied not in by_alias.get(alias, []):
            by_alias.setdefault(alias, []).append(implied)
    probes = []
    for alias, table in tables.items():
        if alias in by_alias:
            where = " AND ".join(f"({c})" for c in by_alias[alias])
            probes.append(Probe(table, f"SELECT COUNT(*) FROM {table} AS {alias} WHERE {where}"))
    return tuple(probes[:MAX_PROBES])


def _implied_equalities(conditions, tables: dict, dialect: str):
    """(alias, column, literal) for every column joined by equalities to a column fixed to a constant."""
    from sqlglot import exp

    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(node):
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    fixed: dict[tuple[str, str], str] = {}
    for condition in conditions:
        if not isinstance(condition, exp.EQ):
            continue
        left, right = condition.this, condition.expression
        if isinstance(left, exp.Column) and isinstance(right, exp.Column) and left.table and right.table:
            parent[find((left.table, left.name))] = find((right.table, right.name))
        for column, other in ((left, right), (right, left)):
            if isinstance(column, exp.Column) and column.table and isinstance(other, exp.Literal):
                fixed[(column.table, column.name)] = other.sql(dialect=dialect)
    constants = {find(node): literal for node, literal in fixed.items()}
    for node in list(parent):
        root = find(node)
        if root in constants and node not in fixed and node[0] in tables:
            yield node[0], node[1], constants[root]


def render(probe: Probe, values: list[str]) -> str:
    return _MARKER.sub(lambda m: values[int(m.group(1))], probe.count_sql)


def probe_features(counts: list[tuple[int, int]], usual: tuple[float, ...] | None = None) -> np.ndarray:
    """(surviving rows, table rows) per probe -> the model's fixed-width input (unused slots are zeros).

    The aggregates are what the independence assumption makes of the probes together: the log of
    the product of surviving rows is the size of the join before its join predicates, the quantity
    that separates a template's slow parameterisations from its fast ones. ``usual`` (mean and
    spread of both aggregates over the template's training queries) adds them relative to the
    template, so "heavier than this template's usual" is one input, not something to learn.
    """
    out = np.zeros(N_FEATURES, np.float32)
    slots = MAX_PROBES * FEATURES_PER_PROBE
    for i, (count, rows) in enumerate(counts[:MAX_PROBES]):
        out[i * FEATURES_PER_PROBE: (i + 1) * FEATURES_PER_PROBE] = (
            np.log10(count + 1.0) / 7.0, np.log10((count + 1.0) / (rows + 1.0)) / 7.0, 1.0)
    aggregates = aggregate_probes(counts)
    out[slots: slots + N_AGGREGATES] = aggregates / 20.0
    if usual is not None:
        mean, spread = np.asarray(usual[:N_AGGREGATES]), np.asarray(usual[N_AGGREGATES:])
        out[slots + N_AGGREGATES:] = np.clip((aggregates - mean) / np.maximum(spread, 0.25), -4.0, 4.0)
    return out


def aggregate_probes(counts: list[tuple[int, int]]) -> np.ndarray:
    """log10 of the product of surviving rows and of the product of selectivities, over a query's probes."""
    if not counts:
        return np.zeros(N_AGGREGATES)
    count, rows = np.array(counts, float).T
    return np.array([np.log10(count + 1.0).sum(), np.log10((count + 1.0) / (rows + 1.0)).sum()])


class _Bounded(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def remember(self, key, value):
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class Prober:
    """Runs a query's probes on a connection, with the caches that keep it cheap on the hot path.

    Caches: probe statements per template (parsing is the slow part), counts per rendered probe
    (the same constants come back), and each table's row count (read once).
    """

    def __init__(self, dialect: str = "duckdb", cache_size: int = 20_000):
        self.dialect = dialect
        self.plans: _Bounded = _Bounded(2_000)
        self.counts: _Bounded = _Bounded(cache_size)
        self.rows: dict[str, int] = {}

    def template(self, sql: str) -> tuple[str, tuple[Probe, ...], list[str]]:
        skeleton, values = split_literals(sql)
        key = hashlib.sha1(skeleton.lower().encode()).hexdigest()[:16]
        probes = self.plans.get(key)
        if probes is None:
            probes = self.plans.remember(key, probes_of(sql, self.dialect))
        return key, probes, values

    def measure(self, sql: str, connection) -> tuple[str, list[tuple[int, int]]]:
        """(fingerprint, [(surviving rows, table rows)] per probe) of one query on ``connection``."""
        key, probes, values = self.template(sql)
        measured = []
        for probe in probes:
            text = render(probe, values)
            count = self.counts.get(text)
            if count is None:
                count = self.counts.remember(text, int(connection.execute(text).fetchone()[0]))
            if probe.table not in self.rows:
                self.rows[probe.table] = int(connection.execute(f"SELECT COUNT(*) FROM {probe.table}").fetchone()[0])
            measured.append((count, self.rows[probe.table]))
        return key, measured
