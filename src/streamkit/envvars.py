"""``${NAME}`` references to environment variables in config values: how secrets get in.

A config must never hold an API key or a password in clear text; it names the environment
variable that holds it instead::

    transport:
      headers: {X-MBX-APIKEY: "${BINANCE_API_KEY}"}
    sinks:
      - type: nats
        url: "${NATS_URL:-nats://127.0.0.1:4222}"

Only a *whole* string value is expanded: ``"${NAME}"`` (the variable must be set) or
``"${NAME:-default}"`` (the default when it is unset or empty, as in POSIX shells). Anything
else, including a ``$`` inside a longer string, is kept literally, so a value can never be
half-expanded by accident, and mapping keys are never expanded. An unset variable without a
default is a :class:`~streamkit.errors.ConfigError` naming the key path and the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final

from streamkit.errors import ConfigError

__all__ = ["expand_env"]

_REFERENCE: Final = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?\}", re.S
)


def expand_env(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A copy of parsed YAML ``data`` with every whole-value ``${NAME}`` /
    ``${NAME:-default}`` string replaced by the variable's value. Raises ConfigError listing
    every unset variable (with its key path) at once."""
    env = os.environ if environ is None else environ
    problems: list[tuple[str, str]] = []
    try:
        result = _expand(data, env, "", problems)
    except RecursionError:
        raise ConfigError([("", "the config is nested too deeply")]) from None
    if problems:
        raise ConfigError(problems)
    return result


def _expand(value: Any, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        match = _REFERENCE.fullmatch(value)
        if match is None:
            return value
        name, default = match.group("name"), match.group("default")
        found = env.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                problems.append((path, f"environment variable {name} is not set"))
                return value
            return default
        return found
    if isinstance(value, dict):
        return {
            key: _expand(item, env, f"{path}.{key}" if path else str(key), problems)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_expand(item, env, f"{path}[{i}]", problems) for i, item in enumerate(value)]
    return value
