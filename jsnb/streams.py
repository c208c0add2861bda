"""Streams: creating them for notebooks and tests, and finding the one for a topic.

>>> # await ensure_stream(ps, "ORDERS", ["orders.>"], duplicate_window=120)

The component never creates streams (upstream neither); ``ensure_stream`` is
the notebook-side equivalent of ``nats stream add``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext, api

from jsnb.errors import StreamNotFoundError


class _HasJetStream(Protocol):
    @property
    def jetstream(self) -> JetStreamContext: ...


def _context(target: Client | JetStreamContext | _HasJetStream) -> JetStreamContext:
    if isinstance(target, JetStreamContext):
        return target
    if isinstance(target, Client):
        return target.jetstream()
    return target.jetstream


async def ensure_stream(
    target: Client | JetStreamContext | _HasJetStream,
    name: str,
    subjects: Sequence[str],
    **options: Any,
) -> api.StreamInfo:
    """Create stream *name* for *subjects*, or update it to match, like ``nats stream add``.

    *options* are ``nats.js.api.StreamConfig`` fields, e.g. ``storage="memory"``,
    ``num_replicas=3``, ``duplicate_window=120`` (seconds), ``max_msgs=1000``.
    """
    js = _context(target)
    if isinstance(options.get("storage"), str):
        options["storage"] = api.StorageType(options["storage"])
    config = api.StreamConfig(name=name, subjects=list(subjects), **options)
    try:
        return await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != 10058:  # "stream name already in use with a different configuration"
            raise
    return await js.update_stream(config)


async def stream_for_subject(nc: Client, prefix: str, subject: str, timeout: float = 5.0) -> str:
    """The one stream that captures *subject*.

    nats-py's ``find_stream_name_by_subject`` returns the first of several
    matches; upstream fails unless exactly one matches, and so do we, saying why.
    """
    resp = await nc.request(
        f"{prefix}.STREAM.NAMES", orjson.dumps({"subject": subject}), timeout=timeout
    )
    body = orjson.loads(resp.data)
    if "error" in body:
        raise nats.js.errors.APIError.from_error(body["error"])
    names = body.get("streams") or []
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
