"""The Dapr-compatible CloudEvent envelope: what goes on the wire, and back.

>>> out = wrap({"order": 1}, topic="orders", pubsub_name="pubsub")
>>> out.content_type
'application/cloudevents+json'
>>> msg = unwrap(out.payload)
>>> msg.data
b'{"order":1}'
>>> msg.cloud_event["type"], msg.cloud_event["datacontenttype"]
('com.dapr.event.sent', 'application/json')

The Dapr runtime, not the component, wraps every published body in a
CloudEvent 1.0 JSON object and unwraps it for the subscriber. jsnb has no
sidecar, so it does both here, field for field as Dapr does, so that a Dapr
app on the same stream reads what jsnb publishes and the other way round.

Publish metadata keys (case-insensitive) shape the envelope: ``rawPayload``
skips it, ``contentType`` sets ``datacontenttype``, ``ttlInSeconds`` adds
``expiration`` and ``cloudevent.<field>`` overrides a field. Every other key is
returned in :attr:`Outgoing.headers`; upstream drops those. Values are text, as
in Dapr; a bool, int or float is written as text (:func:`normalize_metadata`).

Data survives the trip byte for byte: bytes come back as the same bytes, text
as its UTF-8 encoding and other values as their ``orjson.dumps`` encoding.
Text or bytes with a JSON content type (``application/json``, ``*+json``) go
in ``data`` as JSON, as upstream; the text is written verbatim, so it comes
back unchanged too. If it does not parse, it travels in ``data_base64``:
upstream would send it as a JSON string, which subscribers read back quoted.
"""

from __future__ import annotations

import binascii
import functools
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import orjson

from jsnb.errors import MetadataError

__all__ = [
    "BINARY_CONTENT_TYPE",
    "CLOUDEVENT_CONTENT_TYPE",
    "EVENT_TYPE",
    "JSON_CONTENT_TYPE",
    "SPEC_VERSION",
    "TEXT_CONTENT_TYPE",
    "Incoming",
    "Outgoing",
    "decode",
    "event_data_text",
    "normalize_metadata",
    "parse_raw_payload",
    "unwrap",
    "wrap",
]

JSONValue: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None
Data: TypeAlias = bytes | bytearray | memoryview | JSONValue

CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain"
BINARY_CONTENT_TYPE = "application/octet-stream"
EVENT_TYPE = "com.dapr.event.sent"
SPEC_VERSION = "1.0"

# Dapr reads rawPayload with Go's strconv.ParseBool; we also ignore case.
_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})
_GO_INT = re.compile(r"[+-]?[0-9]+")
# Publish metadata key (lower case) -> the envelope field it overrides.
_OVERRIDES = {
    f"cloudevent.{name}": name
    for name in ("id", "source", "type", "traceid", "traceparent", "tracestate", "subject")
}
# First bytes a JSON object can start with; anything else is never parsed.
_OBJECT_START = b"{ \t\r\n"
# How a content type's data is carried in the envelope.
_JSON, _TEXT, _BINARY = "json", "text", "binary"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to publish.

    Attributes:
        payload: The bytes that go on the wire.
        msg_id: The ``Nats-Msg-Id`` header, so JetStream drops a retried duplicate.
        headers: Publish metadata that is not an envelope key, to send as NATS headers.
        content_type: The content type of ``payload``.
    """

    payload: bytes
    msg_id: str | None
    headers: dict[str, str]
    content_type: str


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received message, unwrapped.

    Attributes:
        data: The application payload.
        cloud_event: The parsed envelope, or None if the message was not one.
        expired: The envelope's ``expiration`` has passed; Dapr drops such events.
    """

    data: bytes
    cloud_event: dict[str, Any] | None = None
    expired: bool = False


