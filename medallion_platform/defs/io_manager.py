"""Typed IO manager: the return or input annotation picks how a table is written and read.

Built on dagster-duckdb's ``DbIOManager`` (table slices, partitions) with our own handlers,
because the stock ones skip empty frames, fail on new columns and delete-then-insert outside a
transaction. Here every write happens in one transaction:

- full table: ``CREATE OR REPLACE TABLE … AS`` — empty outputs create an empty table with
  the right columns, a changed schema replaces the old one, readers never see it empty;
- partition: delete the slice and insert it in the same transaction, adding new columns first
  (schema evolution by addition).

Types: ``pandas.DataFrame``, ``polars.DataFrame`` (rows through Arrow), and the lazy
``SqlQuery`` (output; built by the warehouse) / ``TableRef`` (input; a handle, no rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pandas as pd
import polars as pl
from dagster import InitResourceContext, MetadataValue, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDbClient, DuckDBIOManager

from medallion_platform.defs.metadata import table_metadata
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.defs.runs import run_writer_session
from medallion_platform.engines.duckdb_lake import detach_lake_table
from medallion_platform.engines.engine import DuckDBEngine, Engine
from medallion_platform.gold.incremental import BuildResult, ModelQuery, build_model, forget_build
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.exports import export_parquet
from medallion_platform.warehouse.identifiers import qualified, quote
from medallion_platform.warehouse.tables import SqlQuery, TableRef, describe_table
from medallion_platform.warehouse.warehouse import add_missing_columns, table_columns


def declared_descriptions(context: OutputContext) -> dict[str, str]:
    """Column descriptions from the asset's definition metadata (``dagster/column_schema``)."""
    declared = (context.definition_metadata or {}).get("dagster/column_schema")
    schema = getattr(declared, "schema", declared)
    columns = getattr(schema, "columns", None) or []
    return {c.name: c.description for c in columns if c.description}


def _write_relation(
    context: OutputContext, table_slice: TableSlice, conn: duckdb.DuckDBPyConnection, source: str
) -> dict[str, Any]:
    """Write ``source`` (a SELECT) as the table or as its partition slice; return metadata."""
    schema, table = table_slice.schema, table_slice.table
    target = qualified(schema, table)
    if not table_slice.partition_dimensions:
        conn.execute(f"CREATE OR REPLACE TABLE {target} AS {source}")
    else:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM ({source}) LIMIT 0")
        incoming = conn.execute(f"DESCRIBE {source}").fetchall()
        add_missing_columns(conn, schema, table, {row[0]: row[1] for row in incoming})
        conn.execute(f"INSERT INTO {target} BY NAME {source}")
    desc = describe_table(conn, schema, table)
    metadata = table_metadata(desc, declared_descriptions(context))
    if table_slice.partition_dimensions:
        rows = conn.execute(f"SELECT count(*) FROM ({source})").fetchone()[0]
        metadata["dagster/partition_row_count"] = rows
    return metadata


class PandasHandler(DbTypeHandler[pd.DataFrame]):
    def handle_output(self, context, table_slice, obj, connection):
        if obj.empty:  # zero rows give DuckDB nothing to infer object columns from: text
            obj = obj.astype({c: "string" for c in obj.columns if obj[c].dtype == object})
        connection.register("_out_df", obj)
        try:
            return _write_relation(context, table_slice, connection, "SELECT * FROM _out_df")
        finally:
            connection.unregister("_out_df")

    def load_input(self, context, table_slice, connection) -> pd.DataFrame:
        return connection.execute(DuckDbClient.get_select_statement(table_slice)).df()

    @property
    def supported_types(self) -> Sequence[type]:
        return [pd.DataFrame]


class PolarsHandler(DbTypeHandler[pl.DataFrame]):
    def handle_output(self, context, table_slice, obj, connection):
        connection.register("_out_pl", obj.to_arrow())
        try:
            return _write_relation(context, table_slice, connection, "SELECT * FROM _out_pl")
        finally:
            connection.unregister("_out_pl")

    def load_input(self, context, table_slice, connection) -> pl.DataFrame:
        return pl.from_arrow(
            connection.execute(DuckDbClient.get_select_statement(table_slice)).arrow()
        )

    @property
    def supported_types(self) -> Sequence[type]:
        return [pl.DataFrame]


