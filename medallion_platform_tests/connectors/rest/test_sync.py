"""The REST connector against a real HTTP server that speaks the payments API's shapes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from medallion_platform.config import PlatformConfig
from medallion_platform.connectors.rest import (
    Credentials,
    RestClient,
    RestHttpError,
    RestSource,
    RetriesExhausted,
    sync_endpoint,
)
from medallion_platform.connectors.rest.pager import RepeatedPageError
from medallion_platform.connectors.rest.spec import RetryPolicy
from medallion_platform.connectors.rest.sync import load_state, state_key
from medallion_platform.contracts.drift import detect_drift
from medallion_platform.devkit.demo.payments_api import PaymentsApi, generate_payments
from medallion_platform.warehouse import Warehouse

TOKEN = "sk_test_sync_token_do_not_leak_42"
FAST_RETRY = RetryPolicy(max_attempts=6, backoff_base_s=0.01, backoff_max_s=0.05, max_total_s=10)


@pytest.fixture(scope="module")
def big_data():
    return generate_payments(10_000)


@pytest.fixture
def source(config: PlatformConfig) -> RestSource:
    configured = config.rest_sources[0]
    # Fast backoff, and the source's own should-retry header (Stripe-Should-Retry).
    retry = FAST_RETRY.model_copy(
        update={"should_retry_header": configured.retry.should_retry_header}
    )
    return configured.model_copy(update={"retry": retry})


def _endpoint(source: RestSource, name: str):
    return next(e for e in source.endpoints if e.name == name)


def _client(api: PaymentsApi, source: RestSource, token: str = TOKEN, **kw) -> RestClient:
    return RestClient(api.base_url, source.auth, Credentials(token=token), source.retry, **kw)


def _counts(warehouse: Warehouse, table: str) -> tuple[int, int]:
    with warehouse.connect() as conn:
        return conn.execute(
            f"SELECT count(*), count(DISTINCT _raw->>'id') FROM bronze.{table}"
        ).fetchone()


def test_ten_thousand_charges_over_100_record_pages_arrive_exactly_once(
    warehouse, source, big_data
) -> None:
    with PaymentsApi(big_data, token=TOKEN) as api:
        report = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
        listed = [r for r in api.requests if r.path == "/v1/charges"]
    assert report.pages == 100 and report.records == 10_000
    assert _counts(warehouse, "payments_charges") == (10_000, 10_000)
    assert all(r.query.get("limit") == "100" for r in listed)
    assert report.high_water_mark == max(c["created"] for c in big_data.charges)
    with warehouse.connect() as conn:
        state = load_state(conn, state_key(source, _endpoint(source, "charges")))
        first = big_data.charges[0]
        raw = conn.execute(
            "SELECT _raw, _source LIKE '%/v1/charges?%#row=%' "
            "FROM bronze.payments_charges WHERE _raw->>'id' = ?",
            [first["id"]],
        ).fetchone()
        # Several pages per commit, and (_batch_id, _row_number) still names one row: rows
        # are numbered 1..n across the commit's pages, in landing order (the API's order).
        per_batch = conn.execute(
            "SELECT count(*), count(DISTINCT _row_number), min(_row_number), max(_row_number),"
            " count(DISTINCT split_part(_source, '#', 1)) FROM bronze.payments_charges"
            " GROUP BY _batch_id"
        ).fetchall()
        out_of_order = conn.execute(
            "SELECT count(*) FROM (SELECT _row_number, row_number() OVER"
            " (PARTITION BY _batch_id ORDER BY rowid) AS landed FROM bronze.payments_charges)"
            " WHERE _row_number <> landed"
        ).fetchone()[0]
    assert state.in_progress is None and state.high_water_mark == report.high_water_mark
    assert (json.loads(raw[0]), raw[1]) == (first, True)  # the record as the API sent it
    assert len(per_batch) < 100 and all(pages > 1 for *_, pages in per_batch)
    assert all(n == distinct == last and first == 1 for n, distinct, first, last, _ in per_batch)
    assert out_of_order == 0


def test_429_burst_500_and_truncated_body_mid_pagination_leave_no_gap_or_duplicate(
    warehouse, source, big_data
) -> None:
    delays: list[float] = []
    with PaymentsApi(big_data, token=TOKEN) as api:
        api.faults.add("429", path="/v1/charges", after=10, count=3, retry_after=0.05)
        api.faults.add("500", path="/v1/charges", after=40)
        api.faults.add("502", path="/v1/charges", after=60)
        api.faults.add("truncated", path="/v1/charges", after=80)
        client = _client(api, source, sleep=delays.append)
        report = sync_endpoint(warehouse, source, _endpoint(source, "charges"), client)
        statuses = [r.status for r in api.requests if r.path == "/v1/charges"]
    assert _counts(warehouse, "payments_charges") == (10_000, 10_000)
    # 100 pages, 6 retries, and one call noting where the event log stands (first sync).
    assert report.retries == 6 and report.api_calls == 107
    assert statuses.count(429) == 3 and 500 in statuses and 502 in statuses
    assert delays[:3] == [0.05, 0.05, 0.05]  # Retry-After honored exactly
    assert all(0 <= d <= FAST_RETRY.backoff_max_s for d in delays[3:])  # jittered backoff


def test_persistent_503_gives_up_within_the_retry_budget(warehouse, source) -> None:
    with PaymentsApi(generate_payments(50), token=TOKEN) as api:
        api.faults.add("503", path="/v1/charges", count=100)
        with pytest.raises(RetriesExhausted, match=r"gave up after 6 attempt\(s\).*HTTP 503"):
            sync_endpoint(warehouse, source, _endpoint(source, "charges"), _client(api, source))
    with warehouse.connect() as conn:
        assert conn.execute("SELECT count(*) FROM bronze.payments_charges").fetchone() == (0,)


def test_a_revoked_token_fails_at_once_with_a_clear_error_and_no_secret(warehouse, source) -> None:
    with PaymentsApi(generate_payments(500), token=TOKEN) as api:
        api.faults.add("revoke", path="/v1/charges", after=2)
        with pytest.raises(RestHttpError) as caught:
            sync_endpoint(warehouse, source, _endpoint(source, "charges"), _client(api, source))
        calls = len([r for r in api.requests if r.path == "/v1/charges"])
    message = str(caught.value)
    assert caught.value.status == 401 and "GET /v1/charges failed with HTTP 401" in message
    assert "Invalid API Key" in message and TOKEN not in message
    assert calls == 3  # no retry of a 401
    # The two pages before the revocation are committed with the position to resume from.
    assert _counts(warehouse, "payments_charges") == (200, 200)


def test_a_new_field_mid_stream_lands_in_bronze_and_the_drift_report_names_it(
    warehouse, source, config
) -> None:
    with PaymentsApi(generate_payments(1_000), token=TOKEN) as api:
        api.faults.add("new_field", path="/v1/charges", after=4)
        report = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
    with warehouse.connect() as conn:
        with_field, total, first_batch = conn.execute(
            "SELECT count(_raw->>'risk_score'), count(*), "
            "min(_batch_id) FILTER (WHERE _raw->>'risk_score' IS NOT NULL) "
            "FROM bronze.payments_charges"
        ).fetchone()
        drift = detect_drift(conn, config.contract("payments_charges"))
    assert total == 1_000 and with_field == 600  # pages 5..10 carry it
    (finding,) = drift.findings
    assert finding.where == f"bronze.payments_charges records from batch {first_batch}"
    assert (finding.new, finding.missing) == (["risk_score"], [])
    assert first_batch in report.batch_ids


def test_a_field_renamed_by_the_api_is_missing_in_the_drift_report_and_quarantined_in_silver(
    warehouse, source, config
) -> None:
    """Bronze keeps no column per field, so drift is judged on the sets of fields the records
    came with: charges that arrive with ``amount_cents`` instead of ``amount`` are a new set,
    which lacks a field the contract reads; silver quarantines them (amount is required)."""
    from medallion_platform.contracts import apply_contract

    data = generate_payments(200)
    newest = max(c["created"] for c in data.charges)
    renamed = []
    for n, charge in enumerate(data.charges[:3], start=1):
        late = {k: v for k, v in charge.items() if k != "amount"}
        late |= {"id": f"ch_RENAMED{n:017d}", "created": newest + n, "amount_cents": 500}
        renamed.append(late)
    with PaymentsApi(data, token=TOKEN) as api:
        sync_endpoint(warehouse, source, _endpoint(source, "charges"), _client(api, source))
        api.add_charges(renamed)
        second = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
    with warehouse.transaction() as conn:
        drift = detect_drift(conn, config.contract("payments_charges"))
        apply_contract(conn, config.contract("payments_charges"))
        reasons = conn.execute(
            "SELECT _raw->>'charge_id', _reason FROM quarantine.payments_charges "
            "WHERE _raw->>'charge_id' LIKE 'ch_RENAMED%' ORDER BY 1"
        ).fetchall()
        in_silver = conn.execute(
            "SELECT count(*) FROM silver.payments_charges WHERE charge_id LIKE 'ch_RENAMED%'"
        ).fetchone()
    (finding,) = drift.findings
    assert finding.where == f"bronze.payments_charges records from batch {second.batch_ids[0]}"
    assert (finding.missing, finding.new) == (["amount"], ["amount_cents"])
    assert "lacks amount; has new column(s) amount_cents" in drift.summary()
    assert reasons == [(c["id"], "amount: required value is missing") for c in renamed]
    assert in_silver == (0,)


def test_the_next_run_starts_from_the_mark_minus_the_lookback(warehouse, source) -> None:
    data = generate_payments(1_000)
    with PaymentsApi(data, token=TOKEN) as api:
        first = sync_endpoint(warehouse, source, _endpoint(source, "charges"), _client(api, source))
        newest = max(c["created"] for c in data.charges)
        late = {**data.charges[0], "id": "ch_NEWARRIVAL0000000000000", "created": newest + 60}
        api.add_charges([late])
        second = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
        sent = [r.query for r in api.requests if r.path == "/v1/charges"][-1]
    lookback = _endpoint(source, "charges").incremental.lookback_seconds
    assert second.since == first.high_water_mark - lookback
    assert sent["created[gte]"] == str(second.since)
    in_window = sum(1 for c in data.charges if c["created"] >= second.since)
    assert second.records == in_window + 1  # the lookback re-reads; silver dedups by id
    assert second.high_water_mark == newest + 60


def test_payouts_are_read_by_cursor_every_payout_once(warehouse, source) -> None:
    """Stripe's payouts list takes limit/starting_after/created and refuses per_page with a
    400 (before: read with per_page and a Link header, which the real API refuses)."""
    data = generate_payments(10_000)
    with PaymentsApi(data, token=TOKEN) as api:
        report = sync_endpoint(
            warehouse, source, _endpoint(source, "payouts"), _client(api, source)
        )
        asked = [r for r in api.requests if r.path == "/v1/payouts"]
    assert all(r.status == 200 and "per_page" not in r.query for r in asked)
    assert all(r.query["limit"] == "100" for r in asked) and "starting_after" in asked[-1].query
    assert report.records == len(data.payouts) and report.pages >= 2
    assert _counts(warehouse, "payments_payouts") == (len(data.payouts), len(data.payouts))


def test_a_next_link_to_another_origin_is_refused(source) -> None:
    """The bearer token would travel with it."""
    client = RestClient("http://127.0.0.1:1", source.auth, Credentials(token=TOKEN), FAST_RETRY)
    with pytest.raises(Exception, match="another origin"):
        client.get_json("http://example.invalid/v1/payouts?page=2")


KILL_SCRIPT = """
import sys
from medallion_platform.config import platform_config
from medallion_platform.connectors.rest import Credentials, RestClient, sync_endpoint
from medallion_platform.warehouse import Warehouse

