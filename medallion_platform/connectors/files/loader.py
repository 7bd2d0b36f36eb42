"""Load landed files into bronze, exactly once.

Each file's rows are appended to ``bronze.files_<feed>`` and the file is registered in
``_meta.files`` (content hash, path, rows, batch) in the same warehouse transaction: a big file
in one of its own, small files several to one, each with its own batch id. A file is moved out
of the landing folder only after that commit. So:

- a crash before COMMIT leaves nothing in bronze; the rerun loads the file again, whole;
- a crash after COMMIT but before the move leaves a file whose hash is registered; the rerun
  recognizes it and only finishes the move;
- the same bytes dropped again, under any name, are registered as a duplicate and not loaded.

Files in flight: a file is loaded only once it has not changed for the feed's
``settle_seconds``, whoever launched the run (the sensor waits for that too, a hand-launched
run skips it as ``settling``). It is checked again before COMMIT (changed: rolled back, left
for the next run) and after COMMIT, before and after the move: a file that grew after its rows
were committed is put back (or left) in the landing zone and reported ``changed_after_load``,
so its new content loads as a new version instead of vanishing into the archive. A file that
disappears before it is read is ``vanished``, and the other files still load.
"""

from __future__ import annotations

import itertools
import json
import logging
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from medallion_platform.connectors.bronze import (
    ROW_GROUP_ROWS,
    add_data_columns,
    append_batch,
    append_memory,
    ensure_bronze_table,
    whole_row_groups,
)
from medallion_platform.connectors.files.landing import (
    archive_path,
    feed_dir,
    list_landing_files,
    move_aside,
    outside_landing_reason,
    rejected_path,
    sha256_file,
)
from medallion_platform.connectors.files.readers import FileReadError, read_ahead, read_batches
from medallion_platform.connectors.files.spec import FileFeed
from medallion_platform.warehouse import Warehouse
from medallion_platform.warehouse.warehouse import (
    next_batch_id,
    next_batch_ids,
    set_position,
    transaction,
)

log = logging.getLogger(__name__)

Status = Literal[
    "loaded",
    "duplicate",
    "rejected",
    "already_loaded",
    "changing",
    "settling",
    "vanished",
    "changed_after_load",
]


class FileChangedError(Exception):
    """The file changed while it was being read; its transaction is rolled back."""


class FileOutcome(BaseModel):
    """What happened to one file."""

    path: str
    status: Status
    rows: int = 0
    file_hash: str | None = None
    reason: str | None = None
    moved_to: str | None = None
    batch_id: int | None = None


LOADED: tuple[Status, ...] = ("loaded", "changed_after_load")
"""Outcomes whose rows are committed in bronze."""


class IngestReport(BaseModel):
    """What one ingestion run of one feed did."""

    feed: str
    files: list[FileOutcome]

    @property
    def batch_ids(self) -> list[int]:
        return [f.batch_id for f in self.files if f.batch_id is not None]

    @property
    def rows_loaded(self) -> int:
        return sum(f.rows for f in self.files if f.status in LOADED)

    def count(self, status: Status) -> int:
        return sum(1 for f in self.files if f.status == status)


BATCH_ROWS = 2 * ROW_GROUP_ROWS
"""Rows per INSERT: whole DuckDB row groups are compressed and written as they come (not all at
COMMIT), two at once on DuckDB's threads; about 25 MB of Arrow for a 100-byte row. Two row
groups rather than four: as fast on two cores, and bronze's peak 140-175 MiB lower at 5M and
20M rows (bench/README.md, "Two row groups per INSERT")."""

SMALL_FILE_BYTES = 8 << 20
"""A file up to this size is read whole before its transaction, so that several share one."""
GROUP_BYTES = 64 << 20
"""Arrow bytes of the small files one transaction holds at most (the memory it costs)."""
GROUP_FILES = 256

ProgressHook = Callable[[str, int], None]
"""Called with a file's landing path and its rows so far, after each appended batch."""
CommitHook = Callable[[str], None]
"""Called with a file's landing path once its rows are committed, before it is archived."""


