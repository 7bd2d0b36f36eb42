"""Reading the declaration files (``config/*.yaml``): the one YAML loader and ``ConfigError``.

A leaf: it imports nothing of the package, so every spec module (contracts, SQL models, the
churn model, reverse-ETL syncs) can raise the same error and read its file the same way, and
``medallion_platform.config``, which assembles them all, imports them without a cycle.
Every error names the file, and the entry when one is at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent / "config"  # the packaged demo declarations
M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file and the entry."""


def read_mapping(path: Path) -> dict[str, Any]:
    """The YAML document of ``path``, which must be a mapping (an empty file is ``{}``)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read as YAML: {exc}") from exc
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping, not {type(document).__name__}")
    return document


def load_entries(
    path: Path, key: str, model: type[M], context: dict[str, object] | None = None
) -> list[M]:
    """The list under ``key`` in ``path``, each entry validated as ``model`` (with the
    validation ``context``); names are unique. Errors name the file and the entry."""
    document = read_mapping(path)
    raws = document.get(key) or []
    if not isinstance(raws, list):
        raise ConfigError(f"{path}: expected a mapping with a list under {key!r}")
    items = []
    for i, raw in enumerate(raws):
        name = raw.get("name", f"#{i + 1}") if isinstance(raw, dict) else f"#{i + 1}"
        try:
            items.append(model.model_validate(raw, context=context))
        except ValueError as exc:
            raise ConfigError(f"{path}: {key} entry {name!r} is invalid: {describe(exc)}") from None
    names = [getattr(item, "name", None) for item in items]
    duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate {key} names {duplicates}")
    return items


def load_section(path: Path, key: str, model: type[M]) -> M:
    """The mapping under ``key`` in ``path``, validated as ``model``."""
    document = read_mapping(path)
    if not isinstance(document.get(key), dict):
        raise ConfigError(f"{path}: expected a mapping with a {key!r} section")
    try:
        return model.model_validate(document[key])
    except ValueError as exc:
        raise ConfigError(f"{path}: {key} is invalid: {describe(exc)}") from None


def describe(exc: ValueError) -> str:
    """Pydantic's errors as ``field.path: message``, without its URLs and input dumps."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    lines = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)
