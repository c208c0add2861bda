"""Hostile input: every odd config, topic, payload or handler gets a clear error or a defined
behaviour, and no message is lost.

The metadata parsers are checked with hypothesis: any property map and any
manifest text gives a valid ``Metadata`` or a ``MetadataError``, never another
exception.
"""

from __future__ import annotations

import asyncio
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats.errors
import orjson
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jsnb import (
    BulkMessageEntry,
    DeliveryEvent,
    JetStreamPubSub,
    Message,
    Metadata,
    MetadataError,
    Outcome,
    PayloadTooLargeError,
    ensure_stream,
)
from jsnb.cloudevents import unwrap
from jsnb.consumer import consumer_config
from jsnb.pubsub import check_topic
from jsnb.server import NatsServer
from tests.support import all_acked, eventually, make

pytestmark = [pytest.mark.component(ackWait="1s"), pytest.mark.streams(HOSTILE=["h", "h.>"])]

SEED_YAML = Path(__file__).resolve().parent / "data" / "seed-component.yaml"
RAW = {"rawPayload": "true"}
PROPERTY = settings(max_examples=150)

# -- metadata: any input, a Metadata or a MetadataError -----------------------------------

KEYS = [info.key for info in Metadata.fields_table()]
KEY_VARIANTS = KEYS + [k.upper() for k in KEYS] + [f" {k} " for k in KEYS[:5]]
KEY_VARIANTS += ["deliverAll", "hearbeat", "concurrency", "consumerID", "backOffPolicy"]
PLAUSIBLE = [
    "", " ", "0", "1", "-1", "10", "0x10", "0b11", "010", "1e3", "9" * 40, "true", "False",
    "yes", "maybe", "10s", "1m30s", "500ms", "-5s", "1.5h", "99999999h", "[1s, 2s]",
    "'1s', \"2s\"", "1s,,2s", "all", "last", "new", "sequence", "time", "explicit", "none",
    "NONE", "single", "Parallel", "nats://127.0.0.1:4222", "tls://a:1, nats://b:2",
    "embedded", "nats://u:p@h:1", "http://x", "://", "nats://[::1]:4222", "nats://h:99999",
    "a b", "a.b", "orders.>", "\x00", "\u00e9\u2028",
]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(PLAUSIBLE),
    st.text(max_size=30),
    st.integers(),
    st.booleans(),
    st.none(),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4))
ANY_PROPS = st.dictionaries(
    st.one_of(st.sampled_from(KEY_VARIANTS), st.text(max_size=20)), VALUES, max_size=8
)
# Half of the maps get a usable natsURL, so the other keys are not all hidden behind its error.
PROPS = ANY_PROPS | ANY_PROPS.map(lambda props: {"natsURL": "nats://h:1", **props})
VALID = [
    {"natsURL": "nats://127.0.0.1:4222"},
    {
        "natsURL": "nats://a:1,nats://b:2",
        "durableName": "billing",
        "queueGroupName": "workers",
        "ackWait": "10s",
        "maxDeliver": 5,
        "backOff": "50ms, 1s, 10s",
        "maxAckPending": 100,
        "concurrencyMode": "parallel",
    },
    {"natsURL": "embedded", "deliverPolicy": "sequence", "startSequence": "7", "ackPolicy": "all"},
    {"natsURL": "tls://h:4222", "startTime": 1630349391, "flowControl": "on", "heartbeat": "5s"},
    {"natsURL": "nats://h:1", "jwt": "eyJ.x.y", "seedKey": "SUA", "token": "t", "replicas": 3},
]


def outcome(parse: Callable[[], Metadata]) -> Metadata | MetadataError:
    """Metadata or MetadataError; anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown or deprecated keys warn; that is fine here
        try:
            return parse()
        except MetadataError as exc:
            return exc


def check_valid(md: Metadata) -> None:
    """A valid Metadata round-trips through properties and YAML, and makes a consumer."""
    again = outcome(lambda: Metadata.from_properties(md.as_properties()))
    assert again == md, md
    manifest = md.to_component_yaml(reveal_secrets=True)
    again = outcome(lambda: Metadata.from_component_yaml(manifest))
    assert again == md, manifest
    consumer_config(md, "orders", "_INBOX.x")


@PROPERTY
@given(PROPS)
@example({"ackWait": 10**20})
@example({"natsURL": "nats://h:1", "backOff": ["1s", None]})
@example({"NATSURL": "nats://h:1", "natsurl": "nats://h:2"})
def test_any_property_map_gives_metadata_or_metadata_error(props: dict[str, Any]) -> None:
    result = outcome(lambda: Metadata.from_properties(props))
    if isinstance(result, Metadata):
        check_valid(result)
    elif isinstance(result, MetadataError):
        assert str(result).startswith("jsnb: ")


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with one to three keys dropped, replaced, recased or added."""
    props = dict(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "replace", "recase", "add"]))
        key = draw(st.sampled_from(sorted(props))) if props else "natsURL"
        if action == "drop":
            props.pop(key, None)
        elif action == "replace":
            props[key] = draw(VALUES)
        elif action == "recase" and key in props:
            props[draw(st.sampled_from([key.upper(), key.lower(), key + " "]))] = props[key]
        elif action == "add":
            props[draw(st.sampled_from(KEY_VARIANTS))] = draw(VALUES)
    return props