def ingest_files(
    warehouse: Warehouse,
    feed: FileFeed,
    landing_root: Path,
    relpaths: Sequence[str] | None = None,
    *,
    run_id: str | None = None,
    batch_rows: int = BATCH_ROWS,
    on_progress: ProgressHook | None = None,
    on_committed: CommitHook | None = None,
    small_file_bytes: int = SMALL_FILE_BYTES,
) -> IngestReport:
    """Load ``relpaths`` (default: every file waiting for the feed) into bronze, exactly once.

    Files up to ``small_file_bytes`` are read whole first and loaded several to a transaction
    (0: each file in its own transaction, streamed).
    """
    landing_root = landing_root.absolute()
    if relpaths is None:
        relpaths = [f.relpath for f in list_landing_files(landing_root, feed)]
    outcomes: list[FileOutcome] = []
    pending = []
    for rel in relpaths:
        path = landing_root / rel
        if not (path.exists() or _is_link(path)):
            outcomes.append(_vanished(rel, "before the run looked at it"))
            continue
        unsettled = _unsettled_reason(path, feed)
        if unsettled:
            outcomes.append(FileOutcome(path=rel, status="settling", reason=unsettled))
            continue
        pending.append(rel)
    if not pending:
        return IngestReport(feed=feed.name, files=outcomes)

    with warehouse.connect() as conn, append_memory(conn, warehouse.memory_limit):
        with transaction(conn):
            ensure_feed_table(conn, feed)
        group = _SmallFiles(conn, feed, landing_root, run_id, on_progress, on_committed)
        seen: set[str] = set()  # the hashes of this run's files so far
        for start in range(0, len(pending), LOOKUP_FILES):
            window = pending[start : start + LOOKUP_FILES]
            # The window's hashes, and which of them were loaded before, at once.
            asked = _LoadedBefore.ask(conn, feed, landing_root, window, small_file_bytes)
            for rel in window:
                ready = _read_small(
                    conn, feed, landing_root, rel, batch_rows, seen, asked, small_file_bytes
                )
                if ready is not None:
                    seen.add(ready.file_hash)
                    outcomes += group.add(ready)
                    continue
                outcomes += group.load()  # files load in arrival order, batch ids rise with it
                outcome = _ingest_one(
                    conn, feed, landing_root, rel, run_id, batch_rows, on_progress, on_committed
                )
                if outcome.file_hash:
                    seen.add(outcome.file_hash)
                outcomes.append(outcome)
        outcomes += group.load()
    for outcome in outcomes:
        log.info("%s: %s %s", feed.name, outcome.status, outcome.path)
    return IngestReport(feed=feed.name, files=outcomes)


def _unsettled_reason(path: Path, feed: FileFeed, now: float | None = None) -> str | None:
    """Why ``path`` must wait (changed within the feed's settle time), or None."""
    try:
        st = path.stat()  # a symlink's target: that is what is being written
    except OSError:
        return None  # vanished or a broken link: reported when it is read
    if not stat.S_ISREG(st.st_mode):
        return None  # a FIFO or device is rejected, not waited for
    age = (now if now is not None else time.time()) - st.st_mtime
    if age >= feed.settle_seconds:
        return None
    return (
        f"changed {max(age, 0):.1f}s ago; a file is loaded once unchanged for "
        f"{feed.settle_seconds:g}s (the feed's settle_seconds), so one still being written "
        "is not loaded half-finished. It stays for the next run."
    )


def _vanished(rel: str, when: str) -> FileOutcome:
    reason = f"the file was deleted or moved away {when}; nothing of it was loaded"
    log.warning("%s: %s", rel, reason)
    return FileOutcome(path=rel, status="vanished", reason=reason)


def _is_link(path: Path) -> bool:
    return path.is_symlink()


