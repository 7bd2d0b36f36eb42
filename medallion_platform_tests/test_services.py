"""``medallion services``: the payments API emulator, the Kafka broker, the app database
(PostgreSQL) and the SaaS emulators reverse ETL writes to, as real processes, up and down by
pid."""

from __future__ import annotations

import httpx
import psycopg

from medallion_platform.connectors.streams.kafka import KafkaSource
from medallion_platform.devkit import services
from medallion_platform.devkit.demo.clickstream import clickstream_manifest
from medallion_platform.reverse_etl.spec import load_syncs, open_destination


def test_up_serves_on_loopback_with_its_token_and_down_stops_it(settings) -> None:
    infos = {
        i.name: i for i in services.up(settings, charges=200, events=1_000, customers=100, seed=3)
    }
    try:
        info, kafka, pg = infos["payments_api"], infos["kafka"], infos["postgres"]
        assert info.running() and info.base_url.startswith("http://127.0.0.1:")
        assert kafka.running() and kafka.base_url.startswith("127.0.0.1:")
        again = {i.name: i.pid for i in services.up(settings)}
        assert again == {name: i.pid for name, i in infos.items()}
        # The app database: seeded, with a workload applied, reached by DSN + password.
        assert pg.running() and "127.0.0.1" in pg.env["APP_DB_DSN"]
        assert pg.env["APP_DB_PASSWORD"] not in pg.env["APP_DB_DSN"]
        with psycopg.connect(pg.env["APP_DB_DSN"], password=pg.env["APP_DB_PASSWORD"]) as conn:
            customers = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
            level = conn.execute("SHOW wal_level").fetchone()[0]
        assert customers >= 100 and level == "logical"
        assert "seeded" in pg.note
        token = info.env["PAYMENTS_API_TOKEN"]
        ok = httpx.get(
            f"{info.base_url}/v1/charges?limit=3", headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200 and len(ok.json()["data"]) == 3
        assert httpx.get(f"{info.base_url}/v1/charges").status_code == 401
        # The demo storefront published its whole clickstream, redeliveries and all.
        with KafkaSource(
            "events",
            services.CLICKSTREAM_TOPIC,
            bootstrap_servers=kafka.env["EVENTS_KAFKA_BOOTSTRAP"],
            group_id="test",
            exact_high_watermark=True,
        ) as source:
            published = sum(source.lag({}).values())
            assert len(source.latest()) == services.CLICKSTREAM_PARTITIONS
        assert published == clickstream_manifest(1_000, seed=3).messages
        exports = services.export_lines(services.status(settings))
        assert f'export PAYMENTS_API_BASE_URL="{info.base_url}"' in exports
        assert f'export EVENTS_KAFKA_BOOTSTRAP="{kafka.base_url}"' in exports
        state_file = settings.home / "services" / "payments_api.json"
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"  # it holds the demo token
        _check_destination_emulators(infos, exports)
    finally:
        assert sorted(services.down(settings)) == [
            "hubspot",
            "kafka",
            "payments_api",
            "postgres",
            "salesforce",
            "zendesk",
        ]
    assert not any(i.running() for i in infos.values())
    assert services.status(settings) == []
    assert services.down(settings) == []


def test_the_app_database_keeps_its_data_across_restarts(settings) -> None:
    """Down and up again: the same cluster (and replication slots), not a new one; each start
    applies a new workload so a demo run always has changes to capture."""
    first = services.up_postgres(settings, customers=100, seed=5)
    try:
        with psycopg.connect(first.env["APP_DB_DSN"], password=first.env["APP_DB_PASSWORD"]) as c:
            before = c.execute("SELECT count(*), max(updated_at) FROM orders").fetchone()
            c.execute("SELECT pg_create_logical_replication_slot('kept', 'pgoutput')")
    finally:
        services.down(settings)
    password_file = settings.home / "services" / "postgres.password"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    second = services.up_postgres(settings, customers=100, seed=5)
    try:
        assert "seeded" not in second.note
        with psycopg.connect(second.env["APP_DB_DSN"], password=second.env["APP_DB_PASSWORD"]) as c:
            after = c.execute("SELECT count(*), max(updated_at) FROM orders").fetchone()
            slots = c.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
            c.execute("SELECT pg_drop_replication_slot('kept')")
        assert after[1] > before[1] and slots == [("kept",)]
    finally:
        services.down(settings)


def _check_destination_emulators(infos: dict[str, services.ServiceInfo], exports: str) -> None:
    """Each SaaS emulator answers its own API with the token in its env, and refuses without."""
    sf, hs, zd = infos["salesforce"], infos["hubspot"], infos["zendesk"]
    for emulator in (sf, hs, zd):
        assert emulator.running() and emulator.base_url.startswith("http://127.0.0.1:")
    assert sf.env["SALESFORCE_INSTANCE_URL"] == sf.base_url
    assert hs.env["HUBSPOT_BASE_URL"] == hs.base_url
    assert zd.env["ZENDESK_BASE_URL"] == zd.base_url
    # Tokens are new per service (secrets), and differ between services.
    tokens = {
        sf.env["SALESFORCE_ACCESS_TOKEN"],
        hs.env["HUBSPOT_ACCESS_TOKEN"],
        zd.env["ZENDESK_API_TOKEN"],
    }
    assert len(tokens) == 3 and all(len(token) >= 24 for token in tokens)
    limits = f"{sf.base_url}/services/data/v60.0/limits"
    bearer = {"Authorization": f"Bearer {sf.env['SALESFORCE_ACCESS_TOKEN']}"}
    assert httpx.get(limits, headers=bearer).status_code == 200
    assert httpx.get(limits).status_code == 401
    read = f"{hs.base_url}/crm/v3/objects/contacts/batch/read"
    body = {"inputs": [{"id": "nobody@example.com"}], "idProperty": "email"}
    bearer = {"Authorization": f"Bearer {hs.env['HUBSPOT_ACCESS_TOKEN']}"}
    assert httpx.post(read, json=body, headers=bearer).status_code in (200, 207)
    assert httpx.post(read, json=body).status_code == 401
    show = f"{zd.base_url}/api/v2/users/show_many.json?external_ids=c1"
    auth = (f"{zd.env['ZENDESK_EMAIL']}/token", zd.env["ZENDESK_API_TOKEN"])
    assert httpx.get(show, auth=auth).json() == {"users": []}
    assert httpx.get(show, auth=(auth[0], "wrong")).status_code == 401
    for name in ("SALESFORCE_INSTANCE_URL", "HUBSPOT_ACCESS_TOKEN", "ZENDESK_EMAIL"):
        assert f"export {name}=" in exports
    # The reverse-ETL clients reach each emulator with exactly the env the service exports.
    for spec in load_syncs():
        destination = open_destination(spec, infos[spec.destination].env)
        try:
            (outcome,) = destination.remove([("nobody-here", None)])  # already gone: ok
        finally:
            destination.close()
        assert outcome.ok and destination.stats.api_calls >= 1


def _read_all(bootstrap: str, after: dict[str, str] | None = None) -> list[tuple[str, str, bytes]]:
    with KafkaSource(
        "events",
        services.CLICKSTREAM_TOPIC,
        bootstrap_servers=bootstrap,
        group_id="journal-test",
        exact_high_watermark=True,
    ) as source:
        read = source.read_batch(after or {}, max_messages=1_000_000, timeout_s=5.0)
    return [(m.partition, m.offset, m.value) for m in read]


def test_the_broker_keeps_its_log_across_down_and_up_and_appends_new_events(settings) -> None:
    """The demo broker keeps topics in memory; its journal gives a restarted broker the same
    messages at the same offsets, so positions committed before a restart stay valid (no
    PositionPastEnd, nothing skipped), and new events come after them."""
    first = services.up_kafka(settings, events=400, seed=11)
    try:
        before = _read_all(first.env["EVENTS_KAFKA_BOOTSTRAP"])
        committed = {p: o for p, o, _ in before}  # as bronze commits them: the last read
    finally:
        services.down(settings)
    assert len(before) == clickstream_manifest(400, seed=11).messages
    second = services.up_kafka(settings, events=300, seed=11)
    try:
        assert second.env["EVENTS_KAFKA_BOOTSTRAP"] != "" and second.pid != first.pid
        after = _read_all(second.env["EVENTS_KAFKA_BOOTSTRAP"])
        # Same log, same offsets; then the new publish, with new event ids.
        kept = {(p, o): v for p, o, v in after}
        assert all(kept[(p, o)] == v for p, o, v in before)
        new = _read_all(second.env["EVENTS_KAFKA_BOOTSTRAP"], after=committed)
        assert len(new) == len(after) - len(before) == clickstream_manifest(300, seed=12).messages
        assert not {v for *_, v in new} & {v for *_, v in before}
        assert "messages kept from earlier runs" in second.note
    finally:
        services.down(settings)
    # --events 0: the broker starts with what it had, and nothing new.
    third = services.up(settings, charges=10, events=0, customers=0, destinations=False)
    try:
        (kafka,) = [i for i in third if i.name == services.KAFKA]
        assert len(_read_all(kafka.env["EVENTS_KAFKA_BOOTSTRAP"])) == len(after)
        assert kafka.note.endswith(", 0 new")
    finally:
        services.down(settings)
