"""A thin sync facade over the async component, for scripts and widget callbacks.

>>> import jsnb
>>> from jsnb.sync import SyncPubSub, ensure_stream, run
>>> got = []
>>> with SyncPubSub({"natsURL": "embedded"}) as ps:
...     _ = ensure_stream(ps, "ORDERS", ["orders"])
...     _ = ps.subscribe("orders", lambda m: got.append(m.json()))
...     _ = ps.publish("orders", {"id": 1})
...     _ = run(jsnb.until(lambda: got))
>>> got
[{'id': 1}]

Which loop the objects live on
------------------------------
A nats-py connection, and every subscription on it, belongs to the event loop
it was created on. A :class:`SyncPubSub` picks that loop when it is built and
runs every later call there, from whichever thread the call comes:

* **In a plain script** (no loop runs in the calling thread) it is jsnb's own
  loop, one for the process, running forever in a daemon thread named
  ``jsnb-loop``. A dedicated loop driven with ``run_until_complete`` would
  only turn during a call, so between calls nats-py could not read the
  socket: handlers would not run while the script sleeps or computes, and
  the server's pings would go unanswered. The thread keeps deliveries flowing.
* **In a Jupyter kernel** (a loop runs in the calling thread) it is the
  kernel's loop, so the same objects also work with top-level ``await`` on
  ``ps.aio``. A blocking call cannot simply wait for that loop, since the
  caller is holding it; on the first such call (never at import) the loop is
  made re-entrant with nest-asyncio and the call runs nested on it.

A call from another thread is handed to the object's loop and waited for.
A call from the loop's own thread (a sync handler calling ``ps.publish``,
say) runs nested, as in a kernel; that patches asyncio process-wide, so in
scripts an async handler doing ``await ps.aio.publish(...)`` is the lighter
choice. Widget callbacks should not block at all: ``spawn(ps.aio.publish(...))``
schedules the work and returns at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.js import JetStreamContext, api

from jsnb import streams
from jsnb.dispatch import BulkHandler, Handler
from jsnb.errors import LoopNotRunningError
from jsnb.messages import (
    BulkMessageEntry,
    BulkPublishResponse,
    DeliveryEvent,
    Feature,
    PublishResult,
)
from jsnb.metadata import FieldInfo, Metadata
from jsnb.pubsub import JetStreamPubSub
from jsnb.subscription import Subscription

__all__ = ["SyncPubSub", "SyncSubscription", "ensure_stream", "run", "spawn"]

log = logging.getLogger("jsnb")

T = TypeVar("T")

_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()
# Tasks started by spawn(): the loop keeps only weak references to tasks.
_spawned: set[asyncio.Task[Any]] = set()


def _background_loop() -> asyncio.AbstractEventLoop:
    """jsnb's loop for code without one, started on first use and kept for the process."""
    global _background
    with _background_lock:
        if _background is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="jsnb-loop", daemon=True).start()
            _background = loop
        return _background


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _home_loop() -> asyncio.AbstractEventLoop:
    """The loop new objects should live on: the caller's running loop, else jsnb's."""
    return _running_loop() or _background_loop()


def _make_reentrant(loop: asyncio.AbstractEventLoop) -> None:
    """Let *loop* run a nested ``run_until_complete`` while it is already running.

    nest-asyncio2 is the maintained fork: under ipykernel 7 it defers the
    steps of cells queued behind the blocking call, where the original
    nest-asyncio raises "cannot enter context" and drops those cells (tested
    in tests/test_sync.py). A loop already patched (``_nest_patched``, by us
    or by the user) is left alone.
    """
    if hasattr(loop, "_nest_patched"):
        return
    import nest_asyncio2

    nest_asyncio2.apply(loop)