def _ingest_one(
    conn: duckdb.DuckDBPyConnection,
    feed: FileFeed,
    landing_root: Path,
    rel: str,
    run_id: str | None,
    batch_rows: int,
    on_progress: ProgressHook | None,
    on_committed: CommitHook | None,
) -> FileOutcome:
    """One file, one batch id, one transaction; the move aside happens after COMMIT."""
    source = f"files:{feed.name}"
    path = landing_root / rel
    if not _inside(path, feed_dir(landing_root, feed), landing_root):
        reason = f"path {rel!r} is not inside the feed's landing folder {feed.folder!r}"
        return _reject(conn, feed, landing_root, rel, run_id, None, 0, reason, move=False)
    try:
        size = path.lstat().st_size
        unsafe = outside_landing_reason(landing_root, feed, path)
        if unsafe and not path.exists() and not path.is_symlink():
            return _vanished(rel, "before it could be read")
        if unsafe:
            return _reject(conn, feed, landing_root, rel, run_id, None, size, unsafe)
        before = _identity(path)
        if before is None:
            raise FileNotFoundError(path)
        file_hash = sha256_file(path)
    except FileNotFoundError:
        return _vanished(rel, "before it could be read")
    size = before[1]  # the size of the bytes hashed (COMMIT checks they did not change)
    with transaction(conn):
        earlier = _earlier(conn, feed, file_hash)
        if earlier and earlier[0] == rel and not _archived(earlier[2]):
            # Committed by an earlier run that stopped before moving the file: finish the move.
            batch_id = int(earlier[1])
            status: Status = "already_loaded"
            reason = None
        elif earlier:
            batch_id = next_batch_id(conn, source, run_id)
            status = "duplicate"
            reason = f"same content as {earlier[0]} (loaded in batch {earlier[1]})"
            target = archive_path(landing_root, feed, batch_id, rel)
            _register(conn, feed, file_hash, rel, size, 0, batch_id, status, reason, target)
    if earlier:
        try:
            target = move_aside(path, archive_path(landing_root, feed, batch_id, rel))
        except FileNotFoundError:
            return _vanished(rel, f"after it was registered ({status})")
        return FileOutcome(
            path=rel,
            status=status,
            file_hash=file_hash,
            reason=reason,
            batch_id=batch_id,
            moved_to=_rel(target, landing_root),
        )

    columns_first: list[str] = []
    try:
        while True:
            try:
                with transaction(conn):
                    batch_id = next_batch_id(conn, source, run_id)
                    target = archive_path(landing_root, feed, batch_id, rel)
                    rows, columns = _append_file(
                        conn, feed, path, rel, file_hash, batch_id, batch_rows, on_progress,
                        columns_first,
                    )  # fmt: skip
                    if _identity(path) != before:  # still being written: not the file we read
                        raise FileChangedError
                    _register(
                        conn, feed, file_hash, rel, size, rows, batch_id, "loaded", None, target,
                        columns=columns,
                    )  # fmt: skip
                    set_position(conn, source, "last_file", rel, batch_id)
                break
            except _LateColumns as late:  # rolled back: again, every column added first
                if columns_first:
                    raise FileChangedError from late  # the second read found other columns
                columns_first = late.columns
    except FileReadError as exc:
        return _reject(conn, feed, landing_root, rel, run_id, file_hash, size, exc.reason)
    except FileNotFoundError:
        return _vanished(rel, "while it was being read")
    except FileChangedError:
        return _changing(feed, rel)
    loaded = FileOutcome(
        path=rel, status="loaded", rows=rows, file_hash=file_hash, batch_id=batch_id
    )
    if on_committed is not None:
        on_committed(rel)
    return _archive_loaded(conn, feed, landing_root, path, target, before, loaded)


def _earlier(
    conn: duckdb.DuckDBPyConnection, feed: FileFeed, file_hash: str
) -> tuple[str, int, str | None] | None:
    """The first loaded file of the feed with these bytes: (path, batch id, where it is)."""
    return conn.execute(
        "SELECT path, batch_id, stored_at FROM _meta.files WHERE feed = ? AND file_hash = ? "
        "AND status = 'loaded' ORDER BY batch_id LIMIT 1",
        [feed.name, file_hash],
    ).fetchone()


