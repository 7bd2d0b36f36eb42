"""Reverse-ETL benchmark: records/s through the sync engine or a client, against the rate limit.

For each destination (Salesforce, HubSpot, Zendesk) the emulator runs as its own process
(``python -m medallion_platform.devkit.demo.destinations <api>``) with its default, real limits:

- HubSpot: 100 requests per rolling 10 s (a private app on Free/Starter), 100 contacts a call;
- Zendesk: 700 requests per minute (the Enterprise plan the emulator models), 100 users a job,
  jobs queued for 0.5 s; each job costs its POST and at least one poll of its job status;
- Salesforce: no per-window limit (Salesforce has none: its limits are the org's daily request
  budget, 100,000 in the emulator, and long-running concurrency), 200 records a call.

Two modes:

- ``--mode sync`` (default): the packaged sync of each destination (``config/syncs.yaml``,
  loaded by ``load_syncs`` and checked against the declared schemas) run by the engine
  (``engine.execute``) on a DuckDB warehouse in a temporary directory whose
  ``gold.customer_360``, ``gold.dim_customer`` and ``ml.churn_scores`` hold ``--records``
  customers with orders and valid emails (nothing is skipped or rejected). The client comes from
  ``open_destination`` (the client's ``from_env``) with the emulator's URL and token in an
  environ mapping; each run opens a fresh warehouse connection and client, as ``medallion sync``
  does. Three runs: the first sends everything; the second follows at once with no change
  (nothing may be sent); then 1% of the customers' lifetime value changes and, after one
  rate-limit window (so the run starts as a later scheduled one would, not inside the first
  run's window; ``--delta-pause``), a third run must send exactly those. Every run's counts
  are checked, and after the first the warehouse must hold one synced state and one distinct
  destination id per customer. The first run's time is split: planning (until the engine
  logs its plan), inside the client (``upsert``), the per-batch commits, and the rest.
- ``--mode client``: ``--records`` fresh records upserted through the client directly
  (``upsert`` called with ``--call-size`` records at a time; the client sends them in batches of
  its ``max_batch``), every outcome checked (ok, created, a distinct destination id).

Reported per destination: records/s, API calls, "slow down" answers (429 / 403
REQUEST_LIMIT_EXCEEDED), time the client waited for the limit, and records/s as fractions of
the limit's ceiling:

- ceiling = requests/s the limit allows x records per request at best (HubSpot 10/s x 100 =
  1,000 records/s; Zendesk 700/60 = 11.67/s x 50 = 583 records/s: a job of 100 users needs
  its POST plus at least one poll, so 2 requests per 100 records; 3 with ``tags: merge``,
  which reads the users' current tags first: 389 records/s);
- ``of_ceiling``: measured records/s / ceiling. A sliding window lets a fresh client spend a
  whole window's budget at once, so on a run a few windows long this exceeds 1;
- ``of_window_bound``: records / the most the limit admits in the run's elapsed time
  T (``max_requests x (floor(T / window) + 1)`` requests x records per request at best).
  Cannot exceed 1 while the limit holds;
- ``steady``: the request rate over whole windows after the first (sampled from the client's
  call counter), / the limit's rate, x (records per request / the best): the long-run fraction.

    .venv/bin/python bench/bench_reverse_etl.py --records 100000 --json
    .venv/bin/python bench/bench_reverse_etl.py --mode client --records 100000 --json
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import common
import duckdb

from medallion_platform.config import platform_config
from medallion_platform.devkit.services import start_destination_emulator
from medallion_platform.reverse_etl import engine
from medallion_platform.reverse_etl.destinations.base import DestinationRecord
from medallion_platform.reverse_etl.destinations.hubspot import HubSpotDestination
from medallion_platform.reverse_etl.destinations.salesforce import SalesforceDestination
from medallion_platform.reverse_etl.destinations.zendesk import ZendeskDestination
from medallion_platform.reverse_etl.spec import (
    SyncSpec,
    declared_catalog,
    destination_info,
    load_syncs,
    open_destination,
)
from medallion_platform.warehouse.identifiers import qualified
from medallion_platform.warehouse.warehouse import Warehouse

DESTINATIONS = ("salesforce", "hubspot", "zendesk")
MODES = ("sync", "client")
SYNCS = {  # the packaged sync of each destination (config/syncs.yaml)
    "salesforce": "salesforce_contacts",
    "hubspot": "hubspot_contacts",
    "zendesk": "zendesk_users",
}
TOKEN_ENVS = {
    "salesforce": "SALESFORCE_ACCESS_TOKEN",
    "hubspot": "HUBSPOT_ACCESS_TOKEN",
    "zendesk": "ZENDESK_API_TOKEN",
}
ZENDESK_EMAIL = "integrations@acme-outfitters.test"
# The emulators' defaults, as the process starts them (see the module docstring).
LIMITS: dict[str, tuple[int, float] | None] = {
    "salesforce": None,
    "hubspot": (100, 10.0),
    "zendesk": (700, 60.0),
}
BEST_RECORDS_PER_REQUEST = {"salesforce": 200, "hubspot": 100, "zendesk": 50}
SEGMENTS = ("loyal", "new", "at_risk", "vip")
SOURCE_TABLES = ("gold.dim_customer", "gold.customer_360", "ml.churn_scores")
CHANGE_EVERY = 100  # the third run: every 100th customer's lifetime value changes (1%)
Result = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Shared: the emulator process, the call sampler, the limit's figures
# --------------------------------------------------------------------------------------------


@contextmanager
def emulator(api: str, token: str) -> Iterator[str]:
    """The emulator as its own process on a free loopback port; yields its base URL."""
    env = {TOKEN_ENVS[api]: token, "ZENDESK_EMAIL": ZENDESK_EMAIL}
    process, base_url = start_destination_emulator(api, env, timeout_s=60)
    try:
        yield base_url
    finally:
        process.stop(timeout_s=30)


class CallSampler:
    """Samples the client's API call counter (every 0.1 s) to measure the steady rate."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CallSampler:
        self.started = time.monotonic()
        self.samples.append((0.0, self._read()))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic() - self.started, self._read()))

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.monotonic() - self.started, self._read()))

    def calls_at(self, t: float) -> int:
        """Calls made by time ``t`` (the last sample at or before it)."""
        return max((calls for at, calls in self.samples if at <= t), default=0)


