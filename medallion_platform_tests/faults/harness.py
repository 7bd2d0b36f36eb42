"""Kill a real ingest or sync at a seeded random point, rerun it, and account for every record.

A trial runs one core (``children``) in a child process, SIGKILLs it at a point drawn from the
trial's seed, optionally kills the rerun too, then reruns until it completes; the test compares
what landed with the truth (what the source holds, what the generator produced, what the
destination should hold) and records the outcome here. ``conftest`` prints every outcome and a
summary per source at the end of the session.

Kill points:

- ``self``: the child SIGKILLs itself inside the core's callback for the n-th event (a batch
  appended in an open transaction, a commit not yet acknowledged, a file not yet archived);
- ``parent``: the parent SIGKILLs it a random fraction of a cycle after the n-th event (the
  cycle being the time the child took from its previous event to that one), so the kill lands
  anywhere in the work between two callbacks: reading, appending, committing, acknowledging;
- ``timer``: a random delay after the child started (imports done), whatever it is doing;
- ``server``: the HTTP server the child talks to (the payments API, a SaaS emulator) kills it
  while serving the n-th request, before or after applying it.

Children come from a fork server that has imported ``children`` once (only the plain-Python
cores), so a child starts in milliseconds rather than the second a fresh interpreter takes to
import DuckDB, Arrow and the clients: that keeps fifty-odd trials within the test budget.
Every child has a hard deadline; a child still running at its deadline is killed and the
trial fails as ``hung``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import select
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, Literal

import duckdb

from medallion_platform.warehouse import Warehouse
from medallion_platform_tests.faults import children
from medallion_platform_tests.faults.children import Job

CHILD_TIMEOUT_S = float(os.environ.get("MEDALLION_FAULT_CHILD_TIMEOUT_S", "60"))
"""A child (killed run or rerun) still running after this long is hung."""
DEFAULT_TRIALS = 7
"""Kill trials per source and per sync in the default run (``MEDALLION_FAULT_TRIALS``)."""
SECOND_CRASH_ODDS = 0.3
"""How often the rerun is killed too, before the final rerun."""
FIRST_CYCLE_S = 0.03
"""A parent kill after the first event of its kind: a random fraction of this."""

PRELOAD = ["__main__", children.__name__, "pandas"]
"""Imported once by the fork server: the main script (else every child imports pytest again),
the cores, and pandas (DuckDB imports it lazily on a child's first Arrow scan: 0.3 s each)."""

_context: BaseContext | None = None


def context() -> BaseContext:
    """The fork server the children come from, preloaded with ``children`` (see module doc)."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


def trial_seeds() -> list[int]:
    """Seeds of the trials per source: ``MEDALLION_FAULT_TRIALS`` of them (default 7), from
    ``MEDALLION_FAULT_SEED`` on (default 0; a soak run picks another to explore new points)."""
    count = int(os.environ.get("MEDALLION_FAULT_TRIALS", str(DEFAULT_TRIALS)))
    first = int(os.environ.get("MEDALLION_FAULT_SEED", "0"))
    return list(range(first, first + count))


# --------------------------------------------------------------------------------------------
# Kill plans and children
# --------------------------------------------------------------------------------------------

How = Literal["self", "parent", "timer", "server"]


@dataclass(frozen=True)
class KillPlan:
    """Where to kill a child (see the module doc); ``at`` counts events or requests from 1."""

    how: How
    event: str = ""
    at: int = 0
    delay_s: float = 0.0  # timer: after the child started
    fraction: float = 0.0  # parent: of the cycle that ended with the event
    phase: str = ""  # server: "before apply" | "after apply"

    def describe(self) -> str:
        if self.how == "self":
            return f"self at {self.event}#{self.at}"
        if self.how == "parent":
            return f"parent {self.fraction:.0%} of a cycle after {self.event}#{self.at}"
        if self.how == "timer":
            return f"timer {self.delay_s * 1000:.0f} ms after start"
        return f"server at #{self.at} ({self.phase})"

    @property
    def category(self) -> str:
        """For the summary: how, and at which kind of point."""
        if self.how in ("self", "parent"):
            return f"{self.how}:{self.event}"
        if self.how == "server":
            return f"server:{self.phase}"
        return "timer"


def kill_kinds(server: bool) -> list[How]:
    """Kinds of kill point to draw from; parent kills twice, since they land anywhere between
    two callbacks."""
    return ["self", "parent", "timer", "parent", *(["server"] if server else [])]


def draw_plan(
    rng: random.Random,
    events: dict[str, int],
    *,
    timer_s: float,
    server_requests: int = 0,
    server_phases: tuple[str, ...] = ("before apply", "after apply"),
    how: How | None = None,
) -> KillPlan:
    """A kill point: ``events`` are the callbacks the run will make (name → how many),
    ``timer_s`` bounds a kill by delay, ``server_requests`` (if any) the requests it will send;
    ``how`` imposes the kind of point."""
    if how is None:
        how = rng.choice(kill_kinds(server_requests > 0))
    if how == "timer":
        return KillPlan("timer", delay_s=round(rng.uniform(0, timer_s), 3))
    if how == "server":
        phase = rng.choice(server_phases)
        return KillPlan("server", at=rng.randint(1, server_requests), phase=phase)
    names = sorted(name for name, n in events.items() if n > 0)
    event = rng.choice(names)
    at = rng.randint(1, events[event])
    fraction = round(rng.random(), 2) if how == "parent" else 0.0
    return KillPlan(how, event=event, at=at, fraction=fraction)


@dataclass
class ChildRun:
    """How one child ended: ``killed`` (by its plan), ``done``, ``failed`` (an exception in
    the core: ``error`` has the traceback) or ``hung`` (killed at the deadline)."""

    status: Literal["killed", "done", "failed", "hung"]
    events: list[tuple[str, int, str]]
    summary: str = ""
    error: str = ""
    kill_point: str = ""
    seconds: float = 0.0

    def count(self, event: str) -> int:
        return sum(1 for name, _, _ in self.events if name == event)


class KillSwitch:
    """Lets an HTTP server thread kill the running child (``server`` plans)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pidfd: int | None = None
        self.point = ""

    def arm(self, pidfd: int) -> None:
        with self._lock:
            self._pidfd, self.point = pidfd, ""

    def disarm(self) -> None:
        with self._lock:
            self._pidfd = None

    def fire(self, point: str) -> bool:
        """SIGKILL the child (once) and wait until it is gone; False if none is armed."""
        with self._lock:  # held until it is dead: the pidfd is not closed under us
            pidfd, self._pidfd = self._pidfd, None
            if pidfd is None:
                return False
            self.point = point
            return _kill(pidfd)


def _kill(pidfd: int, timeout_s: float = 5.0) -> bool:
    """SIGKILL the process behind ``pidfd`` and wait until it is dead (then nothing it was doing
    can still happen); False if it had already exited. A pidfd names that one process, never a
    later one that got its pid."""
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except (ProcessLookupError, OSError):  # exited (or no process behind the descriptor)
        return False
    select.select([pidfd], [], [], timeout_s)  # readable once the process has exited
    return True


def run_child(
    job: Job,
    plan: KillPlan | None = None,
    *,
    switch: KillSwitch | None = None,
    timeout_s: float = CHILD_TIMEOUT_S,
) -> ChildRun:
    """Run ``job`` in a child, kill it as ``plan`` says, and report how it ended. Never hangs:
    past ``timeout_s`` the child is killed and the run is ``hung``."""
    ctx = context()
    if plan is not None and plan.how == "self":
        job = replace(job, kill_at=(plan.event, plan.at))
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=children.main, args=(writer, job), daemon=True)
    events: list[tuple[str, int, str]] = []
    summary = error = point = ""
    kill_at: float | None = None
    previous: dict[str, float] = {}  # when each kind of event last came
    killed = hung = done = False
    process.start()  # the first start also starts the fork server: not the child's time
    started = time.monotonic()
    deadline = started + timeout_s
    writer.close()
    assert process.pid is not None
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:  # gone already (and reaped): nothing left to kill
        pidfd = os.open(os.devnull, os.O_RDONLY)
    if plan is not None and plan.how == "server":
        assert switch is not None, "a server kill plan needs the server's kill switch"
        switch.arm(pidfd)

    def kill(why: str) -> None:
        nonlocal killed, point, kill_at
        kill_at = None
        if _kill(pidfd):
            killed, point = True, why

    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                hung = True
                kill("hung")
                break
            if kill_at is not None and now >= kill_at:
                last = f"{events[-1][0]}#{events[-1][1]}" if events else "start"
                kill(f"{plan.describe() if plan else ''} (last event {last})")
                continue
            wake = deadline if kill_at is None else min(deadline, kill_at)
            if not reader.poll(max(0.0, wake - now)):
                continue
            try:
                name, n, detail = reader.recv()
            except EOFError:
                break
            events.append((name, n, detail if name not in ("done", "error") else ""))
            now = time.monotonic()
            # The last cycle: since the previous event of its kind (the first one's time since
            # the start includes setting up: FIRST_CYCLE_S stands in for it).
            cycle = now - previous[name] if name in previous else FIRST_CYCLE_S
            previous[name] = now
            if name == "done":
                done, summary = True, detail
            elif name == "error":
                error = detail
            elif plan is not None and plan.how == "timer" and name == "ready":
                kill_at = now + plan.delay_s
            elif plan is not None and plan.how == "parent" and (name, n) == (plan.event, plan.at):
                kill_at = now + plan.fraction * cycle
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.exitcode is None:
            hung = True
            kill("hung (after its last event)")
            process.join(timeout=10)
    finally:
        if switch is not None:
            switch.disarm()
        if process.exitcode is None:
            _kill(pidfd)
            process.join(timeout=10)
        os.close(pidfd)
        reader.close()
    seconds = time.monotonic() - started
    if hung:
        return ChildRun("hung", events, summary, error, point, seconds)
    if process.exitcode == -signal.SIGKILL:
        if not killed and switch is not None and switch.point:
            point = f"{plan.describe() if plan else ''}: {switch.point}"
        elif not killed and plan is not None and plan.how == "self" and events:
            name, n, detail = events[-1]
            point = f"{plan.describe()}: {detail}"
        return ChildRun("killed", events, summary, error, point, seconds)
    if process.exitcode == 0 and done:
        return ChildRun("done", events, summary, error, "", seconds)
    return ChildRun(
        "failed", events, summary, error or f"exit code {process.exitcode}", "", seconds
    )


