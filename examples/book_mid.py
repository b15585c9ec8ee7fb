"""Maintain an order book from ``book`` records and print its mid price.

    python examples/book_mid.py --duration 10 [--symbol NKN-USDT] [--gap-after 3]

Runs the offline demo (examples/demo.yaml: the built-in Binance simulator, no network) and
keeps a local copy of one symbol's verified book with the shared
:class:`streamkit.book.OrderBook`, the way any consumer of ``book`` records should:

- a record with ``snapshot: true`` replaces the book: it is whole again ("book reset");
- a delta is applied (size 0 deletes a level) while the book is whole;
- a ``gap``/``checksum_mismatch``/``resync`` status for the symbol, or a ``disconnected``/
  ``reconnecting``/``stale`` status of its connection, means updates were missed: the book is
  not used ("paused") until the next snapshot.

``--gap-after S`` asks the simulator to withhold one depth update after S seconds, so you can
watch streamkit detect the gap, resync the book and this program pause and reset.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path

import msgspec

from streamkit import App, Book, Status, StatusEvent, load_config
from streamkit.book import OrderBook
from streamkit.logs import configure_logging
from streamkit.simulator import Fault

DEMO = Path(__file__).resolve().parent / "demo.yaml"

PAUSE_EVENTS = frozenset(
    {
        StatusEvent.GAP,
        StatusEvent.CHECKSUM_MISMATCH,
        StatusEvent.RESYNC,
        StatusEvent.DISCONNECTED,
        StatusEvent.RECONNECTING,
        StatusEvent.STALE,
    }
)


class MidPrinter:
    """A local book of one symbol and its mid price."""

    def __init__(self) -> None:
        self.book = OrderBook()
        self.whole = False
        self.last_mid: Decimal | None = None

    def on_book(self, record: Book) -> None:
        if record.snapshot:
            self.book.apply_snapshot(record.bids, record.asks, record.seq)
            self.whole = True
            print(f"book reset: {len(self.book)} levels, seq={record.seq}", flush=True)
        elif self.whole:
            self.book.apply_delta(record.bids, record.asks, record.seq)
        else:
            return  # not whole: a delta on a book that missed updates would be wrong
        self.print_mid()

    def on_status(self, status: Status) -> None:
        if status.event in PAUSE_EVENTS and self.whole:
            self.whole = False
            self.last_mid = None
            print(f"paused: {status.event} {status.detail}".rstrip(), flush=True)

    def print_mid(self) -> None:
        bid, ask = self.book.best_bid(), self.book.best_ask()
        if bid is None or ask is None:
            return
        mid = (bid[0] + ask[0]) / 2
        if mid != self.last_mid:
            self.last_mid = mid
            print(f"mid {mid} (bid {bid[0]} x {bid[1]}, ask {ask[0]} x {ask[1]})", flush=True)


async def book_mid(
    config_path: Path, symbol: str, duration: float, gap_after: float | None
) -> MidPrinter:
    config = load_config(config_path)
    config = msgspec.structs.replace(config, sinks=[])  # this program is the consumer
    printer = MidPrinter()
    async with App(config) as app, app.stream((Book, Status), symbol=symbol) as records:
        if gap_after is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(gap_after, app.simulator.inject, Fault(kind="gap"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                async for record in records:
                    if isinstance(record, Book):
                        printer.on_book(record)
                    elif isinstance(record, Status):
                        printer.on_status(record)
    return printer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    parser.add_argument("--symbol", default="NKN-USDT")
    parser.add_argument("--config", type=Path, default=DEMO, help="YAML config")
    parser.add_argument(
        "--gap-after", type=float, help="inject a sequence gap after this many seconds"
    )
    args = parser.parse_args()
    configure_logging("warning")  # stderr; keep the output to what this program prints
    printer = asyncio.run(book_mid(args.config, args.symbol, args.duration, args.gap_after))
    print(f"done: book {'whole' if printer.whole else 'not whole'}, mid {printer.last_mid}")


if __name__ == "__main__":
    main()
