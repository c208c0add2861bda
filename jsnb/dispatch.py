"""Calling handlers: one dispatcher per concurrency mode, one place that reports.

>>> events = []
>>> ps.add_listener(events.append)  # every delivery's outcome, as the dispatcher reports it
>>> sub = await ps.subscribe("orders", lambda msg: None)
>>> _ = await ps.publish("orders", {"id": 1})
>>> _ = await jsnb.until(lambda: events)
>>> [(e.stream_seq, e.num_delivered, e.outcome.value) for e in events]
[(1, 1, 'ack')]

``single`` runs one handler at a time in arrival order; ``parallel`` one task
per delivery, bounded by the consumer's maxAckPending; ``bulk`` hands batches
to the handler. All three turn a delivery into a :class:`~jsnb.messages.Message`,
call the handler (:meth:`Dispatcher._deliver`, or ``_invoke_batch`` for a
batch), let the ack policy settle it and tell listeners in
:meth:`Dispatcher._report`. Upstream's parallel mode acks before the handler
runs (components-contrib #3656); ours never does.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import nats.errors
from nats.aio.msg import Msg

from jsnb.cloudevents import decode
from jsnb.messages import Delivery, DeliveryEvent, Message, Outcome, first_delivery_prefix
from jsnb.settlement import Settled, _Policy

__all__ = [
    "BulkDispatcher",
    "BulkHandler",
    "Dispatcher",
    "Handler",
    "Listener",
    "ParallelDispatcher",
    "SingleDispatcher",
]

log = logging.getLogger("jsnb")

Handler = Callable[[Message], Any]
BulkHandler = Callable[[list[Message]], Any]
Listener = Callable[[DeliveryEvent], None]

PREVIEW_BYTES = 64
# Dapr's app response statuses for bulk entries (case-insensitive, as the runtime reads them).
_SUCCESS, _RETRY, _DROP = "SUCCESS", "RETRY", "DROP"
_ACKED, _EXPIRED = Settled(Outcome.ACK), Settled(Outcome.EXPIRED)
# Handled, but the server gave up on it first (maxDeliver): it ignores the late ack.
_TOO_LATE = (
    "handled, but nats-server had already given up on it (maxDeliver): it ignores this ack, "
    "so the message stays in its stream unacknowledged and the ack floor stays below it"
)
_SUPERSEDED = Settled(Outcome.SUPERSEDED, None, "the server redelivered it meanwhile")
_ALREADY_ENDED = Settled(
    Outcome.SUPERSEDED, None, "nats-server had already given up on it (reported then)"
)


_STALE_IN_BATCH = RuntimeError("a newer delivery of this message is in the same batch")


class _Recent:
    """A set that forgets its oldest members past *size*: bounded per-sequence memory."""

    def __init__(self, size: int = 10_000) -> None:
        self._items: dict[int, None] = {}
        self._size = size

    def add(self, item: int) -> None:
        self._items[item] = None
        if len(self._items) > self._size:
            del self._items[next(iter(self._items))]

    def discard(self, item: int) -> bool:
        """Remove *item*; True if it was there."""
        return self._items.pop(item, 0) is None

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, item: int) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


def _being_cancelled() -> bool:
    """True when the running task itself was cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Dispatcher:
    """Turns deliveries into handler calls and settlements; counts and reports them."""

    _overlaps = True  # attempts of one message may run at once (not in single mode)
    _threads = False  # sync handlers run in worker threads (parallel mode)

    def __init__(
        self,
        topic: str,
        handler: Callable[..., Any],
        policy: _Policy,
        *,
        raw: bool,
        listeners: tuple[list[Listener], list[Listener]],
        track_unsettled: bool,
    ) -> None:
        self.topic = topic
        self.policy = policy
        self._arrived = policy.arrived if policy.watches_arrivals else None
        # Deliveries are timed and settled through _settle with the keep-alive on.
        self._timed = policy.keep_alive is not None
        # Whether _prepare reads the whole ack subject at once (else on demand).
        self._eager = self._overlaps or self._arrived is not None or self._timed
        self.consumer = ""
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
        )
        self._raw = raw
        self._own_listeners, self._host_listeners = listeners
        # An ephemeral consumer recreated after an outage starts below every sequence
        # delivered to us and not settled for good (resume_seq): those NAKed or
        # superseded are kept here, those running are in _running / _current.
        self._tracks = track_unsettled
        self.unsettled: set[int] = set()
        # The highest sequence seen, without parsing every ack subject: first
        # deliveries come in stream order, so it is the newest reply that starts
        # with _first_prefix ("$JS.ACK.<stream>.<consumer>.1."), kept as text.
        self._first_prefix: str | None = None
        self._newest_first = ""
        self._seen_max = 0  # from replies parsed anyway, and from before a reset
        self.delivered = 0
        self.acked = 0
        self.failed = 0
        self.stopping = False
        # Per message with an attempt running here: how many run, the newest delivery
        # count seen, and the server's max-deliveries word if it came meanwhile.
        self._running: dict[int, int] = {}  # (single mode keeps only _current)
        self._current: Message | None = None
        self._newest: dict[int, int] = {}
        self._gave_up: dict[int, int] = {}
        # Recent messages this subscription ended as exhausted (the server's advisory
        # will follow) and those the server's advisory ended (copies may still queue).
        self._reported = _Recent()
        self._abandoned = _Recent()
        self.watching_advisories = False
        self._active = 0
        self._idle: asyncio.Event | None = None  # made by wait_idle, set when _active is 0

    # -- the nats-py callback and lifecycle ----------------------------------------

    async def on_msg(self, msg: Msg) -> None:
        raise NotImplementedError

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler runs; False if *timeout* passed first."""
        if not self._active:
            return True
        if self._idle is None:
            self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def cancel(self) -> None:
        """Cancel running handlers (after :meth:`wait_idle` gave up)."""

    async def _while_stopping(self, msg: Msg) -> None:
        """A delivery that reached a stopping subscription: hand it on, never drop it.

        If the server will deliver it again, a NAK hands it to the next subscriber
        at once. If it will not (its last allowed delivery, or ackPolicy none),
        it is handled here, since dropping it would lose it without a word.
        """
        d = Delivery.from_reply(msg.reply) if msg.reply else None
        if d is None:
            return
        if self.policy.terminates and not self.policy.rule.is_last(d.num_delivered):
            try:
                await msg.nak()
            except nats.errors.Error as exc:
                log.debug("jsnb: handing %s seq %d on: %s", msg.subject, d.stream_seq, exc)
            return
        self._busy(1)
        try:
            await self._handle_now(msg)
        finally:
            self._busy(-1)

    async def _handle_now(self, msg: Msg) -> None:
        prepared = self._prepare(msg)
        if prepared is not None:
            await self._deliver(msg, prepared)

    def _busy(self, delta: int) -> None:
        self._active += delta
        if not self._active and self._idle is not None:
            self._idle.set()
            self._idle = None

    def resume_seq(self) -> int:
        """Where a recreated ephemeral consumer starts so that nothing is skipped; 0: anywhere.

        Below every sequence not yet settled (NAKed, or still running), else just
        past the highest seen; what was settled may come again (at-least-once).
        """
        open_seqs = set(self.unsettled)
        open_seqs.update(self._running)
        if self._current is not None:
            open_seqs.add(self._current.delivery.stream_seq)
        if open_seqs:
            return min(open_seqs)
        seen = self._highest_seen()
        return seen + 1 if seen else 0

    def _highest_seen(self) -> int:
        newest = Delivery.from_reply(self._newest_first) if self._newest_first else None
        return max(newest.stream_seq if newest else 0, self._seen_max)

    def _track_reply(self, reply: str) -> None:
        """An ack subject that is not a first delivery of the known prefix: read it whole."""
        d = Delivery.from_reply(reply)
        if d is None:
            return
        if d.stream_seq > self._seen_max:
            self._seen_max = d.stream_seq
        if d.num_delivered == 1 and self._first_prefix is None:
            self._first_prefix = first_delivery_prefix(reply)
            self._newest_first = reply

    # -- one delivery ----------------------------------------------------------------

    def _prepare(self, msg: Msg) -> tuple[Message, bool] | None:
        """The handler's view of *msg* and whether it expired; None if not JetStream.

        The ack subject is parsed here only where something needs it now
        (overlapping attempts, cumulative acks, the keep-alive); otherwise the
        Message parses it on first access, which most handlers never make.
        """
        reply = msg.reply
        # A first delivery with the known prefix is an ack subject: one check, not two.
        first = self._first_prefix
        is_first = first is not None and reply.startswith(first)
        if not is_first and not reply.startswith("$JS.ACK."):
            log.warning("jsnb: %s: not a JetStream message, left unacked", msg.subject)
            return None
        if self._raw:
            message, expired = Message(self.topic, msg, msg.data), False
        else:
            data, cloud_event, expired = decode(msg.data)
            message = Message(self.topic, msg, data, cloud_event)
        if self._eager:
            d = Delivery.from_reply(reply)
            if d is None:
                log.warning("jsnb: %s: unreadable ack subject %r, left unacked", msg.subject, reply)
                return None
            message._delivery = d
            seq = d.stream_seq
            if self._overlaps:
                self._running[seq] = self._running.get(seq, 0) + 1
                if d.num_delivered > self._newest.get(seq, 0):
                    self._newest[seq] = d.num_delivered
            if self._arrived is not None:
                self._arrived(d)
            if seq > self._seen_max:
                self._seen_max = seq
        elif self._tracks:
            # Measured: 50 ns, where parsing the subject for its sequence costs 400+.
            if is_first:
                self._newest_first = reply
            else:
                self._track_reply(reply)
        if not self._overlaps:
            self._current = message
        self.delivered += 1
        return message, expired

    async def _invoke_batch(self, batch: list[Message]) -> tuple[Any, BaseException | None]:
        """Call the bulk handler: (what it returned, or the error it raised)."""
        try:
            result = self._handler(batch)
            if result is not None and inspect.isawaitable(result):
                result = await result
            return result, None
        except Exception as exc:
            return None, exc
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            return None, exc  # the handler awaited something that was cancelled: a failure

    async def _deliver(self, msg: Msg, prepared: tuple[Message, bool] | None = None) -> None:
        """One delivery, start to end, in one frame: this is the consume hot path.

        Single mode hands it to nats-py as the callback (*prepared* None: it
        prepares *msg* and counts itself busy); parallel mode runs it as a task
        with *prepared* from :meth:`ParallelDispatcher.on_msg`, which counts it.

        It calls the handler (the one place that calls a per-message handler)
        and settles a plain success inline; everything else (a failure, an
        expired event, the keep-alive, a message the server gave up on) goes
        through :meth:`_settle`. One frame, not four (callback, call, settle,
        report): the frames and their tuples cost 1.5 µs a message, as much
        again as raw nats-py's whole callback (bench/README.md, issue 15).
        tests/test_hot_path.py runs each case on both routes.
        """
        counted = prepared is None
        if prepared is None:
            if self.stopping:
                await self._while_stopping(msg)
                return
            prepared = self._prepare(msg)
            if prepared is None:
                return
            self._active += 1
        message, expired = prepared
        try:
            # Truthy when someone reads the times (a list of listeners, or the keep-alive).
            timed = self._timed or self._own_listeners or self._host_listeners
            received = time.time() if timed else 0.0
            if expired:
                await self._settle(msg, message, None, 0.0, received, expired=True)
                return
            start = 0.0
            if timed:
                keep_alive = self.policy.keep_alive
                if keep_alive is not None:
                    keep_alive.start(msg, message.delivery.num_delivered)
                start = time.perf_counter()
            error: BaseException | None = None
            try:
                if self._is_async:
                    await self._handler(message)
                else:
                    # Parallel mode runs sync handlers in threads so they overlap.
                    if self._threads:
                        result = await asyncio.to_thread(self._handler, message)
                    else:
                        result = self._handler(message)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except Exception as exc:
                error = exc
            except asyncio.CancelledError as exc:
                if _being_cancelled():
                    raise
                error = exc  # the handler awaited something that was cancelled: a failure
            duration = time.perf_counter() - start if timed else 0.0
            if error is not None or self._timed or self._gave_up or self._abandoned._items:
                await self._settle(msg, message, error, duration, received)
                return
            # A plain success: what _settle does for it, no more (with nothing given up,
            # whether a newer delivery came meanwhile does not matter to an ack).
            if self._overlaps:
                self._finish(message)
            else:
                self._current = None  # _finish's single-mode part, without the call
            try:
                await self.policy.success(msg, message)
            except nats.errors.Error as exc:
                self._unsettled_by(msg, message, exc)
                return
            self.acked += 1
            if self.unsettled:  # it was NAKed before: settled now
                self.unsettled.discard(message.delivery.stream_seq)
            # Whoever listens now is told, as _settle does (one added meanwhile: untimed).
            if self._own_listeners or self._host_listeners:
                self._report(msg, message, _ACKED, duration, None, received)
        finally:
            if counted:  # _busy(-1) inlined
                self._active -= 1
                if not self._active and self._idle is not None:
                    self._idle.set()
                    self._idle = None

    def _finish(self, message: Message) -> tuple[bool, bool]:
        """This attempt is over: (was a newer delivery seen meanwhile, had the server given up)."""
        if not self._overlaps:  # one attempt at a time: none can be stale
            self._current = None
            if not self._gave_up:
                return False, False
            return False, self._gave_up.pop(message.delivery.stream_seq, None) is not None
        d = message.delivery
        seq = d.stream_seq
        stale = self._newest.get(seq, 0) > d.num_delivered
        gave_up = seq in self._gave_up
        left = self._running.get(seq, 1) - 1
        if left > 0:
            self._running[seq] = left
        else:
            self._running.pop(seq, None)
            self._newest.pop(seq, None)
            self._gave_up.pop(seq, None)
        return stale, gave_up

    async def _settle(
        self,
        msg: Msg,
        message: Message,
        error: BaseException | None,
        duration: float,
        received: float,
        *,
        expired: bool = False,
        drop: bool = False,
    ) -> None:
        """Let the ack policy settle one delivery, then count and report what it returned."""
        policy = self.policy
        if policy.keep_alive is not None:  # the handler is done; a held ack keeps its own
            policy.keep_alive.stop(msg)
        stale, gave_up = self._finish(message)
        try:
            if error is None:
                await policy.success(msg, message)
                settled = _EXPIRED if expired else _ACKED
                self.acked += 1
                # Plain dict lookups, no method call: this is the hot path.
                if gave_up or (
                    self._abandoned._items and message.delivery.stream_seq in self._abandoned._items
                ):
                    log.warning(
                        "jsnb: %s seq %d: %s", msg.subject, message.delivery.stream_seq, _TOO_LATE
                    )
                    settled = settled._replace(note=_TOO_LATE)
            else:
                self.failed += 1
                d = message.delivery
                if stale:  # the newer delivery settles the message; a NAK would be a lie
                    settled = _SUPERSEDED
                elif d.stream_seq in self._abandoned:
                    settled = _ALREADY_ENDED
                elif drop:
                    settled = await policy.drop(msg, d, error, last=gave_up)
                else:
                    settled = await policy.failure(msg, d, error, last=gave_up)
        except nats.errors.Error as exc:
            self._unsettled_by(msg, message, exc)
            return
        outcome = settled.outcome
        if self._tracks:
            if outcome is Outcome.NAK:  # due back
                self.unsettled.add(message.delivery.stream_seq)
            elif outcome is not Outcome.SUPERSEDED and self.unsettled:  # settled for good
                self.unsettled.discard(message.delivery.stream_seq)
            # SUPERSEDED: the newer delivery, running or settled, answers for it.
        if outcome is Outcome.EXHAUSTED and self.watching_advisories and not gave_up:
            self._reported.add(message.delivery.stream_seq)  # the server's advisory will follow
        if self._own_listeners or self._host_listeners:
            self._report(msg, message, settled, duration, error, received)

    def _unsettled_by(self, msg: Msg, message: Message, exc: nats.errors.Error) -> None:
        """The answer for *message* did not go out (the connection went away)."""
        # The server redelivers it after the ack deadline; if the consumer is lost
        # meanwhile, the recreated one must start at or below it (resume_seq).
        seq = message.delivery.stream_seq
        if self._tracks:
            self.unsettled.add(seq)
        log.warning("jsnb: could not settle %s seq %d: %s", msg.subject, seq, exc)

    async def server_gave_up(self, seq: int, deliveries: int) -> None:
        """nats-server's max-deliveries advisory for *seq*: it will not deliver it again.

        The server counts deliveries that waited in this client (behind a slow
        handler, or dropped while stopping) too, so a message can run out of
        deliveries before any handler settled it. If an attempt still runs here,
        its failure becomes final; if none does, the message is dead-lettered
        from the stream (or reported ``exhausted``) now. Nothing is reported twice.
        """
        if self._reported.discard(seq):
            return  # this subscription reported it already
        current = self._current
        if (
            seq in self._running
            if self._overlaps
            else (current is not None and current.delivery.stream_seq == seq)
        ):
            self._gave_up[seq] = deliveries
            return
        if seq in self._abandoned:
            return
        self._abandoned.add(seq)
        try:
            settled = await self.policy.abandoned(seq, deliveries)
        except nats.errors.Error as exc:
            log.warning(
                "jsnb: %s seq %d: could not settle after the advisory: %s", self.topic, seq, exc
            )
            return
        self.unsettled.discard(seq)
        log.error(
            "jsnb: %s seq %d: nats-server stopped redelivering it after %d deliveries "
            "(maxDeliver) before a handler settled it: %s",
            self.topic,
            seq,
            deliveries,
            "dead-lettered from the stream"
            if settled.outcome is Outcome.DEAD_LETTER
            else "it stays in the stream",
        )
        if self._own_listeners or self._host_listeners:
            now = time.time()
            event = DeliveryEvent(
                now, self.topic, self.topic, seq, 0, deliveries, settled.outcome,
                None, 0.0, settled.note, b"", self.consumer, now,
            )  # fmt: skip
            self._emit(event)

    def reset(self) -> None:
        """The consumer was recreated: its delivery counts start again."""
        self._seen_max = self._highest_seen()
        self._first_prefix, self._newest_first = None, ""  # the new consumer has its own name
        self._newest.clear()
        self._gave_up.clear()
        self._reported.clear()
        self._abandoned.clear()
        self.policy.reset()

    def _report(
        self,
        msg: Msg,
        message: Message,
        settled: Settled,
        duration: float,
        error: BaseException | None,
        received: float,
    ) -> None:
        """Tell every listener what became of this delivery: the one place that does."""
        d = message.delivery
        if not received:  # a listener came while the handler ran
            received = time.time()
        text = None if error is None else f"{type(error).__name__}: {error}"
        if settled.note:
            text = f"{text}; {settled.note}" if text else settled.note
        # Positional, in field order (time, topic, subject, stream_seq, consumer_seq,
        # num_delivered, outcome, delay, duration, error, preview, consumer, received):
        # keywords cost a third more per event.
        event = DeliveryEvent(
            time.time(),
            self.topic,
            msg.subject,
            d.stream_seq,
            d.consumer_seq,
            d.num_delivered,
            settled.outcome,
            settled.delay,
            duration,
            text,
            message.data[:PREVIEW_BYTES],
            self.consumer,
            received,
        )
        self._emit(event)

    def _emit(self, event: DeliveryEvent) -> None:
        for listener in (*self._own_listeners, *self._host_listeners):
            try:
                listener(event)
            except Exception:
                log.exception("jsnb: delivery listener failed")


class SingleDispatcher(Dispatcher):
    """``concurrencyMode: single``: one handler at a time, in delivery order."""

    _overlaps = False

    # nats-py calls _deliver itself: no frame of ours around it (issue 15).
    on_msg = Dispatcher._deliver


class ParallelDispatcher(Dispatcher):
    """``concurrencyMode: parallel``: a task per delivery, at most maxAckPending at once.

    Sync handlers run in asyncio's default thread pool, which bounds how many
    of them overlap (docs/behaviour.md).
    """

    _threads = True

    def __init__(self, *args: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._room: asyncio.Future[None] | None = None  # on_msg waits here when full

    async def on_msg(self, msg: Msg) -> None:
        if self.stopping:
            await self._while_stopping(msg)
            return
        # The server sends at most maxAckPending unacknowledged messages, so this
        # waits only for redeliveries of attempts still running: a length check, not
        # a semaphore (acquire and release cost 0.8 µs a message, issue 15).
        if len(self._tasks) >= self._limit:
            while len(self._tasks) >= self._limit:
                self._room = asyncio.get_running_loop().create_future()
                await self._room
            if self.stopping:
                await self._while_stopping(msg)
                return
        prepared = self._prepare(msg)
        if prepared is None:
            return
        self._busy(1)  # _done counts it off, even if the task is cancelled before it starts
        task = asyncio.create_task(self._deliver(msg, prepared))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._busy(-1)
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class BulkDispatcher(Dispatcher):
    """Bulk subscribe: batches of up to *size* deliveries, or what came within *wait* s.

    The handler returns ``None`` (all succeeded) or ``{entry_id: status}`` where
    a status is ``None`` or Dapr's ``"SUCCESS"`` (success), an exception or
    ``"RETRY"`` (failure), or ``"DROP"`` (no retry: dead-lettered if a topic is
    set, else terminated).
    """

    def __init__(self, *args: Any, size: int, wait: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._size, self._wait = size, wait
        self._queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=max(2 * size, 1))
        self._handing_on: set[asyncio.Future[None]] = set()
        self._batcher = asyncio.create_task(self._run(), name=f"jsnb-bulk-{self.topic}")

    async def on_msg(self, msg: Msg) -> None:
        if self.stopping:
            await self._while_stopping(msg)
            return
        await self._queue.put(msg)

    async def _handle_now(self, msg: Msg) -> None:
        await self._process_batch([msg])

    def cancel(self) -> None:
        self._batcher.cancel()
        while not self._queue.empty():  # batched but not yet handed to the handler
            msg = self._queue.get_nowait()
            task = asyncio.ensure_future(self._while_stopping(msg))
            self._handing_on.add(task)
            task.add_done_callback(self._handing_on.discard)

    async def _run(self) -> None:
        queue, size = self._queue, self._size
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            self._busy(1)
            try:
                deadline = loop.time() + self._wait
                while len(batch) < size:
                    try:
                        batch.append(queue.get_nowait())
                        continue
                    except asyncio.QueueEmpty:
                        pass
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
                await self._process_batch(batch)
            finally:
                self._busy(-1)

    async def _process_batch(self, batch: list[Msg]) -> None:
        received = time.time()
        items: list[tuple[Msg, Message]] = []
        for msg in batch:
            prepared = self._prepare(msg)
            if prepared is None:
                continue
            message, expired = prepared
            if expired:
                await self._settle(msg, message, None, 0.0, received, expired=True)
            else:
                items.append((msg, message))
        if not items:
            return
        # A batch may hold several deliveries of one message (redelivered while it
        # waited): the handler sees the newest; the older ones are superseded by it.
        newest: dict[int, tuple[Msg, Message]] = {}
        for item in items:
            d = item[1].delivery
            kept = newest.get(d.stream_seq)
            if kept is None or d.num_delivered > kept[1].delivery.num_delivered:
                newest[d.stream_seq] = item
        if len(newest) < len(items):
            chosen = {id(item) for item in newest.values()}
            for item in items:
                if id(item) not in chosen:
                    await self._settle(*item, _STALE_IN_BATCH, 0.0, received)
            items = [item for item in items if id(item) in chosen]
        keep_alive = self.policy.keep_alive
        if keep_alive is not None:
            for msg, message in items:
                keep_alive.start(msg, message.delivery.num_delivered)
        start = time.perf_counter()
        statuses, error = await self._invoke_batch([m for _, m in items])
        duration = time.perf_counter() - start
        if error is None and statuses is not None and not isinstance(statuses, Mapping):
            error = TypeError(
                f"bulk handler returned {type(statuses).__name__}; expected None or a dict of "
                "entry_id -> None / 'SUCCESS' (success), an exception / 'RETRY' (retry), or "
                "'DROP' (no retry)"
            )
        for msg, message in items:
            entry_error, drop = error, False
            if error is None and statuses is not None:
                entry_error, drop = _entry_status(statuses, message.entry_id)
            await self._settle(msg, message, entry_error, duration, received, drop=drop)


def _entry_status(statuses: Mapping[str, Any], entry_id: str) -> tuple[BaseException | None, bool]:
    """(error, drop) for one bulk entry's status, read as Dapr's runtime reads it."""
    if entry_id not in statuses:
        return LookupError(f"bulk handler returned no status for entry {entry_id}"), False
    status = statuses[entry_id]
    if status is None:
        return None, False
    if isinstance(status, BaseException):
        return status, False
    word = str(status).strip().upper()
    if word == _SUCCESS:
        return None, False
    if word == _DROP:
        return RuntimeError(f"bulk handler returned DROP for entry {entry_id}"), True
    if word == _RETRY:
        return RuntimeError(f"bulk handler returned RETRY for entry {entry_id}"), False
    # Dapr's runtime retries an unknown status; so do we, saying what it was.
    return RuntimeError(
        f"bulk handler returned unknown status {status!r} for entry {entry_id}; expected None, "
        "'SUCCESS', 'RETRY', 'DROP' or an exception (retried)"
    ), False