@PROPERTY
@given(mutated_configs())
def test_mutated_valid_configs_give_metadata_or_metadata_error(props: dict[str, Any]) -> None:
    result = outcome(lambda: Metadata.from_properties(props))
    assert isinstance(result, Metadata | MetadataError)
    if isinstance(result, Metadata):
        check_valid(result)


@PROPERTY
@given(st.text(max_size=200))
@example("a\x00.yaml")
@example("kind: Component\nspec: [1]\n")
@example("kind: Component\nspec:\n  type: pubsub.jetstream\n  metadata: {a: 1}\n")
def test_any_text_as_component_yaml_gives_metadata_or_metadata_error(text: str) -> None:
    result = outcome(lambda: Metadata.from_component_yaml(text))
    assert isinstance(result, Metadata | MetadataError)


YAML_VALUES = st.recursive(
    st.one_of(SCALARS, st.floats(allow_nan=True), st.dates()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def mutated_manifests(draw: st.DrawFn) -> str:
    """The seed manifest, with its structure or its text damaged."""
    doc = yaml.safe_load(SEED_YAML.read_text())
    damage = draw(st.sampled_from(["value", "entry", "spec", "top", "text"]))
    entries = doc["spec"]["metadata"]
    if damage == "value":
        entries[draw(st.integers(0, len(entries) - 1))]["value"] = draw(YAML_VALUES)
    elif damage == "entry":
        entries[draw(st.integers(0, len(entries) - 1))] = draw(YAML_VALUES)
    elif damage == "spec":
        doc["spec"][draw(st.sampled_from(["type", "metadata", "version"]))] = draw(YAML_VALUES)
    elif damage == "top":
        doc[draw(st.sampled_from(["kind", "spec", "apiVersion"]))] = draw(YAML_VALUES)
    text = yaml.safe_dump(doc, sort_keys=False)
    if damage == "text":
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 20))
        text = text[:at] + draw(st.text(max_size=5)) + text[at + cut :]
    return text


@PROPERTY
@given(mutated_manifests())
def test_mutated_manifests_give_metadata_or_metadata_error(text: str) -> None:
    result = outcome(lambda: Metadata.from_component_yaml(text))
    assert isinstance(result, Metadata | MetadataError)
    if isinstance(result, Metadata):
        check_valid(result)


# Inputs that once escaped as other exceptions: each is a MetadataError naming the key.


@pytest.mark.parametrize(
    "props",
    [
        pytest.param({"ackWait": 10**20}, id="huge-int"),
        pytest.param({"ackWait": "99999999999999h"}, id="huge-go-duration"),
        pytest.param({"heartbeat": "-99999999999999999999h"}, id="huge-negative"),
        pytest.param({"ackWait": float("inf")}, id="infinite"),
        pytest.param({"ackWait": float("nan")}, id="nan"),
        pytest.param({"backOff": ["1s", 10**20]}, id="backOff-entry"),
    ],
)
def test_huge_or_non_finite_durations_are_metadata_errors(props: dict[str, Any]) -> None:
    with pytest.raises(MetadataError, match=r"jsnb: (ackWait|heartbeat|backOff)"):
        Metadata.from_properties({"natsURL": "nats://h:1", **props})


def test_infinite_duration_in_a_manifest_is_a_metadata_error() -> None:
    text = SEED_YAML.read_text().replace("value: 10s", "value: .inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MetadataError, match="ackWait"):
            Metadata.from_component_yaml(text)


@pytest.mark.parametrize("spec", ["[1]", "just text", "42"])
def test_component_with_non_mapping_spec_is_a_metadata_error(spec: str) -> None:
    with pytest.raises(MetadataError, match="spec"):
        Metadata.from_component_yaml(
            f"apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: {spec}\n"
        )


def test_nul_byte_path_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError, match="cannot read component file"):
        Metadata.from_component_yaml("pubsub\x00.yaml")


