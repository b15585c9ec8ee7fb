"""Feed plugin discovery through the ``streamkit.feeds`` entry-point group.

First-party plugins (``plugins/`` in the repository) register exactly like third-party ones,
so there is one loading path to trust. Nothing is imported from arbitrary paths.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from streamkit.errors import PluginError
from streamkit.feed import Feed

GROUP = "streamkit.feeds"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Ids of the installed feed plugins, sorted."""
    return sorted(_entry_points())


def load(exchange: str) -> type[Feed]:
    """The Feed class registered under ``exchange``. Raises :class:`PluginError`."""
    ep = _entry_points().get(exchange)
    if ep is None:
        known = ", ".join(available()) or "none installed"
        raise PluginError(f"no feed plugin {exchange!r} (installed: {known})")
    try:
        cls = ep.load()
    except Exception as exc:
        raise PluginError(f"feed plugin {exchange!r} ({ep.value}) failed to import: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Feed)):
        raise PluginError(f"entry point {exchange!r} ({ep.value}) is not a streamkit Feed subclass")
    if cls.id != exchange:
        raise PluginError(f"entry point {exchange!r} loads a feed whose id is {cls.id!r}")
    return cls
