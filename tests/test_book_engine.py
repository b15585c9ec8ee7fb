"""The shared book engine's price interner: shared Decimal objects, exact values, bounded."""

from __future__ import annotations

import random
from decimal import Decimal, InvalidOperation

import pytest

from streamkit.book import LevelTexts, OrderBook, PriceInterner


def test_the_same_string_gives_the_same_decimal_object() -> None:
    intern = PriceInterner()
    first = intern([("30000.50", Decimal("1.5")), ("29999.00", Decimal(0))])
    second = intern([("30000.50", Decimal("2")), ("30001.00", Decimal("3"))])
    assert first == [(Decimal("30000.50"), Decimal("1.5")), (Decimal("29999.00"), Decimal(0))]
    assert first[0][0] is second[0][0]  # shared: its cached hash is reused
    assert second[0][1] == Decimal("2")  # sizes pass through untouched
    assert len(intern) == 3


def test_interned_prices_keep_the_venues_digits() -> None:
    # checksum functions format prices back to the venue's strings
    intern = PriceInterner()
    [(price, _)] = intern([("0.00000062", Decimal(1))])
    assert format(price, "f") == "0.00000062"
    [(other, _)] = intern([("0.10", Decimal(1))])
    assert format(other, "f") == "0.10"


def test_different_spellings_of_one_price_are_one_book_level() -> None:
    intern = PriceInterner()
    book = OrderBook()
    book.apply_snapshot(intern([("0.10", Decimal(1))]), [], seq=1)
    book.apply_delta(intern([("0.1", Decimal(2))]), [], seq=2)
    assert dict(book.bids) == {Decimal("0.1"): Decimal(2)}


def test_the_cache_is_bounded_and_values_stay_right_after_it_starts_over() -> None:
    intern = PriceInterner(max_size=8)
    for i in range(100):
        [(price, _)] = intern([(f"{i}.25", Decimal(1))])
        assert price == Decimal(f"{i}.25")
        assert len(intern) <= 8


def test_a_book_built_from_interned_prices_equals_one_built_from_fresh_decimals() -> None:
    rng = random.Random(3)
    intern = PriceInterner(max_size=50)  # small: it starts over several times
    interned, fresh = OrderBook(), OrderBook()
    for seq in range(2_000):
        levels = [
            (f"{100 + rng.randint(0, 80) / 4:.2f}", Decimal(rng.choice(["0", "1.5", "2"])))
            for _ in range(10)
        ]
        interned.apply_delta(intern(levels), [], seq)
        fresh.apply_delta([(Decimal(p), s) for p, s in levels], [], seq)
    assert dict(interned.bids) == dict(fresh.bids)
    assert interned.bids.prices == fresh.bids.prices


def test_a_malformed_price_raises() -> None:
    with pytest.raises(InvalidOperation):
        PriceInterner()([("12,5", Decimal(1))])


def test_level_texts_render_each_level_object_once() -> None:
    rendered: list[Decimal] = []

    def render(value: Decimal) -> str:
        rendered.append(value)
        return format(value, "f")

    texts = LevelTexts(render, render, ":")
    price, size = Decimal("1.0"), Decimal("2.50")
    side = {price: size}
    assert texts.texts(side, [price]) == ["1.0:2.50"]
    assert texts.texts(side, [price]) == ["1.0:2.50"]
    assert rendered == [price, size]  # the second call reused the text
    side[price] = Decimal("2.5")  # equal value, new object: its own digits must show
    assert texts.texts(side, [price]) == ["1.0:2.5"]
    assert rendered[2:] == [Decimal("2.5")]  # the size only: the price object is unchanged
    equal_price = Decimal("1.00")  # == price, another object with other digits
    assert texts.texts({equal_price: size}, [equal_price]) == ["1.00:2.50"]
    texts.clear()
    assert len(texts) == 0
