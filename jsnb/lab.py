"""Redelivery experiments: run a failure scenario and measure what JetStream does.

>>> url = ps.nc.connected_url.geturl()
>>> result = await run_scenario(url, {"backOff": "100ms, 300ms", "maxDeliver": 4},
...                             Scenario(messages=3, fail_times=2))
>>> len(result.attempts)   # one row per delivery: arrived, waited, handled, the server's word
9
>>> result.totals["lost"], len(result.discrepancies)  # the server's account; none differs
(0, 0)

The experiment engine behind ``jsnb.widgets.RedeliveryLab``; it needs no widgets,
so tests and tutorials call it directly. Each run uses a fresh stream and
consumer, so runs never disturb each other or the user's streams.

Two views of every run are recorded and compared. The client's: what each
handler did (:class:`~jsnb.messages.DeliveryEvent`). The server's: every
delivery it sent, seen arriving by a subscription of the lab's own on the
consumer's deliver subject (so a delivery queued behind a slow handler still
shows when it came), its NAK / terminate / max-deliveries advisories, what the
consumer still holds at the end, and the dead-letter copies stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from jsnb.advisories import Advisories, Advisory, AdvisoryKind
from jsnb.display import ERROR_COLOUR, MUTED_COLOUR, OUTCOME_COLOURS
from jsnb.messages import FINAL_OUTCOMES, DeliveryEvent, Message, Outcome
from jsnb.metadata import AckPolicy, Metadata
from jsnb.pubsub import JetStreamPubSub
from jsnb.retry import RetryRule
from jsnb.settlement import DLQ_HEADERS
from jsnb.streams import ensure_stream
from jsnb.waiting import until

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from nats.js import api

    from jsnb.subscription import Subscription

__all__ = [
    "ATTEMPT_COLUMNS",
    "ENDS",
    "FINAL_OUTCOMES",
    "LabResult",
    "Scenario",
    "Sent",
    "attempt_rows",
    "discrepancy_rows",
    "run_scenario",
    "timeline_figure",
]

_run_ids = itertools.count(1)
_ADVISORY_WAIT = 5.0  # seconds for the server's consumer-deleted advisory, the last of a run
_MESSAGE_EVENTS = (AdvisoryKind.NAK, AdvisoryKind.TERMINATED, AdvisoryKind.MAX_DELIVERIES)
_ORIGINAL_SEQ = DLQ_HEADERS[2]
# What became of a message, one word per view; a total counts the messages of each word.
ENDS = ("acked", "dead_lettered", "exhausted", "terminated", "dropped", "held")
_WORD = {
    Outcome.ACK: "acked",
    Outcome.EXPIRED: "acked",
    Outcome.DEAD_LETTER: "dead_lettered",
    Outcome.EXHAUSTED: "exhausted",
    Outcome.TERM: "terminated",
}


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


@dataclass(frozen=True, slots=True)
class Sent:
    """One delivery the server made, as the lab's own subscription saw it arrive.

    ``stored`` is when the stream stored the message: the ack subject's
    timestamp, which nats-server sets at storage, not at each (re)delivery.
    """

    consumer_seq: int
    stream_seq: int
    attempt: int
    arrived: float  # wall clock
    stored: float


@dataclass(repr=False)
class LabResult:
    """One run: every delivery, both accounts of it, and the configuration that produced it."""

    run_id: int
    metadata: Metadata
    scenario: Scenario
    events: list[DeliveryEvent]
    started: float
    published: int
    finished: bool
    rule: RetryRule = field(default_factory=RetryRule)  # the consumer's, as the server held it
    # The server's account: what it sent, its NAK / terminate / max-deliveries advisories,
    # what it still held at the end, the dead-letter copies stored.
    sent: list[Sent] = field(default_factory=list)
    advisories: list[Advisory] = field(default_factory=list)
    published_seqs: list[int] = field(default_factory=list)
    held: int = 0  # messages the consumer still held at the end (ack pending or not yet sent)
    deliveries: int = 0  # deliveries the server counted (its last consumer sequence)
    copies: dict[int, int] = field(default_factory=dict)  # stream seq -> dead-letter copies

    @property
    def label(self) -> str:
        md = self.metadata
        backoff = ", ".join(f"{v.total_seconds():g}s" for v in md.back_off) or "-"
        wait = f"{md.ack_wait.total_seconds():g}s" if md.ack_wait else "default"
        deliver = md.max_deliver if md.max_deliver > 0 else "∞"
        extra = [md.concurrency_mode.value]
        if md.consumer_mode.value != "push":
            extra.append(md.consumer_mode.value)
        if md.in_progress != "off":
            extra.append(f"inProgress {md.in_progress}")
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
        """One row per delivery: when it arrived, waited, ran and settled, and the server's word.

        See :func:`attempt_rows` for the columns.
        """
        import pandas as pd

        return pd.DataFrame(attempt_rows(self), columns=ATTEMPT_COLUMNS)

    @property
    def server_events(self) -> pd.DataFrame:
        """The server's advisories of the run, its time beside the client's (``server_s``).

        ``server_s`` counts from the same start as ``arrived_s`` in :attr:`attempts`,
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

    @property
    def totals(self) -> dict[str, int]:
        """The run's counts as the server has them; ``lost`` should be 0.

        ``acked``: acks the server accepted (it holds nothing for the message and
        neither terminated it nor gave up on it); ``dead_lettered``: messages with
        a copy stored; ``exhausted``: the server gave up (MAX_DELIVERIES) and no copy
        was made; ``terminated``: terminated without a copy; ``dropped``: a failure
        under ackPolicy none, which nothing redelivers; ``held``: still held by the
        consumer; ``lost``: neither acked, nor copied, nor held.
        """
        return _totals(self, _server_ends(self))

    @property
    def client_totals(self) -> dict[str, int]:
        """The same counts from the handlers' outcomes; equal to :attr:`totals` when both agree."""
        return _totals(self, _client_ends(self))

    @property
    def discrepancies(self) -> pd.DataFrame:
        """Where the client's account and the server's differ: empty when they agree."""
        import pandas as pd

        return pd.DataFrame(
            discrepancy_rows(self), columns=["message", "stream_seq", "client", "server", "why"]
        )

    def plot(self, ax: Any = None) -> Figure:
        """A per-message timeline: deliveries, client waiting, handlers and the server's events."""
        return timeline_figure([self], axes=[ax] if ax is not None else None)

    def _repr_html_(self) -> str:
        totals = self.totals
        heads = "".join(f"<th>{k}</th>" for k in totals)
        cells = "".join(f"<td>{v}</td>" for v in totals.values())
        out = (
            f"<b>{html.escape(self.label)}</b> — {html.escape(self.scenario.describe())}"
            f"<div style='overflow-x:auto'><table><tr>{heads}</tr><tr>{cells}</tr></table></div>"
        )
        diff = self.discrepancies
        if not diff.empty:
            out += (
                f"<p style='color:{ERROR_COLOUR}'><b>the client and the server disagree</b> "
                f"about {len(diff)} thing(s):</p><div style='overflow-x:auto'>"
                f"{diff.to_html(index=False, border=0)}</div>"
            )
        return out


