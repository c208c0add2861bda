"""Pull mode: keep pull requests outstanding and feed what arrives to a dispatcher.

>>> url = ps.nc.connected_url.geturl()
>>> puller = await jsnb.JetStreamPubSub({"natsURL": url, "consumerMode": "pull"}).init()
>>> got = []
>>> sub = await puller.subscribe("orders", lambda msg: got.append(msg.data))
>>> _ = await ps.publish("orders", "pulled", metadata={"rawPayload": "true"})
>>> await jsnb.until(lambda: got)
[b'pulled']
>>> (await sub.state())["consumerMode"]
'pull'
>>> await puller.close()

The same dispatchers and ack policies as push mode handle the messages; this
module only decides when to ask for more. Like nats.go's ``Consume`` it asks
for *batch* messages with an expiry and an idle heartbeat, and asks again
when half of what it asked for has been handed on, so the handler never
waits on a round trip. Pull requests do not survive a server restart (the
classic silent stall, nats.py #504): the subscription restarts the feed after
every reconnect, and a feed that hears nothing, not even a heartbeat, for two
heartbeat intervals asks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["PULL_BATCH", "PULL_EXPIRES", "PullFeed"]

log = logging.getLogger("jsnb")

PULL_BATCH = 256  # messages per request unless maxRequestBatch is lower
PULL_EXPIRES = 30.0  # seconds a request waits, unless maxRequestExpires is lower
_HEARTBEAT_MAX = 5.0
# Statuses meaning the consumer is gone: 409 when it is deleted under a waiting
# request, 503 (no responders) when a request finds none.
_GONE = ("Consumer Deleted", "No Responders")


class PullFeed:
    """Pull requests for one consumer, refilled before they run dry.

    *on_msg* is a dispatcher's; *on_gone* is called when the server says the
    consumer no longer exists (the subscription recovers it).
    """

    def __init__(
        self,
        nc: Client,
        api_prefix: str,
        stream: str,
        consumer: str,
        on_msg: Callable[[Msg], Awaitable[None]],
        *,
        batch: int = PULL_BATCH,
        expires: float = PULL_EXPIRES,
        on_gone: Callable[[], None] = lambda: None,
    ) -> None:
        self._nc = nc
        self._prefix = api_prefix
        self.stream = stream
        self.consumer = consumer
        self._on_msg = on_msg
        self._on_gone = on_gone
        self.batch = max(batch, 1)
        self._expires = expires
        # nats-server wants the heartbeat well inside the expiry.
        self._heartbeat = min(_HEARTBEAT_MAX, expires / 2)
        self._inbox = nc.new_inbox()
        self._pending = 0  # asked for and not yet handed on
        self._heard = 0.0
        self.requests = 0
        self.subscription: Subscription | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def inbox(self) -> str:
        """The subject the server answers this feed's requests on."""
        return self._inbox

    async def start(self) -> None:
        """Subscribe to the inbox and send the first request."""
        self.subscription = await self._nc.subscribe(self._inbox, cb=self._receive)
        self._heard = asyncio.get_running_loop().time()
        await self._request()
        self._watchdog = asyncio.create_task(self._watch(), name=f"jsnb-pull-{self.consumer}")

    async def restart(self, consumer: str) -> None:
        """Requests are lost with a server restart or a new consumer: ask afresh."""
        self.consumer = consumer
        self._pending = 0
        await self._request()

    def stop(self) -> None:
        """Ask for nothing more (the inbox subscription is drained by the caller)."""
        self._stopped = True
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def _request(self) -> None:
        want = self.batch - self._pending
        if self._stopped or want <= 0 or not self._nc.is_connected:
            return
        body = {
            "batch": want,
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        subject = f"{self._prefix}.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
        self._pending += want
        self.requests += 1
        await self._nc.publish(subject, orjson.dumps(body), reply=self._inbox)

    async def _receive(self, msg: Msg) -> None:
        self._heard = asyncio.get_running_loop().time()
        if msg.reply:  # a JetStream message
            self._pending = max(self._pending - 1, 0)  # a request from before a restart
            if self._pending <= self.batch // 2:
                await self._request()
            await self._on_msg(msg)
            return
        headers = msg.headers or {}
        status, text = headers.get("Status", ""), headers.get("Description", "")
        if status == "100":  # idle heartbeat
            return
        # The request ended (expired, or refused): what it still owed will not come.
        left = headers.get("Nats-Pending-Messages")
        self._pending = max(self._pending - int(left), 0) if left else 0
        if any(word in text for word in _GONE) or status == "503":
            log.debug("jsnb: pull consumer %s: %s %s", self.consumer, status, text)
            self._on_gone()
        elif status == "408":
            await self._request()
        else:  # 409 (max waiting, leadership change...): ask again at the next watch
            log.debug("jsnb: pull consumer %s: %s %s", self.consumer, status, text)

    async def _watch(self) -> None:
        """Ask again when nothing, not even a heartbeat, came for two heartbeats."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat)
            sub = self.subscription
            if sub is not None and sub.pending_msgs:
                self._heard = loop.time()  # a slow handler: what came waits its turn
            if loop.time() - self._heard > 2 * self._heartbeat:
                self._pending = 0
                self._heard = loop.time()
                try:
                    await self._request()
                except Exception as exc:  # the connection is down: the reconnect restarts us
                    log.debug("jsnb: pull request for %s: %s", self.consumer, exc)