# --------------------------------------------------------------------------------------------
# Trials and their outcomes
# --------------------------------------------------------------------------------------------


@dataclass
class TrialOutcome:
    """One trial, as the summary reports it."""

    source: str
    seed: int
    kills: list[str] = field(default_factory=list)  # the kill points that landed
    categories: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # plans the run finished before
    faults: list[str] = field(default_factory=list)  # destination faults injected
    runs: int = 0
    lost: int = 0
    duplicated: int = 0
    hung: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.hung or self.problems)

    def line(self) -> str:
        verdict = "ok" if self.clean else "FAILED"
        where = [f"killed at {'; '.join(self.kills)}"] if self.kills else []
        where += [f"faults: {'; '.join(self.faults)}"] if self.faults else []
        where += [f"finished before {', '.join(self.missed)}"] if self.missed else []
        hung = " HUNG" if self.hung else ""
        problems = f" — {' | '.join(self.problems)}" if self.problems else ""
        return (
            f"[fault] {self.source} seed {self.seed}: {'; '.join(where) or 'not killed'}; "
            f"{self.runs} child runs, lost {self.lost}, duplicated {self.duplicated}{hung}, "
            f"{self.seconds:.1f}s: {verdict}{problems}"
        )


OUTCOMES: list[TrialOutcome] = []
"""Every trial of the session, for the summary."""


