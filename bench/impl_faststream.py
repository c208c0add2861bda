"""FastStream's NATS JetStream publisher and subscribers, for the operations it offers.

FastStream frames a message its own way (a JSON body with content-type and
correlation-id headers) and decodes the JSON for the handler; that is its
counterpart of jsnb's CloudEvent. Each consume run starts a fresh broker, as
FastStream registers subscribers before start. Its per-message logging is off
(``logger=None``), as anyone measuring would set it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import nats
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js.api import ConsumerConfig, DeliverPolicy

from bench.common import Pacer, Progress, timed_payload


class FastStream:
    name = "FastStream"

    async def open(self, url: str) -> None:
        self.url = url
        self.broker = NatsBroker(url, logger=None)
        await self.broker.start()
        self.admin = await nats.connect(url)  # only to delete the pull consumers made

    async def close(self) -> None:
        await self.broker.stop()
        await self.admin.close()

    async def publish(self, subject: str, data: Any, n: int) -> float:
        stream = subject.split(".")[0].upper()
        publisher = self.broker.publisher(subject, stream=JStream(stream, declare=False))
        start = time.perf_counter()
        for _ in range(n):
            await publisher.publish(data, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        return n / (time.perf_counter() - start)

    async def _run(self, progress: Progress, handler: Any, subject: str, **options: Any) -> float:
        broker = NatsBroker(self.url, logger=None)
        broker.subscriber(subject, deliver_policy=DeliverPolicy.ALL, **options)(handler)
        await broker.start()
        try:
            return await progress.wait()
        finally:
            await broker.stop()

    async def consume(self, stream: str, subject: str, n: int, cloudevents: bool) -> float:
        progress = Progress(n)

        async def handle(body: Any) -> None:
            progress.hit()

        return await self._run(
            progress,
            handle,
            subject,
            stream=JStream(stream, declare=False),
            ack_policy=AckPolicy.ACK,
        )

    async def parallel(self, stream: str, subject: str, n: int, work: float) -> float:
        progress = Progress(n)

        async def handle(body: Any) -> None:
            await asyncio.sleep(work)
            progress.hit()

        return await self._run(
            progress,
            handle,
            subject,
            stream=JStream(stream, declare=False),
            ack_policy=AckPolicy.ACK,
            max_workers=256,
            config=ConsumerConfig(max_ack_pending=256),
        )

    async def bulk_consume(self, stream: str, subject: str, n: int, batch: int) -> float:
        progress = Progress(n)

        async def handle(body: list[Any]) -> None:
            progress.hit(len(body))

        durable = f"fs-bulk-{uuid.uuid4().hex[:8]}"
        try:
            return await self._run(
                progress,
                handle,
                subject,
                stream=JStream(stream, declare=False),
                durable=durable,
                pull_sub=PullSub(batch_size=batch, timeout=1, batch=True),
                ack_policy=AckPolicy.ACK,
            )
        finally:
            await self.admin.jetstream().delete_consumer(stream, durable)

    async def latency(self, stream: str, subject: str, size: int, pacer: Pacer) -> list[float]:
        got: list[float] = []
        progress = Progress(pacer.count)

        async def handle(body: Any) -> None:
            got.append(time.perf_counter() - body["t"])
            progress.hit()

        broker = NatsBroker(self.url, logger=None)
        broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.ACK,
        )(handle)
        await broker.start()
        publisher = broker.publisher(subject, stream=JStream(stream, declare=False))
        try:
            async for _ in pacer.ticks():
                await publisher.publish(
                    timed_payload(size, time.perf_counter()),
                    headers={"Nats-Msg-Id": str(uuid.uuid4())},
                )
            await progress.wait()
        finally:
            await broker.stop()
        return got
