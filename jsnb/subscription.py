"""A live subscription: binding to its consumer, recovering it, stopping it.

>>> sub = await ps.subscribe("orders", lambda msg: None)   # see jsnb.pubsub
>>> info = await sub.consumer_info()
>>> info.config.filter_subject, sub.rule.max_deliver
('orders', -1)

A subscription composes three parts: the consumer binding here (create, reuse
or retune the consumer; recover it after an outage; unsubscribe), a
dispatcher per concurrency mode (:mod:`jsnb.dispatch`) and an ack policy per
``ackPolicy`` (:mod:`jsnb.settlement`), both built from the
:class:`~jsnb.retry.RetryRule` of the consumer the server holds. What it needs
of its component is the narrow :class:`SubscriptionHost`.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, api

from jsnb.cloudevents import normalize_metadata, parse_raw_payload
from jsnb.consumer import ConsumerConflictError, compare, consumer_config, retune
from jsnb.dispatch import (
    BulkDispatcher,
    Dispatcher,
    Listener,
    ParallelDispatcher,
    SingleDispatcher,
)
from jsnb.errors import MAXIMUM_CONSUMERS, ConsumerLimitError, MetadataError, StreamNotFoundError
from jsnb.keepalive import KeepAlive
from jsnb.metadata import AckPolicy, ConcurrencyMode, ConsumerMode, Metadata, _warn
from jsnb.pull import PULL_BATCH, PULL_EXPIRES, PullFeed
from jsnb.retry import RetryRule
from jsnb.settlement import CumulativeAcks, DeadLetter, ack_policy
from jsnb.state import Record, consumer_record, to_frame
from jsnb.streams import stream_for_subject
from jsnb.subjects import check_topic, subjects_overlap

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Subscription", "SubscriptionHost"]

log = logging.getLogger("jsnb")

# nats-server publishes one when it stops redelivering a message (checked in its source).
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"


class SubscriptionHost(Protocol):
    """What a subscription needs from its component, and nothing more."""

    publish_timeout: float
    _nc: Client | None
    _js: JetStreamContext | None
    _listeners: list[Listener]

    @property
    def api_prefix(self) -> str: ...

    def _forget(self, sub: Subscription) -> None: ...

    async def consumer_info(self, stream: str, consumer: str) -> api.ConsumerInfo: ...

    async def stream_info(self, stream: str) -> api.StreamInfo: ...


class Subscription:
    """One topic subscription of a :class:`jsnb.JetStreamPubSub`.

    Created by ``ps.subscribe`` / ``ps.bulk_subscribe``; stop it with
    :meth:`unsubscribe` (``ps.close()`` stops all).
    """

    def __init__(
        self,
        owner: SubscriptionHost,
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
        self.md = md
        meta = {k.lower(): v for k, v in normalize_metadata(metadata, what="subscribe").items()}
        self._raw = parse_raw_payload(meta.get("rawpayload") or "")
        self.dead_letter_topic: str | None = meta.get("deadlettertopic") or None
        self._bulk = bulk
        self.stream = ""
        self.consumer = ""
        self._durable = bool(md.durable_name)
        self._config: api.ConsumerConfig | None = None
        self.rule = RetryRule.from_metadata(md)
        self._psub: NatsSubscription | None = None
        self._listeners: list[Listener] = []
        self._dispatcher: Dispatcher | None = None
        self._stopping = False
        self._advisories: NatsSubscription | None = None
        self._pull = md.consumer_mode is ConsumerMode.PULL
        self._feed: PullFeed | None = None
        self._recovering: set[asyncio.Task[None]] = set()
        self.keep_alive: KeepAlive | None = None

    # -- set-up ------------------------------------------------------------------

    @property
    def _js(self) -> JetStreamContext:
        assert self._owner._js is not None
        return self._owner._js

    @property
    def _nc(self) -> Client:
        assert self._owner._nc is not None
        return self._owner._nc

    async def _start(self) -> None:
        md = self.md
        origin = await self._find_stream()
        await self._check_dead_letter_topic()
        want = consumer_config(md, self.topic, self._nc.new_inbox())
        info = None
        if self._durable:
            try:
                info = await self._js.consumer_info(self.stream, md.durable_name)
            except nats.js.errors.NotFoundError:
                info = None
        if info is not None:
            info = await self._reuse(info)
        else:
            info = await self._add_consumer(want)
        self._config = info.config
        self.consumer = info.name
        self.rule = RetryRule.from_config(info.config)
        dead_letter = None
        if self.dead_letter_topic is not None:
            dead_letter = DeadLetter(
                self._js,
                self.dead_letter_topic,
                self.stream,
                origin,
                info.name,
                self._owner.publish_timeout,
            )
            if self.rule.max_deliver <= 0 and md.ack_policy is not AckPolicy.NONE:
                _warn(
                    f"jsnb: deadLetterTopic {self.dead_letter_topic!r} is never used: consumer "
                    f"{info.name!r} allows unlimited deliveries; set maxDeliver to dead-letter "
                    "a message after that many failed attempts",
                    UserWarning,
                )
        every = md.keep_alive
        if every is not None:
            self.keep_alive = KeepAlive(every, self.rule, md.max_handler_time.total_seconds())
        policy = ack_policy(md.ack_policy, self.rule, dead_letter, self.keep_alive)
        if isinstance(policy, CumulativeAcks) and info.num_ack_pending:
            # A previous subscriber of this durable left these unacknowledged: our
            # cumulative acks must not cover them before they come back to us.
            delivered = info.delivered.stream_seq if info.delivered else 0
            policy.hold_for_previous(delivered, info.num_ack_pending)
        self._dispatcher = self._make_dispatcher(policy, info.config)
        self._dispatcher.consumer = info.name
        if self._pull:
            await self._start_feed(info.name)
        else:
            self._psub = await self._js.subscribe_bind(
                self.stream, info.config, info.name, cb=self._dispatcher.on_msg, manual_ack=True
            )
        await self._watch_max_deliveries()
        # The SUB is only buffered so far: make sure the server has it before returning.
        await self._nc.flush()

    async def _start_feed(self, consumer: str) -> None:
        """Pull mode: batches within the consumer's request limits, through the dispatcher."""
        assert self._dispatcher is not None
        md = self.md
        expires = md.max_request_expires.total_seconds() or PULL_EXPIRES
        self._feed = PullFeed(
            self._nc,
            self._owner.api_prefix,
            self.stream,
            consumer,
            self._dispatcher.on_msg,
            batch=min(md.max_request_batch or PULL_BATCH, PULL_BATCH),
            expires=min(expires, PULL_EXPIRES),
            on_gone=self._lost,
        )
        await self._feed.start()
        self._psub = self._feed.subscription

    async def _add_consumer(self, cfg: api.ConsumerConfig) -> api.ConsumerInfo:
        try:
            return await self._js.add_consumer(self.stream, cfg)
        except nats.js.errors.APIError as exc:
            if exc.err_code != MAXIMUM_CONSUMERS:
                raise
            raise ConsumerLimitError(
                f"jsnb: stream {self.stream} refused a consumer for topic {self.topic!r}: it "
                f"holds as many as the server allows ({exc.description}; nats-server's default "
                "is 1,000 per stream). Unsubscribe others, share a durableName between "
                "subscribers (queueGroupName), spread the topics over more streams, or raise "
                "max_consumers on the stream"
            ) from exc

    def _lost(self) -> None:
        """The server says the pull consumer is gone: recreate it, as after an outage."""
        task = asyncio.create_task(self._recover_until_done())
        self._recovering.add(task)
        task.add_done_callback(self._recovering.discard)

    async def _watch_max_deliveries(self) -> None:
        """Listen for the server giving up on a message, so no exhaustion goes unreported."""
        if self._advisories is not None:
            await self._advisories.unsubscribe()
            self._advisories = None
        if self.rule.max_deliver <= 0 or self.md.ack_policy is AckPolicy.NONE:
            return
        subject = f"{MAX_DELIVERIES_ADVISORY}.{self.stream}.{self.consumer}"
        # Queue group members share the advisory, as they share the messages: one acts.
        group = self.md.queue_group_name
        self._advisories = await self._nc.subscribe(
            subject, queue=group, cb=self._on_max_deliveries
        )
        if self._dispatcher is not None:
            self._dispatcher.watching_advisories = True

    async def _on_max_deliveries(self, msg: Msg) -> None:
        try:
            body = orjson.loads(msg.data)
            seq, deliveries = int(body["stream_seq"]), int(body.get("deliveries", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("jsnb: unreadable max-deliveries advisory on %s", msg.subject)
            return
        if self._dispatcher is not None:  # while stopping too: handlers may still run
            await self._dispatcher.server_gave_up(seq, deliveries)

    def _make_dispatcher(self, policy: Any, cfg: api.ConsumerConfig) -> Dispatcher:
        args = (self.topic, self._handler, policy)
        kwargs: dict[str, Any] = {
            "raw": self._raw,
            "listeners": (self._listeners, self._owner._listeners),
            "track_unsettled": not self._durable,
        }
        if self._bulk is not None:
            size, wait = self._bulk
            return BulkDispatcher(*args, size=size, wait=wait, **kwargs)
        if self.md.concurrency_mode is ConcurrencyMode.PARALLEL:
            limit = cfg.max_ack_pending or 1000
            return ParallelDispatcher(*args, limit=limit if limit > 0 else 1_000_000, **kwargs)
        return SingleDispatcher(*args, **kwargs)

    async def _find_stream(self) -> str:
        """Find and check the stream to read; returns its identity (name and creation)."""
        md = self.md
        self.stream = md.stream_name or await stream_for_subject(
            self._nc, self._owner.api_prefix, self.topic
        )
        try:
            info = await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise StreamNotFoundError(
                f"jsnb: streamName {self.stream!r} does not exist; create it first "
                f"(await jsnb.ensure_stream(ps, {self.stream!r}, [{self.topic!r}])) or fix "
                "streamName"
            ) from None
        subjects = info.config.subjects or []
        if md.stream_name and not any(subjects_overlap(s, self.topic) for s in subjects):
            raise StreamNotFoundError(
                f"jsnb: streamName {self.stream!r} captures {', '.join(subjects) or 'no subjects'}"
                f", not topic {self.topic!r}: nothing would ever arrive. Subscribe to one of "
                "its subjects or fix streamName"
            )
        retention = getattr(info.config.retention, "value", info.config.retention)
        if retention in ("interest", "workqueue") and md.ack_policy is not AckPolicy.EXPLICIT:
            # The server deletes what the consumers acked: a failure covered by a
            # cumulative ack, or never acked under none, would be gone.
            raise MetadataError(
                f"jsnb: ackPolicy {md.ack_policy.value!r} on stream {self.stream!r} ({retention} "
                "retention) would delete failed messages; use ackPolicy 'explicit'",
                key="ackPolicy",
            )
        if retention == "interest" and not md.durable_name:
            # Deleting the ephemeral consumer on close removes the last interest in
            # the messages it NAKed, and the server deletes them.
            raise MetadataError(
                f"jsnb: stream {self.stream!r} has interest retention, so closing an ephemeral "
                "consumer would delete the messages it has not settled; set durableName",
                key="durableName",
            )
        when = getattr(info, "created", None)
        created = when.timestamp() if when is not None else 0
        return f"{self.stream}-{int(created * 1e6)}" if created else self.stream

    async def _check_dead_letter_topic(self) -> None:
        """Check deadLetterTopic at subscribe, not when the first message needs it."""
        topic = self.dead_letter_topic
        if topic is None:
            return
        try:
            check_topic(topic, what="deadLetterTopic")
        except ValueError as exc:
            raise MetadataError(str(exc), key="deadLetterTopic") from None
        if subjects_overlap(topic, self.topic):
            raise MetadataError(
                f"jsnb: deadLetterTopic {topic!r} overlaps the subscribed topic {self.topic!r}: "
                "dead letters would come back to this handler; use another subject",
                key="deadLetterTopic",
            )
        try:
            stream = await stream_for_subject(self._nc, self._owner.api_prefix, topic)
        except StreamNotFoundError as exc:
            raise StreamNotFoundError(
                f"jsnb: deadLetterTopic {topic!r} has no stream to store dead letters in. "
                f"{exc}".replace("jsnb: no JetStream", "No JetStream")
            ) from None
        info = await self._js.stream_info(stream)
        retention = getattr(info.config.retention, "value", info.config.retention)
        if retention == "interest":
            # A copy nobody is interested in yet is deleted as soon as it is stored.
            raise MetadataError(
                f"jsnb: deadLetterTopic {topic!r} is stored in stream {stream!r}, which has "
                "interest retention: a dead letter would be deleted at once. Use a stream with "
                "limits or workqueue retention",
                key="deadLetterTopic",
            )

    async def _reuse(self, info: api.ConsumerInfo) -> api.ConsumerInfo:
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
        change = retune(md, have)
        if "consumerMode" in change.fixed:
            kind, _ = change.fixed["consumerMode"]
            raise ConsumerConflictError(
                f"jsnb: durable consumer {md.durable_name!r} on stream {self.stream!r} is a "
                f"{kind} consumer, but consumerMode is {md.consumer_mode.value!r}; nats-server "
                f"cannot turn one into the other: set consumerMode {kind!r}, or use another "
                "durableName"
            )
        if info.push_bound and not have.deliver_group and not md.queue_group_name:
            raise ConsumerConflictError(
                f"jsnb: durable consumer {md.durable_name!r} already has an active subscriber "
                "and no queue group, which a live consumer cannot gain: stop the other "
                "subscriber, or use another durableName (with the same queueGroupName on "
                "every subscriber) to share the work"
            )
        if change.fixed:
            raise ConsumerConflictError(change.conflict(md.durable_name, self.stream))
        if change.updatable:
            log.warning("jsnb: retuning consumer %s: %s", md.durable_name, change.describe())
            info = await self._js.add_consumer(self.stream, change.config)
        return info

    # -- listeners -----------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call *listener(event)* for every delivery attempt of this subscription."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    # -- counters --------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        return self._dispatcher.delivered if self._dispatcher else 0

    @property
    def acked(self) -> int:
        return self._dispatcher.acked if self._dispatcher else 0

    @property
    def failed(self) -> int:
        return self._dispatcher.failed if self._dispatcher else 0

    # -- state and lifecycle -----------------------------------------------------------

    async def delivery_subject(self) -> str:
        """Where the server sends this subscription's deliveries: the push consumer's
        deliver subject, or the pull feed's inbox; another subscriber there sees each one
        as it arrives (the lab's clock)."""
        if self._feed is not None:
            return self._feed.inbox
        return (await self.consumer_info()).config.deliver_subject or ""

    async def consumer_info(self) -> api.ConsumerInfo:
        """The server's view of this subscription's consumer."""
        info: api.ConsumerInfo = await self._js.consumer_info(self.stream, self.consumer)
        return info

    async def stream_info(self) -> api.StreamInfo:
        """The server's view of the stream this subscription reads."""
        return await self._js.stream_info(self.stream)

    async def state(self) -> Record:
        """The consumer's counters and effective config as one flat record (a table in Jupyter)."""
        return consumer_record(await self.consumer_info())

    async def drift(self) -> pd.DataFrame:
        """Per consumer field, what the metadata asks for next to what the server holds.

        Columns: field (the Dapr key), metadata, server, differs, change ("in
        place" when nats-server can update it live, "new consumer" when not)
        and note (why a row is not compared: unset, or replaced by backOff).
        """
        info = await self.consumer_info()
        return to_frame(row.as_row() for row in compare(self.md, info.config))

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
        if self._stopping or self._config is None or self._dispatcher is None:
            return
        try:
            await self.consumer_info()
        except nats.js.errors.NotFoundError:
            pass
        else:
            if self._feed is not None:  # the server may have restarted: its requests are gone
                await self._feed.restart(self.consumer)
            return
        try:
            await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            # Deleted on purpose (a consumer cannot outlive its stream): nothing to recover.
            log.info(
                "jsnb: stream %s of %s is gone; the subscription idles", self.stream, self.topic
            )
            return
        cfg = self._config
        d = self._dispatcher
        start = 0 if self._durable else d.resume_seq()
        if start:
            cfg = consumer_config(self.md, self.topic, cfg.deliver_subject or "")
            cfg.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = start
            cfg.opt_start_time = None
        info = await self._add_consumer(cfg)
        self.consumer = d.consumer = info.name
        d.reset()  # a new consumer counts deliveries from 1 again
        if self._feed is not None:
            await self._feed.restart(info.name)
        await self._watch_max_deliveries()
        log.warning("jsnb: consumer for %s was gone after a reconnect; recreated", self.topic)

    async def unsubscribe(self, *, timeout: float = 30.0) -> None:
        """Stop deliveries, wait for running handlers, then remove ephemeral consumers.

        Durable consumers stay on the server and resume where they left off.
        Never raises for a connection that is already gone.
        """
        if self._stopping:
            return
        self._stopping = True
        self._owner._forget(self)
        d = self._dispatcher
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._feed is not None:
            self._feed.stop()
        for task in list(self._recovering):
            task.cancel()
        if d is not None:
            d.stopping = True
            psub, self._psub = self._psub, None
            if psub is not None:
                # Drain: the server stops sending, and what it already sent runs through
                # on_msg, which hands each delivery on rather than dropping it.
                try:
                    await asyncio.wait_for(psub.drain(), timeout)  # type: ignore[no-untyped-call]
                except Exception as exc:  # timeout, or a connection that is gone
                    log.debug("jsnb: draining %s: %s", self.topic, exc)
                    # nats-py has no public way to stop a subscription whose drain did
                    # not finish; without this its task runs the hung handler on.
                    psub._stop_processing()
            if not await d.wait_idle(max(deadline - loop.time(), 0.0)):
                log.warning(
                    "jsnb: handlers of %s still running after %gs; cancelled", self.topic, timeout
                )
            d.cancel()
        if self.keep_alive is not None:
            self.keep_alive.close()
        nc = self._owner._nc
        for psub in (self._psub, self._advisories):
            if psub is None:
                continue
            try:
                await psub.unsubscribe()
            except Exception as exc:  # a dead connection fails in several ways (OSError too)
                log.debug("jsnb: unsubscribe %s: %s", self.topic, exc)
        if not self._durable and self.consumer and nc is not None and nc.is_connected:
            try:
                await self._js.delete_consumer(self.stream, self.consumer)
            except (nats.errors.Error, OSError) as exc:
                log.debug("jsnb: deleting consumer %s: %s", self.consumer, exc)

    @property
    def pubsub(self) -> SubscriptionHost:
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
        rows = {
            "topic": self.topic,
            "stream": self.stream,
            "consumer": self.consumer + (" (durable)" if self._durable else " (ephemeral)"),
            "mode": "bulk" if self._bulk else self.md.concurrency_mode.value,
            "consumer mode": self.md.consumer_mode.value,
            "keep-alive": self.md.in_progress,
            "retry": self.rule.describe(),
            "delivered / acked / failed": f"{self.delivered} / {self.acked} / {self.failed}",
            "dead-letter topic": self.dead_letter_topic or "-",
            "state": "active" if self.active else "stopped",
        }
        body = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in rows.items()
        )
        return f"<table class='jsnb-subscription'>{body}</table>"
