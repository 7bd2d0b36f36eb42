"""``read_batches``: every landed row comes back as text, and unreadable files say why."""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medallion_platform.connectors.files import FileFeed, FileReadError
from medallion_platform.connectors.files.readers import (
    ARROW_BLOCK_BYTES,
    read_batches,
    unique_column_names,
)
from medallion_platform.connectors.files.spec import CsvOptions
from medallion_platform.warehouse.identifiers import validate_identifier
from medallion_platform_tests.conftest import settled, write_csv

LINEAGE = ("_row_number", "_parse_error", "_extra_fields")


def _gzip_rows(n: int) -> bytes:
    return gzip.compress(("sku,name\n" + "".join(f"S{i},N{i * 7919}\n" for i in range(n))).encode())


def _rows(path: Path, feed: FileFeed, batch_rows: int = 100_000) -> list[dict]:
    return [row for batch in read_batches(path, feed, batch_rows) for row in batch.to_pylist()]


def _data_columns(path: Path, feed: FileFeed) -> list[str]:
    first = next(read_batches(path, feed))
    return [c for c in first.column_names if c not in LINEAGE]


@pytest.fixture
def landing(settings) -> Path:
    return settings.landing_dir


@pytest.fixture
def jsonl_feed() -> FileFeed:
    return FileFeed(
        name="events",
        description="test events",
        folder="events",
        glob="*.jsonl",
        format="jsonl",
        contract="events",
        required_columns=["id"],
    )


@pytest.fixture
def parquet_feed() -> FileFeed:
    return FileFeed(
        name="prices",
        description="test prices",
        folder="prices",
        glob="*.parquet",
        format="parquet",
        contract="prices",
        required_columns=["sku"],
    )


def test_values_are_kept_as_text_exactly(landing, products_feed):
    """Decimal commas, placeholders, leading zeros and blanks survive byte for byte as text."""
    path = write_csv(
        landing,
        "products/p.csv",
        'sku,unit_price,weight_kg,active\n007,"12,99",N/A,TRUE\n0001e5, 3.50 ,,0\n',
    )
    batches = list(read_batches(path, products_feed))
    assert len(batches) == 1
    schema = batches[0].schema
    for name in ("sku", "unit_price", "weight_kg", "active"):
        assert schema.field(name).type == pa.string(), name
    rows = batches[0].to_pylist()
    assert [(r["sku"], r["unit_price"], r["weight_kg"], r["active"]) for r in rows] == [
        ("007", "12,99", "N/A", "TRUE"),
        ("0001e5", " 3.50 ", "", "0"),
    ]
    assert all(r["_parse_error"] is None and r["_extra_fields"] is None for r in rows)


def test_short_row_is_padded_with_null_and_error_names_row_and_counts(landing, products_feed):
    """A row with too few fields keeps its values, gets NULLs, and says which row was short."""
    path = write_csv(landing, "products/p.csv", "sku,name,unit_price\nA,a,1\nB,b,2\nC,c\nD,d,4\n")
    rows = _rows(path, products_feed)
    assert len(rows) == 4
    short = rows[2]
    assert (short["sku"], short["name"], short["unit_price"]) == ("C", "c", None)
    assert short["_parse_error"] == "row 3: expected 3 fields, found 2"
    assert short["_extra_fields"] is None
    assert [r["_parse_error"] for i, r in enumerate(rows) if i != 2] == [None, None, None]


def test_long_row_keeps_extra_fields_as_json_array(landing, products_feed):
    """Fields beyond the header are not dropped: they go to ``_extra_fields`` as JSON."""
    path = write_csv(landing, "products/p.csv", 'sku,name\nA,a\nB,b,"x,y",,z\n')
    rows = _rows(path, products_feed)
    assert (rows[1]["sku"], rows[1]["name"]) == ("B", "b")
    assert json.loads(rows[1]["_extra_fields"]) == ["x,y", "", "z"]
    assert rows[1]["_parse_error"] == "row 2: expected 2 fields, found 5"
    assert rows[0]["_extra_fields"] is None and rows[0]["_parse_error"] is None