class Trial:
    """One seeded trial of ``source``: its random draws, its runs, and the verdict.

    A test draws kill points from ``rng``, runs children with :meth:`run` (kills, hangs and
    failures are recorded), checks what a kill left, reruns, then accounts for every record
    (:meth:`account`) and asserts :meth:`assert_clean`. The outcome is recorded on exit.
    """

    def __init__(self, source: str, seed: int) -> None:
        self.rng = random.Random(f"{source}:{seed}")
        self.outcome = TrialOutcome(source=source, seed=seed)
        self._started = time.monotonic()

    def __enter__(self) -> Trial:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.outcome.seconds = time.monotonic() - self._started
        if exc is not None and not isinstance(exc, AssertionError):
            self.outcome.problems.append(f"{type(exc).__name__}: {exc}")
        OUTCOMES.append(self.outcome)
        print(self.outcome.line())

    def run(
        self, job: Job, plan: KillPlan | None = None, *, switch: KillSwitch | None = None
    ) -> ChildRun:
        """One child; kills, hangs and failures go into the outcome."""
        result = run_child(job, plan, switch=switch)
        self.outcome.runs += 1
        if result.status == "killed":
            self.outcome.kills.append(result.kill_point)
            if plan is not None:
                self.outcome.categories.append(plan.category)
        elif result.status == "hung":
            self.outcome.hung = True
            self.outcome.problems.append(f"run {self.outcome.runs} hung: {result.kill_point}")
        elif result.status == "failed":
            self.outcome.problems.append(f"run {self.outcome.runs} failed: {result.error}")
        elif plan is not None:
            self.outcome.missed.append(plan.describe())
        return result

    def first_plan(self, events: dict[str, int], **kwargs: Any) -> KillPlan:
        """The first run's kill point. Its kind rotates with the seed, so that the default
        seeds kill every source at every kind of point; the rest is drawn at random."""
        kinds = kill_kinds(bool(kwargs.get("server_requests")))
        how = kinds[self.outcome.seed % len(kinds)]
        return draw_plan(self.rng, events, how=how, **kwargs)

    def second_crash(self) -> bool:
        return self.rng.random() < SECOND_CRASH_ODDS

    def account(self, truth: Iterable[Hashable], landed: Iterable[Hashable]) -> None:
        """Count lost (in the truth, not landed), duplicated (landed more than once) and
        unexpected (landed, not in the truth) records."""
        want = Counter(truth)
        got = Counter(landed)
        self.outcome.lost += sum((want - got).values())
        self.outcome.duplicated += sum(n - 1 for n in got.values() if n > 1)
        unexpected = [key for key in got if key not in want]
        if unexpected:
            self.outcome.problems.append(
                f"{len(unexpected)} unexpected record(s), e.g. {unexpected[:3]}"
            )

    def problem(self, text: str) -> None:
        self.outcome.problems.append(text)

    def expect(self, condition: bool, text: str) -> None:
        if not condition:
            self.problem(text)

    def assert_clean(self) -> None:
        self.outcome.seconds = time.monotonic() - self._started
        assert self.outcome.clean, self.outcome.line()


