"""The async ``pubsub.jetstream`` component: init, publish, subscribe, close.

>>> import jsnb
>>> ps = await jsnb.JetStreamPubSub({"natsURL": "embedded"}).init()  # a local nats-server
>>> _ = await jsnb.ensure_stream(ps, "QUICKSTART", ["quickstart"])
>>> got = []
>>> sub = await ps.subscribe("quickstart", lambda msg: got.append(msg.json()))
>>> (await ps.publish("quickstart", {"id": 1})).seq
1
>>> await jsnb.until(lambda: got)
[{'id': 1}]
>>> await ps.jetstream.delete_stream("QUICKSTART")
True
>>> await ps.close()

Behaviour follows Dapr's Go component (see docs/behaviour.md for where and
why we differ): CloudEvents by default, ``Nats-Msg-Id`` from the event id,
push consumers filtered on the topic, ack only after the handler succeeded.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from jsnb.advisories import Advisories, AdvisoryKind
from jsnb.cloudevents import wrap
from jsnb.connection import PUBLISH_ASYNC_MAX_PENDING, api_prefix, auth_method, connect
from jsnb.dispatch import BulkHandler, Handler, Listener
from jsnb.display import key_value_table
from jsnb.errors import (
    ArgumentTypeError,
    ComponentClosedError,
    InvalidArgumentError,
    JsnbError,
    PayloadTooLargeError,
    StreamNotFoundError,
    StreamUnavailableError,
)
from jsnb.messages import (
    BulkMessageEntry,
    BulkPublishFailure,
    BulkPublishResponse,
    DeliveryEvent,
    Feature,
    PublishResult,
)
from jsnb.metadata import FieldInfo, Metadata
from jsnb.streams import stream_for_subject
from jsnb.subjects import check_topic
from jsnb.subscription import Subscription

if TYPE_CHECKING:
    from jsnb.server import NatsServer

__all__ = [
    "NO_RESPONDERS_RETRIES",
    "NO_RESPONDERS_WAIT",
    "PUBLISH_TIMEOUT",
    "JetStreamPubSub",
    "Lifecycle",
]

log = logging.getLogger("jsnb")

PUBLISH_TIMEOUT = 5.0  # upstream waits 5 s for each PubAck
# "No responders" to a publish is retried twice, 250 ms apart, as nats.go does for
# upstream (DefaultPubRetryAttempts, DefaultPubRetryWait): a new stream's or a new
# leader's interest reaches the client's server over the routes a moment later.
NO_RESPONDERS_RETRIES = 2
NO_RESPONDERS_WAIT = 0.25


class Lifecycle(enum.StrEnum):
    """Where a component is in its life; every method checks it, in one place each."""

    NEW = "new"  # created; init() has not connected yet (a failed init() stays here)
    CONNECTING = "connecting"  # init() is starting the server or connecting
    OPEN = "open"  # connected once; nats-py reconnects by itself if the link drops
    CLOSING = "closing"  # close() is stopping subscriptions and draining
    CLOSED = "closed"  # closed for good; any use raises ComponentClosedError


class JetStreamPubSub:
    """Dapr's ``pubsub.jetstream`` component, async.

    ``JetStreamPubSub(props)`` followed by ``await ps.init()``, or
    ``await JetStreamPubSub().init(props)``, or ``async with JetStreamPubSub(props)``.
    ``natsURL: embedded`` (or no natsURL at all) uses the process-wide local
    nats-server (``jsnb.server.shared_server()``), started on first use.
    """

    def __init__(
        self,
        properties: Mapping[str, Any] | Metadata | None = None,
        *,
        pubsub_name: str = "jetstream-pubsub",
        source: str = "jsnb",
        publish_timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        self._properties = properties
        self.pubsub_name = pubsub_name
        self.source = source
        self.publish_timeout = publish_timeout
        self.metadata: Metadata | None = None
        self.server: NatsServer | None = None  # the embedded server, when natsURL asks for one
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[Subscription] = []
        self._listeners: list[Listener] = []
        self.lifecycle = Lifecycle.NEW
        self._close_lock = asyncio.Lock()
        self._recoveries: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------

    async def init(self, properties: Mapping[str, Any] | Metadata | None = None) -> JetStreamPubSub:
        """Parse the metadata, start the embedded server if asked, connect, check JetStream."""
        if self.lifecycle in (Lifecycle.CLOSING, Lifecycle.CLOSED):
            raise ComponentClosedError("jsnb: component is closed; create a new one")
        if self.lifecycle is not Lifecycle.NEW:
            raise JsnbError("jsnb: init() was already called on this component")
        self.lifecycle = Lifecycle.CONNECTING
        try:
            props = properties if properties is not None else self._properties
            md = Metadata.from_properties(props or {}, allow_embedded=True)
            servers = None
            if md.embedded:
                from jsnb.server import shared_server

                self.server = await asyncio.to_thread(shared_server)
                servers = [self.server.url]
            self._nc, self._js = await connect(
                md, servers=servers, reconnected_cb=self._on_reconnected
            )
        except BaseException:
            if self.lifecycle is Lifecycle.CONNECTING:  # not closed meanwhile: may retry
                self.lifecycle = Lifecycle.NEW
            raise
        self.metadata = md
        self.lifecycle = Lifecycle.OPEN
        return self

    async def __aenter__(self) -> JetStreamPubSub:
        if self.lifecycle is Lifecycle.NEW:
            await self.init()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, *, timeout: float = 30.0) -> None:
        """Stop subscriptions, wait for running handlers, drain, disconnect. Idempotent.

        *timeout* bounds the wait for running handlers of all subscriptions
        together. A connection that is already gone is closed without raising.
        """
        async with self._close_lock:
            if self.lifecycle is Lifecycle.CLOSED:
                return
            self.lifecycle = Lifecycle.CLOSING
            try:
                await self._shut_down(timeout)
            finally:
                self.lifecycle = Lifecycle.CLOSED

    async def _shut_down(self, timeout: float) -> None:
        for task in list(self._recoveries):
            task.cancel()
        await asyncio.gather(*(sub.unsubscribe(timeout=timeout) for sub in list(self._subs)))
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        try:
            await nc.drain()
        except Exception as exc:  # timeouts, and OSErrors from a dead socket
            log.debug("jsnb: drain: %s", exc)
        if not nc.is_closed:
            try:
                await nc.close()
            except Exception as exc:
                log.debug("jsnb: close: %s", exc)

    async def _on_reconnected(self) -> None:
        # In tasks: nats-py awaits this callback before it resumes normal work, and a
        # recovery may have to wait out a leader election.
        for sub in list(self._subs):
            task = asyncio.create_task(sub._recover_until_done())
            self._recoveries.add(task)
            task.add_done_callback(self._recoveries.discard)

    def _check_open(self) -> None:
        if self.lifecycle in (Lifecycle.CLOSING, Lifecycle.CLOSED):
            raise ComponentClosedError("jsnb: component is closed")
        if self.lifecycle is not Lifecycle.OPEN:
            raise JsnbError("jsnb: call `await ps.init(...)` first")

    @property
    def nc(self) -> Client:
        """The nats-py connection (for anything the component does not cover)."""
        self._check_open()
        assert self._nc is not None
        return self._nc

    @property
    def jetstream(self) -> JetStreamContext:
        """The nats-py JetStream context, with the configured domain / API prefix."""
        self._check_open()
        assert self._js is not None
        return self._js

    @property
    def api_prefix(self) -> str:
        assert self.metadata is not None
        return api_prefix(self.metadata)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subs)

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    # -- publish -----------------------------------------------------------------------

    async def publish(
        self, topic: str, data: Any, *, metadata: Mapping[str, str] | None = None
    ) -> PublishResult:
        """Publish *data* (bytes, str or JSON-able) to *topic* and wait for the stream's ack.

        A CloudEvent envelope is added unless ``metadata={"rawPayload": "true"}``;
        its id becomes ``Nats-Msg-Id``, so a retry with the same
        ``cloudevent.id`` is stored once within the stream's duplicate window.
        """
        js = self.jetstream
        check_topic(topic)
        out = wrap(
            data, topic=topic, pubsub_name=self.pubsub_name, source=self.source, metadata=metadata
        )
        headers = out.headers
        if out.msg_id:
            headers = {**headers, "Nats-Msg-Id": out.msg_id}
        for retry in range(NO_RESPONDERS_RETRIES + 1):
            try:
                ack = await js.publish(
                    topic, out.payload, timeout=self.publish_timeout, headers=headers or None
                )
                break
            except nats.js.errors.NoStreamResponseError:
                if retry == NO_RESPONDERS_RETRIES:
                    raise await self._no_answer(topic) from None
                await asyncio.sleep(NO_RESPONDERS_WAIT)  # nothing was stored: safe to resend
            except nats.errors.MaxPayloadError:
                raise self._too_large(topic, len(out.payload)) from None
        return PublishResult(ack.stream, ack.seq, bool(ack.duplicate), out.msg_id)

    async def _no_answer(self, topic: str) -> JsnbError:
        """Nobody answered a publish: tell a missing stream from a leaderless one.

        Both reach nats-py as "no responders"; in a cluster the second happens
        during every leader election.
        """
        try:
            stream = await stream_for_subject(self.nc, self.api_prefix, topic, timeout=2.0)
        except StreamNotFoundError as exc:  # none, or several: it says which
            return exc
        except Exception as exc:  # the API itself is unreachable: say so, not "missing"
            return StreamUnavailableError(
                f"jsnb: no JetStream answer for subject {topic!r} ({exc}); the server may be "
                "restarting. Retry with the same cloudevent.id: it is stored once"
            )
        return StreamUnavailableError(
            f"jsnb: stream {stream!r} captures subject {topic!r} but did not answer: it has no "
            "leader right now (an election, or its servers are down). Retry with the same "
            "cloudevent.id: it is stored once"
        )

    def _too_large(self, topic: str, size: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"jsnb: the message for {topic!r} is {size} bytes as sent (with its CloudEvent "
            f"envelope, headers not counted), over the server's max_payload of "
            f"{self.nc.max_payload} bytes"
        )

    async def bulk_publish(
        self,
        topic: str,
        entries: Sequence[BulkMessageEntry],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> BulkPublishResponse:
        """Publish many entries pipelined (many acks in flight) and report each failure."""
        js = self.jetstream
        check_topic(topic)
        failures: list[BulkPublishFailure] = []
        pending: list[tuple[str, str | None, asyncio.Future[api.PubAck]]] = []
        in_flight: deque[asyncio.Future[api.PubAck]] = deque()  # ours, oldest first
        for entry in entries:
            meta = metadata
            if entry.metadata or entry.content_type:
                meta = {**(metadata or {}), **(entry.metadata or {})}
                if entry.content_type:
                    meta["contentType"] = entry.content_type
            try:
                out = wrap(
                    entry.event,
                    topic=topic,
                    pubsub_name=self.pubsub_name,
                    source=self.source,
                    metadata=meta,
                )
                headers = out.headers
                if out.msg_id:
                    headers = {**headers, "Nats-Msg-Id": out.msg_id}
                stall = None
                if js.publish_async_pending() >= PUBLISH_ASYNC_MAX_PENDING:
                    stall = await self._wait_for_room(js, in_flight)
                future = await js.publish_async(
                    topic, out.payload, headers=headers or None, wait_stall=stall
                )
            except Exception as exc:
                if isinstance(exc, nats.errors.MaxPayloadError):
                    exc = self._too_large(topic, len(out.payload))
                failures.append(BulkPublishFailure(entry.entry_id, exc))
                continue
            pending.append((entry.entry_id, out.msg_id, future))
            in_flight.append(future)
        results: dict[str, PublishResult] = {}
        not_done: set[asyncio.Future[api.PubAck]] = set()
        # Most acks came in while publishing; wait only for the rest.
        waiting = [f for _, _, f in pending if not f.done()]
        if waiting:
            _, not_done = await asyncio.wait(waiting, timeout=self.publish_timeout)
            for future in not_done:
                future.cancel()
        no_answer: JsnbError | None = None
        for entry_id, msg_id, future in pending:
            if future in not_done:
                failures.append(
                    BulkPublishFailure(
                        entry_id, TimeoutError(f"no ack within {self.publish_timeout}s")
                    )
                )
                continue
            error = future.exception()
            if error is None:
                ack = future.result()
                results[entry_id] = PublishResult(ack.stream, ack.seq, bool(ack.duplicate), msg_id)
                continue
            if isinstance(error, nats.js.errors.NoStreamResponseError):
                if no_answer is None:
                    no_answer = await self._no_answer(topic)
                error = no_answer
            failures.append(BulkPublishFailure(entry_id, error))
        return BulkPublishResponse(failed_entries=failures, results=results)

    async def _wait_for_room(
        self, js: JetStreamContext, in_flight: deque[asyncio.Future[api.PubAck]]
    ) -> float | None:
        """Wait, up to the publish timeout, until fewer acks are in flight than allowed.

        Returns None once there is room, else the stall time left for nats-py's
        ``wait_stall``. Waiting for our oldest ack costs a timer per full window;
        ``wait_stall`` alone would cost a task, and a socket write, per message.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        while js.publish_async_pending() >= PUBLISH_ASYNC_MAX_PENDING:
            while in_flight and in_flight[0].done():
                in_flight.popleft()
            left = deadline - loop.time()
            if not in_flight or left <= 0:
                return max(left, 0.0)  # the window is someone else's, or time is up
            await asyncio.wait([in_flight[0]], timeout=left)
        return None

    # -- subscribe ---------------------------------------------------------------------

    async def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> Subscription:
        """Deliver each message on *topic* to *handler* (sync or async).

        Returning means success (ack); raising means failure (NAK with the
        backOff delay for that attempt). Subscribe metadata: ``rawPayload``,
        ``deadLetterTopic``.
        """
        return await self._subscribe(topic, handler, metadata, None)

    async def bulk_subscribe(
        self,
        topic: str,
        handler: BulkHandler,
        *,
        max_messages: int = 100,
        max_await_ms: int = 1000,
        metadata: Mapping[str, str] | None = None,
    ) -> Subscription:
        """Deliver batches of up to *max_messages*, or what arrived within *max_await_ms*.

        *handler(batch)* returns ``{entry_id: None | Exception}``; each entry is
        acked or NAKed on its own. Returning ``None`` means all succeeded.
        """
        if max_messages < 1 or max_await_ms < 0:
            raise InvalidArgumentError(
                f"jsnb: max_messages {max_messages} must be 1 or more and max_await_ms "
                f"{max_await_ms} 0 or more"
            )
        return await self._subscribe(topic, handler, metadata, (max_messages, max_await_ms / 1000))

    async def _subscribe(
        self,
        topic: str,
        handler: Callable[..., Any],
        metadata: Mapping[str, str] | None,
        bulk: tuple[int, float] | None,
    ) -> Subscription:
        self._check_open()
        check_topic(topic, wildcards=True)
        if not callable(handler):
            raise ArgumentTypeError(f"jsnb: handler must be callable, not {type(handler).__name__}")
        assert self.metadata is not None
        sub = Subscription(self, topic, handler, self.metadata, metadata, bulk=bulk)
        await sub._start()
        self._subs.append(sub)
        return sub

    # -- observability and admin ------------------------------------------------------

    def add_listener(self, listener: Callable[[DeliveryEvent], None]) -> None:
        """Call *listener(event)* for every delivery attempt on every subscription."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[DeliveryEvent], None]) -> None:
        self._listeners.remove(listener)

    async def ping(self) -> None:
        """Round-trip to the server and JetStream; raises if either does not answer."""
        await self.nc.flush(timeout=self.publish_timeout)  # type: ignore[arg-type]  # nats-py says int; a float works
        await self.jetstream.account_info()

    def features(self) -> frozenset[Feature]:
        """What this component supports, in Dapr's feature names."""
        return frozenset(Feature)

    @staticmethod
    def component_metadata() -> tuple[FieldInfo, ...]:
        """The metadata field table (key, kind, group, default, help) for every property."""
        return Metadata.fields_table()

    async def stream_info(self, stream: str) -> api.StreamInfo:
        return await self.jetstream.stream_info(stream)

    async def consumer_info(self, stream: str, consumer: str) -> api.ConsumerInfo:
        info: api.ConsumerInfo = await self.jetstream.consumer_info(stream, consumer)
        return info

    async def delete_consumer(self, stream: str, consumer: str) -> bool:
        """Delete a (durable) consumer, e.g. to change settings the server cannot update."""
        return await self.jetstream.delete_consumer(stream, consumer)

    def advisories(
        self,
        stream: str | None = None,
        consumer: str | None = None,
        kinds: Iterable[AdvisoryKind | str] | None = None,
    ) -> Advisories:
        """The server's advisories for *stream* / *consumer* (None: all), as they happen.

        ``async with ps.advisories(...) as feed: async for adv in feed`` yields
        :class:`jsnb.Advisory` records of the *kinds* asked for (default: all).
        Advisories are core NATS: those sent while disconnected are lost
        (``jsnb.capture_advisories`` stores them in a stream).
        """
        return Advisories(self.nc, stream=stream, consumer=consumer, kinds=kinds)

    # -- display ---------------------------------------------------------------------

    def _state(self) -> str:
        if self.lifecycle is not Lifecycle.OPEN:
            return self.lifecycle.value
        assert self._nc is not None
        return "connected" if self._nc.is_connected else "open, reconnecting"

    def __repr__(self) -> str:
        url = (
            self.server.url
            if self.server is not None
            else (
                self.metadata.as_properties(reveal_secrets=False)["natsURL"]
                if self.metadata
                else "?"
            )
        )
        auth = auth_method(self.metadata) if self.metadata else "?"
        return (
            f"<JetStreamPubSub {self._state()} url={url!r} auth={auth} "
            f"subscriptions={len(self._subs)}>"
        )

    def _repr_html_(self) -> str:
        url = (
            self.server.url + " (embedded)"
            if self.server is not None
            else (
                self.metadata.as_properties(reveal_secrets=False)["natsURL"]
                if self.metadata
                else "-"
            )
        )
        rows = {
            "state": self._state(),
            "server": url,
            "auth": auth_method(self.metadata) if self.metadata else "-",
            "subscriptions": ", ".join(s.topic for s in self._subs) or "none",
        }
        return key_value_table(rows.items(), css_class="jsnb-pubsub")
