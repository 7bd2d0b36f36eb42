"""Walk an endpoint's pages; each page says how to fetch the next (a resume token).

The resume token is what the sync engine commits with each page's rows, so a killed run
continues at the first page it had not committed: no gap, no duplicate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from medallion_platform.connectors.rest.client import RestClient, RestError
from medallion_platform.connectors.rest.spec import RestEndpoint

Resume = dict[str, Any]


class Page(BaseModel):
    records: list[dict[str, Any]]
    url: str
    next: Resume | None


def _dig(payload: Any, path: str) -> Any:
    value = payload
    for part in [p for p in path.split(".") if p]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def first_resume(endpoint: RestEndpoint) -> Resume:
    pagination = endpoint.pagination
    if pagination.type == "page_number":
        return {pagination.page_param: pagination.start_page}
    if pagination.type == "offset":
        return {pagination.offset_param: 0}
    return {}


def iter_pages(
    client: RestClient,
    endpoint: RestEndpoint,
    *,
    since: int | None,
    resume: Resume | None = None,
) -> Iterator[Page]:
    """Pages of records, from ``resume`` (or the first page) to the last."""
    base: dict[str, Any] = {**endpoint.params, endpoint.page_size_param: endpoint.page_size}
    if endpoint.incremental is not None and since is not None:
        base[endpoint.incremental.param] = since
    state = resume if resume is not None else first_resume(endpoint)
    pagination = endpoint.pagination
    while True:
        if "url" in state:
            payload, response = client.get_json(state["url"])
        else:
            payload, response = client.get_json(endpoint.path, {**base, **state})
        records = payload if not endpoint.record_path else _dig(payload, endpoint.record_path)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise RestError(
                f"GET {endpoint.path}: expected a list of objects at {endpoint.record_path!r}, "
                f"got {type(records).__name__}"
            )
        nxt: Resume | None = None
        if pagination.type == "cursor":
            more = True
            if pagination.has_more_path:
                more = bool(_dig(payload, pagination.has_more_path))
            if pagination.cursor_path:
                token = _dig(payload, pagination.cursor_path)
            elif records and pagination.cursor_record_field:
                token = records[-1].get(pagination.cursor_record_field)
            else:
                token = None
            if more and token:
                nxt = {pagination.cursor_param: token}
        elif pagination.type == "next_url":
            url = _dig(payload, pagination.next_url_path)
            if url and records:
                nxt = {"url": str(url)}
        elif pagination.type == "link_header":
            url = response.links.get("next", {}).get("url")
            if url and records:
                nxt = {"url": str(response.url.join(url))}
        elif pagination.type == "page_number":
            if len(records) >= endpoint.page_size:
                nxt = {pagination.page_param: int(state[pagination.page_param]) + 1}
        elif len(records) >= endpoint.page_size:  # offset
            nxt = {pagination.offset_param: int(state[pagination.offset_param]) + len(records)}
        yield Page(records=records, url=str(response.url), next=nxt)
        if nxt is None:
            return
        state = nxt
