"""REST ingestion benchmark: records/s from the local payments API into silver.

The emulator runs as its own process (as a real API would), serving ``--charges`` charges
plus their refunds. In this process, timed separately:

- HTTP only, the baseline: the same pages fetched and parsed by the connector's client and
  pager, stored nowhere; measured before bronze and again after it (the machine is shared:
  the quicker of the two is the baseline, which makes the ratio the harder one);
- bronze: the REST connector paging through ``/v1/charges`` and ``/v1/refunds``, 100 records a
  page, 50 pages a transaction (the default ``pages_per_commit``);
- silver: the two contracts and the ``silver.payments`` model;
- raw pipeline, the peer: the least a lossless loader does with the same client and pager
  and the raw engine: each page's body kept as text in DuckDB (``pages_per_commit`` pages a
  transaction, with the page's cursor), then the records typed and deduplicated by id from
  those bodies with DuckDB's JSON functions (no lineage, no flattening, no checks).

The goal of issue 14 is API → silver (bronze + silver) at no less than half the HTTP-only
rate of the same run. The three are measured ``--rounds`` times (default 3) back to back,
bronze each time into a fresh warehouse; the report gives each round's ratios and the median.
Peak RSS is this process's.

    .venv/bin/python bench/bench_rest.py --charges 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import common
import duckdb
import httpx
import pyarrow as pa

# The platform of the checkout this script is in (a copy of the script in an older checkout
# measures that checkout's code), ahead of whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medallion_platform.config import platform_config
from medallion_platform.connectors.rest import Credentials, RestClient, sync_endpoint
from medallion_platform.connectors.rest.pager import iter_pages
from medallion_platform.connectors.rest.spec import RestEndpoint, RestSource
from medallion_platform.contracts import apply_contract
from medallion_platform.devkit.services import start_payments_api
from medallion_platform.warehouse import Warehouse


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# The records' fields as raw DuckDB would type them (the contracts' columns, unchecked).
RAW_SHAPES = {
    "charges": {
        "id": "VARCHAR",
        "amount": "BIGINT",
        "amount_refunded": "BIGINT",
        "currency": "VARCHAR",
        "customer": "VARCHAR",
        "metadata": "JSON",
        "status": "VARCHAR",
        "paid": "BOOLEAN",
        "created": "BIGINT",
    },
    "refunds": {
        "id": "VARCHAR",
        "charge": "VARCHAR",
        "amount": "BIGINT",
        "currency": "VARCHAR",
        "status": "VARCHAR",
        "reason": "VARCHAR",
        "created": "BIGINT",
    },
}


class _KeepingClient(RestClient):
    """The connector's client, remembering the last response body (the raw pipeline keeps it)."""

    body: bytes = b""

    def get_json(
        self, url: str, params: Mapping[str, Any] | None = None
    ) -> tuple[Any, httpx.Response]:
        payload, response = super().get_json(url, params)
        self.body = response.content
        return payload, response


def _keep_pages(
    conn: duckdb.DuckDBPyConnection, endpoint: str, pages: list[tuple[int, bytes]], cursor: str
) -> None:
    """One transaction: the pages' bodies as text and the endpoint's cursor after them."""
    rows = pa.table(  # noqa: F841 (read by DuckDB)
        {
            "endpoint": pa.array([endpoint] * len(pages)),
            "page": pa.array([number for number, _ in pages], pa.int64()),
            "body": pa.array([body for _, body in pages]).cast(pa.string()),
        }
    )
    conn.execute("BEGIN")
    conn.execute("INSERT INTO pages SELECT * FROM rows")
    conn.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)", [endpoint, cursor])
    conn.execute("COMMIT")


def raw_pipeline(
    url: str, token: str, source: RestSource, endpoints: list[RestEndpoint], path: Path
) -> tuple[int, float]:
    """The raw engine's lossless REST load: page bodies kept, then typed + dedup in DuckDB."""
    start = time.perf_counter()
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE pages (endpoint VARCHAR, page BIGINT, body VARCHAR)")
    conn.execute("CREATE TABLE cursors (endpoint VARCHAR PRIMARY KEY, cursor VARCHAR)")
    for endpoint in endpoints:
        pages: list[tuple[int, bytes]] = []
        with _KeepingClient(url, source.auth, Credentials(token=token), source.retry) as client:
            for number, page in enumerate(iter_pages(client, endpoint, since=0), start=1):
                pages.append((number, client.body))
                if len(pages) == endpoint.pages_per_commit:
                    _keep_pages(conn, endpoint.name, pages, json.dumps(page.next))
                    pages = []
        if pages:
            _keep_pages(conn, endpoint.name, pages, "null")
    records = 0
    for name, fields in RAW_SHAPES.items():
        shape = json.dumps({"data": [fields]}).replace("'", "''")
        conn.execute(
            f"CREATE TABLE {name} AS SELECT unnest(r) FROM (SELECT unnest("
            f"json_transform(body, '{shape}').data) AS r FROM pages WHERE endpoint = '{name}') "
            "QUALIFY row_number() OVER (PARTITION BY r.id ORDER BY r.created DESC) = 1"
        )
        records += conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    conn.close()
    return records, time.perf_counter() - start