def test_deeply_nested_yaml_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError, match="YAML"):
        Metadata.from_component_yaml("[" * 5000)


def test_start_time_beyond_year_9999_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError, match="startTime"):
        Metadata.from_properties({"natsURL": "nats://h:1", "startTime": 10**13})


# -- pure helpers on the wire path ---------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.builds(orjson.dumps, st.dictionaries(st.text(), st.text())))
def test_unwrap_never_raises_and_keeps_non_cloudevents_as_they_are(payload: bytes) -> None:
    incoming = unwrap(payload)
    if incoming.cloud_event is None:
        assert incoming.data == payload
    assert unwrap(payload, raw=True).data == payload


@settings(max_examples=300)
@given(st.text(max_size=20))
def test_publish_topics_are_valid_subjects_or_value_errors(topic: str) -> None:
    try:
        check_topic(topic)
    except ValueError as exc:
        assert "jsnb: topic" in str(exc)
        return
    assert topic and not re.search(r"\s|[*>]", topic)
    assert "" not in topic.split("."), "no empty tokens"


# -- a live server ------------------------------------------------------------------------


BAD_TOPICS = ["a b", "h.*", "h.>", ">", "a\tb", "h\r\nPUB x 1", "", "a..b", ".h", "h."]


@pytest.mark.parametrize("topic", BAD_TOPICS)
async def test_bad_topics_are_refused_before_anything_is_sent(
    ps: JetStreamPubSub, topic: str
) -> None:
    got: list[Message] = []
    sub = await ps.subscribe("h", got.append)
    with pytest.raises(ValueError, match="jsnb: topic"):
        await ps.publish(topic, "x")
    with pytest.raises(ValueError, match="jsnb: topic"):
        await ps.bulk_publish(topic, [BulkMessageEntry("1", "x")])
    if not re.fullmatch(r"(h\.)?[*>]", topic):  # wildcards are fine to subscribe to
        with pytest.raises(ValueError, match="jsnb: topic"):
            await ps.subscribe(topic, print)
    await ps.publish("h", "still fine")
    await eventually(lambda: [m.data for m in got] == [b"still fine"])
    assert (await sub.stream_info()).state.messages == 1


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(store_dir=tmp_path / "small", max_payload=1024) as server:
        yield server


async def test_payload_over_max_payload_fails_alone(small_server: NatsServer) -> None:
    async with JetStreamPubSub({"natsURL": small_server.url}) as ps:
        await ensure_stream(ps, "SMALL", ["small"])
        got: list[Message] = []
        await ps.subscribe("small", got.append, metadata=RAW)
        with pytest.raises(PayloadTooLargeError, match=r"2000 bytes .* max_payload of 1024"):
            await ps.publish("small", b"x" * 2000, metadata=RAW)
        # 900 bytes fit the server's limit, but not inside a CloudEvent envelope.
        with pytest.raises(PayloadTooLargeError, match="CloudEvent envelope"):
            await ps.publish("small", b"y" * 900)
        await ps.publish("small", b"z" * 900, metadata=RAW)
        entries = [BulkMessageEntry(str(i), b"%d" % i) for i in range(5)]
        entries.insert(2, BulkMessageEntry("big", b"x" * 5000))
        resp = await ps.bulk_publish("small", entries, metadata=RAW)
        assert [f.entry_id for f in resp.failed_entries] == ["big"]
        assert isinstance(resp.failed_entries[0].error, PayloadTooLargeError)
        await eventually(lambda: len(got) == 6)
        assert [m.data for m in got] == [b"z" * 900, b"0", b"1", b"2", b"3", b"4"]
        assert ps.nc.is_connected
        await ps.ping()


async def test_payload_over_max_payload_error_names_size_and_limit(
    small_server: NatsServer,
) -> None:
    async with JetStreamPubSub({"natsURL": small_server.url}) as ps:
        await ensure_stream(ps, "SMALL", ["small"])
        with pytest.raises(Exception, match=r"1024") as info:
            await ps.publish("small", b"y" * 900)
        assert re.search(r"\b1\d{3}\b.*\b1024\b|\b1024\b.*\b1\d{3}\b", str(info.value))


NON_UTF8 = b"\xff\xfe\x00\x80 not utf-8 \xc3"