def best_records_per_request(api: str, client: Any) -> float:
    """Records per request at best for this client: Zendesk's ``tags="merge"`` reads the
    users' current tags first (``show_many``), one more request per 100 users."""
    if api == "zendesk" and getattr(client, "tags_mode", None) == "merge":
        return 100 / 3
    return BEST_RECORDS_PER_REQUEST[api]


def limit_figures(
    api: str, count: int, seconds: float, api_calls: int, sampler: CallSampler, client: Any
) -> Result:
    """The ceiling and the fractions of it (see the module docstring)."""
    limit = LIMITS[api]
    if limit is None:
        return {"rate_limit": None, "ceiling_records_per_s": None}
    max_requests, window = limit
    best = best_records_per_request(api, client)
    ceiling = max_requests / window * best
    bound = best * max_requests * (math.floor(seconds / window) + 1)
    figures: Result = {
        "rate_limit": f"{max_requests} requests / {window:g} s",
        "ceiling_records_per_s": round(ceiling, 1),
        "of_ceiling": round(count / seconds / ceiling, 3),
        "of_window_bound": round(count / bound, 3),
    }
    whole = math.floor((seconds - window) / window)  # whole windows after the first
    if whole >= 1 and api_calls:
        calls = sampler.calls_at(window * (1 + whole)) - sampler.calls_at(window)
        steady_requests = calls / (whole * window)
        figures["steady_requests_per_s"] = round(steady_requests, 2)
        figures["steady"] = round(
            steady_requests / (max_requests / window) * (count / api_calls) / best, 3
        )
    return figures


def zendesk_figures(client: Any, api_calls: int) -> Result:
    jobs, polls = client.jobs, client.job_polls
    return {
        "jobs": jobs,
        "job_polls": polls,
        "requests_per_job": round(api_calls / jobs, 3) if jobs else None,
    }


# --------------------------------------------------------------------------------------------
# --mode client: the client alone
# --------------------------------------------------------------------------------------------


