"""From component metadata to a JetStream consumer, and back again.

>>> from jsnb import Metadata
>>> md = Metadata.from_properties({"natsURL": "embedded", "backOff": "1s, 5s", "maxDeliver": 4})
>>> cfg = consumer_config(md, "orders", "_INBOX.x")
>>> cfg.backoff, cfg.max_deliver
([1.0, 5.0], 4)

Upstream maps every metadata field onto a push consumer with the topic as its
filter subject; we do the same from the metadata field table (each row names
its consumer attribute and whether nats-server can change it live), and add
what upstream lacks: retuning a live durable consumer field by field, and
naming exactly which fields cannot be changed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Self

from nats.js import api

from jsnb.durations import to_seconds
from jsnb.errors import ConsumerConflictError
from jsnb.metadata import AckPolicy, ConsumerMode, DeliverPolicy, FieldInfo, Kind, Metadata
from jsnb.state import consumer_mode

__all__ = [
    "EPHEMERAL_INACTIVE_THRESHOLD",
    "ConsumerConfig",
    "ConsumerConflictError",
    "FieldDrift",
    "Retune",
    "compare",
    "consumer_config",
    "retune",
]

# Ephemeral consumers outlive a connection outage this long; jsnb deletes them
# itself on unsubscribe, so they never linger after a clean close.
EPHEMERAL_INACTIVE_THRESHOLD = 300.0

_ENUMS: dict[str, dict[Any, Any]] = {
    "deliver_policy": {
        DeliverPolicy.ALL: api.DeliverPolicy.ALL,
        DeliverPolicy.LAST: api.DeliverPolicy.LAST,
        DeliverPolicy.NEW: api.DeliverPolicy.NEW,
        DeliverPolicy.SEQUENCE: api.DeliverPolicy.BY_START_SEQUENCE,
        DeliverPolicy.TIME: api.DeliverPolicy.BY_START_TIME,
    },
    "ack_policy": {
        AckPolicy.EXPLICIT: api.AckPolicy.EXPLICIT,
        AckPolicy.ALL: api.AckPolicy.ALL,
        AckPolicy.NONE: api.AckPolicy.NONE,
    },
}
# Always sent, even at their defaults: upstream sets them on every consumer.
_ALWAYS = frozenset({"deliver_policy", "ack_policy"})
_ROWS = tuple(
    info for info in Metadata.fields_table() if info.consumer and info.consumer != "durable_name"
)
# consumerMode is the consumer's kind, not a ConsumerConfig attribute: a push consumer is
# one with a deliver subject. It is compared (in its place in the field table), never set.
_MODE = Metadata.field_info("consumerMode")
_COMPARED = tuple(info for info in Metadata.fields_table() if info in _ROWS or info is _MODE)


@dataclass
class ConsumerConfig(api.ConsumerConfig):
    """nats-py's consumer config plus the pull request limits it does not know.

    nats-py 2.16 reads back neither field from the server, so :func:`compare`
    leaves them out when the server's config comes from nats-py.
    """

    max_batch: int | None = None  # maxRequestBatch
    max_expires: float | None = None  # maxRequestExpires, in seconds

    @classmethod
    def from_response(cls, resp: dict[str, Any]) -> Self:
        cls._convert_nanoseconds(resp, "max_expires")
        config: Self = super().from_response(resp)
        return config

    def as_dict(self) -> dict[str, object]:
        result = super().as_dict()
        if self.max_expires is not None:
            result["max_expires"] = self._to_nanoseconds(self.max_expires)
        return result


def _to_nats(info: FieldInfo, value: Any) -> Any:
    """A metadata value in nats-py's terms; None when the metadata leaves it unset."""
    if info.consumer in _ENUMS:
        return _ENUMS[info.consumer][value]
    if value == info.default:
        return None
    if info.kind is Kind.DURATION:
        return to_seconds(value)
    if info.kind is Kind.DURATIONS:
        return [v.total_seconds() for v in value]
    if info.kind is Kind.UNIX_TIME:
        return dt.datetime.fromtimestamp(value, tz=dt.UTC)
    return value or None


def consumer_config(md: Metadata, topic: str, deliver_subject: str) -> api.ConsumerConfig:
    """The consumer for *topic*, one field table row at a time.

    A push consumer as upstream creates it, or with ``consumerMode: pull`` the
    same without a deliver subject; there queueGroupName names no deliver
    group, since members share the durable by pulling from it.
    """
    pull = md.consumer_mode is ConsumerMode.PULL
    cfg = ConsumerConfig(
        durable_name=md.durable_name or None,
        deliver_subject=None if pull else deliver_subject,
        filter_subject=topic,
    )
    for info in _ROWS:
        if pull and info.consumer == "deliver_group":
            continue
        value = _to_nats(info, getattr(md, info.attr))
        if value is not None:
            setattr(cfg, info.consumer, value)
    if not md.durable_name:
        cfg.inactive_threshold = EPHEMERAL_INACTIVE_THRESHOLD
    return cfg


