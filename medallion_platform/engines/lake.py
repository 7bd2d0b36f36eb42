"""The lake: bronze, silver and gold as Parquet datasets that DuckDB and Spark both read.

Layout under the root::

    bronze/<source>/batch_id=000000000042.parquet   one file per committed bronze batch
    <layer>/<table>/<snapshot>/part-*.parquet       a table's snapshots (silver, gold, …)
    _commits/<unit>.json                            what each table is now, and its position

Two rules keep it exactly-once without a table format (Delta and Iceberg need jars Spark
would download at run time):

- A bronze batch file has a deterministic name and is written beside its path, then renamed
  over it: a rerun replaces the same batch with the same rows, never adds a second copy.
- A table is never rewritten in place. A writer fills a new snapshot folder, then replaces
  one small commit file (``os.replace``, atomic) that names the snapshot of every table of
  the unit *and* the position it reached (a contract's silver, history and quarantine
  tables and its bronze watermark commit together). A crash before the replace leaves an
  unreferenced folder and the old commit: the rerun starts from the old position.

The snapshots a commit supersedes are kept until the next commit (``Commit.previous``): a
reader that resolved the old snapshot a moment before (DuckDB's views over the lake, until
the run that committed updates them) can still finish. A table committed in another table's
unit (a quarantine or history table) has a redirect file naming that unit.

Local folders only in this slice; an object-store root needs the same commit rule on a
store with atomic single-object puts (S3, GCS, ADLS all have them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from medallion_platform.warehouse.identifiers import validate_identifier

BATCH_FILE = re.compile(r"batch_id=(\d{12})\.parquet")


def batch_file_name(batch_id: int) -> str:
    """``batch_id=000000000042.parquet``: fixed width, so names sort as ids do."""
    if batch_id < 0:
        raise ValueError(f"a batch id is never negative: {batch_id}")
    return f"batch_id={batch_id:012d}.parquet"


class Commit(BaseModel):
    """One unit's committed state: table → snapshot folder (relative to the root), position."""

    model_config = ConfigDict(frozen=True)

    unit: str
    tables: dict[str, str]
    position: dict[str, Any] = {}
    committed_at: str
    previous: dict[str, str] = {}
    """The tables of the commit before: kept on disk until the next commit replaces this one."""


class Lake:
    """A lake root on the local filesystem (``MEDALLION_LAKE``, ``<home>/lake`` by default)."""

    def __init__(self, root: Path | str) -> None:
        text = str(root)
        if "://" in text and not text.startswith("file://"):
            raise ValueError(
                f"lake {text}: only a local folder is supported in this version "
                "(object stores are planned: see the README, 'When you outgrow one machine')"
            )
        self.root = Path(text.removeprefix("file://")).absolute()

    # -- bronze: one file per batch ------------------------------------------------------
    def bronze_dir(self, source: str) -> Path:
        return self.root / "bronze" / validate_identifier(source)

    def bronze_batch_path(self, source: str, batch_id: int) -> Path:
        return self.bronze_dir(source) / batch_file_name(batch_id)

    def bronze_batches(self, source: str) -> dict[int, Path]:
        """Batch id → file, for every batch file of the source in the lake."""
        folder = self.bronze_dir(source)
        if not folder.is_dir():
            return {}
        found = {}
        for path in folder.iterdir():
            match = BATCH_FILE.fullmatch(path.name)
            if match:
                found[int(match.group(1))] = path
        return dict(sorted(found.items()))

    # -- tables: snapshots and commits ---------------------------------------------------
    def table_dir(self, layer: str, table: str) -> Path:
        return self.root / validate_identifier(layer) / validate_identifier(table)

    def new_snapshot(self, layer: str, table: str) -> Path:
        """A fresh, empty-named folder for the next snapshot (the writer creates it)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return self.table_dir(layer, table) / f"s{stamp}-{uuid.uuid4().hex[:8]}"

    def _commit_path(self, unit: str) -> Path:
        layer, _, table = unit.partition(".")
        return (
            self.root
            / "_commits"
            / f"{validate_identifier(layer)}.{validate_identifier(table)}.json"
        )

    def _replace_file(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def commit(
        self, unit: str, tables: dict[str, Path], position: dict[str, Any] | None = None
    ) -> Commit:
        """Make ``tables`` (``"layer.table"`` → snapshot folder) the current state of ``unit``,
        with its position, in one atomic file replace; then drop the snapshots the commit
        before this one superseded (the last commit's stay for readers still on them)."""
        previous = self.read_commit(unit)
        for name, folder in tables.items():
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"{unit}: snapshot {folder} of {name} was not written")
        commit = Commit(
            unit=unit,
            tables={
                name: str(Path(folder).relative_to(self.root)) for name, folder in tables.items()
            },
            position=position or {},
            committed_at=datetime.now(UTC).isoformat(),
            previous=previous.tables if previous is not None else {},
        )
        for name in tables:  # where to find a table committed under another unit's name
            if name != unit and self._unit_file(name) != unit:
                self._replace_file(self._commit_path(name), json.dumps({"redirect": unit}))
        self._replace_file(self._commit_path(unit), commit.model_dump_json(indent=2))
        if previous is not None:
            keep = {*commit.tables.values(), *commit.previous.values()}
            for old in previous.previous.values():
                if old not in keep:
                    shutil.rmtree(self.root / old, ignore_errors=True)
        return commit

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self._commit_path(name)
        return json.loads(path.read_text()) if path.is_file() else None

    def _unit_file(self, name: str) -> str | None:
        """The unit ``name`` redirects to (None when it is a unit itself or unknown)."""
        document = self._read(name)
        return document.get("redirect") if document else None

    def read_commit(self, unit: str) -> Commit | None:
        document = self._read(unit)
        if document is None or "redirect" in document:
            return None
        return Commit.model_validate(document)

    def unit_of(self, layer: str, table: str) -> str:
        """The commit unit a table belongs to: its redirect's (a history table commits with its
        contract's silver), else a contract's quarantine commits with its silver."""
        redirect = self._unit_file(f"{layer}.{table}")
        if redirect:
            return redirect
        return f"silver.{table}" if layer == "quarantine" else f"{layer}.{table}"

    def table_path(self, layer: str, table: str) -> Path | None:
        """The current snapshot folder of ``layer.table`` (None if never committed)."""
        if layer == "bronze":
            folder = self.bronze_dir(table)
            return folder if self.bronze_batches(table) else None
        commit = self.read_commit(self.unit_of(layer, table))
        if commit is None or f"{layer}.{table}" not in commit.tables:
            return None
        return self.root / commit.tables[f"{layer}.{table}"]

    def require(self, layer: str, table: str) -> Path:
        path = self.table_path(layer, table)
        if path is None:
            raise LookupError(
                f"{layer}.{table} is not in the lake {self.root} yet: publish or build it first"
            )
        return path
