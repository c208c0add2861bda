"""A live subscription: consumer set-up, handler dispatch, ack / nak / dead-letter.

>>> # sub = await ps.subscribe("orders", handler)   # see jsnb.pubsub
>>> # await sub.consumer_info()

Each delivery is acknowledged only after its own handler returned; a failure
is NAKed with the delay backOff gives for that attempt. Upstream's parallel
mode acks before the handler runs (components-contrib #3656); ours does not.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api

from jsnb.cloudevents import decode, parse_raw_payload
from jsnb.consumer import (
    ConsumerConflictError,
    consumer_config,
    describe_conflict,
    diff_config,
    is_last_delivery,
    nak_delay,
    nak_request,
)
from jsnb.messages import Delivery, DeliveryEvent, Message, Outcome
from jsnb.metadata import AckPolicy, Metadata
from jsnb.state import Record, consumer_record
from jsnb.streams import stream_for_subject

if TYPE_CHECKING:
    from jsnb.pubsub import JetStreamPubSub

log = logging.getLogger("jsnb")

Handler = Callable[[Message], Any]
BulkHandler = Callable[[list[Message]], Any]
Listener = Callable[[DeliveryEvent], None]

PREVIEW_BYTES = 64
# Header names on dead-lettered copies, recording where the message came from.
DLQ_HEADERS = (
    "Jsnb-Original-Subject",
    "Jsnb-Original-Stream",
    "Jsnb-Original-Sequence",
    "Jsnb-Delivery-Count",
    "Jsnb-Last-Error",
)


def _delivery(reply: str) -> Delivery | None:
    """Where a message sits, read from its JetStream ack subject; None if it has none.

    The subject is ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
    seq>.<ns timestamp>.<pending>``, with ``<domain>.<account hash>`` after ``ACK``
    in the newer form. nats-py's ``msg.metadata`` reads it through two frozen
    dataclasses first, which costs as much as the rest of our dispatch.
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        js, ack, stream, consumer, delivered, stream_seq, consumer_seq, stamp, pending = tokens
    elif len(tokens) >= 11:
        js, ack, _, _, stream, consumer, delivered, stream_seq, consumer_seq, stamp, pending = (
            tokens[:11]
        )
    else:
        return None
    if js != "$JS" or ack != "ACK":
        return None
    try:
        # Positional: with keywords this frozen dataclass costs half as much again.
        return Delivery(
            int(stream_seq),
            int(consumer_seq),
            int(delivered),
            int(pending),
            datetime.fromtimestamp(int(stamp) / 1e9, UTC),
            stream,
            consumer,
        )
    except ValueError:
        return None