LOOKUP_FILES = 256
"""Waiting files hashed and looked up in ``_meta.files`` together (one query instead of one per
file), so a run's first commit waits for at most this many files' hashing."""


class _LoadedBefore:
    """Which small files an earlier run loaded, asked for a window of waiting files at once (a
    feed of many small files spent about 1 ms a file on a query each).

    :meth:`ask` hashes the window's small regular files and fetches which of those hashes the
    feed has loaded. :func:`_read_small` reuses a file's hash, and the answer, when the file's
    identity (inode, size, mtime) is the one hashed; a file that changed since is hashed again
    and looked up on its own. Files loaded during the run are the caller's to track
    (:func:`ingest_files` keeps their hashes).
    """

    def __init__(
        self,
        hashed: dict[str, tuple[tuple[int, int, int], str]] | None = None,
        loaded: set[str] | None = None,
    ) -> None:
        self.hashed = hashed or {}  # landing path -> (identity when hashed, hash)
        self.asked = {file_hash for _, file_hash in self.hashed.values()}
        self.loaded = loaded or set()  # those of the asked hashes the feed has loaded

    @classmethod
    def ask(
        cls,
        conn: duckdb.DuckDBPyConnection,
        feed: FileFeed,
        landing_root: Path,
        relpaths: Sequence[str],
        small_file_bytes: int,
    ) -> _LoadedBefore:
        hashed = {}
        for rel in relpaths:
            path = landing_root / rel
            try:
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode) or st.st_size > small_file_bytes:
                    continue  # the one-file path looks these up itself
                identity = _identity(path)
                file_hash = sha256_file(path)
            except OSError:
                continue
            if identity is not None and _identity(path) == identity:
                hashed[rel] = (identity, file_hash)
        loaded: set[str] = set()
        if hashed:
            rows = conn.execute(
                "SELECT DISTINCT file_hash FROM _meta.files WHERE feed = ? AND status = 'loaded' "
                "AND file_hash IN (SELECT unnest(?::VARCHAR[]))",
                [feed.name, sorted({h for _, h in hashed.values()})],
            ).fetchall()
            loaded = {file_hash for (file_hash,) in rows}
        return cls(hashed, loaded)

    def hash_of(self, rel: str, path: Path, identity: tuple[int, int, int]) -> str:
        """The file's hash: the one taken in :meth:`ask` if the file is unchanged since."""
        known = self.hashed.get(rel)
        if known is not None and known[0] == identity:
            return known[1]
        return sha256_file(path)

    def was_loaded(self, conn: duckdb.DuckDBPyConnection, feed: FileFeed, file_hash: str) -> bool:
        """Whether the feed loaded these bytes before the run: from the window's answer when
        the hash was asked about, else by a query of its own."""
        if file_hash in self.asked:
            return file_hash in self.loaded
        return _earlier(conn, feed, file_hash) is not None


def _changing(feed: FileFeed, rel: str) -> FileOutcome:
    reason = "the file changed while it was being loaded; it stays for the next run"
    log.warning("%s: %s: %s", feed.name, rel, reason)
    return FileOutcome(path=rel, status="changing", file_hash=None, reason=reason)


@dataclass
class _Ready:
    """A small file read whole: its rows wait in memory for the group's transaction."""

    rel: str
    path: Path
    size: int
    identity: tuple[int, int, int]
    file_hash: str
    tables: list[pa.Table]
    columns: list[str]
    rows: int
    nbytes: int


