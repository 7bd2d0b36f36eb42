"""The Spark engine: one session, SQL models run over the lake, results committed to it.

Imported only when ``MEDALLION_ENGINE=spark`` (or by its tests): it needs ``pyspark`` (the
``spark`` extra) and Java 17+. The session is pinned to UTC, so timestamps mean what they
mean in DuckDB, and writes Parquet timestamps as microseconds, which DuckDB reads natively.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from medallion_platform.engines.dialects import duckdb_to_spark, tables_read
from medallion_platform.engines.lake import Lake
from medallion_platform.engines.settings import EngineSettings
from medallion_platform.gold.build import in_dependency_order
from medallion_platform.gold.spec import SqlModel

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SESSION_CONFIG = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # DuckDB's semantics where Spark can be told: ANSI errors on overflow, no silent NULLs.
    "spark.sql.ansi.enabled": "true",
    # DuckDB reads JSON with a repeated key as valid (the first one counts, as in
    # get_json_object); Spark's JSON parser refuses it unless told.
    "spark.sql.variant.allowDuplicateKeys": "true",
}
LOCAL_CONFIG = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
}


def spark_session(
    settings: EngineSettings,
    *,
    app_name: str = "medallion_platform",
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """A session per the settings: Spark Connect when a remote URL is set, else a classic
    session on the master (``local[*]`` by default). ``getOrCreate``: one per process.
    ``conf`` overrides (a test's single shuffle partition, a cluster's executor memory)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise RuntimeError(
            "MEDALLION_ENGINE=spark needs pyspark: pip install 'medallion_platform[spark]' "
            "(and Java 17+ for a local session)"
        ) from exc
    builder = SparkSession.builder.appName(app_name)
    if settings.spark_remote:
        builder = builder.remote(settings.spark_remote)
    else:
        builder = builder.master(settings.spark_master)
        if settings.spark_master.startswith("local"):
            for key, value in LOCAL_CONFIG.items():
                builder = builder.config(key, value)
    for key, value in {**SESSION_CONFIG, **settings.spark_conf, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if not settings.spark_remote:
        session.sparkContext.setLogLevel("ERROR")
    return session


_SPARK_TO_DUCKDB = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_ntz": "TIMESTAMP",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "smallint": "SMALLINT",
    "tinyint": "TINYINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "date": "DATE",
}


def duckdb_type(spark_type: str) -> str:
    """A Spark type as DuckDB spells it (for sqlglot's typed fragments)."""
    return _SPARK_TO_DUCKDB.get(spark_type, spark_type.upper())


_DUCKDB_TO_SPARK = {
    **{duck: spark for spark, duck in _SPARK_TO_DUCKDB.items()},
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "JSON": "string",  # exported as text (duckdb_lake._PORTABLE)
    "UUID": "string",
    "HUGEINT": "decimal(38,0)",
    "UHUGEINT": "decimal(38,0)",
}


def spark_schema(columns: Mapping[str, str]) -> str | None:
    """A Spark DDL schema for DuckDB columns as the lake stores them; None if a type has no
    plain Spark counterpart (the caller then lets Spark read the files' own schemas)."""
    fields = []
    for name, duck in columns.items():
        spark = _DUCKDB_TO_SPARK.get(duck.upper())
        if spark is None and re.fullmatch(r"DECIMAL\(\d+,\s*\d+\)", duck.upper()):
            spark = duck.lower().replace(" ", "")
        if spark is None:
            return None
        fields.append(f"`{name}` {spark}")
    return ", ".join(fields)


class SparkEngine:
    """Runs the platform's SQL on a Spark session, reading and writing the lake."""

    name = "spark"

    def __init__(self, session: SparkSession, lake: Lake) -> None:
        self.session = session
        self.lake = lake
        self._schemas: dict[str, dict[str, str]] = {}  # snapshot folder → columns (immutable)

    def read(self, layer: str, table: str) -> DataFrame:
        return self.session.read.parquet(str(self.lake.require(layer, table)))

    def _inputs(self, tables: Iterable[str]) -> tuple[dict[str, str], dict]:
        paths: dict[str, str] = {}
        schema: dict[str, dict[str, dict[str, str]]] = {}
        for name in tables:
            layer, table = name.split(".")
            path = str(self.lake.require(layer, table))
            paths[name] = path
            if path not in self._schemas:  # a snapshot never changes: read its schema once
                fields = self.session.read.parquet(path).schema.fields
                self._schemas[path] = {
                    f.name: duckdb_type(f.dataType.simpleString()) for f in fields
                }
            schema.setdefault(layer, {})[table] = self._schemas[path]
        return paths, schema

    def sql(self, sql: str, tables: Iterable[str] | None = None) -> DataFrame:
        """A DuckDB statement over lake tables (by default, every table it names), transpiled
        and run on Spark."""
        paths, schema = self._inputs(tables_read(sql) if tables is None else tables)
        return self.session.sql(duckdb_to_spark(sql, schema, paths=paths))

    def bronze(
        self, source: str, low: int, high: int, columns: Mapping[str, str] | None = None
    ) -> DataFrame | None:
        """The batch files of ``bronze.<source>`` with ids in ``(low, high]`` (None if none):
        only those files are read, so an incremental run costs what its new batches do.
        Columns added to bronze later are NULL in older batches: read with ``columns`` (the
        warehouse table's, name → DuckDB type) when known, else by merging the files'
        schemas (which reads every file's footer first)."""
        files = [
            str(path)
            for batch_id, path in self.lake.bronze_batches(source).items()
            if low < batch_id <= high
        ]
        if not files:
            return None
        schema = spark_schema(columns) if columns else None
        if schema is None:
            return self.session.read.option("mergeSchema", "true").parquet(*files)
        return self.session.read.schema(schema).parquet(*files)

    def write_snapshot(self, frame: DataFrame, layer: str, table: str) -> Path:
        """Write ``frame`` into a new snapshot folder of ``layer.table`` (not yet committed)."""
        folder = self.lake.new_snapshot(layer, table)
        frame.write.mode("errorifexists").parquet(str(folder))
        return folder

    def build_table(
        self, sql: str, layer: str, table: str, tables: Iterable[str] | None = None
    ) -> Path:
        """Build ``layer.table`` from a DuckDB SELECT over committed snapshots (the tables it
        names, or ``tables``); write a new snapshot and commit it; returns the folder."""
        folder = self.write_snapshot(self.sql(sql, tables), layer, table)
        self.lake.commit(f"{layer}.{table}", {f"{layer}.{table}": folder})
        return folder

    def build_model(self, model: SqlModel) -> Path:
        """Build one SQL model from its inputs' committed snapshots; commit its snapshot."""
        return self.build_table(model.sql, model.layer, model.name, model.depends_on)

    def build_models(self, models: Iterable[SqlModel]) -> dict[str, Path]:
        """Every model in dependency order (as :func:`gold.build.build_models` does on DuckDB);
        returns each ``layer.table``'s committed snapshot folder."""
        return {f"{m.layer}.{m.name}": self.build_model(m) for m in in_dependency_order(models)}
