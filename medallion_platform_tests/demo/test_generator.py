"""The demo generator is the platform's test fixture, so its promises are checked on disk."""

from __future__ import annotations

import csv
import hashlib
from datetime import date
from pathlib import Path

import pytest

from medallion_platform.devkit.demo.generator import (
    AD_SPEND_HEADER,
    CHANNELS,
    DRIFTED_AD_SPEND_HEADER,
    DRIFTED_PRODUCT_HEADER,
    PRODUCT_HEADER,
    DemoFile,
    DemoManifest,
    generate_landing_files,
)

START = date(2026, 10, 1)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def _by_name(manifest: DemoManifest) -> dict[str, DemoFile]:
    return {f.path.name: f for f in manifest.files}


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoManifest]:
    root = tmp_path_factory.mktemp("landing")
    return root, generate_landing_files(root)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    generate_landing_files(tmp_path / "a", scale=0.5, seed=7)
    generate_landing_files(tmp_path / "b", scale=0.5, seed=7)
    first, second = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert first and first == second


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    generate_landing_files(tmp_path / "a", scale=0.5, seed=7)
    generate_landing_files(tmp_path / "b", scale=0.5, seed=8)
    first, second = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert first.keys() == second.keys()
    full = "products/catalog_full_2026-10-01.csv"
    assert first[full] != second[full]
    assert (
        first["ad_spend/google_ads_2026-10-01.csv"] != second["ad_spend/google_ads_2026-10-01.csv"]
    )


def test_manifest_matches_files_on_disk(landing: tuple[Path, DemoManifest]) -> None:
    root, manifest = landing
    on_disk = {p for p in root.rglob("*") if p.is_file()}
    assert {f.path for f in manifest.files} == on_disk
    assert all(f.path.is_absolute() for f in manifest.files)
    for f in manifest.files:
        assert f.path.parent.name == f.feed
        assert f.note and "\n" not in f.note
        if f.kind == "unreadable":
            assert f.rows == 0
        else:
            assert f.rows == len(_read(f.path)) - 1, f.path.name
    ad_rows = sum(f.rows for f in manifest.files if f.feed == "ad_spend")
    assert manifest.ad_spend_rows == ad_rows
    assert manifest.malformed_rows == 8 + 7


def test_expected_files_at_scale_one(landing: tuple[Path, DemoManifest]) -> None:
    _, manifest = landing
    files = _by_name(manifest)
    products = {f.path.name for f in manifest.files if f.feed == "products"}
    assert products == {
        "catalog_full_2026-10-01.csv",
        "catalog_delta_2026-10-08.csv",
        "catalog_delta_2026-10-08 (copy).csv",
        "catalog_delta_2026-10-15.csv",
        "catalog_empty.csv",
        "catalog_images.csv",
        "catalog_latin1.csv",
        "catalog_no_sku.csv",
    }
    # 30 days x 4 channels, plus the re-send and the correction.
    assert sum(1 for f in manifest.files if f.feed == "ad_spend") == 30 * 4 + 2
    assert files["catalog_full_2026-10-01.csv"].rows == 2000
    assert manifest.products == 2000 + 40
    assert files["tiktok_ads_2026-10-10.csv"].kind == "unreadable"
    assert files["tiktok_ads_2026-10-06_corrected.csv"].kind == "good"


def test_full_catalog_has_every_sku_once_in_contract_format(
    landing: tuple[Path, DemoManifest],
) -> None:
    root, _ = landing
    header, *rows = _read(root / "products" / "catalog_full_2026-10-01.csv")
    assert tuple(header) == PRODUCT_HEADER
    skus = [r[0] for r in rows]
    assert skus == [f"SKU-{i:06d}" for i in range(1, 2001)]
    categories = {
        "tents",
        "sleeping_bags",
        "backpacks",
        "footwear",
        "apparel",
        "climbing",
        "camp_kitchen",
        "accessories",
    }
    for _sku, _name, category, _brand, price, currency, weight, active, updated_at in rows:
        assert category in categories
        assert float(price) > 0 and len(price.split(".")[1]) == 2
        assert float(weight) > 0 and len(weight.split(".")[1]) == 2
        assert currency in {"USD", "EUR"}
        assert active in {"true", "false"}
        assert len(updated_at) == 19 and updated_at[10] == "T"
    assert {r[5] for r in rows} == {"USD", "EUR"}


def test_delta_holds_the_promised_surprises(landing: tuple[Path, DemoManifest]) -> None:
    root, _ = landing
    header, *rows = _read(root / "products" / "catalog_delta_2026-10-08.csv")
    assert tuple(header) == PRODUCT_HEADER
    assert sorted(len(r) for r in rows if len(r) != 9) == [8, 10]
    well_formed = [r for r in rows if len(r) == 9]
    assert "N/A" in {r[4] for r in well_formed}
    assert any("," in r[4] for r in well_formed)
    assert any(r[4].startswith("-") for r in well_formed)
    assert "kayaks" in {r[2] for r in well_formed}
    assert "" in {r[0] for r in well_formed}
    assert "not-a-date" in {r[8] for r in well_formed}

    full = _read(root / "products" / "catalog_full_2026-10-01.csv")[1:]
    known = {r[0] for r in full}
    new = {r[0] for r in well_formed if r[0] and r[0] not in known}
    assert len(new) == 40

    seen: dict[str, list[list[str]]] = {}
    for r in well_formed:
        if r[0]:
            seen.setdefault(r[0], []).append(r)
    twice = {sku: versions for sku, versions in seen.items() if len(versions) == 2}
    assert len(twice) == 1
    (versions,) = twice.values()
    assert versions[0][8] > versions[1][8], "newer version comes first in the file"
    assert versions[0][4] != versions[1][4]


