"""The invariant *no silent loss*, checked over combinations of settings and faults.

Every published message must end in one of:
- handled: an ``ack`` (or ``expired``) event, i.e. its handler succeeded;
- dead-lettered: a ``dead-letter`` event, and a copy in the dead-letter stream
  naming its original sequence;
- terminated on request: a ``term`` event;
- a terminal failure reported loudly: an ``exhausted`` event, with the message
  still stored in its stream.
And a ``nak`` event claims a redelivery: one must follow (a later delivery of
the same message), unless the message was handled anyway.

A combination jsnb cannot make safe must be refused up front, with an error
that names the keys; :func:`run_case` records that as ``refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors

import jsnb
from jsnb.messages import DeliveryEvent, Message, Outcome
from jsnb.server import NatsServer

ACK_POLICIES = ("explicit", "all", "none")
MODES = ("single", "parallel", "bulk")
GROUPS = (False, True)  # a durable alone, or a durable shared by a queue group of two
# failing: after subscribe, no stream captures the dead-letter topic any more
DLQS = ("none", "ok", "failing")
MAX_DELIVERS = (1, 3)
BACKOFFS = ("60ms", "40ms, 150ms")
HANDLERS = ("ok", "fail-once", "always", "hang", "fail-late")
# restart: the first subscriber closes mid-run and a new one takes over;
# consumer-lost: the consumer is deleted, then the server restarts (on its own server).
FAULTS = ("none", "restart", "consumer-lost")
CONSUMER_MODES = ("push", "pull")

MESSAGES = 6
# The invariant's own list, not the product's: what ends a message for good.
FINAL = frozenset(
    {Outcome.ACK, Outcome.EXPIRED, Outcome.DEAD_LETTER, Outcome.TERM, Outcome.EXHAUSTED}
)
_ids = itertools.count(1)


@dataclass(frozen=True)
class Case:
    ack_policy: str = "explicit"
    mode: str = "single"
    group: bool = False
    dlq: str = "none"
    max_deliver: int = 3
    backoff: str = "60ms"
    handler: str = "ok"
    fault: str = "none"
    consumer_mode: str = "push"

    @property
    def id(self) -> str:
        return (
            f"{self.ack_policy}-{self.mode}-{'group' if self.group else 'durable'}-dlq:{self.dlq}"
            f"-md{self.max_deliver}-[{self.backoff.replace(' ', '')}]-{self.handler}-{self.fault}"
            f"-{self.consumer_mode}"
        )

    def properties(self, url: str, name: str) -> dict[str, Any]:
        props: dict[str, Any] = {
            "natsURL": url,
            "ackPolicy": self.ack_policy,
            "concurrencyMode": "parallel" if self.mode == "parallel" else "single",
            "durableName": name,
            "maxDeliver": self.max_deliver,
            "consumerMode": self.consumer_mode,
        }
        if self.max_deliver > 1:
            props["backOff"] = self.backoff
        else:  # one delivery uses no backOff (jsnb warns); the same first ack deadline
            props["ackWait"] = self.backoff.split(",")[0]
        if self.group:
            props["queueGroupName"] = name
        return props

    @property
    def first_deadline(self) -> float:
        return float(self.backoff.split(",")[0].strip().removesuffix("ms")) / 1000


@dataclass
class Report:
    case: Case
    refused: str | None = None
    violations: list[str] = field(default_factory=list)
    outcomes: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


def fast_slice() -> list[Case]:
    """A slice for the default suite: each defect's combination, and each dimension once."""
    return [
        Case(),
        Case(handler="always", dlq="ok"),
        Case(handler="always", dlq="failing"),  # defect 1
        Case(max_deliver=1, handler="always", dlq="failing"),
        Case(ack_policy="all", group=True),  # defect 3: refused
        Case(ack_policy="all", handler="hang", fault="restart"),  # defect 4
        Case(ack_policy="none", handler="always", dlq="ok"),  # defect 5
        Case(ack_policy="all", mode="parallel", handler="fail-late"),  # defect 8
        Case(mode="parallel", handler="fail-late", dlq="ok"),
        Case(mode="parallel", group=True, handler="fail-once"),
        Case(mode="bulk", handler="fail-once", backoff="40ms, 150ms"),
        Case(mode="bulk", ack_policy="all", handler="hang"),
        Case(handler="hang", group=True),
        Case(ack_policy="none", mode="parallel", handler="fail-once"),
        Case(handler="fail-once", fault="consumer-lost"),
        Case(ack_policy="all", handler="always", max_deliver=1, dlq="ok"),
        # The same defects through a pull consumer.
        Case(handler="always", dlq="failing", consumer_mode="pull"),
        Case(ack_policy="all", handler="hang", fault="restart", consumer_mode="pull"),
        Case(mode="parallel", group=True, handler="fail-late", consumer_mode="pull"),
        Case(mode="bulk", ack_policy="all", handler="fail-once", consumer_mode="pull"),
        Case(handler="fail-once", fault="consumer-lost", consumer_mode="pull"),
    ]