def run(charges: int, workdir: Path, rounds: int = 3) -> dict:
    """``rounds`` times, back to back: HTTP only, bronze into a fresh warehouse, silver, HTTP
    only again; each round's ratios to the quicker of its two HTTP-only runs."""
    config = platform_config()
    source = config.rest_sources[0]
    endpoints = [e for e in source.endpoints if e.name != "payouts"]
    token = "sk_test_" + secrets.token_urlsafe(16)
    started = time.perf_counter()
    proc, url = start_payments_api(token, charges=charges)
    result: dict = {"charges": charges, "api_start_s": round(time.perf_counter() - started, 2)}

    def http_only() -> tuple[int, float]:
        """The same pages fetched and parsed, written nowhere (the API's own cost)."""
        tb = time.perf_counter()
        fetched = 0
        for endpoint in endpoints:
            with RestClient(url, source.auth, Credentials(token=token), source.retry) as client:
                for page in iter_pages(client, endpoint, since=0):
                    fetched += len(page.records)
        return fetched, time.perf_counter() - tb

    per_round = []
    try:
        for r in range(1, rounds + 1):
            fetched, before_s = http_only()
            warehouse = Warehouse(workdir / f"warehouse_{r}.duckdb")
            t0 = time.perf_counter()
            bronze = {}
            for endpoint in endpoints:
                client = RestClient(url, source.auth, Credentials(token=token), source.retry)
                with client:
                    report = sync_endpoint(warehouse, source, endpoint, client)
                bronze[endpoint.name] = {"records": report.records, "pages": report.pages}
            bronze_s = time.perf_counter() - t0
            records = sum(b["records"] for b in bronze.values())
            t1 = time.perf_counter()
            with warehouse.transaction() as conn:
                for name in ("payments_charges", "payments_refunds"):
                    apply_contract(conn, config.contract(name), memory=warehouse.silver_memory)
                model = next(m for m in config.silver_models if m.name == "payments")
                conn.execute(f"CREATE OR REPLACE TABLE silver.payments AS {model.sql}")
                silver_rows = conn.execute("SELECT count(*) FROM silver.payments").fetchone()[0]
            silver_s = time.perf_counter() - t1
            raw_records, raw_s = raw_pipeline(
                url, token, source, endpoints, workdir / f"raw_{r}.duckdb"
            )
            _, after_s = http_only()
            http_s = min(before_s, after_s)
            per_round.append(
                {
                    "http_only_runs_s": [round(before_s, 2), round(after_s, 2)],
                    "http_only_records_per_s": round(fetched / http_s),
                    "bronze": bronze,
                    "bronze_s": round(bronze_s, 2),
                    "bronze_records_per_s": round(records / bronze_s),
                    "silver_s": round(silver_s, 2),
                    "silver_rows": silver_rows,
                    "total_records_per_s": round(records / (bronze_s + silver_s)),
                    "bronze_of_http": round(http_s / bronze_s, 2),
                    "silver_of_http": round(http_s / (bronze_s + silver_s), 2),
                    "raw_pipeline_s": round(raw_s, 2),
                    "raw_pipeline_records": raw_records,
                    "raw_pipeline_of_http": round(http_s / raw_s, 2),
                }
            )
    finally:
        proc.stop(timeout_s=30)
    last = per_round[-1]
    result.update(
        records=sum(b["records"] for b in last["bronze"].values()),
        rounds=per_round,
        **{k: last[k] for k in last if not k.endswith("_of_http")},
        bronze_of_http=_median([r["bronze_of_http"] for r in per_round]),
        silver_of_http=_median([r["silver_of_http"] for r in per_round]),
        raw_pipeline_of_http=_median([r["raw_pipeline_of_http"] for r in per_round]),
        peak_rss_mib=round(_peak_rss_mib()),
        machine=common.machine_info(),
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="HTTP only, bronze and silver, back to back"
    )
    parser.add_argument("--json", action="store_true", help="Print the result as JSON only.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_rest_"))
    try:
        result = run(args.charges, workdir, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"records fetched: {result['records']:,} ({result['bronze']})")
    print()
    print(
        "| round | HTTP only s (before, after) | bronze s | silver s | records/s to silver "
        "| bronze of HTTP-only | API → silver of HTTP-only | raw pipeline s "
        "| raw pipeline of HTTP-only |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r, x in enumerate(result["rounds"], start=1):
        before, after = x["http_only_runs_s"]
        print(
            f"| {r} | {before:.2f}, {after:.2f} | {x['bronze_s']:.2f} | {x['silver_s']:.2f} "
            f"| {x['total_records_per_s']:,} | {x['bronze_of_http']:.2f} "
            f"| {x['silver_of_http']:.2f} | {x['raw_pipeline_s']:.2f} "
            f"| {x['raw_pipeline_of_http']:.2f} |"
        )
    print(
        f"| median | | | | | {result['bronze_of_http']:.2f} | {result['silver_of_http']:.2f} "
        f"| | {result['raw_pipeline_of_http']:.2f} |"
    )
    print()
    print(
        f"API → silver, of the HTTP-only rate (median of {len(result['rounds'])} rounds): "
        f"{result['silver_of_http']:.2f} (goal >= 0.5); bronze alone "
        f"{result['bronze_of_http']:.2f}; the raw pipeline (bodies kept, typed + dedup in DuckDB) "
        f"{result['raw_pipeline_of_http']:.2f}"
    )
    print(f"peak RSS (this process): {result['peak_rss_mib']} MiB")
    print(f"machine: {result['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
