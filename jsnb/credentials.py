"""Development credentials for notebooks and tests: a TLS PKI and a JWT operator tree.

>>> import tempfile
>>> from jsnb.credentials import make_jwt_auth, make_tls_files
>>> from jsnb.server import NatsServer
>>> files = make_tls_files(tempfile.mkdtemp())
>>> server = NatsServer(tls=files.server_config(verify_clients=True))
>>> auth = make_jwt_auth()
>>> server = NatsServer(jwt=auth.server_config())
>>> auth.user_seed in repr(auth)
False

Everything here is made fresh on each call and meant for loopback servers
that live as long as a notebook: never for production. The JWTs are written
directly (header, claims, ed25519 signature by an nkey), following the format
nats-server 2.x checks; no ``nsc`` or third-party JWT library is needed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys

from jsnb.server import JWTConfig, TLSConfig

__all__ = ["JWTAuth", "TLSFiles", "make_jwt_auth", "make_tls_files", "make_user"]

_CERT_DAYS = 365
_CA_NAME = "jsnb development CA"


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throwaway CA, a server certificate and a client certificate."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_config(self, *, verify_clients: bool = False) -> TLSConfig:
        """The server side, optionally requiring client certificates signed by this CA."""
        return TLSConfig(
            cert_file=self.server_cert,
            key_file=self.server_key,
            ca_file=self.ca_file,
            verify_clients=verify_clients,
        )

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        """A context for nats-py trusting this CA and, by default, presenting the client cert."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make_tls_files(
    directory: str | Path, *, hosts: Iterable[str] = ("127.0.0.1", "localhost")
) -> TLSFiles:
    """Write a new CA, a server certificate for ``hosts`` and a client certificate.

    Keys are P-256 (fast to make) and written mode 0600. A second call in
    another directory gives an unrelated CA, for "wrong CA" tests.
    """
    # Imported here: cryptography is slow to import and only TLS demos need it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common_name: str) -> x509.Name:
        org = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jsnb development")
        return x509.Name([org, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def usage(*, ca: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(
            ["content_commitment", "key_encipherment", "data_encipherment", "key_agreement"],
            False,
        )
        return x509.KeyUsage(
            digital_signature=not ca,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
            **flags,
        )

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        *,
        ca_key: ec.EllipticCurvePrivateKey,
        extensions: list[x509.ExtensionType],
    ) -> x509.Certificate:
        # Back-dated an hour so a skewed clock does not reject a fresh certificate.
        b = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(_CA_NAME))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
            # Key identifiers: Python 3.13's strict verification requires them.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        for ext in extensions:
            critical = isinstance(ext, x509.BasicConstraints | x509.KeyUsage)
            b = b.add_extension(ext, critical=critical)
        return b.sign(ca_key, hashes.SHA256())

    def pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(
        _CA_NAME,
        ca_key,
        ca_key=ca_key,
        extensions=[x509.BasicConstraints(ca=True, path_length=0), usage(ca=True)],
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    leaf = [x509.BasicConstraints(ca=False, path_length=None), usage(ca=False)]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate(
        "nats-server",
        server_key,
        ca_key=ca_key,
        extensions=[
            *leaf,
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            x509.SubjectAlternativeName(sans),
        ],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = certificate(
        "jsnb client",
        client_key,
        ca_key=ca_key,
        extensions=[*leaf, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
    )
    files = TLSFiles(
        ca_file=directory / "ca.pem",
        server_cert=directory / "server-cert.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client-cert.pem",
        client_key=directory / "client-key.pem",
    )
    for path, cert in [
        (files.ca_file, ca),
        (files.server_cert, server),
        (files.client_cert, client),
    ]:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.server_key, pem(server_key))
    _write_private(files.client_key, pem(client_key))
    return files


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 rather than chmod-ed after, so the key is never readable by others;
    # fchmod covers a file left by an earlier call, which keeps its mode through O_CREAT.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


@dataclass(frozen=True)
class JWTAuth:
    """An operator, a system account, an app account with JetStream, and one of its users.

    ``user_jwt`` and ``user_seed`` are what a client (or Dapr's ``jwt`` and
    ``seedKey`` metadata) presents; ``server_config()`` is what the server trusts.
    """

    operator_jwt: str = field(repr=False)
    system_account: str
    system_account_jwt: str = field(repr=False)
    account: str
    account_jwt: str = field(repr=False)
    account_seed: str = field(repr=False)
    user_name: str
    user_jwt: str = field(repr=False)
    user_seed: str = field(repr=False)

    def server_config(self) -> JWTConfig:
        """Trust the operator and preload both accounts into a memory resolver."""
        return JWTConfig(
            operator_jwt=self.operator_jwt,
            system_account=self.system_account,
            resolver_preload={
                self.system_account: self.system_account_jwt,
                self.account: self.account_jwt,
            },
        )


def make_jwt_auth(user_name: str = "app") -> JWTAuth:
    """Make a fresh operator tree; the app account may use JetStream without limits."""
    operator = _new_key(nkeys.PREFIX_BYTE_OPERATOR)
    system = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    account = _new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    op_pub, sys_pub, acc_pub = _pub(operator), _pub(system), _pub(account)
    # -1 means unlimited. JetStream is on for an account whose storage limits are
    # non-zero; the system account must not have it.
    limits = {
        "subs": -1,
        "data": -1,
        "payload": -1,
        "imports": -1,
        "exports": -1,
        "wildcards": True,
        "conn": -1,
        "leaf": -1,
    }
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    user_jwt, user_seed = _user(account, user_name)
    return JWTAuth(
        operator_jwt=_encode(
            operator, op_pub, "jsnb-operator", {"type": "operator", "system_account": sys_pub}
        ),
        system_account=sys_pub,
        system_account_jwt=_encode(operator, sys_pub, "SYS", {"type": "account", "limits": limits}),
        account=acc_pub,
        account_jwt=_encode(
            operator, acc_pub, "APP", {"type": "account", "limits": limits | jetstream}
        ),
        account_seed=account.seed.decode(),
        user_name=user_name,
        user_jwt=user_jwt,
        user_seed=user_seed,
    )


def make_user(auth: JWTAuth, name: str) -> JWTAuth:
    """The same operator and accounts, with another user of the app account."""
    user_jwt, user_seed = _user(nkeys.from_seed(auth.account_seed.encode()), name)
    return dataclasses.replace(auth, user_name=name, user_jwt=user_jwt, user_seed=user_seed)


def _user(account: nkeys.KeyPair, name: str) -> tuple[str, str]:
    """A new user key and its JWT signed by the account: (jwt, seed)."""
    user = _new_key(nkeys.PREFIX_BYTE_USER)
    claims = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    return _encode(account, _pub(user), name, claims), user.seed.decode()


def _new_key(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _pub(key: nkeys.KeyPair) -> str:
    return str(key.public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _encode(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS v2 JWT: base64url header and claims, signed by the issuer's nkey."""
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": _pub(issuer),
        "name": name,
        "sub": subject,
        "nats": nats | {"version": 2},
    }
    # The jti only has to be unique; the server does not recompute it.
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = issuer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"
