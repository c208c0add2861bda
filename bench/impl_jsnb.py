"""jsnb doing each operation through its public API, as a notebook would."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

import jsnb
from bench.common import PUBSUB_NAME, SOURCE, Pacer, Progress, timed_payload
from jsnb.widgets.message_table import MessageTable


class Jsnb:
    name = "jsnb"

    async def open(self, url: str) -> None:
        def component(**props: Any) -> jsnb.JetStreamPubSub:
            return jsnb.JetStreamPubSub(
                {"natsURL": url, **props}, pubsub_name=PUBSUB_NAME, source=SOURCE
            )

        self.ps = await component().init()
        self.par = await component(concurrencyMode="parallel", maxAckPending=256).init()
        # Pull mode asks for jsnb.pull.PULL_BATCH (256) per request, as the raw fetch does.
        self.pull = await component(consumerMode="pull").init()

    async def close(self) -> None:
        await self.ps.close()
        await self.par.close()
        await self.pull.close()

    # -- publish -----------------------------------------------------------------------

    async def publish(self, subject: str, data: Any, n: int) -> float:
        ps = self.ps
        start = time.perf_counter()
        for _ in range(n):
            await ps.publish(subject, data)
        return n / (time.perf_counter() - start)

    async def bulk_publish(self, subject: str, data: Any, n: int) -> float:
        start = time.perf_counter()
        entries = [jsnb.BulkMessageEntry(str(i), data) for i in range(n)]
        response = await self.ps.bulk_publish(subject, entries)
        elapsed = time.perf_counter() - start
        assert response.ok, response.failed_entries[:3]
        return n / elapsed

    # -- consume -----------------------------------------------------------------------

    async def consume(
        self, stream: str, subject: str, n: int, cloudevents: bool, table: bool = False
    ) -> float:
        progress = Progress(n)

        async def handle(msg: jsnb.Message) -> None:
            progress.hit()

        async def handle_event(msg: jsnb.Message) -> None:
            msg.json()  # the event's data, as the nats-py baseline unwraps it by hand
            progress.hit()

        metadata = None if cloudevents else {"rawPayload": "true"}
        if cloudevents:
            handle = handle_event
        view = MessageTable() if table else None  # built first: it is not what is measured
        sub = await self.ps.subscribe(subject, handle, metadata=metadata)
        if view is not None:
            view.attach(sub)
        rate = await progress.wait()
        if view is not None:
            view.detach()
            view.pause()  # cancels a pending redraw
        await sub.unsubscribe()
        return rate

    async def parallel(self, stream: str, subject: str, n: int, work: float) -> float:
        progress = Progress(n)

        async def handle(msg: jsnb.Message) -> None:
            await asyncio.sleep(work)
            progress.hit()

        sub = await self.par.subscribe(subject, handle)
        rate = await progress.wait()
        await sub.unsubscribe()
        return rate

    async def bulk_consume(self, stream: str, subject: str, n: int, batch: int) -> float:
        progress = Progress(n)

        async def handle(messages: list[jsnb.Message]) -> None:
            progress.hit(len(messages))

        sub = await self.ps.bulk_subscribe(subject, handle, max_messages=batch, max_await_ms=100)
        rate = await progress.wait()
        await sub.unsubscribe()
        return rate

    async def pull_consume(self, stream: str, subject: str, n: int, batch: int) -> float:
        progress = Progress(n)

        async def handle(msg: jsnb.Message) -> None:
            progress.hit()

        sub = await self.pull.subscribe(subject, handle, metadata={"rawPayload": "true"})
        rate = await progress.wait()
        await sub.unsubscribe()
        return rate

    # -- latency -----------------------------------------------------------------------

    async def latency(self, stream: str, subject: str, size: int, pacer: Pacer) -> list[float]:
        got: list[float] = []
        progress = Progress(pacer.count)

        async def handle(msg: jsnb.Message) -> None:
            got.append(time.perf_counter() - orjson.loads(msg.data)["t"])
            progress.hit()

        sub = await self.ps.subscribe(subject, handle)
        async for _ in pacer.ticks():
            await self.ps.publish(subject, timed_payload(size, time.perf_counter()))
        await progress.wait()
        await sub.unsubscribe()
        return got
