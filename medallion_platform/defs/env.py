"""Connection variables, as runs and sensors read them.

Runs take their connections as resources whose fields are ``EnvVar``s: a run without its
variables should fail, and says which. A sensor that required the same resources would fail
*before its code runs* whenever a variable is unset (an error with a traceback on every tick,
for example ``dagster dev`` started before ``medallion services up``), so sensors read the
variables themselves at each tick and skip, naming them, while one is unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import EnvVar

DEMO_ENV_COMMAND = 'eval "$(medallion services up)"'
"""Starts the demo's local services and exports the variables the packaged config names."""

EnvFields = Mapping[str, str | None]
"""Resource field → the environment variable that holds its value (None: not configured)."""


def env_var_fields(fields: EnvFields) -> dict[str, EnvVar]:
    """The resource's field values for the Definitions: read by Dagster when a run starts."""
    return {field: EnvVar(name) for field, name in fields.items() if name}


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


def unset_reason(what: str, unset: list[str]) -> str:
    """A skip reason that names the unset variables and how to set them."""
    names = ", ".join(unset[:-1]) + f" and {unset[-1]}" if len(unset) > 1 else unset[0]
    verb = "is" if len(unset) == 1 else "are"
    return (
        f"{what}: {names} {verb} not set. For the demo's local services run "
        f"`{DEMO_ENV_COMMAND}` in the shell that starts Dagster (or use `medallion dev`); "
        "otherwise export them with the real system's values, then restart Dagster"
    )