ATTEMPT_COLUMNS = [
    "message",
    "stream_seq",
    "consumer_seq",
    "attempt",
    "held_s",
    "arrived_s",
    "waited_s",
    "started_s",
    "settled_s",
    "outcome",
    "server_event",
    "server_s",
    "nak_delay_s",
    "nak_sent_s",
    "next",
    "next_from",
    "next_delay_observed_s",
    "next_delay_predicted_s",
    "handler_ms",
    "error",
]


def _index(result: LabResult) -> dict[int, int]:
    """Stream sequence -> message number (1-based, in publish order)."""
    return {seq: i for i, seq in enumerate(result.published_seqs, start=1)}


def attempt_rows(result: LabResult) -> list[dict[str, Any]]:
    """Rows of the attempts table, ordered by message then attempt.

    A row is a delivery the server made (``consumer_seq``), a report the client
    made without one (the server gave up on a message that waited in the client:
    ``consumer_seq`` 0), or an advisory that matches no delivery. Times count
    seconds from the first publish:

    - ``held_s``: first deliveries only, how long the server kept the stored
      message back (maxAckPending full);
    - ``arrived_s``: when the delivery reached this process; ``waited_s``: how
      long it then waited for its handler (single mode: behind the handler
      before it; parallel: for one of maxAckPending slots); ``started_s`` and
      ``settled_s``: the handler's start and the client's answer;
    - ``server_event`` / ``server_s``: the server's advisory about this
      delivery (``nak``, ``terminated``, ``max_deliveries``) at server time.

    ``outcome`` is the client's :class:`~jsnb.messages.Outcome`, except that a
    failure under ackPolicy none reads ``dropped``: nothing redelivers it.
    ``nak_delay_s`` is the delay a NAK aimed for and ``nak_sent_s`` what it sent
    (:meth:`~jsnb.retry.RetryRule.nak_request`). The gap *to what the server did
    next* (``next``: the next delivery, or giving up) is observed and predicted
    by the consumer's :class:`~jsnb.retry.RetryRule` from the server's own
    starting point (``next_from``): its record of the NAK, or when it sent this
    delivery if no NAK came (the ack deadline), so client-side waiting never
    counts as the server's lateness.
    """
    rule, t0 = result.rule, result.started
    index = _index(result)
    sent = {s.consumer_seq: s for s in result.sent}
    handled = {ev.consumer_seq: ev for ev in result.events if ev.consumer_seq}
    said: dict[tuple[int, int], list[Advisory]] = {}
    for adv in result.advisories:
        said.setdefault((adv.stream_seq or 0, adv.deliveries or 0), []).append(adv)

    def rel(t: float | None) -> float | None:
        return None if t is None else t - t0

    def row(seq: int, attempt: int, cseq: int) -> dict[str, Any]:
        r: dict[str, Any] = dict.fromkeys(ATTEMPT_COLUMNS)
        r.update(message=index.get(seq, 0), stream_seq=seq, consumer_seq=cseq, attempt=attempt)
        return r

    def client(r: dict[str, Any], ev: DeliveryEvent) -> None:
        naked = ev.outcome is Outcome.NAK
        r.update(
            started_s=rel(ev.received) if ev.consumer_seq else None,
            settled_s=rel(ev.time),
            outcome="dropped" if _end(result, ev.outcome) == "dropped" else ev.outcome.value,
            nak_delay_s=rule.nak_delay(ev.num_delivered) if naked else None,
            nak_sent_s=rule.nak_request(ev.num_delivered) if naked else None,
            handler_ms=ev.duration * 1000.0,
            error=ev.error,
        )

    def server(r: dict[str, Any], adv: Advisory) -> None:
        r.update(server_event=adv.kind.value, server_s=adv.time.timestamp() - t0)

    rows = []
    for cseq in sorted(set(sent) | set(handled)):
        s, ev = sent.get(cseq), handled.get(cseq)
        if s is not None:
            seq, attempt = s.stream_seq, s.attempt
        else:  # handled, but the lab's subscription never saw it arrive
            seq, attempt = handled[cseq].stream_seq, handled[cseq].num_delivered
        r = row(seq, attempt, cseq)
        if s is not None:
            r.update(arrived_s=s.arrived - t0)
            if attempt == 1:
                r.update(held_s=max(s.arrived - s.stored, 0.0))
        if ev is not None:
            client(r, ev)
            if s is not None:
                r.update(waited_s=max(ev.received - s.arrived, 0.0))
        advs = said.pop((seq, attempt), [])
        if advs:
            server(r, advs[0])
        rows.append(r)
        for extra in advs[1:]:  # a second word about one delivery gets a row of its own
            server(extra_row := row(seq, attempt, cseq), extra)
            rows.append(extra_row)
    for ev in result.events:
        if not ev.consumer_seq:  # the client's word on a message the server gave up
            r = row(ev.stream_seq, ev.num_delivered, 0)
            client(r, ev)
            rows.append(r)
    for (seq, deliveries), advs in said.items():  # advisories about no delivery seen here
        for adv in advs:
            r = row(seq, deliveries, 0)
            server(r, adv)
            rows.append(r)
    rows.sort(key=lambda r: (r["message"], r["stream_seq"], r["attempt"], r["consumer_seq"] == 0))
    _predict(rows, rule)
    return rows


