"""``medallion services``: the payments API emulator and the Kafka broker as real processes,
up and down by pid."""

from __future__ import annotations

import httpx

from medallion_platform import services
from medallion_platform.connectors.streams.kafka import KafkaSource
from medallion_platform.demo.clickstream import clickstream_manifest


def test_up_serves_on_loopback_with_its_token_and_down_stops_it(settings) -> None:
    infos = {i.name: i for i in services.up(settings, charges=200, events=1_000, seed=3)}
    try:
        info, kafka = infos["payments_api"], infos["kafka"]
        assert info.running() and info.base_url.startswith("http://127.0.0.1:")
        assert kafka.running() and kafka.base_url.startswith("127.0.0.1:")
        again = {i.name: i.pid for i in services.up(settings)}
        assert again == {"payments_api": info.pid, "kafka": kafka.pid}  # the running ones
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
    finally:
        assert sorted(services.down(settings)) == ["kafka", "payments_api"]
    assert not info.running() and not kafka.running()
    assert services.status(settings) == []
    assert services.down(settings) == []
