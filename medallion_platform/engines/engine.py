"""The engine seam: what the Dagster assets ask of the warehouse, answered by DuckDB or Spark.

An asset asks two things of its engine, always inside a DuckDB transaction (``conn``):

- ``apply_contract``: merge a contract's new bronze batches into silver and quarantine;
- ``build_table``: make ``schema.table`` the result of a SELECT (a gold or silver SQL model).

:class:`DuckDBEngine` does both in the warehouse file, as the platform always has.
:class:`SparkLakeEngine` runs them on Spark over the lake (bronze exported as batch files,
snapshots committed atomically) and then points the warehouse's table names at the committed
snapshots (views), so the checks, the ML assets, the reports, the syncs and the CLI read
what Spark built without knowing. Everything else (bronze ingestion, positions, checks)
stays on DuckDB; an engine choice changes no asset, check or job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import duckdb

from medallion_platform.contracts.apply import SilverRunStats, apply_contract
from medallion_platform.contracts.changes import history_columns
from medallion_platform.contracts.compile import QUARANTINE_COLUMNS, silver_columns
from medallion_platform.contracts.spec import Contract
from medallion_platform.engines.duckdb_lake import (
    attach_lake_table,
    detach_lake_table,
    export_bronze,
    is_warehouse_table,
    publish_table,
    result_types,
)
from medallion_platform.engines.lake import Lake
from medallion_platform.engines.settings import EngineSettings
from medallion_platform.warehouse.identifiers import qualified
from medallion_platform.warehouse.memory import MemoryBound
from medallion_platform.warehouse.warehouse import ensure_layout, set_watermark, table_columns

if TYPE_CHECKING:
    from medallion_platform.engines.spark import SparkEngine


class Engine(Protocol):
    name: str

    def builds(self, schema: str) -> bool:
        """Whether this engine builds the tables of ``schema`` (else DuckDB does)."""
        ...

    def apply_contract(
        self,
        conn: duckdb.DuckDBPyConnection,
        contract: Contract,
        *,
        rebuild: bool = False,
        run_id: str | None = None,
        memory: MemoryBound | None = None,
    ) -> SilverRunStats:
        """``memory``: the warehouse's ``silver_memory``, the DuckDB limit silver runs under."""
        ...

    def build_table(
        self, conn: duckdb.DuckDBPyConnection, schema: str, table: str, sql: str
    ) -> None: ...


def contract_tables(contract: Contract) -> dict[str, dict[str, str]]:
    """A contract's tables (``layer.table`` → columns and DuckDB types): silver, its SCD2
    history when it keeps one, and quarantine."""
    tables = {f"silver.{contract.name}": silver_columns(contract)}
    if contract.changes is not None and contract.changes.history:
        tables[f"silver.{contract.changes.history}"] = history_columns(contract)
    tables[f"quarantine.{contract.name}"] = dict(QUARANTINE_COLUMNS)
    return tables


class DuckDBEngine:
    """Silver and gold inside the DuckDB warehouse (the default)."""

    name = "duckdb"

    def builds(self, schema: str) -> bool:
        return True

    def apply_contract(
        self, conn, contract, *, rebuild=False, run_id=None, memory=None
    ) -> SilverRunStats:
        # Coming back from Spark: its views go, and DuckDB rebuilds its own tables from bronze
        # (its watermark describes tables that no longer exist).
        detached = [detach_lake_table(conn, *name.split(".")) for name in contract_tables(contract)]
        return apply_contract(
            conn, contract, rebuild=rebuild or any(detached), run_id=run_id, memory=memory
        )

    def build_table(self, conn, schema, table, sql) -> None:
        detach_lake_table(conn, schema, table)
        conn.execute(f"CREATE OR REPLACE TABLE {qualified(schema, table)} AS {sql}")


class SparkLakeEngine:
    """Silver and gold on Spark over the lake; the warehouse keeps views of the snapshots."""

    name = "spark"
    LAYERS = ("silver", "gold")
    """Schemas whose SQL tables Spark builds; others (ml) stay DuckDB tables, reading the
    views like any other consumer."""

    def __init__(self, spark: SparkEngine) -> None:
        self.spark = spark
        self.lake: Lake = spark.lake

    def builds(self, schema: str) -> bool:
        return schema in self.LAYERS

    def apply_contract(
        self, conn, contract, *, rebuild=False, run_id=None, memory=None, on_event=None
    ) -> SilverRunStats:
        # memory: Spark's own settings bound it; DuckDB here only exports bronze and attaches.
        from medallion_platform.contracts.spark import apply_contract_spark

        if not is_warehouse_table(conn, "bronze", contract.source):
            raise LookupError(
                f"contract {contract.name}: bronze.{contract.source} does not exist yet; "
                "load its source first"
            )
        ensure_layout(conn)
        # Bronze stays ingested by DuckDB; its committed batches not in the lake yet go first.
        export_bronze(conn, self.lake, contract.source)
        stats = apply_contract_spark(
            self.spark,
            contract,
            rebuild=rebuild,
            on_event=on_event,
            bronze_columns=table_columns(conn, "bronze", contract.source),
        )
        for name, columns in contract_tables(contract).items():
            attach_lake_table(conn, self.lake, *name.split("."), columns)
        # What `medallion status` and the run history read (the lake's commit holds the
        # watermark Spark goes by; coming back to DuckDB rebuilds, so this one never misleads).
        set_watermark(conn, f"silver.{contract.name}", stats.to_batch_id)
        conn.execute(
            "INSERT INTO _meta.silver_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [contract.name, run_id, stats.from_batch_id, stats.to_batch_id, stats.rebuilt,
             stats.rows_in, stats.valid, stats.quarantined, stats.inserted, stats.updated,
             stats.superseded],
        )  # fmt: skip
        return stats

    def build_table(self, conn, schema, table, sql) -> None:
        from medallion_platform.engines.dialects import tables_read

        inputs = tables_read(sql)
        for name in inputs:  # an input DuckDB built (a table, not a view): the lake gets a copy
            if is_warehouse_table(conn, *name.split(".")):
                publish_table(conn, self.lake, *name.split("."))
        self.spark.build_table(sql, schema, table, inputs)
        # The types DuckDB's own build would give (DECIMAL(38,2) where Spark sums to (22,2)):
        # what reads the table sees the same columns whichever engine built it.
        attach_lake_table(conn, self.lake, schema, table, result_types(conn, sql))


_SPARK: dict[str, SparkLakeEngine] = {}
"""One Spark engine (one session) per process and settings: every step of a run shares it."""


def engine_for(settings: EngineSettings) -> Engine:
    """The engine the settings name; Spark's session starts here (one per process)."""
    if settings.engine == "duckdb":
        return DuckDBEngine()
    from medallion_platform.engines.spark import SparkEngine, spark_session

    key = settings.model_dump_json()
    engine = _SPARK.get(key)
    if engine is None:
        session = spark_session(settings)
        engine = _SPARK[key] = SparkLakeEngine(SparkEngine(session, Lake(settings.lake)))
    return engine
