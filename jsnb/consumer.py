"""From component metadata to a JetStream consumer, and back again.

>>> from jsnb import Metadata
>>> md = Metadata.from_properties({"natsURL": "embedded", "backOff": "1s, 5s", "maxDeliver": 4})
>>> [nak_delay(md, n) for n in (1, 2, 3)]
[1.0, 5.0, 5.0]

Upstream maps every metadata field onto a push consumer with the topic as its
filter subject; we do the same, and add what upstream lacks: retuning a live
durable consumer and naming exactly which fields cannot be changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nats.js import api

from jsnb.durations import to_seconds
from jsnb.errors import JsnbError
from jsnb.metadata import AckPolicy, DeliverPolicy, Metadata

# Ephemeral consumers outlive a connection outage this long; jsnb deletes them
# itself on unsubscribe, so they never linger after a clean close.
EPHEMERAL_INACTIVE_THRESHOLD = 300.0

_DELIVER = {
    DeliverPolicy.ALL: api.DeliverPolicy.ALL,
    DeliverPolicy.LAST: api.DeliverPolicy.LAST,
    DeliverPolicy.NEW: api.DeliverPolicy.NEW,
    DeliverPolicy.SEQUENCE: api.DeliverPolicy.BY_START_SEQUENCE,
    DeliverPolicy.TIME: api.DeliverPolicy.BY_START_TIME,
}
_ACK = {
    AckPolicy.EXPLICIT: api.AckPolicy.EXPLICIT,
    AckPolicy.ALL: api.AckPolicy.ALL,
    AckPolicy.NONE: api.AckPolicy.NONE,
}
# Fields nats-server 2.15 lets a live consumer change (measured), by Dapr key.
UPDATABLE = {
    "ackWait": "ack_wait",
    "maxDeliver": "max_deliver",
    "backOff": "backoff",
    "maxAckPending": "max_ack_pending",
    "rateLimit": "rate_limit_bps",
    "replicas": "num_replicas",
}
# Fields it refuses to change ("... can not be updated", error 10012).
FIXED = {
    "deliverPolicy": "deliver_policy",
    "startSequence": "opt_start_seq",
    "startTime": "opt_start_time",
    "ackPolicy": "ack_policy",
    "flowControl": "flow_control",
    "heartbeat": "idle_heartbeat",
    "memoryStorage": "mem_storage",
    "queueGroupName": "deliver_group",
}


class ConsumerConflictError(JsnbError, ValueError):
    """A durable consumer exists with settings that cannot be changed in place."""


def consumer_config(md: Metadata, topic: str, deliver_subject: str) -> api.ConsumerConfig:
    """The push consumer upstream creates for *topic*, field by field."""
    policy = md.deliver_policy
    cfg = api.ConsumerConfig(
        durable_name=md.durable_name or None,
        deliver_subject=deliver_subject,
        deliver_group=md.queue_group_name or None,
        deliver_policy=_DELIVER[policy],
        ack_policy=_ACK[md.ack_policy],
        filter_subject=topic,
    )
    if policy is DeliverPolicy.SEQUENCE:
        cfg.opt_start_seq = md.start_sequence
    if policy is DeliverPolicy.TIME and md.start_time is not None:
        cfg.opt_start_time = dt.datetime.fromtimestamp(md.start_time, tz=dt.UTC)
    if md.flow_control:
        cfg.flow_control = True
    if md.heartbeat:
        cfg.idle_heartbeat = to_seconds(md.heartbeat)
    if md.ack_wait:
        cfg.ack_wait = to_seconds(md.ack_wait)
    if md.max_deliver:
        cfg.max_deliver = md.max_deliver
    if md.back_off:
        cfg.backoff = [v.total_seconds() for v in md.back_off]
    if md.max_ack_pending:
        cfg.max_ack_pending = md.max_ack_pending
    if md.replicas:
        cfg.num_replicas = md.replicas
    if md.memory_storage:
        cfg.mem_storage = True
    if md.rate_limit:
        cfg.rate_limit_bps = md.rate_limit
    if not md.durable_name:
        cfg.inactive_threshold = EPHEMERAL_INACTIVE_THRESHOLD
    return cfg


@dataclass(frozen=True)
class ConfigDiff:
    """How a wanted consumer config differs from the one on the server."""

    updatable: dict[str, tuple[Any, Any]]
    fixed: dict[str, tuple[Any, Any]]

    def __bool__(self) -> bool:
        return bool(self.updatable or self.fixed)


def _norm(value: Any) -> Any:
    if isinstance(value, api.DeliverPolicy | api.AckPolicy):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def diff_config(want: api.ConsumerConfig, have: api.ConsumerConfig) -> ConfigDiff:
    """Compare only what *want* sets; what the metadata leaves unset keeps the server's value.

    With backOff set, the server replaces ackWait by backOff[0], so ackWait is
    then not compared.
    """
    updatable: dict[str, tuple[Any, Any]] = {}
    fixed: dict[str, tuple[Any, Any]] = {}
    for table, out in ((UPDATABLE, updatable), (FIXED, fixed)):
        for key, attr in table.items():
            wanted = getattr(want, attr)
            if attr == "ack_wait" and want.backoff:
                continue
            if wanted is None and attr not in ("deliver_group",):
                continue
            current = getattr(have, attr)
            if attr in ("flow_control", "mem_storage"):
                wanted, current = bool(wanted), bool(current)
            if _norm(wanted) != _norm(current):
                out[key] = (_norm(current), _norm(wanted))
    return ConfigDiff(updatable, fixed)


def describe_conflict(durable: str, stream: str, fixed: dict[str, tuple[Any, Any]]) -> str:
    """The error text for settings a live consumer cannot take."""
    parts = ", ".join(
        f"{k} (server has {old!r}, metadata wants {new!r})" for k, (old, new) in fixed.items()
    )
    return (
        f"jsnb: durable consumer {durable!r} on stream {stream!r} exists with other settings "
        f"that nats-server cannot change in place: {parts}. Use a new durableName, or delete "
        f"the consumer first (await ps.delete_consumer({stream!r}, {durable!r}))"
    )


def backoff_at(backoff: Sequence[float], attempt: int) -> float:
    """backOff's seconds for delivery *attempt* (1-based); the last value repeats."""
    return backoff[min(max(attempt, 1), len(backoff)) - 1]