def test_row_number_is_the_data_row_number(landing, products_feed):
    """``_row_number`` counts data records (not the header, not physical lines)."""
    path = write_csv(
        landing,
        "products/p.csv",
        'sku,name\nA,"two\nline name"\nB,b\nC,"three\nline\nname"\nD,d\n',
    )
    rows = _rows(path, products_feed)
    assert [r["_row_number"] for r in rows] == [1, 2, 3, 4]
    assert [r["sku"] for r in rows] == ["A", "B", "C", "D"]
    assert rows[0]["name"] == "two\nline name"
    assert rows[2]["name"] == "three\nline\nname"


def test_headers_are_normalized_and_repeats_get_suffixes(landing, products_feed):
    """Odd headers become identifiers; names that collide after normalizing get _2, _3."""
    path = write_csv(
        landing,
        "products/p.csv",
        "SKU,Unit Price ($),sku, Sku ,Weight (kg),,1st Col\nA,1,2,3,4,5,6\n",
    )
    assert _data_columns(path, products_feed) == [
        "sku",
        "unit_price",
        "sku_2",
        "sku_3",
        "weight_kg",
        "column",
        "c_1st_col",
    ]
    row = _rows(path, products_feed)[0]
    assert (row["sku"], row["sku_2"], row["sku_3"], row["c_1st_col"]) == ("A", "2", "3", "6")


def test_bom_is_stripped_from_first_header(landing, products_feed):
    """A UTF-8 byte-order mark does not leak into the first column name (or its value)."""
    path = landing / "products" / "bom.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbfsku,name\nA,Caf\xc3\xa9\n")
    assert _data_columns(path, products_feed) == ["sku", "name"]
    assert _rows(path, products_feed)[0]["name"] == "Café"


@pytest.mark.parametrize(("n_rows", "sizes"), [(25, [10, 10, 5]), (20, [10, 10]), (3, [3])])
def test_batches_are_split_at_batch_rows(landing, products_feed, n_rows, sizes):
    """Batches hold at most ``batch_rows`` rows, numbering runs on across batches."""
    body = "".join(f"S{i},n{i}\n" for i in range(1, n_rows + 1))
    path = write_csv(landing, "products/p.csv", "sku,name\n" + body)
    batches = list(read_batches(path, products_feed, batch_rows=10))
    assert [b.num_rows for b in batches] == sizes
    numbers = [n for b in batches for n in b.column("_row_number").to_pylist()]
    assert numbers == list(range(1, n_rows + 1))
    assert [r for b in batches for r in b.column("sku").to_pylist()][-1] == f"S{n_rows}"


def test_jsonl_keeps_invalid_lines_and_encodes_nested_values(landing, jsonl_feed):
    """JSON lines: scalars become text, nested values JSON text, a bad line is kept with why."""
    path = write_csv(
        landing,
        "events/e.jsonl",
        '{"id": "007", "amount": 12.5, "tags": ["a", "b"], "meta": {"k": 1}, "ok": true}\n'
        "{not json\n"
        "\n"
        "[1, 2]\n"
        '{"id": "2", "Unit Price": null}\n',
    )
    rows = _rows(path, jsonl_feed)
    assert len(rows) == 4
    first = rows[0]
    assert first["id"] == "007"
    assert first["amount"] == "12.5"
    assert json.loads(first["tags"]) == ["a", "b"]
    assert json.loads(first["meta"]) == {"k": 1}
    assert first["ok"] == "true"
    assert first["_parse_error"] is None

    bad = rows[1]
    assert bad["_row_number"] == 2
    assert bad["_parse_error"].startswith("line 2: invalid JSON")
    assert json.loads(bad["_extra_fields"]) == ["{not json"]
    assert bad["id"] is None

    not_object = rows[2]
    assert not_object["_row_number"] == 4
    assert not_object["_parse_error"] == "line 4: not a JSON object"
    assert json.loads(not_object["_extra_fields"]) == ["[1, 2]"]

    assert rows[3]["id"] == "2" and rows[3]["unit_price"] is None
    assert rows[3]["amount"] is None  # key absent in that record


