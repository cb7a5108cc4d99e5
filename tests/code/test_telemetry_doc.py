"""TELEMETRY.md and the declarative schemas say the same thing.

The document is the public contract users write their snapshots against; the
schemas (``aiprim.primitives.get(name).schema``) are what the validation
enforces. Every table (required or optional), column (type, nullable,
optional), manifest key and drift watch is compared both ways, so renaming a
column in one place and not the other fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiprim import primitives

DOC = Path(__file__).resolve().parents[2] / "TELEMETRY.md"
TABLE_HEADING = re.compile(r"^`(\w+)\.parquet` \((required|optional)\b")
COLUMN_FLAGS = {"nullable", "optional"}


def _markdown_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(the last non-blank line before the table, header cells, body rows) of each Markdown table."""
    tables, heading, block = [], "", []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            body = [row for row in block[1:] if not all(set(cell) <= set("-: ") for cell in row)]
            tables.append((heading, block[0], body))
            block = []
        if line.strip():
            heading = line.strip()
    return tables


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## +(.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def _documented_tables(section: str) -> dict[str, tuple[bool, dict[str, tuple[str, bool, bool]]]]:
    """{table: (required, {column: (type, nullable, required)})} as a primitive's section declares them."""
    out = {}
    for heading, header, rows in _markdown_tables(section):
        if header[:2] != ["column", "type"]:
            continue
        match = TABLE_HEADING.match(heading)
        assert match, f"a column table must follow a line '`<table>.parquet` (required|optional)...', not {heading!r}"
        columns = {}
        for row in rows:
            dtype, *flags = [token.strip() for token in row[1].split(",")]
            assert set(flags) <= COLUMN_FLAGS, f"{match[1]}: unknown flags {flags} in type cell {row[1]!r}"
            for name in (n.strip() for n in row[0].split(",")):
                assert name not in columns, f"{match[1]}.{name} is documented twice"
                columns[name] = (dtype, "nullable" in flags, "optional" not in flags)
        out[match[1]] = (match[2] == "required", columns)
    return out


def _declared_tables(name: str) -> dict[str, tuple[bool, dict[str, tuple[str, bool, bool]]]]:
    return {
        table.name: (table.required, {c.name: (c.dtype, c.nullable, c.required) for c in table.columns})
        for table in primitives.get(name).schema.tables
    }


def _rows_of(section: str, header: list[str]) -> list[list[str]]:
    return [row for _, head, rows in _markdown_tables(section) if head == header for row in rows]


def _shipped() -> list[str]:
    """The primitives aiprim ships. A third-party one another test registered in this process (the contract
    tests' ``admission``) documents its telemetry in its own distribution, not in TELEMETRY.md."""
    return [name for name in primitives.names() if primitives.get(name).__module__.startswith("aiprim.")]


@pytest.fixture(scope="module")
def sections() -> dict[str, str]:
    return _sections(DOC.read_text())


def test_every_primitive_has_a_section(sections):
    missing = sorted(set(_shipped()) - set(sections))
    assert not missing, f"TELEMETRY.md has no '## <primitive>' section for {missing}"


def test_only_primitives_of_the_code_document_tables(sections):
    strangers = sorted(title for title, body in sections.items() if _documented_tables(body) and title not in _shipped())
    assert not strangers, f"TELEMETRY.md documents tables of {strangers}, which no primitive of the code declares"


def test_tables_and_columns_match_the_schemas(sections):
    problems = []
    for name in _shipped():
        documented, declared = _documented_tables(sections.get(name, "")), _declared_tables(name)
        for table in sorted(set(documented) | set(declared)):
            if table not in documented or table not in declared:
                problems.append(f"{name}: table {table} is only in the {'schema' if table in declared else 'document'}")
                continue
            (doc_required, doc_columns), (required, columns) = documented[table], declared[table]
            if doc_required != required:
                problems.append(f"{name}: table {table} is {'required' if required else 'optional'} in the schema")
            for column in sorted(set(doc_columns) | set(columns)):
                if column not in doc_columns or column not in columns:
                    where = "schema" if column in columns else "document"
                    problems.append(f"{name}: column {table}.{column} is only in the {where}")
                elif doc_columns[column] != columns[column]:
                    problems.append(f"{name}: column {table}.{column} is (type, nullable, required) "
                                    f"{columns[column]} in the schema, {doc_columns[column]} in the document")
    assert not problems, "TELEMETRY.md and the schemas differ:\n" + "\n".join(problems)


def test_manifest_keys_match(sections):
    for name in _shipped():
        documented = [row[0] for row in _rows_of(sections.get(name, ""), ["manifest key", "meaning"])]
        assert sorted(documented) == sorted(primitives.get(name).manifest_keys), f"{name}: manifest keys differ"


def test_drift_watches_match(sections):
    documented = {(p, t, c.strip()): watch for p, t, columns, watch in _rows_of(sections["Drift"], ["primitive", "table", "column", "watch"])
                  for c in columns.split(",")}
    declared = {(name, table.name, col.name): col.drift for name in _shipped()
                for table in primitives.get(name).schema.tables for col in table.columns if col.drift}
    assert documented == declared


def test_prose_names_only_real_columns():
    """`table.column` in the prose (e.g. in the extension notes) names a column of that table."""
    columns = {table.name: {c.name for c in table.columns} for name in _shipped() for table in primitives.get(name).schema.tables}
    wrong = sorted({f"{t}.{c}" for t, c in re.findall(r"`(\w+)\.(\w+)`", DOC.read_text()) if t in columns and c not in columns[t] | {"parquet"}})
    assert not wrong, f"TELEMETRY.md names columns no schema has: {wrong}"