def make_records(api: str, count: int) -> list[DestinationRecord]:
    """Demo customers in the destination's field names (deterministic)."""
    records = []
    for n in range(count):
        ltv = round(25 + (n * 7919 % 500_000) / 100, 2)
        risk = round((n * 104_729 % 1000) / 1000, 3)
        segment = SEGMENTS[n % len(SEGMENTS)]
        day = f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}"
        if api == "salesforce":
            identity = f"cus_{n:07d}"
            fields: dict[str, Any] = {
                "Email": f"customer{n}@example.com",
                "FirstName": "Ada",
                "LastName": f"Lovelace {n}",
                "LTV__c": ltv,
                "Churn_Risk__c": risk,
                "Segment__c": segment,
                "Last_Order_Date__c": day,
            }
        elif api == "hubspot":
            identity = f"customer{n}@example.com"
            fields = {
                "firstname": "Ada",
                "lastname": f"Lovelace {n}",
                "acme_customer_id": f"cus_{n:07d}",
                "lifetime_value": ltv,
                "churn_risk": risk,
                "acme_segment": segment,
                "last_order_date": day,
            }
        else:
            identity = f"cus_{n:07d}"
            fields = {
                "email": f"customer{n}@example.com",
                "name": f"Ada Lovelace {n}",
                "tags": ["acme", segment],
                "user_fields.ltv": ltv,
                "user_fields.churn_risk": risk,
                "user_fields.segment": segment,
                "user_fields.last_order_date": day,
            }
        records.append(DestinationRecord(identity=identity, fields=fields))
    return records


def make_client(api: str, base_url: str, token: str) -> Any:
    if api == "salesforce":
        return SalesforceDestination(base_url, token)
    if api == "hubspot":
        return HubSpotDestination(base_url, token)
    return ZendeskDestination(base_url, ZENDESK_EMAIL, token)


def run_client(api: str, count: int, call_size: int) -> Result:
    token = secrets.token_urlsafe(24)
    records = make_records(api, count)
    with emulator(api, token) as base_url:
        client = make_client(api, base_url, token)
        outcomes = []
        with client, CallSampler(lambda: client.stats.api_calls) as sampler:
            started = time.perf_counter()
            for start in range(0, count, call_size):
                outcomes.extend(client.upsert(records[start : start + call_size]))
            seconds = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    ids = {o.destination_id for o in outcomes if o.ok}
    if len(outcomes) != count or failed or len(ids) != count:
        raise SystemExit(
            f"{api}: {len(outcomes)} outcomes, {len(failed)} failed "
            f"(first: {failed[0].error if failed else '-'}), {len(ids)} distinct ids"
        )
    if not all(o.created for o in outcomes):
        raise SystemExit(f"{api}: some records were not created on a fresh emulator")
    stats = client.stats
    result: Result = {
        "mode": "client",
        "destination": api,
        "records": count,
        "call_size": call_size,
        "max_batch": client.max_batch,
        "seconds": round(seconds, 2),
        "records_per_s": round(count / seconds, 1),
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "waited_seconds": round(stats.waited_seconds, 1),
        "records_per_request": round(count / stats.api_calls, 2),
    }
    if api == "zendesk":
        result.update(zendesk_figures(client, stats.api_calls))
    result.update(limit_figures(api, count, seconds, stats.api_calls, sampler, client))
    return result


# --------------------------------------------------------------------------------------------
# --mode sync: the packaged sync, through the engine
# --------------------------------------------------------------------------------------------


