"""What the reverse-ETL destination emulators share beyond the HTTP server they run on
(:mod:`medallion_platform.devkit.demo.http_emulator`).

A thread-safe record store with atomic transactions (for all-or-none batches), how each
emulator runs as a process (:class:`EmulatorInfo`, the shared ``--rate-limit`` options) and the
value checks the real services apply alike (email addresses, timestamps).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from medallion_platform.devkit.demo.http_emulator import EmulatorServer, RateLimit

# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


IndexFn = Callable[[Mapping[str, Any]], str | None]


class RecordStore:
    """Current records by key, with unique secondary indexes (and non-unique ``multi`` ones),
    safe to share across threads.

    Writes happen inside ``transaction()``: the store's lock is held throughout and an undo log is
    kept, so a batch either commits entirely or ``rollback()`` restores every record and index as
    it was (Salesforce's allOrNone). Readers get deep copies, never live records.
    """

    def __init__(
        self,
        indexes: Mapping[str, IndexFn] | None = None,
        multi: Mapping[str, IndexFn] | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}
        self._index_fns = dict(indexes or {})
        self._indexes: dict[str, dict[str, str]] = {name: {} for name in self._index_fns}
        self._multi_fns = dict(multi or {})
        self._multi: dict[str, dict[str, dict[str, None]]] = {name: {} for name in self._multi_fns}

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._records

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(key)
            return copy.deepcopy(record) if record is not None else None

    def lookup(self, index: str, value: str) -> str | None:
        """The key of the record whose ``index`` value is ``value`` (already normalised)."""
        with self._lock:
            return self._indexes[index].get(value)

    def lookup_all(self, index: str, value: str) -> list[str]:
        """The keys of every record whose ``multi`` index value is ``value``, oldest first."""
        with self._lock:
            return list(self._multi[index].get(value, ()))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._records)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StoreTransaction]:
        """Hold the lock for a batch; an exception or ``rollback()`` undoes all its writes."""
        with self._lock:
            txn = StoreTransaction(self)
            try:
                yield txn
            except BaseException:
                txn.rollback()
                raise

    def _put(self, key: str, record: dict[str, Any]) -> None:
        old = self._records.get(key)
        if old is not None:
            self._unindex(key, old)
        for name, fn in self._index_fns.items():
            value = fn(record)
            if value is None:
                continue
            owner = self._indexes[name].get(value)
            if owner is not None and owner != key:
                if old is not None:
                    self._index(key, old)
                raise ValueError(f"index {name!r} already holds this value for another record")
        self._records[key] = record
        self._index(key, record)

    def _delete(self, key: str) -> None:
        old = self._records.pop(key)
        self._unindex(key, old)

    def _index(self, key: str, record: Mapping[str, Any]) -> None:
        for name, fn in self._index_fns.items():
            value = fn(record)
            if value is not None:
                self._indexes[name][value] = key
        for name, fn in self._multi_fns.items():
            value = fn(record)
            if value is not None:
                self._multi[name].setdefault(value, {})[key] = None

    def _unindex(self, key: str, record: Mapping[str, Any]) -> None:
        for name, fn in self._index_fns.items():
            value = fn(record)
            if value is not None and self._indexes[name].get(value) == key:
                del self._indexes[name][value]
        for name, fn in self._multi_fns.items():
            value = fn(record)
            holders = self._multi[name].get(value) if value is not None else None
            if holders is not None:
                holders.pop(key, None)
                if not holders:
                    del self._multi[name][value]


class StoreTransaction:
    """Writes to a :class:`RecordStore` under its lock, each one undoable until the batch ends."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._undo: list[tuple[str, dict[str, Any] | None]] = []

    def get(self, key: str) -> dict[str, Any] | None:
        record = self._store._records.get(key)
        return copy.deepcopy(record) if record is not None else None

    def lookup(self, index: str, value: str) -> str | None:
        return self._store._indexes[index].get(value)

    def lookup_all(self, index: str, value: str) -> list[str]:
        return list(self._store._multi[index].get(value, ()))

    def put(self, key: str, record: dict[str, Any]) -> None:
        previous = self._store._records.get(key)
        self._store._put(key, copy.deepcopy(record))
        self._undo.append((key, previous))

    def delete(self, key: str) -> dict[str, Any]:
        previous = self._store._records[key]
        self._store._delete(key)
        self._undo.append((key, previous))
        return copy.deepcopy(previous)

    def rollback(self) -> None:
        for key, previous in reversed(self._undo):
            if key in self._store._records:
                self._store._delete(key)
            if previous is not None:
                self._store._put(key, previous)
        self._undo.clear()


# --------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorInfo:
    """How one destination's emulator runs as a process; each emulator module (named as its
    destination) declares one as ``EMULATOR``. The token and the other settings come from the
    environment variables the destination's client declares (``info.env``), keyed here by the
    client argument they fill (``access_token``, ``email``, ...)."""

    build: Callable[[argparse.Namespace, Mapping[str, str]], EmulatorServer]
    add_arguments: Callable[[argparse.ArgumentParser], None] = field(
        default=lambda parser: None, compare=False
    )
    # Values of the client's non-secret settings in the demo (secrets are drawn fresh).
    demo_settings: Mapping[str, str] = field(default_factory=dict)
    # The client's secret settings (by argument) the emulator checks; None: the required ones.
    secrets: tuple[str, ...] | None = None
    demo_args: tuple[str, ...] = ()  # arguments `medallion services up` starts it with


def rate_limit_from_args(args: argparse.Namespace, default: RateLimit | None) -> RateLimit | None:
    """The shared ``--rate-limit`` / ``--rate-window`` / ``--no-rate-limit`` over an API's
    default limit (a given count or window replaces that part of it)."""
    limit = default
    if args.rate_limit is not None or args.rate_window is not None:
        base = limit or RateLimit(max_requests=100, window_seconds=1.0)
        limit = RateLimit(
            max_requests=base.max_requests if args.rate_limit is None else args.rate_limit,
            window_seconds=base.window_seconds if args.rate_window is None else args.rate_window,
        )
    return None if args.no_rate_limit else limit


# --------------------------------------------------------------------------------------------
# Small value helpers the emulators share
# --------------------------------------------------------------------------------------------

# Deliberately plain: one @, no spaces, a dot in the domain, no empty labels. The real services
# are about this strict (they accept plus-addressing and subdomains, refuse "a@b" and "a@@b").
EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def is_email(value: str) -> bool:
    local = value.partition("@")[0]
    return (
        EMAIL.fullmatch(value) is not None
        and not local.startswith(".")
        and not local.endswith(".")
        and ".." not in local
    )


def utc_timestamp(millis: bool = True) -> str:
    """``2026-11-01T10:00:00.123Z``: the ISO form HubSpot and Zendesk send."""
    now = time.time()
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{base}.{int(now * 1000) % 1000:03d}Z" if millis else f"{base}Z"