@dataclass(slots=True)
class _Options:
    """Publish metadata, split into what shapes the envelope and the rest."""

    raw: bool = False
    content_type: str | None = None
    ttl: int | None = None
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def wrap(
    data: Data,
    *,
    topic: str,
    pubsub_name: str,
    source: str = "jsnb",
    metadata: Mapping[str, Any] | None = None,
) -> Outgoing:
    """Build the message Dapr would publish for ``data``.

    Args:
        data: Bytes, text, or a value ``orjson`` can encode.
        topic: The topic, recorded in the envelope.
        pubsub_name: The component name, recorded in the envelope.
        source: The envelope's ``source``; Dapr uses the app id.
        metadata: Publish metadata, as given to Dapr's publish API; see
            :func:`normalize_metadata` for the values it takes.

    Raises:
        MetadataError: A metadata value is not text, or a ``rawPayload``,
            ``ttlInSeconds`` or ``contentType`` value is unusable.
    """
    opts = _parse_metadata(normalize_metadata(metadata, what="publish")) if metadata else _Options()
    if opts.raw:
        # As upstream: an expiration needs an envelope to live in, so ttl is ignored.
        return _wrap_raw(data, opts)
    micros, now = _clock.now()
    content_type = opts.content_type
    if content_type is not None and _base_type(content_type) == CLOUDEVENT_CONTENT_TYPE:
        event = _callers_event(data, content_type)
        if not event.get("id"):
            event["id"] = opts.fields.get("id") or _new_id()
        # The caller's fields win; overrides and defaults only fill the gaps.
        defaults = {"source": source, "type": EVENT_TYPE, "specversion": SPEC_VERSION}
        defaults |= opts.fields
        defaults["time"] = now
        for key, value in defaults.items():
            if not event.get(key):
                event[key] = value
        # As upstream: the event now lives on this topic, whatever it said before.
        event["topic"] = topic
        event["pubsubname"] = pubsub_name
        data_field, data_value = "", None  # the data stays where the caller put it
    else:
        content_type, data_field, data_value = _place(data, content_type)
        event = {
            "id": opts.fields.get("id") or _new_id(),
            "source": source,
            "type": EVENT_TYPE,
            "specversion": SPEC_VERSION,
            "datacontenttype": content_type,
            "topic": topic,
            "pubsubname": pubsub_name,
            "time": now,
        }
        event |= opts.fields
    if opts.ttl is not None:
        event["expiration"] = _expiration(micros, opts.ttl)
    if data_field:
        # Last, so a subscriber finds JSON text as published at the end (see _published_text).
        event[data_field] = data_value
    return Outgoing(orjson.dumps(event), _event_id(event), opts.headers, CLOUDEVENT_CONTENT_TYPE)


def unwrap(payload: bytes, *, raw: bool = False) -> Incoming:
    """Recover the application payload from a received message.

    A message that is not a CloudEvent (not JSON, not an object, no
    ``specversion`` or ``id``, bad ``data_base64``) is delivered as it came.
    Never raises.

    Args:
        payload: The message body.
        raw: The subscription reads raw payloads (``rawPayload=true``).
    """
    if raw:
        return Incoming(payload)
    data, event, expired = decode(payload)
    if data is None:
        assert event is not None
        data = event_data_text(event, payload)
    return Incoming(data, event, expired)


def decode(payload: bytes) -> tuple[bytes | None, dict[str, Any] | None, bool]:
    """``unwrap`` as a plain ``(data, cloud_event, expired)`` tuple: the subscriber's hot path.

    ``data`` is None when it is the JSON text of ``cloud_event["data"]``:
    :func:`event_data_text` makes it, and :class:`~jsnb.messages.Message` calls
    that only when the handler reads ``data`` (``json()`` uses the parsed
    value). Building the frozen ``Incoming`` costs a third of the unwrapping.
    """
    if not payload or payload[0] not in _OBJECT_START:
        return payload, None, False
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload, None, False
    if type(event) is not dict or "specversion" not in event or "id" not in event:
        return payload, None, False
    encoded = event.get("data_base64")
    if encoded is not None:
        data = _base64_data(encoded)
        if data is None:
            return payload, None, False
    elif "data" not in event:
        data = b""
    else:
        value = event["data"]
        if isinstance(value, str) and not _is_json(event.get("datacontenttype")):
            data = value.encode()
        else:
            data = None  # its JSON text, made on demand
    return data, event, _has_expired(event) if "expiration" in event else False


