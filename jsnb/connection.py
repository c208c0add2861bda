"""Connecting to NATS the way the component does: one auth method, reconnect forever.

>>> md = jsnb.Metadata.from_properties({"natsURL": ps.nc.connected_url.geturl()})
>>> nc, js = await connect(md)
>>> auth_method(md), (await js.account_info()).streams
('none', 1)
>>> await nc.close()

Upstream gives up after nats.go's 60 reconnect attempts and never recovers
(components-contrib #4563); we reconnect forever and let subscriptions resume.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client, Server
from nats.js import JetStreamContext

from jsnb.errors import ConnectError, MetadataError
from jsnb.metadata import Metadata, hide_userinfo

__all__ = [
    "CONNECT_DEADLINE",
    "PENDING_SIZE",
    "PUBLISH_ASYNC_MAX_PENDING",
    "RECONNECT_MAX_WAIT",
    "RECONNECT_WAIT",
    "api_prefix",
    "auth_method",
    "connect",
    "connect_options",
    "reconnect_backoff",
]

log = logging.getLogger("jsnb")

# nats-py's outbound buffer (2 MiB by default) overflows on large bulk
# publishes; a larger one lets the pipelined path run without stalls.
PENDING_SIZE = 64 * 1024 * 1024
# Acks a bulk publish keeps in flight (nats-py's publish_async default).
PUBLISH_ASYNC_MAX_PENDING = 4000
RECONNECT_WAIT = 0.25
RECONNECT_MAX_WAIT = 5.0
CONNECT_DEADLINE = 10.0


def auth_method(md: Metadata) -> str:
    """The one auth method used, in upstream's precedence: jwt, then TLS cert, then token."""
    if md.jwt and md.seed_key:
        return "jwt"
    if md.tls_client_cert and md.tls_client_key:
        return "tls"
    if md.token:
        return "token"
    return "none"


def api_prefix(md: Metadata) -> str:
    """The JetStream API prefix; apiPrefix wins over domain, as upstream applies it last."""
    if md.api_prefix:
        return md.api_prefix.rstrip(".")
    if md.domain:
        return f"$JS.{md.domain}.API"
    return "$JS.API"


def _read_file(key: str, path: str) -> None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MetadataError(f"jsnb: {key} {path!r} does not exist or is not a file", key=key)
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise MetadataError(
            f"jsnb: {key} {path!r} cannot be read: {exc.strerror}", key=key
        ) from None


def _tls_context(md: Metadata) -> ssl.SSLContext | None:
    uses_tls = any(u.strip().startswith(("tls://", "wss://")) for u in md.nats_url.split(","))
    client_cert = auth_method(md) == "tls"
    if not (uses_tls or client_cert or md.tls_ca_cert):
        return None
    if md.tls_ca_cert:
        _read_file("tls_ca_cert", md.tls_ca_cert)
    ctx = ssl.create_default_context(cafile=md.tls_ca_cert or None)
    if client_cert:
        _read_file("tls_client_cert", md.tls_client_cert)
        _read_file("tls_client_key", md.tls_client_key)
        try:
            ctx.load_cert_chain(md.tls_client_cert, md.tls_client_key)
        except ssl.SSLError as exc:
            raise MetadataError(
                f"jsnb: tls_client_cert {md.tls_client_cert!r} and tls_client_key "
                f"{md.tls_client_key!r} are not a matching PEM certificate and key: {exc.reason}",
                key="tls_client_cert",
            ) from None
    return ctx


def _jwt_callbacks(md: Metadata) -> dict[str, Any]:
    import nkeys

    try:
        keypair = nkeys.from_seed(md.seed_key.encode())
        is_user = keypair.public_key.startswith(b"U")
    except Exception:
        is_user = False
    if not is_user:
        raise MetadataError(
            "jsnb: seedKey (hidden) is not a valid NKey user seed: expected the 'SU...' seed "
            "that belongs to the user JWT",
            key="seedKey",
        )
    jwt = md.jwt.encode()

    def sign(nonce: str) -> bytes:
        return base64.b64encode(keypair.sign(nonce.encode()))

    return {"user_jwt_cb": lambda: jwt, "signature_cb": sign}


def reconnect_backoff(servers: list[Server], _info: dict[str, Any]) -> tuple[Server, float]:
    """nats-py's reconnect hook: the least-tried server, after an exponential pause.

    The first try of a server is at once (a cluster peer usually answers); each
    failure doubles the pause up to RECONNECT_MAX_WAIT, with jitter so many
    clients do not return in step after an outage.
    """
    server = min(servers, key=lambda s: s.reconnects)
    if server.reconnects == 0:
        return server, 0.0
    pause = min(RECONNECT_WAIT * 2 ** (server.reconnects - 1), RECONNECT_MAX_WAIT)
    return server, pause * random.uniform(0.8, 1.2)