def test_parquet_values_are_cast_to_text(landing, parquet_feed):
    """Parquet columns of any type come back as text (nested ones as JSON), NULLs stay NULL."""
    path = landing / "prices" / "p.parquet"
    path.parent.mkdir(parents=True)
    table = pa.table(
        {
            "SKU": ["007", None, "C"],
            "Unit Price": [12.5, None, 3.0],
            "qty": pa.array([1, 2, None], pa.int64()),
            "tags": [["a"], [], None],
        }
    )
    pq.write_table(table, path)
    batches = list(read_batches(path, parquet_feed, batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 1]
    for batch in batches:
        for name in ("sku", "unit_price", "qty", "tags"):
            assert batch.schema.field(name).type == pa.string(), name
    rows = [r for b in batches for r in b.to_pylist()]
    assert [r["sku"] for r in rows] == ["007", None, "C"]
    assert [r["qty"] for r in rows] == ["1", "2", None]
    assert float(rows[0]["unit_price"]) == 12.5 and rows[1]["unit_price"] is None
    assert json.loads(rows[0]["tags"]) == ["a"] and json.loads(rows[1]["tags"]) == []
    assert rows[2]["tags"] is None
    assert [r["_row_number"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize(
    ("content", "expected_in_reason"),
    [
        (b"", ["empty", "0 bytes"]),
        (b"sku,name\nA,\x00\x00\x00\x01\n", ["binary", "NUL"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["binary"]),
        ("sku,name\nA,Tent\n".encode("utf-16"), ["UTF-16", "UTF-8"]),
        ("sku,name\nA,Tent\n".encode("utf-16-le"), ["binary", "UTF-16"]),
        (gzip.compress(b""), ["empty", "decompresses"]),
        (_gzip_rows(5_000)[:20_000], ["decompress"]),
        ("sku,name\nA,Café Crème\n".encode("latin-1"), ["not valid utf-8", "0xe9"]),
        (b"name,unit_price\nWidget,1\n", ["missing required column", "sku"]),
    ],
    ids=[
        "zero-bytes",
        "mostly-nul-bytes",
        "png",
        "utf16-with-bom",
        "utf16-without-bom",
        "empty-gzip",
        "truncated-gzip",
        "latin1-under-utf8",
        "missing-required",
    ],
)
def test_unreadable_files_raise_with_a_clear_reason(
    landing, products_feed, content, expected_in_reason
):
    """Files that cannot be read at all raise FileReadError saying why, in words."""
    path = landing / "products" / "bad.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(FileReadError) as info:
        _rows(path, products_feed)
    for fragment in expected_in_reason:
        assert fragment.lower() in info.value.reason.lower(), info.value.reason
    assert str(info.value) == info.value.reason


def test_wrong_encoding_after_the_first_batch_still_raises(landing, products_feed):
    """A bad byte far into the file is not silently mangled: reading it raises FileReadError."""
    path = landing / "products" / "late.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"sku,name\n" + b"A,plain\n" * 5_000 + "B,Café\n".encode("latin-1"))
    with pytest.raises(FileReadError, match=r"(?i)not valid utf-8"):
        _rows(path, products_feed, batch_rows=1_000)


def test_header_only_file_is_readable_with_zero_rows(landing, products_feed):
    """A header without data is a valid, empty file: zero rows, the columns still known."""
    path = write_csv(landing, "products/empty.csv", "sku,name,unit_price\n")
    batches = list(read_batches(path, products_feed))
    assert sum(b.num_rows for b in batches) == 0
    assert [c for c in batches[0].column_names if c not in LINEAGE] == [
        "sku",
        "name",
        "unit_price",
    ]


def test_generated_column_names_are_always_valid_identifiers():
    """Long repeated headers and long headers starting with a digit still give identifiers."""
    long = "x" * 70
    names = unique_column_names(["sku", long, long + "y", "1" + "a" * 70])
    assert len(set(names)) == len(names)
    for name in names:
        validate_identifier(name)


def test_jsonl_keys_colliding_after_normalization_are_both_kept(landing, jsonl_feed):
    """Like CSV headers, JSON keys that normalize alike must both survive (id, id_2)."""
    path = write_csv(landing, "events/e.jsonl", '{"id": "1", "ID": "2"}\n')
    row = _rows(path, jsonl_feed)[0]
    values = sorted(v for k, v in row.items() if k not in LINEAGE)
    assert values == ["1", "2"]


def test_parquet_feed_reads_files_whatever_their_extension(landing):
    """A parquet feed (glob *.pq) reads its files; the binary check is for text formats."""
    feed = FileFeed(
        name="prices",
        description="x",
        folder="prices",
        glob="*.pq",
        format="parquet",
        contract="prices",
    )
    path = landing / "prices" / "p.pq"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"sku": ["A", "B"]}), path)
    assert [r["sku"] for r in _rows(path, feed)] == ["A", "B"]


def test_unterminated_quote_rejects_the_file_naming_the_line(tmp_path, products_feed) -> None:
    """An unclosed quote would swallow the rest of the file into one field: refuse, don't guess."""
    path = write_csv(
        tmp_path,
        "products/broken.csv",
        'sku,name\nSKU-000001,"Tent\nSKU-000002,Stove\nSKU-000003,Boots\n',
    )
    with pytest.raises(FileReadError, match=r"not a readable CSV file \(line \d+\)"):
        _rows(path, products_feed)


def test_a_quote_inside_an_unquoted_field_is_kept(tmp_path, products_feed) -> None:
    path = write_csv(tmp_path, "products/inch.csv", 'sku,name\nSKU-000001,5" stake\n')
    assert _rows(path, products_feed)[0]["name"] == '5" stake'


@pytest.mark.parametrize("batch_rows", [1, 2, 100])
def test_jsonl_required_keys_are_checked_per_record_whatever_the_batch(
    landing, jsonl_feed, batch_rows
):
    """A JSON file has no header: a record without a required key is kept and flagged, and
    the verdict does not depend on how the file happens to be batched."""
    path = write_csv(landing, "events/e.jsonl", '{"id": "1"}\n{"x": "2"}\n{"id": "3"}\n')
    rows = _rows(path, jsonl_feed, batch_rows=batch_rows)
    assert [r["_parse_error"] for r in rows] == [
        None,
        "line 2: missing required field(s) id",
        None,
    ]


@pytest.mark.parametrize("where", ["first row", "past the first 8 KB", "last row"])
def test_a_nul_byte_flags_its_row_wherever_it_is(landing, products_feed, where):
    """One rule wherever the NUL is: the row is kept with a reason naming row and field (silver
    quarantines it); the file loads. Only a file that is mostly NUL (binary) is refused."""
    rows = [f"SKU-{i:05d},Tent {i}" for i in range(1, 2_001)]
    target = {"first row": 1, "past the first 8 KB": 1_500, "last row": 2_000}[where]
    rows[target - 1] = f"SKU-{target:05d},Te\x00nt"
    path = landing / "products" / "nul.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(("sku,name\n" + "\n".join(rows) + "\n").encode())
    assert path.read_bytes().index(b"\x00") > 8192 or where != "past the first 8 KB"

    result = _rows(path, products_feed, batch_rows=700)
    assert len(result) == 2_000
    flagged = [r for r in result if r["_parse_error"]]
    assert [r["_row_number"] for r in flagged] == [target]
    assert flagged[0]["_parse_error"] == f"row {target}: a NUL byte in field(s) name"
    assert flagged[0]["name"] == "Te\x00nt"  # bronze keeps exactly what arrived


@pytest.mark.parametrize("compress", [gzip.compress, "zstd"])
def test_compressed_files_are_read_transparently(landing, products_feed, compress):
    """gzip and zstd are recognized by their first bytes, whatever the file is called."""
    text = "sku,name\n" + "".join(f"SKU-{i},Tent {i}\n" for i in range(5_000))
    if compress == "zstd":  # one zstd frame, as the zstd command writes it
        data = pa.compress(text.encode(), codec="zstd", asbytes=True)
    else:
        data = compress(text.encode())
    path = landing / "products" / "catalog.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    result = _rows(path, products_feed, batch_rows=1_000)
    assert [r["sku"] for r in result] == [f"SKU-{i}" for i in range(5_000)]
    assert [r["_row_number"] for r in result] == list(range(1, 5_001))


def _python_csv_rows(path: Path, encoding: str = "utf-8-sig") -> list[dict]:
    """The reference: what Python's csv module reads from the file, with bronze's rules for a
    row of the wrong width (the reader before Arrow did exactly this, row by row)."""
    with path.open(encoding=encoding, newline="") as fh:
        records = [record for record in csv.reader(fh, strict=True) if record]
    header, data = unique_column_names(records[0]), records[1:]
    width = len(header)
    rows = []
    for number, record in enumerate(data, start=1):
        n = len(record)
        row = dict(zip(header, record[:width] + [None] * (width - n), strict=True))
        row["_row_number"] = number
        row["_parse_error"] = (
            None if n == width else f"row {number}: expected {width} fields, found {n}"
        )
        row["_extra_fields"] = json.dumps(record[width:]) if n > width else None
        rows.append(row)
    return rows


_PLAIN = ["", "N/A", "NULL", "12,99", '5" stake', "Crème brûlée", "日本語", "Tent 2p", "0.50", "-"]
_QUOTED = ["a,b", 'say ""hi""', "ünïcode, too", "", "two\nlines", "crlf\r\nline", "x\n\ny"]


def _messy_field(rng: random.Random) -> str:
    if rng.random() < 0.7:
        value = rng.choice(_PLAIN)
        return f"{value} {rng.randint(0, 999)}" if value and rng.random() < 0.5 else value
    return f'"{rng.choice(_QUOTED)}"'


def _messy_csv(seed: int, rows: int, width: int) -> str:
    """Quotes, commas and line breaks in values, blank lines, CRLF, rows of the wrong width."""
    rng = random.Random(seed)
    lines = [",".join(f"Col {i}" for i in range(width)) + "\n"]
    for _ in range(rows):
        n = width if rng.random() > 0.01 else rng.choice([1, width - 1, width + 1, width + 4])
        lines.append(",".join(_messy_field(rng) for _ in range(n)) + rng.choice(["\n", "\r\n"]))
        if rng.random() < 0.005:
            lines.append(rng.choice(["\n", "\r\n"]))  # a blank line is not a row
    return "".join(lines)


def test_csv_rows_match_pythons_csv_module_across_many_parser_blocks(landing, products_feed):
    """Arrow's reader parses the rows now; every value, row number, NULL pad, extra field and
    error must still be what Python's csv module gives, also where Arrow's blocks (4 MiB)
    and our batches (here 7,000 rows) split the file, and for rows that span lines."""
    text = _messy_csv(seed=11, rows=100_000, width=6).replace("Col 0", "sku", 1)
    path = write_csv(landing, "products/messy.csv", text)
    assert path.stat().st_size > ARROW_BLOCK_BYTES  # two blocks at least

    expected = _python_csv_rows(path)
    got = _rows(path, products_feed, batch_rows=7_000)

    assert sum(1 for r in expected if r["_parse_error"]) > 300  # the file is as messy as meant
    assert len(got) == len(expected)
    assert got == expected


def test_a_wide_csv_written_by_pandas_reads_back_as_written(landing, products_feed):
    """Input we did not make: pandas' to_csv of a wide frame (gaps written as '' and integer
    columns with gaps as 517.0, quoting only where needed) comes back value for value."""
    rng = np.random.default_rng(3)
    n = 5_000
    frame = pd.DataFrame({"sku": [f"SKU-{i:06d}" for i in range(n)]})
    for i in range(18):
        kind = i % 6
        if kind == 0:
            col = pd.Series(rng.integers(0, 1000, n)).where(rng.random(n) > 0.1)  # 517.0, ''
        elif kind == 1:
            col = pd.Series(rng.normal(100, 30, n).round(3))
        elif kind == 2:
            col = pd.Series(
                rng.choice(["Tent, 2-person", 'Boots "Alpine"', "Stove\nburner", "Café"], n)
            )
        elif kind == 3:
            col = pd.Series(pd.date_range("2026-01-01", periods=n, freq="37min"))
        elif kind == 4:
            col = pd.Series(rng.random(n) > 0.5)
        else:
            col = pd.Series(rng.choice(["", "NA", "n/a", "-"], n))
        frame[f"Field {i} ({kind})"] = col
    path = landing / "products" / "wide.csv"
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False)
    settled(path)

    assert _rows(path, products_feed, batch_rows=1_000) == _python_csv_rows(path)


