"""Several nodes routed to each other with clustered JetStream, ready when it says so.

Internal to :mod:`jsnb.server`, which exports what users need.
"""

from __future__ import annotations

import asyncio
import html
import json
import socket
import time
from pathlib import Path
from typing import Any, Self

from jsnb.display import key_value_table
from jsnb.errors import ArgumentTypeError, InvalidArgumentError, ServerError
from jsnb.server.node import NatsServer
from jsnb.server.options import ClusterConfig
from jsnb.server.process import POLL_INTERVAL, Runnable, free_ports, http_get

__all__ = ["ELECTION_TIMEOUT", "LocalCluster", "api_answers"]

# A fresh cluster elects its JetStream meta leader in well under a second when
# idle; a split vote waits nats-server's 4-9 s election timeout again.
ELECTION_TIMEOUT = 30.0

# Options each node of a LocalCluster must have to itself.
_PER_NODE = frozenset({"port", "store_dir", "server_name", "cluster"})


class LocalCluster(Runnable):
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
        route_ports = free_ports(host, size)
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
                    time.sleep(POLL_INTERVAL)
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
            time.sleep(POLL_INTERVAL)
        return leader

    async def await_meta_leader(self, timeout: float = ELECTION_TIMEOUT) -> str:
        """``wait_for_meta_leader()`` without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while (leader := await asyncio.to_thread(self.meta_leader)) is None:
            if time.monotonic() > deadline:
                raise self._no_leader(timeout)
            await asyncio.sleep(POLL_INTERVAL)
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
        return f"<b>cluster {html.escape(self.name)}</b>" + key_value_table(rows)


def api_answers(node: NatsServer, timeout: float = 2.0) -> bool | None:
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
    """Wait until a JetStream API request through *node* is answered (see ``api_answers``)."""
    deadline = time.monotonic() + timeout
    while api_answers(node) is False:
        if time.monotonic() > deadline:
            raise ServerError(
                f"jsnb: JetStream on {node.options.server_name} did not answer $JS.API.INFO "
                f"within {max(timeout, 0):g}s: the cluster has no working meta leader",
                log=node._log_tail(),
            )
        time.sleep(POLL_INTERVAL)


def _wait_caught_up(node: NatsServer, timeout: float) -> None:
    """Wait for a node's full ``/healthz``: meta leader known, streams and consumers current."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = http_get(node.options.host, node._http_port, "/healthz")
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
