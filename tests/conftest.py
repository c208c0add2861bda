"""Shared fixtures: chains that end in a real nats-server on a free port.

```
store_dir -> nats_server      a server of the test's own
shared_server                 one server for the session, for tests that only need *a* server
```
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

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


@pytest.fixture(scope="session")
def shared_server() -> Iterator[NatsServer]:
    """One server for the whole run: use unique stream names, and never stop it."""
    with NatsServer(server_name="jsnb-shared") as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    """Notebook kernels inherit this environment: make them use their own embedded server."""
    os.environ.pop("JSNB_NATS_URL", None)
