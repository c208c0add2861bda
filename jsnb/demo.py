"""``python -m jsnb demo``: the quickstart flow in a terminal, no browser needed.

Starts an embedded nats-server, creates a stream, subscribes with a handler
that fails each message's first delivery, publishes, prints every delivery
attempt as it happens, then the consumer's state as the server sees it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from jsnb.messages import DeliveryEvent, Message
from jsnb.pubsub import JetStreamPubSub
from jsnb.state import consumer_record, format_records
from jsnb.streams import ensure_stream

__all__ = ["PROPS", "run_demo"]

PROPS = {"natsURL": "embedded", "durableName": "demo", "backOff": "100ms, 300ms", "maxDeliver": 5}


async def run_demo(count: int = 5, out: TextIO = sys.stdout) -> int:
    """Run the flow; returns the number of messages handled successfully."""
    done = asyncio.Event()
    handled: set[int] = set()

    def show(ev: DeliveryEvent) -> None:
        delay = f" retry in {ev.delay:g}s" if ev.delay else ""
        print(
            f"  seq {ev.stream_seq} attempt {ev.num_delivered}: {ev.outcome.value}{delay}"
            f"  {ev.preview.decode(errors='replace')}",
            file=out,
        )

    def handler(msg: Message) -> None:
        if msg.delivery.num_delivered == 1:
            raise RuntimeError("first attempts fail, to show redelivery")
        handled.add(msg.delivery.stream_seq)
        if len(handled) == count:
            done.set()

    async with JetStreamPubSub(PROPS) as ps:
        assert ps.server is not None  # PROPS asks for the embedded server
        print(f"embedded nats-server at {ps.server.url}", file=out)
        await ensure_stream(ps, "DEMO", ["demo.orders"])
        ps.add_listener(show)
        sub = await ps.subscribe("demo.orders", handler, metadata={"rawPayload": "true"})
        print(f"publishing {count} messages to demo.orders (backOff {PROPS['backOff']})", file=out)
        for i in range(1, count + 1):
            await ps.publish("demo.orders", f"order {i}", metadata={"rawPayload": "true"})
        await asyncio.wait_for(done.wait(), timeout=30)
        await asyncio.sleep(0.1)  # let the last acks reach the server before reading state
        print("\nconsumer state:", file=out)
        print(format_records([consumer_record(await sub.consumer_info())]), file=out)
    return len(handled)
