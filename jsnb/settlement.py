"""How a delivery is settled: one ack policy object per ``ackPolicy``.

>>> from jsnb.retry import RetryRule
>>> rule = RetryRule(ack_wait=30.0, backoff=(), max_deliver=3)
>>> policy = ack_policy(AckPolicy.ALL, rule, dead_letter=None)
>>> type(policy).__name__, policy.held  # successes waiting for a lower sequence
('CumulativeAcks', 0)

Each policy decides what to send the server for a success, a failure or a
drop, and *returns* what became of the delivery (a :class:`Settled`); only the
dispatcher reports it. The redelivery rule (NAK delay, last delivery) comes
from the :class:`~jsnb.retry.RetryRule` of the consumer the server holds, and
the dead-letter step is shared by every policy, so no rule lives twice.

The promise: a delivery ends handled (``ack``), copied to the dead-letter
topic (``dead-letter``), terminated on request (``term``), retried
(``nak``, always followed by a redelivery), or reported as a terminal failure
(``exhausted``: still stored in its stream, never delivered again). Nothing
is acknowledged before its handler succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from jsnb.keepalive import KeepAlive
from jsnb.messages import Delivery, Message, Outcome
from jsnb.metadata import AckPolicy
from jsnb.retry import RetryRule

__all__ = [
    "DLQ_HEADERS",
    "CumulativeAcks",
    "DeadLetter",
    "ExplicitAcks",
    "NoAcks",
    "Settled",
    "ack_policy",
]

log = logging.getLogger("jsnb")

# Header names on dead-lettered copies, recording where the message came from.
DLQ_HEADERS = (
    "Jsnb-Original-Subject",
    "Jsnb-Original-Stream",
    "Jsnb-Original-Sequence",
    "Jsnb-Delivery-Count",
    "Jsnb-Last-Error",
)


class Settled(NamedTuple):
    """What became of one delivery: the outcome, a NAK's delay, and why if it went wrong."""

    outcome: Outcome
    delay: float | None = None
    note: str | None = None


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class DeadLetter:
    """Copies a message, with where it came from, to the dead-letter topic.

    The copy's ``Nats-Msg-Id`` names the stream (and when it was created), the
    consumer and the sequence, so retrying the publish stores one copy, while
    two consumers sharing a dead-letter topic, or a recreated stream, never
    have their dead letters dropped as each other's duplicates.
    """

    def __init__(
        self,
        js: JetStreamContext,
        topic: str,
        stream: str,
        origin: str,
        consumer: str,
        timeout: float,
    ) -> None:
        self.topic = topic
        self._js = js
        self._stream = stream
        self._origin = origin  # "<stream>-<created>"
        self._consumer = consumer
        self._timeout = timeout

    async def publish(self, subject: str, data: bytes, seq: int, count: int, why: str) -> None:
        values = (
            subject,
            self._stream,
            str(seq),
            str(count),
            why[:1024].replace("\r", " ").replace("\n", " "),
        )
        headers = dict(zip(DLQ_HEADERS, values, strict=True))
        headers["Nats-Msg-Id"] = f"dlq-{self._origin}-{self._consumer}-{seq}"
        await self._js.publish(self.topic, data, headers=headers, timeout=self._timeout)

    async def publish_stored(self, seq: int, count: int, why: str) -> None:
        """Copy stream message *seq*, read from the stream (the server gave up on it)."""
        stored = await self._js.get_msg(self._stream, seq)
        await self.publish(stored.subject or "", stored.data or b"", seq, count, why)


