"""Print typed trades from the offline demo: the first consumer to copy.

    python examples/print_trades.py --duration 10

Starts the App from examples/demo.yaml (the built-in Binance simulator on 127.0.0.1, no
network) without the demo's own sinks, subscribes to trades and prints each one as it
arrives, then stops cleanly after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

import msgspec

from streamkit import App, Trade, load_config
from streamkit.logs import configure_logging

DEMO = Path(__file__).resolve().parent / "demo.yaml"


async def print_trades(config_path: Path, duration: float) -> int:
    """Print trades for ``duration`` seconds; returns how many were printed."""
    config = load_config(config_path)
    # This program is the consumer: drop the demo's console and jsonl sinks.
    config = msgspec.structs.replace(config, sinks=[])
    count = 0
    async with App(config) as app, app.stream(Trade) as trades:
        # Stop after `duration`; the App then shuts down in order (feeds, bus, consumers).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                async for trade in trades:
                    assert isinstance(trade, Trade)
                    count += 1
                    print(
                        f"trade {trade.exchange} {trade.symbol} {trade.side} "
                        f"{trade.size} @ {trade.price} id={trade.id}",
                        flush=True,
                    )
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    parser.add_argument("--config", type=Path, default=DEMO, help="YAML config")
    args = parser.parse_args()
    configure_logging("warning")  # stderr; keep the output to what this program prints
    count = asyncio.run(print_trades(args.config, args.duration))
    print(f"done: {count} trades")


if __name__ == "__main__":
    main()
