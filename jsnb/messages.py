"""The records that cross jsnb's public API: messages, results, delivery events.

>>> ev = DeliveryEvent(time=0.0, topic="orders", subject="orders", stream_seq=1,
...                    consumer_seq=1, num_delivered=1, outcome=Outcome.ACK)
>>> ev.outcome.value
'ack'

They mirror Dapr's ``NewMessage``, ``PublishRequest`` and bulk types, in
Python terms, so code written against Dapr's SDK reads the same here.
"""

from __future__ import annotations

import enum
import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "FINAL_OUTCOMES",
    "BulkMessageEntry",
    "BulkPublishFailure",
    "BulkPublishResponse",
    "Delivery",
    "DeliveryEvent",
    "Feature",
    "Message",
    "Outcome",
    "PublishResult",
]


class Feature(enum.StrEnum):
    """What the component supports, in Dapr's feature names."""

    BULK_PUBLISH = "BULK_PUBLISH"
    BULK_SUBSCRIBE = "BULK_SUBSCRIBE"
    MESSAGE_TTL = "MESSAGE_TTL"
    SUBSCRIBE_WILDCARDS = "SUBSCRIBE_WILDCARDS"


class Outcome(enum.StrEnum):
    """What became of one delivery attempt; each value means exactly one thing.

    Final for the message: ``ack``, ``expired``, ``dead-letter``, ``term`` and
    ``exhausted``. Not final: ``nak`` (a redelivery will come) and
    ``superseded`` (a newer delivery of the same message settles it).
    """

    ACK = "ack"  # the handler succeeded; acknowledged (nothing to send with ackPolicy none)
    NAK = "nak"  # the handler failed; the server redelivers after `delay` seconds
    TERM = "term"  # the handler asked for no retry (DROP) and no dead-letter topic is set
    DEAD_LETTER = "dead-letter"  # copied to the dead-letter topic, then terminated
    # Failed and will not be delivered again, with no copy made (last allowed delivery,
    # ackPolicy none, or the dead-letter publish failed): still stored in its stream.
    EXHAUSTED = "exhausted"
    EXPIRED = "expired"  # CloudEvent past its expiration: acknowledged, handler not called
    SUPERSEDED = "superseded"  # failed after the server had redelivered it (parallel mode)


# Outcomes after which the message needs nothing more from this consumer.
FINAL_OUTCOMES = frozenset(
    {Outcome.ACK, Outcome.EXPIRED, Outcome.DEAD_LETTER, Outcome.TERM, Outcome.EXHAUSTED}
)


# Not frozen: a frozen dataclass costs several times more to build, and one of
# these is built for every delivery on the consume hot path.
@dataclass(slots=True)
class Delivery:
    """Where a message sits in the stream and how often it was delivered."""

    stream_seq: int
    consumer_seq: int
    num_delivered: int
    num_pending: int
    timestamp: datetime
    stream: str
    consumer: str


@dataclass(slots=True)
class Message:
    """One delivered message, as a handler sees it.

    ``data`` is exactly the published payload (a CloudEvent is unwrapped);
    ``cloud_event`` is the envelope, or ``None`` for raw payloads.
    """

    topic: str
    data: bytes
    metadata: dict[str, str]
    cloud_event: dict[str, Any] | None
    entry_id: str
    delivery: Delivery
    headers: Mapping[str, str] | None = None

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.data.decode()

    def json(self) -> Any:
        """The payload parsed as JSON."""
        import orjson

        return orjson.loads(self.data)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The stream's acknowledgement of one published message."""

    stream: str
    seq: int
    duplicate: bool = False
    msg_id: str | None = None

    def _repr_html_(self) -> str:
        dup = " (duplicate: already stored, not stored again)" if self.duplicate else ""
        return (
            f"<b>published</b> to stream <code>{html.escape(self.stream)}</code> "
            f"as sequence {self.seq}{dup}"
        )


@dataclass(frozen=True, slots=True)
class BulkMessageEntry:
    """One entry of a bulk publish, as in Dapr's ``BulkMessageEntry``."""

    entry_id: str
    event: Any
    content_type: str | None = None
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class BulkPublishFailure:
    """An entry that was not stored, and why."""

    entry_id: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class BulkPublishResponse:
    """Failed entries of a bulk publish; empty when every entry was stored."""

    failed_entries: list[BulkPublishFailure] = field(default_factory=list)
    results: dict[str, PublishResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed_entries


@dataclass(slots=True)  # not frozen, like Delivery: one per delivery attempt
class DeliveryEvent:
    """One delivery attempt, for live tables and the redelivery lab."""

    time: float  # wall clock (time.time()) when the outcome was decided
    topic: str
    subject: str
    stream_seq: int
    consumer_seq: int
    num_delivered: int
    outcome: Outcome
    delay: float | None = None  # redelivery delay requested with a NAK, seconds
    duration: float = 0.0  # handler run time, seconds
    error: str | None = None
    preview: bytes = b""
    consumer: str = ""
    received: float = 0.0  # wall clock when the delivery reached jsnb

    def as_row(self) -> dict[str, Any]:
        """A flat dict for tables and DataFrames."""
        return {
            "time": self.time,
            "topic": self.topic,
            "subject": self.subject,
            "stream_seq": self.stream_seq,
            "consumer_seq": self.consumer_seq,
            "num_delivered": self.num_delivered,
            "outcome": self.outcome.value,
            "delay": self.delay,
            "handler_ms": self.duration * 1000.0,
            "error": self.error,
            "preview": self.preview.decode("utf-8", "replace"),
            "consumer": self.consumer,
            "received": self.received,
        }
