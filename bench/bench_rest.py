"""REST ingestion benchmark: records/s from the local payments API into silver.

The emulator runs as its own process (as a real API would), serving ``--charges`` charges
plus their refunds. In this process, timed separately:

- HTTP only, the baseline: the same pages fetched and parsed by the connector's client and
  pager, stored nowhere; measured before bronze and again after it (the machine is shared:
  the quicker of the two is the baseline, which makes the ratio the harder one);
- bronze: the REST connector paging through ``/v1/charges`` and ``/v1/refunds``, 100 records a
  page, 50 pages a transaction (the default ``pages_per_commit``);
- silver: the two contracts and the ``silver.payments`` model.

The goal of issue 14 is API → silver (bronze + silver) at no less than half the HTTP-only
rate of the same run. Peak RSS is this process's.

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
from pathlib import Path

import common

# The platform of the checkout this script is in (a copy of the script in an older checkout
# measures that checkout's code), ahead of whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medallion_platform.config import platform_config
from medallion_platform.connectors.rest import Credentials, RestClient, sync_endpoint
from medallion_platform.connectors.rest.pager import iter_pages
from medallion_platform.contracts import apply_contract
from medallion_platform.devkit.services import start_payments_api
from medallion_platform.warehouse import Warehouse


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(charges: int, workdir: Path) -> dict:
    config = platform_config()
    source = config.rest_sources[0]
    token = "sk_test_" + secrets.token_urlsafe(16)
    started = time.perf_counter()
    proc, url = start_payments_api(token, charges=charges)
    api_start_s = time.perf_counter() - started
    warehouse = Warehouse(workdir / "warehouse.duckdb")
    result: dict = {"charges": charges, "api_start_s": round(api_start_s, 2)}
    try:

        def http_only() -> tuple[int, float]:
            """The same pages fetched and parsed, written nowhere (the API's own cost)."""
            tb = time.perf_counter()
            fetched = 0
            for endpoint in source.endpoints:
                if endpoint.name == "payouts":
                    continue
                with RestClient(url, source.auth, Credentials(token=token), source.retry) as client:
                    for page in iter_pages(client, endpoint, since=0):
                        fetched += len(page.records)
            return fetched, time.perf_counter() - tb

        fetched, before_s = http_only()
        t0 = time.perf_counter()
        bronze = {}
        for endpoint in source.endpoints:
            if endpoint.name == "payouts":
                continue
            client = RestClient(url, source.auth, Credentials(token=token), source.retry)
            with client:
                report = sync_endpoint(warehouse, source, endpoint, client)
            bronze[endpoint.name] = {"records": report.records, "pages": report.pages}
        bronze_s = time.perf_counter() - t0
        _, after_s = http_only()
        http_s = min(before_s, after_s)
        result["http_only_s"] = round(http_s, 2)
        result["http_only_runs_s"] = [round(before_s, 2), round(after_s, 2)]
        result["http_only_records_per_s"] = round(fetched / http_s)
    finally:
        proc.stop(timeout_s=30)
    records = sum(b["records"] for b in bronze.values())
    t1 = time.perf_counter()
    with warehouse.transaction() as conn:
        for name in ("payments_charges", "payments_refunds"):
            apply_contract(conn, config.contract(name))
        model = next(m for m in config.silver_models if m.name == "payments")
        conn.execute(f"CREATE OR REPLACE TABLE silver.payments AS {model.sql}")
        silver_rows = conn.execute("SELECT count(*) FROM silver.payments").fetchone()[0]
    silver_s = time.perf_counter() - t1
    result.update(
        records=records,
        bronze=bronze,
        bronze_s=round(bronze_s, 2),
        bronze_records_per_s=round(records / bronze_s),
        silver_s=round(silver_s, 2),
        silver_rows=silver_rows,
        total_records_per_s=round(records / (bronze_s + silver_s)),
        peak_rss_mib=round(_peak_rss_mib()),
        machine=common.machine_info(),
    )
    result["bronze_of_http"] = round(
        result["bronze_records_per_s"] / result["http_only_records_per_s"], 2
    )
    result["silver_of_http"] = round(
        result["total_records_per_s"] / result["http_only_records_per_s"], 2
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="Print the result as JSON only.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_rest_"))
    try:
        result = run(args.charges, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"records fetched: {result['records']:,} ({result['bronze']})")
    print(
        f"bronze (API → bronze): {result['bronze_s']:.1f}s, "
        f"{result['bronze_records_per_s']:,} records/s"
    )
    print(
        f"HTTP only (same pages, fetched and parsed, not stored): {result['http_only_s']:.1f}s, "
        f"{result['http_only_records_per_s']:,} records/s (the quicker of "
        f"{result['http_only_runs_s'][0]:.1f}s before bronze and "
        f"{result['http_only_runs_s'][1]:.1f}s after)"
    )
    print(f"silver (contracts + payments model): {result['silver_s']:.1f}s")
    print(f"API → silver: {result['total_records_per_s']:,} records/s")
    print(
        f"of the HTTP-only rate: bronze {result['bronze_of_http']:.2f}, "
        f"API → silver {result['silver_of_http']:.2f} (goal >= 0.5)"
    )
    print(f"peak RSS (this process): {result['peak_rss_mib']} MiB")
    print(f"machine: {result['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
