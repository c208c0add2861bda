"""The tests' helpers that are not fixtures: polling with a deadline instead of sleeping and
hoping, components made on demand, settled-consumer checks and a recording handler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.02
) -> Any:
    """Poll *check* until it returns something truthy; fail with its last value on timeout.

    The default *timeout* is generous on purpose: a met condition returns at
    once, and a busy machine (CI, a laptop running other work) may be slow.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last) or isinstance(last, asyncio.Future):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


class Recorder:
    """A handler that records messages and can be told to fail or wait."""

    def __init__(self, *, fail_times: int = 0) -> None:
        self.messages: list[Any] = []
        self.attempts: dict[int, list[float]] = {}
        self.fail_times = fail_times

    async def __call__(self, msg: Any) -> None:
        seq = msg.delivery.stream_seq
        self.attempts.setdefault(seq, []).append(time.monotonic())
        if len(self.attempts[seq]) <= self.fail_times:
            raise RuntimeError(f"planned failure {len(self.attempts[seq])} of seq {seq}")
        self.messages.append(msg)

    @property
    def data(self) -> list[bytes]:
        return [m.data for m in self.messages]


async def make(server: Any, **props: Any) -> Any:
    """A component connected to *server* with *props*; close it (``async with``) when done."""
    from jsnb import JetStreamPubSub

    return await JetStreamPubSub().init({"natsURL": server.url, **props})


def _settled(info: Any, last_seq: int) -> bool:
    return bool(info.ack_floor.stream_seq == last_seq and info.num_ack_pending == 0)


async def all_acked(sub: Any, last_seq: int) -> bool:
    """Whether *sub*'s consumer has acked everything up to *last_seq* and holds nothing."""
    return _settled(await sub.consumer_info(), last_seq)


async def consumer_acked(ps: Any, stream: str, consumer: str, last_seq: int) -> bool:
    """:func:`all_acked` for a consumer named on the server (its subscriber may be gone)."""
    return _settled(await ps.consumer_info(stream, consumer), last_seq)
