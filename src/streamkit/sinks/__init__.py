"""Sinks: consumers run by streamkit itself, each on its own subscription and task."""

from streamkit.sinks.base import Sink, build_sink

__all__ = ["Sink", "build_sink"]