def normalize_metadata(metadata: Mapping[str, Any] | None, *, what: str) -> dict[str, str]:
    """Publish or subscribe metadata as Dapr holds it: text keys and text values.

    Dapr's APIs carry metadata as strings, so a bool, int or float is written
    as Go spells it (``True`` -> ``"true"``, ``60`` -> ``"60"``); any other
    value is refused here, by key, before it half-works further on.

    Args:
        metadata: The metadata; keys keep their spelling.
        what: Whose metadata it is, for the error: ``"publish"`` or ``"subscribe"``.

    Raises:
        MetadataError: A key is not a str, or a value not a str, bool, int or float.
    """
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise MetadataError(
                f"jsnb: {what} metadata key {key!r} is a {type(key).__name__}; expected a str",
                key=str(key),
            )
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            out[key] = str(value)
        else:
            # The type only: a header value may be a credential.
            raise MetadataError(
                f"jsnb: {what} metadata {key!r} is a {type(value).__name__}; expected a str "
                "(a bool, int or float is written as text, as Dapr does)",
                key=key,
            )
    return out


def _parse_metadata(metadata: Mapping[str, str]) -> _Options:
    opts = _Options()
    for key, value in metadata.items():
        folded = key.lower()
        name = _OVERRIDES.get(folded)
        if name is not None:
            # As upstream: an empty override leaves the default in place.
            if value:
                opts.fields[name] = value
        elif folded == "rawpayload":
            opts.raw = parse_raw_payload(value)
        elif folded == "contenttype":
            opts.content_type = value or None
        elif folded == "ttlinseconds":
            opts.ttl = _parse_ttl(value)
        else:
            opts.headers[key] = value
    # Dapr writes one trace context to both fields, traceparent winning over traceid.
    trace = opts.fields.get("traceparent") or opts.fields.get("traceid")
    if trace:
        opts.fields["traceid"] = opts.fields["traceparent"] = trace
    return opts


def parse_raw_payload(value: str) -> bool:
    """The ``rawPayload`` flag, read as Dapr reads it (Go's ParseBool, any case)."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE or not text:
        return False
    raise MetadataError(
        f"jsnb: rawPayload {value!r} is not valid: expected true or false (also 1/0, t/f)",
        key="rawPayload",
    )


def _parse_ttl(value: str) -> int | None:
    if not value:
        return None
    seconds = int(value) if _GO_INT.fullmatch(value) else 0
    if seconds <= 0:
        raise MetadataError(
            f"jsnb: ttlInSeconds {value!r} is not valid: expected a whole number of seconds > 0",
            key="ttlInSeconds",
        )
    return seconds


def _expiration(micros: int, ttl: int) -> str:
    try:
        return _rfc3339(_EPOCH + timedelta(seconds=ttl, microseconds=micros))
    except OverflowError:
        raise MetadataError(
            f"jsnb: ttlInSeconds '{ttl}' is not valid: the expiration falls after year 9999",
            key="ttlInSeconds",
        ) from None


class _Clock:
    """The current UTC time as RFC 3339 text with microseconds, cheaply.

    ``datetime.now(UTC).isoformat()`` costs over a microsecond, a fifth of
    ``wrap``; the date and time of day change once a second, so they are cached.
    """

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # one tuple: safe across threads

    def now(self) -> tuple[int, str]:
        """Microseconds since the epoch, and the same moment as ``2026-11-27T02:05:48.123456Z``."""
        micros = time.time_ns() // 1000  # floored, as datetime.now() does
        second, fraction = divmod(micros, 1_000_000)
        cached, text = self._second
        if second != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return micros, f"{text}.{fraction:06d}Z"


_clock = _Clock()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _new_id() -> str:
    # A uuid4 string, without building the uuid.UUID object that doubles the cost.
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _rfc3339(moment: datetime) -> str:
    # isoformat is the fastest formatter; swap its "+00:00" for the usual "Z".
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def _base_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


@functools.lru_cache(maxsize=256)
def _kind(content_type: str) -> str:
    """Whether data of this type is JSON, text or opaque bytes (cached: few types recur)."""
    base = _base_type(content_type)
    if base == JSON_CONTENT_TYPE or base.endswith("+json"):
        return _JSON
    return _TEXT if base.startswith("text/") else _BINARY


def _place(data: Data, content_type: str | None) -> tuple[str, str, Any]:
    """Choose ``datacontenttype`` and put ``data`` where its bytes survive the trip."""
    if isinstance(data, str):
        content_type = content_type or TEXT_CONTENT_TYPE
        kind = _kind(content_type)
        if kind is _TEXT:
            return content_type, "data", data
        body = data.encode()
    elif isinstance(data, bytes | bytearray | memoryview):
        content_type = content_type or BINARY_CONTENT_TYPE
        kind = _kind(content_type)
        body = data if isinstance(data, bytes) else bytes(data)
    else:
        content_type = content_type or JSON_CONTENT_TYPE
        kind = _kind(content_type)
        if kind is _JSON:
            return content_type, "data", data
        body = orjson.dumps(data)
    if kind is _JSON:
        # As upstream, JSON goes in `data` as JSON; written verbatim, its text survives the trip.
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            # Upstream would send the text as a JSON string, which every subscriber (Dapr's
            # too) reads back in quotes; data_base64 keeps the bytes.
            pass
        else:
            return content_type, "data", orjson.Fragment(body)
    elif kind is _TEXT:
        try:
            return content_type, "data", body.decode()
        except UnicodeDecodeError:
            pass
    return content_type, "data_base64", binascii.b2a_base64(body, newline=False).decode("ascii")


def _callers_event(data: Data, content_type: str) -> dict[str, Any]:
    """The caller's own CloudEvent, as a new dict we may fill in."""
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, str | bytes | bytearray | memoryview):
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            return event
        what = f"{type(data).__name__} that is not a JSON object"
    else:
        what = type(data).__name__
    raise MetadataError(
        f"jsnb: contentType {content_type!r} needs a CloudEvent as data "
        f"(a dict, or a JSON object as str or bytes), got {what}",
        key="contentType",
    )


