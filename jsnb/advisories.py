"""The server's own account of deliveries: JetStream advisories as records, live.

>>> async def fail(msg):
...     raise RuntimeError("not yet")
>>> async with ps.advisories("ORDERS", kinds=["nak"]) as feed:
...     sub = await ps.subscribe("orders", fail)
...     _ = await ps.publish("orders", {"id": 1})
...     adv = await anext(feed)
>>> adv.kind.value, adv.stream_seq, adv.deliveries
('nak', 1, 1)

nats-server publishes an advisory when a message is NAKed, terminated or
runs out of deliveries, when a consumer is created, deleted or paused, and
when a stream or consumer elects a leader; a consumer with ``sample_freq``
set also publishes ack samples as metrics. Each kind has its own subject
(checked against nats-server 2.15.1, see :data:`SUBJECTS`), so the server
sends only what was asked for.

Advisories are core NATS messages: nothing stores them, and any published
while the client is disconnected are lost. To keep them, capture them in a
stream (:func:`capture_advisories`) and read that like any other
(``jsnb.browse_stream``, ``Advisory.from_message``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import logging
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from jsnb.errors import InvalidArgumentError
from jsnb.streams import ensure_stream

if TYPE_CHECKING:
    from nats.js import api

    from jsnb.pubsub import JetStreamPubSub

__all__ = [
    "SUBJECTS",
    "Advisories",
    "Advisory",
    "AdvisoryKind",
    "capture_advisories",
]

log = logging.getLogger("jsnb")


class AdvisoryKind(enum.StrEnum):
    """What an advisory reports."""

    NAK = "nak"  # a delivery was NAKed
    TERMINATED = "terminated"  # a delivery was terminated (AckTerm)
    MAX_DELIVERIES = "max_deliveries"  # the server will not deliver the message again
    ACK = "ack"  # an ack sample (a metric; only when the consumer sets sample_freq)
    CONSUMER_CREATED = "consumer_created"
    CONSUMER_DELETED = "consumer_deleted"
    CONSUMER_PAUSED = "consumer_paused"  # paused, or resumed (reason says which)
    CONSUMER_LEADER_ELECTED = "consumer_leader_elected"  # replicated consumers only
    STREAM_LEADER_ELECTED = "stream_leader_elected"  # replicated streams only


# The subject of each kind; {stream} and {consumer} become '*' when not filtered on.
SUBJECTS = {
    AdvisoryKind.NAK: "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.{stream}.{consumer}",
    AdvisoryKind.TERMINATED: "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{consumer}",
    AdvisoryKind.MAX_DELIVERIES: "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}",
    AdvisoryKind.ACK: "$JS.EVENT.METRIC.CONSUMER.ACK.{stream}.{consumer}",
    AdvisoryKind.CONSUMER_CREATED: "$JS.EVENT.ADVISORY.CONSUMER.CREATED.{stream}.{consumer}",
    AdvisoryKind.CONSUMER_DELETED: "$JS.EVENT.ADVISORY.CONSUMER.DELETED.{stream}.{consumer}",
    AdvisoryKind.CONSUMER_PAUSED: "$JS.EVENT.ADVISORY.CONSUMER.PAUSE.{stream}.{consumer}",
    AdvisoryKind.CONSUMER_LEADER_ELECTED: (
        "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{stream}.{consumer}"
    ),
    AdvisoryKind.STREAM_LEADER_ELECTED: "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}",
}
# Subject tokens before the stream name, back to the kind: how a captured message is read.
_BY_PREFIX = {template.split(".{stream}")[0]: kind for kind, template in SUBJECTS.items()}
_FRACTION = re.compile(r"(\.\d{6})\d+")
_CLOSED_CHECK = 1.0  # seconds between checks that the connection is still there


@dataclass(frozen=True)
class Advisory:
    """One advisory: what happened, when (server time), to which message of which consumer.

    ``stream_seq`` and ``deliveries`` are set for message events (NAK,
    terminate, max deliveries, ack); ``reason`` says the rest in words;
    ``raw`` is the JSON the server sent.
    """

    kind: AdvisoryKind
    time: dt.datetime
    stream: str
    consumer: str = ""
    stream_seq: int | None = None
    deliveries: int | None = None
    reason: str = ""
    subject: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_message(cls, subject: str, data: bytes) -> Advisory | None:
        """The advisory in a message on *subject*, or None if it is not one of :data:`SUBJECTS`."""
        kind = next(
            (k for prefix, k in _BY_PREFIX.items() if subject.startswith(prefix + ".")), None
        )
        if kind is None:
            return None
        try:
            body = orjson.loads(data)
            when = dt.datetime.fromisoformat(
                _FRACTION.sub(r"\1", body["timestamp"]).replace("Z", "+00:00")
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("jsnb: unreadable advisory on %s", subject)
            return None
        return cls(
            kind=kind,
            time=when,
            stream=str(body.get("stream", "")),
            consumer=str(body.get("consumer", "")),
            stream_seq=body.get("stream_seq"),
            deliveries=body.get("deliveries"),
            reason=_reason(kind, body),
            subject=subject,
            raw=body,
        )

    def as_row(self) -> dict[str, Any]:
        """A flat dict, for a DataFrame."""
        return {
            "time": self.time,
            "kind": self.kind.value,
            "stream": self.stream,
            "consumer": self.consumer,
            "stream_seq": self.stream_seq,
            "deliveries": self.deliveries,
            "reason": self.reason,
        }


def _reason(kind: AdvisoryKind, body: dict[str, Any]) -> str:
    if kind is AdvisoryKind.NAK:
        return f"delivery {body.get('deliveries')} NAKed"
    if kind is AdvisoryKind.TERMINATED:
        return str(body.get("reason") or f"delivery {body.get('deliveries')} terminated")
    if kind is AdvisoryKind.MAX_DELIVERIES:
        return f"gave up after {body.get('deliveries')} deliveries; the message stays stored"
    if kind is AdvisoryKind.ACK:
        return f"acked {int(body.get('ack_time', 0)) / 1e6:.1f} ms after delivery"
    if kind is AdvisoryKind.CONSUMER_PAUSED:
        return f"paused until {body.get('pause_until')}" if body.get("paused") else "resumed"
    if kind in (AdvisoryKind.CONSUMER_LEADER_ELECTED, AdvisoryKind.STREAM_LEADER_ELECTED):
        return f"leader {body.get('leader', '?')}"
    return str(body.get("action", ""))


def parse_kinds(kinds: Iterable[AdvisoryKind | str] | None) -> tuple[AdvisoryKind, ...]:
    """*kinds* as members, all of them for None; an unknown one names the allowed values."""
    if kinds is None:
        return tuple(AdvisoryKind)
    if isinstance(kinds, str):
        kinds = [kinds]
    out = []
    for kind in kinds:
        try:
            out.append(AdvisoryKind(kind))
        except ValueError:
            allowed = ", ".join(k.value for k in AdvisoryKind)
            raise InvalidArgumentError(
                f"jsnb: advisory kind {kind!r} is not one of {allowed}"
            ) from None
    return tuple(dict.fromkeys(out))


class Advisories:
    """A live feed of advisories: an async iterator, and an async context manager.

    Made by :meth:`jsnb.JetStreamPubSub.advisories`. ``async with`` (or
    :meth:`start`) subscribes before returning, so nothing that happens
    afterwards is missed; iterating starts it too. At most *buffer*
    advisories wait to be read: past that the oldest are dropped and counted
    in ``dropped``. Iteration ends on :meth:`aclose` or when the connection
    closes.
    """

    def __init__(
        self,
        nc: Client,
        *,
        stream: str | None = None,
        consumer: str | None = None,
        kinds: Iterable[AdvisoryKind | str] | None = None,
        buffer: int = 10_000,
    ) -> None:
        for what, name in (("stream", stream), ("consumer", consumer)):
            if name is not None and (not name or any(c in name for c in ". *>")):
                raise InvalidArgumentError(f"jsnb: {what} {name!r} is not a valid {what} name")
        self.stream, self.consumer = stream, consumer
        self.kinds = parse_kinds(kinds)
        self.dropped = 0
        self._nc = nc
        self._buffer: deque[Advisory] = deque(maxlen=buffer)
        self._ready = asyncio.Event()
        self._subs: list[NatsSubscription] = []
        self._started = self._closed = False

    @property
    def subjects(self) -> list[str]:
        """The subjects subscribed to, one per kind."""
        stream, consumer = self.stream or "*", self.consumer or "*"
        return [SUBJECTS[k].format(stream=stream, consumer=consumer) for k in self.kinds]

    async def start(self) -> Advisories:
        """Subscribe (once) and make sure the server has the subscriptions."""
        if not self._started:
            self._started = True
            for subject in self.subjects:
                self._subs.append(await self._nc.subscribe(subject, cb=self._on_msg))
            await self._nc.flush()
        return self

    async def _on_msg(self, msg: Msg) -> None:
        adv = Advisory.from_message(msg.subject, msg.data)
        if adv is None:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(adv)
        self._ready.set()

    async def aclose(self) -> None:
        """Unsubscribe; iteration ends once what was buffered has been read."""
        self._closed = True
        self._ready.set()
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):  # a closed connection refuses in several ways
                await sub.unsubscribe()

    async def __aenter__(self) -> Advisories:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Advisories:
        return self

    async def __anext__(self) -> Advisory:
        if not self._started:
            await self.start()
        while not self._buffer:
            if self._closed or self._nc.is_closed:
                raise StopAsyncIteration
            self._ready.clear()
            # Nothing tells a subscription that its connection closed: look now and then.
            # (asyncio.timeout, not wait_for: no task made per wait.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSED_CHECK):
                    await self._ready.wait()
        return self._buffer.popleft()

    def drain(self) -> list[Advisory]:
        """Everything buffered now, without waiting."""
        out = list(self._buffer)
        self._buffer.clear()
        return out


async def capture_advisories(
    ps: JetStreamPubSub,
    stream: str = "JSNB_ADVISORIES",
    *,
    max_age: float = 86_400.0,
    **options: Any,
) -> api.StreamInfo:
    """Store every advisory and metric in *stream* (kept *max_age* seconds), so none is lost.

    Returns the stream's info. Read it with ``jsnb.browse_stream(ps, stream)``
    and :meth:`Advisory.from_message`. The server's API audit events share the
    subjects and are stored too.
    """
    return await ensure_stream(
        ps, stream, ["$JS.EVENT.ADVISORY.>", "$JS.EVENT.METRIC.>"], max_age=max_age, **options
    )
