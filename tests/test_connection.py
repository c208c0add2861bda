"""Connection helpers that need no server: auth choice, API prefix, reconnect pacing."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from nats.aio.client import Server

from jsnb import Metadata
from jsnb.connection import RECONNECT_MAX_WAIT, api_prefix, auth_method, reconnect_backoff

SEED = "SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY"


def server(host: str, reconnects: int) -> Server:
    return Server(uri=urlparse(f"nats://{host}:4222"), reconnects=reconnects)


@pytest.mark.parametrize(
    ("tries", "low", "high"),
    [
        pytest.param(0, 0.0, 0.0, id="first-try-at-once"),
        pytest.param(1, 0.2, 0.3, id="second-after-a-quarter-second"),
        pytest.param(3, 0.8, 1.2, id="doubling"),
        pytest.param(50, RECONNECT_MAX_WAIT * 0.8, RECONNECT_MAX_WAIT * 1.2, id="capped"),
    ],
)
def test_reconnect_pause_grows_and_is_capped(tries: int, low: float, high: float) -> None:
    chosen, pause = reconnect_backoff([server("a", tries)], {})
    assert chosen.uri.hostname == "a"
    assert low <= pause <= high


def test_reconnect_prefers_the_least_tried_server() -> None:
    chosen, pause = reconnect_backoff([server("a", 4), server("b", 0), server("c", 2)], {})
    assert chosen.uri.hostname == "b" and pause == 0.0


@pytest.mark.parametrize(
    ("props", "method"),
    [
        pytest.param({"jwt": "eyJ", "seedKey": SEED, "token": "t"}, "jwt", id="jwt-wins"),
        pytest.param(
            {"tls_client_cert": "/c", "tls_client_key": "/k", "token": "t"}, "tls", id="tls-next"
        ),
        pytest.param({"token": "t"}, "token", id="token-last"),
        pytest.param({}, "none", id="none"),
    ],
)
def test_auth_precedence_is_upstreams(props: dict[str, str], method: str) -> None:
    assert auth_method(Metadata.from_properties({"natsURL": "nats://h:1", **props})) == method


@pytest.mark.parametrize(
    ("props", "prefix"),
    [
        pytest.param({}, "$JS.API", id="default"),
        pytest.param({"domain": "hub"}, "$JS.hub.API", id="domain"),
        pytest.param({"domain": "hub", "apiPrefix": "$JS.x.API."}, "$JS.x.API", id="prefix-wins"),
    ],
)
def test_api_prefix(props: dict[str, str], prefix: str) -> None:
    assert api_prefix(Metadata.from_properties({"natsURL": "nats://h:1", **props})) == prefix