@pytest.mark.parametrize(
    "meta",
    [
        pytest.param(None, id="cloudevent-binary"),
        pytest.param({"contentType": "text/plain"}, id="cloudevent-text"),
        pytest.param({"contentType": "application/json"}, id="cloudevent-json"),
        pytest.param(RAW, id="raw"),
    ],
)
async def test_non_utf8_payloads_arrive_byte_for_byte(
    ps: JetStreamPubSub, meta: dict[str, str] | None
) -> None:
    got: list[Message] = []
    events: list[DeliveryEvent] = []
    ps.add_listener(events.append)
    sub = await ps.subscribe("h", got.append, metadata=RAW if meta == RAW else None)
    await ps.publish("h", NON_UTF8, metadata=meta)
    await eventually(lambda: got and events)
    assert got[0].data == NON_UTF8
    with pytest.raises(UnicodeDecodeError):
        got[0].text()
    assert "\ufffd" in events[0].as_row()["preview"], "tables show it, replacing bad bytes"
    await eventually(lambda: all_acked(sub, 1))


MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(b"{", id="truncated-object"),
    pytest.param(b'{"specversion": "1.0", "id": "x"', id="truncated-cloudevent"),
    pytest.param(b"[1, 2]", id="array"),
    pytest.param(b'"a string"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"id": "x", "data": 1}', id="no-specversion"),
    pytest.param(b'{"specversion": "1.0", "id": "x", "data_base64": "***"}', id="bad-base64"),
    pytest.param(b'{"specversion": "1.0", "id": "x", "data_base64": 5}', id="base64-not-text"),
    pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
    pytest.param(b'\xef\xbb\xbf{"specversion": "1.0", "id": "x"}', id="byte-order-mark"),
    pytest.param(b'{"specversion": "1.0", "id": "x"} trailing', id="trailing-garbage"),
]


@pytest.mark.parametrize("body", MALFORMED)
async def test_malformed_cloudevents_are_delivered_as_they_are(
    ps: JetStreamPubSub, body: bytes
) -> None:
    got: list[Message] = []
    sub = await ps.subscribe("h", got.append)
    await ps.nc.publish("h", body)  # a foreign publisher, not through the component
    await eventually(lambda: got)
    assert got[0].data == body and got[0].cloud_event is None
    await eventually(lambda: all_acked(sub, 1))


@pytest.mark.parametrize(
    ("event", "data"),
    [
        pytest.param({"data": {"a": 1}}, b'{"a":1}', id="object-data"),
        pytest.param({}, b"", id="no-data"),
        pytest.param({"data": None}, b"null", id="null-data"),
        pytest.param({"data": "t", "expiration": "whenever"}, b"t", id="bad-expiration"),
        pytest.param({"data": "t", "expiration": "2000-01-01T00:00:00"}, b"t", id="no-offset"),
    ],
)
async def test_odd_but_valid_cloudevents_have_defined_data(
    ps: JetStreamPubSub, event: dict[str, Any], data: bytes
) -> None:
    got: list[Message] = []
    sub = await ps.subscribe("h", got.append)
    await ps.nc.publish("h", orjson.dumps({"specversion": "1.0", "id": "x", **event}))
    await eventually(lambda: got)
    assert got[0].data == data and got[0].cloud_event is not None
    await eventually(lambda: all_acked(sub, 1))


HEADER_BLOCKS = [
    b"NATS/1.0\r\n\xff\xfe: \xff\r\n\r\n",  # a header name that is not ASCII
    b"NATS/1.0\r\nno colon here\r\n\r\n",
    b"NATS/1.0\r\nX-Value: caf\xc3\xa9 \xff\r\n\r\n",  # a value that is not UTF-8
    b"NATS/1.0 999 odd status\r\nA: b\r\n\r\n",
    b"NATS/1.0\r\n\r\n",
]


