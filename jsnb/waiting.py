"""Wait for a condition without holding the event loop: ``await jsnb.until(...)``.

>>> got = []
>>> sub = await ps.subscribe("orders", lambda msg: got.append(msg.json()))
>>> _ = await ps.publish("orders", {"id": 7})
>>> await jsnb.until(lambda: got, what="the order", timeout=10)
[{'id': 7}]

Deliveries, acks and the server's pings all run on the event loop the caller
is waiting on, so a wait must keep that loop turning: ``time.sleep`` in a
notebook cell or a handler holds back every ack of the kernel (notebook 02
shows the redeliveries that follow). ``until`` polls between
``asyncio.sleep`` calls and fails loudly after its deadline, instead of
sleeping a guessed time and hoping. Sync code runs it with
``jsnb.sync.run(jsnb.until(...))``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from jsnb.errors import WaitTimeoutError

__all__ = ["until"]

T = TypeVar("T")


async def until(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll *condition* until it returns something truthy, and return that value.

    *condition* may be a coroutine function, so a check can ask the server
    (``lambda: sub.state()``). Its value is tested with ``bool()``, so return a
    flag, a record or ``None``, not a DataFrame (whose truth is ambiguous).
    The default *timeout* is generous because a met condition returns at
    once, while a busy machine can be slow.

    Raises:
        TimeoutError: after *timeout* seconds, naming *what* and the last value,
            which usually says how far things got.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return cast(T, value)
        if time.monotonic() > deadline:
            raise WaitTimeoutError(
                f"jsnb: {what} not met within {timeout:g}s (last value: {value!r})"
            )
        await asyncio.sleep(interval)
