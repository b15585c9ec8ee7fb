"""A consumer in another process: typed records over NATS JetStream.

    streamkit run examples/nats_demo.yaml            # terminal 1: the producer
    python examples/nats_consumer.py --duration 10   # terminal 2: this consumer

``streamkit.remote.stream`` reads what a ``nats`` sink publishes and hands out the same
msgspec Structs a local ``App.stream`` would, status records included. With ``--durable
NAME`` the consumer lives on the server: stop this program and start it again and it resumes
after the last record it had.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from streamkit import remote
from streamkit.logs import configure_logging
from streamkit.model import BBO, Status, Trade


async def consume(
    url: str, stream: str, subject: str, symbol: str, durable: str | None, duration: float
) -> int:
    """Print trades, best bid/offer and status records for ``duration`` seconds; returns how
    many records were printed."""
    count = 0
    async with remote.stream(
        url,
        (Trade, BBO, Status),
        symbol=symbol,
        stream=stream,
        subject=subject,
        durable=durable,
    ) as records:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                async for record in records:
                    count += 1
                    if isinstance(record, Trade):
                        print(
                            f"trade {record.exchange} {record.symbol} {record.side} "
                            f"{record.size} @ {record.price}",
                            flush=True,
                        )
                    elif isinstance(record, BBO):
                        print(
                            f"bbo {record.exchange} {record.symbol} "
                            f"{record.bid_price} / {record.ask_price}",
                            flush=True,
                        )
                    elif isinstance(record, Status):
                        print(f"status {record.exchange} {record.event} {record.detail}")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--stream", default="STREAMKIT_DEMO", help="the sink's stream.name")
    parser.add_argument(
        "--subject", default="demo.{type}.{exchange}.{symbol}", help="the sink's subject"
    )
    parser.add_argument("--symbol", default="*", help="symbol pattern (BTC-*)")
    parser.add_argument("--durable", help="durable consumer name: resume after a restart")
    args = parser.parse_args()
    configure_logging("warning")
    try:
        count = asyncio.run(
            consume(args.url, args.stream, args.subject, args.symbol, args.durable, args.duration)
        )
    except Exception as exc:  # a plain message rather than a traceback for the usual cause
        raise SystemExit(
            f"could not read stream {args.stream!r} at {args.url}: {exc}\n"
            "is the producer running?  streamkit run examples/nats_demo.yaml"
        ) from None
    print(f"done: {count} records")


if __name__ == "__main__":
    main()
