"""Security: secrets never leak, TLS verifies by default, and the embedded server stays private.

A whole session (connect, publish, subscribe, a failing handler with a dead
letter, a server crash and reconnect, wrong credentials, bad metadata) is run
per auth method while every repr, HTML view, exported YAML, log record (all
loggers at DEBUG, jsnb's and nats-py's included) and exception text is
collected; none may contain a secret.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jsnb import (
    ComponentClosedError,
    ConnectError,
    JetStreamPubSub,
    JsnbError,
    Metadata,
    MetadataError,
    ensure_stream,
)
from jsnb.credentials import TLSFiles, make_jwt_auth, make_tls_files
from jsnb.metadata import hide_userinfo
from jsnb.server import LocalCluster, NatsServer
from tests.support import Recorder, eventually

TOKEN = "tok-3f9a1c7e-never-shown"


@dataclass
class Auth:
    """How one session authenticates: the server's side, the client's, and what must not leak."""

    server: dict[str, Any]
    props: dict[str, str]
    wrong: dict[str, str]  # credentials the server rejects; secret too
    secrets: list[str]


def token_auth() -> Auth:
    return Auth({"token": TOKEN}, {"token": TOKEN}, {"token": "wrong-" + TOKEN[::-1]}, [TOKEN])


def jwt_auth() -> Auth:
    auth, other = make_jwt_auth(), make_jwt_auth()
    return Auth(
        {"jwt": auth.server_config()},
        {"jwt": auth.user_jwt, "seedKey": auth.user_seed},
        {"jwt": auth.user_jwt, "seedKey": other.user_seed},
        [auth.user_jwt, auth.user_seed, other.user_seed, auth.account_seed],
    )


def leaks(texts: list[str], secrets: list[str]) -> list[str]:
    """Texts holding a secret, or a distinctive 12-character piece of one."""
    pieces = {s for secret in secrets for s in (secret, secret[len(secret) // 2 :][:12])}
    return [t for t in texts if any(p in t for p in pieces)]


def exception_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            texts += [str(linked), repr(linked)]
    return texts


@pytest.mark.slow
@pytest.mark.parametrize("make_auth", [token_auth, jwt_auth], ids=["token", "jwt-and-seed"])
async def test_a_whole_session_never_shows_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make_auth: Any
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: jsnb, nats, asyncio
    auth = make_auth()
    texts: list[str] = []
    with NatsServer(store_dir=tmp_path / "store", **auth.server) as server:
        props = {
            "natsURL": server.url,
            "durableName": "sec",
            "maxDeliver": 2,
            "ackWait": "200ms",  # the NAK delay without backOff
            **auth.props,
        }
        async with JetStreamPubSub(props) as ps:
            await ensure_stream(ps, "SEC", ["sec", "sec.dlq"])
            failing = Recorder(fail_times=5)
            sub = await ps.subscribe("sec", failing, metadata={"deadLetterTopic": "sec.dlq"})
            result = await ps.publish("sec", {"order": 1})
            await eventually(lambda: len(failing.attempts.get(result.seq, [])) == 2)
            # A crash and a reconnect: connect options are sent (and could be logged) again.
            await asyncio.to_thread(server.kill)
            await eventually(lambda: not ps.nc.is_connected)
            await asyncio.to_thread(server.restart)
            await eventually(lambda: ps.nc.is_connected)
            await ps.publish("sec", "after the crash")
            md = ps.metadata
            assert md is not None
            texts += [repr(ps), ps._repr_html_(), repr(sub), sub._repr_html_()]
            texts += [repr(md), md._repr_html_(), md.to_component_yaml()]
            texts += [str(md.as_properties(reveal_secrets=False, defaults=True))]
            texts += [repr(server), server._repr_html_(), repr(server.options), server.log_text()]
            texts += [repr(result), result._repr_html_()]
            # The secrets are really in use: only the opt-in export shows them.
            assert leaks([md.to_component_yaml(reveal_secrets=True)], auth.secrets)
            pid = server.pid
            assert pid is not None
            texts.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        texts += [repr(ps), ps._repr_html_()]

        errors: list[BaseException] = []
        with pytest.raises(ConnectError, match="authorization failed") as rejected:
            await JetStreamPubSub().init({"natsURL": server.url, **auth.wrong})
        errors.append(rejected.value)
        with pytest.raises(ComponentClosedError) as closed:
            await ps.publish("sec", "x")
        errors.append(closed.value)
        for bad in _bad_metadata(server.url, auth):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(JsnbError) as info:
                    await JetStreamPubSub().init(bad)
            errors.append(info.value)
        for exc in errors:
            texts += exception_texts(exc)

    records = caplog.records
    assert any(r.name.startswith("jsnb") for r in records), "jsnb's logs were captured"
    texts += [r.getMessage() for r in records]
    texts += [logging.Formatter().format(r) for r in records if r.exc_info]
    assert not leaks(texts, auth.secrets), leaks(texts, auth.secrets)[:3]


def _bad_metadata(url: str, auth: Auth) -> list[dict[str, Any]]:
    """Metadata errors whose bad value is, or sits next to, a secret."""
    secret = auth.secrets[0]
    return [
        {"natsURL": url, "token": [secret]},  # not a string
        {"natsURL": url, "jwt": secret},  # no seedKey
        {"natsURL": url, "jwt": secret, "seedKey": secret},  # a JWT is no seed
        {"natsURL": url, "seedKey": secret, "ackWait": "forever"},
    ]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param("nats://app:pw@h:4222", "nats://***@h:4222", id="plain"),
        pytest.param("nats://app:p@ss@h:4222", "nats://***@h:4222", id="at-sign"),
        pytest.param("nats://app:p/ss@h:4222", "nats://***@h:4222", id="slash"),
        pytest.param("nats://app:p:ss@h:4222", "nats://***@h:4222", id="colon"),
        pytest.param("nats://app:p%40ss@h:4222", "nats://***@h:4222", id="percent-encoded"),
        pytest.param("tls://tok@h:4222", "tls://***@h:4222", id="token-only"),
        pytest.param("app:p@ss@h:4222", "***@h:4222", id="no-scheme"),
        pytest.param(
            "nats://a:p@1@h1:1, tls://b:p/2@h2:2,h3:3",
            "nats://***@h1:1, tls://***@h2:2,h3:3",
            id="server-list",
        ),
        pytest.param("nats://h:4222,h2:4222", "nats://h:4222,h2:4222", id="no-userinfo-unchanged"),
    ],
)
def test_hide_userinfo_masks_up_to_the_last_at_sign(url: str, shown: str) -> None:
    assert hide_userinfo(url) == shown


# Unencoded "@", "/" and ":" (nats-py sends the URL's password as written, so "%40" too).
URL_PASSWORDS = [
    pytest.param("pw@5d1e-never-shown", id="at-sign"),
    pytest.param("pw/5d1e-never-shown", id="slash"),
    pytest.param("pw:5d1e-never-shown", id="colon"),
    pytest.param("pw%405d1e-never-shown", id="percent-encoded"),
]


@pytest.mark.parametrize("password", URL_PASSWORDS)
async def test_url_password_not_shown_when_connecting_fails(
    password: str, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"nats://app:{password}@127.0.0.1:{unused_tcp_port}"
    texts: list[str] = []
    try:
        md = Metadata.from_properties({"natsURL": url})
    except MetadataError as exc:  # "/" ends the authority: not a URL nats-py can use
        texts += exception_texts(exc)
    else:
        views = [repr(md), md._repr_html_(), md.to_component_yaml()]
        texts += [*views, str(md.as_properties(reveal_secrets=False))]
    with pytest.raises(JsnbError) as info:
        await JetStreamPubSub().init({"natsURL": url})
    texts += exception_texts(info.value)
    texts += [r.getMessage() for r in caplog.records]
    assert not leaks(texts, [password]), leaks(texts, [password])


@pytest.mark.parametrize(
    "password",
    [pytest.param("pw-5d1e-never-shown", id="plain"), pytest.param("p@ss:w%40rd-5d1e", id="@-:-%")],
)
async def test_credentials_in_the_url_are_not_shown(tmp_path: Path, password: str) -> None:
    users = f'authorization {{ user: "app", password: "{password}" }}'
    with NatsServer(store_dir=tmp_path / "store", extra_config=users) as server:
        url = server.url.replace("nats://", f"nats://app:{password}@")
        async with JetStreamPubSub({"natsURL": url}) as ps:
            md = ps.metadata
            assert md is not None
            texts = [repr(ps), ps._repr_html_(), repr(md), md._repr_html_()]
            texts.append(md.to_component_yaml())
        assert not leaks(texts, [password])


# -- TLS ------------------------------------------------------------------------------


async def test_tls_verifies_the_server_certificate_by_default(tls_server: NatsServer) -> None:
    assert tls_server.url.startswith("tls://")
    with pytest.raises(ConnectError, match=r"TLS with tls://.* failed: .*certificate verify"):
        await JetStreamPubSub().init({"natsURL": tls_server.url})


async def test_tls_ca_option_trusts_a_private_ca(
    tls_server: NatsServer, tls_files: TLSFiles
) -> None:
    props = {"natsURL": tls_server.url, "tls_ca_cert": str(tls_files.ca_file)}
    async with JetStreamPubSub(props) as ps:
        await ensure_stream(ps, "TLS", ["tls"])
        got = Recorder()
        await ps.subscribe("tls", got)
        await ps.publish("tls", "over tls")
        await eventually(lambda: got.data == [b"over tls"])


async def test_tls_with_another_ca_is_refused(tls_server: NatsServer, tmp_path: Path) -> None:
    other = make_tls_files(tmp_path / "other")
    props = {"natsURL": tls_server.url, "tls_ca_cert": str(other.ca_file)}
    with pytest.raises(ConnectError, match="certificate verify failed"):
        await JetStreamPubSub().init(props)


async def test_plaintext_client_cannot_use_a_tls_only_server(tls_server: NatsServer) -> None:
    plain = tls_server.url.replace("tls://", "nats://")
    with pytest.raises(ConnectError, match=r"TLS with nats://.* failed"):
        await JetStreamPubSub().init({"natsURL": plain})


@pytest.mark.parametrize("make_auth", [token_auth, jwt_auth], ids=["token", "jwt"])
async def test_auth_servers_refuse_anonymous_clients_and_say_why(
    tmp_path: Path, make_auth: Any
) -> None:
    auth = make_auth()
    refused = r"authorization failed \(no credentials were given"
    with (
        NatsServer(store_dir=tmp_path / "store", **auth.server) as server,
        pytest.raises(ConnectError, match=refused),
    ):
        await JetStreamPubSub().init({"natsURL": server.url})


# -- the embedded server keeps to itself ---------------------------------------------------


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs process *pid* listens on, read from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                found.add(_address(local, family))
    return found


def _address(hex_address: str, family: socket.AddressFamily) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc prints the address as 32-bit words in host (little-endian) order.
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, packed), int(port, 16)


def assert_private(server: NatsServer) -> None:
    pid = server.pid
    assert pid is not None
    ports = listening(pid)
    expected = {server.port, int(server.monitor_url.rsplit(":", 1)[1])}
    if server.cluster_port is not None:
        expected.add(server.cluster_port)
    assert {port for _, port in ports} == expected, ports
    assert {host for host, _ in ports} == {"127.0.0.1"}, ports
    store = server.store_dir
    assert store is not None
    assert stat.S_IMODE(store.stat().st_mode) == 0o700, "the store (and config) is private"
    config = store / "nats-server.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


async def test_embedded_server_listens_on_loopback_only_with_a_private_store() -> None:
    from jsnb.server import stop_shared_server

    try:
        async with JetStreamPubSub({"natsURL": "embedded"}) as ps:
            assert ps.server is not None
            await ensure_stream(ps, "PRIV", ["priv"])  # the store now holds a stream
            assert_private(ps.server)
    finally:
        stop_shared_server()


@pytest.mark.slow
async def test_cluster_nodes_listen_on_loopback_only() -> None:
    async with LocalCluster(3, name="priv") as cluster:
        for node in cluster.nodes:
            assert_private(node)


async def test_token_server_config_is_private_and_token_not_on_its_command_line() -> None:
    with NatsServer(token=TOKEN) as server:
        assert_private(server)
        assert TOKEN in (server.store_dir / "nats-server.conf").read_text()  # type: ignore[operator]
        assert TOKEN not in Path(f"/proc/{server.pid}/cmdline").read_text()


def test_secret_fields_are_masked_in_every_metadata_view() -> None:
    auth = jwt_auth()
    md = Metadata.from_properties({"natsURL": "nats://h:1", **auth.props, "token": TOKEN})
    views = [
        repr(md),
        md._repr_html_(),
        md.to_component_yaml(),
        str(md.as_properties(reveal_secrets=False)),
    ]
    assert not leaks(views, [*auth.secrets, TOKEN])
    with pytest.raises(MetadataError) as info:  # a YAML number is a secret too (stringified)
        Metadata.from_properties({"natsURL": "nats://h:1", "jwt": 12345678901234})
    assert "12345678901234" not in str(info.value)
