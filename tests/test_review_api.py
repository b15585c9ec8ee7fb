"""Review finding: the top-level package exports what a user needs to write a consumer and
handle its errors, without reaching into submodules."""

from __future__ import annotations

from importlib import resources

import streamkit


def test_errors_a_user_must_catch_are_exported() -> None:
    # load_config raises ConfigError; iterating a subscription raises SlowConsumerError (cut
    # off) and get() SubscriptionClosed; App.run raises EscalationError. None of them was
    # importable from `streamkit`.
    from streamkit.channel import SubscriptionClosed
    from streamkit.errors import (
        ConfigError,
        EscalationError,
        PluginError,
        SlowConsumerError,
        StreamkitError,
        TransportError,
    )

    for cls in (
        ConfigError,
        EscalationError,
        PluginError,
        SlowConsumerError,
        StreamkitError,
        SubscriptionClosed,
        TransportError,
    ):
        assert getattr(streamkit, cls.__name__) is cls
        assert cls.__name__ in streamkit.__all__


def test_every_record_type_is_exported() -> None:
    from streamkit.model import RECORD_TYPES

    for cls in RECORD_TYPES.values():
        assert getattr(streamkit, cls.__name__) is cls, cls
        assert cls.__name__ in streamkit.__all__


def test_all_names_exist_and_py_typed_is_shipped() -> None:
    assert all(hasattr(streamkit, name) for name in streamkit.__all__)
    assert isinstance(streamkit.__version__, str) and streamkit.__version__
    assert (resources.files("streamkit") / "py.typed").is_file()
