"""Redelivery experiments: run a failure scenario and measure what JetStream does.

>>> url = ps.nc.connected_url.geturl()
>>> result = await run_scenario(url, {"backOff": "100ms, 300ms", "maxDeliver": 4},
...                             Scenario(messages=3, fail_times=2))
>>> len(result.attempts)   # one row per delivery attempt, observed vs predicted delay
9
>>> result.totals["lost"]
0

The experiment engine behind ``jsnb.widgets.RedeliveryLab``; it needs no widgets,
so tests and tutorials call it directly. Each run uses a fresh stream and
consumer, so runs never disturb each other or the user's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jsnb.advisories import Advisories, Advisory, AdvisoryKind
from jsnb.messages import FINAL_OUTCOMES, DeliveryEvent, Message, Outcome
from jsnb.metadata import Metadata
from jsnb.pubsub import JetStreamPubSub
from jsnb.retry import RetryRule
from jsnb.streams import ensure_stream

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "FINAL_OUTCOMES",
    "LabResult",
    "Scenario",
    "attempt_rows",
    "run_scenario",
    "timeline_figure",
]

_run_ids = itertools.count(1)
_ADVISORY_WAIT = 2.0


@dataclass(frozen=True)
class Scenario:
    """What the handler does to each message.

    ``fail_times``: fail the first k deliveries of every message.
    ``fail_probability``: fail each delivery with probability p (seeded).
    ``hang_seconds``: on the first delivery, sleep this long before succeeding,
    longer than ackWait to see the server redeliver a message still in work.
    """

    messages: int = 5
    fail_times: int = 0
    fail_probability: float = 0.0
    hang_seconds: float = 0.0
    payload_size: int = 16
    seed: int = 1
    timeout: float = 60.0

    def __post_init__(self) -> None:
        checks = {
            "messages": self.messages >= 1,
            "fail_times": self.fail_times >= 0,
            "fail_probability": 0.0 <= self.fail_probability <= 1.0,
            "hang_seconds": self.hang_seconds >= 0,
            "payload_size": self.payload_size >= 0,
            "timeout": self.timeout > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"jsnb: Scenario {name}={getattr(self, name)!r} is out of range")

    def describe(self) -> str:
        parts = [f"{self.messages} messages"]
        if self.fail_times:
            parts.append(f"fail {self.fail_times}x each")
        if self.fail_probability:
            parts.append(f"fail with p={self.fail_probability:g}")
        if self.hang_seconds:
            parts.append(f"first attempt hangs {self.hang_seconds:g}s")
        return ", ".join(parts)


@dataclass(repr=False)
class LabResult:
    """One run: every attempt, the totals, and the configuration that produced them."""

    run_id: int
    metadata: Metadata
    scenario: Scenario
    events: list[DeliveryEvent]
    started: float
    published: int
    finished: bool
    rule: RetryRule = field(default_factory=RetryRule)  # the consumer's, as the server held it
    totals: dict[str, int] = field(default_factory=dict)
    # The server's own account: its NAK / terminate / max-deliveries advisories of the run.
    advisories: list[Advisory] = field(default_factory=list)

    @property
    def label(self) -> str:
        md = self.metadata
        backoff = ", ".join(f"{v.total_seconds():g}s" for v in md.back_off) or "-"
        wait = f"{md.ack_wait.total_seconds():g}s" if md.ack_wait else "default"
        deliver = md.max_deliver if md.max_deliver > 0 else "∞"
        extra = [md.concurrency_mode.value]
        if md.ack_policy.value != "explicit":
            extra.append(f"ackPolicy {md.ack_policy.value}")
        if md.max_ack_pending:
            extra.append(f"maxAckPending {md.max_ack_pending}")
        return (
            f"run {self.run_id}: backOff [{backoff}] ackWait {wait} maxDeliver {deliver} "
            f"({', '.join(extra)})"
        )

    def __repr__(self) -> str:
        return f"<LabResult {self.label}; {self.scenario.describe()}; {self.totals}>"

    @property
    def attempts(self) -> pd.DataFrame:
        """One row per delivery attempt, with observed and predicted redelivery delays."""
        import pandas as pd

        return pd.DataFrame(attempt_rows(self))

    @property
    def server_events(self) -> pd.DataFrame:
        """The server's advisories of the run, its time beside the client's (``server_s``).

        ``server_s`` counts from the same start as ``received_s`` in :attr:`attempts`,
        so each NAK the client sent sits next to the server's record of it.
        """
        import pandas as pd

        rows = [
            {
                "server_s": adv.time.timestamp() - self.started,
                "kind": adv.kind.value,
                "stream_seq": adv.stream_seq,
                "deliveries": adv.deliveries,
                "reason": adv.reason,
            }
            for adv in self.advisories
        ]
        return pd.DataFrame(
            rows, columns=["server_s", "kind", "stream_seq", "deliveries", "reason"]
        )

    def plot(self, ax: Any = None) -> Figure:
        """A per-message timeline: each attempt a marker, coloured by outcome."""
        return timeline_figure([self], axes=[ax] if ax is not None else None)

    def _repr_html_(self) -> str:
        totals = "".join(f"<td>{v}</td>" for v in self.totals.values())
        heads = "".join(f"<th>{k}</th>" for k in self.totals)
        return (
            f"<b>{html.escape(self.label)}</b> — {html.escape(self.scenario.describe())}"
            f"<table><tr>{heads}</tr><tr>{totals}</tr></table>"
        )


def attempt_rows(result: LabResult) -> list[dict[str, Any]]:
    """Rows of the attempts table, ordered by message then attempt.

    Each row reads as one comparison: what this delivery aimed for (its NAK
    delay) and the delay actually sent with the NAK (``nak_sent_s``: backOff[0]
    on a consumer with backOff, see :meth:`~jsnb.retry.RetryRule.nak_request`),
    and the gap *to the next delivery* of the same message, observed and
    predicted by the consumer's :class:`~jsnb.retry.RetryRule`. After a
    NAK the gap runs from the NAK; after no answer, from when the delivery
    arrived (the server redelivers when its ack deadline runs out).
    """
    rule = result.rule
    by_seq: dict[int, list[DeliveryEvent]] = {}
    for ev in sorted(result.events, key=lambda e: (e.stream_seq, e.num_delivered, e.received)):
        by_seq.setdefault(ev.stream_seq, []).append(ev)
    rows = []
    for index, (seq, evs) in enumerate(sorted(by_seq.items()), start=1):
        for ev, nxt in zip(evs, [*evs[1:], None], strict=True):
            observed = predicted = None
            if nxt is not None and nxt.num_delivered > ev.num_delivered:
                if ev.outcome is Outcome.NAK:
                    observed = nxt.received - ev.time
                    predicted = ev.delay or 0.0
                else:
                    observed = nxt.received - ev.received
                    predicted = rule.ack_deadline(ev.num_delivered)
            rows.append(
                {
                    "message": index,
                    "stream_seq": seq,
                    "attempt": ev.num_delivered,
                    # when the delivery reached the handler: in single mode a message
                    # can wait in the client behind a slow handler before that
                    "received_s": ev.received - result.started,
                    "settled_s": ev.time - result.started,
                    "outcome": ev.outcome.value,
                    "nak_delay_s": ev.delay,
                    "nak_sent_s": (
                        rule.nak_request(ev.num_delivered) if ev.outcome is Outcome.NAK else None
                    ),
                    "next_delay_observed_s": observed,
                    "next_delay_predicted_s": predicted,
                    "handler_ms": ev.duration * 1000.0,
                    "error": ev.error,
                }
            )
    return rows


def _totals(published: int, events: list[DeliveryEvent], outstanding: int) -> dict[str, int]:
    """Counts per outcome; *outstanding* is what the server still holds for the consumer."""
    final: dict[int, Outcome] = {}
    for ev in events:
        if ev.outcome in FINAL_OUTCOMES:
            final.setdefault(ev.stream_seq, ev.outcome)
    delivered = {ev.stream_seq for ev in events}
    acked = sum(1 for o in final.values() if o is Outcome.ACK)
    dead = sum(1 for o in final.values() if o is Outcome.DEAD_LETTER)
    exhausted = sum(1 for o in final.values() if o is Outcome.EXHAUSTED)
    return {
        "published": published,
        "delivered": len(delivered),
        "attempts": len(events),
        "redelivered": sum(1 for ev in events if ev.num_delivered > 1),
        "acked": acked,
        "dead_lettered": dead,
        "exhausted": exhausted,
        "unfinished": published - len(final),
        # neither settled here nor still held by the server for redelivery
        "lost": max(0, published - len(final) - outstanding),
    }


def _handler(scenario: Scenario) -> Callable[[Message], Any]:
    rng = random.Random(scenario.seed)

    async def handle(msg: Message) -> None:
        attempt = msg.delivery.num_delivered
        if scenario.hang_seconds and attempt == 1:
            await asyncio.sleep(scenario.hang_seconds)
            return
        if attempt <= scenario.fail_times:
            raise RuntimeError(f"scenario: planned failure on attempt {attempt}")
        if scenario.fail_probability and rng.random() < scenario.fail_probability:
            raise RuntimeError("scenario: random failure")

    return handle


async def run_scenario(
    nats_url: str,
    properties: Mapping[str, Any] | Metadata,
    scenario: Scenario,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> LabResult:
    """Run *scenario* on a fresh stream with the consumer *properties* describe.

    *progress(done, total)* is called as messages reach a final outcome. The
    run ends when every message is acked, dead-lettered or exhausted, or at
    ``scenario.timeout``; ``totals["unfinished"]`` counts what was still
    pending then (the server still holds it: nothing is lost).
    """
    base = properties.as_properties() if isinstance(properties, Metadata) else dict(properties)
    for key in ("natsURL", "durableName", "queueGroupName", "streamName"):
        base.pop(key, None)
    run_id = next(_run_ids)
    stream, subject = f"JSNB_LAB_{run_id}_{int(time.time())}", f"jsnb.lab.{run_id}"
    ps = await JetStreamPubSub({**base, "natsURL": nats_url}).init()
    events: list[DeliveryEvent] = []
    done_seqs: set[int] = set()
    all_done = asyncio.Event()

    def record(ev: DeliveryEvent) -> None:
        if ev.topic != subject:
            return
        events.append(ev)
        if ev.outcome in FINAL_OUTCOMES and ev.stream_seq not in done_seqs:
            done_seqs.add(ev.stream_seq)
            if progress is not None:
                progress(len(done_seqs), scenario.messages)
            if len(done_seqs) >= scenario.messages:
                all_done.set()

    server_side = (AdvisoryKind.NAK, AdvisoryKind.TERMINATED, AdvisoryKind.MAX_DELIVERIES)
    try:
        await ensure_stream(ps, stream, [subject, f"{subject}.dlq"], storage="memory")
        watch = await ps.advisories(stream, kinds=server_side).start()
        ps.add_listener(record)
        sub_meta = {"rawPayload": "true"}
        if ps.metadata is not None and ps.metadata.max_deliver > 0:
            sub_meta["deadLetterTopic"] = f"{subject}.dlq"  # unused without a limit
        sub = await ps.subscribe(subject, _handler(scenario), metadata=sub_meta)
        started = time.time()
        payload = b"x" * scenario.payload_size
        for i in range(scenario.messages):
            await ps.publish(subject, payload or str(i).encode(), metadata={"rawPayload": "true"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), scenario.timeout)
        advisories = await _server_account(watch, events)
        md = ps.metadata
        assert md is not None
        info = await sub.consumer_info()
        outstanding = (info.num_ack_pending or 0) + (info.num_pending or 0)
        await ps.jetstream.delete_stream(stream)
    finally:
        await ps.close()
    result = LabResult(
        run_id,
        md,
        scenario,
        events,
        started,
        scenario.messages,
        finished=all_done.is_set(),
        rule=sub.rule,
    )
    result.totals = _totals(scenario.messages, events, outstanding)
    result.advisories = advisories
    return result


async def _server_account(watch: Advisories, events: list[DeliveryEvent]) -> list[Advisory]:
    """The run's advisories, once the server has reported every NAK and TERM the client sent.

    The server publishes advisories from a queue of its own, after it applied
    the NAK or TERM: give them up to ``_ADVISORY_WAIT`` seconds to arrive.
    """
    sent = Counter(
        AdvisoryKind.NAK if ev.outcome is Outcome.NAK else AdvisoryKind.TERMINATED
        for ev in events
        if ev.outcome in (Outcome.NAK, Outcome.TERM, Outcome.DEAD_LETTER)
    )
    got: list[Advisory] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _ADVISORY_WAIT
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        while any(Counter(a.kind for a in got)[k] < n for k, n in sent.items()):
            got.append(await asyncio.wait_for(anext(watch), deadline - loop.time()))
    got += watch.drain()
    await watch.aclose()
    return sorted(got, key=lambda a: a.time)


_COLOURS = {
    Outcome.ACK: "#2e7d32",
    Outcome.NAK: "#ef6c00",
    Outcome.DEAD_LETTER: "#6a1b9a",
    Outcome.EXHAUSTED: "#c62828",
    Outcome.TERM: "#455a64",
    Outcome.EXPIRED: "#9e9e9e",
    Outcome.SUPERSEDED: "#90a4ae",
}


def timeline_figure(results: list[LabResult], axes: list[Any] | None = None) -> Figure:
    """Timelines of one or more runs side by side (shared time axis)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig: Figure
    if axes is None:
        fig = Figure(figsize=(5.5 * len(results), 3.2), layout="constrained")
        axes = list(fig.subplots(1, len(results), sharex=True, squeeze=False)[0])
    else:
        fig = axes[0].figure
    for ax, result in zip(axes, results, strict=True):
        rows = attempt_rows(result)
        by_message: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_message.setdefault(row["message"], []).append(row)
        for message, attempts in by_message.items():
            xs = [a["received_s"] for a in attempts]
            ax.plot(xs, [message] * len(xs), color="#bbbbbb", linewidth=1, zorder=1)
        for outcome, colour in _COLOURS.items():
            pts = [(r["received_s"], r["message"]) for r in rows if r["outcome"] == outcome.value]
            if pts:
                ax.scatter(
                    *zip(*pts, strict=True), color=colour, label=outcome.value, zorder=2, s=28
                )
        ax.set_title(result.label, fontsize=9)
        ax.set_xlabel("seconds since publish")
        ax.set_ylabel("message")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the data
    return fig
