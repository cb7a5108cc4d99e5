"""Telemetry snapshots: a directory of Parquet tables plus ``manifest.json``.

Snapshots are immutable and content-addressed: the id is a hash of the
tables' bytes, so the same telemetry always lands in the same directory and a
changed byte is a different snapshot.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ._schema import ARROW_TYPES, WIDENED_FROM, Schema

MANIFEST = "manifest.json"
_ARROW = {"string": pa.string(), "float64": pa.float64(), "int32": pa.int32(), "int64": pa.int64(), "bool": pa.bool_()}


class SnapshotError(ValueError):
    """A snapshot that cannot be read as the contract says; the message names what is wrong."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot_id(directory: Path) -> str:
    """The snapshot's id: its folder's name in a store, where ``write_snapshot`` and ``import_snapshot`` name
    it by content; for a snapshot written elsewhere (``--to``, as DVC stages do: ``data/dvc/<primitive>/snapshot``),
    the id ``write_snapshot`` gives the same tables and deployment."""
    directory = Path(directory)
    if re.fullmatch(r"[0-9a-fu][0-9a-f]{15}", directory.name):
        return directory.name
    manifest = read_manifest(directory)
    hashes = {name: entry.get("sha256", "") for name, entry in manifest.get("tables", {}).items()}
    return _content_id(str(manifest.get("primitive", "")), hashes, manifest.get("deployment"))


def _content_id(primitive: str, table_hashes: dict[str, str], deployment: str | None = None) -> str:
    text = primitive + "".join(f"|{name}:{sha}" for name, sha in sorted(table_hashes.items()))
    # The same tables for another deployment are another snapshot: its manifest and its lineage differ
    # (``default`` adds nothing, so ids of the default deployment's snapshots stay as they were).
    if deployment not in (None, "", "default"):
        text += f"|deployment:{deployment}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_arrow(frame, table_schema) -> pa.Table:
    """A DataFrame as an Arrow table with the contract's exact column types."""
    known = {c.name: c for c in table_schema.columns}
    arrays = []
    for name in frame.columns:  # columns the contract does not name keep their inferred type
        column = frame[name]
        arrays.append(pa.array(column, type=_ARROW[known[name].dtype], from_pandas=True) if name in known
                      else pa.array(column, from_pandas=True))
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def write_snapshot(primitive: str, schema: Schema, tables: dict, root: Path, source: str, extra: dict | None = None) -> Path:
    """Write tables (DataFrames) as a new snapshot under ``root/<primitive>/<id>``; returns its directory."""
    root = Path(root) / primitive
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        hashes, rows = {}, {}
        for name, frame in tables.items():
            path = staging / f"{name}.parquet"
            table = to_arrow(frame, schema.table(name)) if not isinstance(frame, pa.Table) else frame
            pq.write_table(table, path)
            hashes[name], rows[name] = sha256_file(path), table.num_rows
        manifest = _write_manifest(staging, primitive, schema.version, source,
                                   {name: {"rows": rows[name], "sha256": hashes[name]} for name in tables}, extra)
        return _settle(staging, root / _content_id(primitive, hashes, manifest.get("deployment")))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_manifest(directory: Path, primitive: str, schema_version: int, source: str, tables: dict,
                    extra: dict | None = None) -> dict:
    """Write (and return) ``manifest.json``; ``tables`` maps each table to its ``rows`` and ``sha256``."""
    manifest = {"primitive": primitive, "schema_version": schema_version,
                "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "source": source,
                "tables": tables, **(extra or {})}
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _settle(staging: Path, final: Path) -> Path:
    if final.exists():  # same content already there: snapshots are immutable
        shutil.rmtree(staging, ignore_errors=True)
        return final
    staging.rename(final)
    return final