def _predict(rows: list[dict[str, Any]], rule: RetryRule) -> None:
    """Fill the next-gap columns of *rows* (sorted by message, then attempt)."""
    deliveries: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r["arrived_s"] is not None:
            deliveries.setdefault(r["stream_seq"], []).append(r)
    for seq_rows in deliveries.values():
        for r, nxt in zip(seq_rows, [*seq_rows[1:], None], strict=True):
            n = r["attempt"]
            if nxt is not None:
                what, when = f"delivery {nxt['attempt']}", nxt["arrived_s"]
            elif r["server_event"] == "max_deliveries":
                what, when = "gave up", r["server_s"]
            else:
                continue
            if r["outcome"] == Outcome.NAK.value:
                if r["server_event"] != "nak":
                    continue  # the server has no record of the NAK: nothing to predict from
                start, predicted, origin = r["server_s"], rule.nak_delay(n), "server NAK"
            else:  # no answer in time: the server's ack deadline runs from when it sent this
                start, predicted, origin = r["arrived_s"], rule.ack_deadline(n), "sent"
            r.update(
                next=what,
                next_from=origin,
                next_delay_observed_s=when - start,
                next_delay_predicted_s=predicted,
            )


# -- the two accounts ---------------------------------------------------------------


def _end(result: LabResult, outcome: Outcome) -> str | None:
    """The end a final *outcome* means for its message; None for one that is not final.

    Under ackPolicy none nothing redelivers a failure and no copy was made: dropped.
    """
    word = _WORD.get(outcome)
    if word == "exhausted" and result.metadata.ack_policy is AckPolicy.NONE:
        return "dropped"
    return word


