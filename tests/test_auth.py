"""The component's three auth methods against real servers configured for each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jsnb import ConnectError, JetStreamPubSub, MetadataError, ensure_stream
from jsnb.credentials import TLSFiles, make_jwt_auth, make_tls_files
from jsnb.server import NatsServer
from tests.support import Recorder, eventually

TOKEN = "t0ken-for-tests"


async def round_trip(ps: JetStreamPubSub) -> None:
    await ensure_stream(ps, "AUTH", ["auth.x"])
    got = Recorder()
    await ps.subscribe("auth.x", got)
    await ps.publish("auth.x", "hello")
    await eventually(lambda: got.data == [b"hello"])


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(store_dir=tmp_path / "s", token=TOKEN) as server:
        yield server


async def test_token_accepted(token_server: NatsServer) -> None:
    async with JetStreamPubSub({"natsURL": token_server.url, "token": TOKEN}) as ps:
        await round_trip(ps)


@pytest.mark.parametrize(
    ("props", "how"),
    [
        pytest.param({"token": "wrong"}, "the token was rejected", id="wrong-token"),
        pytest.param({}, "no credentials were given", id="no-token"),
    ],
)
async def test_token_rejected(token_server: NatsServer, props: dict[str, str], how: str) -> None:
    with pytest.raises(ConnectError, match="authorization failed") as info:
        await JetStreamPubSub().init({"natsURL": token_server.url, **props})
    assert how in str(info.value)
    assert "wrong" not in str(info.value) or props == {}


def tls_props(server: NatsServer, files: TLSFiles, **extra: str) -> dict[str, str]:
    return {
        "natsURL": server.url.replace("nats://", "tls://"),
        "tls_ca_cert": str(files.ca_file),
        **extra,
    }


async def test_tls_client_cert_accepted(mtls_server: NatsServer, tls_files: TLSFiles) -> None:
    props = tls_props(
        mtls_server,
        tls_files,
        tls_client_cert=str(tls_files.client_cert),
        tls_client_key=str(tls_files.client_key),
    )
    async with JetStreamPubSub(props) as ps:
        await round_trip(ps)


async def test_tls_without_client_cert_rejected(
    mtls_server: NatsServer, tls_files: TLSFiles
) -> None:
    with pytest.raises(ConnectError, match=r"jsnb: .*(TLS|authorization|cannot connect)"):
        await JetStreamPubSub().init(tls_props(mtls_server, tls_files))


async def test_tls_wrong_ca_fails_clearly(
    mtls_server: NatsServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    other = make_tls_files(tmp_path / "other")
    props = tls_props(
        mtls_server,
        other,
        tls_client_cert=str(tls_files.client_cert),
        tls_client_key=str(tls_files.client_key),
    )
    with pytest.raises(ConnectError, match=r"TLS .* failed: .*certificate verify failed"):
        await JetStreamPubSub().init(props)


async def test_tls_missing_file_names_the_field(mtls_server: NatsServer, tmp_path: Path) -> None:
    props = {
        "natsURL": mtls_server.url,
        "tls_client_cert": str(tmp_path / "nope.crt"),
        "tls_client_key": str(tmp_path / "nope.key"),
    }
    with pytest.raises(MetadataError, match=r"tls_client_cert .*nope\.crt' does not exist"):
        await JetStreamPubSub().init(props)


@pytest.fixture(scope="module")
def jwt_auth():  # type: ignore[no-untyped-def]
    return make_jwt_auth()


@pytest.fixture
def jwt_server(tmp_path: Path, jwt_auth) -> Iterator[NatsServer]:  # type: ignore[no-untyped-def]
    with NatsServer(store_dir=tmp_path / "s", jwt=jwt_auth.server_config()) as server:
        yield server


async def test_jwt_and_seed_accepted(jwt_server: NatsServer, jwt_auth) -> None:  # type: ignore[no-untyped-def]
    props = {"natsURL": jwt_server.url, "jwt": jwt_auth.user_jwt, "seedKey": jwt_auth.user_seed}
    async with JetStreamPubSub(props) as ps:
        await round_trip(ps)
        assert jwt_auth.user_seed not in repr(ps) + ps._repr_html_()


async def test_jwt_with_wrong_seed_rejected(jwt_server: NatsServer, jwt_auth) -> None:  # type: ignore[no-untyped-def]
    other = make_jwt_auth()
    props = {"natsURL": jwt_server.url, "jwt": jwt_auth.user_jwt, "seedKey": other.user_seed}
    with pytest.raises(ConnectError, match=r"authorization failed \(JWT \+ seedKey") as info:
        await JetStreamPubSub().init(props)
    assert other.user_seed not in str(info.value)


async def test_jwt_with_non_user_seed_is_a_metadata_error(
    jwt_server: NatsServer,
    jwt_auth,  # type: ignore[no-untyped-def]
) -> None:
    props = {"natsURL": jwt_server.url, "jwt": jwt_auth.user_jwt, "seedKey": jwt_auth.account_seed}
    with pytest.raises(MetadataError, match="not a valid NKey user seed") as info:
        await JetStreamPubSub().init(props)
    assert jwt_auth.account_seed not in str(info.value)
