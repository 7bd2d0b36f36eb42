"""``ingest_files`` against a real DuckDB file: exactly once, with lineage, refusing the unsafe."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from medallion_platform.connectors.files import FileFeed, ingest_files, list_landing_files
from medallion_platform.connectors.files.readers import JSON_BLOCK_BYTES
from medallion_platform.warehouse.warehouse import table_columns
from medallion_platform_tests.conftest import settled, settled_write, write_csv

BRONZE = "bronze.files_products"


@pytest.fixture
def landing(settings) -> Path:
    return settings.landing_dir


def _query(warehouse, sql: str, params: list | None = None) -> list[tuple]:
    with warehouse.connect() as conn:
        return conn.execute(sql, params or []).fetchall()


def _bronze_rows(warehouse, relpath: str | None = None) -> int:
    if relpath is None:
        return _query(warehouse, f"SELECT count(*) FROM {BRONZE}")[0][0]
    return _query(
        warehouse, f"SELECT count(*) FROM {BRONZE} WHERE _source LIKE ?", [relpath + "#row=%"]
    )[0][0]


def _registry(warehouse, path: str | None = None) -> list[dict]:
    sql = (
        "SELECT feed, file_hash, path, size_bytes, rows, batch_id, status, reason, stored_at "
        "FROM _meta.files"
    )
    params = []
    if path is not None:
        sql += " WHERE path = ?"
        params.append(path)
    with warehouse.connect() as conn:
        cursor = conn.execute(sql + " ORDER BY batch_id", params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _bronze_columns(warehouse) -> dict[str, str]:
    with warehouse.connect() as conn:
        return table_columns(conn, "bronze", "files_products")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _products(*skus: str) -> str:
    return "sku,name,unit_price\n" + "".join(f"{s},Name {s},1.50\n" for s in skus)


def _drop(landing: Path, texts: dict[str, str], first_age: int = 0) -> None:
    """Write ``texts`` into the products folder, settled, in their order of arrival."""
    for age, (name, text) in enumerate(texts.items(), start=first_age):
        path = write_csv(landing, f"products/{name}", text)
        os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))


def test_loads_rows_with_lineage_registers_and_archives(warehouse, landing, products_feed):
    """Rows land with lineage, the file is registered and archived, the position is committed."""
    text = 'sku,name,unit_price\n007,Widget,"12,99"\nB2,Gadget,N/A\n'
    path = write_csv(landing, "products/catalog.csv", text)
    data = path.read_bytes()

    report = ingest_files(warehouse, products_feed, landing)

    [outcome] = report.files
    assert (outcome.path, outcome.status, outcome.rows) == ("products/catalog.csv", "loaded", 2)
    assert outcome.file_hash == _sha256(data)
    batch_id = outcome.batch_id
    assert isinstance(batch_id, int)
    assert outcome.moved_to == f"_archive/products/batch_{batch_id:08d}/catalog.csv"
    assert report.rows_loaded == 2

    rows = _query(
        warehouse,
        f"SELECT sku, name, unit_price, _batch_id, _ingested_at IS NOT NULL, _source, "
        f"_row_number, _file_hash, _parse_error FROM {BRONZE} ORDER BY _row_number",
    )
    digest = _sha256(data)
    assert rows == [
        ("007", "Widget", "12,99", batch_id, True, "products/catalog.csv#row=1", 1, digest, None),
        ("B2", "Gadget", "N/A", batch_id, True, "products/catalog.csv#row=2", 2, digest, None),
    ]

    [entry] = _registry(warehouse)
    archived = landing / outcome.moved_to
    assert entry == {
        "feed": "products",
        "file_hash": _sha256(data),
        "path": "products/catalog.csv",
        "size_bytes": len(data),
        "rows": 2,
        "batch_id": batch_id,
        "status": "loaded",
        "reason": None,
        "stored_at": str(archived),
    }
    assert not path.exists()
    assert archived.read_bytes() == data
    assert list_landing_files(landing, products_feed) == []

    positions = _query(warehouse, "SELECT source, key, position, batch_id FROM _meta.positions")
    assert positions == [("files:products", "last_file", "products/catalog.csv", batch_id)]


def test_header_only_file_is_loaded_with_zero_rows(warehouse, landing, products_feed):
    """A readable file without data rows is registered as loaded (0 rows) and archived."""
    path = write_csv(landing, "products/empty.csv", "sku,name\n")
    [outcome] = ingest_files(warehouse, products_feed, landing).files
    assert (outcome.status, outcome.rows) == ("loaded", 0)
    assert [(e["status"], e["rows"]) for e in _registry(warehouse)] == [("loaded", 0)]
    assert _bronze_rows(warehouse) == 0
    assert not path.exists()
    assert "name" in _bronze_columns(warehouse)


def test_same_content_under_another_name_is_a_duplicate(warehouse, landing, products_feed):
    """The same bytes dropped again under a new name are registered duplicate, not loaded."""
    text = _products("A", "B", "C")
    write_csv(landing, "products/monday.csv", text)
    first = ingest_files(warehouse, products_feed, landing).files[0]
    assert first.status == "loaded"

    again = write_csv(landing, "products/tuesday.csv", text)
    [outcome] = ingest_files(warehouse, products_feed, landing).files

    assert outcome.status == "duplicate"
    assert "products/monday.csv" in outcome.reason
    assert str(first.batch_id) in outcome.reason
    assert outcome.batch_id > first.batch_id
    assert _bronze_rows(warehouse) == 3
    assert _bronze_rows(warehouse, "products/tuesday.csv") == 0
    [entry] = _registry(warehouse, "products/tuesday.csv")
    assert (entry["status"], entry["rows"], entry["reason"]) == ("duplicate", 0, outcome.reason)
    assert entry["file_hash"] == first.file_hash
    assert not again.exists()
    assert (landing / outcome.moved_to).read_text(encoding="utf-8") == text


def test_same_content_under_the_same_name_is_not_loaded_again(warehouse, landing, products_feed):
    """Re-dropping an already archived file under its old name adds no rows and is moved away."""
    text = _products("A", "B")
    write_csv(landing, "products/catalog.csv", text)
    ingest_files(warehouse, products_feed, landing)

    again = write_csv(landing, "products/catalog.csv", text)
    [outcome] = ingest_files(warehouse, products_feed, landing).files

    assert outcome.status in ("duplicate", "already_loaded")
    assert _bronze_rows(warehouse) == 2
    assert [e["status"] for e in _registry(warehouse) if e["status"] == "loaded"] == ["loaded"]
    assert not again.exists()
    assert list_landing_files(landing, products_feed) == []


def test_same_content_under_the_same_name_is_registered_duplicate(
    warehouse, landing, products_feed
):
    """A same-name re-drop (the original already archived) leaves a 'duplicate' registry row."""
    text = _products("A", "B")
    write_csv(landing, "products/catalog.csv", text)
    first = ingest_files(warehouse, products_feed, landing).files[0]
    assert (landing / first.moved_to).exists()  # the first copy was fully handled

    write_csv(landing, "products/catalog.csv", text)
    [outcome] = ingest_files(warehouse, products_feed, landing).files

    assert outcome.status == "duplicate"
    entries = _registry(warehouse, "products/catalog.csv")
    assert [e["status"] for e in entries] == ["loaded", "duplicate"]
    assert "products/catalog.csv" in entries[1]["reason"]


def test_each_file_gets_its_own_increasing_batch_id(warehouse, landing, products_feed):
    """One batch id per file, increasing in processing (arrival) order, also across runs."""
    for age, (name, skus) in enumerate(
        (("bb.csv", ""), ("c.csv", "C"), ("b.csv", "B"), ("a.csv", "A"))
    ):
        path = write_csv(landing, f"products/{name}", _products(*skus) if skus else "")
        os.utime(path, (1_700_000_000 - age, 1_700_000_000 - age))  # a oldest, bb newest
    report = ingest_files(warehouse, products_feed, landing)

    assert [f.path for f in report.files] == [
        "products/a.csv",
        "products/b.csv",
        "products/c.csv",
        "products/bb.csv",
    ]
    assert [f.status for f in report.files] == ["loaded", "loaded", "loaded", "rejected"]
    ids = report.batch_ids
    assert len(ids) == 4
    assert ids == sorted(ids) and len(set(ids)) == 4
    by_file = dict(
        _query(
            warehouse,
            f"SELECT split_part(_source, '#', 1), min(_batch_id) FROM {BRONZE} "
            "GROUP BY 1 HAVING min(_batch_id) = max(_batch_id)",
        )
    )
    assert by_file == {f.path: f.batch_id for f in report.files if f.status == "loaded"}
    assert [(e["path"], e["batch_id"]) for e in _registry(warehouse)] == [
        (f.path, f.batch_id) for f in report.files
    ]

    write_csv(landing, "products/0_later.csv", _products("Z"))
    [later] = ingest_files(warehouse, products_feed, landing).files
    assert later.batch_id > max(ids)


def test_rejected_files_are_recorded_moved_aside_and_the_batch_goes_on(
    warehouse, landing, products_feed
):
    """Unreadable files are rejected whole with a reason and moved to _rejected/; others load."""
    bad = {
        "b_empty.csv": (b"", "empty"),
        "c_binary.csv": (b"sku,name\nA,\x00\x00\x00\x01\n", "binary"),
        "d_latin1.csv": ("sku,name\nA,Crème brûlée\n".encode("latin-1"), "not valid utf-8"),
        "e_no_sku.csv": (b"name,unit_price\nWidget,1\n", "sku"),
    }
    write_csv(landing, "products/a_good.csv", _products("A1", "A2"))
    for name, (data, _) in bad.items():
        settled_write(landing / "products" / name, data)
    write_csv(landing, "products/f_good.csv", _products("F1", "F2", "F3"))

    report = ingest_files(warehouse, products_feed, landing)

    outcomes = {f.path.removeprefix("products/"): f for f in report.files}
    assert outcomes["a_good.csv"].status == "loaded"
    assert outcomes["f_good.csv"].status == "loaded"
    assert report.count("rejected") == 4
    registry = {e["path"].removeprefix("products/"): e for e in _registry(warehouse)}
    for name, (data, fragment) in bad.items():
        outcome = outcomes[name]
        assert outcome.status == "rejected", name
        assert fragment in outcome.reason.lower(), (name, outcome.reason)
        assert outcome.moved_to == f"_rejected/products/batch_{outcome.batch_id:08d}/{name}"
        assert (landing / outcome.moved_to).read_bytes() == data
        assert not (landing / "products" / name).exists()
        entry = registry[name]
        assert (entry["status"], entry["reason"], entry["rows"]) == ("rejected", outcome.reason, 0)
        assert entry["file_hash"] == _sha256(data)
        assert entry["stored_at"] == str(landing / outcome.moved_to)
        assert _bronze_rows(warehouse, f"products/{name}") == 0
    assert _bronze_rows(warehouse) == 5
    assert list_landing_files(landing, products_feed) == []


@pytest.mark.parametrize("small_file_bytes", [8 << 20, 0], ids=["read-whole", "streamed"])
def test_read_error_late_in_a_file_rolls_back_its_earlier_batches(
    warehouse, landing, products_feed, small_file_bytes
):
    """Batches already inserted are rolled back when a later part of the file is unreadable,
    whether the file was read whole first or streamed into its INSERT."""
    data = (
        b"sku,name\n" + b"".join(b"S%d,n\n" % i for i in range(5_000)) + "Z,Café\n".encode("cp1252")
    )
    (landing / "products").mkdir()
    settled_write(landing / "products" / "a_late.csv", data)
    write_csv(landing, "products/b_good.csv", _products("B"))

    report = ingest_files(
        warehouse, products_feed, landing, batch_rows=1_000, small_file_bytes=small_file_bytes
    )

    assert [(f.path, f.status) for f in report.files] == [
        ("products/a_late.csv", "rejected"),
        ("products/b_good.csv", "loaded"),
    ]
    assert "not valid utf-8" in report.files[0].reason.lower()
    assert _bronze_rows(warehouse, "products/a_late.csv") == 0
    assert _bronze_rows(warehouse) == 1
    assert [e["status"] for e in _registry(warehouse, "products/a_late.csv")] == ["rejected"]
    assert _query(warehouse, "SELECT position FROM _meta.positions") == [("products/b_good.csv",)]


@pytest.mark.parametrize(
    "relpath",
    ["../etc/passwd", "ad_spend/x.csv", "products/../ad_spend/x.csv", "<absolute>"],
)
def test_relpath_outside_the_feed_folder_is_refused_and_not_moved(
    warehouse, settings, landing, products_feed, relpath
):
    """A path leaving the feed folder is registered rejected, never read, never moved."""
    outside = write_csv(settings.home, "etc/passwd", "root:x:0:0\n")
    other = write_csv(landing, "ad_spend/x.csv", "date,channel,campaign\n2026-01-01,tv,c\n")
    (landing / "products").mkdir()
    if relpath == "<absolute>":
        relpath = str(outside)
    target = (landing / relpath).resolve()
    before = target.read_bytes()

    [outcome] = ingest_files(warehouse, products_feed, landing, [relpath]).files

    assert outcome.status == "rejected"
    assert "not inside the feed's landing folder" in outcome.reason
    assert outcome.moved_to is None and outcome.file_hash is None
    assert target.read_bytes() == before
    assert outside.exists() and other.exists()
    assert not (landing / "_rejected").exists()
    assert _bronze_rows(warehouse) == 0
    [entry] = _registry(warehouse)
    assert (entry["path"], entry["status"], entry["stored_at"]) == (relpath, "rejected", None)


def test_symlink_pointing_outside_is_rejected_and_only_the_link_moved(
    warehouse, settings, landing, products_feed
):
    """A link out of the landing zone is rejected unread; the link moves, its target stays."""
    secret = write_csv(settings.home, "secret.csv", _products("S1", "S2"))
    before = secret.read_bytes()
    write_csv(landing, "products/good.csv", _products("G"))
    link = landing / "products" / "evil.csv"
    link.symlink_to(secret)

    report = ingest_files(warehouse, products_feed, landing)

    outcome = next(f for f in report.files if f.path == "products/evil.csv")
    assert outcome.status == "rejected"
    assert "outside the landing zone" in outcome.reason
    assert outcome.file_hash is None  # the target was never read
    moved = landing / outcome.moved_to
    assert moved.is_symlink()
    assert Path(os.readlink(moved)) == secret
    assert not os.path.lexists(link)
    assert secret.read_bytes() == before
    assert _bronze_rows(warehouse, "products/evil.csv") == 0
    assert _bronze_rows(warehouse) == 1
    assert [e["status"] for e in _registry(warehouse, "products/evil.csv")] == ["rejected"]


def test_symlink_inside_the_feed_folder_is_loaded(warehouse, landing, products_feed):
    """A link to a file within the feed folder is followed and loaded; the target is kept."""
    real = write_csv(landing, "products/_incoming/real.csv", _products("R1", "R2"))
    before = real.read_bytes()
    link = landing / "products" / "link.csv"
    link.symlink_to(real)

    [outcome] = ingest_files(warehouse, products_feed, landing).files

    assert (outcome.path, outcome.status, outcome.rows) == ("products/link.csv", "loaded", 2)
    assert outcome.file_hash == _sha256(before)
    assert _bronze_rows(warehouse, "products/link.csv") == 2
    assert (landing / outcome.moved_to).is_symlink()
    assert not os.path.lexists(link)
    assert real.read_bytes() == before


def test_new_column_in_a_later_file_is_added_and_missing_ones_are_null(
    warehouse, landing, products_feed
):
    """Schema evolution by addition: new columns appear, older rows and absent columns are NULL."""
    write_csv(landing, "products/1.csv", "sku,name\nA,a\n")
    write_csv(landing, "products/2.csv", "sku,name,Season\nB,b,summer\n")
    write_csv(landing, "products/3.csv", "sku,season\nC,winter\n")  # no 'name' (not required)

    report = ingest_files(warehouse, products_feed, landing)

    assert [f.status for f in report.files] == ["loaded", "loaded", "loaded"]
    columns = _bronze_columns(warehouse)
    assert columns["season"] == "VARCHAR" and columns["name"] == "VARCHAR"
    rows = _query(warehouse, f"SELECT sku, name, season FROM {BRONZE} ORDER BY sku")
    assert rows == [("A", "a", None), ("B", "b", "summer"), ("C", None, "winter")]


def test_malformed_rows_all_reach_bronze(warehouse, landing, products_feed):
    """Short and long rows are loaded too, flagged: bronze holds every data row of the file."""
    text = "sku,name,unit_price\nA,a,1\nB,b\nC,c,3\nD,d,4,extra,more\nE\nF,f,6\n"
    write_csv(landing, "products/messy.csv", text)

    [outcome] = ingest_files(warehouse, products_feed, landing).files

    assert (outcome.status, outcome.rows) == ("loaded", 6)
    rows = _query(
        warehouse,
        f"SELECT _row_number, sku, unit_price, _parse_error, _extra_fields FROM {BRONZE} "
        "ORDER BY _row_number",
    )
    assert len(rows) == 6
    assert _query(warehouse, f"SELECT count(DISTINCT _source) FROM {BRONZE}") == [(6,)]
    flagged = {r[0]: r for r in rows if r[3] is not None}
    assert set(flagged) == {2, 4, 5}
    assert flagged[2][3] == "row 2: expected 3 fields, found 2" and flagged[2][2] is None
    assert json.loads(flagged[4][4]) == ["extra", "more"]
    assert flagged[5][1:3] == ("E", None)


def test_crash_after_commit_before_move_is_finished_not_reloaded(warehouse, landing, products_feed):
    """A committed file still in the landing folder (the move never happened) is only moved."""
    text = _products("A", "B", "C")
    write_csv(landing, "products/catalog.csv", text)
    [first] = ingest_files(warehouse, products_feed, landing).files
    archived = landing / first.moved_to
    # The state a crash between COMMIT and the move leaves behind: registered, not moved.
    original = landing / "products" / "catalog.csv"
    os.replace(archived, original)

    [outcome] = ingest_files(warehouse, products_feed, landing).files

    assert outcome.status == "already_loaded"
    assert (outcome.batch_id, outcome.rows) == (first.batch_id, 0)
    assert _bronze_rows(warehouse) == 3
    assert [e["status"] for e in _registry(warehouse, "products/catalog.csv")] == ["loaded"]
    assert len(_registry(warehouse)) == 1
    assert not original.exists()
    assert outcome.moved_to == first.moved_to
    assert archived.read_text(encoding="utf-8") == text


def test_fifo_in_the_landing_folder_is_rejected_without_blocking(warehouse, landing, products_feed):
    """A named pipe matching the glob is refused as not a regular file; the load does not hang."""
    write_csv(landing, "products/good.csv", _products("G"))
    fifo = landing / "products" / "pipe.csv"
    os.mkfifo(fifo)
    result = {}

    def run() -> None:
        result["report"] = ingest_files(warehouse, products_feed, landing)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("ingest_files opened a FIFO and blocked")
    statuses = {f.path: (f.status, f.reason) for f in result["report"].files}
    assert statuses["products/good.csv"] == ("loaded", None)
    assert statuses["products/pipe.csv"] == ("rejected", "not a regular file")


def test_file_with_overlong_headers_does_not_stop_the_batch(warehouse, landing, products_feed):
    """Headers that collide after truncation to 63 chars must not abort the other files."""
    long = "a_very_long_header_" * 4  # 76 chars, normalized and truncated to 63
    write_csv(landing, "products/a_long.csv", f"sku,{long}x,{long}y\nA,1,2\n")
    write_csv(landing, "products/b_good.csv", _products("B"))

    report = ingest_files(warehouse, products_feed, landing)

    statuses = {f.path: f.status for f in report.files}
    assert statuses["products/b_good.csv"] == "loaded"
    assert statuses["products/a_long.csv"] in ("loaded", "rejected")


def test_a_file_that_changes_while_loading_is_rolled_back_and_left_for_later(
    warehouse, landing, products_feed
):
    """A writer still appending: nothing of the half-read file is kept, nothing is moved."""
    skus = [f"SKU-{i:06d}" for i in range(5_000)]
    path = write_csv(landing, "products/growing.csv", _products(*skus))

    def writer_appends(rel: str, rows: int) -> None:  # the writer goes on during our read
        if rows == 1_000:
            with path.open("a") as fh:
                fh.write("SKU-999999,Late row,2.00\n")

    report = ingest_files(
        warehouse, products_feed, landing, batch_rows=1_000, on_progress=writer_appends
    )
    (outcome,) = report.files
    assert outcome.status == "changing" and "changed while it was being loaded" in outcome.reason
    assert _query(warehouse, f"SELECT count(*) FROM {BRONZE}") == [(0,)]
    assert _registry(warehouse) == []
    assert path.exists()

    settled(path)  # the writer finished a while ago
    report = ingest_files(warehouse, products_feed, landing)
    assert [f.status for f in report.files] == ["loaded"]
    assert _query(warehouse, f"SELECT count(*) FROM {BRONZE}") == [(5_001,)]


def test_a_parquet_file_corrupt_past_its_footer_is_rejected_and_the_batch_goes_on(
    warehouse, landing
):
    """The error surfaces mid-read (not when the footer opens): still one rejected file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medallion_platform.connectors.files import FileFeed

    feed = FileFeed(
        name="events_pq", description="x", folder="events", glob="*.parquet",
        format="parquet", contract="events_pq",
    )  # fmt: skip
    (landing / "events").mkdir(parents=True)
    table = pa.table({"id": list(range(50_000)), "v": [f"value {i}" for i in range(50_000)]})
    pq.write_table(table, landing / "events/a_bad.parquet", row_group_size=10_000)
    pq.write_table(table, landing / "events/b_good.parquet", row_group_size=10_000)
    bad = landing / "events/a_bad.parquet"
    data = bytearray(bad.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)  # zero a stretch of data pages
    settled_write(bad, bytes(data))
    settled(landing / "events/b_good.parquet")

    report = ingest_files(warehouse, feed, landing)
    status = {f.path: f.status for f in report.files}
    assert status == {"events/a_bad.parquet": "rejected", "events/b_good.parquet": "loaded"}
    reason = next(f.reason for f in report.files if f.status == "rejected")
    assert reason.startswith("cannot read the file")
    assert _query(warehouse, "SELECT count(*) FROM bronze.files_events_pq") == [(50_000,)]


