"""Stream and consumer info as flat records and DataFrames.

>>> sub = await ps.subscribe("orders", lambda msg: None)
>>> record = consumer_record(await sub.consumer_info())
>>> record["num_ack_pending"], record["stalled"]
(0, False)

The server's nested info objects become one flat dict each, in the words the
component's metadata uses (ackWait, backOff, ...), so a table of them reads
like the configuration that produced them. pandas is imported only here, and
only when a DataFrame is asked for.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nats.js import api

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COUNTER_HELP",
    "Record",
    "consumer_record",
    "format_records",
    "is_stalled",
    "stream_record",
    "to_frame",
]

_DELIVER_WORDS = {
    "all": "all",
    "last": "last",
    "new": "new",
    "by_start_sequence": "sequence",
    "by_start_time": "time",
    "last_per_subject": "last_per_subject",
}


# What each consumer counter means, in the words users ask about (nats-server #6874,
# #6093, nats.go #968). ConsumerState shows these on hover and in explain().
COUNTER_HELP = {
    "delivered_stream_seq": (
        "the highest stream sequence the consumer has delivered (consumer seq: deliveries "
        "made, redeliveries included)"
    ),
    "ack_floor_stream_seq": (
        "every message up to this stream sequence is acknowledged (or terminated); acks "
        "above it are kept as a set and not shown"
    ),
    "num_ack_pending": (
        "delivered and not yet acknowledged: being handled, NAKed and waiting for their "
        "delay, or lost acks waiting for ackWait; capped by maxAckPending"
    ),
    "num_redelivered": ("messages among the ack-pending ones that were delivered more than once"),
    "num_pending": (
        "stored messages matching the filter that the consumer has not delivered yet (unprocessed)"
    ),
    "num_waiting": "pull requests waiting for messages (always 0 for a push consumer)",
    "stalled": (
        "ack pending has reached maxAckPending while messages wait: the server sends "
        "nothing more until some are acknowledged"
    ),
}


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def is_stalled(info: api.ConsumerInfo) -> bool:
    """The server holds back deliveries: ack pending is at maxAckPending and messages wait.

    The one home of the stall rule (components-contrib #3922, nats-server #4112):
    ``consumer_report`` and ``ConsumerState`` both read it.
    """
    limit = info.config.max_ack_pending or 0
    return 0 < limit <= (info.num_ack_pending or 0) and (info.num_pending or 0) > 0


class Record(dict[str, Any]):
    """A plain dict that shows itself as a two-column table in a notebook."""

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in self.items()
        )
        return f"<table class='jsnb-record'>{rows}</table>"


def consumer_mode(cfg: api.ConsumerConfig) -> str:
    """``push`` or ``pull``: a push consumer is one with a deliver subject."""
    return "push" if cfg.deliver_subject else "pull"


def consumer_record(info: api.ConsumerInfo) -> Record:
    """The delivery counters and the effective config of one consumer."""
    cfg = info.config
    delivered = info.delivered
    floor = info.ack_floor
    return Record(
        {
            "stream": info.stream_name,
            "consumer": info.name,
            "durable": bool(cfg.durable_name),
            "consumerMode": consumer_mode(cfg),
            "filter_subject": cfg.filter_subject or ", ".join(cfg.filter_subjects or []),
            "delivered_stream_seq": delivered.stream_seq if delivered else 0,
            "delivered_consumer_seq": delivered.consumer_seq if delivered else 0,
            "ack_floor_stream_seq": floor.stream_seq if floor else 0,
            "ack_floor_consumer_seq": floor.consumer_seq if floor else 0,
            "num_pending": info.num_pending or 0,
            "num_ack_pending": info.num_ack_pending or 0,
            "num_redelivered": info.num_redelivered or 0,
            "num_waiting": info.num_waiting or 0,
            "push_bound": bool(info.push_bound),
            "maxWaiting": cfg.max_waiting or 0,
            "deliverPolicy": _DELIVER_WORDS.get(
                _value(cfg.deliver_policy), _value(cfg.deliver_policy)
            ),
            "ackPolicy": _value(cfg.ack_policy),
            "ackWait_s": cfg.ack_wait,
            "backOff_s": tuple(cfg.backoff or ()),
            "maxDeliver": cfg.max_deliver,
            "maxAckPending": cfg.max_ack_pending,
            "queueGroupName": cfg.deliver_group or "",
            "heartbeat_s": cfg.idle_heartbeat or 0.0,
            "flowControl": bool(cfg.flow_control),
            "rateLimit": cfg.rate_limit_bps or 0,
            "replicas": cfg.num_replicas or 0,
            "paused": bool(info.paused),
            "stalled": is_stalled(info),
        }
    )


def stream_record(info: api.StreamInfo) -> Record:
    """Size, sequence range and consumer count of one stream."""
    cfg, st = info.config, info.state
    return Record(
        {
            "stream": cfg.name,
            "subjects": ", ".join(cfg.subjects or []),
            "messages": st.messages,
            "bytes": st.bytes,
            "first_seq": st.first_seq,
            "last_seq": st.last_seq,
            "consumers": st.consumer_count,
            "storage": _value(cfg.storage),
            "replicas": cfg.num_replicas,
            "duplicate_window_s": cfg.duplicate_window,
        }
    )


def to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame of records (pandas imported on first use)."""
    import pandas as pd

    return pd.DataFrame(list(records))


def format_records(records: list[dict[str, Any]]) -> str:
    """A plain-text table, for terminals where no DataFrame renders (one record: vertical)."""
    if not records:
        return "(none)"
    if len(records) == 1:
        width = max(len(k) for k in records[0])
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in records[0].items())
    keys = list(records[0])
    cells = [[str(r.get(k, "")) for k in keys] for r in records]
    widths = [max(len(k), *(len(row[i]) for row in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