class _Policy:
    """What every ack policy shares: the retry rule and the dead-letter step.

    Whether an attempt is stale (the server redelivered it meanwhile) is the
    dispatcher's to know; a policy is told ``last=True`` when the server will
    not deliver the message again whatever its own count says.
    """

    terminates = True  # False where the server tracks nothing to terminate
    watches_arrivals = False  # True where arrived() matters (the dispatcher skips the call)

    def __init__(
        self, rule: RetryRule, dead_letter: DeadLetter | None, keep_alive: KeepAlive | None = None
    ) -> None:
        self.rule = rule
        self.dead_letter = dead_letter
        # inProgress: the dispatcher starts it per delivery; the policy ends it.
        self.keep_alive = keep_alive

    def arrived(self, d: Delivery) -> None:
        """A delivery reached the subscription (before its handler runs)."""

    def reset(self) -> None:
        """The consumer was recreated: what was held for the old one is void."""

    def success(self, msg: Msg, message: Message) -> Awaitable[None]:
        """The handler succeeded (or the event expired): acknowledge as the policy says.

        It takes the Message, not its Delivery: only a policy that needs the
        delivery parses it (``message.delivery``); explicit acks never do.
        """
        raise NotImplementedError

    async def failure(
        self, msg: Msg, d: Delivery, error: BaseException, *, last: bool = False
    ) -> Settled:
        """The handler failed: redeliver if the server will, else end it loudly."""
        if last or not self.terminates or self.rule.is_last(d.num_delivered):
            return await self._end(msg, d, error, last=True)
        return await self._nak(msg, d)

    async def drop(
        self, msg: Msg, d: Delivery, error: BaseException, *, last: bool = False
    ) -> Settled:
        """The handler asked for no retry (Dapr's DROP): dead-letter it, or terminate it."""
        last = last or not self.terminates or self.rule.is_last(d.num_delivered)
        return await self._end(msg, d, error, last=last, drop=True)

    async def abandoned(self, seq: int, deliveries: int) -> Settled:
        """The server gave up on *seq* (max deliveries) before any handler settled it."""
        why = f"nats-server gave up after {deliveries} deliveries (maxDeliver)"
        if self.dead_letter is None:
            return Settled(Outcome.EXHAUSTED, None, why)
        try:
            await self.dead_letter.publish_stored(seq, deliveries, why)
        except Exception as exc:
            return Settled(Outcome.EXHAUSTED, None, f"{why}; dead-letter copy failed: {exc}")
        return Settled(Outcome.DEAD_LETTER, None, why)

    async def _nak(self, msg: Msg, d: Delivery, note: str | None = None) -> Settled:
        n = d.num_delivered
        await msg.nak(delay=self.rule.nak_request(n))
        return Settled(Outcome.NAK, self.rule.nak_delay(n), note)

    async def _end(
        self, msg: Msg, d: Delivery, error: BaseException, *, last: bool, drop: bool = False
    ) -> Settled:
        """No (more) redeliveries: copy to the dead-letter topic, terminate, or report."""
        if self.dead_letter is not None:
            why = _error_text(error)
            try:
                await self.dead_letter.publish(
                    msg.subject, msg.data, d.stream_seq, d.num_delivered, why
                )
            except Exception as exc:
                target = self.dead_letter.topic
                note = f"dead-letter publish to {target!r} failed: {_error_text(exc)}"
                if not last:
                    log.warning("jsnb: %s seq %d: %s; NAKed", msg.subject, d.stream_seq, note)
                    return await self._nak(msg, d, note)
                log.error(
                    "jsnb: %s seq %d failed its last allowed delivery (%d) and %s; it stays in "
                    "stream %s unacknowledged and will not be delivered again",
                    msg.subject,
                    d.stream_seq,
                    d.num_delivered,
                    note,
                    d.stream,
                )
                return Settled(Outcome.EXHAUSTED, None, note)
            await self._terminate(msg, d)
            return Settled(Outcome.DEAD_LETTER)
        if drop:
            await self._terminate(msg, d)
            return Settled(Outcome.TERM)
        log.warning(
            "jsnb: %s seq %d failed its last allowed delivery (%d); it stays in stream %s "
            "and will not be delivered again. Set deadLetterTopic to keep a copy.",
            msg.subject,
            d.stream_seq,
            d.num_delivered,
            d.stream,
        )
        return Settled(Outcome.EXHAUSTED)

    async def _terminate(self, msg: Msg, d: Delivery) -> None:
        if self.terminates:
            await msg.term()


class ExplicitAcks(_Policy):
    """``ackPolicy: explicit``: each delivery is acked on its own, after its handler."""

    def success(self, msg: Msg, message: Message) -> Awaitable[None]:
        return msg.ack()  # nats-py's own coroutine: no frame of ours on the hot path


class NoAcks(_Policy):
    """``ackPolicy: none``: the server never redelivers, so a failure ends at once.

    Dapr's runtime dead-letters whatever the ack policy; so do we.
    """

    terminates = False

    async def success(self, msg: Msg, message: Message) -> None:
        return None