def _read_small(
    conn: duckdb.DuckDBPyConnection,
    feed: FileFeed,
    landing_root: Path,
    rel: str,
    batch_rows: int,
    seen: set[str],
    loaded_before: _LoadedBefore,
    small_file_bytes: int,
) -> _Ready | None:
    """A small regular file inside the feed's folder, read whole and found loadable (readable,
    not loaded before, unchanged while read); None for any other, which the one-file path
    then loads or turns down with its reason. Nothing here writes or moves anything."""
    path = landing_root / rel
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > small_file_bytes:
            return None  # symlinks, FIFOs and big files take the one-file path
        if not _inside(path, feed_dir(landing_root, feed), landing_root):
            return None
        if outside_landing_reason(landing_root, feed, path):
            return None
        identity = _identity(path)
        if identity is None:
            return None
        file_hash = loaded_before.hash_of(rel, path, identity)
        if file_hash in seen:  # a twin of this run's: the one-file path looks it up
            return None
        if loaded_before.was_loaded(conn, feed, file_hash):
            return None
        tables: list[pa.Table] = []
        columns: list[str] = []
        rows = nbytes = 0
        for table in read_batches(path, feed, batch_rows):
            tables.append(table)
            columns += [c for c in table.column_names if c not in columns and c[0] != "_"]
            rows += table.num_rows
            nbytes += table.nbytes
            if nbytes > GROUP_BYTES:  # decompresses to more than a group holds: stream it
                return None
        if _identity(path) != identity:
            return None
    except (FileReadError, OSError):
        return None
    return _Ready(rel, path, identity[1], identity, file_hash, tables, columns, rows, nbytes)


class _SmallFiles:
    """Small files loaded several to a transaction: each keeps its own batch id and
    ``_meta.files`` record, committed with its rows, and is archived after the COMMIT.

    Each file was read whole before (:func:`_read_small`), so the transaction holds only
    appends and bookkeeping. A file that changed or vanished since it was read is left out:
    the transaction is rolled back and run again without it, from memory.
    """

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        feed: FileFeed,
        landing_root: Path,
        run_id: str | None,
        on_progress: ProgressHook | None,
        on_committed: CommitHook | None,
    ) -> None:
        self.conn = conn
        self.feed = feed
        self.landing_root = landing_root
        self.run_id = run_id
        self.on_progress = on_progress
        self.on_committed = on_committed
        self.files: list[_Ready] = []

    def add(self, ready: _Ready) -> list[FileOutcome]:
        """Take ``ready``; load the group once it is full (the outcomes, else nothing yet)."""
        self.files.append(ready)
        full = sum(f.nbytes for f in self.files) >= GROUP_BYTES or len(self.files) >= GROUP_FILES
        return self.load() if full else []

    def load(self) -> list[FileOutcome]:
        """Load the files taken so far, in one transaction; their outcomes in arrival order."""
        files, self.files = self.files, []
        order = {ready.rel: i for i, ready in enumerate(files)}
        left_out: dict[str, FileOutcome] = {}
        committed: list[tuple[_Ready, int, Path]] = []
        while files and not committed:
            try:
                committed = self._transaction(files)
            except _LeftOut as out:
                left_out[out.ready.rel] = out.outcome
                files = [f for f in files if f is not out.ready]
        outcomes = dict(left_out)
        for ready, batch_id, target in committed:
            loaded = FileOutcome(
                path=ready.rel,
                status="loaded",
                rows=ready.rows,
                file_hash=ready.file_hash,
                batch_id=batch_id,
            )
            if self.on_committed is not None:
                self.on_committed(ready.rel)
            outcomes[ready.rel] = _archive_loaded(
                self.conn, self.feed, self.landing_root, ready.path, target, ready.identity, loaded
            )
        return sorted(outcomes.values(), key=lambda outcome: order[outcome.path])

    def _transaction(self, files: list[_Ready]) -> list[tuple[_Ready, int, Path]]:
        conn, feed = self.conn, self.feed
        source = f"files:{feed.name}"
        done = []
        with transaction(conn):
            # Every file's columns before any row: see _LateColumns for why.
            everyone = list(dict.fromkeys(c for ready in files for c in ready.columns))
            add_data_columns(conn, feed.bronze_table, everyone, FILE_LINEAGE)
            parts = []
            batch_ids = next_batch_ids(conn, source, self.run_id, len(files))
            for ready, batch_id in zip(files, batch_ids, strict=True):  # in arrival order
                target = archive_path(self.landing_root, feed, batch_id, ready.rel)
                parts += [_with_lineage(t, batch_id, ready) for t in ready.tables if t.num_rows]
                done.append((ready, batch_id, target))
            # All the group's rows in one append of whole row groups (see BATCH_ROWS).
            rows = pa.concat_tables(parts, promote_options="default") if parts else None
            if rows is not None:
                if rows.num_rows > ROW_GROUP_ROWS:
                    rows = whole_row_groups(rows)
                append_batch(
                    conn, feed.bronze_table, rows, batch_id=None, lineage=FILE_LINEAGE,
                    evolve=False, source_column=SOURCE_FILE,
                )  # fmt: skip
            if self.on_progress:  # as the one-file path reports: rows so far, batch by batch
                for ready in files:
                    so_far = 0
                    for table in ready.tables:
                        so_far += table.num_rows
                        if table.num_rows:
                            self.on_progress(ready.rel, so_far)
            for ready, _, _ in done:  # every file as it was read, up to COMMIT
                now = _identity(ready.path)
                if now is None:
                    raise _LeftOut(ready, _vanished(ready.rel, "while it was being loaded"))
                if now != ready.identity:
                    raise _LeftOut(ready, _changing(feed, ready.rel))
            _register_loaded(conn, feed, done)
            set_position(conn, source, "last_file", done[-1][0].rel, done[-1][1])
        return done


def _with_lineage(table: pa.Table, batch_id: int, ready: _Ready) -> pa.Table:
    """A small file's rows with the lineage that differs from file to file in a group
    (file and hash as one-entry dictionaries: no copy of the text per row)."""
    n = table.num_rows
    zeros = pa.array(np.zeros(n, dtype=np.int32))
    return (
        table.append_column("_batch_id", pa.array(np.full(n, batch_id, dtype=np.int64)))
        .append_column(SOURCE_FILE, pa.DictionaryArray.from_arrays(zeros, [ready.rel]))
        .append_column("_file_hash", pa.DictionaryArray.from_arrays(zeros, [ready.file_hash]))
    )


SOURCE_FILE = "_source_file"


class _LateColumns(Exception):
    """Rows of the file were appended before a batch brought new columns. DuckDB 1.5 cannot
    add a column to a table after a transaction appended a few row groups to it (an internal
    error that invalidates the database), so the file is loaded again, all columns first."""

    def __init__(self, columns: list[str]) -> None:
        super().__init__(", ".join(columns))
        self.columns = columns


class _LeftOut(Exception):
    """A file of a group changed or vanished before COMMIT: the group runs again without it."""

    def __init__(self, ready: _Ready, outcome: FileOutcome) -> None:
        super().__init__(ready.rel)
        self.ready = ready
        self.outcome = outcome


def _archive_loaded(
    conn: duckdb.DuckDBPyConnection,
    feed: FileFeed,
    landing_root: Path,
    path: Path,
    target: Path,
    loaded_as: tuple[int, int, int] | None,
    outcome: FileOutcome,
) -> FileOutcome:
    """Move a committed file to the archive, unless it changed after its rows were read: then
    it stays (or goes back) in the landing zone and is reported, so no appended byte is lost."""
    rel = outcome.path
    try:
        if _identity(path) == loaded_as:
            moved = move_aside(path, target)
            if _identity(moved) == loaded_as:
                return outcome.model_copy(update={"moved_to": _rel(moved, landing_root)})
            # A writer kept the file open and appended after the move: put it back.
            if not path.exists():
                moved.rename(path)
    except FileNotFoundError:
        reason = "loaded, but the file was deleted before it could be archived"
        log.warning("%s: %s: %s", feed.name, rel, reason)
        return outcome.model_copy(update={"reason": reason})
    size = path.stat().st_size if path.exists() else None
    reason = (
        f"changed after its {outcome.rows:,} row(s) were committed (size "
        f"{loaded_as[1] if loaded_as else '?':,} → {size if size is not None else '?':,} bytes); "
        "it stays in the landing zone and its new content loads as a new version"
    )
    log.warning("%s: %s: %s", feed.name, rel, reason)
    with transaction(conn):
        conn.execute(
            "UPDATE _meta.files SET reason = ?, stored_at = NULL "
            "WHERE feed = ? AND batch_id = ? AND status = 'loaded'",
            [reason, feed.name, outcome.batch_id],
        )
    return outcome.model_copy(update={"status": "changed_after_load", "reason": reason})


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _archived(stored_at: str | None) -> bool:
    """Whether the loaded copy reached its archive (if not, the run stopped before the move)."""
    return bool(stored_at) and Path(stored_at).exists()


def _inside(path: Path, folder: Path, landing_root: Path) -> bool:
    """Lexical check (before following links) that ``path`` names a file under ``folder``."""
    try:
        path.absolute().relative_to(folder.absolute())
    except ValueError:
        return False
    return ".." not in Path(path).relative_to(landing_root).parts


FILE_LINEAGE = {"_file_hash": "VARCHAR"}


def ensure_feed_table(conn: duckdb.DuckDBPyConnection, feed: FileFeed) -> None:
    """The feed's bronze table, created with its lineage columns before any file arrives."""
    ensure_bronze_table(conn, feed.bronze_table, FILE_LINEAGE)


def _append_file(
    conn: duckdb.DuckDBPyConnection,
    feed: FileFeed,
    path: Path,
    rel: str,
    file_hash: str,
    batch_id: int,
    batch_rows: int,
    on_progress: ProgressHook | None,
    columns_first: list[str],
) -> tuple[int, list[str]]:
    """Append the file's rows; (rows, the file's own columns in header order).

    Batches of one shape (all of a CSV's) stream into one INSERT, parsed one ahead on a
    thread of their own. Columns are added before the first row (a CSV's header,
    ``columns_first`` on a second try); a JSON line bringing a new key later raises
    :class:`_LateColumns` once the rest of the file has been read for its keys.
    """
    rows = 0
    columns: list[str] = []
    known = set(columns_first)
    if columns_first:
        add_data_columns(conn, feed.bronze_table, columns_first, FILE_LINEAGE)
    batches = read_ahead(read_batches(path, feed, batch_rows))
    try:
        for _, run in itertools.groupby(batches, key=lambda table: table.schema):
            first, tables = _peek(run)
            new = [c for c in first.column_names if c not in columns and not c.startswith("_")]
            columns += new
            unknown = [c for c in new if c not in known]
            if unknown and rows:
                for rest in itertools.chain(tables, batches):
                    columns += [c for c in rest.column_names if c not in columns and c[0] != "_"]
                raise _LateColumns(columns)
            if unknown:
                add_data_columns(conn, feed.bronze_table, unknown, FILE_LINEAGE)
                known.update(unknown)
            stream = _Stream(tables, rel, rows, on_progress)
            while not stream.exhausted:  # one INSERT per STREAM_ROWS, fed as parsed
                try:
                    append_batch(
                        conn,
                        feed.bronze_table,
                        pa.RecordBatchReader.from_batches(first.schema, stream.batches()),
                        batch_id=batch_id,
                        source=rel,
                        constants={"_file_hash": file_hash},
                        lineage=FILE_LINEAGE,
                        evolve=False,
                    )
                except Exception:
                    if stream.failure is not None:  # the reader's own error, not DuckDB's
                        raise stream.failure from None
                    raise
            rows = stream.rows
    finally:
        batches.close()
    return rows, columns


def _peek(tables: Iterator[pa.Table]) -> tuple[pa.Table, Iterator[pa.Table]]:
    """The first table, and all of them."""
    first = next(tables)
    return first, itertools.chain([first], tables)


STREAM_ROWS = BATCH_ROWS
"""Rows one INSERT takes from a file's stream. DuckDB holds memory in proportion to what one
INSERT fed from Arrow appends until it ends (about twice the CSV bytes: 1.8 GB for a 1.2 GB
file in one INSERT, 0.8 GB in INSERTs of four row groups, as much as its own read_csv
holds), so a big file goes in as several INSERTs of the same transaction."""