source = platform_config().rest_sources[0]
endpoint = next(e for e in source.endpoints if e.name == "charges")
client = RestClient(sys.argv[2], source.auth, Credentials(token=sys.argv[3]), source.retry)

def on_page(pages, records):
    print(f"page {pages} {records}", flush=True)

sync_endpoint(Warehouse(sys.argv[1]), source, endpoint, client, on_page=on_page)
print("done", flush=True)
"""


def test_a_killed_sync_resumes_from_the_committed_page(
    warehouse, source, big_data, tmp_path: Path
) -> None:
    script = tmp_path / "sync_child.py"
    script.write_text(KILL_SCRIPT)
    with PaymentsApi(big_data, token=TOKEN) as api:
        api.faults.add("slow", path="/v1/charges", after=30, count=100, delay=0.05)
        child = subprocess.Popen(
            [sys.executable, str(script), str(warehouse.path), api.base_url, TOKEN],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in child.stdout], daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=60)
                assert line != "done\n", "the child finished before it could be killed"
                if line.startswith("page ") and int(line.split()[1]) >= 30:  # a commit in
                    os.kill(child.pid, signal.SIGKILL)  # the slow pages (any pages_per_commit)
                    break
        finally:
            child.kill()
            child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        committed, _ = _counts(warehouse, "payments_charges")
        assert 3_000 <= committed < 10_000  # pages committed before the kill, not all
        with warehouse.connect() as conn:
            state = load_state(conn, state_key(source, _endpoint(source, "charges")))
        assert state.in_progress is not None and state.in_progress.pages * 100 == committed

        api.faults.clear()
        report = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
    assert report.resumed
    assert report.records == 10_000 - committed
    assert _counts(warehouse, "payments_charges") == (10_000, 10_000)


def test_a_record_whose_metadata_is_not_an_object_has_no_order_id_and_fails_nothing(
    warehouse, source, config
) -> None:
    """order_id is read at ``$.metadata.order_id`` inside the record: a record whose metadata
    is plain text has no such field (NULL, as a record without metadata), and neither the
    sync nor the silver run fails on it."""
    from medallion_platform.contracts import apply_contract

    data = generate_payments(50)
    odd = {**data.charges[0], "id": "ch_ODDMETADATA000000000000", "metadata": "oops"}
    with PaymentsApi(data, token=TOKEN) as api:
        api.add_charges([odd])
        sync_endpoint(warehouse, source, _endpoint(source, "charges"), _client(api, source))
    with warehouse.transaction() as conn:
        stats = apply_contract(conn, config.contract("payments_charges"))
        odd_row = conn.execute(
            "SELECT amount * 100, order_id FROM silver.payments_charges "
            "WHERE charge_id = 'ch_ODDMETADATA000000000000'"
        ).fetchone()
    assert (stats.valid, stats.quarantined) == (51, 0)
    assert odd_row == (odd["amount"], None)


def test_an_api_repeating_its_page_and_cursor_stops_with_an_error_naming_both(
    warehouse, source
) -> None:
    """The operator's runaway: ``has_more: true`` and the previous page (so the same cursor)
    again and again. Before the guard: every repeat appended, for as long as it went on."""
    data = generate_payments(1_000)
    newest_first = sorted(data.charges, key=lambda c: (c["created"], c["id"]), reverse=True)
    cursor = newest_first[299]["id"]  # the last record of page 3
    with PaymentsApi(data, token=TOKEN) as api:
        api.faults.add("repeat_page", path="/v1/charges", after=3, count=50)
        with pytest.raises(RepeatedPageError) as caught:
            sync_endpoint(warehouse, source, _endpoint(source, "charges"), _client(api, source))
        calls = len([r for r in api.requests if r.path == "/v1/charges"])
        message = str(caught.value)
        assert calls == 4  # three pages, then the repeat: not 50 more
        assert "GET /v1/charges: page 4" in message and f"starting_after={cursor}" in message
        assert caught.value.cursor == f"starting_after={cursor}"
        assert _counts(warehouse, "payments_charges") == (300, 300)  # each page once
        with warehouse.connect() as conn:
            state = load_state(conn, state_key(source, _endpoint(source, "charges")))
        assert state.in_progress.resume == {"starting_after": cursor}

        api.faults.clear()  # the API is fixed: the next run continues where it stopped
        report = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
    assert report.resumed and report.records == 700
    assert _counts(warehouse, "payments_charges") == (1_000, 1_000)


def _with_budget(source: RestSource, endpoint_budget: dict, source_budget: dict) -> RestSource:
    """The packaged source with budgets declared as in rest_sources.yaml (validated)."""
    raw = source.model_dump(exclude_unset=True)
    for endpoint in raw["endpoints"]:
        if endpoint["name"] == "charges":
            endpoint.update(budget=endpoint_budget, pages_per_commit=2)
    return RestSource.model_validate({**raw, "budget": source_budget})


def test_a_page_budget_ends_the_sync_cleanly_and_the_next_runs_continue(warehouse, source) -> None:
    """3 pages a run (declared on the endpoint, over the source's 10,000): four runs read the
    ten pages, each committed once, and only the last moves the high-water mark. The reader
    runs a commit's worth of pages ahead, never past the budget: no page is asked for twice."""
    budgeted = _with_budget(source, {"max_pages": 3}, {"max_pages": 10_000, "max_seconds": 60})
    endpoint = _endpoint(budgeted, "charges")
    assert budgeted.budget_for(endpoint).model_dump() == {"max_pages": 3, "max_seconds": 60}
    data = generate_payments(1_000)
    reports = []
    with PaymentsApi(data, token=TOKEN) as api:
        for _ in range(4):
            reports.append(sync_endpoint(warehouse, budgeted, endpoint, _client(api, budgeted)))
            if reports[-1].complete:
                break
        asked = [r for r in api.requests if r.path == "/v1/charges"]
    assert len(asked) == 10  # and the last run asks the change log where it stands
    assert [r.records for r in reports] == [300, 300, 300, 100]
    assert [r.pages for r in reports] == [3, 6, 9, 10]  # of the sync, across its runs
    assert [r.budget_reached for r in reports] == ["max_pages=3"] * 3 + [None]
    assert [r.resumed for r in reports] == [False, True, True, True]
    assert [r.high_water_mark for r in reports][:3] == [None] * 3
    assert reports[-1].high_water_mark == max(c["created"] for c in data.charges)
    assert _counts(warehouse, "payments_charges") == (1_000, 1_000)


def test_a_time_budget_ends_a_slow_sync_with_its_progress_committed(warehouse, source) -> None:
    """Each page takes 0.15 s; the source allows 0.4 s a run: the sync stops after the page
    that crossed it, commits, and the next run (no budget pressure) finishes exactly once.
    The reader ahead stops fetching there too: every page asked for is committed."""
    budgeted = _with_budget(source, {}, {"max_seconds": 0.4})
    endpoint = _endpoint(budgeted, "charges")
    with PaymentsApi(generate_payments(1_000), token=TOKEN) as api:
        api.faults.add("slow", path="/v1/charges", count=100, delay=0.15)
        first = sync_endpoint(warehouse, budgeted, endpoint, _client(api, budgeted))
        asked = len([r for r in api.requests if r.path == "/v1/charges"])
        with warehouse.connect() as conn:
            state = load_state(conn, state_key(budgeted, endpoint))
        api.faults.clear()
        second = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
    assert first.budget_reached == "max_seconds=0.4" and not first.complete
    assert first.pages < 10 and first.records == first.pages * 100  # stopped early
    assert asked == first.api_calls == first.pages
    assert state.in_progress is not None and state.in_progress.pages == first.pages
    assert _counts(warehouse, "payments_charges") == (1_000, 1_000)
    assert second.resumed and second.complete and second.records == 1_000 - first.records


def test_stripe_should_retry_overrides_the_status(warehouse, source) -> None:
    """Stripe's verdict wins: a 409 lock_timeout with ``Stripe-Should-Retry: true`` is retried
    (before: a 4xx, failed at once) and a 503 with ``false`` fails at once (before: retried)."""
    data = generate_payments(300)
    with PaymentsApi(data, token=TOKEN) as api:
        api.faults.add("409", path="/v1/charges", after=1, should_retry=True)
        report = sync_endpoint(
            warehouse, source, _endpoint(source, "charges"), _client(api, source)
        )
        statuses = [r.status for r in api.requests if r.path == "/v1/charges"]
        assert statuses == [200, 409, 200, 200] and report.retries == 1
        assert _counts(warehouse, "payments_charges") == (300, 300)

        api.faults.add("503", path="/v1/refunds", should_retry=False)
        with pytest.raises(RestHttpError) as caught:
            sync_endpoint(warehouse, source, _endpoint(source, "refunds"), _client(api, source))
        refunds = [r.status for r in api.requests if r.path == "/v1/refunds"]
    assert refunds == [503]
    assert caught.value.status == 503
    assert "Stripe-Should-Retry: false, not retried" in str(caught.value)


def test_a_change_stamp_may_not_take_the_name_of_a_column_bronze_has() -> None:
    from medallion_platform.connectors.rest.spec import ChangesSpec

    for taken in ("_raw", "_batch_id"):
        with pytest.raises(ValueError, match=f"version_field '{taken}' is a column bronze"):
            ChangesSpec(path="/v1/events", version_field=taken)
    with pytest.raises(ValueError, match="version_field '_source' is a column bronze already has"):
        ChangesSpec(path="/v1/events", version_field="_source")
    assert ChangesSpec(path="/v1/events", version_field="_version").version_field == "_version"


def test_bronze_written_with_a_column_per_field_is_read_from_raw_after_the_upgrade(
    warehouse, source, config
) -> None:
    """A warehouse whose REST bronze the earlier sync wrote (each record flattened into text
    columns beside ``_raw``, a change's time merged into the record): the payments contracts
    now read ``_raw``, which every earlier row has, so the silver they rebuild holds the old
    rows' values; and a change landed then still wins over the versions listed since (its
    time, kept inside its ``_raw``, is copied into the ``_changed_at`` column the upgrade
    adds)."""
    from medallion_platform.connectors.bronze import append_batch, ensure_bronze_table
    from medallion_platform.connectors.files.readers import flatten_object, records_table
    from medallion_platform.contracts import apply_contract
    from medallion_platform.warehouse.warehouse import next_batch_id, table_columns

    data = generate_payments(100)
    gone = [{**c, "id": f"ch_GONE{n:019d}"} for n, c in enumerate(data.charges[:3], start=1)]
    changed = {**data.charges[5], "amount_refunded": 100, "_changed_at": 2_000_000_000}
    flat = []
    for n, record in enumerate([*data.charges, *gone, changed], start=1):
        row = flatten_object(record, n, ["id"], where=f"record {n}")
        row["_raw"] = json.dumps(record, separators=(",", ":"))
        row["_source"] = f"https://api.example/v1/charges#row={n}"
        flat.append(row)
    with warehouse.transaction() as conn:
        ensure_bronze_table(conn, "payments_charges", {"_raw": "JSON"})
        batch = next_batch_id(conn, "rest:payments.charges", None)
        append_batch(conn, "payments_charges", records_table(flat), batch_id=batch)
        # The stamp merged into the record was flattened as `changed_at` (no leading `_`).
        old_columns = {"id", "amount", "metadata", "changed_at"}
        assert old_columns <= set(table_columns(conn, "bronze", "payments_charges"))

    with PaymentsApi(data, token=TOKEN) as api:  # the upgraded sync lists every charge again
        sync_endpoint(warehouse, source, _endpoint(source, "charges"), _client(api, source))
    with warehouse.transaction() as conn:
        new_rows = conn.execute(
            "SELECT count(*), count(id) FROM bronze.payments_charges WHERE _batch_id > ?",
            [batch],
        ).fetchone()
        stats = apply_contract(conn, config.contract("payments_charges"))
        silver = {
            charge: (amount * 100, refunded * 100, order)
            for charge, amount, refunded, order in conn.execute(
                "SELECT charge_id, amount, amount_refunded, order_id FROM silver.payments_charges"
            ).fetchall()
        }
    assert new_rows == (100, 0)  # the old columns stay, NULL in new rows
    valid = [c for c in [*data.charges, *gone] if c["currency"] in ("usd", "eur", "gbp")]
    assert stats.quarantined == 2 * (len(data.charges) + len(gone) - len(valid))
    assert set(silver) == {c["id"] for c in valid}
    for charge in valid:
        if charge["id"] != changed["id"]:
            want = (charge["amount"], charge["amount_refunded"], charge["metadata"]["order_id"])
            assert silver[charge["id"]] == want
    assert silver[changed["id"]][1] == 100  # the change landed before the upgrade still wins


def test_charges_shaped_as_stripe_returns_them_are_read_by_the_payments_contract(
    warehouse, config
) -> None:
    """Charges written the way Stripe's API returns them, not by our emulator: every field of
    the object (nested objects, lists, nulls), one with an empty ``metadata`` sent as ``[]``
    (as some integrations serialize an empty map): the contract reads what it needs from
    ``_raw`` and leaves the rest, and a ``metadata`` that is a list just has no order id."""
    from datetime import datetime

    from medallion_platform.connectors.bronze import append_batch, ensure_bronze_table
    from medallion_platform.connectors.rest.rows import bronze_rows, raw_json
    from medallion_platform.connectors.rest.sync import REST_LINEAGE
    from medallion_platform.contracts import apply_contract
    from medallion_platform.warehouse.warehouse import next_batch_id

    charge = {
        "id": "ch_1PqR7sLkdIwHu7ix0aBcDeFg",
        "object": "charge",
        "amount": 4080,
        "amount_captured": 4080,
        "amount_refunded": 0,
        "application": None,
        "application_fee_amount": None,
        "balance_transaction": "txn_1PqR7sLkdIwHu7ix1HiJkLmN",
        "billing_details": {
            "address": {"city": None, "country": "GB", "line1": None, "postal_code": "EC1A"},
            "email": None,
            "name": "Jenny Rosen",
            "phone": None,
        },
        "captured": True,
        "created": 1498394827,
        "currency": "gbp",
        "customer": "cus_QhRsTuVwXyZ012",
        "description": "Order ord_0000042",
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {"order_id": "ord_0000042"},
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": 32,
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": "pi_3PqR7sLkdIwHu7ix0OpQrStU",
        "payment_method_details": {
            "card": {
                "brand": "visa",
                "checks": {"address_postal_code_check": "pass", "cvc_check": "pass"},
                "exp_month": 8,
                "exp_year": 2027,
                "last4": "4242",
            },
            "type": "card",
        },
        "receipt_url": "https://pay.stripe.com/receipts/payment/CAcaFwoVYWNjdF8x",
        "refunded": False,
        "refunds": {"object": "list", "data": [], "has_more": False, "url": "/v1/charges/x"},
        "status": "succeeded",
    }
    bare = {**charge, "id": "ch_1PqR7sLkdIwHu7ix0bBcDeFh", "customer": None, "metadata": []}
    records = [charge, bare]
    with warehouse.transaction() as conn:
        ensure_bronze_table(conn, "payments_charges", REST_LINEAGE)
        batch = next_batch_id(conn, "rest:payments.charges", None)
        rows = bronze_rows(
            records,
            numbers=[1, 2],
            sources=["https://api.stripe.com/v1/charges#row=1", "…#row=2"],
            raws=[raw_json(r) for r in records],
            required=["id"],
            wheres=["record 1", "record 2"],
        )
        append_batch(conn, "payments_charges", rows, batch_id=batch)
        stats = apply_contract(conn, config.contract("payments_charges"))
        silver = conn.execute(
            "SELECT charge_id, amount, amount_refunded, currency, customer_id, order_id, "
            "status, paid, created_at FROM silver.payments_charges ORDER BY customer_id"
        ).fetchall()
    created = datetime(2017, 6, 25, 12, 47, 7)
    assert (stats.valid, stats.quarantined) == (2, 0)
    assert [tuple(map(str, row)) for row in silver] == [
        (
            charge["id"],
            "40.80",
            "0.00",
            "gbp",
            "cus_QhRsTuVwXyZ012",
            "ord_0000042",
            "succeeded",
            "True",
            str(created),
        ),
        (bare["id"], "40.80", "0.00", "gbp", "None", "None", "succeeded", "True", str(created)),
    ]
