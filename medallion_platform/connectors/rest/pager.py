"""Walk an endpoint's pages; each page says how to fetch the next (a resume token).

The resume token is what the sync engine commits with each page's rows, so a killed run
continues at the first page it had not committed: no gap, no duplicate.

Each pagination style is a :class:`Paginator` with its own stop rule, as dlt's are (a cursor
walk goes on while there is a cursor; page numbers and offsets stop on an empty page or at a
declared total, never on a short page). Whatever the style, :func:`iter_pages` refuses to
read a page twice: a next-page token it has already followed, or a page holding exactly the
records of an earlier one, is a :class:`RepeatedPageError` raised *before* that page is
yielded, so it is never appended and the pages before it stay committed. The fingerprint of
the last page committed goes with the resume point, so a rerun that is served that page again
stops too instead of appending it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import BaseModel

from medallion_platform.connectors.rest.client import RestClient, RestError
from medallion_platform.connectors.rest.rows import raw_json
from medallion_platform.connectors.rest.spec import PaginationSpec, RestEndpoint

Resume = dict[str, Any]


class Page(BaseModel):
    records: list[dict[str, Any]]
    url: str
    next: Resume | None
    fingerprint: str | None = None  # of the records (hex); None for an empty page
    raws: list[str]  # each record's JSON (:func:`raw_json`): the fingerprint's and bronze's _raw


class PaginationError(RestError):
    """A page does not say what the endpoint's pagination declares it says."""