def nak_delay(md: Metadata, num_delivered: int, server_backoff: Sequence[float] = ()) -> float:
    """Seconds to wait before redelivering a failed delivery (0 = at once).

    backOff's value for this attempt, else ackWait, else immediately; the
    server's backOff (a durable may carry one the metadata lacks) comes first.
    Upstream always uses ackWait here, ignoring backOff.
    """
    backoff = server_backoff or [v.total_seconds() for v in md.back_off]
    if backoff:
        return backoff_at(backoff, num_delivered)
    return md.ack_wait.total_seconds()


def nak_request(backoff: list[float] | None, delay: float) -> float | None:
    """The delay to send with a NAK so the server redelivers after *delay* seconds.

    Measured on nats-server 2.15: on a consumer with backOff, a NAK asking for
    d after delivery n is redelivered after d + backOff[n-1] - backOff[0], and
    a NAK without a delay at once. So asking for backOff[0] yields backOff[n-1],
    the delay :func:`nak_delay` wants; without backOff the delay is taken as is.
    None means "redeliver at once".
    """
    if backoff:
        return max(backoff[0], 1e-9)  # 1 ns: "no delay" would skip backOff entirely
    return delay or None


def is_last_delivery(md: Metadata, have: api.ConsumerConfig | None, num_delivered: int) -> bool:
    """True when the server will not deliver this message again after a failure."""
    limit = have.max_deliver if have is not None and have.max_deliver else md.max_deliver
    return bool(limit and limit > 0 and num_delivered >= limit)
