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
from datetime import UTC, datetime
from typing import Any

import orjson
from nats.aio.msg import Msg

from jsnb.cloudevents import event_data_text

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
    "first_delivery_prefix",
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


# Not frozen: a frozen dataclass costs several times more to build. Built only
# when something asks for it (Message.delivery): most handlers never do.
@dataclass(slots=True, repr=False)
class Delivery:
    """Where a message sits in the stream and how often it was delivered."""

    stream_seq: int
    consumer_seq: int
    num_delivered: int
    num_pending: int
    timestamp_ns: int  # when the stream stored it, ns since the epoch
    stream: str
    consumer: str

    @property
    def timestamp(self) -> datetime:
        """When the stream stored the message (a ``datetime`` costs as much as the rest)."""
        return datetime.fromtimestamp(self.timestamp_ns / 1e9, UTC)

    def __repr__(self) -> str:
        return (
            f"Delivery(stream_seq={self.stream_seq}, consumer_seq={self.consumer_seq}, "
            f"num_delivered={self.num_delivered}, num_pending={self.num_pending}, "
            f"timestamp={self.timestamp.isoformat()}, stream={self.stream!r}, "
            f"consumer={self.consumer!r})"
        )

    @classmethod
    def from_reply(cls, reply: str) -> Delivery | None:
        """Read a JetStream ack subject; None if *reply* is not one.

        The subject is ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
        seq>.<ns timestamp>.<pending>``, with ``<domain>.<account hash>`` after ``ACK``
        in the newer form. nats-py's ``msg.metadata`` reads it through two frozen
        dataclasses first, which costs as much as the rest of our dispatch.
        """
        tokens = reply.split(".")
        if len(tokens) == 9:
            js, ack, stream, consumer, delivered, stream_seq, consumer_seq, stamp, pending = tokens
        elif len(tokens) >= 11:
            js, ack, _, _, stream, consumer, delivered, stream_seq, consumer_seq, stamp, pending = (
                tokens[:11]
            )
        else:
            return None
        if js != "$JS" or ack != "ACK":
            return None
        try:
            # Positional: with keywords this dataclass costs half as much again.
            return cls(
                int(stream_seq),
                int(consumer_seq),
                int(delivered),
                int(pending),
                int(stamp),
                stream,
                consumer,
            )
        except ValueError:
            return None


def first_delivery_prefix(reply: str) -> str | None:
    """How the ack subject of a *first* delivery by *reply*'s consumer begins, if it is one.

    Everything up to the delivery count, then ``1.``: a reply that starts with
    it is a first delivery, told without parsing it (:class:`Delivery.from_reply`).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        head = tokens[:4]
    elif len(tokens) >= 11:
        head = tokens[:6]
    else:
        return None
    return ".".join((*head, "1", ""))


class _Handed:
    """Marks a CloudEvent whose parsed ``data`` was handed out (it may be changed since)."""


_HANDED = _Handed()


class Message:
    """One delivered message, as a handler sees it.

    ``data`` is exactly the published payload (a CloudEvent is unwrapped);
    ``cloud_event`` is the envelope, or ``None`` for raw payloads;
    ``metadata`` holds the message's headers (but ``Nats-*``) and ``Topic``.

    Everything but ``topic`` is read from the delivery on first access and
    kept: building ``delivery`` (its ack subject parsed, a ``datetime``),
    ``metadata`` and a CloudEvent's ``data`` bytes for every message cost half
    of jsnb's consume path (issue 15), and most handlers read one or two.
    """

    __slots__ = ("_data", "_delivery", "_event", "_metadata", "_msg", "_text", "topic")
    _delivery: Delivery
    _metadata: dict[str, str]
    _text: bytes

    def __init__(
        self, topic: str, msg: Msg, data: bytes | None, cloud_event: dict[str, Any] | None = None
    ) -> None:
        # data None: the JSON text of cloud_event["data"], made on first access
        # (kept in _text). _delivery, _metadata and _text are left unset until then
        # (a slot read raises AttributeError): assignments saved per message.
        self.topic = topic
        self._msg = msg
        self._data: bytes | _Handed | None = data
        self._event = cloud_event

    @property
    def cloud_event(self) -> dict[str, Any] | None:
        if self._data is None:
            self._data = _HANDED  # the handler may change it: data is read from the wire
        return self._event

    @property
    def data(self) -> bytes:
        data = self._data
        if type(data) is bytes:
            return data
        try:
            return self._text
        except AttributeError:
            assert self._event is not None
            payload = self._msg.data
            # Parsed data handed out may have been changed: read the published text again.
            event = self._event if data is None else orjson.loads(payload)
            self._text = text = event_data_text(event, payload)
            return text

    @property
    def delivery(self) -> Delivery:
        """Where the message sits in its stream and how often it was delivered."""
        try:
            return self._delivery
        except AttributeError:
            d = Delivery.from_reply(self._msg.reply)
            if d is None:  # the dispatcher hands on JetStream deliveries only
                raise ValueError(f"not a JetStream ack subject: {self._msg.reply!r}") from None
            self._delivery = d
            return d

    @property
    def entry_id(self) -> str:
        """The message's id in a bulk batch (Dapr's ``entryId``): its consumer sequence."""
        return str(self.delivery.consumer_seq)

    @property
    def metadata(self) -> dict[str, str]:
        try:
            return self._metadata
        except AttributeError:
            metadata = {}
            headers = self._msg.headers
            if headers:
                for k, v in headers.items():
                    if not k.startswith("Nats-"):
                        metadata[k] = v
            metadata["Topic"] = self._msg.subject  # last: a header named Topic must not hide it
            self._metadata = metadata
            return metadata

    @property
    def headers(self) -> Mapping[str, str] | None:
        """Every header as delivered (``Nats-*`` too), or None."""
        return self._msg.headers

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.data.decode()

    def json(self) -> Any:
        """The payload parsed as JSON.

        A CloudEvent's JSON ``data`` was parsed with its envelope: that object
        is returned (the same as ``cloud_event["data"]``), not parsed again.
        Changing it changes neither ``data`` nor what the server holds.
        """
        data = self._data
        if isinstance(data, bytes):  # not a CloudEvent's JSON data
            return orjson.loads(data)
        self._data = _HANDED
        assert self._event is not None
        return self._event["data"]

    def __reduce__(self) -> tuple[Any, ...]:
        # The nats-py Msg holds the connection: a copy keeps what the handler reads
        # (the wire's subject, ack subject, headers and payload) and no client.
        m = self._msg
        wire = Msg(None, m.subject, m.reply, m.data, m.headers)  # type: ignore[arg-type]
        return (Message, (self.topic, wire, self.data, self._event))

    def __repr__(self) -> str:
        d = self.delivery
        return (
            f"Message(topic={self.topic!r}, stream_seq={d.stream_seq}, "
            f"num_delivered={d.num_delivered}, data={self.data[:64]!r}"
            f"{'...' if len(self.data) > 64 else ''}, "
            f"cloud_event={'yes' if self._event is not None else 'no'})"
        )


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