def test_small_files_loaded_together_each_keep_their_own_batch_and_record(
    warehouse, landing, products_feed
):
    """Small files share a transaction, yet each has its batch id (rising in arrival order),
    its registry row with its own columns, its archive; a twin dropped in the same run is a
    duplicate of the first, and a bad file between them is rejected on its own."""
    names = ["a.csv", "b.csv", "c_bad.csv", "d.csv", "e_twin_of_a.csv"]
    texts = {
        "a.csv": _products("A1", "A2"),
        "b.csv": "sku,name,Season\nB1,b,summer\n",
        "c_bad.csv": "name,unit_price\nno sku,1\n",
        "d.csv": _products("D1"),
        "e_twin_of_a.csv": _products("A1", "A2"),
    }
    _drop(landing, texts)

    report = ingest_files(warehouse, products_feed, landing)

    assert [(f.path.removeprefix("products/"), f.status, f.rows) for f in report.files] == [
        ("a.csv", "loaded", 2),
        ("b.csv", "loaded", 1),
        ("c_bad.csv", "rejected", 0),
        ("d.csv", "loaded", 1),
        ("e_twin_of_a.csv", "duplicate", 0),
    ]
    ids = [f.batch_id for f in report.files]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    registry = {e["path"].removeprefix("products/"): e for e in _registry(warehouse)}
    assert [registry[n]["batch_id"] for n in names] == ids
    with warehouse.connect() as conn:
        columns = dict(conn.execute("SELECT path, columns FROM _meta.files").fetchall())
    assert json.loads(columns["products/b.csv"]) == ["sku", "name", "season"]
    assert json.loads(columns["products/a.csv"]) == ["sku", "name", "unit_price"]
    per_file = dict(
        _query(
            warehouse,
            f"SELECT split_part(_source, '#', 1), min(_batch_id) FROM {BRONZE} "
            "GROUP BY 1 HAVING min(_batch_id) = max(_batch_id)",
        )
    )
    assert per_file == {f.path: f.batch_id for f in report.files if f.status == "loaded"}
    assert _bronze_rows(warehouse) == 4
    assert all((landing / f.moved_to).exists() for f in report.files)
    positions = _query(warehouse, "SELECT position, batch_id FROM _meta.positions")
    assert positions == [("products/d.csv", outcome_id(report, "d.csv"))]