def _client_ends(result: LabResult) -> dict[int, str]:
    """Per message, what the handlers' first final outcome says became of it."""
    ends = dict.fromkeys(result.published_seqs, "held")
    decided: set[int] = set()
    for ev in result.events:
        word = _end(result, ev.outcome)
        if word is not None and ev.stream_seq in ends and ev.stream_seq not in decided:
            decided.add(ev.stream_seq)
            ends[ev.stream_seq] = word
    return ends


def _server_ends(result: LabResult) -> dict[int, str]:
    """Per message, what the server's account says became of it.

    A copy stored makes it dead-lettered; else the server's max-deliveries or
    terminate advisory names the end. A message the consumer no longer holds
    and has neither terminated nor given up on was acked (on a timed-out run
    the consumer's held count goes to those the client has not settled).
    Under ackPolicy none the server forgets a message as it sends it, so only
    the client can say a failure was dropped.
    """
    gave_up = {a.stream_seq for a in result.advisories if a.kind is AdvisoryKind.MAX_DELIVERIES}
    terminated = {a.stream_seq for a in result.advisories if a.kind is AdvisoryKind.TERMINATED}
    client = _client_ends(result)
    held = result.held
    ends = {}
    for seq in result.published_seqs:
        if result.copies.get(seq):
            ends[seq] = "dead_lettered"
        elif seq in gave_up:
            ends[seq] = "exhausted"
        elif seq in terminated:
            ends[seq] = "terminated"
        elif client[seq] == "dropped":  # ackPolicy none: only the client knows it failed
            ends[seq] = "dropped"
        elif held and client[seq] == "held":
            ends[seq] = "held"
            held -= 1
        else:
            ends[seq] = "acked"
    return ends


def _totals(result: LabResult, ends: dict[int, str]) -> dict[str, int]:
    """Counts of one account: deliveries (the server's), then messages per end."""
    count = Counter(ends.values())
    attempts = {s.consumer_seq: s.attempt for s in result.sent}
    totals = {
        "published": result.published,
        "delivered": len({s.stream_seq for s in result.sent}),
        "attempts": len(attempts),
        "redelivered": sum(1 for n in attempts.values() if n > 1),
    }
    totals.update({end: count[end] for end in ENDS})
    totals["lost"] = result.published - count["acked"] - count["dead_lettered"] - count["held"]
    return totals


