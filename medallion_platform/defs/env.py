"""Connection variables, as runs and sensors read them.

A connection's resource (``EnvResource``) holds the *names* of the variables that carry its
address and secrets, never a value, and reads them when a step opens the connection: a run
without one fails there with one line naming the variables and the command that sets them.
Dagster's ``EnvVar`` fields would be resolved when the run is created instead, so a single
unset variable made every launch of a job that includes the resource (``dg launch``,
``dagster job execute``) die with a config error and a stack trace per variable, before any
step ran. A sensor that required the same resources would fail before its code runs, so
sensors read the variables themselves at each tick and skip, naming them, while one is unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import ConfigurableResource, Failure
from pydantic import Field

DEMO_ENV_COMMAND = 'eval "$(medallion services up)"'
"""Starts the demo's local services and exports the variables the packaged config names."""

EnvFields = Mapping[str, str | None]
"""Resource field → the environment variable that holds its value (None: not configured)."""


def env_names(fields: EnvFields) -> dict[str, str]:
    """An ``EnvResource``'s ``env``: the fields that are configured, and their variables."""
    return {field: name for field, name in fields.items() if name}


def read_env_fields(
    fields: EnvFields, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The resource's field values read now, and the names of the variables that are unset
    (or empty)."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    unset: list[str] = []
    for field, name in fields.items():
        if not name:
            continue
        if env.get(name):
            values[field] = env[name]
        else:
            unset.append(name)
    return values, unset


def _not_set(what: str, unset: list[str]) -> str:
    names = ", ".join(unset[:-1]) + f" and {unset[-1]}" if len(unset) > 1 else unset[0]
    return f"{what}: {names} {'is' if len(unset) == 1 else 'are'} not set"


def unset_reason(what: str, unset: list[str]) -> str:
    """A skip reason that names the unset variables and how to set them."""
    return (
        f"{_not_set(what, unset)}. For the demo's local services run "
        f"`{DEMO_ENV_COMMAND}` in the shell that starts Dagster (or use `medallion dev`); "
        "otherwise export them with the real system's values, then restart Dagster"
    )


def missing_variables(what: str, unset: list[str]) -> str:
    """Why a run failed: one line naming the unset variables and the command that sets them."""
    return (
        f"{_not_set(what, unset)}. For the demo's local services run `{DEMO_ENV_COMMAND}` "
        "first, in the shell that launches the run (or starts Dagster); otherwise export "
        "them with the real system's values"
    )


class EnvResource(ConfigurableResource):
    """A connection whose values are environment variables, read when a step uses it.

    ``env`` maps a field to the variable that holds its value; a field given directly (as
    tests do) is used as is. Values exist only in the step's memory: not in the definitions,
    the run config or the UI."""

    env: dict[str, str] = Field(
        default_factory=dict,
        description="Field -> the environment variable holding its value, read when a step "
        "opens the connection (secrets never enter run config).",
    )

    def values(self, what: str) -> dict[str, Any]:
        """Every field's value now. A field named in ``env`` and not given comes from its
        variable; an unset (or empty) one fails the step with ``missing_variables``."""
        values = {name: getattr(self, name) for name in type(self).model_fields if name != "env"}
        fields = {field: name for field, name in self.env.items() if values.get(field) is None}
        return values | require_env(what, fields)


def require_env(what: str, fields: EnvFields) -> dict[str, str]:
    """The fields' values from their variables now; an unset (or empty) one fails the step
    with one line naming it (``missing_variables``)."""
    found, unset = read_env_fields(fields)
    if unset:
        raise Failure(
            description=missing_variables(what, unset),
            metadata={"unset_variables": ", ".join(unset)},
            allow_retries=False,
        )
    return found
