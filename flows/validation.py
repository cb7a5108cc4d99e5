"""Validate a telemetry snapshot: manifest, Parquet files, types, then the GX suites.

Structural problems (a missing table, a corrupt file, a hash that does not
match, a wrong Arrow type) are found first, because Great Expectations can
only judge values it can read. The value rules, and the drift check against
the last accepted snapshot's workload shape, run as one GX checkpoint per
snapshot and write Data Docs to a folder the failure message names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from aiprim.primitives import Primitive
from aiprim.primitives._expectations import (
    DRIFT_PREFIX,
    RULE_PREFIX,
    describe_failure,
    distribution_drift_columns,
    expectations_for,
    workload_shape,
)
from aiprim.primitives._snapshot import (
    SnapshotError,
    arrow_to_pandas,
    arrow_type_matches,
    conform,
    read_manifest,
    read_table,
    sha256_file,
)


@dataclass
class ValidationReport:
    primitive: str
    snapshot: str
    failures: list[str] = field(default_factory=list)
    docs: str | None = None
    stats: dict = field(default_factory=dict)  # the workload's shape: the next snapshot's drift reference, when valid

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.ok:
            return f"{self.primitive} snapshot {Path(self.snapshot).name}: valid"
        more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        docs = f"; Data Docs: {self.docs}" if self.docs else ""
        return f"{self.primitive} snapshot {Path(self.snapshot).name} rejected: {self.failures[0]}{more}{docs}"


def workload_shapes(primitive: Primitive, tables: dict[str, pd.DataFrame]) -> dict:
    """Each table's workload shape (row count, watched columns), stored for the next snapshot's drift check."""
    return {table.name: workload_shape(table, tables[table.name]) for table in primitive.schema.tables if table.name in tables}


def check_structure(primitive: Primitive, directory: Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Read what can be read; return the frames and the structural failures."""
    failures = []
    try:
        manifest = read_manifest(directory)
    except SnapshotError as error:
        return {}, [str(error)]
    if manifest.get("primitive") != primitive.name:
        failures.append(f"manifest.json: primitive is {manifest.get('primitive')!r}, expected {primitive.name!r}")
    if manifest.get("schema_version") != primitive.schema.version:
        failures.append(f"manifest.json: schema_version {manifest.get('schema_version')!r} is not {primitive.schema.version}")
    for key in primitive.manifest_keys:
        if key not in manifest:
            failures.append(f"manifest.json: missing key {key!r}")
    listed = manifest.get("tables") if isinstance(manifest.get("tables"), dict) else {}
    frames = {}
    for table in primitive.schema.tables:
        path = Path(directory) / f"{table.name}.parquet"
        if not path.exists():
            if table.required:
                failures.append(f"table {table.name}: missing ({path.name} not found)")
            continue
        entry = listed.get(table.name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            failures.append(f"manifest.json: table {table.name} has no sha256 entry")
        elif entry["sha256"] != sha256_file(path):
            failures.append(f"table {table.name}: sha256 does not match manifest.json (file changed or truncated)")
            continue
        try:
            arrow = read_table(directory, table.name)
        except SnapshotError as error:
            failures.append(str(error))
            continue
        fields = {f.name: f for f in arrow.schema}
        typed_ok = True
        for col in table.columns:
            if col.name not in fields:
                if col.required:
                    failures.append(f"table {table.name}, column {col.name}: missing")
                    typed_ok = False
            elif not arrow_type_matches(fields[col.name], col.dtype):
                found = fields[col.name].type
                hint = ""
                if col.dtype.startswith("int") and pa.types.is_floating(found):
                    hint = f" (pandas reads a nullable integer column as floats: write it back as {col.dtype.capitalize()})"
                failures.append(f"table {table.name}, column {col.name}: type {found}, expected {col.dtype}{hint}")
                typed_ok = False
        if "rows" in (entry or {}) and entry["rows"] != arrow.num_rows:
            failures.append(f"table {table.name}: {arrow.num_rows} rows, manifest.json says {entry['rows']}")
        if typed_ok:
            try:
                frames[table.name] = arrow_to_pandas(conform(arrow, table))
            except SnapshotError as error:  # a value the contract's type cannot hold exactly
                failures.append(str(error))
    return frames, failures


def run_expectations(primitive: Primitive, frames: dict, reference: dict | None, drift_threshold: float, docs_dir: Path) -> list[str]:
    """Run the primitive's GX suites over its tables; Data Docs go to ``docs_dir``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # per-metric bars drown the log
    context.add_data_docs_site(
        site_name="aiprim",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas(primitive.name)
    failures = []
    for table in primitive.schema.tables:
        if table.name not in frames:
            continue
        frame = frames[table.name].copy(deep=False)
        examples = {}  # the first offending row of each rule, named by the table's key column
        for rule in table.rules:
            ok = rule.check(frames).to_numpy(dtype=bool)
            frame[RULE_PREFIX + rule.name] = ok
            key = table.columns[0].name
            if not ok.all() and key in frame:
                first = int((~ok).argmax())
                examples[rule.name] = rule.explain(frames, first) if rule.explain else f"{key} {frame[key].iloc[first]!r}"
        table_reference = (reference or {}).get(table.name)
        for column, (weights, largest_change) in distribution_drift_columns(table, frame, table_reference).items():
            frame[DRIFT_PREFIX + column] = weights
            examples[DRIFT_PREFIX + column] = largest_change
        # The suite is built whole, then added: adding expectations one by one to a stored suite saves it
        # (and compares it with every expectation so far) each time.
        expectations = list(expectations_for(table, table_reference, drift_threshold, set(frame.columns)))
        suite = context.suites.add(gx.ExpectationSuite(name=f"{primitive.name}.{table.name}", expectations=expectations))
        batch = source.add_dataframe_asset(table.name).add_batch_definition_whole_dataframe("snapshot")
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=table.name, data=batch, suite=suite))
        run = definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "SUMMARY"})
        failures.extend(describe_failure(table, r, examples) for r in run.results if not r.success)
    # Once, from the stored results of every table: a checkpoint's docs action rebuilds the whole site per table.
    context.build_data_docs(site_names=["aiprim"])
    return failures


def validate(primitive: Primitive, directory: Path, reference: dict | None, drift_threshold: float, docs_root: Path) -> ValidationReport:
    directory = Path(directory)
    report = ValidationReport(primitive=primitive.name, snapshot=str(directory))
    frames, report.failures = check_structure(primitive, directory)
    if report.failures:
        return report
    docs_dir = Path(docs_root) / primitive.name / directory.name
    report.failures = run_expectations(primitive, frames, reference, drift_threshold, docs_dir)
    report.docs = str(docs_dir / "index.html")
    if report.ok:
        report.stats = workload_shapes(primitive, frames)
    return report


def load_reference(path: Path) -> dict | None:
    return json.loads(path.read_text())["stats"] if path.exists() else None
