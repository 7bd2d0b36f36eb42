"""Emulator of a webhook receiver, as the generic webhook destination posts to it.

``POST <any path>`` with a bearer token and ``{"object", "action", "identity_field",
"records"}`` (see :mod:`medallion_platform.reverse_etl.destinations.webhook`): ``upsert``
stores each record by its identity, ``update`` only the ones it has (the others come back
``ok: false``, "not found"), ``delete`` removes them (already gone is fine). A record whose
``email`` is not an email address is refused alone (``ok: false``); a body that is not the
shape above is a 400, more than ``max_records`` records a 413, a wrong token a 401. Faults,
the rate limit and the request log are the shared emulator server's.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from medallion_platform.devkit.demo.destinations.common import (
    EmulatorInfo,
    RecordStore,
    is_email,
    rate_limit_from_args,
)
from medallion_platform.devkit.demo.http_emulator import (
    Admission,
    ApiError,
    EmulatorServer,
    RateLimit,
    Request,
    Response,
    Route,
    bearer_token,
    json_response,
    parse_json,
    same_secret,
)

MAX_RECORDS = 500
ACTIONS = ("upsert", "update", "delete")


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return json_response(status, {"error": HTTPStatus(status).phrase, "message": message}, headers)


class WebhookEmulator(EmulatorServer):
    """A receiver that keeps what it was sent: ``records()`` by identity, ``batches``."""

    name = "webhook"

    def __init__(
        self,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        max_records: int = MAX_RECORDS,
    ) -> None:
        self.max_records = max_records
        self._store = RecordStore()
        self._batches: list[dict[str, Any]] = []
        super().__init__(token=token, host=host, port=port, rate_limit=rate_limit)

    # -- what a test inspects ------------------------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        """Stored records by identity."""
        return self._store.snapshot()

    @property
    def batches(self) -> list[dict[str, Any]]:
        """Every body applied, in order (a refused or faulted one is not here)."""
        with self._lock:
            return list(self._batches)

    # -- the API -------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [Route("POST", re.compile(r"/.*"), "POST webhook", self._receive)]

    def _receive(self, request: Request, match: re.Match[str]) -> Response:
        body = parse_json(request, lambda why: _error(400, f"body is not JSON: {why}"))
        if not isinstance(body, dict):
            raise ApiError(_error(400, "body must be a JSON object"))
        action, key, records = body.get("action"), body.get("identity_field"), body.get("records")
        if action not in ACTIONS or not isinstance(key, str) or not isinstance(records, list):
            raise ApiError(
                _error(400, f"need action ({'|'.join(ACTIONS)}), identity_field and records")
            )
        if len(records) > self.max_records:
            raise ApiError(_error(413, f"{len(records)} records; at most {self.max_records}"))
        results = []
        with self._store.transaction() as txn:
            for index, record in enumerate(records):
                identity = record.get(key) if isinstance(record, dict) else None
                if not isinstance(identity, str) or not identity:
                    results.append({"index": index, "ok": False, "error": f"no {key}"})
                    continue
                email = record.get("email")
                if action != "delete" and email is not None and not is_email(str(email)):
                    error = f"email {email!r} is not an email address"
                    results.append({"index": index, "ok": False, "error": error})
                    continue
                existing = txn.get(identity)
                if action == "delete":
                    if existing is not None:
                        txn.delete(identity)
                    results.append({"index": index, "ok": True})
                elif action == "update" and existing is None:
                    results.append({"index": index, "ok": False, "error": "not found"})
                else:
                    txn.put(identity, {**(existing or {}), **record})
                    results.append({"index": index, "ok": True, "created": existing is None})
            with self._lock:
                self._batches.append(body)
        return json_response(200, {"results": results})

    def _authenticate(self, request: Request) -> Response | None:
        token, expired = self._token_state()
        if expired or not same_secret(bearer_token(request), token):
            return _error(401, "missing or invalid bearer token")
        return None

    def _limited(self, admission: Admission) -> Response:
        retry_after = f"{max(admission.retry_after, 0.001):.3f}"
        return _error(429, "too many requests", (("Retry-After", retry_after),))

    def _fault(self, status: int, retry_after: float | None) -> Response:
        headers = () if retry_after is None else (("Retry-After", f"{retry_after:g}"),)
        return _error(status, "injected fault", headers)

    def _not_found(self, request: Request, allowed: list[str]) -> Response:
        return _error(405, f"{request.method} is not allowed; POST batches")

    def _internal_error(self) -> Response:
        return _error(500, "the receiver failed")


EMULATOR = EmulatorInfo(
    build=lambda args, settings: WebhookEmulator(
        token=settings["token"], port=args.port, rate_limit=rate_limit_from_args(args, None)
    )
)
