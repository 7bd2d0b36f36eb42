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


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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
                }
            )
    finally:
        proc.stop(timeout_s=30)
    last = per_round[-1]
    result.update(
        records=sum(b["records"] for b in last["bronze"].values()),
        rounds=per_round,
        **{k: last[k] for k in last if k not in ("bronze_of_http", "silver_of_http")},
        bronze_of_http=_median([r["bronze_of_http"] for r in per_round]),
        silver_of_http=_median([r["silver_of_http"] for r in per_round]),
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
        "| bronze of HTTP-only | API → silver of HTTP-only |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for r, x in enumerate(result["rounds"], start=1):
        before, after = x["http_only_runs_s"]
        print(
            f"| {r} | {before:.2f}, {after:.2f} | {x['bronze_s']:.2f} | {x['silver_s']:.2f} "
            f"| {x['total_records_per_s']:,} | {x['bronze_of_http']:.2f} "
            f"| {x['silver_of_http']:.2f} |"
        )
    print(f"| median | | | | | {result['bronze_of_http']:.2f} | {result['silver_of_http']:.2f} |")
    print()
    print(
        f"API → silver, of the HTTP-only rate (median of {len(result['rounds'])} rounds): "
        f"{result['silver_of_http']:.2f} (goal >= 0.5); bronze alone {result['bronze_of_http']:.2f}"
    )
    print(f"peak RSS (this process): {result['peak_rss_mib']} MiB")
    print(f"machine: {result['machine']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