def _being_cancelled() -> bool:
    """True when the running task itself was cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _AckFloor:
    """Cumulative acks (ackPolicy all) that never cover an unfinished message.

    Acking stream sequence N acks everything at or below N, so a success is
    only sent once every lower sequence delivered to us has succeeded too.
    """

    def __init__(self) -> None:
        self._unresolved: set[int] = set()
        self._done: dict[int, Msg] = {}

    def started(self, seq: int) -> None:
        self._unresolved.add(seq)

    def failed(self, seq: int) -> None:
        self._unresolved.add(seq)  # stays unresolved until a redelivery succeeds

    def resolved(self, seq: int) -> None:
        """A delivery that needs no ack of its own (terminated, dead-lettered, exhausted)."""
        self._unresolved.discard(seq)

    def succeeded(self, seq: int, msg: Msg) -> Msg | None:
        """The message whose ack is now safe to send, if any."""
        self._unresolved.discard(seq)
        self._done[seq] = msg
        floor = min(self._unresolved, default=None)
        ready = [s for s in self._done if floor is None or s < floor]
        if not ready:
            return None
        top = max(ready)
        chosen = self._done[top]
        for s in ready:
            del self._done[s]
        return chosen


class Subscription:
    """One topic subscription of a :class:`jsnb.JetStreamPubSub`.

    Created by ``ps.subscribe`` / ``ps.bulk_subscribe``; stop it with
    :meth:`unsubscribe` (``ps.close()`` stops all).
    """

    def __init__(
        self,
        owner: JetStreamPubSub,
        topic: str,
        handler: Callable[..., Any],
        md: Metadata,
        metadata: Mapping[str, str] | None,
        *,
        bulk: tuple[int, float] | None = None,
    ) -> None:
        self._owner = owner
        self.topic = topic
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
        )
        self.md = md
        meta = {k.lower(): v for k, v in (metadata or {}).items()}
        self._raw = parse_raw_payload(meta.get("rawpayload") or "")
        self.dead_letter_topic: str | None = meta.get("deadlettertopic") or None
        self._bulk = bulk
        self._parallel = md.concurrency_mode.value == "parallel"
        self.stream = ""
        self.consumer = ""
        self._durable = bool(md.durable_name)
        self._config: api.ConsumerConfig | None = None
        self._psub: Any = None
        self._listeners: list[Listener] = []
        self._stopping = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._queue: asyncio.Queue[Msg] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._ack_floor = _AckFloor() if md.ack_policy is AckPolicy.ALL else None
        self._ack_each = md.ack_policy is AckPolicy.EXPLICIT
        self._last_stream_seq = 0
        self.delivered = 0
        self.acked = 0
        self.failed = 0

    # -- set-up ------------------------------------------------------------------

    async def _start(self) -> None:
        owner = self._owner
        js = owner.jetstream
        md = self.md
        self.stream = md.stream_name or await stream_for_subject(
            owner.nc, owner.api_prefix, self.topic
        )
        want = consumer_config(md, self.topic, owner.nc.new_inbox())
        info = None
        if self._durable:
            try:
                info = await js.consumer_info(self.stream, md.durable_name)
            except nats.js.errors.NotFoundError:
                info = None
        if info is not None:
            info = await self._reuse(info, want)
        else:
            info = await js.add_consumer(self.stream, want)
        self._config = info.config
        self.consumer = info.name
        if self._parallel:
            limit = info.config.max_ack_pending or 1000
            self._slots = asyncio.Semaphore(limit if limit > 0 else 1_000_000)
        if self._bulk is not None:
            self._queue = asyncio.Queue(maxsize=max(2 * self._bulk[0], 1))
            self._batcher = asyncio.create_task(self._run_batches(), name=f"jsnb-bulk-{self.topic}")
        self._psub = await js.subscribe_bind(
            self.stream, info.config, info.name, cb=self._on_msg, manual_ack=True
        )
        # The SUB is only buffered so far: make sure the server has it before returning.
        await owner.nc.flush()

    async def _reuse(self, info: api.ConsumerInfo, want: api.ConsumerConfig) -> api.ConsumerInfo:
        """Join, retune or refuse an existing durable consumer."""
        have = info.config
        md = self.md
        if have.filter_subject and have.filter_subject != self.topic:
            raise ConsumerConflictError(
                f"jsnb: durable consumer {md.durable_name!r} on stream {self.stream!r} already "
                f"serves topic {have.filter_subject!r}, not {self.topic!r}. One durable "
                "consumer serves one topic (upstream #2385): give each topic its own "
                f"durableName, e.g. '{md.durable_name}-{self.topic.replace('.', '-')}'"
            )
        if info.push_bound and not md.queue_group_name:
            raise ConsumerConflictError(
                f"jsnb: durable consumer {md.durable_name!r} already has an active subscriber; "
                "to share its messages between subscribers set the same queueGroupName on each"
            )
        if have.deliver_subject:
            want.deliver_subject = have.deliver_subject  # queue members share one inbox
        diff = diff_config(want, have)
        if diff.fixed:
            raise ConsumerConflictError(describe_conflict(md.durable_name, self.stream, diff.fixed))
        if diff.updatable:
            changes = ", ".join(
                f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.updatable.items()
            )
            log.info("jsnb: retuning consumer %s: %s", md.durable_name, changes)
            info = await self._owner.jetstream.add_consumer(self.stream, want)
        return info

    # -- listeners -----------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call *listener(event)* for every delivery attempt of this subscription."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _report(
        self,
        msg: Msg,
        message: Message,
        outcome: Outcome,
        delay: float | None,
        duration: float,
        error: BaseException | None,
        received: float,
    ) -> None:
        """Tell every listener what became of this delivery."""
        d = message.delivery
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
            outcome,
            delay,
            duration,
            None if error is None else f"{type(error).__name__}: {error}",
            message.data[:PREVIEW_BYTES],
            self.consumer,
            received,
        )
        for listener in (*self._listeners, *self._owner._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("jsnb: delivery listener failed")

    # -- dispatch ------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        if self._stopping:
            return  # left unacked: the server redelivers it after ackWait
        if self._queue is not None:
            await self._queue.put(msg)
        elif self._slots is not None:
            await self._slots.acquire()
            self._busy(1)
            task = asyncio.create_task(self._process_one(msg))
            self._tasks.add(task)
            task.add_done_callback(self._parallel_done)
        else:
            # Single mode, one message at a time: _busy() inlined, as this is the hot path.
            self._active += 1
            self._idle.clear()
            try:
                await self._process_one(msg)
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()

    def _parallel_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        assert self._slots is not None
        self._slots.release()
        self._busy(-1)

    def _busy(self, delta: int) -> None:
        self._active += delta
        if self._active:
            self._idle.clear()
        else:
            self._idle.set()

    def _prepare(self, msg: Msg) -> tuple[Message, bool] | None:
        """The handler's view of *msg* and whether it expired; None if not JetStream."""
        delivery = _delivery(msg.reply) if msg.reply else None
        if delivery is None:
            log.warning("jsnb: %s: not a JetStream message, left unacked", msg.subject)
            return None
        if delivery.stream_seq > self._last_stream_seq:
            self._last_stream_seq = delivery.stream_seq
        self.delivered += 1
        metadata = {"Topic": msg.subject}
        headers = msg.headers
        if headers:
            for k, v in headers.items():
                if not k.startswith("Nats-"):
                    metadata[k] = v
        if self._raw:
            data, cloud_event, expired = msg.data, None, False
        else:
            data, cloud_event, expired = decode(msg.data)
        # Positional, in field order: keywords cost a third more on this hot path.
        entry_id = str(delivery.consumer_seq)
        message = Message(self.topic, data, metadata, cloud_event, entry_id, delivery, headers)
        return message, expired

    async def _process_one(self, msg: Msg) -> None:
        received = time.time()
        prepared = self._prepare(msg)
        if prepared is None:
            return
        message, expired = prepared
        if self._ack_floor is not None:
            self._ack_floor.started(message.delivery.stream_seq)
        if expired:
            await self._settle(msg, message, None, 0.0, received, expired=True)
            return
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            if self._is_async:
                await self._handler(message)
            elif self._slots is not None:
                # Parallel mode runs sync handlers in threads so they overlap.
                result = await asyncio.to_thread(self._handler, message)
                if inspect.isawaitable(result):
                    await result
            else:
                result = self._handler(message)
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:
            error = exc
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            error = exc  # the handler awaited something that was cancelled: a failure
        duration = time.perf_counter() - start
        if error is None and self._ack_each:
            # The usual case, without _settle's branches.
            self.acked += 1
            try:
                await msg.ack()
            except nats.errors.Error as exc:
                self._settle_failed(msg, message, exc)
                return
            if self._listeners or self._owner._listeners:
                self._report(msg, message, Outcome.ACK, None, duration, None, received)
            return
        await self._settle(msg, message, error, duration, received)

    async def _settle(
        self,
        msg: Msg,
        message: Message,
        error: BaseException | None,
        duration: float,
        received: float,
        *,
        expired: bool = False,
    ) -> None:
        """Ack, nak, dead-letter or terminate one delivery, then tell listeners."""
        d = message.delivery
        delay: float | None = None
        try:
            if error is None:
                outcome = Outcome.EXPIRED if expired else Outcome.ACK
                self.acked += 1
                if self._ack_each:
                    await msg.ack()
                elif self._ack_floor is not None:
                    ready = self._ack_floor.succeeded(d.stream_seq, msg)
                    if ready is not None:
                        await ready.ack()
            else:
                self.failed += 1
                outcome, delay = await self._fail(msg, message, error)
        except nats.errors.Error as exc:
            self._settle_failed(msg, message, exc)
            return
        if self._listeners or self._owner._listeners:
            self._report(msg, message, outcome, delay, duration, error, received)

    def _settle_failed(self, msg: Msg, message: Message, exc: Exception) -> None:
        # The connection went away: the server will redeliver after ackWait.
        log.warning(
            "jsnb: could not settle %s seq %d: %s", msg.subject, message.delivery.stream_seq, exc
        )

    async def _fail(
        self, msg: Msg, message: Message, error: BaseException
    ) -> tuple[Outcome, float | None]:
        md = self.md
        d = message.delivery
        if md.ack_policy is AckPolicy.NONE:
            log.warning(
                "jsnb: handler failed for %s seq %d with ackPolicy none: not redelivered",
                msg.subject,
                d.stream_seq,
            )
            return Outcome.EXHAUSTED, None
        if is_last_delivery(md, self._config, d.num_delivered):
            if self.dead_letter_topic:
                try:
                    await self._dead_letter(msg, d, error)
                except Exception as exc:
                    log.error(
                        "jsnb: dead-letter publish to %s failed (%s); NAKed instead",
                        self.dead_letter_topic,
                        exc,
                    )
                else:
                    await msg.term()
                    if self._ack_floor is not None:
                        self._ack_floor.resolved(d.stream_seq)
                    return Outcome.DEAD_LETTER, None
            else:
                log.warning(
                    "jsnb: %s seq %d failed its last allowed delivery (%d); it stays in the "
                    "stream unacknowledged. Set deadLetterTopic to keep a copy.",
                    msg.subject,
                    d.stream_seq,
                    d.num_delivered,
                )
                await msg.nak()
                if self._ack_floor is not None:
                    self._ack_floor.resolved(d.stream_seq)
                return Outcome.EXHAUSTED, None
        backoff = (self._config.backoff if self._config is not None else None) or []
        delay = nak_delay(md, d.num_delivered, backoff)
        if self._ack_floor is not None:
            self._ack_floor.failed(d.stream_seq)
        await msg.nak(delay=nak_request(backoff, delay))
        return Outcome.NAK, delay

    async def _dead_letter(self, msg: Msg, d: Delivery, error: BaseException) -> None:
        """Publish the original bytes, with where they came from, to the dead-letter topic."""
        headers = dict(
            zip(
                DLQ_HEADERS,
                (
                    msg.subject,
                    d.stream,
                    str(d.stream_seq),
                    str(d.num_delivered),
                    f"{type(error).__name__}: {error}"[:1024].replace("\r", " ").replace("\n", " "),
                ),
                strict=True,
            )
        )
        # A stable id: retrying the dead-letter publish never stores two copies.
        headers["Nats-Msg-Id"] = f"dlq-{d.stream}-{d.stream_seq}"
        await self._owner.jetstream.publish(
            self.dead_letter_topic, msg.data, headers=headers, timeout=self._owner.publish_timeout
        )

    # -- bulk ----------------------------------------------------------------------

    async def _run_batches(self) -> None:
        assert self._queue is not None and self._bulk is not None
        size, wait = self._bulk
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            self._busy(1)
            try:
                deadline = loop.time() + wait
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
            if self._ack_floor is not None:
                self._ack_floor.started(message.delivery.stream_seq)
            if expired:
                await self._settle(msg, message, None, 0.0, received, expired=True)
            else:
                items.append((msg, message))
        if not items:
            return
        start = time.perf_counter()
        statuses: Any = None
        batch_error: BaseException | None = None
        try:
            statuses = self._handler([m for _, m in items])
            if inspect.isawaitable(statuses):
                statuses = await statuses
        except Exception as exc:
            batch_error = exc
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            batch_error = exc
        duration = time.perf_counter() - start
        if batch_error is None and statuses is not None and not isinstance(statuses, Mapping):
            batch_error = TypeError(
                f"bulk handler returned {type(statuses).__name__}; expected a dict of "
                "entry_id -> None (success) or Exception (failure)"
            )
        for msg, message in items:
            if batch_error is not None:
                error = batch_error
            elif statuses is None:
                error = None
            elif message.entry_id not in statuses:
                error = LookupError(f"bulk handler returned no status for entry {message.entry_id}")
            else:
                status = statuses[message.entry_id]
                error = (
                    status
                    if isinstance(status, BaseException) or status is None
                    else (RuntimeError(str(status)))
                )
            await self._settle(msg, message, error, duration, received)

    # -- state and lifecycle -----------------------------------------------------------

    async def consumer_info(self) -> api.ConsumerInfo:
        """The server's view of this subscription's consumer."""
        return await self._owner.jetstream.consumer_info(self.stream, self.consumer)

    async def stream_info(self) -> api.StreamInfo:
        """The server's view of the stream this subscription reads."""
        return await self._owner.jetstream.stream_info(self.stream)

    async def state(self) -> Record:
        """The consumer's counters and effective config as one flat record (a table in Jupyter)."""
        return consumer_record(await self.consumer_info())

    async def _recover_until_done(self) -> None:
        """:meth:`_recover`, retried with growing pauses until it works or we stop."""
        pause = 0.5
        while not self._stopping:
            try:
                await self._recover()
                return
            except Exception as exc:
                log.warning(
                    "jsnb: recovering %s failed (%s); retrying in %.1fs", self.topic, exc, pause
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _recover(self) -> None:
        """After a reconnect: recreate the consumer if the server lost it meanwhile."""
        if self._stopping or self._config is None:
            return
        try:
            await self.consumer_info()
            return
        except nats.js.errors.NotFoundError:
            pass
        cfg = self._config
        if not self._durable and self._last_stream_seq:
            cfg = consumer_config(self.md, self.topic, cfg.deliver_subject or "")
            cfg.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = self._last_stream_seq + 1
            cfg.opt_start_time = None
        info = await self._owner.jetstream.add_consumer(self.stream, cfg)
        self.consumer = info.name
        log.warning("jsnb: consumer for %s was gone after a reconnect; recreated", self.topic)

    async def unsubscribe(self, *, timeout: float = 30.0) -> None:
        """Stop deliveries, wait for running handlers, then remove ephemeral consumers.

        Durable consumers stay on the server and resume where they left off.
        """
        if self._stopping:
            return
        self._stopping = True
        self._owner._forget(self)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning(
                "jsnb: handlers of %s still running after %.0fs; cancelled", self.topic, timeout
            )
            for task in list(self._tasks):
                task.cancel()
        if self._batcher is not None:
            self._batcher.cancel()
        if self._psub is not None:
            try:
                await self._psub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("jsnb: unsubscribe %s: %s", self.topic, exc)
        nc, js = self._owner._nc, self._owner._js
        if (
            not self._durable
            and self.consumer
            and nc is not None
            and js is not None
            and not nc.is_closed
        ):
            try:
                await js.delete_consumer(self.stream, self.consumer)
            except (nats.js.errors.NotFoundError, nats.errors.Error) as exc:
                log.debug("jsnb: deleting consumer %s: %s", self.consumer, exc)

    @property
    def pubsub(self) -> JetStreamPubSub:
        """The component this subscription belongs to."""
        return self._owner

    @property
    def active(self) -> bool:
        return not self._stopping

    def __repr__(self) -> str:
        return (
            f"<Subscription topic={self.topic!r} stream={self.stream!r} "
            f"consumer={self.consumer!r} delivered={self.delivered} acked={self.acked} "
            f"failed={self.failed}{'' if self.active else ' stopped'}>"
        )

    def _repr_html_(self) -> str:
        import html

        rows = {
            "topic": self.topic,
            "stream": self.stream,
            "consumer": self.consumer + (" (durable)" if self._durable else " (ephemeral)"),
            "mode": "bulk" if self._bulk else self.md.concurrency_mode.value,
            "delivered / acked / failed": f"{self.delivered} / {self.acked} / {self.failed}",
            "dead-letter topic": self.dead_letter_topic or "-",
            "state": "active" if self.active else "stopped",
        }
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in rows.items()
        )
        return f"<table class='jsnb-subscription'>{body}</table>"
