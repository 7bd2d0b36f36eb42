"""A client-side pacer: at most ``max_requests`` requests in any ``window_seconds``, never more.

The destinations' limits are sliding windows counted where the request *arrives*. The client
cannot see arrival times, but it knows that a request arrived before its answer came back. So a
request holds its slot from the moment it is sent until ``window_seconds`` after its answer (or
its failure) was received. A request let through because an older slot expired therefore
arrives more than a full window after that older one, however the network delays either. The
cost is one round trip per window (milliseconds in a 10 s or 60 s window).

The limit is either configured (fixed) or learned from the API's own headers (HubSpot's
``X-HubSpot-RateLimit-Max``/``-Interval-Milliseconds``, Zendesk's ``X-Rate-Limit``). When the
API also says how much of the window is left (``...-Remaining``) and that is less than this
client used itself, someone else shares the quota: the difference is booked here too, so this
client slows down instead of running into 429s. After a "slow down" answer, ``hold`` keeps every
request back for the time the API asked for.

Thread-safe: one pacer may serve several threads that share a quota.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field


class RateLimit(BaseModel):
    """At most ``max_requests`` requests within any ``window_seconds``."""

    model_config = ConfigDict(frozen=True)

    max_requests: int = Field(gt=0)
    window_seconds: float = Field(gt=0)

    @property
    def per_second(self) -> float:
        return self.max_requests / self.window_seconds


class Pacer:
    """Waits before each request so the window's limit is never exceeded.

    ``learn=True`` lets :meth:`observe` replace the limit with the one the API announces;
    ``limit=None`` with ``learn=False`` paces nothing (holds after 429s still apply).
    """

    def __init__(self, limit: RateLimit | None, *, learn: bool = False) -> None:
        self._limit = limit
        self._learn = learn
        self._cond = threading.Condition()
        self._done: deque[float] = deque()  # when each request in the window was answered
        self._in_flight = 0
        self._hold_until = 0.0

    @property
    def limit(self) -> RateLimit | None:
        with self._cond:
            return self._limit

    @property
    def window(self) -> tuple[int, float] | None:
        """(requests, seconds) of the current limit, for the core's rate-limit backoff."""
        limit = self.limit
        return None if limit is None else (limit.max_requests, limit.window_seconds)

    def free(self) -> int | None:
        """Requests that could leave now without waiting (``None``: no limit)."""
        with self._cond:
            now = time.monotonic()
            if now < self._hold_until:
                return 0
            if self._limit is None:
                return None
            self._expire(now, self._limit.window_seconds)
            return max(0, self._limit.max_requests - len(self._done) - self._in_flight)

    @contextlib.contextmanager
    def slot(self) -> Iterator[float]:
        """Wait for a free slot (yields the seconds waited); the slot is held for the request
        and then for one window after it ends."""
        waited = self._acquire()
        try:
            yield waited
        finally:
            self._release()

    def hold(self, seconds: float) -> None:
        """No request leaves for ``seconds`` from now (the API said to slow down)."""
        with self._cond:
            self._hold_until = max(self._hold_until, time.monotonic() + max(0.0, seconds))
            self._cond.notify_all()

    def observe(self, limit: RateLimit | None, remaining: int | None, *, sent_at: float) -> None:
        """What the response to a request sent at ``sent_at`` (``time.monotonic()``) said about
        the limit; called while that request still holds its slot.

        A learned ``limit`` replaces the current one (when learning). ``remaining`` is what the
        API had left when the request arrived. Counted from when the request was sent, this
        client's own requests are at least as many as the API saw of them; if the API saw more,
        the difference came from elsewhere and is booked as if made now.
        """
        with self._cond:
            if self._learn and limit is not None and limit != self._limit:
                self._limit = limit
                self._cond.notify_all()
            current = self._limit
            if not self._learn or current is None or remaining is None:
                return
            horizon = sent_at - current.window_seconds
            ours = sum(1 for done in self._done if done > horizon) + self._in_flight
            elsewhere = (current.max_requests - remaining) - ours
            if elsewhere > 0:
                self._done.extend([time.monotonic()] * elsewhere)

    def _acquire(self) -> float:
        started = time.monotonic()
        with self._cond:
            while True:
                now = time.monotonic()
                wake: float | None
                if now < self._hold_until:
                    wake = self._hold_until
                elif self._limit is None:
                    break
                else:
                    window = self._limit.window_seconds
                    self._expire(now, window)
                    if len(self._done) + self._in_flight < self._limit.max_requests:
                        break
                    # Full: the oldest answered request frees a slot; if every slot is in
                    # flight, a release wakes us.
                    wake = self._done[0] + window if self._done else None
                self._cond.wait(None if wake is None else max(0.0, wake - now))
            self._in_flight += 1
        return time.monotonic() - started

    def _release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._done.append(time.monotonic())
            self._cond.notify_all()

    def _expire(self, now: float, window: float) -> None:
        while self._done and self._done[0] + window <= now:
            self._done.popleft()
