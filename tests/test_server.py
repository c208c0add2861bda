"""The embedded nats-server, against the real binary: lifecycle, storage, clustering, auth."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats.errors
import nkeys
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from jsnb import NoLeaderError, ensure_stream
from jsnb.credentials import JWTAuth, TLSFiles, make_jwt_auth, make_tls_files, make_user
from jsnb.errors import ServerError
from jsnb.server import (
    LocalCluster,
    NatsServer,
    TLSConfig,
    nats_server_binary,
    nats_server_version,
)
from jsnb.server.cluster import api_answers
from jsnb.streams import stream_for_subject

TOKEN = 'tok$en "with" \\ odd é chars'


async def _quiet(exc: Exception) -> None:
    # Failures surface from nats.connect itself; nats-py would also log each one.
    return None


@asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """One connection attempt, no reconnects, closed on exit."""
    nc = Client()
    try:
        # nats.connect() would drop the client, and its open socket, when this fails.
        await nc.connect(url, allow_reconnect=False, connect_timeout=10, error_cb=_quiet, **options)
        yield nc, nc.jetstream()
    finally:
        await nc.close()


def jwt_options(jwt: str, seed: str) -> dict[str, Callable[..., Any]]:
    """nats-py callbacks presenting a user JWT and signing the nonce, as Dapr's jwt/seedKey do."""
    keypair = nkeys.from_seed(seed.encode())
    return {
        "user_jwt_cb": lambda: jwt.encode(),
        "signature_cb": lambda nonce: base64.b64encode(keypair.sign(nonce.encode())),
    }


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# -- binary and import hygiene ---------------------------------------------------------


def test_binary_is_found_and_reports_its_version() -> None:
    assert Path(nats_server_binary()).is_file()
    assert nats_server_version().count(".") == 2


def test_importing_server_pulls_in_no_notebook_stack() -> None:
    code = (
        "import sys, jsnb.server, jsnb.credentials; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'ipywidgets')); "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- single server lifecycle -----------------------------------------------------------


async def test_started_server_offers_jetstream(nats_server: NatsServer) -> None:
    assert nats_server.running
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    async with connected(nats_server.url) as (_, js):
        info = await js.account_info()
    assert info.limits.max_streams == -1
    assert nats_server.monitor("varz")["jetstream"]["config"]["store_dir"].startswith(
        str(nats_server.store_dir)
    )


def test_options_reach_the_server() -> None:
    with NatsServer(server_name="configured", max_payload=4096) as server:
        varz = server.monitor("varz")
    assert (varz["server_name"], varz["max_payload"]) == ("configured", 4096)


def test_listens_on_loopback_only(nats_server: NatsServer) -> None:
    varz = nats_server.monitor("varz")
    assert varz["host"] == "127.0.0.1"
    # Bound to 127.0.0.1 exactly, so another loopback address is refused.
    for port in (nats_server.port, varz["http_port"]):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=2).close()


def test_private_store_is_0700_and_removed_with_the_process() -> None:
    server = NatsServer().start()
    store, pid = server.store_dir, server.pid
    assert store is not None and pid is not None
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    server.stop()
    assert not store.exists()
    assert process_gone(pid)
    assert (server.running, server.pid, server.store_dir) == (False, None, None)


def test_stop_is_idempotent_and_keeps_the_log() -> None:
    server = NatsServer()
    server.stop()  # never started
    server.start()
    server.stop()
    server.stop()
    assert "Server Exiting" in server.log_text()


def test_given_store_dir_is_kept_after_stop(nats_server: NatsServer, store_dir: Path) -> None:
    nats_server.stop()
    assert (store_dir / "jetstream").is_dir()


def test_forgotten_server_is_stopped_by_its_finalizer() -> None:
    server = NatsServer().start()
    pid, store = server.pid, server.store_dir
    assert pid is not None and store is not None
    del server
    gc.collect()
    assert process_gone(pid)
    assert not store.exists()


async def test_restart_keeps_file_stream_data_and_port() -> None:
    async with NatsServer() as server:
        async with connected(server.url) as (_, js):
            await js.add_stream(name="KEEP", subjects=["keep.>"], storage="file")
            for i in range(3):
                await js.publish("keep.x", f"m{i}".encode())
        port, store = server.port, server.store_dir
        server.restart()
        assert (server.port, server.store_dir) == (port, store)
        async with connected(server.url) as (_, js):
            info = await js.stream_info("KEEP")
            msg = await js.get_msg("KEEP", 2)
    assert info.state.messages == 3
    assert msg.data == b"m1"


