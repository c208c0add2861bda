"""The one fixture chain: real nats-servers on free ports, and components on them.

```
store_dir -> nats_server -> ps     a server of the test's own, and a component on it
                          -> js     a raw nats-py JetStream client on it
shared_server                      one server for the session, for tests that only need *a* server
tls_files -> tls_server            a TLS server (session certificates); mtls_server also
             mtls_server           checks client certificates
```

A module says what its ``ps`` needs with marks instead of redefining it:
``pytest.mark.component(ackWait="1s")`` adds component properties and
``pytest.mark.streams(ORDERS=["orders", "orders.>"])`` creates streams first.
Helpers that are not fixtures (``make``, ``eventually``, ``all_acked``,
``Recorder``) live in ``tests/support.py``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from hypothesis import HealthCheck, settings
from nats.js import JetStreamContext

from jsnb import JetStreamPubSub, ensure_stream
from jsnb.credentials import TLSFiles, make_tls_files
from jsnb.server import NatsServer

# Property tests judge results, not speed: hypothesis's 200 ms per-example deadline and
# its too-slow health check fail them on a busy machine. Loaded before any test module.
settings.register_profile("jsnb", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("jsnb")


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A JetStream store owned by the test, so it outlives restarts of the server."""
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def nats_server(store_dir: Path) -> Iterator[NatsServer]:
    """A running server of this test's own, storing in ``store_dir``."""
    with NatsServer(store_dir=store_dir) as server:
        yield server


@pytest.fixture
async def ps(
    request: pytest.FixtureRequest, nats_server: NatsServer
) -> AsyncIterator[JetStreamPubSub]:
    """A component connected to ``nats_server``, with the module's marks applied."""
    props: dict[str, object] = {"natsURL": nats_server.url}
    for mark in request.node.iter_markers("component"):
        props = {**mark.kwargs, **props}
    async with JetStreamPubSub(props) as component:
        for mark in request.node.iter_markers("streams"):
            for name, subjects in mark.kwargs.items():
                await ensure_stream(component, name, subjects)
        yield component


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A raw nats-py client on ``nats_server``: consumers and messages jsnb did not make."""
    nc = await nats.connect(nats_server.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made once."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tmp_path: Path, tls_files: TLSFiles) -> Iterator[NatsServer]:
    """A server that speaks TLS only; clients need no certificate."""
    with NatsServer(store_dir=tmp_path / "tls-store", tls=tls_files.server_config()) as server:
        yield server


@pytest.fixture
def mtls_server(tmp_path: Path, tls_files: TLSFiles) -> Iterator[NatsServer]:
    """A TLS server that also checks each client's certificate against the CA."""
    config = tls_files.server_config(verify_clients=True)
    with NatsServer(store_dir=tmp_path / "mtls-store", tls=config) as server:
        yield server


@pytest.fixture(scope="session")
def shared_server() -> Iterator[NatsServer]:
    """One server for the whole run: use unique stream names, and never stop it."""
    with NatsServer(server_name="jsnb-shared") as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    """Notebook kernels inherit this environment: make them use their own embedded server."""
    os.environ.pop("JSNB_NATS_URL", None)
    config.addinivalue_line("markers", "component(**props): properties of the ps fixture")
    config.addinivalue_line("markers", "streams(**subjects): streams the ps fixture creates")