@pytest.mark.parametrize(
    ("changed", "window"),
    [(False, 256), (False, 1), (True, 256)],
    ids=["unchanged", "a-window-per-file", "changed-since-asked"],
)
def test_small_files_ask_once_whether_an_earlier_run_loaded_them(
    warehouse, landing, products_feed, monkeypatch, changed, window
):
    """A run of small files asks ``_meta.files`` once which of them an earlier run loaded
    (a lookup per file was a millisecond each); only the duplicates, which the one-file path
    records with the file they repeat, are looked up one by one. A file of the same size as an
    earlier one but other bytes loads; twins within the run and across runs are duplicates.
    Files that changed after they were hashed for the window's question are hashed again and
    each looked up on its own, with the same outcomes; windows of one file (a twin's original
    in an earlier window) change nothing either."""
    from medallion_platform.connectors.files import loader

    _drop(landing, {"a.csv": _products("A1", "A2"), "b.csv": _products("B1")})
    ingest_files(warehouse, products_feed, landing)

    looked_up: list[str] = []
    earlier = loader._earlier

    def counting(conn, feed, file_hash):
        looked_up.append(file_hash)
        return earlier(conn, feed, file_hash)

    monkeypatch.setattr(loader, "_earlier", counting)
    monkeypatch.setattr(loader, "LOOKUP_FILES", window)
    if changed:  # every file hashed for the question has changed since: other bytes then
        ask = loader._LoadedBefore.ask

        def stale(conn, feed, root, relpaths, small):
            asked = ask(conn, feed, root, relpaths, small)
            before = {rel: ((0, 0, 0), "0" * 64) for rel in asked.hashed}
            return loader._LoadedBefore(before, asked.loaded)

        monkeypatch.setattr(loader._LoadedBefore, "ask", stale)
    texts = {
        "c_same_size_as_a.csv": _products("C1", "C2"),
        "d.csv": _products("D1", "D2", "D3"),
        "e_twin_of_a.csv": _products("A1", "A2"),
        "f_twin_of_c.csv": _products("C1", "C2"),
    }
    _drop(landing, texts, first_age=10)
    assert len(texts["c_same_size_as_a.csv"]) == len(texts["e_twin_of_a.csv"])

    report = ingest_files(warehouse, products_feed, landing)

    assert [(f.path.removeprefix("products/"), f.status, f.rows) for f in report.files] == [
        ("c_same_size_as_a.csv", "loaded", 2),
        ("d.csv", "loaded", 3),
        ("e_twin_of_a.csv", "duplicate", 0),
        ("f_twin_of_c.csv", "duplicate", 0),
    ]
    reasons = {f.path.removeprefix("products/"): f.reason for f in report.files}
    assert "products/a.csv" in reasons["e_twin_of_a.csv"]
    assert "products/c_same_size_as_a.csv" in reasons["f_twin_of_c.csv"]
    twins = [_sha256(texts[n].encode()) for n in ("e_twin_of_a.csv", "f_twin_of_c.csv")]
    if not changed:  # the duplicates only, by the one-file path
        assert looked_up == twins
    else:  # each file as it is read; the earlier run's twin again on the one-file path; the
        # in-run twin is known from the run's own hashes, so only the one-file path asks
        firsts = [_sha256(texts[n].encode()) for n in ("c_same_size_as_a.csv", "d.csv")]
        assert looked_up == [*firsts, twins[0], twins[0], twins[1]]
    assert _bronze_rows(warehouse) == 3 + 5