def _wrap_raw(data: Data, opts: _Options) -> Outgoing:
    if isinstance(data, bytes | bytearray | memoryview):
        content_type = BINARY_CONTENT_TYPE
        payload = data if isinstance(data, bytes) else bytes(data)
        event = _parse_object(payload)
    elif isinstance(data, str):
        content_type = TEXT_CONTENT_TYPE
        payload = data.encode()
        event = _parse_object(payload)
    else:
        content_type = JSON_CONTENT_TYPE
        payload = orjson.dumps(data)
        event = data
    msg_id = _event_id(event) or opts.fields.get("id")
    return Outgoing(payload, msg_id, opts.headers, opts.content_type or content_type)


def _parse_object(payload: bytes) -> Any:
    """Parse ``payload`` only if it may be a JSON object, so binary is never parsed."""
    if payload[:1] != b"{":
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _event_id(event: Any) -> str | None:
    if type(event) is not dict or "specversion" not in event:
        return None
    event_id = event.get("id")
    return event_id if isinstance(event_id, str) and event_id else None


def _base64_data(encoded: Any) -> bytes | None:
    """``data_base64`` decoded; None if it is not valid base64 text."""
    if not isinstance(encoded, str):
        return None
    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _is_json(content_type: Any) -> bool:
    return isinstance(content_type, str) and _kind(content_type) is _JSON


def event_data_text(event: dict[str, Any], payload: bytes) -> bytes:
    """The JSON text of ``event["data"]``, as published in *payload* where it can tell."""
    encoded = orjson.dumps(event["data"])
    if payload.endswith(encoded, 0, -1):
        return encoded  # the common case: canonical text, last, as jsnb writes it
    return _published_text(event, payload) or encoded


def _published_text(event: dict[str, Any], payload: bytes) -> bytes | None:
    """The JSON text of ``data`` as it was published, if it ends the envelope.

    jsnb writes ``data`` last and verbatim, so ``{"a": 1}`` comes back with its
    space; Go's encoder (``dapr publish``) sorts the keys and puts ``data`` first.
    """
    if next(reversed(event)) != "data" or payload[-1:] != b"}":
        return None
    start = payload.find(b'"data":')
    if start < 0:
        return None
    # The first '"data":' is the top-level key unless an earlier member holds one; then the
    # rest has unbalanced brackets and does not parse, as it does not if data is not last.
    text = payload[start + 7 : -1]
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return text


def _has_expired(event: dict[str, Any]) -> bool:
    expiration = event.get("expiration")
    if not isinstance(expiration, str):
        return False
    try:
        moment = datetime.fromisoformat(expiration)
    except ValueError:
        return False
    # As upstream: an expiration that is not RFC3339 (no offset) never expires.
    return moment.tzinfo is not None and moment < datetime.now(UTC)
