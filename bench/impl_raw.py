"""The baseline: the same work written directly on nats-py, the way its docs show it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import orjson
from nats.js import api

from bench.common import Pacer, Progress, hand_envelope, timed_payload


class Raw:
    name = "nats-py"

    async def open(self, url: str) -> None:
        self.nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
        self.js = self.nc.jetstream()

    async def close(self) -> None:
        await self.nc.close()

    # -- publish -----------------------------------------------------------------------

    async def publish(self, subject: str, data: Any, n: int) -> float:
        js = self.js
        start = time.perf_counter()
        for _ in range(n):
            payload, headers = hand_envelope(data, subject)
            await js.publish(subject, payload, headers=headers)
        return n / (time.perf_counter() - start)

    async def bulk_publish(self, subject: str, data: Any, n: int) -> float:
        js = self.js
        start = time.perf_counter()
        futures = []
        for _ in range(n):
            payload, headers = hand_envelope(data, subject)
            futures.append(await js.publish_async(subject, payload, headers=headers))
        await js.publish_async_completed()
        elapsed = time.perf_counter() - start
        failed = sum(1 for f in futures if f.exception() is not None)
        assert not failed, f"{failed} publishes failed"
        return n / elapsed

    # -- consume -----------------------------------------------------------------------

    async def _push(self, stream: str, subject: str, cb: Any, **config: Any) -> tuple[Any, str]:
        cfg = api.ConsumerConfig(
            deliver_subject=self.nc.new_inbox(),
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            filter_subject=subject,
            **config,
        )
        info = await self.js.add_consumer(stream, cfg)
        sub = await self.js.subscribe_bind(stream, info.config, info.name, cb=cb, manual_ack=True)
        return sub, info.name

    async def _stop(self, stream: str, sub: Any, consumer: str) -> None:
        await sub.unsubscribe()
        await self.js.delete_consumer(stream, consumer)

    async def consume(self, stream: str, subject: str, n: int, cloudevents: bool) -> float:
        progress = Progress(n)

        async def cb(msg: Any) -> None:
            progress.hit()
            await msg.ack()

        async def cb_envelope(msg: Any) -> None:
            # The envelope unwrapped by hand, as jsnb's handler reads msg.json().
            _ = orjson.loads(msg.data)["data"]
            progress.hit()
            await msg.ack()

        if cloudevents:
            cb = cb_envelope

        sub, consumer = await self._push(stream, subject, cb)
        rate = await progress.wait()
        await self._stop(stream, sub, consumer)
        return rate

    async def parallel(self, stream: str, subject: str, n: int, work: float) -> float:
        progress = Progress(n)
        tasks: set[asyncio.Task[None]] = set()

        async def handle(msg: Any) -> None:
            await asyncio.sleep(work)
            progress.hit()
            await msg.ack()

        async def cb(msg: Any) -> None:
            task = asyncio.create_task(handle(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        sub, consumer = await self._push(stream, subject, cb, max_ack_pending=256)
        rate = await progress.wait()
        await self._stop(stream, sub, consumer)
        return rate

    async def bulk_consume(self, stream: str, subject: str, n: int, batch: int) -> float:
        return await self._fetch_loop(stream, subject, n, batch, "raw-bulk")

    async def pull_consume(self, stream: str, subject: str, n: int, batch: int) -> float:
        """The same fetch loop: what jsnb's pull mode does behind a handler."""
        return await self._fetch_loop(stream, subject, n, batch, "raw-pull")

    async def _fetch_loop(
        self, stream: str, subject: str, n: int, batch: int, durable: str
    ) -> float:
        """A durable pull consumer, ``fetch(batch)`` in a loop, each message acked."""
        progress = Progress(n)
        cfg = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            filter_subject=subject,
        )
        psub = await self.js.pull_subscribe(subject, durable=durable, stream=stream, config=cfg)
        while not progress.done.is_set():
            msgs = await psub.fetch(batch, timeout=5)
            for msg in msgs:
                await msg.ack()
            progress.hit(len(msgs))
        await psub.unsubscribe()
        await self.js.delete_consumer(stream, durable)
        return await progress.wait()

    # -- latency -----------------------------------------------------------------------

    async def latency(self, stream: str, subject: str, size: int, pacer: Pacer) -> list[float]:
        got: list[float] = []
        progress = Progress(pacer.count)

        async def cb(msg: Any) -> None:
            got.append(time.perf_counter() - orjson.loads(msg.data)["data"]["t"])
            progress.hit()
            await msg.ack()

        cfg = api.ConsumerConfig(
            deliver_subject=self.nc.new_inbox(),
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            filter_subject=subject,
        )
        info = await self.js.add_consumer(stream, cfg)
        sub = await self.js.subscribe_bind(stream, info.config, info.name, cb=cb, manual_ack=True)
        async for _ in pacer.ticks():
            payload, headers = hand_envelope(timed_payload(size, time.perf_counter()), subject)
            await self.js.publish(subject, payload, headers=headers)
        await progress.wait()
        await self._stop(stream, sub, info.name)
        return got
