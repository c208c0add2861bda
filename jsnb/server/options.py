"""What a server is started with: listen, auth (token, TLS, JWT), cluster, limits.

Internal to :mod:`jsnb.server`, which exports what users need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jsnb.errors import InvalidArgumentError

__all__ = ["ClusterConfig", "JWTConfig", "ServerOptions", "TLSConfig"]


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