def connect_options(md: Metadata, servers: list[str]) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``, without any callbacks."""
    options: dict[str, Any] = {
        "servers": servers,
        "name": md.name,
        "allow_reconnect": True,
        # Fail fast on the first connect; connect() switches to "forever" once up.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": RECONNECT_WAIT,
        "reconnect_to_server_handler": reconnect_backoff,
        "connect_timeout": 2,
        "pending_size": PENDING_SIZE,
    }
    tls = _tls_context(md)
    if tls is not None:
        options["tls"] = tls
        options["tls_hostname"] = None
    method = auth_method(md)
    if method == "jwt":
        options.update(_jwt_callbacks(md))
    elif method == "token":
        options["token"] = md.token
    return options


async def _quiet_error(exc: Exception) -> None:
    # Connection errors surface as ConnectError from connect(); during reconnects
    # nats-py reports each failed try, which is noise at warning level.
    log.debug("nats: %s", exc)


async def connect(
    md: Metadata,
    *,
    servers: list[str] | None = None,
    disconnected_cb: Callable[[], Awaitable[None]] | None = None,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Client, JetStreamContext]:
    """Connect, check JetStream answers, and return the client and JetStream context.

    Raises ``ConnectError`` naming the URL (never credentials) and the auth method.
    """
    urls = servers or [u.strip() for u in md.nats_url.split(",") if u.strip()]
    shown = ", ".join(hide_userinfo(u) for u in urls)
    options = connect_options(md, urls)
    errors: list[Exception] = []

    hopeless = asyncio.Event()

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)
        if isinstance(exc, ssl.SSLError):
            hopeless.set()  # a certificate problem does not fix itself on retry
        await _quiet_error(exc)

    async def noop() -> None:
        return None

    nc = Client()
    try:
        # nats-py can hang on a retried TLS handshake, so the first connect has a deadline.
        attempt = asyncio.ensure_future(
            nc.connect(
                **options,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb or noop,
                reconnected_cb=reconnected_cb or noop,
            )
        )
        give_up = asyncio.ensure_future(hopeless.wait())
        await asyncio.wait(
            {attempt, give_up}, timeout=CONNECT_DEADLINE, return_when=asyncio.FIRST_COMPLETED
        )
        give_up.cancel()
        if not attempt.done():
            attempt.cancel()
            raise errors[-1] if errors else TimeoutError("no answer")
        attempt.result()
    except Exception as exc:
        await _discard(nc)
        raise ConnectError(_explain(exc, errors, shown, auth_method(md))) from None
    # nats-py retries a failing *first* connect forever when this is -1, so it is
    # only set once connected; nats-py reads it afresh at every reconnect.
    nc.options["max_reconnect_attempts"] = -1
    js = nc.jetstream(prefix=api_prefix(md), publish_async_max_pending=PUBLISH_ASYNC_MAX_PENDING)
    try:
        await js.account_info()
    except (
        nats.errors.NoRespondersError,
        nats.js.errors.ServiceUnavailableError,
        nats.errors.TimeoutError,
    ) as exc:
        await nc.close()
        raise ConnectError(
            f"jsnb: connected to {shown}, but JetStream does not answer on "
            f"{api_prefix(md)!r}: enable JetStream on the server (nats-server -js) or check "
            f"domain/apiPrefix ({type(exc).__name__})"
        ) from None
    return nc, js


async def _discard(nc: Client) -> None:
    """Release whatever a failed connect left open."""
    try:
        await nc.close()
    except Exception as exc:
        log.debug("jsnb: closing a failed connection: %s", exc)


def _explain(exc: Exception, errors: list[Exception], shown: str, method: str) -> str:
    texts = " ".join(str(e) for e in [*errors, exc]).lower()
    if "authorization" in texts or "authentication" in texts or "user authentication" in texts:
        how = {
            "none": "no credentials were given",
            "jwt": "JWT + seedKey were rejected",
            "tls": "the TLS client certificate was rejected",
            "token": "the token was rejected",
        }[method]
        return f"jsnb: {shown} refused the connection: authorization failed ({how})"
    if "certificate" in texts or "ssl" in texts or "tls" in texts:
        detail = next(
            (
                str(e)
                for e in [*errors, exc]
                if "certif" in str(e).lower() or "ssl" in str(e).lower()
            ),
            str(exc),
        )
        return f"jsnb: TLS with {shown} failed: {detail}"
    return (
        f"jsnb: cannot connect to {shown}: {exc or type(exc).__name__}; is nats-server "
        "running there? (natsURL 'embedded' starts one for you)"
    )