async def test_foreign_messages_with_malformed_headers_are_delivered(
    ps: JetStreamPubSub, nats_server: NatsServer
) -> None:
    got: list[Message] = []
    sub = await ps.subscribe("h", got.append, metadata=RAW)
    reader, writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\n')
        for i, block in enumerate(HEADER_BLOCKS):
            payload = b"foreign-%d" % i
            size = len(block) + len(payload)
            writer.write(b"HPUB h %d %d\r\n%s%s\r\n" % (len(block), size, block, payload))
        writer.write(b"PING\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    finally:
        writer.close()
        await writer.wait_closed()
    await eventually(lambda: len(got) == len(HEADER_BLOCKS))
    assert [m.data for m in got] == [b"foreign-%d" % i for i in range(len(HEADER_BLOCKS))]
    assert all(isinstance(v, str) for m in got for v in m.metadata.values())
    await eventually(lambda: all_acked(sub, len(HEADER_BLOCKS)))


async def test_hostile_publish_metadata_cannot_inject_headers(ps: JetStreamPubSub) -> None:
    got: list[Message] = []
    await ps.subscribe("h", got.append)
    with pytest.raises(nats.errors.BadHeaderError, match="bad key"):
        await ps.publish("h", "x", metadata={"bad key": "v"})
    await ps.publish("h", "y", metadata={"k": "v\r\nX-Evil: 1\r\n\r\nbody"})
    first = await ps.publish("h", "z", metadata={"cloudevent.id": "id\r\nX-Evil: 2"})
    again = await ps.publish("h", "z", metadata={"cloudevent.id": "id\r\nX-Evil: 2"})
    assert again.duplicate and again.seq == first.seq, "a CRLF id still de-duplicates"
    await eventually(lambda: len(got) == 2)
    assert [m.data for m in got] == [b"y", b"z"]
    assert all("X-Evil" not in m.metadata for m in got)
    assert got[0].metadata["k"].startswith("v ") and "\n" not in got[0].metadata["k"]


ODD_RETURNS: list[Any] = [None, False, 0, "RETRY", {"status": "DROP"}, ValueError("kept")]
ODD_RETURNS += [object(), [], b"nak"]


async def test_odd_handler_return_values_mean_success(ps: JetStreamPubSub) -> None:
    events: list[DeliveryEvent] = []
    ps.add_listener(events.append)
    sub = await ps.subscribe("h", lambda m: ODD_RETURNS[int(m.data)])
    for i in range(len(ODD_RETURNS)):
        await ps.publish("h", str(i))
    await eventually(lambda: all_acked(sub, len(ODD_RETURNS)))
    info = await sub.consumer_info()
    assert info.num_redelivered == 0
    assert [e.outcome for e in events] == [Outcome.ACK] * len(ODD_RETURNS)


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("parallel", id="parallel"),
        pytest.param(
            "single",
            id="single",
        ),
    ],
)
async def test_handler_raising_cancelled_error_fails_that_delivery_only(
    nats_server: NatsServer, mode: str
) -> None:
    ps = await make(nats_server, ackWait="1s", concurrencyMode=mode)
    try:
        await ensure_stream(ps, "HOSTILE", ["h"])
        handled: set[bytes] = set()

        async def handler(msg: Message) -> None:
            if msg.data == b"0" and msg.delivery.num_delivered == 1:
                raise asyncio.CancelledError
            handled.add(msg.data)

        await ps.subscribe("h", handler)
        for i in range(5):
            await ps.publish("h", str(i))
        await eventually(lambda: len(handled) == 5)
    finally:
        await ps.close()


@pytest.mark.parametrize(
    ("mode", "sync"),
    [
        pytest.param("single", False, id="single-async"),
        pytest.param("parallel", False, id="parallel-async"),
        pytest.param("parallel", True, id="parallel-sync-thread"),
    ],
)
async def test_hung_handler_is_redelivered_and_close_does_not_hang(
    nats_server: NatsServer, mode: str, sync: bool
) -> None:
    props = {"durableName": f"hang-{mode}", "ackWait": "1s"}
    ps = await make(nats_server, concurrencyMode=mode, **props)
    n = 10
    handled: set[int] = set()
    release = threading.Event()
    await ensure_stream(ps, "HOSTILE", ["h"])

    def hangs(msg: Message) -> bool:
        return msg.data == b"0" and msg.delivery.num_delivered == 1

    if sync:

        def handler(msg: Message) -> None:
            if hangs(msg):
                release.wait(30)
                return
            handled.add(int(msg.data))

    else:

        async def handler(msg: Message) -> None:
            if hangs(msg):
                await asyncio.Event().wait()
            handled.add(int(msg.data))

    try:
        sub = await ps.subscribe("h", handler)
        for i in range(n):
            await ps.publish("h", str(i))
        if mode == "parallel":
            # The hung attempt is redelivered after ackWait and handled by another run.
            await eventually(lambda: len(handled) == n)
        else:
            # One at a time: the hung handler holds the subscription back, nothing is acked.
            await eventually(lambda: sub.delivered == 1)
        # close(timeout=1) gives up on the hung handler (held for 30 s) instead of waiting.
        await asyncio.wait_for(ps.close(timeout=1), 20)
    finally:
        release.set()
        await ps.close()
    # Whatever was not acked goes to the next subscriber of the durable consumer.
    successor = await make(nats_server, **props)
    try:
        sub = await successor.subscribe("h", lambda m: handled.add(int(m.data)))
        await eventually(lambda: all_acked(sub, n))
        assert handled == set(range(n))
    finally:
        await successor.close()