def full_sweep() -> Iterator[Case]:
    """Every ackPolicy x mode x group x DLQ x handler; the rest rotated.

    maxDeliver, backOff, the fault and push or pull take turns across the cells.

    The server-restart fault restarts the server under every running case, so
    it is rotated in only once per ackPolicy x mode (:func:`restart_sweep`).
    """
    rotation = itertools.cycle(
        itertools.product(CONSUMER_MODES, MAX_DELIVERS, BACKOFFS, FAULTS[:2])
    )
    for ack, mode, group, dlq, handler in itertools.product(
        ACK_POLICIES, MODES, GROUPS, DLQS, HANDLERS
    ):
        kind, md, backoff, fault = next(rotation)
        if md == 1:
            backoff = BACKOFFS[0]  # maxDeliver must exceed the number of backOff values
        yield Case(ack, mode, group, dlq, md, backoff, handler, fault, kind)


def restart_sweep() -> Iterator[Case]:
    """The consumer-lost fault once per ackPolicy x mode, with a handler that fails once."""
    for i, (ack, mode) in enumerate(itertools.product(ACK_POLICIES, MODES)):
        kind = CONSUMER_MODES[i % 2]
        yield Case(
            ack,
            mode,
            dlq=DLQS[i % 3],
            handler="fail-once",
            fault="consumer-lost",
            consumer_mode=kind,
        )


