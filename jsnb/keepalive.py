"""The in-progress keep-alive: ``+WPI`` while a delivery is being worked on.

>>> from jsnb.retry import RetryRule
>>> keep_alive = KeepAlive("auto", RetryRule(ack_wait=0.9, backoff=(0.9, 6.0)), limit=0.0)
>>> round(keep_alive.interval(1), 3), keep_alive.interval(2)  # seconds between +WPI
(0.3, 2.0)

nats-server redelivers a message whose ack has not come within its ack
deadline, even while a handler still works on it; an in-progress ack resets
that deadline. Upstream Dapr never sends one. With ``inProgress`` set, every
dispatcher starts a keep-alive when it hands a delivery to the handler and
stops it when the delivery is settled; ``ackPolicy: all`` keeps it going for a
success it holds back until the cumulative ack that covers it is sent.
``maxHandlerTime`` bounds it for the handler, so a hung one is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import nats.errors
from nats.aio.msg import Msg

from jsnb.retry import RetryRule

__all__ = ["KeepAlive"]

log = logging.getLogger("jsnb")


class _Beat:
    """One delivery's keep-alive: its task and when it stops (None: when told)."""

    __slots__ = ("task", "until")

    def __init__(self, until: float | None) -> None:
        self.until = until
        self.task: asyncio.Task[None] | None = None


class KeepAlive:
    """Sends ``+WPI`` for each delivery being worked on, every *interval* seconds.

    *every* is ``"auto"`` (a third of the delivery's ack deadline under
    *rule*) or a fixed interval; *limit* is maxHandlerTime in seconds (0:
    unlimited).
    """

    def __init__(self, every: timedelta | str, rule: RetryRule, limit: float) -> None:
        self._every = every
        self.rule = rule
        self._limit = limit
        self._beats: dict[int, _Beat] = {}  # id(msg) -> its keep-alive
        self.sent = 0

    def interval(self, attempt: int) -> float:
        """Seconds between keep-alives for delivery *attempt*."""
        if isinstance(self._every, timedelta):
            return self._every.total_seconds()
        return self.rule.ack_deadline(attempt) / 3

    def start(self, msg: Msg, attempt: int, *, bounded: bool = True) -> None:
        """Keep *msg* alive until :meth:`stop` (or, if *bounded*, maxHandlerTime)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self._limit if bounded and self._limit else None
        beat = self._beats.get(id(msg))
        if beat is not None and beat.task is not None and not beat.task.done():
            beat.until = until  # a held success: the bound that applied to its handler ends
            return
        beat = _Beat(until)
        beat.task = loop.create_task(self._run(msg, self.interval(attempt), beat))
        self._beats[id(msg)] = beat

    def stop(self, msg: Msg) -> None:
        """*msg* is settled (or given up): no more keep-alives for it."""
        beat = self._beats.pop(id(msg), None)
        if beat is not None and beat.task is not None:
            beat.task.cancel()

    def close(self) -> None:
        """Stop every keep-alive (the subscription ends)."""
        for beat in self._beats.values():
            if beat.task is not None:
                beat.task.cancel()
        self._beats.clear()

    async def _run(self, msg: Msg, every: float, beat: _Beat) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            if beat.until is not None and loop.time() >= beat.until:
                log.warning(
                    "jsnb: %s: handler still running after maxHandlerTime %gs; keep-alive "
                    "stopped, so the server will redeliver it",
                    msg.subject,
                    self._limit,
                )
                return
            try:
                await msg.in_progress()
            except nats.errors.Error as exc:  # the connection went away
                log.debug("jsnb: keep-alive for %s: %s", msg.subject, exc)
                return
            self.sent += 1
