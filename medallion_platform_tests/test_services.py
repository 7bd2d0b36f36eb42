"""``medallion services``: the payments API emulator as a real process, up and down by pid."""

from __future__ import annotations

import httpx

from medallion_platform import services


def test_up_serves_on_loopback_with_its_token_and_down_stops_it(settings) -> None:
    info = services.up(settings, charges=200)
    try:
        assert info.running() and info.base_url.startswith("http://127.0.0.1:")
        assert services.up(settings).pid == info.pid  # idempotent: the running one is reused
        token = info.env["PAYMENTS_API_TOKEN"]
        ok = httpx.get(
            f"{info.base_url}/v1/charges?limit=3", headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.status_code == 200 and len(ok.json()["data"]) == 3
        assert httpx.get(f"{info.base_url}/v1/charges").status_code == 401
        exports = services.export_lines(services.status(settings))
        assert f'export PAYMENTS_API_BASE_URL="{info.base_url}"' in exports
        state_file = settings.home / "services" / "payments_api.json"
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"  # it holds the demo token
    finally:
        assert services.down(settings) == ["payments_api"]
    assert not info.running()
    assert services.status(settings) == []
    assert services.down(settings) == []
