"""Schema drift: columns a contract reads that a source stopped sending, and new ones.

A renamed column (``delay_minutes`` → ``delay_mins``) otherwise loads as a contract column
NULL in every row, and nobody is told. Here each file's own header (``_meta.files.columns``,
recorded at load), each set of top-level fields an API's records came with
(``_meta.record_fields``, recorded by the REST sync; compared with the fields the contract's
``json_path`` columns read) or, for other sources, the bronze table's columns is compared with
what the contract reads: a contract column none of whose names (name/source, aliases) a file has
is *missing*; a column no contract column reads is *unknown* — and *new* when the feed's first
file did not have it (columns a contract ignores on purpose are unknown from the start, and
not news). A missing column with a similar unknown one gets the ``aliases:`` line that would
fix it. Read-only and cheap (one row per file), so the silver asset reports it on every run
(a WARN check: missing or new columns) and so does ``medallion status``.
"""

from __future__ import annotations

import difflib
import json

import duckdb
from pydantic import BaseModel

from medallion_platform.contracts.spec import Contract
from medallion_platform.warehouse.identifiers import qualified
from medallion_platform.warehouse.warehouse import (
    recorded_field_sets,
    table_columns,
    table_exists,
)


class DriftFinding(BaseModel):
    """One shape of input (a file's header, a set of fields an API's records came with, or
    the bronze table) against the contract."""

    where: str
    """The file (landing path), ``bronze.<table> records from batch <n>`` (a set of fields)
    or ``bronze.<table>``."""
    missing: list[str] = []
    unknown: list[str] = []
    new: list[str] = []
    """Unknown columns the first file of the feed did not have."""
    fixes: dict[str, str] = {}
    """Contract column → the unknown column that probably replaced it."""


class DriftReport(BaseModel):
    contract: str
    findings: list[DriftFinding] = []

    @property
    def drifted(self) -> bool:
        """A contract column went missing, or a column appeared that was not there before."""
        return any(f.missing or f.new for f in self.findings)

    def fix_lines(self) -> list[str]:
        """The contract lines that would read each renamed column again."""
        aliases: dict[str, list[str]] = {}
        for finding in self.findings:
            for column, new in finding.fixes.items():
                aliases.setdefault(column, [])
                if new not in aliases[column]:
                    aliases[column].append(new)
        return [
            f"contract {self.contract}: column {column}: aliases: [{', '.join(names)}]"
            for column, names in aliases.items()
        ]

    def summary(self) -> str:
        lines = []
        for f in self.findings:
            parts = []
            if f.missing:
                parts.append(f"lacks {', '.join(f.missing)}")
            if f.new:
                parts.append(f"has new column(s) {', '.join(f.new)}")
            if parts:
                lines.append(f"{f.where}: {'; '.join(parts)}")
        return "\n".join(lines + [f"fix: {line}" for line in self.fix_lines()])


def _read_names(contract: Contract, fields: bool) -> tuple[dict[str, list[str]], set[str]]:
    """Per contract column, the input names that carry it; and every name read at all.

    With ``fields``, the names are the records' top-level fields: a column read inside the
    JSON (``json_path: $.metadata.order_id``) is carried by its path's first field."""
    names: dict[str, list[str]] = {}
    for column in contract.columns:
        if fields:
            if column.json_path is not None:
                names[column.name] = [column.json_path.split(".")[1]]
            continue
        carriers = [column.source or column.name, *column.aliases]
        if all(n.startswith("_") for n in carriers):
            # Lineage the platform stamps (``_changed_at``, ``_ingested_at``), not a field the
            # source sends: bronze gains it with its first stamped row, so absent is not drift.
            continue
        names[column.name] = carriers
    return names, {n for ns in names.values() for n in ns}


def _finding(
    where: str,
    present: list[str],
    contract: Contract,
    baseline: set[str] | None,
    *,
    fields: bool = False,
) -> DriftFinding:
    names, read = _read_names(contract, fields)
    have = set(present)
    json_sources = (
        set() if fields else {c.source or c.name for c in contract.columns if c.json_path}
    )
    missing = [
        column
        for column, carriers in names.items()
        if not have.intersection(carriers) and not json_sources.intersection(carriers)
    ]
    unknown = [c for c in present if c not in read and not c.startswith("_")]
    fixes = {}
    if not fields:  # an alias names another column; a field renamed has no such one-line fix
        for column in missing:
            match = difflib.get_close_matches(column, unknown, n=1, cutoff=0.5)
            if match:
                fixes[column] = match[0]
    new = [c for c in unknown if baseline is not None and c not in baseline]
    return DriftFinding(where=where, missing=missing, unknown=unknown, new=new, fixes=fixes)


def detect_drift(conn: duckdb.DuckDBPyConnection, contract: Contract) -> DriftReport:
    """Compare every loaded file of the contract's bronze table, or every set of fields its
    records came with, or (for other sources) the bronze table, with the contract."""
    report = DriftReport(contract=contract.name)
    if not table_exists(conn, "bronze", contract.source):
        return report
    files = []
    if table_exists(conn, "_meta", "files"):
        files = conn.execute(
            f"""SELECT f.path, f.columns FROM _meta.files f
                WHERE f.status = 'loaded' AND f.columns IS NOT NULL AND f.batch_id IN (
                    SELECT DISTINCT _batch_id FROM {qualified("bronze", contract.source)})
                ORDER BY f.batch_id"""
        ).fetchall()
    if files:
        baseline = set(json.loads(files[0][1]))
        for path, columns in files:
            finding = _finding(path, json.loads(columns), contract, baseline)
            if finding.missing or finding.new:
                report.findings.append(finding)
        return report
    shapes = []
    if table_exists(conn, "_meta", "record_fields"):
        shapes = recorded_field_sets(conn, contract.source)
    if shapes:
        baseline = set(shapes[0][0])
        for fields, batch_id in shapes:
            where = f"bronze.{contract.source} records from batch {batch_id}"
            finding = _finding(where, list(fields), contract, baseline, fields=True)
            if finding.missing or finding.new:
                report.findings.append(finding)
        return report
    present = list(table_columns(conn, "bronze", contract.source))
    finding = _finding(f"bronze.{contract.source}", present, contract, None)
    if finding.missing:
        report.findings.append(finding)
    return report