def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro* on *loop* and wait for its result, from any thread."""
    if loop is _running_loop():
        _make_reentrant(loop)
        return loop.run_until_complete(coro)
    if loop.is_closed() or not loop.is_running():
        coro.close()
        raise LoopNotRunningError(
            "jsnb: the event loop these objects were created on is no longer running "
            "(was it an asyncio.run() that has returned?); create them again"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # Ctrl-C in a script stops the coroutine too, not just the wait
        raise


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro* to completion from sync code and return its result; kernel-safe.

    Unlike ``asyncio.run`` it works inside a running loop (a Jupyter kernel:
    it runs nested on that loop) and, outside one, always uses the same
    background loop, so connections made by one call stay usable by the next.
    """
    return _run_on(_home_loop(), coro)


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T] | concurrent.futures.Future[T]:
    """Start *coro* without waiting for it: for widget callbacks, which must not block.

    In a kernel it becomes a task on the kernel's loop (an ``asyncio.Task``);
    elsewhere it runs on jsnb's background loop (a ``concurrent.futures.Future``).
    A failure is logged to the ``jsnb`` logger rather than lost.
    """
    loop = _running_loop()
    if loop is None:
        future = asyncio.run_coroutine_threadsafe(coro, _background_loop())
        future.add_done_callback(_log_failure)
        return future
    task = loop.create_task(coro)
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)
    task.add_done_callback(_log_failure)
    return task


def _log_failure(future: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.error("jsnb: background task failed: %s", exc, exc_info=exc)


class SyncSubscription:
    """A :class:`jsnb.Subscription` whose coroutine methods block instead.

    Other attributes (``topic``, ``stream``, ``consumer``, ``delivered``,
    ``add_listener`` ...) are those of the async subscription, ``.aio``.
    """

    def __init__(self, aio: Subscription, loop: asyncio.AbstractEventLoop) -> None:
        self.aio = aio
        self._loop = loop

    def unsubscribe(self, *, timeout: float = 30.0) -> None:
        """Stop deliveries, wait for running handlers, remove an ephemeral consumer."""
        _run_on(self._loop, self.aio.unsubscribe(timeout=timeout))

    def consumer_info(self) -> api.ConsumerInfo:
        return _run_on(self._loop, self.aio.consumer_info())

    def stream_info(self) -> api.StreamInfo:
        return _run_on(self._loop, self.aio.stream_info())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.aio, name)

    def __repr__(self) -> str:
        return repr(self.aio).replace("<Subscription", "<SyncSubscription", 1)

    def _repr_html_(self) -> str:
        return self.aio._repr_html_()