class RepeatedPageError(PaginationError):
    """The API sent a next-page token this sync already followed, or a page it already read."""

    def __init__(self, message: str, *, endpoint: str, cursor: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.cursor = cursor


def _dig(payload: Any, path: str) -> Any:
    value = payload
    for part in [p for p in path.split(".") if p]:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def describe(resume: Resume) -> str:
    """A resume token as an operator reads it: ``starting_after=ch_…``, a URL, ``page=3``."""
    if "url" in resume:
        return str(resume["url"])
    return "&".join(f"{key}={value}" for key, value in resume.items()) or "(first page)"


class Paginator(ABC):
    """One pagination style: the first request's token, and the next one after a page."""

    def __init__(self, endpoint: RestEndpoint) -> None:
        self.endpoint = endpoint
        self.spec: PaginationSpec = endpoint.pagination

    def first(self) -> Resume:
        return {}

    @abstractmethod
    def next(
        self, state: Resume, payload: Any, response: httpx.Response, records: list[dict]
    ) -> Resume | None:
        """The token of the page after this one, or ``None`` when this one is the last."""

    def _fail(self, what: str) -> PaginationError:
        return PaginationError(f"GET {self.endpoint.path}: {what}")

    def _has_more(self, payload: Any) -> bool | None:
        """The declared ``has_more_path`` flag (``None`` when none is declared).

        Declared, it must be there: a missing flag read as false would end the walk silently.
        """
        path = self.spec.has_more_path
        if not path:
            return None
        value = _dig(payload, path)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            found = "missing" if value is None else f"{value!r}, not a boolean"
            raise self._fail(
                f"has_more_path {path!r} is {found} in the response; fix the endpoint's "
                "pagination (leave has_more_path out if the API has no such flag)"
            )
        return value

    def _total(self, payload: Any) -> int | None:
        path = self.spec.total_path
        if not path:
            return None
        value = _dig(payload, path)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self._fail(f"total_path {path!r} is {value!r} in the response, not a number")
        try:
            return int(value)
        except ValueError:
            raise self._fail(f"total_path {path!r} is {value!r}, not a number") from None


class CursorPaginator(Paginator):
    """Stripe's ``starting_after`` = last record's id, or a cursor in the body: go on while
    there is a cursor, unless a declared ``has_more`` says no more."""

    def next(
        self, state: Resume, payload: Any, response: httpx.Response, records: list[dict]
    ) -> Resume | None:
        spec = self.spec
        more = self._has_more(payload)
        if more is False:
            return None
        if spec.cursor_path:
            where = f"cursor_path {spec.cursor_path!r}"
            token = _dig(payload, spec.cursor_path)
        else:
            where = f"the last record's {spec.cursor_record_field!r}"
            token = records[-1].get(spec.cursor_record_field or "") if records else None
            if records and token in (None, ""):
                raise self._fail(f"{where} is missing, so the next page cannot be asked for")
        if token in (None, ""):
            if more:
                raise self._fail(f"{spec.has_more_path} is true but there is no cursor at {where}")
            return None
        if not isinstance(token, str | int) or isinstance(token, bool):
            raise self._fail(f"{where} is {token!r}, not a cursor")
        return {spec.cursor_param: token}


class NextUrlPaginator(Paginator):
    """A next-page URL (body or ``Link`` header), resolved against the request's URL."""

    @abstractmethod
    def _link(self, payload: Any, response: httpx.Response) -> Any: ...

    def next(
        self, state: Resume, payload: Any, response: httpx.Response, records: list[dict]
    ) -> Resume | None:
        link = self._link(payload, response)
        if link in (None, ""):
            return None
        if not isinstance(link, str):
            raise self._fail(f"the next-page link is {link!r}, not a URL")
        # Relative to the URL that returned it (RFC 3986), not to the base URL: "?page=2" or
        # "items?page=2" mean this resource's next page.
        return {"url": str(response.url.join(link))}


class JsonLinkPaginator(NextUrlPaginator):
    def _link(self, payload: Any, response: httpx.Response) -> Any:
        return _dig(payload, self.spec.next_url_path)


class HeaderLinkPaginator(NextUrlPaginator):
    def _link(self, payload: Any, response: httpx.Response) -> Any:
        return response.links.get("next", {}).get("url")


class PageNumberPaginator(Paginator):
    """``page`` = start, +1, …: stop on an empty page or once ``total_path`` pages are read."""

    def first(self) -> Resume:
        return {self.spec.page_param: self.spec.start_page}

    def next(
        self, state: Resume, payload: Any, response: httpx.Response, records: list[dict]
    ) -> Resume | None:
        if not records or self._has_more(payload) is False:
            return None
        page = int(state[self.spec.page_param])
        total = self._total(payload)
        if total is not None and page - self.spec.start_page + 1 >= total:
            return None
        return {self.spec.page_param: page + 1}


class OffsetPaginator(Paginator):
    """``offset`` = 0, + records received, …: stop on an empty page or at ``total_path``.

    The step is what the page held, not ``page_size``: an API that caps its pages lower than
    asked would otherwise have records skipped between pages.
    """

    def first(self) -> Resume:
        return {self.spec.offset_param: 0}

    def next(
        self, state: Resume, payload: Any, response: httpx.Response, records: list[dict]
    ) -> Resume | None:
        if not records or self._has_more(payload) is False:
            return None
        offset = int(state[self.spec.offset_param]) + len(records)
        total = self._total(payload)
        if total is not None and offset >= total:
            return None
        return {self.spec.offset_param: offset}


PAGINATORS: dict[str, type[Paginator]] = {
    "cursor": CursorPaginator,
    "next_url": JsonLinkPaginator,
    "link_header": HeaderLinkPaginator,
    "page_number": PageNumberPaginator,
    "offset": OffsetPaginator,
}


def paginator_for(endpoint: RestEndpoint) -> Paginator:
    return PAGINATORS[endpoint.pagination.type](endpoint)


def _token_key(resume: Resume) -> str:
    return json.dumps(resume, sort_keys=True, default=str)


def _fingerprint(raws: list[str]) -> str:
    """Of the records' JSON texts: the digest of ``json.dumps(records, separators=(",", ":"))``
    (as served: same order), so a fingerprint committed by an earlier version still matches."""
    body = "[" + ",".join(raws) + "]"
    return hashlib.blake2b(body.encode(), digest_size=16).hexdigest()


def iter_pages(
    client: RestClient,
    endpoint: RestEndpoint,
    *,
    since: int | None,
    resume: Resume | None = None,
    committed: str | None = None,
) -> Iterator[Page]:
    """Pages of records, from ``resume`` (or the first page) to the last.

    Raises :class:`RepeatedPageError` before yielding a page whose next token was already
    followed in this walk, or whose records are exactly an earlier page's or ``committed``'s
    (the fingerprint of the last page committed before ``resume``).
    """
    paginator = paginator_for(endpoint)
    base: dict[str, Any] = {**endpoint.params, endpoint.page_size_param: endpoint.page_size}
    if endpoint.incremental is not None and since is not None:
        base[endpoint.incremental.param] = since
    state = resume if resume is not None else paginator.first()
    followed: dict[str, int] = {_token_key(state): 1}  # token -> the page it fetched
    contents: dict[str, int] = {committed: 0} if committed else {}  # fingerprint -> page
    number = 1
    while True:
        if "url" in state:
            payload, response = client.get_json(state["url"])
        else:
            payload, response = client.get_json(endpoint.path, {**base, **state})
        records = payload if not endpoint.record_path else _dig(payload, endpoint.record_path)
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise PaginationError(
                f"GET {endpoint.path}: expected a list of objects at {endpoint.record_path!r}, "
                f"got {type(records).__name__}"
            )
        nxt = paginator.next(state, payload, response, records)
        here = client.mask(describe(state))
        raws = list(map(raw_json, records))  # bronze's _raw, and the page's fingerprint
        fingerprint = _fingerprint(raws) if records else None
        if fingerprint is not None:
            earlier = contents.setdefault(fingerprint, number)
            if earlier != number:
                which = f"page {earlier}" if earlier else "the last page an earlier run committed"
                hint = (
                    " (an API that serves its last page again past the end needs total_path)"
                    if endpoint.pagination.type in ("page_number", "offset")
                    else ""
                )
                raise RepeatedPageError(
                    f"GET {endpoint.path}: page {number} of this run ({here}) holds exactly "
                    f"the {len(records)} records of {which}: the API repeats a page; stopped "
                    f"so that no page is read twice (this one was not appended){hint}",
                    endpoint=endpoint.path,
                    cursor=here,
                )
        if nxt is not None:
            key = _token_key(nxt)
            if key in followed:
                cursor = client.mask(describe(nxt))
                seen = (
                    "it was read with"
                    if followed[key] == number
                    else f"page {followed[key]} was read with"
                )
                raise RepeatedPageError(
                    f"GET {endpoint.path}: page {number} of this run ({here}) points to "
                    f"{cursor} again, the cursor {seen}: the API repeats its cursor; stopped "
                    "so that no page is read twice (this one was not appended)",
                    endpoint=endpoint.path,
                    cursor=cursor,
                )
            followed[key] = number + 1
        # Built without validation: every field was checked above (records a list of objects
        # parsed from JSON), and validating copies each record (0.46 CPU s per 100k records).
        yield Page.model_construct(
            records=records, url=str(response.url), next=nxt, fingerprint=fingerprint, raws=raws
        )
        if nxt is None:
            return
        state = nxt
        number += 1
