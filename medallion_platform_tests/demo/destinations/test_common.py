"""The shared plumbing the three emulators rely on: the limiter must be exact (tests assert a
client never exceeded a limit), the store must roll back whole batches, faults must be consumed
in order."""

from __future__ import annotations

import threading

import pytest

from medallion_platform.devkit.demo.destinations.common import RecordStore, is_email
from medallion_platform.devkit.demo.http_emulator import (
    Fault,
    FaultPlan,
    RateLimit,
    SlidingWindowLimiter,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_is_exact_at_the_boundary() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(RateLimit(max_requests=3, window_seconds=1.0), clock=clock)
    admitted = []
    # Binary fractions, so the boundary comparisons are exact in floating point.
    for offset in (0.0, 0.125, 0.25, 0.5, 0.875, 1.0, 1.0625, 1.125):
        clock.now = 100.0 + offset
        admission = limiter.admit()
        admitted.append(admission.allowed)
        if offset == 0.5:
            assert admission.remaining == 0
            assert admission.retry_after == pytest.approx(0.5)
    # A window is (t - 1.0, t]: the request at +1.0 gets the slot admitted at +0.0, the one at
    # +1.0625 finds +0.125, +0.25 and +1.0 still inside, the one at +1.125 gets +0.125's slot.
    assert admitted == [True, True, True, False, False, True, False, True]
    assert limiter.refused == 3
    # Arrivals in (0.125, 1.125]: six of them, refused ones included.
    assert limiter.peak == 6


def test_refused_requests_do_not_use_up_capacity() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(RateLimit(max_requests=2, window_seconds=10), clock=clock)
    assert [limiter.admit().allowed for _ in range(5)] == [True, True, False, False, False]
    clock.now += 10
    first = limiter.admit()
    assert first.allowed and first.remaining == 1 and first.limit == 2


def test_reconfiguring_restarts_the_peak() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(RateLimit(max_requests=1, window_seconds=1), clock=clock)
    limiter.admit()
    limiter.admit()
    assert limiter.peak == 2
    limiter.configure(RateLimit(max_requests=5, window_seconds=1))
    assert limiter.peak == 0 and limiter.limit.max_requests == 5
    clock.now += 1
    assert limiter.admit().allowed


def test_rate_limit_is_validated() -> None:
    with pytest.raises(ValueError):
        RateLimit(max_requests=0, window_seconds=1)
    with pytest.raises(ValueError):
        RateLimit(max_requests=1, window_seconds=0)


def test_store_transaction_rolls_back_records_and_indexes() -> None:
    store = RecordStore({"email": lambda record: record.get("email")})
    with store.transaction() as txn:
        txn.put("1", {"email": "a@x.io", "n": 1})
    with store.transaction() as txn:
        txn.put("1", {"email": "b@x.io", "n": 2})
        txn.put("2", {"email": "a@x.io", "n": 3})
        txn.delete("2")
        txn.put("3", {"email": "c@x.io"})
        assert txn.lookup("email", "b@x.io") == "1"
        txn.rollback()
    assert store.snapshot() == {"1": {"email": "a@x.io", "n": 1}}
    assert store.lookup("email", "a@x.io") == "1"
    assert store.lookup("email", "b@x.io") is None and store.lookup("email", "c@x.io") is None


def test_store_rolls_back_on_exception_and_refuses_index_clashes() -> None:
    store = RecordStore({"email": lambda record: record.get("email")})
    with store.transaction() as txn:
        txn.put("1", {"email": "a@x.io"})
    with pytest.raises(ValueError, match="index"), store.transaction() as txn:
        txn.put("2", {"email": "b@x.io"})
        txn.put("3", {"email": "a@x.io"})
    assert set(store.snapshot()) == {"1"} and len(store) == 1
    assert "1" in store and store.lookup("email", "a@x.io") == "1"


def test_store_hands_out_copies() -> None:
    store = RecordStore()
    with store.transaction() as txn:
        txn.put("1", {"tags": ["a"]})
    copy = store.get("1")
    assert copy is not None
    copy["tags"].append("b")
    assert store.get("1") == {"tags": ["a"]}


def test_store_is_safe_under_concurrent_transactions() -> None:
    store = RecordStore()
    with store.transaction() as txn:
        txn.put("counter", {"n": 0})

    def bump() -> None:
        for _ in range(200):
            with store.transaction() as txn:
                record = txn.get("counter")
                assert record is not None
                txn.put("counter", {"n": record["n"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("counter") == {"n": 800}


def test_fault_plan_applies_the_earliest_matching_fault() -> None:
    plan = FaultPlan()
    plan.add(Fault("status", 2, "/crm/", status=503))
    plan.add(Fault("slow", 1, "/", seconds=0.1))
    first = plan.take("/api/v2/users")
    assert first is not None and first.kind == "slow"
    assert plan.take("/api/v2/users") is None
    taken = [plan.take("/crm/v3/objects/contacts/batch/upsert") for _ in range(3)]
    assert [fault.status if fault else None for fault in taken] == [503, 503, None]
    assert len(plan) == 0
    with pytest.raises(ValueError):
        plan.add(Fault("status", 0))
    with pytest.raises(ValueError):
        plan.add(Fault("status", 1, "crm"))


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("ada@example.com", True),
        ("ada.lovelace+crm@mail.example.co.uk", True),
        ("ada@example", False),
        ("ada@@example.com", False),
        ("ada example@example.com", False),
        (".ada@example.com", False),
        ("ada..l@example.com", False),
        ("", False),
    ],
)
def test_email_check(value: str, valid: bool) -> None:
    assert is_email(value) is valid