def discrepancy_rows(result: LabResult) -> list[dict[str, Any]]:
    """Each point where the client's account and the server's differ, with the server's facts."""
    index = _index(result)
    client, server = _client_ends(result), _server_ends(result)
    by_seq: dict[int, list[Advisory]] = {}
    for adv in result.advisories:
        by_seq.setdefault(adv.stream_seq or 0, []).append(adv)
    rows = []

    def add(seq: int | None, client_word: Any, server_word: Any, why: str) -> None:
        rows.append(
            {
                "message": index.get(seq, 0) if seq else None,
                "stream_seq": seq,
                "client": client_word,
                "server": server_word,
                "why": why,
            }
        )

    for seq in result.published_seqs:
        facts = [
            f"{a.kind.value} at {a.time.timestamp() - result.started:.3f}s "
            f"(delivery {a.deliveries})"
            for a in by_seq.get(seq, [])
        ]
        if result.copies.get(seq, 0) > 1:
            facts.append(f"{result.copies[seq]} dead-letter copies stored")
        if client[seq] != server[seq] or result.copies.get(seq, 0) > 1:
            add(seq, client[seq], server[seq], "; ".join(facts) or "no server event")
    handled = sum(1 for ev in result.events if ev.consumer_seq)
    if not (result.deliveries == len(result.sent) == handled):
        add(
            None,
            f"{handled} deliveries handled",
            f"{result.deliveries} deliveries made",
            f"{len(result.sent)} seen arriving by the lab's own subscription",
        )
    naks = Counter(
        (ev.stream_seq, ev.num_delivered) for ev in result.events if ev.outcome is Outcome.NAK
    )
    recorded = Counter(
        (a.stream_seq or 0, a.deliveries or 0)
        for a in result.advisories
        if a.kind is AdvisoryKind.NAK
    )
    for (seq, n), times in sorted((naks - recorded).items()):
        add(seq, f"NAK of delivery {n}", "no NAK advisory", f"{times} NAK(s) the server ignored")
    return rows


# -- running ------------------------------------------------------------------------


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


class _Tap:
    """Records every delivery on the consumer's deliver subject (or pull inbox) as it arrives.

    A plain subscription of its own, next to the subscriber's: it is never held
    up by a handler, so it sees when the server sent each delivery.
    """

    def __init__(self) -> None:
        self.sent: dict[int, Sent] = {}

    async def on_msg(self, msg: Msg) -> None:
        arrived = time.time()
        if not msg.reply or not msg.reply.startswith("$JS.ACK."):
            return  # heartbeats and flow control
        meta = msg.metadata
        cseq = meta.sequence.consumer
        self.sent[cseq] = Sent(
            cseq, meta.sequence.stream, meta.num_delivered, arrived, meta.timestamp.timestamp()
        )


