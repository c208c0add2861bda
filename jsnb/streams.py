"""Streams: creating them for notebooks and tests, and finding the one for a topic.

>>> info = await ensure_stream(ps, "INVOICES", ["invoices.>"], duplicate_window=120)
>>> info.config.subjects, info.config.duplicate_window
(['invoices.>'], 120.0)
>>> await stream_for_subject(ps.nc, "$JS.API", "invoices.eu")
'INVOICES'

The component never creates streams (upstream neither); ``ensure_stream`` is
the notebook-side equivalent of ``nats stream add``. Both functions here wait
out a cluster's leader election (see ``LEADER_WAIT``) instead of failing on
the first dropped request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from jsnb.errors import STREAM_NAME_IN_USE, NoLeaderError, StreamNotFoundError

__all__ = ["LEADER_WAIT", "ensure_stream", "no_stream_message", "stream_for_subject"]

T = TypeVar("T")

# nats-server elects a leader within its 4-9 s election timeout; a split vote
# (likelier on a busy machine) waits that long again, so allow a few rounds.
LEADER_WAIT = 30.0
# One request's share of that: nats-py's own JetStream API timeout.
_ATTEMPT_TIMEOUT = 5.0
_RETRY_PAUSE = 0.25
# What a request sent during an election gets: dropped (a timeout), or refused
# (no responders, or 503 "JetStream system temporarily unavailable").
_ELECTING = (TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)


class _HasJetStream(Protocol):
    @property
    def jetstream(self) -> JetStreamContext: ...


def _context(target: Client | JetStreamContext | _HasJetStream) -> JetStreamContext:
    if isinstance(target, JetStreamContext):
        return target
    if isinstance(target, Client):
        return target.jetstream()
    return target.jetstream


async def _while_electing(what: str, attempt: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Await ``attempt()`` again until the JetStream API answers or *timeout* seconds pass.

    Raises ``NoLeaderError`` naming *what* was being done. Only for requests
    that are safe to repeat: a dropped request may still have been applied.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.wait_for(
                attempt(), max(0.0, min(deadline - loop.time(), _ATTEMPT_TIMEOUT))
            )
        except _ELECTING as exc:
            if loop.time() + _RETRY_PAUSE >= deadline:
                raise NoLeaderError(
                    f"jsnb: {what}: JetStream did not answer within {timeout:g}s "
                    f"({exc or type(exc).__name__}). The cluster has no JetStream leader yet: "
                    "it is electing one, or too few of its servers are up to elect one. Retry "
                    "once a quorum is up; any server's /jsz shows meta_cluster.leader"
                ) from exc
        await asyncio.sleep(_RETRY_PAUSE)


async def ensure_stream(
    target: Client | JetStreamContext | _HasJetStream,
    name: str,
    subjects: Sequence[str],
    *,
    timeout: float = LEADER_WAIT,
    **options: Any,
) -> api.StreamInfo:
    """Create stream *name* for *subjects*, or update it to match, like ``nats stream add``.

    *options* are ``nats.js.api.StreamConfig`` fields, e.g. ``storage="memory"``,
    ``num_replicas=3``, ``duplicate_window=120`` (seconds), ``max_msgs=1000``.
    During a leader election (a cluster that just started, or lost a server)
    it retries for up to *timeout* seconds, then raises ``NoLeaderError``.
    """
    js = _context(target)
    if isinstance(options.get("storage"), str):
        options["storage"] = api.StorageType(options["storage"])
    config = api.StreamConfig(name=name, subjects=list(subjects), **options)

    # Safe to repeat: a create that was applied but not answered is, the second
    # time, a create of an identical stream (which answers its info) or an update.
    async def create_or_update() -> api.StreamInfo:
        try:
            return await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
        return await js.update_stream(config)

    return await _while_electing(f"creating stream {name!r}", create_or_update, timeout)


async def stream_for_subject(
    nc: Client, prefix: str, subject: str, timeout: float = LEADER_WAIT
) -> str:
    """The one stream that captures *subject*; waits up to *timeout* s for a leader.

    nats-py's ``find_stream_name_by_subject`` returns the first of several
    matches; upstream fails unless exactly one matches, and so do we, saying why.
    """

    async def lookup() -> list[str]:
        resp = await nc.request(
            f"{prefix}.STREAM.NAMES", orjson.dumps({"subject": subject}), timeout=_ATTEMPT_TIMEOUT
        )
        body = orjson.loads(resp.data)
        if "error" in body:
            raise nats.js.errors.APIError.from_error(body["error"])
        return body.get("streams") or []

    names = await _while_electing(f"finding the stream for subject {subject!r}", lookup, timeout)
    if len(names) == 1:
        return names[0]
    if not names:
        raise StreamNotFoundError(no_stream_message(subject))
    raise StreamNotFoundError(
        f"jsnb: subject {subject!r} is captured by several streams ({', '.join(names)}); "
        "set streamName to choose one"
    )


def no_stream_message(subject: str) -> str:
    return (
        f"jsnb: no JetStream stream captures subject {subject!r}. The component never "
        "creates streams; create one first, for example:\n"
        f"    await jsnb.ensure_stream(ps, 'MYSTREAM', [{subject!r}])\n"
        f"or from a shell: nats stream add MYSTREAM --subjects {subject!r}"
    )