class _Behaviour:
    """What the handler does, by case; records when each message's attempts ran."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.hang = max(0.3, 3 * case.first_deadline)
        self.calls = 0
        self.running = 0

    async def one(self, msg: Message) -> None:
        await self._act(msg.delivery.stream_seq, msg.delivery.num_delivered)

    async def batch(self, msgs: list[Message]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in msgs:
            try:
                await self._act(m.delivery.stream_seq, m.delivery.num_delivered)
                out[m.entry_id] = None
            except Exception as exc:
                out[m.entry_id] = exc
        return out

    async def _act(self, seq: int, attempt: int) -> None:
        self.calls += 1
        self.running += 1
        try:
            await self._behave(seq, attempt)
        finally:
            self.running -= 1

    async def _behave(self, seq: int, attempt: int) -> None:
        kind = self.case.handler
        if kind == "fail-once" and attempt == 1:
            raise RuntimeError(f"planned failure of seq {seq}")
        if kind == "always":
            raise RuntimeError(f"seq {seq} always fails")
        if kind in ("hang", "fail-late") and attempt == 1 and seq == 1:
            await asyncio.sleep(self.hang)  # past the ack deadline: the server redelivers
            if kind == "fail-late":
                raise RuntimeError("failed after its redelivery started")


async def run_case(server: NatsServer, case: Case, *, timeout: float = 30.0) -> Report:
    """Run one combination against *server* and check the invariant."""
    started = time.monotonic()
    report = Report(case)
    n = next(_ids)
    name, stream, topic = f"m{n}", f"MATRIX_{n}", f"matrix.{n}.in"
    dlq_stream, dlq_topic = f"MATRIX_{n}_DLQ", f"matrix.{n}.dlq"
    events: list[DeliveryEvent] = []
    admin = await jsnb.JetStreamPubSub({"natsURL": server.url}).init()
    components: list[jsnb.JetStreamPubSub] = []
    behaviour = _Behaviour(case)
    sub_meta = {"rawPayload": "true"}
    if case.dlq != "none":
        sub_meta["deadLetterTopic"] = dlq_topic

    async def member() -> jsnb.JetStreamPubSub:
        ps = jsnb.JetStreamPubSub(case.properties(server.url, name))
        await ps.init()
        components.append(ps)
        ps.add_listener(events.append)
        if case.mode == "bulk":
            await ps.bulk_subscribe(
                topic, behaviour.batch, max_messages=3, max_await_ms=20, metadata=sub_meta
            )
        else:
            await ps.subscribe(topic, behaviour.one, metadata=sub_meta)
        return ps

    try:
        # Memory streams would not survive the server restart of consumer-lost.
        storage = "file" if case.fault == "consumer-lost" else "memory"
        await jsnb.ensure_stream(admin, stream, [topic], storage=storage)
        if case.dlq != "none":
            await jsnb.ensure_stream(admin, dlq_stream, [dlq_topic], storage=storage)
        try:
            first = await member()
            if case.group:
                await member()
        except (jsnb.MetadataError, jsnb.ConsumerConflictError) as exc:
            report.refused = str(exc)
            return report
        if case.dlq == "failing" and case.fault != "restart":
            await _break_dead_letters(admin, dlq_stream, n, storage)
        # Half before a fault, half after: acks of the later ones must not cover the earlier.
        for i in range(MESSAGES // 2):
            await admin.publish(topic, f"m{i}".encode(), metadata={"rawPayload": "true"})
        if case.fault == "restart":
            # As soon as a handler runs: what the first subscriber has not settled by
            # the time it closes is left to the next one.
            await _until(lambda: behaviour.calls >= 1, timeout)
            await first.close()
            components.remove(first)
            await member()
            if case.dlq == "failing":  # only now: the new subscriber checks its DLQ stream
                await _break_dead_letters(admin, dlq_stream, n, storage)
        elif case.fault == "consumer-lost":
            await _until(lambda: len(events) >= 2 or _all_final(events), timeout)
            await admin.jetstream.delete_consumer(stream, name)
            await asyncio.to_thread(server.restart)
        else:
            # Once the first half is settled and no handler runs (a late failure included).
            half = MESSAGES // 2
            await _until(
                lambda: len(_final_by_seq(events)) >= half and not behaviour.running, timeout
            )
        for i in range(MESSAGES // 2, MESSAGES):
            await admin.publish(topic, f"m{i}".encode(), metadata={"rawPayload": "true"})
        await _until(lambda: _all_final(events), timeout)
        await _check(report, events, admin, stream, dlq_stream, case)
        if not report.violations and all(o != "exhausted" for o in report.outcomes.values()):
            # Everything settled here must be settled on the server too: no ack held forever.
            # A message the server gave up on (its advisory, consumer_seq 0) keeps the ack
            # floor below it for good; then only the pending counts must reach 0.
            gave_up = any(e.consumer_seq == 0 for e in events)
            left = await _server_left(admin, stream, name, timeout, floor=not gave_up)
            if left:
                report.violations.append(f"server still holds {left} (all settled here)")
    finally:
        for ps in components:
            await ps.close()
        for s in (stream, dlq_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError, nats.errors.Error):
                await admin.jetstream.delete_stream(s)
        await admin.close()
        report.seconds = time.monotonic() - started
    return report


async def _break_dead_letters(
    admin: jsnb.JetStreamPubSub, dlq_stream: str, n: int, storage: str
) -> None:
    """Make dead-letter publishes fail from now on, keeping the copies made so far."""
    await jsnb.ensure_stream(admin, dlq_stream, [f"matrix.{n}.elsewhere"], storage=storage)


async def _server_left(
    admin: jsnb.JetStreamPubSub, stream: str, consumer: str, timeout: float, *, floor: bool
) -> str | None:
    """What the consumer has not settled by the deadline; None once it acked everything.

    Counters alone would pass a consumer that gave up on messages whose acks
    were held back (after maxDeliver they leave ack pending): the floor must
    reach the last sequence.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = await admin.jetstream.consumer_info(stream, consumer)
        acked = info.ack_floor.stream_seq if info.ack_floor else 0
        if not info.num_ack_pending and not info.num_pending and (acked >= MESSAGES or not floor):
            return None
        if time.monotonic() > deadline:
            return (
                f"{info.num_ack_pending} unacked, {info.num_pending} undelivered, "
                f"ack floor {acked} of {MESSAGES}"
            )
        await asyncio.sleep(0.05)