async def test_stream_survives_kill_and_restart(nats_server: NatsServer, store_dir: Path) -> None:
    async with connected(nats_server.url) as (_, js):
        await js.add_stream(name="CRASH", subjects=["crash.>"])
    nats_server.kill()
    assert not nats_server.running
    assert store_dir.exists()
    nats_server.restart()
    async with connected(nats_server.url) as (_, js):
        assert (await js.stream_info("CRASH")).config.subjects == ["crash.>"]


async def test_two_servers_start_concurrently() -> None:
    a, b = NatsServer(), NatsServer()
    try:
        await asyncio.gather(a.astart(), b.astart())
        assert a.port != b.port
        assert a.store_dir != b.store_dir
        for server in (a, b):
            async with connected(server.url) as (_, js):
                await js.account_info()
    finally:
        await asyncio.gather(a.astop(), b.astop())
    assert not (a.running or b.running)


# -- failures say why ----------------------------------------------------------------


def test_broken_config_raises_with_the_server_log() -> None:
    server = NatsServer(extra_config="this is { not config")
    with pytest.raises(ServerError, match="exited with status") as caught:
        server.start()
    assert "Parse error" in caught.value.log
    assert "Parse error" in str(caught.value)
    assert not server.running
    assert server.store_dir is None


def test_readiness_has_a_deadline() -> None:
    # Monitoring moved to another port: the readiness probe can never succeed.
    (other,) = [NatsServer().port]
    server = NatsServer(extra_config=f'http: "127.0.0.1:{other}"', start_timeout=0.3)
    with pytest.raises(ServerError, match=r"not ready within 0\.3s"):
        server.start()
    assert not server.running


def test_busy_port_is_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = NatsServer(port=sock.getsockname()[1])
        with pytest.raises(ServerError, match="exited") as caught:
            server.start()
    assert "address already in use" in caught.value.log


def test_reprs_show_the_auth_method_never_the_secret() -> None:
    server = NatsServer(token=TOKEN)
    auth = make_jwt_auth()
    for text in (repr(server), server._repr_html_()):
        assert "token" in text
    for text in (repr(server), server._repr_html_(), repr(server.options)):
        assert "tok$en" not in text
    shown = repr(auth) + repr(auth.server_config())
    for secret in (auth.user_seed, auth.user_jwt, auth.account_seed, auth.operator_jwt):
        assert secret not in shown


# -- cluster ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_local_cluster_elects_a_leader_and_replicates() -> None:
    async with LocalCluster(3, name="t") as cluster:
        names = [node.options.server_name for node in cluster.nodes]
        assert names == ["t-0", "t-1", "t-2"]
        assert len({node.store_dir for node in cluster.nodes}) == 3
        leader = cluster.wait_for_meta_leader()
        assert leader in names
        async with connected(cluster.urls.split(",")[0]) as (_, js):
            info = await ensure_stream(js, "R3", ["r3.>"], num_replicas=3)
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2
            await js.publish("r3.x", b"replicated")

        # Losing a node that leads nothing costs no election (a leader's loss costs ~5 s);
        # it comes back on its own store and catches up.
        spare = next(i for i, n in enumerate(names) if n not in (leader, info.cluster.leader))
        cluster.kill_node(spare)
        assert cluster.wait_for_meta_leader() == leader
        cluster.restart_node(spare)
        async with connected(cluster.nodes[spare].url) as (_, js):
            assert (await js.stream_info("R3")).state.messages == 1
    assert not any(node.running for node in cluster.nodes)


@pytest.mark.slow
async def test_a_fresh_cluster_takes_an_r3_stream_at_once_every_time(tmp_path: Path) -> None:
    # Each round: start, then create at once. Ready means JetStream answers, not only healthz.
    for i in range(20):
        cluster = LocalCluster(3, name=f"fresh{i}", store_root=tmp_path / str(i))
        async with cluster, connected(cluster.nodes[i % 3].url) as (_, js):
            info = await ensure_stream(js, "FRESH", ["fresh"], num_replicas=3)
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2


@pytest.mark.slow
async def test_without_quorum_no_leader_is_named_and_a_waiting_create_succeeds() -> None:
    async with LocalCluster(2, name="quorum", token=TOKEN) as cluster:
        assert [api_answers(node) for node in cluster.nodes] == [True, True], "probed with token"
        # Kill the leader: a leader that lost its quorum still answers reads for a while.
        leader = [n.options.server_name for n in cluster.nodes].index(
            await cluster.await_meta_leader()
        )
        async with connected(cluster.nodes[1 - leader].url, token=TOKEN) as (nc, js):
            await asyncio.to_thread(cluster.kill_node, leader)  # one of two: no majority
            with pytest.raises(NoLeaderError, match="no JetStream leader yet") as raised:
                await ensure_stream(js, "LONELY", ["lonely"], timeout=2)
            assert "creating stream 'LONELY'" in str(raised.value)
            with pytest.raises(NoLeaderError, match="finding the stream for subject 'lonely'"):
                await stream_for_subject(nc, "$JS.API", "lonely", timeout=2)
            # A create waiting for the quorum goes through once it is back.
            creating = asyncio.ensure_future(ensure_stream(js, "LONELY", ["lonely"]))
            await asyncio.to_thread(cluster.restart_node, leader)
            assert (await creating).config.name == "LONELY"
            assert await stream_for_subject(nc, "$JS.API", "lonely") == "LONELY"