class CumulativeAcks(_Policy):
    """``ackPolicy: all``: acking sequence N acks everything at or below N.

    The server reads a TERM the same way (it ends every lower sequence too), so
    a success *and* a termination are only sent once every lower sequence
    delivered to us is settled: neither may cover an unfinished message, such
    as a lower one NAKed and due back. Sequences another subscriber of the same
    durable left unacknowledged (a restart) are a *barrier*: nothing is sent
    until as many distinct ones as the server reported were redelivered to us
    and settled, or the server gave up on them. Queue groups are refused with
    this policy (metadata).
    """

    def __init__(
        self, rule: RetryRule, dead_letter: DeadLetter | None, keep_alive: KeepAlive | None = None
    ) -> None:
        super().__init__(rule, dead_letter, keep_alive)
        self._unresolved: set[int] = set()
        # seq -> (the delivery to answer, whether to TERM it rather than ack it)
        self._done: dict[int, tuple[Msg, bool]] = {}
        self._barrier_seq = 0
        self._barrier_left = 0
        self._barrier_counted: set[int] = set()

    def hold_for_previous(self, delivered_seq: int, pending: int) -> None:
        """At bind: *pending* sequences at or below *delivered_seq* belong to no one yet."""
        self._barrier_seq, self._barrier_left = delivered_seq, pending

    @property
    def held(self) -> int:
        """Acks and terminations waiting for a lower sequence before they can be sent."""
        return len(self._done)

    watches_arrivals = True

    def arrived(self, d: Delivery) -> None:
        self._unresolved.add(d.stream_seq)

    def reset(self) -> None:
        if self.keep_alive is not None:
            for msg, _ in self._done.values():
                self.keep_alive.stop(msg)
        self._done.clear()

    def _resolved(self, seq: int) -> tuple[Msg, bool] | None:
        """*seq* needs nothing more; the answer that is now safe to send, if any."""
        self._unresolved.discard(seq)
        if self._barrier_left and seq <= self._barrier_seq and seq not in self._barrier_counted:
            self._barrier_counted.add(seq)  # once per sequence, however often redelivered
            self._barrier_left -= 1
            if not self._barrier_left:
                self._barrier_counted.clear()
        if self._barrier_left > 0 or not self._done:
            return None
        floor = min(self._unresolved, default=None)
        ready = [s for s in self._done if floor is None or s < floor]
        if not ready:
            return None
        # The highest answer covers the rest: whether each of them was an ack or a
        # TERM, the message is finished here.
        chosen = self._done[max(ready)]
        for s in ready:
            msg, _ = self._done.pop(s)
            if self.keep_alive is not None:
                self.keep_alive.stop(msg)
        return chosen

    async def _send_ready(self, seq: int) -> None:
        ready = self._resolved(seq)
        if ready is not None:
            msg, terminate = ready
            await (msg.term() if terminate else msg.ack())

    def _hold(self, msg: Msg, d: Delivery, terminate: bool) -> None:
        """Keep *msg*'s answer (alive, with inProgress) until nothing lower is open."""
        self._done[d.stream_seq] = (msg, terminate)
        if self.keep_alive is not None:
            self.keep_alive.start(msg, d.num_delivered, bounded=False)

    async def success(self, msg: Msg, message: Message) -> None:
        d = message.delivery
        self._hold(msg, d, False)
        await self._send_ready(d.stream_seq)

    async def abandoned(self, seq: int, deliveries: int) -> Settled:
        settled = await super().abandoned(seq, deliveries)
        await self._send_ready(seq)
        return settled

    async def _terminate(self, msg: Msg, d: Delivery) -> None:
        self._hold(msg, d, True)  # sent by _end, once nothing lower is open

    async def _end(
        self, msg: Msg, d: Delivery, error: BaseException, *, last: bool, drop: bool = False
    ) -> Settled:
        settled = await super()._end(msg, d, error, last=last, drop=drop)
        if settled.outcome is not Outcome.NAK:
            await self._send_ready(d.stream_seq)
        return settled


def ack_policy(
    policy: AckPolicy,
    rule: RetryRule,
    dead_letter: DeadLetter | None,
    keep_alive: KeepAlive | None = None,
) -> _Policy:
    """The settlement object for *policy* (with the inProgress keep-alive, if any)."""
    kinds: dict[AckPolicy, type[_Policy]] = {
        AckPolicy.EXPLICIT: ExplicitAcks,
        AckPolicy.ALL: CumulativeAcks,
        AckPolicy.NONE: NoAcks,
    }
    return kinds[policy](rule, dead_letter, keep_alive)