def build_warehouse(conn: duckdb.DuckDBPyConnection, count: int) -> None:
    """The tables the packaged syncs read, with the platform's declared column types, holding
    ``count`` customers who all have orders and valid, distinct emails (deterministic)."""
    catalog = declared_catalog(platform_config())
    try:
        for table in SOURCE_TABLES:
            schema, name = table.split(".")
            columns = catalog.execute(f"DESCRIBE {qualified(schema, name)}").fetchall()
            ddl = ", ".join(f'"{c[0]}" {c[1]}' for c in columns)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            conn.execute(f"CREATE OR REPLACE TABLE {qualified(schema, name)} ({ddl})")
    finally:
        catalog.close()
    conn.execute(
        """
        CREATE TEMP TABLE _bench_customers AS
        SELECT printf('C%07d', n) AS customer_id,
               printf('Customer%07d@Example.com', n) AS email,
               'First' || n AS first_name,
               CASE WHEN n % 11 = 0 THEN NULL ELSE 'Last' || n END AS last_name,
               ['retail', 'pro', 'outdoor_club'][1 + n % 3] AS segment,
               1 + n % 5 AS order_count,
               CAST(25 + (n * 7919 % 500000) / 100 AS DECIMAL(18, 2)) AS lifetime_value,
               DATE '2025-01-01' + CAST(n % 300 AS INTEGER) AS last_order_date,
               round((n * 37 % 100) / 100, 4) AS churn_probability
        FROM range(1, $count + 1) AS r(n)
        """,
        {"count": count},
    )
    conn.execute(
        """
        INSERT INTO gold.dim_customer BY NAME
        SELECT customer_id, email, first_name, last_name, segment, false AS is_deleted
        FROM _bench_customers;
        INSERT INTO gold.customer_360 BY NAME
        SELECT customer_id, email, segment, order_count, lifetime_value, last_order_date
        FROM _bench_customers;
        INSERT INTO ml.churn_scores BY NAME
        SELECT customer_id, churn_probability,
               CASE WHEN churn_probability >= 0.7 THEN 'high'
                    WHEN churn_probability >= 0.4 THEN 'medium' ELSE 'low' END AS risk_band,
               'v1' AS model_version, DATE '2025-11-01' AS cutoff_date,
               TIMESTAMP '2025-11-01 06:00:00' AS scored_at, 'model' AS scored_by
        FROM _bench_customers;
        DROP TABLE _bench_customers;
        """
    )


def change_one_percent(conn: duckdb.DuckDBPyConnection) -> int:
    """Every 100th customer's lifetime value goes up by 1.00 (a field every sync maps); the
    number of customers changed."""
    changed = conn.execute(
        "UPDATE gold.customer_360 SET lifetime_value = lifetime_value + 1 "
        "WHERE CAST(substr(customer_id, 2) AS INTEGER) % $every = 0",
        {"every": CHANGE_EVERY},
    ).fetchone()
    return int(changed[0]) if changed else 0


class Timer:
    """Time spent in the wrapped callables, and how often they were called."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.durations: list[float] = []

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                self.seconds += took
                self.calls += 1
                self.durations.append(took)

        return timed


def spread(durations: list[float]) -> dict[str, float] | None:
    """Median, 90th percentile and maximum of ``durations`` (seconds)."""
    if not durations:
        return None
    ordered = sorted(durations)
    return {
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 3),
        "max": round(ordered[-1], 3),
    }


@contextmanager
def timed_commits(timer: Timer) -> Iterator[None]:
    """Measure the engine's per-batch commits (``_commit_batch``), for the time breakdown only."""
    original = engine._commit_batch
    engine._commit_batch = timer.wrap(original)
    try:
        yield
    finally:
        engine._commit_batch = original