def _norm(value: Any) -> Any:
    if isinstance(value, api.DeliverPolicy | api.AckPolicy):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if value is False:
        return None
    return value


@dataclass(frozen=True)
class Retune:
    """How the metadata wants a live durable consumer changed.

    The metadata is the desired state for every key it sets; a key it leaves
    unset keeps the server's value (so a manifest that sets only maxAckPending
    does not strip a backOff set earlier). *config* is the server's config with
    the wanted values applied that nats-server can change in place; *fixed* lists
    the others, which need a new consumer.
    """

    config: api.ConsumerConfig
    updatable: dict[str, tuple[Any, Any]]
    fixed: dict[str, tuple[Any, Any]]

    def describe(self) -> str:
        """Every field that changes, old -> new, for the log."""
        return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in self.updatable.items())

    def conflict(self, durable: str, stream: str) -> str:
        """The error text for settings a live consumer cannot take."""
        parts = ", ".join(
            f"{k} (server has {old!r}, metadata wants {new!r})"
            for k, (old, new) in self.fixed.items()
        )
        return (
            f"jsnb: durable consumer {durable!r} on stream {stream!r} exists with other "
            f"settings that nats-server cannot change in place: {parts}. Use a new durableName, "
            f"or delete the consumer first (await ps.delete_consumer({stream!r}, {durable!r}))"
        )


@dataclass(frozen=True)
class FieldDrift:
    """One row of the field table compared: what the metadata asks, what the server holds.

    *wanted* and *held* are normalised for comparison (seconds, enum values,
    RFC 3339 times); *note* says why a row is not compared.
    """

    key: str
    wanted: Any
    held: Any
    differs: bool
    updatable: bool
    note: str = ""
    attr: str = field(default="", repr=False)
    value: Any = field(default=None, repr=False)  # *wanted* in nats-py's terms

    def as_row(self) -> dict[str, Any]:
        """The row as ``sub.drift()`` shows it."""
        change = ("in place" if self.updatable else "new consumer") if self.differs else ""
        return {
            "field": self.key,
            "metadata": self.wanted,
            "server": self.held,
            "differs": self.differs,
            "change": change,
            "note": self.note,
        }


def compare(md: Metadata, have: api.ConsumerConfig) -> list[FieldDrift]:
    """Every consumer row of the field table: the metadata's value next to the server's.

    The one home of the comparison rule :func:`retune` applies: a key the
    metadata leaves unset keeps the server's value, and with backOff set the
    server's ack wait is backOff[0], whatever ackWait says. The consumerMode row
    compares the kinds (push has a deliver subject): nats-server cannot turn one
    into the other, so a difference always needs a new consumer.
    """
    rows = []
    backoff = md.back_off or have.backoff
    for info in _COMPARED:
        if info is _MODE:
            rows.append(_kind(md, have))
            continue
        wanted = _to_nats(info, getattr(md, info.attr))
        note = ""
        if info.consumer == "deliver_group":
            # Joining needs the same group, or none; pull consumers have no deliver group.
            pull = md.consumer_mode is ConsumerMode.PULL
            wanted = None if pull else md.queue_group_name or None
        elif not hasattr(have, info.consumer):
            note = "nats-py does not read it back from the server"
        elif wanted is None:
            note = "unset in the metadata: the server's value stays"
        elif info.consumer == "ack_wait" and backoff:
            note = "backOff is set: the server waits backOff[0] instead"
        current = getattr(have, info.consumer, None)
        differs = not note and _norm(wanted) != _norm(current)
        rows.append(
            FieldDrift(
                info.key,
                _norm(wanted),
                _norm(current),
                differs,
                info.updatable,
                note,
                info.consumer,
                wanted,
            )
        )
    return rows


def _kind(md: Metadata, have: api.ConsumerConfig) -> FieldDrift:
    """The consumerMode row: never updatable, nats-server cannot turn one kind into the other."""
    wanted, held = md.consumer_mode.value, consumer_mode(have)
    return FieldDrift(_MODE.key, wanted, held, wanted != held, updatable=False)


def retune(md: Metadata, have: api.ConsumerConfig) -> Retune:
    """Compare the metadata with a live consumer's config, row by row of the field table."""
    merged = replace(have)
    updatable: dict[str, tuple[Any, Any]] = {}
    fixed: dict[str, tuple[Any, Any]] = {}
    for row in compare(md, have):
        if not row.differs:
            continue
        if row.updatable:
            updatable[row.key] = (row.held, row.wanted)
            setattr(merged, row.attr, row.value)
        else:
            fixed[row.key] = (row.held, row.wanted)
    return Retune(merged, updatable, fixed)