def test_duplicate_copies_are_byte_identical(landing: tuple[Path, DemoManifest]) -> None:
    root, manifest = landing
    duplicates = [f for f in manifest.files if f.kind == "duplicate_content"]
    assert {f.path.name for f in duplicates} == {
        "catalog_delta_2026-10-08 (copy).csv",
        "google_ads_2026-10-03_resend.csv",
    }
    products = root / "products"
    assert (products / "catalog_delta_2026-10-08 (copy).csv").read_bytes() == (
        products / "catalog_delta_2026-10-08.csv"
    ).read_bytes()
    ads = root / "ad_spend"
    assert (ads / "google_ads_2026-10-03_resend.csv").read_bytes() == (
        ads / "google_ads_2026-10-03.csv"
    ).read_bytes()


def test_correction_changes_spend_but_not_keys(landing: tuple[Path, DemoManifest]) -> None:
    root, _ = landing
    original = _read(root / "ad_spend" / "tiktok_ads_2026-10-06.csv")[1:]
    corrected = _read(root / "ad_spend" / "tiktok_ads_2026-10-06_corrected.csv")[1:]
    assert [r[:3] for r in original] == [r[:3] for r in corrected]
    assert all(a[3] != b[3] for a, b in zip(original, corrected, strict=True))


def test_drifted_headers_are_exact(landing: tuple[Path, DemoManifest]) -> None:
    root, manifest = landing
    drifted = [f for f in manifest.files if f.kind == "drifted_header"]
    assert DRIFTED_PRODUCT_HEADER == (
        "SKU",
        "Product Name",
        "Category",
        "Brand",
        "Price",
        "Currency",
        "Weight (kg)",
        "Active",
        "Updated At",
        "Season",
    )
    assert DRIFTED_AD_SPEND_HEADER == (
        "date",
        "channel",
        "campaign",
        "cost",
        "impressions",
        "clicks",
        "conversions",
    )
    product_drift = root / "products" / "catalog_delta_2026-10-15.csv"
    header, *rows = _read(product_drift)
    assert tuple(header) == DRIFTED_PRODUCT_HEADER
    assert {r[9] for r in rows} <= {"all-season", "winter", "summer"}
    assert len(rows) == 100

    meta_drift = {f"meta_ads_2026-10-{d}.csv" for d in range(21, 31)}
    assert {f.path.name for f in drifted} == {product_drift.name} | meta_drift
    for name in meta_drift:
        assert tuple(_read(root / "ad_spend" / name)[0]) == DRIFTED_AD_SPEND_HEADER
    assert tuple(_read(root / "ad_spend" / "meta_ads_2026-10-20.csv")[0]) == AD_SPEND_HEADER


def test_unreadable_files_fail_as_claimed(landing: tuple[Path, DemoManifest]) -> None:
    root, manifest = landing
    unreadable = {f.path.name for f in manifest.files if f.kind == "unreadable"}
    assert unreadable == {
        "catalog_empty.csv",
        "catalog_images.csv",
        "catalog_latin1.csv",
        "catalog_no_sku.csv",
        "tiktok_ads_2026-10-10.csv",
    }
    products = root / "products"
    assert (products / "catalog_empty.csv").stat().st_size == 0
    assert (root / "ad_spend" / "tiktok_ads_2026-10-10.csv").stat().st_size == 0

    binary = (products / "catalog_images.csv").read_bytes()
    assert len(binary) == 2048 and b"\x00" in binary

    latin1 = (products / "catalog_latin1.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        latin1.decode("utf-8")
    text = latin1.decode("latin-1")
    assert "é" in text and "ü" in text
    header, *rows = list(csv.reader(text.splitlines()))
    assert tuple(header) == PRODUCT_HEADER and len(rows) == 3

    header, *rows = _read(products / "catalog_no_sku.csv")
    assert "sku" not in header and len(rows) == 3


def test_ad_spend_rows_are_sane(landing: tuple[Path, DemoManifest]) -> None:
    _, manifest = landing
    broken = 0
    for f in manifest.files:
        if f.feed != "ad_spend" or f.kind == "unreadable":
            continue
        header, *rows = _read(f.path)
        assert len(rows) == 10
        for row in rows:
            record = dict(zip(header, row, strict=False))
            spend = record.get("spend", record.get("cost", ""))
            good = (
                len(row) == len(header)
                and record["date"].startswith("2026-10-")
                and record["channel"] in CHANNELS
                and record["campaign"].startswith(record["channel"] + "_")
                and record["impressions"].isdigit()
                and spend.replace(".", "", 1).isdigit()
            )
            if not good or int(record["clicks"]) > int(record["impressions"]):
                broken += 1
                continue
            assert f.path.name.startswith(record["channel"])
            assert record["date"] in f.path.name
            assert len(spend.split(".")[1]) == 2
            impressions, clicks = int(record["impressions"]), int(record["clicks"])
            assert 0.004 <= clicks / impressions <= 0.051
            if record["channel"] == "email":
                assert float(spend) < 50
    assert broken == 7


def test_scale_changes_product_and_campaign_counts(tmp_path: Path) -> None:
    small = generate_landing_files(tmp_path / "small", scale=0.01, days=3)
    larger = generate_landing_files(tmp_path / "larger", scale=0.5, days=3)
    assert small.products == 50 + 1
    assert larger.products == 1000 + 20
    small_full = _by_name(small)["catalog_full_2026-10-01.csv"]
    assert small_full.rows == 50
    assert _by_name(larger)["email_2026-10-01.csv"].rows == 5
    assert _by_name(small)["email_2026-10-01.csv"].rows == 3


def test_rejects_nonsense_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_landing_files(tmp_path, scale=0)
    with pytest.raises(ValueError):
        generate_landing_files(tmp_path, days=0)