def test_a_quote_left_open_in_an_earlier_field_rejects_the_file(tmp_path, products_feed):
    """An unclosed quote before the last field leaves a short last row: still refused."""
    path = write_csv(tmp_path, "products/open.csv", 'sku,name,price\nS1,"Tent,1\nS2,Stove,2\n')
    with pytest.raises(FileReadError, match=r"not a readable CSV file"):
        _rows(path, products_feed)


def test_a_closed_quoted_last_field_with_line_breaks_at_the_end_is_fine(tmp_path, products_feed):
    """The end-of-file check refuses only an open quote: a closed multi-line value is data."""
    for ending in ("", "\n", "\r\n", "\n\n"):
        path = write_csv(tmp_path, "products/end.csv", f'sku,name\nS1,"Tent\nfor two"{ending}')
        assert _rows(path, products_feed)[-1]["name"] == "Tent\nfor two"


def test_invalid_utf8_in_a_row_of_the_wrong_width_names_the_byte(landing, products_feed):
    """Arrow cannot hand such a row over as text; the file is still refused with its byte."""
    path = landing / "products" / "short.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"sku,name,unit_price\nA,plain,1\nB,Caf\xe9\n")
    with pytest.raises(FileReadError, match=r"not valid utf-8(-sig)? text \(byte 0xe9"):
        _rows(path, products_feed)


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_a_feed_in_another_encoding_is_read_as_that_encoding(landing, encoding):
    """latin-1 and cp1252 feeds are transcoded strictly: text comes back right, and a byte
    cp1252 has no character for rejects the file naming it."""
    feed = FileFeed(
        name="legacy",
        description="x",
        folder="legacy",
        contract="legacy",
        csv=CsvOptions(encoding=encoding),
    )
    path = landing / "legacy" / "old.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes('sku,name\nA,Crème brûlée\nB,"Gâteau,\nnoix"\n'.encode(encoding))
    assert [r["name"] for r in _rows(path, feed)] == ["Crème brûlée", "Gâteau,\nnoix"]
    if encoding == "cp1252":
        path.write_bytes(b"sku,name\n" + b"A,x\n" * 20_000 + b"B,\x81\n")
        with pytest.raises(FileReadError, match=r"not valid cp1252 text \(byte 0x81"):
            _rows(path, feed)