def outcome_id(report, name: str) -> int:
    return next(f.batch_id for f in report.files if f.path == f"products/{name}")


def test_a_small_file_that_changes_before_its_group_commits_is_left_out(
    warehouse, landing, products_feed
):
    """Small files are read whole before their shared transaction; one rewritten after that
    read is not committed with the bytes of before: it stays for the next run, and the
    others of its group still load."""
    write_csv(landing, "products/a.csv", _products("A1", "A2"))
    late = write_csv(landing, "products/b.csv", _products("B1"))
    write_csv(landing, "products/c.csv", _products("C1"))

    def rewrite_b_while_a_is_appended(rel: str, rows: int) -> None:
        if rel == "products/a.csv":
            late.write_text(_products("B1", "B2"), encoding="utf-8")

    report = ingest_files(
        warehouse, products_feed, landing, on_progress=rewrite_b_while_a_is_appended
    )

    assert [(f.path, f.status) for f in report.files] == [
        ("products/a.csv", "loaded"),
        ("products/b.csv", "changing"),
        ("products/c.csv", "loaded"),
    ]
    assert _bronze_rows(warehouse, "products/b.csv") == 0
    assert _bronze_rows(warehouse) == 3
    assert late.exists() and [e["path"] for e in _registry(warehouse)] == [
        "products/a.csv",
        "products/c.csv",
    ]

    settled(late)
    [again] = ingest_files(warehouse, products_feed, landing).files
    assert (again.path, again.status, again.rows) == ("products/b.csv", "loaded", 2)