class SqlHandler(DbTypeHandler[SqlQuery]):
    """Lazy: outputs are SELECTs run by the engine (the warehouse itself, or Spark over the
    lake for silver and gold), inputs are handles to the table."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or DuckDBEngine()

    def handle_output(self, context, table_slice, obj, connection):
        schema, table = table_slice.schema, table_slice.table
        model = obj.model if isinstance(obj, ModelQuery) else None
        whole = not table_slice.partition_dimensions
        if self.engine.name == "duckdb" or not self.engine.builds(schema):
            detach_lake_table(connection, schema, table)  # a view a Spark run left
            if model is None or not whole:
                return _write_relation(context, table_slice, connection, f"({obj.sql})")
            # A SQL model: only its changed keys when it is incremental and that is safe.
            built = build_model(connection, model, full_refresh=obj.full_refresh)
            desc = describe_table(connection, schema, table)
            return {**table_metadata(desc, declared_descriptions(context)), **built.metadata()}
        if not whole:
            raise NotImplementedError(
                f"{schema}.{table}: partitioned SQL assets do not run on the {self.engine.name} "
                "engine; build it with MEDALLION_ENGINE=duckdb"
            )
        self.engine.build_table(connection, schema, table, obj.sql)
        built = BuildResult(build="full", reason=f"{self.engine.name} engine")
        if model is not None:  # the DuckDB table's record no longer describes the table
            forget_build(connection, model)
        desc = describe_table(connection, schema, table)
        return {
            **table_metadata(desc, declared_descriptions(context)),
            "engine": self.engine.name,
            **built.metadata(),
        }

    def load_input(self, context, table_slice, connection) -> TableRef:
        return TableRef(
            schema=table_slice.schema,
            table=table_slice.table,
            select_sql=DuckDbClient.get_select_statement(table_slice),
        )

    @property
    def supported_types(self) -> Sequence[type]:
        return [SqlQuery, TableRef]


class TransactionalDuckDbClient(DuckDbClient):
    """Opens the warehouse through :class:`Warehouse` (lock wait) inside one transaction."""

    @staticmethod
    def delete_table_slice(context, table_slice: TableSlice, connection) -> None:
        # A full table is replaced by CREATE OR REPLACE in the handler; only slices are deleted.
        if table_slice.partition_dimensions and table_columns(
            connection, table_slice.schema, table_slice.table
        ):
            DuckDbClient.delete_table_slice(context, table_slice, connection)

    @staticmethod
    def ensure_schema_exists(context, table_slice: TableSlice, connection) -> None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(table_slice.schema)}")

    @staticmethod
    @contextmanager
    def connect(context, _table_slice) -> Iterator[duckdb.DuckDBPyConnection]:
        config = context.resource_config
        warehouse = Warehouse(
            config["database"],
            memory_limit=config["connection_config"].get("memory_limit"),
            threads=config["connection_config"].get("threads"),
        )
        with warehouse.transaction() as conn:
            yield conn


class PublishingDbIOManager(DbIOManager):
    """After a table of an exported schema is committed, publish it as Parquet too."""

    def __init__(self, *, warehouse: Warehouse, parquet_dir: str | None, schemas: list[str], **kw):
        super().__init__(**kw)
        self._warehouse = warehouse
        self._parquet_dir = parquet_dir
        self._schemas = set(schemas)

    def handle_output(self, context: OutputContext, obj: object) -> None:
        super().handle_output(context, obj)
        if not self._parquet_dir or not context.has_asset_key:
            return
        path = context.asset_key.path
        if len(path) != 2 or path[0] not in self._schemas or context.has_asset_partitions:
            return
        with self._warehouse.connect() as conn:  # committed: readers see the new table
            exported = export_parquet(conn, path[0], path[1], self._parquet_dir)
        context.add_output_metadata(
            {
                "parquet_path": MetadataValue.path(str(exported)),
                "parquet_bytes": exported.stat().st_size,
            }
        )


class WarehouseIOManager(DuckDBIOManager):
    """Stores asset outputs as tables ``<key prefix>.<name>`` in the platform's DuckDB file;
    tables of ``parquet_schemas`` are also published as Parquet under ``parquet_dir``."""

    parquet_dir: str | None = None
    parquet_schemas: list[str] = ["gold"]
    warehouse: WarehouseResource | None = None
    """The warehouse resource, whose engine builds SQL outputs (DuckDB when not given)."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [PandasHandler(), PolarsHandler(), SqlHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return TableRef

    @contextmanager
    def yield_for_execution(self, context: InitResourceContext) -> Iterator[DbIOManager]:
        with run_writer_session(context, self.database):
            yield self.create_io_manager(context)

    def create_io_manager(self, context) -> DbIOManager:
        return PublishingDbIOManager(
            warehouse=Warehouse(
                self.database,
                memory_limit=self.connection_config.get("memory_limit"),
                threads=self.connection_config.get("threads"),
            ),
            parquet_dir=self.parquet_dir,
            schemas=self.parquet_schemas,
            db_client=TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=[
                PandasHandler(),
                PolarsHandler(),
                SqlHandler(self.warehouse.sql_engine() if self.warehouse else None),
            ],
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )
