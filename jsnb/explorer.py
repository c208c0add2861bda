"""See any JetStream server as it is: every consumer's counters, and the stored messages.

>>> _ = await ps.publish("orders", {"id": 1})
>>> _ = await ps.jetstream.add_consumer("ORDERS", durable_name="billing")
>>> report = await jsnb.consumer_report(ps)                 # natscli's `consumer report`
>>> list(report.consumer), list(report.unprocessed)
(['billing'], [1])
>>> page = await jsnb.browse_stream(ps, "ORDERS", since="1h")  # natscli's `stream view`
>>> msg = await jsnb.read_message(ps, "ORDERS", int(page.seq.iloc[0]))
>>> msg.subject, msg.cloud_event["type"]
('orders', 'com.dapr.event.sent')
>>> list((await jsnb.acked_by(ps, "ORDERS", msg.seq)).state)  # which consumers are past it
['not delivered yet']

Nothing here goes through a consumer: the report reads consumer info, and
messages are read with the stream's message-get API (direct get when the
stream allows it), so work-queue and interest streams are browsed without
taking anything off them. It works the same for consumers and streams jsnb
did not create. A page is ``limit`` lookups by sequence, each an index
lookup on the server, so it costs the same at sequence 1 and 1,000,000
(``python -m bench browse`` measures it).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from jsnb.cloudevents import unwrap
from jsnb.durations import parse_duration
from jsnb.errors import (
    NO_MESSAGE_FOUND,
    ConsumerNotFoundError,
    InvalidArgumentError,
    MessageNotFoundError,
    StreamNotFoundError,
)
from jsnb.retry import RetryRule
from jsnb.state import consumer_mode, is_stalled
from jsnb.subjects import subjects_overlap

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_PAGE",
    "REPORT_COLUMNS",
    "StoredMessage",
    "acked_by",
    "browse_stream",
    "consumer_report",
    "pause_consumer",
    "read_message",
    "reset_consumer",
    "resume_consumer",
]

MAX_PAGE = 1000  # a page is held in memory whole: bound it
_PREVIEW_CHARS = 120
_PAGE_SIZE = 256  # nats-server answers consumer and stream lists 256 at a time
_GET_TIMEOUT = 5.0
_WRAP = "white-space:pre-wrap;overflow-wrap:anywhere;max-height:20em;overflow-y:auto"
# Headers a direct get adds to the stored message's own (nats-server's stream.go).
_DIRECT_HEADERS = frozenset(
    {"Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp", "Nats-Num-Pending"}
)
REPORT_COLUMNS = (
    "stream",
    "consumer",
    "mode",
    "ack_policy",
    "ack_wait_s",
    "backoff_s",
    "max_deliver",
    "max_ack_pending",
    "ack_pending",
    "redelivered",
    "unprocessed",
    "ack_floor",
    "delivered",
    "last_delivery",
    "waiting",
    "cluster_leader",
    "paused",
    "stalled",
)


class _Server(Protocol):
    """What the explorer needs of a :class:`jsnb.JetStreamPubSub`."""

    @property
    def nc(self) -> Client: ...

    @property
    def jetstream(self) -> JetStreamContext: ...

    @property
    def api_prefix(self) -> str: ...


# -- consumer report ---------------------------------------------------------------------


async def consumer_report(ps: _Server, stream: str | None = None) -> pd.DataFrame:
    """One row per consumer of *stream* (or of every stream), natscli's columns and more.

    ``ack_wait_s`` is the effective ack deadline of a first delivery
    (backOff[0] when backOff is set: the server replaces ackWait by it);
    ``stalled`` is true when ack pending sits at maxAckPending while
    messages wait (:func:`jsnb.state.is_stalled`). Raises
    :class:`~jsnb.StreamNotFoundError` for an unknown *stream*.
    """
    import pandas as pd

    js = ps.jetstream
    names = [stream] if stream is not None else await _stream_names(js)
    rows = []
    for name in names:
        rows += [_report_row(info) for info in await _consumers(js, name)]
    return pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


def _report_row(info: api.ConsumerInfo) -> dict[str, Any]:
    cfg = info.config
    rule = RetryRule.from_config(cfg)
    delivered, floor = info.delivered, info.ack_floor
    return {
        "stream": info.stream_name,
        "consumer": info.name,
        "mode": consumer_mode(cfg),
        "ack_policy": getattr(cfg.ack_policy, "value", cfg.ack_policy),
        "ack_wait_s": rule.ack_deadline(1),
        "backoff_s": rule.backoff,
        "max_deliver": rule.max_deliver,
        "max_ack_pending": cfg.max_ack_pending or 0,
        "ack_pending": info.num_ack_pending or 0,
        "redelivered": info.num_redelivered or 0,
        "unprocessed": info.num_pending or 0,
        "ack_floor": floor.stream_seq if floor else 0,
        "delivered": delivered.stream_seq if delivered else 0,
        "last_delivery": delivered.last_active if delivered else None,
        "waiting": info.num_waiting or 0,
        "cluster_leader": info.cluster.leader if info.cluster and info.cluster.leader else "",
        "paused": bool(info.paused),
        "stalled": is_stalled(info),
    }


async def _stream_names(js: JetStreamContext) -> list[str]:
    names: list[str] = []
    while True:
        batch = await js.streams_info(offset=len(names))
        names += [info.config.name for info in batch if info.config.name]
        if len(batch) < _PAGE_SIZE:
            return names


async def _consumers(js: JetStreamContext, stream: str) -> list[api.ConsumerInfo]:
    found: list[api.ConsumerInfo] = []
    while True:
        try:
            batch = await js.consumers_info(stream, offset=len(found))
        except nats.js.errors.NotFoundError:
            raise await _no_stream(js, stream) from None
        found += batch
        if len(batch) < _PAGE_SIZE:
            return found


async def _no_stream(js: JetStreamContext, stream: str) -> StreamNotFoundError:
    known = ", ".join(sorted(await _stream_names(js))) or "none"
    return StreamNotFoundError(
        f"jsnb: stream {stream!r} does not exist on this server; its streams: {known}"
    )


async def _stream_info(js: JetStreamContext, stream: str) -> api.StreamInfo:
    try:
        return await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise await _no_stream(js, stream) from None


# -- stored messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class StoredMessage:
    """One message as its stream stores it, with its CloudEvent envelope read if it has one.

    ``data`` is the stored payload, byte for byte; ``payload`` the application
    data (inside the envelope for a CloudEvent, else ``data`` itself).
    """

    stream: str
    seq: int
    time: dt.datetime
    subject: str
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    cloud_event: dict[str, Any] | None = None
    payload: bytes = b""

    def as_row(self) -> dict[str, Any]:
        """The message as a row of :func:`browse_stream`'s page."""
        ce = self.cloud_event or {}
        return {
            "seq": self.seq,
            "time": self.time,
            "subject": self.subject,
            "size": len(self.data),
            "headers": self.headers,
            "ce_id": ce.get("id", ""),
            "ce_type": ce.get("type", ""),
            "ce_source": ce.get("source", ""),
            "preview": preview(self.payload),
        }

    def _repr_html_(self) -> str:
        rows = {
            "stream / seq": f"{self.stream} / {self.seq}",
            "time": self.time.isoformat(),
            "subject": self.subject,
            "size": f"{len(self.data):,} bytes",
            **{f"header {k}": v for k, v in self.headers.items()},
        }
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in rows.items()
        )
        parts = [f"<table class='jsnb-record'>{body}</table>"]
        if self.cloud_event is not None:
            envelope = {
                k: v for k, v in self.cloud_event.items() if k not in ("data", "data_base64")
            }
            parts.append(
                f"<b>CloudEvent</b><pre style='{_WRAP}'>{html.escape(_pretty(envelope))}</pre>"
            )
        parts.append(
            f"<b>payload</b><pre style='{_WRAP}'>{html.escape(full_text(self.payload))}</pre>"
        )
        return "".join(parts)


def preview(data: bytes, limit: int = _PREVIEW_CHARS) -> str:
    """A one-line look at a payload: compact JSON, else text, else hex."""
    text = full_text(data, pretty=False).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def full_text(data: bytes, *, pretty: bool = True) -> str:
    """A payload as a reader wants it: JSON (indented when *pretty*), text, or hex."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        return _pretty(value) if pretty else orjson.dumps(value).decode()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "hex " + data.hex(" ")
    return text if text.isprintable() or not text else text.encode("unicode_escape").decode()


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


async def browse_stream(
    ps: _Server,
    stream: str,
    *,
    start_seq: int | None = None,
    since: dt.datetime | dt.timedelta | str | None = None,
    subject: str | None = None,
    limit: int = 50,
) -> pd.DataFrame:
    """A page of up to *limit* stored messages, oldest first, never through a consumer.

    Start at *start_seq*, or at the first message stored at or after *since*
    (a datetime, or how long ago: a timedelta or Go duration such as ``"1h"``),
    else at the stream's first message; *subject* (wildcards allowed) keeps
    only matching messages. Columns: seq, time, subject, size, headers,
    ce_id, ce_type, ce_source, preview. ``page.attrs`` holds the stream's
    ``first_seq`` and ``last_seq`` and the ``next_seq`` to continue from
    (None at the end).
    """
    import pandas as pd

    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"jsnb: limit {limit} must be between 1 and {MAX_PAGE}")
    if start_seq is not None and since is not None:
        raise InvalidArgumentError("jsnb: give start_seq or since, not both")
    reader = await _Reader.open(ps, stream)
    first, last = reader.first_seq, reader.last_seq
    if start_seq is not None:
        if start_seq < 1 or start_seq > max(last, 1):
            raise InvalidArgumentError(
                f"jsnb: start_seq {start_seq} is outside stream {stream!r}, which holds "
                f"sequences {first} to {last}" + (" (it is empty)" if last < first else "")
            )
        seq = start_seq
    elif since is not None:
        found = await reader.get({"start_time": _iso(_since(since))})
        seq = found.seq if found is not None else last + 1
    else:
        seq = first
    rows: list[dict[str, Any]] = []
    while len(rows) < limit and seq <= last:
        msg = await reader.get({"seq": seq, "next_by_subj": subject or ">"})
        if msg is None or msg.seq > last:
            seq = last + 1
            break
        rows.append(msg.as_row())
        seq = msg.seq + 1
    page = pd.DataFrame(rows, columns=list(_PAGE_COLUMNS))
    page.attrs.update(
        stream=stream, first_seq=first, last_seq=last, next_seq=seq if seq <= last else None
    )
    return page


_PAGE_COLUMNS = tuple(StoredMessage("", 0, dt.datetime.now(dt.UTC), "").as_row())


async def read_message(ps: _Server, stream: str, seq: int) -> StoredMessage:
    """Message *seq* of *stream*, whole: headers, CloudEvent envelope and payload."""
    reader = await _Reader.open(ps, stream)
    msg = await reader.get({"seq": seq})
    if msg is None:
        raise MessageNotFoundError(
            f"jsnb: stream {stream!r} has no message {seq} (it holds sequences "
            f"{reader.first_seq} to {reader.last_seq}; deleted or expired ones are gone)"
        )
    return msg


async def acked_by(ps: _Server, stream: str, seq: int) -> pd.DataFrame:
    """Per consumer of *stream*: how far it has settled message *seq*, from its ack floor.

    The server reports only the ack floor (everything at or below it is
    acknowledged); a message above the floor may still have been acked, and
    the answer then says so rather than guessing.
    """
    import pandas as pd

    msg = await read_message(ps, stream, seq)
    rows = []
    for info in await _consumers(ps.jetstream, stream):
        cfg = info.config
        filters = [cfg.filter_subject] if cfg.filter_subject else list(cfg.filter_subjects or [])
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        delivered = info.delivered.stream_seq if info.delivered else 0
        if filters and not any(subjects_overlap(f, msg.subject) for f in filters):
            state = "not its subject"
        elif floor >= seq:
            state = "acked"
        elif delivered < seq:
            state = "not delivered yet"
        elif getattr(cfg.ack_policy, "value", cfg.ack_policy) == "none":
            state = "acked (ackPolicy none: delivered is done)"
        elif not info.num_ack_pending:
            # Nothing pending: above the floor means acked out of order, terminated, or
            # given up on at maxDeliver (which holds the floor below it for good).
            state = "settled above the ack floor: acked, terminated or given up on"
        else:
            state = "above the ack floor: acked, or still pending"
        rows.append(
            {
                "consumer": info.name,
                "filter": ", ".join(filters) or "(all)",
                "ack_floor": floor,
                "delivered": delivered,
                "state": state,
            }
        )
    return pd.DataFrame(rows, columns=["consumer", "filter", "ack_floor", "delivered", "state"])


# -- consumer actions ----------------------------------------------------------------------


async def pause_consumer(
    ps: _Server, stream: str, consumer: str, until: dt.datetime | dt.timedelta | str
) -> api.ConsumerInfo:
    """Stop deliveries of *consumer* until *until* (a time, or how long: ``"10m"``).

    nats-server 2.11+; the server keeps every message, and publishes a
    ``consumer_paused`` advisory (an :class:`~jsnb.widgets.AdvisoryFeed` shows it).
    """
    moment = _until(until)
    js = ps.jetstream
    await _existing(js, stream, consumer)
    await js.pause_consumer(stream, consumer, moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return await _existing(js, stream, consumer)


async def resume_consumer(ps: _Server, stream: str, consumer: str) -> api.ConsumerInfo:
    """Resume a paused *consumer* now (nats-server 2.11+)."""
    js = ps.jetstream
    await _existing(js, stream, consumer)
    await js.resume_consumer(stream, consumer)
    return await _existing(js, stream, consumer)


async def reset_consumer(
    ps: _Server, stream: str, consumer: str, seq: int | None = None
) -> api.ConsumerInfo:
    """Forget what *consumer* has pending and redeliver from *seq* (or from its ack floor).

    nats-server 2.14+. Its ack floor becomes *seq* - 1, so every message from
    *seq* on is delivered again, acked or not.
    """
    js = ps.jetstream
    await _existing(js, stream, consumer)
    if seq is not None:
        stored = await _stream_info(js, stream)
        if not 1 <= seq <= stored.state.last_seq + 1:
            raise InvalidArgumentError(
                f"jsnb: reset seq {seq} is outside stream {stream!r}, which holds sequences "
                f"{stored.state.first_seq} to {stored.state.last_seq}"
            )
    return (await js.reset_consumer(stream, consumer, seq)).info


async def _existing(js: JetStreamContext, stream: str, consumer: str) -> api.ConsumerInfo:
    try:
        info: api.ConsumerInfo = await js.consumer_info(stream, consumer)
    except nats.js.errors.NotFoundError:
        names = sorted(c.name for c in await _consumers(js, stream))
        raise ConsumerNotFoundError(
            f"jsnb: consumer {consumer!r} does not exist on stream {stream!r}; its consumers: "
            f"{', '.join(names) or 'none'}"
        ) from None
    return info


def _until(until: dt.datetime | dt.timedelta | str) -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    if isinstance(until, str):
        try:
            until = parse_duration(until)
        except ValueError as exc:
            raise InvalidArgumentError(f"jsnb: until {exc}, or a datetime") from None
    moment = now + until if isinstance(until, dt.timedelta) else until.astimezone(dt.UTC)
    if moment <= now:
        raise InvalidArgumentError(f"jsnb: pause until {moment.isoformat()} is not in the future")
    return moment


def _since(since: dt.datetime | dt.timedelta | str) -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    if isinstance(since, str):
        try:
            since = parse_duration(since)
        except ValueError as exc:
            raise InvalidArgumentError(f"jsnb: since {exc}, or a datetime") from None
    if isinstance(since, dt.timedelta):
        if since < dt.timedelta(0):
            raise InvalidArgumentError(
                f"jsnb: since {since} is negative; give how long ago, e.g. '1h'"
            )
        return now - since
    moment = since.astimezone(dt.UTC)  # a naive datetime is local time, as Python reads it
    if moment > now:
        raise InvalidArgumentError(
            f"jsnb: since {since.isoformat()} is in the future (now is "
            f"{now.isoformat(timespec='seconds')}); nothing is stored after it yet"
        )
    return moment


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _parse_time(text: str) -> dt.datetime:
    """The server's RFC 3339 time, nanoseconds cut to what a datetime holds."""
    return dt.datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))


@dataclass
class _Reader:
    """Reads one stream's messages by the message-get API the stream offers."""

    nc: Client
    prefix: str
    stream: str
    direct: bool
    first_seq: int
    last_seq: int

    @classmethod
    async def open(cls, ps: _Server, stream: str) -> _Reader:
        info = await _stream_info(ps.jetstream, stream)
        return cls(
            ps.nc,
            ps.api_prefix,
            stream,
            bool(info.config.allow_direct),
            info.state.first_seq,
            info.state.last_seq,
        )

    async def get(self, request: Mapping[str, Any]) -> StoredMessage | None:
        """The message *request* selects (seq, next_by_subj, start_time), or None."""
        body = orjson.dumps(request)
        if self.direct:
            try:
                reply = await self.nc.request(
                    f"{self.prefix}.DIRECT.GET.{self.stream}", body, timeout=_GET_TIMEOUT
                )
            except nats.errors.NoRespondersError:
                raise await _no_stream(self.nc.jetstream(), self.stream) from None
            hdrs = reply.headers or {}
            if not reply.data and hdrs.get("Status"):
                if hdrs["Status"] == "404":
                    return None
                raise nats.js.errors.APIError.from_msg(reply)
            own = {k: v for k, v in hdrs.items() if k not in _DIRECT_HEADERS}
            return self._stored(
                int(hdrs["Nats-Sequence"]),
                hdrs["Nats-Time-Stamp"],
                hdrs["Nats-Subject"],
                own,
                reply.data,
            )
        reply = await self.nc.request(
            f"{self.prefix}.STREAM.MSG.GET.{self.stream}", body, timeout=_GET_TIMEOUT
        )
        answer = orjson.loads(reply.data)
        if "error" in answer:
            if answer["error"].get("err_code") == NO_MESSAGE_FOUND:
                return None
            raise nats.js.errors.APIError.from_error(answer["error"])
        m = answer["message"]
        return self._stored(
            m["seq"],
            m["time"],
            m["subject"],
            _parse_headers(base64.b64decode(m.get("hdrs") or "")),
            base64.b64decode(m.get("data") or ""),
        )

    def _stored(
        self, seq: int, time: str, subject: str, headers: dict[str, str], data: bytes
    ) -> StoredMessage:
        incoming = unwrap(data)
        payload, event = incoming.data, incoming.cloud_event
        return StoredMessage(
            self.stream, seq, _parse_time(time), subject, headers, data, event, payload
        )


def _parse_headers(block: bytes) -> dict[str, str]:
    """A stored header block (``NATS/1.0`` then ``Key: value`` lines) as a dict."""
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip()] = value.strip()
    return headers