def test_json_lines_whose_keys_grow_deep_into_a_big_file_still_load(warehouse, landing):
    """A key first seen in a later block of the reader, after 300,000 rows went in: the file is
    loaded again with every column added before its first row (DuckDB 1.5 can fail, and
    invalidate the database, on ALTER TABLE after its open transaction appended row groups
    in parallel), once, with its columns recorded in order."""
    feed = FileFeed(
        name="events", description="x", folder="events", glob="*.jsonl",
        format="jsonl", contract="events", required_columns=["id"],
    )  # fmt: skip
    pad = "x" * 40  # past the reader's first 16 MiB block, so the late key comes later
    lines = [f'{{"id":"{i}","kind":"view","pad":"{pad}"}}\n' for i in range(300_000)]
    lines += [f'{{"id":"L{i}","kind":"buy","late":"{i}"}}\n' for i in range(10)]
    path = write_csv(landing, "events/big.jsonl", "".join(lines))
    assert path.stat().st_size > JSON_BLOCK_BYTES

    [outcome] = ingest_files(warehouse, feed, landing, batch_rows=100_000, small_file_bytes=0).files

    assert (outcome.status, outcome.rows) == ("loaded", 300_010)
    assert _query(
        warehouse, "SELECT count(*), count(late), count(DISTINCT id) FROM bronze.files_events"
    ) == [(300_010, 10, 300_010)]
    [entry] = _registry(warehouse)
    with warehouse.connect() as conn:
        columns = conn.execute("SELECT columns FROM _meta.files").fetchone()[0]
    assert json.loads(columns) == ["id", "kind", "pad", "late"] and entry["rows"] == 300_010