def _final_by_seq(events: list[DeliveryEvent]) -> dict[int, Outcome]:
    final: dict[int, Outcome] = {}
    for ev in events:
        # Success wins over a terminal outcome of a duplicate delivery.
        if ev.outcome in FINAL and final.get(ev.stream_seq) is not Outcome.ACK:
            final[ev.stream_seq] = ev.outcome
    return final


def _all_final(events: list[DeliveryEvent]) -> bool:
    return len(_final_by_seq(events)) >= MESSAGES


async def _until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _check(
    report: Report,
    events: list[DeliveryEvent],
    admin: jsnb.JetStreamPubSub,
    stream: str,
    dlq_stream: str,
    case: Case,
) -> None:
    final = _final_by_seq(events)
    report.outcomes = {seq: o.value for seq, o in sorted(final.items())}
    js = admin.jetstream
    dead = set()
    if case.dlq != "none":
        info = await js.stream_info(dlq_stream)
        for seq in range(1, (info.state.last_seq or 0) + 1):
            msg = await js.get_msg(dlq_stream, seq)
            dead.add(int((msg.headers or {})["Jsnb-Original-Sequence"]))
    # ackPolicy none is at-most-once by the server's design: a delivery in flight when a
    # subscriber goes away (on the wire, or sent just as its interest ends) is gone for
    # good. So under a fault only the messages published after it must all end.
    at_most_once = case.ack_policy == "none" and case.fault != "none"
    for seq in range(1, MESSAGES + 1):
        outcome = final.get(seq)
        if outcome is None and at_most_once and seq <= MESSAGES // 2:
            continue
        if outcome is None:
            seen = [f"{e.num_delivered}:{e.outcome.value}" for e in events if e.stream_seq == seq]
            report.violations.append(f"seq {seq}: no final outcome (attempts {seen})")
        elif outcome is Outcome.DEAD_LETTER and seq not in dead:
            report.violations.append(f"seq {seq}: 'dead-letter' but no copy in {dlq_stream}")
        elif outcome is Outcome.EXHAUSTED and case.dlq == "ok":
            report.violations.append(f"seq {seq}: 'exhausted' though the dead-letter topic works")
        elif outcome is Outcome.EXHAUSTED:
            try:
                await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:
                report.violations.append(f"seq {seq}: 'exhausted' but gone from {stream}")
    for ev in events:
        if ev.outcome is not Outcome.NAK or final.get(ev.stream_seq) is Outcome.ACK:
            continue
        # A later delivery that reached us after the NAK was sent (one that came
        # earlier, while the NAKed attempt still ran, is no answer to the NAK).
        if not any(
            e.stream_seq == ev.stream_seq
            and e.num_delivered > ev.num_delivered
            and e.received >= ev.time
            for e in events
        ):
            report.violations.append(
                f"seq {ev.stream_seq}: 'nak' after delivery {ev.num_delivered}, never redelivered"
            )
