"""The landing zone on disk: listing new files cheaply, and moving them aside after a load.

Listing reads only directory entries and ``stat`` results, never file contents, so the sensor
that calls it stays cheap however large the files are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from pydantic import BaseModel

from medallion_platform.connectors.files.spec import FileFeed

ARCHIVE_DIR = "_archive"
REJECTED_DIR = "_rejected"


class LandingFile(BaseModel):
    """A file seen in the landing zone, identified without reading it."""

    feed: str
    relpath: str  # relative to the landing root, posix separators
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> str:
        return f"{self.relpath}|{self.size}|{self.mtime_ns}"


def feed_dir(landing_root: Path, feed: FileFeed) -> Path:
    return landing_root / feed.folder


COMPRESSED_SUFFIXES = (".gz", ".zst")


def feed_globs(feed: FileFeed) -> list[str]:
    """The feed's glob, and the same names compressed (``*.csv`` takes ``x.csv.gz`` too)."""
    if feed.glob.endswith(COMPRESSED_SUFFIXES):
        return [feed.glob]
    return [feed.glob, *(feed.glob + suffix for suffix in COMPRESSED_SUFFIXES)]


def _hidden(rel: Path) -> bool:
    """Names starting with '_' or '.' are the platform's (_archive) or in-flight uploads."""
    return any(part.startswith(("_", ".")) for part in rel.parts)


def _matches(folder: Path, feed: FileFeed) -> list[Path]:
    return sorted({path for pattern in feed_globs(feed) for path in folder.glob(pattern)})


def list_landing_files(landing_root: Path, feed: FileFeed) -> list[LandingFile]:
    """Files of ``feed`` waiting in the landing zone, oldest first (stat only, no reads).

    Arrival order matters: without ``latest_by``, the later-arriving version of a key wins,
    so a correction must sort after the file it corrects whatever its name.
    """
    folder = feed_dir(landing_root, feed)
    if not folder.is_dir():
        return []
    found = []
    for path in _matches(folder, feed):
        rel = path.relative_to(folder)
        if _hidden(rel):
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:  # moved away between listing and stat
            continue
        if path.is_dir():
            continue
        found.append(
            LandingFile(
                feed=feed.name,
                relpath=path.relative_to(landing_root).as_posix(),
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
            )
        )
    return sorted(found, key=lambda f: (f.mtime_ns, f.relpath))


def unmatched_files(landing_root: Path, feeds: list[FileFeed]) -> list[str]:
    """Files waiting in a feed's folder that no feed's glob takes (a ``.xlsx`` beside the
    ``*.csv``): listed so they are reported, never loaded and never silently left."""
    by_folder: dict[str, list[FileFeed]] = {}
    for feed in feeds:
        by_folder.setdefault(feed.folder, []).append(feed)
    unmatched = []
    for name, members in by_folder.items():
        folder = landing_root / name
        if not folder.is_dir():
            continue
        taken = {path for feed in members for path in _matches(folder, feed)}
        nested = {Path(feed.folder) for feed in feeds if feed.folder != name}
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path in taken or _hidden(rel) or not path.is_file():
                continue
            if any(path.relative_to(landing_root).is_relative_to(n) for n in nested):
                continue  # another feed's folder inside this one
            unmatched.append(path.relative_to(landing_root).as_posix())
    return unmatched


def outside_landing_reason(landing_root: Path, feed: FileFeed, path: Path) -> str | None:
    """Why ``path`` must be refused (it leaves the feed's folder), or None if it is safe."""
    folder = feed_dir(landing_root, feed).resolve()
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        return f"{path.name}: broken or looping symlink"
    if not resolved.is_relative_to(folder):
        kind = "symlink points" if path.is_symlink() else "path points"
        return f"{kind} outside the landing zone folder {feed.folder!r}: {resolved}"
    if not resolved.is_file():
        return "not a regular file"
    return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def archive_path(landing_root: Path, feed: FileFeed, batch_id: int, relpath: str) -> Path:
    return landing_root / ARCHIVE_DIR / feed.name / f"batch_{batch_id:08d}" / Path(relpath).name


def rejected_path(landing_root: Path, feed: FileFeed, batch_id: int, relpath: str) -> Path:
    return landing_root / REJECTED_DIR / feed.name / f"batch_{batch_id:08d}" / Path(relpath).name


def move_aside(source: Path, target: Path) -> Path:
    """Move a landed file (or the symlink itself, never its target) out of the feed folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = target, 1
    while os.path.lexists(candidate):  # never overwrite an earlier copy
        n += 1
        candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
    shutil.move(str(source), str(candidate))
    return candidate