def test_cluster_starts_synchronously_on_a_given_store_root(tmp_path: Path) -> None:
    with LocalCluster(2, name="sync", store_root=tmp_path) as cluster:
        assert cluster.meta_leader() in ("sync-0", "sync-1")
        assert [n.store_dir for n in cluster.nodes] == [tmp_path / "sync-0", tmp_path / "sync-1"]
    assert (tmp_path / "sync-1" / "jetstream").is_dir()


def test_cluster_rejects_per_node_options() -> None:
    with pytest.raises(TypeError, match="port"):
        LocalCluster(port=4222)


# -- auth -------------------------------------------------------------------------------


async def test_token_auth_accepts_only_the_token() -> None:
    async with NatsServer(token=TOKEN) as server:
        async with connected(server.url, token=TOKEN) as (_, js):
            await js.account_info()
        for wrong in ({"token": "nope"}, {}):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                async with connected(server.url, **wrong):
                    pass


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("other-ca"))


def test_tls_key_files_are_private(tls_files: TLSFiles) -> None:
    for key in (tls_files.server_key, tls_files.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_verify_clients_needs_a_ca(tls_files: TLSFiles) -> None:
    with pytest.raises(ValueError, match="ca_file"):
        TLSConfig(tls_files.server_cert, tls_files.server_key, verify_clients=True)


async def test_tls_client_cert_is_required(tls_files: TLSFiles, other_ca: TLSFiles) -> None:
    wrong_ca = ssl.create_default_context(cafile=tls_files.ca_file)
    wrong_ca.load_cert_chain(other_ca.client_cert, other_ca.client_key)
    async with NatsServer(tls=tls_files.server_config(verify_clients=True)) as server:
        assert server.url.startswith("tls://127.0.0.1:")
        async with connected(server.url, tls=tls_files.client_context()) as (_, js):
            await js.account_info()
        for context in (tls_files.client_context(with_cert=False), wrong_ca):
            with pytest.raises(OSError):
                async with connected(server.url, tls=context):
                    pass


@pytest.fixture(scope="module")
def jwt_auth() -> JWTAuth:
    return make_jwt_auth()


async def test_jwt_user_connects_and_uses_jetstream(jwt_auth: JWTAuth) -> None:
    second = make_user(jwt_auth, "second")
    async with NatsServer(jwt=jwt_auth.server_config()) as server:
        assert server.monitor("varz")["system_account"] == jwt_auth.system_account
        async with connected(server.url, **jwt_options(jwt_auth.user_jwt, jwt_auth.user_seed)) as (
            _,
            js,
        ):
            await js.add_stream(name="JWT", subjects=["jwt.>"])
            await js.publish("jwt.a", b"hello")
        async with connected(server.url, **jwt_options(second.user_jwt, second.user_seed)) as (
            _,
            js,
        ):
            assert (await js.stream_info("JWT")).state.messages == 1


async def test_jwt_with_the_wrong_seed_is_rejected(jwt_auth: JWTAuth) -> None:
    other_seed = make_user(jwt_auth, "other").user_seed
    async with NatsServer(jwt=jwt_auth.server_config()) as server:
        for options in (jwt_options(jwt_auth.user_jwt, other_seed), {}):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                async with connected(server.url, **options):
                    pass


def test_work_dir_of_a_dead_owner_is_swept(tmp_path: Path) -> None:
    """A kernel shut down without atexit leaves its server's dir; the next start removes it."""
    code = (
        "import os; from jsnb.server import NatsServer; s = NatsServer().start();"
        "print(s._res.work_dir, flush=True); os._exit(0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    orphan = Path(out.stdout.strip())
    server_pid = int((orphan / "nats-server.pid").read_text())
    assert orphan.is_dir()
    with NatsServer():
        pass
    assert not orphan.exists()
    deadline = time.monotonic() + 30
    with pytest.raises(ProcessLookupError):
        while time.monotonic() < deadline:  # SIGKILL is asynchronous; init reaps the zombie
            os.kill(server_pid, 0)
            time.sleep(0.05)
