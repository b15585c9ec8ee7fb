"""Review findings in the Feed plugin API: sharding keeps one symbol's channels together
(as Feed.plan's docstring promises) and impossible Limits are refused when declared."""

from __future__ import annotations

from typing import ClassVar

import pytest
from test_actor import TinyFeed

from streamkit.config import FeedConfig
from streamkit.feed import Limits


class ThreeChannelFeed(TinyFeed):
    channels: ClassVar[frozenset[str]] = frozenset({"trades", "bbo", "l2_book"})
    limits: ClassVar[Limits] = Limits(max_streams_per_connection=5)


def test_plan_never_splits_a_symbols_channels_when_they_fit_on_one_connection() -> None:
    # 3 symbols x 3 channels with 5 streams per connection: the plan was [5, 4], putting
    # ETH-USD's trades on connection 0 and its bbo and book on connection 1.
    cfg = FeedConfig(
        exchange="tiny",
        symbols=["BTC-USD", "ETH-USD", "SOL-USD"],
        channels=["trades", "bbo", "l2_book"],
    )
    plans = ThreeChannelFeed(cfg).plan()
    assert all(len(p.streams) <= 5 for p in plans)
    homes: dict[str, set[int]] = {}
    for plan in plans:
        for stream in plan.streams:
            homes.setdefault(stream.symbol, set()).add(plan.index)
    assert all(len(conns) == 1 for conns in homes.values()), homes
    assert sorted(s.name for p in plans for s in p.streams) == sorted(
        ThreeChannelFeed(cfg).stream_name(c, s) for s in cfg.symbols for c in cfg.channels
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_streams_per_connection": 0},  # plan(): range() step 0
        {"max_streams_per_message": 0},
        {"max_messages_per_second": 0},  # Pacer: ZeroDivisionError on every connect
        {"max_connects": 0},  # ConnectLimiter: IndexError, every connect
        {"connect_window": -1},
        {"max_connection_age": 0},
    ],
)
def test_impossible_limits_are_refused_where_the_plugin_declares_them(
    kwargs: dict[str, float],
) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Limits(**kwargs)  # type: ignore[arg-type]
