"""Each emulator runs as a process for clients in other processes: the token comes from the
environment, the base URL is printed once listening, SIGTERM stops it cleanly."""

from __future__ import annotations

import base64
import os
import re
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from medallion_platform.devkit.demo.destinations import salesforce, zendesk
from medallion_platform.devkit.demo.destinations.__main__ import _parser, build, main
from medallion_platform.devkit.demo.http_emulator import RateLimit
from medallion_platform.reverse_etl.destinations import destination_info, destination_names

REPO_ROOT = Path(__file__).resolve().parents[3]
TOKEN = "process-mode-token-0000000000009876"
# The token each emulator reads: the secret its destination's client declares.
TOKEN_ENVS = {name: destination_info(name).secret_env[0] for name in destination_names()}


def test_runs_as_a_process_and_stops_on_sigterm() -> None:
    # One API is enough to check the shared print-then-sigwait plumbing (each process spends
    # seconds importing the platform package); Zendesk also has its job worker to stop.
    env = {**os.environ, "ZENDESK_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    env.pop("ZENDESK_EMAIL", None)
    command = [sys.executable, "-m", "medallion_platform.devkit.demo.destinations", "zendesk"]
    process = subprocess.Popen(
        [*command, "--port", "0", "--job-delay", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=60), "the emulator printed no URL"
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        credentials = base64.b64encode(f"{zendesk.DEFAULT_EMAIL}/token:{TOKEN}".encode())
        headers = {"Authorization": f"Basic {credentials.decode()}"}
        with httpx.Client(base_url=base_url, headers=headers, trust_env=False) as http:
            body = {"users": [{"external_id": "cus_1", "email": "ada@example.com", "name": "A"}]}
            job = http.post("/api/v2/users/create_or_update_many", json=body)
            assert job.status_code == 200
            url = job.json()["job_status"]["url"]
            assert url.startswith(f"{base_url}/api/v2/job_statuses/")
            refused = http.get(url, headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None and process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_arguments_shape_the_emulator() -> None:
    parser = _parser()
    hub = build(parser.parse_args(["hubspot", "--rate-limit", "7"]), {"access_token": TOKEN})
    assert hub.rate_limit == RateLimit(max_requests=7, window_seconds=10)
    desk = build(
        parser.parse_args(["zendesk", "--rate-window", "1", "--job-delay", "0"]),
        {"api_token": TOKEN},
    )
    assert isinstance(desk, zendesk.ZendeskEmulator)
    assert desk.rate_limit == RateLimit(max_requests=700, window_seconds=1) and desk.job_delay == 0
    force = build(parser.parse_args(["salesforce", "--api-budget", "5"]), {"access_token": TOKEN})
    assert isinstance(force, salesforce.SalesforceEmulator) and force.rate_limit is None
    quiet = build(parser.parse_args(["hubspot", "--no-rate-limit"]), {"access_token": TOKEN})
    assert quiet.rate_limit is None


@pytest.mark.parametrize("api", sorted(TOKEN_ENVS))
def test_refuses_to_start_without_its_token(
    api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in TOKEN_ENVS.values():
        monkeypatch.setenv(name, TOKEN)
    monkeypatch.delenv(TOKEN_ENVS[api])
    with pytest.raises(SystemExit) as exited:
        main([api, "--port", "0"])
    assert exited.value.code == 2 and TOKEN_ENVS[api] in capsys.readouterr().err