def import_snapshot(uri: str, primitive: str, root: Path, schema_version: int | None = None) -> Path:
    """Copy a snapshot from a path or fsspec URI into the project's store, unvalidated.

    The copy is what gets validated (and quarantined if bad): the user's own
    files are never moved or changed. Given ``schema_version``, a folder of
    tables without ``manifest.json`` gets one in the copy, hashing the tables
    as they arrived (a user's export need not compute hashes).
    """
    import fsspec

    root = Path(root) / primitive
    root.mkdir(parents=True, exist_ok=True)
    fs, path = fsspec.core.url_to_fs(str(uri))
    if not fs.isdir(path):
        raise SnapshotError(f"snapshot {uri}: not a directory")
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        hashes, folders = {}, []
        for entry in sorted(fs.ls(path, detail=False)):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            if fs.isdir(entry):
                folders.append(name)
                continue
            fs.get(entry, str(staging / name))
            hashes[name] = sha256_file(staging / name)
        if not hashes:
            held = f"no files, only folders ({', '.join(folders)})" if folders else "the directory is empty"
            raise SnapshotError(f"snapshot {uri}: {held}")
        if MANIFEST not in hashes and schema_version is not None:
            tables = {name[: -len(".parquet")]: {"rows": pq.read_metadata(staging / name).num_rows, "sha256": digest}
                      for name, digest in hashes.items() if name.endswith(".parquet")}
            _write_manifest(staging, primitive, schema_version, f"{uri} (its folder had no manifest: aiprim wrote this one)",
                            tables)
        return _settle(staging, root / ("u" + _content_id(primitive, hashes)[1:]))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise SnapshotError(f"{MANIFEST}: missing in {directory} (`aiprim snapshot PRIMITIVE --source DIR` imports a "
                            f"folder of tables alone and writes one)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SnapshotError(f"{MANIFEST}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{MANIFEST}: must be a JSON object")
    return manifest


def read_table(directory: Path, name: str) -> pa.Table:
    path = Path(directory) / f"{name}.parquet"
    if not path.exists():
        raise SnapshotError(f"table {name}: missing ({path.name} not found)")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise SnapshotError(f"table {name}: unreadable Parquet file ({str(error).splitlines()[0]})") from None


def check_snapshot(directory: Path, primitive: str) -> Path:
    """``directory`` as a snapshot of ``primitive``, before its tables are read: a folder that is none, or a
    snapshot of another primitive, is one line saying so (not the first table it lacks)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SnapshotError(f"snapshot {directory}: not a directory")
    manifest = read_manifest(directory)
    named = manifest.get("primitive")
    if named not in (None, primitive):
        raise SnapshotError(f"snapshot {directory}: a {named} snapshot, not one of {primitive}")
    # Read as it lies (evaluate, replay), a table edited since its manifest was written would be reported under
    # the snapshot's id as if it were what was validated.
    listed = manifest.get("tables") if isinstance(manifest.get("tables"), dict) else {}
    changed = [name for name, entry in sorted(listed.items())
               if isinstance(entry, dict) and "sha256" in entry and (directory / f"{name}.parquet").is_file()
               and sha256_file(directory / f"{name}.parquet") != entry["sha256"]]
    if changed:
        raise SnapshotError(f"snapshot {directory}: {', '.join(f'{name}.parquet' for name in changed)} changed since "
                            f"manifest.json was written "
                            f"(sha256 differs); to use the tables as they are, remove manifest.json and import them with "
                            f"`aiprim snapshot {primitive} --source DIR`, which writes a new one")
    return directory


def read_tables(directory: Path, schema: Schema) -> dict:
    """Every table of the schema present in the snapshot, as pandas DataFrames."""
    frames = {}
    for table in schema.tables:
        if not table.required and not (Path(directory) / f"{table.name}.parquet").exists():
            continue
        frames[table.name] = arrow_to_pandas(conform(read_table(directory, table.name), table))
    return frames


def conform(arrow: pa.Table, table_schema) -> pa.Table:
    """``arrow`` with every column of a narrower numeric type (``WIDENED_FROM``) cast to the contract's type."""
    for col in table_schema.columns:
        if col.name in arrow.column_names:
            index = arrow.column_names.index(col.name)
            if str(arrow.schema.field(index).type) in WIDENED_FROM.get(col.dtype, ()):
                try:
                    column = arrow.column(index).cast(_ARROW[col.dtype], safe=True)
                except pa.ArrowInvalid as error:
                    raise SnapshotError(f"table {table_schema.name}, column {col.name}: {error}") from None
                arrow = arrow.set_column(index, pa.field(col.name, _ARROW[col.dtype]), column)
    return arrow


def arrow_to_pandas(table: pa.Table):
    """Nullable ints stay ints (Int32/Int64) and strings stay Python objects with None for null."""
    import pandas as pd

    mapping = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    frame = table.to_pandas(types_mapper=mapping.get)
    for name, field in zip(table.column_names, table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def arrow_type_matches(field: pa.Field, dtype: str) -> bool:
    """Whether a column of ``field``'s type holds the contract's ``dtype``: exactly, or a narrower numeric type
    that ``conform`` widens."""
    return str(field.type) in ARROW_TYPES[dtype] + WIDENED_FROM.get(dtype, ())