async def run_scenario(
    nats_url: str,
    properties: Mapping[str, Any] | Metadata,
    scenario: Scenario,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> LabResult:
    """Run *scenario* on a fresh stream with the consumer *properties* describe.

    *progress(done, total)* is called as messages reach a final outcome. The
    run ends when every message has a final outcome, the consumer holds nothing
    (no ack pending, nothing left to send) and every delivery it made has
    reached the handler, so repeated runs give the same rows; or at
    ``scenario.timeout`` (``finished`` False, ``totals["held"]`` counts what the
    server still held).
    """
    base = properties.as_properties() if isinstance(properties, Metadata) else dict(properties)
    for key in ("natsURL", "durableName", "queueGroupName", "streamName"):
        base.pop(key, None)
    run_id = next(_run_ids)
    stream, subject = f"JSNB_LAB_{run_id}_{int(time.time())}", f"jsnb.lab.{run_id}"
    ps = await JetStreamPubSub({**base, "natsURL": nats_url}).init()
    events: list[DeliveryEvent] = []
    done_seqs: set[int] = set()
    tap = _Tap()

    def record(ev: DeliveryEvent) -> None:
        if ev.topic != subject:
            return
        events.append(ev)
        if ev.outcome in FINAL_OUTCOMES and ev.stream_seq not in done_seqs:
            done_seqs.add(ev.stream_seq)
            if progress is not None:
                progress(len(done_seqs), scenario.messages)

    kinds = (*_MESSAGE_EVENTS, AdvisoryKind.CONSUMER_DELETED)
    try:
        await ensure_stream(ps, stream, [subject, f"{subject}.dlq"], storage="memory")
        watch = await ps.advisories(stream, kinds=kinds).start()
        ps.add_listener(record)
        sub_meta = {"rawPayload": "true"}
        if ps.metadata is not None and ps.metadata.max_deliver > 0:
            sub_meta["deadLetterTopic"] = f"{subject}.dlq"  # unused without a limit
        sub = await ps.subscribe(subject, _handler(scenario), metadata=sub_meta)
        tap_sub = await ps.nc.subscribe(await sub.delivery_subject(), cb=tap.on_msg)
        await ps.nc.flush()
        started = time.time()
        payload = b"x" * scenario.payload_size
        seqs = []
        for i in range(scenario.messages):
            out = await ps.publish(
                subject, payload or str(i).encode(), metadata={"rawPayload": "true"}
            )
            seqs.append(out.seq)
        info, finished = await _run_to_end(sub, tap, events, done_seqs, seqs, scenario.timeout)
        await tap_sub.unsubscribe()
        consumer = sub.consumer
        await sub.unsubscribe()  # deletes the consumer: its deleted advisory closes the account
        advisories = await _server_account(watch, consumer)
        copies = await _copies(ps, stream, set(seqs))
        md = ps.metadata
        assert md is not None
        await ps.jetstream.delete_stream(stream)
    finally:
        await ps.close()
    return LabResult(
        run_id,
        md,
        scenario,
        events,
        started,
        scenario.messages,
        finished=finished,
        rule=sub.rule,
        sent=sorted(tap.sent.values(), key=lambda s: s.consumer_seq),
        advisories=advisories,
        published_seqs=seqs,
        held=(info.num_ack_pending or 0) + (info.num_pending or 0),
        deliveries=info.delivered.consumer_seq if info.delivered else 0,
        copies=copies,
    )


async def _run_to_end(
    sub: Subscription,
    tap: _Tap,
    events: list[DeliveryEvent],
    done: set[int],
    seqs: list[int],
    timeout: float,
) -> tuple[api.ConsumerInfo, bool]:
    """Wait until the run is over on both sides; the consumer's last info, and whether it was."""
    last: list[api.ConsumerInfo] = []

    async def over() -> bool:
        if not done.issuperset(seqs):
            return False
        info = await sub.consumer_info()
        last[:] = [info]
        made = info.delivered.consumer_seq if info.delivered else 0
        handled = sum(1 for ev in events if ev.consumer_seq)
        return (
            not info.num_ack_pending
            and not info.num_pending
            and len(tap.sent) >= made
            and handled >= made
        )

    condition: Callable[[], bool | Awaitable[bool]] = over
    try:
        await until(condition, timeout=timeout, interval=0.05, what="the run's end")
        return last[0], True
    except TimeoutError:
        return last[0] if last else await sub.consumer_info(), False


async def _server_account(watch: Advisories, consumer: str) -> list[Advisory]:
    """The run's advisories, up to the server's word that it deleted the consumer.

    A consumer's advisories leave the server in order, so once its deleted
    advisory is here every earlier one is too (within ``_ADVISORY_WAIT``).
    """
    got: list[Advisory] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _ADVISORY_WAIT
    with contextlib.suppress(TimeoutError, StopAsyncIteration):
        while not any(
            a.kind is AdvisoryKind.CONSUMER_DELETED and a.consumer == consumer for a in got
        ):
            got.append(await asyncio.wait_for(anext(watch), deadline - loop.time()))
    got += watch.drain()
    await watch.aclose()
    return sorted((a for a in got if a.kind in _MESSAGE_EVENTS), key=lambda a: a.time)


async def _copies(ps: JetStreamPubSub, stream: str, originals: Iterable[int]) -> dict[int, int]:
    """Dead-letter copies stored in the run's stream, per original stream sequence."""
    originals = set(originals)
    info = await ps.jetstream.stream_info(stream)
    copies: Counter[int] = Counter()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if seq in originals:
            continue
        stored = await ps.jetstream.get_msg(stream, seq)
        original = (stored.headers or {}).get(_ORIGINAL_SEQ)
        if original is not None:
            copies[int(original)] += 1
    return dict(copies)


# -- drawing ------------------------------------------------------------------------

# The palette's outcome colours, by the word the attempts table shows.
_COLOURS = {outcome.value: colour for outcome, colour in OUTCOME_COLOURS.items()}
_COLOURS["dropped"] = OUTCOME_COLOURS[Outcome.EXHAUSTED]  # no copy, never delivered again
# The server's advisories, drawn on a line under their message's band.
_SERVER_MARKERS = {
    AdvisoryKind.NAK.value: ("v", OUTCOME_COLOURS[Outcome.NAK], "server: MSG_NAKED"),
    AdvisoryKind.TERMINATED.value: ("D", OUTCOME_COLOURS[Outcome.TERM], "server: MSG_TERMINATED"),
    AdvisoryKind.MAX_DELIVERIES.value: ("X", ERROR_COLOUR, "server: MAX_DELIVERIES"),
}
_WAIT: dict[str, Any] = {
    "facecolor": "none",
    "edgecolor": MUTED_COLOUR,
    "hatch": "////",
    "linewidth": 0.5,
}
_HELD: dict[str, Any] = {"color": "#90caf9"}
_SHOWN_GAP = 0.01  # seconds: shorter waits are noise, not worth a bar


def timeline_figure(results: list[LabResult], axes: list[Any] | None = None) -> Figure:
    """Timelines of one or more runs side by side (shared time axis).

    Each message has a band; each of its deliveries a lane in it, top to
    bottom: a marker where the delivery arrived (its outcome's colour), a
    hatched bar while it waited in the client, a pale bar while its handler
    ran, and a blue bar while the server held a first delivery back
    (maxAckPending). The server's advisories sit on a line under the band.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    fig: Figure
    if axes is None:
        most = max(r.published for r in results)
        height = min(max(1.4 + 0.45 * most, 2.4), 5.0)  # room for each band, within reason
        fig = Figure(figsize=(5.5 * len(results), height), layout="constrained")
        axes = list(fig.subplots(1, len(results), sharex=True, squeeze=False)[0])
    else:
        fig = axes[0].figure
    for ax, result in zip(axes, results, strict=True):
        rows = attempt_rows(result)
        lanes = max((r["attempt"] for r in rows), default=1)
        lane = min(0.6 / lanes, 0.2)
        legend: dict[str, Any] = {}

        def y_of(r: dict[str, Any], lane: float = lane) -> float:
            return float(r["message"] - 0.35 + lane * (r["attempt"] - 0.5))

        track: dict[int, list[tuple[float, float]]] = {}
        for r in rows:
            if r["arrived_s"] is not None:
                track.setdefault(r["message"], []).append((r["arrived_s"], y_of(r)))
        for points in track.values():
            ax.plot(*zip(*points, strict=True), color="#bbbbbb", linewidth=0.8, zorder=1)
        bar = {"height": lane * 0.8}
        for r in rows:
            y, arrived, outcome = y_of(r), r["arrived_s"], r["outcome"]
            if r["held_s"] is not None and r["held_s"] > _SHOWN_GAP:
                ax.barh(y, r["held_s"], left=arrived - r["held_s"], **bar, **_HELD)
                legend["held by the server"] = Patch(label="held by the server", **_HELD)
            if r["waited_s"] is not None and r["waited_s"] > _SHOWN_GAP:
                ax.barh(y, r["waited_s"], left=arrived, zorder=1.5, **bar, **_WAIT)
                legend["waiting in the client"] = Patch(label="waiting in the client", **_WAIT)
            if outcome is not None:
                colour = _COLOURS.get(outcome, "#000000")
                if r["started_s"] is not None:
                    ax.barh(
                        y, r["settled_s"] - r["started_s"], left=r["started_s"], color=colour,
                        alpha=0.3, zorder=1.2, **bar,
                    )  # fmt: skip
                    legend.setdefault(
                        "handler running",
                        Patch(color=MUTED_COLOUR, alpha=0.3, label="handler running"),
                    )
                x = arrived if arrived is not None else r["settled_s"]
                ax.scatter([x], [y], color=colour, s=22, zorder=2)
                legend.setdefault(
                    outcome, Line2D([], [], marker="o", linestyle="", color=colour, label=outcome)
                )
            if r["server_event"] in _SERVER_MARKERS:
                marker, colour, label = _SERVER_MARKERS[r["server_event"]]
                ax.scatter(
                    [r["server_s"]], [r["message"] + 0.38], marker=marker, color=colour, s=18,
                    zorder=3, edgecolors="black", linewidths=0.4,
                )  # fmt: skip
                legend[label] = Line2D(
                    [], [], marker=marker, linestyle="", color=colour, markeredgecolor="black",
                    markeredgewidth=0.4, label=label,
                )  # fmt: skip
        ax.set_title(result.label, fontsize=9)
        ax.set_xlabel("seconds since publish")
        ax.set_ylabel("message")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylim(result.published + 0.6, 0.4)  # message 1 on top, each band whole
        ax.grid(axis="x", alpha=0.3)
        ax.legend(  # beside the data, never over it
            handles=list(legend.values()), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0)
        )
    for ax in axes:  # once every run is drawn: the shared axis ends after the last event
        ax.set_xlim(left=-0.05)
    return fig
