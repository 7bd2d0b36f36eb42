"""The landing zone: cheap listing by ``stat`` only, and the feed folder as a hard boundary."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from medallion_platform.connectors.files import FileFeed, list_landing_files
from medallion_platform.connectors.files.landing import outside_landing_reason
from medallion_platform_tests.conftest import settled, write_csv


@pytest.fixture
def landing(settings) -> Path:
    return settings.landing_dir


def _relpaths(landing: Path, feed: FileFeed) -> list[str]:
    return [f.relpath for f in list_landing_files(landing, feed)]


def _only(landing: Path, feed: FileFeed):
    files = list_landing_files(landing, feed)
    assert len(files) == 1, files
    return files[0]


def _populate(landing: Path) -> None:
    for rel in (
        "products/b.csv",
        "products/a.csv",
        "products/2024/c.csv",
        "products/_staging/d.csv",
        "products/.git/e.csv",
        "products/_partial.csv",
        "products/.hidden.csv",
        "products/notes.txt",
        "products/a.csv.tmp",
        "ad_spend/x.csv",
    ):
        write_csv(landing, rel, "sku\nA\n")
    (landing / "products" / "folder.csv").mkdir()


def test_lists_matching_files_of_the_feed_folder_sorted(landing, products_feed):
    """Only ``*.csv`` directly in the feed folder; no other feeds, no dirs, no '_'/'.' names."""
    _populate(landing)
    files = list_landing_files(landing, products_feed)
    assert sorted(f.relpath for f in files) == ["products/a.csv", "products/b.csv"]
    assert {f.feed for f in files} == {"products"}


def test_files_are_listed_oldest_first_then_by_path(landing, products_feed):
    """Arrival order is mtime order: a correction dropped later comes later, whatever its name."""
    for name, age in (("z_original.csv", 300), ("a_correction.csv", 100), ("m.csv", 100)):
        path = write_csv(landing, f"products/{name}", "sku\n")
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
    assert _relpaths(landing, products_feed) == [
        "products/z_original.csv",
        "products/a_correction.csv",
        "products/m.csv",
    ]


def test_recursive_glob_skips_folders_starting_with_underscore_or_dot(landing, products_feed):
    """With ``**/*.csv`` sub-folders are searched, but ``_staging/`` and ``.git/`` are not."""
    _populate(landing)
    feed = products_feed.model_copy(update={"glob": "**/*.csv"})
    assert sorted(_relpaths(landing, feed)) == [
        "products/2024/c.csv",
        "products/a.csv",
        "products/b.csv",
    ]


def test_missing_feed_folder_lists_nothing(landing, products_feed):
    """A feed whose folder was never created has no files waiting (and no error)."""
    write_csv(landing, "ad_spend/x.csv", "date\n")
    assert list_landing_files(landing, products_feed) == []


def test_size_and_mtime_are_the_stat_results(landing, products_feed):
    """Size and mtime_ns are exactly ``os.stat``'s, for an empty file and a 10 GiB sparse one."""
    write_csv(landing, "products/empty.csv", "")
    huge = landing / "products" / "huge.csv"
    with huge.open("wb") as fh:
        fh.truncate(10 * 1024**3)  # sparse: no blocks written, nothing to read
    files = {f.relpath: f for f in list_landing_files(landing, products_feed)}
    assert set(files) == {"products/empty.csv", "products/huge.csv"}
    for rel, listed in files.items():
        st = os.stat(landing / rel)
        assert (listed.size, listed.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert files["products/huge.csv"].size == 10 * 1024**3
    assert files["products/empty.csv"].size == 0


def test_listing_never_opens_files(landing, products_feed):
    """A FIFO in the feed folder is listed without blocking: opening it would wait forever."""
    folder = landing / "products"
    folder.mkdir()
    fifo = folder / "pipe.csv"
    os.mkfifo(fifo)
    settled(fifo)
    write_csv(landing, "products/real.csv", "sku\nA\n")
    result: dict[str, list] = {}

    def listing() -> None:
        result["files"] = list_landing_files(landing, products_feed)

    worker = threading.Thread(target=listing, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # blocked in open(): give it a writer so the thread can finish
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("list_landing_files opened a landed file (it blocked on a FIFO)")
    assert [f.relpath for f in result["files"]] == ["products/pipe.csv", "products/real.csv"]


def test_fingerprint_changes_when_the_file_changes(landing, products_feed):
    """Same file, same fingerprint; growing, rewriting (new mtime) or renaming changes it."""
    path = write_csv(landing, "products/a.csv", "sku\nA\n")
    first = _only(landing, products_feed).fingerprint
    assert _only(landing, products_feed).fingerprint == first

    path.write_text("sku\nA\nB\n", encoding="utf-8")
    grown = _only(landing, products_feed).fingerprint
    assert grown != first

    st = path.stat()
    path.write_text("sku\nA\nC\n", encoding="utf-8")  # same size, new content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    rewritten = _only(landing, products_feed).fingerprint
    assert rewritten not in (first, grown)

    path.rename(path.with_name("b.csv"))
    renamed = _only(landing, products_feed)
    assert renamed.relpath == "products/b.csv"
    assert renamed.fingerprint not in (first, grown, rewritten)


def test_symlink_to_a_file_outside_the_landing_zone_is_refused(settings, products_feed):
    """A link leaving the landing zone is named as such; so is one into another feed's folder."""
    landing = settings.landing_dir
    secret = settings.home / "secret.csv"
    secret.write_text("sku\nA\n", encoding="utf-8")
    other_feed = write_csv(landing, "ad_spend/x.csv", "date\n")
    folder = landing / "products"
    folder.mkdir()
    cases = {
        "abs.csv": secret,
        "rel.csv": Path("..") / ".." / "secret.csv",
        "feed.csv": other_feed,
    }
    for name, target in cases.items():
        (folder / name).symlink_to(target)
        reason = outside_landing_reason(landing, products_feed, folder / name)
        assert reason is not None, name
        assert "outside the landing zone" in reason, reason
        assert "symlink" in reason, reason
    # the function only judges: nothing was moved or changed
    assert secret.read_text(encoding="utf-8") == "sku\nA\n"
    assert all((folder / name).is_symlink() for name in cases)


def test_symlink_to_a_file_in_the_same_feed_folder_is_allowed(landing, products_feed):
    """Links (absolute or relative) that stay inside the feed folder are safe."""
    real = write_csv(landing, "products/_incoming/real.csv", "sku\nA\n")
    folder = landing / "products"
    (folder / "abs.csv").symlink_to(real)
    (folder / "rel.csv").symlink_to(Path("_incoming") / "real.csv")
    assert outside_landing_reason(landing, products_feed, folder / "abs.csv") is None
    assert outside_landing_reason(landing, products_feed, folder / "rel.csv") is None
    assert outside_landing_reason(landing, products_feed, real) is None


def test_unsafe_entries_inside_the_folder_get_a_reason(landing, products_feed):
    """A broken link and things that are not regular files (dir, FIFO) are refused, with why."""
    folder = landing / "products"
    folder.mkdir()
    (folder / "broken.csv").symlink_to(folder / "gone.csv")
    (folder / "dir.csv").mkdir()
    os.mkfifo(folder / "pipe.csv")
    assert "broken" in outside_landing_reason(landing, products_feed, folder / "broken.csv")
    for name in ("dir.csv", "pipe.csv"):
        reason = outside_landing_reason(landing, products_feed, folder / name)
        assert reason == "not a regular file", (name, reason)
