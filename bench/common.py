"""What every implementation shares: payloads, the hand-built envelope, timing helpers.

>>> len(orjson.dumps(json_payload(128)))
128
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

PUBSUB_NAME = "bench"
SOURCE = "bench"


def json_payload(size: int) -> dict[str, Any]:
    """A JSON object whose encoding is exactly *size* bytes: the data every side sends."""
    base = len(orjson.dumps({"pad": ""}))
    return {"pad": "x" * (size - base)}


def timed_payload(size: int, sent: float) -> dict[str, Any]:
    """Like ``json_payload``, carrying the send time for latency runs."""
    base = len(orjson.dumps({"t": sent, "pad": ""}))
    return {"t": sent, "pad": "x" * max(size - base, 0)}


def hand_envelope(data: Any, topic: str) -> tuple[bytes, dict[str, str]]:
    """The CloudEvent and ``Nats-Msg-Id`` header a nats-py user builds by hand, per message.

    The same fields Dapr's runtime (and jsnb) put on the wire, written the
    obvious way: a uuid4 id, an RFC 3339 time, ``orjson.dumps``.
    """
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id,
        "source": SOURCE,
        "type": "com.dapr.event.sent",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "topic": topic,
        "pubsubname": PUBSUB_NAME,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return orjson.dumps(event), {"Nats-Msg-Id": event_id}


class Progress:
    """Counts handled messages; records when the first and the *n*-th arrived."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def hit(self, k: int = 1) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += k
        if self.count >= self.n and not self.done.is_set():
            self.last = time.perf_counter()
            self.done.set()

    async def wait(self, timeout: float = 60.0) -> float:
        """Messages per second from the first delivery to the *n*-th."""
        await asyncio.wait_for(self.done.wait(), timeout)
        return (self.n - 1) / (self.last - self.first)


class Pacer:
    """Yields send times at a steady *rate* for *seconds*, without drift."""

    def __init__(self, rate: float, seconds: float) -> None:
        self.rate = rate
        self.count = int(rate * seconds)

    async def ticks(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for i in range(self.count):
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield i


@dataclass
class Stats:
    """Several runs of one measurement."""

    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
            "runs": self.values,
        }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]