def summary_lines(outcomes: list[TrialOutcome]) -> list[str]:
    """Per source: trials, kills that landed and where, lost, duplicated, hung, failed."""
    by_source: dict[str, list[TrialOutcome]] = {}
    for outcome in outcomes:
        by_source.setdefault(outcome.source, []).append(outcome)
    lines = []
    total_kills = 0
    for source, group in by_source.items():
        kills = sum(len(o.kills) for o in group)
        total_kills += kills
        points = Counter(c for o in group for c in o.categories)
        points.update(f.split(" at ")[0] for o in group for f in o.faults)
        where = ", ".join(f"{name} x{n}" for name, n in sorted(points.items()))
        lines.append(
            f"{source:<18} trials {len(group):>3}  kills {kills:>3}  "
            f"lost {sum(o.lost for o in group)}  duplicated {sum(o.duplicated for o in group)}  "
            f"hung {sum(o.hung for o in group)}  failed {sum(not o.clean for o in group)}  "
            f"missed {sum(len(o.missed) for o in group)}  [{where}]"
        )
    failed = sum(not o.clean for o in outcomes)
    killed = sum(bool(o.kills) for o in outcomes)
    lines.append(
        f"fault trials: {len(outcomes)} trials ({killed} killed at least once), "
        f"{total_kills} kills, "
        f"{sum(o.lost for o in outcomes)} lost, {sum(o.duplicated for o in outcomes)} duplicated, "
        f"{sum(o.hung for o in outcomes)} hung, {failed} failed"
    )
    return lines


# --------------------------------------------------------------------------------------------
# Reading what landed
# --------------------------------------------------------------------------------------------


Query = Callable[..., list[tuple[Any, ...]]]


@contextmanager
def reading(path: Path) -> Iterator[Query]:
    """``q(sql, params)`` on one connection to the warehouse at ``path``: a table that does
    not exist yet (a child killed before it created it) reads as no rows."""
    with Warehouse(path, lock_timeout_s=30).connect() as conn:

        def q(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
            try:
                return conn.execute(sql, params or []).fetchall()
            except duckdb.CatalogException:
                return []

        yield q


def query(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """One query with :func:`reading`."""
    with reading(path) as q:
        return q(sql, params)