class _Stream:
    """Tables of one shape as the record batches of INSERTs of at most :data:`STREAM_ROWS`
    rows each: counts the rows handed over (``on_progress`` after each table) and keeps the
    reader's exception, which DuckDB would otherwise report in its own words."""

    def __init__(
        self, tables: Iterator[pa.Table], rel: str, rows: int, on_progress: ProgressHook | None
    ) -> None:
        self.tables = tables
        self.rel = rel
        self.rows = rows
        self.on_progress = on_progress
        self.failure: BaseException | None = None
        self.exhausted = False

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The next INSERT's record batches (``exhausted`` once the tables are)."""
        taken = 0
        try:
            while taken < STREAM_ROWS:
                table = next(self.tables, None)
                if table is None:
                    self.exhausted = True
                    return
                yield from table.to_batches()
                taken += table.num_rows
                self.rows += table.num_rows
                if self.on_progress and table.num_rows:
                    self.on_progress(self.rel, self.rows)
        except BaseException as exc:
            self.failure = exc
            raise


class _Entry(NamedTuple):
    """One ``_meta.files`` row: what became of one file."""

    file_hash: str
    rel: str
    size: int
    rows: int
    batch_id: int
    status: str
    reason: str | None
    stored_at: str | None
    columns: str | None  # the file's columns as JSON (loaded files)


def _register(
    conn: duckdb.DuckDBPyConnection,
    feed: FileFeed,
    file_hash: str | None,
    rel: str,
    size: int,
    rows: int,
    batch_id: int,
    status: str,
    reason: str | None,
    stored_at: Path | None,
    *,
    columns: list[str] | None = None,
) -> None:
    stored = str(stored_at) if stored_at else None
    listed = json.dumps(columns) if columns is not None else None
    entry = _Entry(file_hash or "", rel, size, rows, batch_id, status, reason, stored, listed)
    _register_all(conn, feed, [entry])


def _register_loaded(
    conn: duckdb.DuckDBPyConnection, feed: FileFeed, done: list[tuple[_Ready, int, Path]]
) -> None:
    """A group's loaded files, registered together."""
    entries = [
        _Entry(r.file_hash, r.rel, r.size, r.rows, batch_id, "loaded", None, str(target),
               json.dumps(r.columns))
        for r, batch_id, target in done
    ]  # fmt: skip
    _register_all(conn, feed, entries)


def _register_all(conn: duckdb.DuckDBPyConnection, feed: FileFeed, entries: list[_Entry]) -> None:
    """``entries`` into ``_meta.files`` in one statement, however many (a group of small files
    registered a statement each spent more on them than on its append)."""
    if not entries:
        return
    conn.execute(
        "INSERT INTO _meta.files (feed, file_hash, path, size_bytes, rows, batch_id, status, "
        "reason, stored_at, registered_at, columns) "
        "SELECT ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[]), "
        "unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
        "unnest(?::VARCHAR[]), now(), unnest(?::VARCHAR[])",
        [feed.name, *(list(field) for field in zip(*entries, strict=True))],
    )


def _reject(
    conn: duckdb.DuckDBPyConnection,
    feed: FileFeed,
    landing_root: Path,
    rel: str,
    run_id: str | None,
    file_hash: str | None,
    size: int,
    reason: str,
    *,
    move: bool = True,
) -> FileOutcome:
    """Record the file as rejected (with the reason) and move it aside so no one retries it."""
    with transaction(conn):
        batch_id = next_batch_id(conn, f"files:{feed.name}", run_id)
        target = rejected_path(landing_root, feed, batch_id, rel) if move else None
        _register(conn, feed, file_hash, rel, size, 0, batch_id, "rejected", reason, target)
    if target is not None:
        try:
            target = move_aside(landing_root / rel, target)
        except FileNotFoundError:  # gone meanwhile: the record says why it was refused
            target = None
    log.warning("%s: rejected %s: %s", feed.name, rel, reason)
    return FileOutcome(
        path=rel,
        status="rejected",
        file_hash=file_hash,
        reason=reason,
        batch_id=batch_id,
        moved_to=_rel(target, landing_root) if target else None,
    )


def _rel(path: Path, landing_root: Path) -> str:
    try:
        return path.relative_to(landing_root).as_posix()
    except ValueError:
        return str(path)