def sync_once(
    api: str, spec: SyncSpec, warehouse: Warehouse, environ: dict[str, str], count: int
) -> Result:
    """One run of ``spec`` with a fresh connection and client, timed and broken down."""
    client_timer, commit_timer = Timer(), Timer()
    marks: dict[str, float] = {}
    destination = open_destination(spec, environ)
    for method in ("upsert", "update", "remove"):
        setattr(destination, method, client_timer.wrap(getattr(destination, method)))

    def log(message: str) -> None:
        if " plan: " in message:
            marks.setdefault("planned", time.perf_counter())

    with (
        warehouse.connect() as conn,
        destination,
        timed_commits(commit_timer),
        CallSampler(lambda: destination.stats.api_calls) as sampler,
    ):
        started = time.perf_counter()
        result = engine.execute(conn, spec, destination, dry_run=False, log=log)
        seconds = time.perf_counter() - started
        synced = conn.execute(
            "SELECT count(*), count(DISTINCT destination_id) FROM _meta.sync_state WHERE sync = ?",
            [spec.name],
        ).fetchone()
    sent = result.added + result.changed + result.removed
    plan_s = marks.get("planned", started) - started
    figures: Result = {
        "seconds": round(seconds, 2),
        "sent": sent,
        "added": result.added,
        "changed": result.changed,
        "removed": result.removed,
        "failed": result.failed,
        "skipped": result.skipped,
        "source_rows": result.source_rows,
        "unchanged": result.unchanged,
        "api_calls": result.api_calls,
        "retries": result.retries,
        "rate_limited": result.rate_limited,
        "waited_seconds": round(destination.stats.waited_seconds, 1),
        "plan_s": round(plan_s, 2),
        "client_s": round(client_timer.seconds, 2),
        "client_calls": client_timer.calls,
        "client_call_s": spread(client_timer.durations),
        "commits": commit_timer.calls,
        "commit_s": round(commit_timer.seconds, 2),
        "other_s": round(seconds - plan_s - client_timer.seconds - commit_timer.seconds, 2),
        "synced_state": int(synced[0]) if synced else 0,
        "distinct_ids": int(synced[1]) if synced else 0,
    }
    if sent:
        figures["records_per_s"] = round(sent / seconds, 1)
    if api == "zendesk":
        figures.update(zendesk_figures(destination, result.api_calls))
    if sent == count:
        figures.update(limit_figures(api, count, seconds, result.api_calls, sampler, destination))
    return figures


def check(api: str, run: str, figures: Result, **expected: int) -> None:
    wrong = {k: (figures[k], v) for k, v in expected.items() if figures[k] != v}
    if wrong:
        detail = ", ".join(f"{k} {got} (expected {want})" for k, (got, want) in wrong.items())
        raise SystemExit(f"{api}: the {run} run: {detail}")


def run_sync(api: str, count: int, delta_pause: float | None) -> Result:
    spec = {s.name: s for s in load_syncs(config=platform_config())}[SYNCS[api]]
    info = destination_info(api)
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="bench-reverse-etl-") as tmp:
        warehouse = Warehouse(Path(tmp) / "warehouse.duckdb")
        built = time.perf_counter()
        with warehouse.connect() as conn:
            build_warehouse(conn, count)
        build_s = time.perf_counter() - built
        with emulator(api, token) as base_url:
            environ = {info.url_env: base_url}
            for setting in info.env:  # the token, and Zendesk's agent email
                if setting.required and not setting.address:
                    environ[setting.name] = token if setting.secret else ZENDESK_EMAIL
            first = sync_once(api, spec, warehouse, environ, count)
            check(api, "first", first, added=count, sent=count, failed=0, skipped=0)
            check(api, "first", first, synced_state=count, distinct_ids=count)
            print(f"{api}: first run {json.dumps(first)}", file=sys.stderr, flush=True)
            again = sync_once(api, spec, warehouse, environ, count)
            check(api, "no-change", again, sent=0, api_calls=0, failed=0, unchanged=count)
            with warehouse.connect() as conn:
                expected = change_one_percent(conn)
            limit = LIMITS[api]
            pause = delta_pause if delta_pause is not None else (limit[1] if limit else 0.0)
            time.sleep(pause)
            delta = sync_once(api, spec, warehouse, environ, count)
            check(api, "1%", delta, changed=expected, sent=expected, failed=0)
    return {
        "mode": "sync",
        "destination": api,
        "sync": spec.name,
        "records": count,
        "batch_size": spec.effective_batch_size,
        "batches_per_commit": spec.batches_per_commit,
        "build_warehouse_s": round(build_s, 2),
        **{k: first[k] for k in first if k not in ("sent", "added", "changed", "removed")},
        "no_change": {k: again[k] for k in ("seconds", "sent", "api_calls", "plan_s")},
        "one_percent": {
            "pause_before_s": pause,
            "expected": expected,
            **{
                k: delta[k]
                for k in ("seconds", "sent", "api_calls", "rate_limited", "waited_seconds")
            },
        },
    }


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _limit_columns(r: Result) -> str:
    ceiling = r["ceiling_records_per_s"]
    return (
        f"{f'{ceiling:,.0f}' if ceiling else '—'} | {r.get('of_ceiling', '—')} | "
        f"{r.get('of_window_bound', '—')} | {r.get('steady', '—')} |"
    )


