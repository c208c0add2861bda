"""One nats-server with JetStream, and the process-wide shared one notebooks use.

Internal to :mod:`jsnb.server`, which exports what users need.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Self

from jsnb.display import key_value_table
from jsnb.errors import ServerError
from jsnb.server.options import ClusterConfig, JWTConfig, ServerOptions, TLSConfig
from jsnb.server.process import (
    LOG_TAIL_LINES,
    OWNER_FILE,
    POLL_INTERVAL,
    READY_PATH,
    SERVER_PID_FILE,
    STOP_TIMEOUT,
    WORK_PREFIX,
    Resources,
    Runnable,
    free_ports,
    http_get,
    nats_server_binary,
    sweep_orphans,
    terminate,
)

__all__ = ["NatsServer", "shared_server", "stop_shared_server"]


class NatsServer(Runnable):
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
        free = iter(free_ports(host, wanted.count(0)))
        ports = [p or next(free) for p in wanted]
        self._port, self._http_port = ports[0], ports[1]
        self._cluster_port = ports[2] if cluster is not None else 0
        self._res: Resources | None = None
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
        status, body = http_get(self.options.host, self._http_port, "/" + endpoint.lstrip("/"))
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
                time.sleep(POLL_INTERVAL)
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
                await asyncio.sleep(POLL_INTERVAL)
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
                terminate(res.process, STOP_TIMEOUT)
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
            terminate(self._res.process, STOP_TIMEOUT)
            self._res.process = None
        return self.start()

    def _launch(self) -> None:
        """Write the config and spawn the process; readiness is checked by the caller."""
        if self._res is None:
            sweep_orphans()
            # mkdtemp makes the directory 0700: the config may hold a token.
            res = Resources(Path(tempfile.mkdtemp(prefix=WORK_PREFIX)))
            (res.work_dir / OWNER_FILE).write_text(str(os.getpid()))
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
        (res.work_dir / SERVER_PID_FILE).write_text(str(res.process.pid))

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
            status, _ = http_get(self.options.host, self._http_port, READY_PATH, timeout=1.0)
            if status == 200:
                return True
        if time.monotonic() > deadline:
            raise ServerError(
                f"jsnb: nats-server {self.url} was not ready within "
                f"{self.options.start_timeout:g}s (no OK from {self.monitor_url}{READY_PATH})",
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
        return "\n".join(self.log_text().splitlines()[-LOG_TAIL_LINES:])

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
        return f"<b>{title}</b>" + key_value_table(self._summary().items())


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