class SyncPubSub:
    """:class:`jsnb.JetStreamPubSub` with the same operations, without ``await``.

    ``with SyncPubSub(props) as ps:``, or ``ps = SyncPubSub(props).init()`` and
    ``ps.close()``. *kwargs* go to ``JetStreamPubSub`` (``pubsub_name``,
    ``source``, ``publish_timeout``). ``.aio`` is the async component, for
    ``await`` in a notebook; ``.loop`` is the loop both live on (see the
    module docstring). Handlers may be sync or async.
    """

    def __init__(
        self, properties: Mapping[str, Any] | Metadata | None = None, **kwargs: Any
    ) -> None:
        self.aio = JetStreamPubSub(properties, **kwargs)
        self.loop = _home_loop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return _run_on(self.loop, coro)

    # -- lifecycle -------------------------------------------------------------------

    def init(self, properties: Mapping[str, Any] | Metadata | None = None) -> SyncPubSub:
        """Parse the metadata, start the embedded server if asked, connect."""
        self._call(self.aio.init(properties))
        return self

    def close(self, *, timeout: float = 30.0) -> None:
        """Stop subscriptions, wait for running handlers, drain, disconnect. Idempotent."""
        self._call(self.aio.close(timeout=timeout))

    def __enter__(self) -> SyncPubSub:
        self._call(self.aio.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._call(self.aio.__aexit__(exc_type, exc, tb))

    @property
    def metadata(self) -> Metadata | None:
        """The parsed metadata, once ``init`` ran."""
        return self.aio.metadata

    @property
    def server(self) -> Any:
        """The embedded ``NatsServer``, when ``natsURL`` is ``embedded``."""
        return self.aio.server

    # -- publish and subscribe ----------------------------------------------------------

    def publish(
        self, topic: str, data: Any, *, metadata: Mapping[str, str] | None = None
    ) -> PublishResult:
        """Publish and wait for the stream's ack; see ``JetStreamPubSub.publish``."""
        return self._call(self.aio.publish(topic, data, metadata=metadata))

    def bulk_publish(
        self,
        topic: str,
        entries: Sequence[BulkMessageEntry],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> BulkPublishResponse:
        """Publish many entries pipelined; see ``JetStreamPubSub.bulk_publish``."""
        return self._call(self.aio.bulk_publish(topic, entries, metadata=metadata))

    def subscribe(
        self, topic: str, handler: Handler, *, metadata: Mapping[str, str] | None = None
    ) -> SyncSubscription:
        """Deliver each message on *topic* to *handler*; see ``JetStreamPubSub.subscribe``."""
        sub = self._call(self.aio.subscribe(topic, handler, metadata=metadata))
        return SyncSubscription(sub, self.loop)

    def bulk_subscribe(
        self,
        topic: str,
        handler: BulkHandler,
        *,
        max_messages: int = 100,
        max_await_ms: int = 1000,
        metadata: Mapping[str, str] | None = None,
    ) -> SyncSubscription:
        """Deliver batches; see ``JetStreamPubSub.bulk_subscribe``."""
        sub = self._call(
            self.aio.bulk_subscribe(
                topic,
                handler,
                max_messages=max_messages,
                max_await_ms=max_await_ms,
                metadata=metadata,
            )
        )
        return SyncSubscription(sub, self.loop)

    # -- observability and admin ------------------------------------------------------

    def add_listener(self, listener: Callable[[DeliveryEvent], None]) -> None:
        """Call *listener(event)* for every delivery attempt on every subscription."""
        self.aio.add_listener(listener)

    def remove_listener(self, listener: Callable[[DeliveryEvent], None]) -> None:
        self.aio.remove_listener(listener)

    def ping(self) -> None:
        """Round-trip to the server and JetStream; raises if either does not answer."""
        self._call(self.aio.ping())

    def features(self) -> frozenset[Feature]:
        return self.aio.features()

    @staticmethod
    def component_metadata() -> tuple[FieldInfo, ...]:
        """The metadata field table, as ``JetStreamPubSub.component_metadata``."""
        return Metadata.fields_table()

    def stream_info(self, stream: str) -> api.StreamInfo:
        return self._call(self.aio.stream_info(stream))

    def consumer_info(self, stream: str, consumer: str) -> api.ConsumerInfo:
        return self._call(self.aio.consumer_info(stream, consumer))

    def delete_consumer(self, stream: str, consumer: str) -> bool:
        """Delete a (durable) consumer, e.g. to change settings the server cannot update."""
        return self._call(self.aio.delete_consumer(stream, consumer))

    # -- display -----------------------------------------------------------------------

    def __repr__(self) -> str:
        return repr(self.aio).replace("<JetStreamPubSub", "<SyncPubSub", 1)

    def _repr_html_(self) -> str:
        return self.aio._repr_html_()


def ensure_stream(
    target: SyncPubSub | JetStreamPubSub | Client | JetStreamContext,
    name: str,
    subjects: Sequence[str],
    **options: Any,
) -> api.StreamInfo:
    """Create or update stream *name* for *subjects*; see :func:`jsnb.ensure_stream`.

    *target* is a :class:`SyncPubSub`, or anything the async version takes
    (a ``JetStreamPubSub``, a nats-py client or JetStream context).
    """
    if isinstance(target, SyncPubSub):
        return target._call(streams.ensure_stream(target.aio, name, subjects, **options))
    return run(streams.ensure_stream(target, name, subjects, **options))