def render(results: list[Result], info: dict[str, str]) -> str:
    lines = []
    client = [r for r in results if r["mode"] == "client"]
    synced = [r for r in results if r["mode"] == "sync"]
    if client:
        lines += [
            "client alone:",
            "| destination | limit | records | seconds | records/s | API calls | slow-downs | "
            "waited s | ceiling rec/s | of ceiling | of window bound | steady |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in client:
            lines.append(
                f"| {r['destination']} | {r['rate_limit'] or 'none per window'} | "
                f"{r['records']:,} | {r['seconds']:.1f} | {r['records_per_s']:,.0f} | "
                f"{r['api_calls']:,} | {r['rate_limited']} | {r['waited_seconds']:.1f} | "
                + _limit_columns(r)
            )
    if synced:
        lines += [
            "sync engine, first run (everything sent):",
            "| destination | limit | records | seconds | records/s | API calls | slow-downs | "
            "waited s | ceiling rec/s | of ceiling | of window bound | steady |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in synced:
            lines.append(
                f"| {r['sync']} | {r['rate_limit'] or 'none per window'} | {r['records']:,} | "
                f"{r['seconds']:.1f} | {r['records_per_s']:,.0f} | {r['api_calls']:,} | "
                f"{r['rate_limited']} | {r['waited_seconds']:.1f} | " + _limit_columns(r)
            )
        lines += [
            "\nfirst run, where the time went (s):",
            "| destination | batch x per commit | plan | in client | client call median / "
            "p90 / max | commits | commit s | other |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in synced:
            call = r["client_call_s"] or {"median": 0, "p90": 0, "max": 0}
            lines.append(
                f"| {r['sync']} | {r['batch_size']} x {r['batches_per_commit']} | "
                f"{r['plan_s']:.2f} | {r['client_s']:.1f} | {call['median']:.3f} / "
                f"{call['p90']:.3f} / {call['max']:.1f} | {r['commits']} | "
                f"{r['commit_s']:.2f} | {r['other_s']:.2f} |"
            )
        lines += [
            "\nreruns:",
            "| destination | no change: sent | API calls | seconds | 1% changed: expected | "
            "sent | API calls | slow-downs | seconds |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in synced:
            same, delta = r["no_change"], r["one_percent"]
            lines.append(
                f"| {r['sync']} | {same['sent']} | {same['api_calls']} | {same['seconds']:.2f} | "
                f"{delta['expected']:,} | {delta['sent']:,} | {delta['api_calls']} | "
                f"{delta['rate_limited']} | {delta['seconds']:.2f} |"
            )
    for r in results:
        if r["destination"] == "zendesk":
            lines.append(
                f"\nzendesk ({r['mode']}): {r['jobs']} jobs, {r['job_polls']} polls, "
                f"{r['requests_per_job']} requests per job"
            )
    lines.append(f"\nmachine: {info}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="sync",
        help="sync: the packaged syncs through the engine (default); client: the clients alone",
    )
    parser.add_argument("--records", type=int, default=100_000, help="records per destination")
    parser.add_argument("--only", choices=DESTINATIONS, action="append", help="repeatable")
    parser.add_argument(
        "--call-size",
        type=int,
        default=10_000,
        help="client mode: records per upsert() call (default 10,000)",
    )
    parser.add_argument(
        "--delta-pause",
        type=float,
        help="sync mode: seconds to wait before the 1%% run (default: one rate-limit window)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    if args.records < 1 or args.call_size < 1:
        parser.error("--records and --call-size must be >= 1")
    info = common.machine_info()
    results = []
    for api in args.only or DESTINATIONS:
        print(f"{api}: {args.mode} mode, {args.records:,} records ...", file=sys.stderr, flush=True)
        if args.mode == "client":
            results.append(run_client(api, args.records, args.call_size))
        else:
            results.append(run_sync(api, args.records, args.delta_pause))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(render(results, info))
    if args.json:
        print(json.dumps({"mode": args.mode, "results": results, "machine": info}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
