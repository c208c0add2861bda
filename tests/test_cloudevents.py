"""The CloudEvent envelope: Dapr's fields, metadata overrides and byte-exact round trips."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jsnb.cloudevents import Data, Incoming, Outgoing, normalize_metadata, unwrap, wrap
from jsnb.errors import MetadataError

TOPIC = "orders"
PUBSUB = "pubsub"
RFC3339_MICROS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# What `dapr publish` puts on the stream: Go's json.Marshal sorts the keys.
DAPR_EVENT = (
    b'{"data":{"a":1},"datacontenttype":"application/json",'
    b'"id":"5929aaac-a5e2-4ca1-859c-edfe73f11565","pubsubname":"pubsub","source":"app",'
    b'"specversion":"1.0","time":"2026-11-27T02:05:48Z","topic":"orders",'
    b'"traceid":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",'
    b'"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",'
    b'"tracestate":"","type":"com.dapr.event.sent"}'
)


def envelope(data: Data = b"x", **metadata: str) -> dict[str, Any]:
    return orjson.loads(wrap(data, topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata).payload)


def expected_bytes(data: Data) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    return orjson.dumps(data)


def ce(**fields: Any) -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": "e1", **fields})


# -- publish: envelope fields --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("source", "jsnb", id="source"),
        pytest.param("type", "com.dapr.event.sent", id="type"),
        pytest.param("specversion", "1.0", id="specversion"),
        pytest.param("datacontenttype", "application/octet-stream", id="datacontenttype"),
        pytest.param("topic", TOPIC, id="topic"),
        pytest.param("pubsubname", PUBSUB, id="pubsubname"),
    ],
)
def test_field_default(name: str, expected: str) -> None:
    assert envelope()[name] == expected


def test_id_defaults_to_a_fresh_uuid4() -> None:
    ids = [envelope()["id"] for _ in range(500)]
    assert len(set(ids)) == len(ids)
    for event_id in ids:
        parsed = uuid.UUID(event_id)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == event_id


def test_time_defaults_to_now_in_rfc3339_utc() -> None:
    before = datetime.now(UTC)
    stamp = envelope()["time"]
    assert RFC3339_MICROS.fullmatch(stamp)
    assert before <= datetime.fromisoformat(stamp) <= datetime.now(UTC)


@pytest.mark.parametrize(
    "name", ["traceid", "traceparent", "tracestate", "subject", "expiration", "data"]
)
def test_optional_field_absent_by_default(name: str) -> None:
    assert name not in envelope(b"x")


def test_source_argument_sets_source() -> None:
    out = wrap(b"x", topic=TOPIC, pubsub_name=PUBSUB, source="checkout")
    assert orjson.loads(out.payload)["source"] == "checkout"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({"cloudevent.id": "order-7"}, {"id": "order-7"}, id="id"),
        pytest.param({"cloudevent.source": "billing"}, {"source": "billing"}, id="source"),
        pytest.param({"cloudevent.type": "order.created"}, {"type": "order.created"}, id="type"),
        pytest.param({"cloudevent.subject": "order/7"}, {"subject": "order/7"}, id="subject"),
        pytest.param({"cloudevent.tracestate": "k=v"}, {"tracestate": "k=v"}, id="tracestate"),
        pytest.param(
            {"cloudevent.traceparent": TRACEPARENT},
            {"traceparent": TRACEPARENT, "traceid": TRACEPARENT},
            id="traceparent-sets-traceid-too",
        ),
        pytest.param(
            {"cloudevent.traceid": TRACEPARENT},
            {"traceparent": TRACEPARENT, "traceid": TRACEPARENT},
            id="traceid-sets-traceparent-too",
        ),
        pytest.param(
            {"cloudevent.traceid": "00-old", "cloudevent.traceparent": TRACEPARENT},
            {"traceparent": TRACEPARENT, "traceid": TRACEPARENT},
            id="traceparent-wins-over-traceid",
        ),
        pytest.param({"CloudEvent.ID": "order-7"}, {"id": "order-7"}, id="key-case-ignored"),
        pytest.param(
            {"contentType": "text/csv"}, {"datacontenttype": "text/csv"}, id="content-type"
        ),
    ],
)
def test_metadata_overrides_field(metadata: dict[str, str], expected: dict[str, str]) -> None:
    event = envelope(b"x", **metadata)
    assert {name: event[name] for name in expected} == expected


def test_empty_override_keeps_the_default() -> None:
    event = envelope(b"x", **{"cloudevent.id": "", "cloudevent.source": "", "contentType": ""})
    assert uuid.UUID(event["id"]).version == 4
    assert event["source"] == "jsnb"
    assert event["datacontenttype"] == "application/octet-stream"


# -- publish: where the data goes ----------------------------------------------------------

B64 = "data_base64"
JSON = "application/json"


@pytest.mark.parametrize(
    ("data", "content_type", "datacontenttype", "field", "value"),
    [
        pytest.param({"a": [1, "é"]}, None, "application/json", "data", {"a": [1, "é"]}, id="dict"),
        pytest.param([1, 2.5, None], None, "application/json", "data", [1, 2.5, None], id="list"),
        pytest.param(42, None, "application/json", "data", 42, id="int"),
        pytest.param(2.5, None, "application/json", "data", 2.5, id="float"),
        pytest.param(True, None, "application/json", "data", True, id="bool"),
        pytest.param(None, None, "application/json", "data", None, id="none"),
        pytest.param("héllo", None, "text/plain", "data", "héllo", id="str"),
        pytest.param("<b>hi</b>", "text/html", "text/html", "data", "<b>hi</b>", id="str-as-html"),
        pytest.param(
            '{"a":1}', "application/json", "application/json", "data", {"a": 1}, id="str-as-json"
        ),
        pytest.param(
            b"\x00\xff", None, "application/octet-stream", B64, "AP8=", id="bytes-default-binary"
        ),
        pytest.param(
            bytearray(b"\x00\xff"), None, "application/octet-stream", B64, "AP8=", id="bytearray"
        ),
        pytest.param(
            memoryview(b"\x00\xff"), None, "application/octet-stream", B64, "AP8=", id="memoryview"
        ),
        pytest.param(b"\x89PNG", "image/png", "image/png", B64, "iVBORw==", id="bytes-other-type"),
        pytest.param(
            b'{"a":1}',
            "application/json",
            "application/json",
            "data",
            {"a": 1},
            id="canonical-json",
        ),
        pytest.param(
            b'{"a":1}',
            "application/cloudevent-batch+json",
            "application/cloudevent-batch+json",
            "data",
            {"a": 1},
            id="plus-json-suffix",
        ),
        pytest.param(
            b"[1]",
            "Application/JSON; charset=utf-8",
            "Application/JSON; charset=utf-8",
            "data",
            [1],
            id="json-with-parameters",
        ),
        # As upstream, JSON text with a JSON type goes in `data` as JSON, however it is spelled.
        pytest.param(
            b'{"a": 1}', "application/json", "application/json", "data", {"a": 1}, id="spaced-json"
        ),
        pytest.param(
            '[1, {"b" : null}]\n',
            "application/json",
            "application/json",
            "data",
            [1, {"b": None}],
            id="spaced-json-str",
        ),
        pytest.param(
            b'{"a":1}',
            "application/problem+json",
            "application/problem+json",
            "data",
            {"a": 1},
            id="plus-json-bytes",
        ),
        pytest.param(
            b"1e3",
            "application/json",
            "application/json",
            "data",
            1000.0,
            id="json-number-spelling",
        ),
        pytest.param(b'"hi"', "application/json", "application/json", "data", "hi", id="json-str"),
        # Not JSON: upstream would send a JSON string that reads back quoted; keep the bytes.
        pytest.param(
            b"{oops", "application/json", "application/json", B64, "e29vcHM=", id="bad-json"
        ),
        pytest.param("hi", "application/json", "application/json", B64, "aGk=", id="str-not-json"),
        pytest.param(b"caf\xc3\xa9", "text/plain", "text/plain", "data", "café", id="utf8-text"),
        pytest.param(b"\xff", "text/plain", "text/plain", B64, "/w==", id="text-not-utf8"),
        pytest.param({"a": 1}, "text/plain", "text/plain", "data", '{"a":1}', id="dict-as-text"),
        pytest.param(
            {"a": 1},
            "application/octet-stream",
            "application/octet-stream",
            B64,
            "eyJhIjoxfQ==",
            id="dict-as-binary",
        ),
    ],
)
def test_data_placement(
    data: Data, content_type: str | None, datacontenttype: str, field: str, value: Any
) -> None:
    metadata = {"contentType": content_type} if content_type else {}
    out = wrap(data, topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata)
    event = orjson.loads(out.payload)
    assert event["datacontenttype"] == datacontenttype
    assert event[field] == value
    assert (B64 if field == "data" else "data") not in event
    assert unwrap(out.payload).data == expected_bytes(data)


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({}, id="no-ttl"),
        pytest.param({"ttlInSeconds": "60"}, id="with-ttl"),
        pytest.param({"cloudevent.subject": "s"}, id="with-override"),
    ],
)
@pytest.mark.parametrize(
    "text",
    [
        pytest.param(b'{"a": [1, 2]}\n', id="spaced"),
        pytest.param(b'{"n":123456789012345678901234567890}', id="big-int-kept-exact"),
        pytest.param(b'{"data": {"data":1}}', id="holds-data-keys"),
        pytest.param(b' "\\u00e9"', id="escaped-str"),
    ],
)
def test_json_text_travels_verbatim(text: bytes, metadata: dict[str, str]) -> None:
    out = wrap(text, topic=TOPIC, pubsub_name=PUBSUB, metadata={**metadata, "contentType": JSON})
    # Dapr's subscribers parse the envelope and find the JSON in `data`...
    assert json.loads(out.payload)["data"] == json.loads(text)
    # ...and jsnb's get the very bytes back, however orjson would spell them.
    assert out.payload.endswith(b'"data":' + text + b"}")
    assert unwrap(out.payload).data == text


@pytest.mark.parametrize(
    ("payload", "data"),
    [
        pytest.param(
            b'{"specversion":"1.0","id":"e","data":{"a": 1}}', b'{"a": 1}', id="data-last"
        ),
        pytest.param(
            b'{"data":{"a": 1},"specversion":"1.0","id":"e"}', b'{"a":1}', id="data-first-as-go"
        ),
        pytest.param(
            b'{"specversion":"1.0","id":"e","x":{"data":2},"data":{"a": 1}}',
            b'{"a":1}',
            id="earlier-member-holds-data",
        ),
        pytest.param(
            b'{"specversion":"1.0","id":"e","x\\"data":2,"data":{"a": 1}}',
            b'{"a":1}',
            id="earlier-key-ends-in-data",
        ),
        pytest.param(
            b'{"specversion":"1.0","id":"e","data":1,"data":{"a": 1}}',
            b'{"a":1}',
            id="duplicate-data",
        ),
        pytest.param(
            b'{"specversion":"1.0","id":"e","data":{"a": 1}} ', b'{"a":1}', id="trailing-space"
        ),
    ],
)
def test_unwrap_json_text(payload: bytes, data: bytes) -> None:
    """The JSON text as it ends the envelope, else its compact re-encoding: never another member."""
    assert unwrap(payload).data == data


# -- publish: ttl --------------------------------------------------------------------------


def test_ttl_sets_expiration() -> None:
    before = datetime.now(UTC)
    event = envelope(b"x", ttlInSeconds="60")
    assert RFC3339_MICROS.fullmatch(event["expiration"])
    expiration = datetime.fromisoformat(event["expiration"])
    assert before + timedelta(seconds=60) <= expiration <= datetime.now(UTC) + timedelta(seconds=60)
    assert expiration - datetime.fromisoformat(event["time"]) == timedelta(seconds=60)


def test_unexpired_ttl_is_not_expired() -> None:
    out = wrap(b"x", topic=TOPIC, pubsub_name=PUBSUB, metadata={"TTLInSeconds": "60"})
    assert unwrap(out.payload).expired is False


@pytest.mark.parametrize(
    ("expiration", "expired"),
    [
        pytest.param("2000-01-01T00:00:00Z", True, id="past-dapr-format"),
        pytest.param("2000-01-01T00:00:00.123456789Z", True, id="past-nanoseconds"),
        pytest.param("2000-01-01T02:00:00+02:00", True, id="past-with-offset"),
        pytest.param("2999-01-01T00:00:00Z", False, id="future"),
        pytest.param("2000-01-01T00:00:00", False, id="no-offset-never-expires"),
        pytest.param("yesterday", False, id="not-a-time"),
        pytest.param("", False, id="empty"),
        pytest.param(946684800, False, id="not-a-string"),
    ],
)
def test_expired_detection(expiration: Any, expired: bool) -> None:
    assert unwrap(ce(data="x", expiration=expiration)).expired is expired


def test_no_expiration_is_not_expired() -> None:
    assert unwrap(ce(data="x")).expired is False


# -- publish: rawPayload -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "t", "1", " true "])
def test_raw_payload_true_sends_data_as_is(value: str) -> None:
    out = wrap(b"\x00bin", topic=TOPIC, pubsub_name=PUBSUB, metadata={"rawPayload": value})
    assert out.payload == b"\x00bin"
    assert out.content_type == "application/octet-stream"


@pytest.mark.parametrize("value", ["false", "False", "f", "0", ""])
def test_raw_payload_false_wraps(value: str) -> None:
    out = wrap(b"x", topic=TOPIC, pubsub_name=PUBSUB, metadata={"RAWPAYLOAD": value})
    assert out.content_type == "application/cloudevents+json"
    assert orjson.loads(out.payload)["data_base64"] == "eA=="


@pytest.mark.parametrize(
    ("data", "metadata", "payload", "content_type"),
    [
        pytest.param(b"\x00", {}, b"\x00", "application/octet-stream", id="bytes"),
        pytest.param("héllo", {}, "héllo".encode(), "text/plain", id="str"),
        pytest.param({"a": 1}, {}, b'{"a":1}', "application/json", id="dict"),
        pytest.param([1], {}, b"[1]", "application/json", id="list"),
        pytest.param(
            b"a,b", {"contentType": "text/csv"}, b"a,b", "text/csv", id="content-type-kept"
        ),
        pytest.param(
            b"x", {"ttlInSeconds": "5"}, b"x", "application/octet-stream", id="ttl-ignored"
        ),
    ],
)
def test_raw_payload(
    data: Data, metadata: dict[str, str], payload: bytes, content_type: str
) -> None:
    out = wrap(data, topic=TOPIC, pubsub_name=PUBSUB, metadata={"rawPayload": "true", **metadata})
    assert out.payload == payload
    assert out.content_type == content_type
    assert unwrap(out.payload, raw=True) == Incoming(payload)


# -- publish: application/cloudevents+json -------------------------------------------------

CE_TYPE = "application/cloudevents+json"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"data": {"a": 1}}, id="dict"),
        pytest.param(b'{"data":{"a":1}}', id="bytes"),
        pytest.param('{"data":{"a":1}}', id="str"),
    ],
)
def test_cloudevent_missing_fields_filled(data: Data) -> None:
    event = envelope(data, contentType=CE_TYPE)
    assert uuid.UUID(event["id"]).version == 4
    assert RFC3339_MICROS.fullmatch(event["time"])
    assert {k: event[k] for k in ("source", "type", "specversion", "topic", "pubsubname")} == {
        "source": "jsnb",
        "type": "com.dapr.event.sent",
        "specversion": "1.0",
        "topic": TOPIC,
        "pubsubname": PUBSUB,
    }
    assert event["data"] == {"a": 1}
    assert "datacontenttype" not in event


def test_cloudevent_existing_fields_kept() -> None:
    mine = {
        "id": "evt-1",
        "source": "billing",
        "type": "invoice.paid",
        "specversion": "1.0",
        "time": "2026-01-01T00:00:00Z",
        "subject": "invoice/9",
        "datacontenttype": "application/xml",
        "data": "<paid/>",
        "custom": {"nested": True},
    }
    out = wrap(
        mine,
        topic=TOPIC,
        pubsub_name=PUBSUB,
        metadata={"contentType": CE_TYPE, "cloudevent.id": "other", "cloudevent.type": "other"},
    )
    event = orjson.loads(out.payload)
    assert event == {**mine, "topic": TOPIC, "pubsubname": PUBSUB}
    assert out.msg_id == "evt-1"
    assert "topic" not in mine  # the caller's dict is left alone


def test_cloudevent_overrides_fill_gaps() -> None:
    event = envelope(
        {"data": 1}, contentType=CE_TYPE, **{"cloudevent.id": "retry-1", "cloudevent.subject": "s"}
    )
    assert (event["id"], event["subject"]) == ("retry-1", "s")


def test_cloudevent_topic_is_where_it_is_published() -> None:
    event = envelope({"topic": "elsewhere", "pubsubname": "other"}, contentType=CE_TYPE)
    assert (event["topic"], event["pubsubname"]) == (TOPIC, PUBSUB)


def test_cloudevent_gets_expiration() -> None:
    assert "expiration" in envelope({"id": "e"}, contentType=CE_TYPE, ttlInSeconds="5")


# -- publish: bad metadata -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "metadata", "key", "shown"),
    [
        pytest.param(b"x", {"rawPayload": "maybe"}, "rawPayload", "'maybe'", id="raw-not-bool"),
        pytest.param(b"x", {"rawpayload": "yes"}, "rawPayload", "'yes'", id="raw-yes-as-go"),
        pytest.param(b"x", {"ttlInSeconds": "abc"}, "ttlInSeconds", "'abc'", id="ttl-not-int"),
        pytest.param(b"x", {"ttlInSeconds": "1.5"}, "ttlInSeconds", "'1.5'", id="ttl-fraction"),
        pytest.param(b"x", {"ttlInSeconds": "0"}, "ttlInSeconds", "'0'", id="ttl-zero"),
        pytest.param(b"x", {"ttlInSeconds": "-5"}, "ttlInSeconds", "'-5'", id="ttl-negative"),
        pytest.param(b"x", {"ttlInSeconds": "1_0"}, "ttlInSeconds", "'1_0'", id="ttl-underscore"),
        pytest.param(
            b"x", {"ttlInSeconds": "9" * 20}, "ttlInSeconds", "9" * 20, id="ttl-too-large"
        ),
        pytest.param([1], {"contentType": CE_TYPE}, "contentType", CE_TYPE, id="ce-list"),
        pytest.param(b"[1]", {"contentType": CE_TYPE}, "contentType", CE_TYPE, id="ce-json-array"),
        pytest.param(b"{oops", {"contentType": CE_TYPE}, "contentType", CE_TYPE, id="ce-bad-json"),
        pytest.param(7, {"contentType": CE_TYPE}, "contentType", CE_TYPE, id="ce-int"),
    ],
)
def test_bad_metadata(data: Data, metadata: dict[str, str], key: str, shown: str) -> None:
    with pytest.raises(MetadataError) as info:
        wrap(data, topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata)
    assert isinstance(info.value, ValueError)
    assert info.value.key == key
    assert key in str(info.value)
    assert shown in str(info.value)


# -- publish: headers and msg_id -----------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "check"),
    [
        pytest.param({"rawPayload": True}, lambda out: out.payload == b"x", id="raw-true"),
        pytest.param(
            {"rawPayload": False}, lambda out: out.payload.startswith(b"{"), id="raw-false"
        ),
        pytest.param(
            {"ttlInSeconds": 60}, lambda out: b'"expiration":' in out.payload, id="ttl-int"
        ),
        pytest.param({"cloudevent.id": 7}, lambda out: out.msg_id == "7", id="id-int-dedups"),
        pytest.param(
            {"x-retries": 3, "x-ok": False, "x-ratio": 0.5},
            lambda out: out.headers == {"x-retries": "3", "x-ok": "false", "x-ratio": "0.5"},
            id="headers",
        ),
    ],
)
def test_bool_int_float_metadata_written_as_dapr_text(
    metadata: dict[str, Any], check: Callable[[Outgoing], bool]
) -> None:
    assert check(wrap(b"x", topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata))


@pytest.mark.parametrize(
    ("metadata", "key", "what"),
    [
        pytest.param({"rawPayload": None}, "rawPayload", "NoneType", id="none"),
        pytest.param({"ttlInSeconds": [60]}, "ttlInSeconds", "list", id="list"),
        pytest.param({"cloudevent.id": {"v": 1}}, "cloudevent.id", "dict", id="dict"),
        pytest.param({"x-token": b"secret-bytes"}, "x-token", "bytes", id="bytes-value-unshown"),
        pytest.param({7: "x"}, "7", "int", id="key-not-str"),
    ],
)
def test_unusable_metadata_value_is_refused(metadata: Any, key: str, what: str) -> None:
    with pytest.raises(MetadataError, match=f"publish metadata.*{what}; expected a str") as info:
        wrap(b"x", topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata)
    assert info.value.key == key
    assert "secret" not in str(info.value)


def test_normalize_subscribe_metadata() -> None:
    meta = {"rawPayload": True, "deadLetterTopic": "dlq", "maxRetries": 3}
    assert normalize_metadata(meta, what="subscribe") == {
        "rawPayload": "true",
        "deadLetterTopic": "dlq",
        "maxRetries": "3",
    }
    assert normalize_metadata(None, what="subscribe") == {}
    with pytest.raises(MetadataError, match="subscribe metadata 'deadLetterTopic' is a NoneType"):
        normalize_metadata({"deadLetterTopic": None}, what="subscribe")


@pytest.mark.parametrize("raw", ["false", "true"])
def test_other_metadata_becomes_headers(raw: str) -> None:
    metadata = {
        "rawPayload": raw,
        "contentType": "text/plain",
        "ttlInSeconds": "5",
        "cloudevent.id": "e1",
        "CloudEvent.Subject": "s",
        "X-Tenant": "acme",
        "priority": "",
    }
    out = wrap("x", topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata)
    assert out.headers == {"X-Tenant": "acme", "priority": ""}


def test_no_metadata_no_headers() -> None:
    assert wrap(b"x", topic=TOPIC, pubsub_name=PUBSUB).headers == {}


RAW = {"rawPayload": "true"}


@pytest.mark.parametrize(
    ("data", "metadata", "msg_id"),
    [
        pytest.param(b"x", {"cloudevent.id": "retry-1"}, "retry-1", id="override"),
        pytest.param(b"\x00{", RAW, None, id="raw-binary"),
        pytest.param(b"plain", {**RAW, "cloudevent.id": "retry-1"}, "retry-1", id="raw-override"),
        pytest.param(ce(data=1), RAW, "e1", id="raw-cloudevent-bytes"),
        pytest.param(ce(data=1).decode(), RAW, "e1", id="raw-cloudevent-str"),
        pytest.param({"specversion": "1.0", "id": "e2"}, RAW, "e2", id="raw-cloudevent-dict"),
        pytest.param(ce(), {**RAW, "cloudevent.id": "retry-1"}, "e1", id="raw-cloudevent-wins"),
        pytest.param(b'{"id":"e3"}', RAW, None, id="raw-object-without-specversion"),
        pytest.param(b'{"id":7,"specversion":"1.0"}', RAW, None, id="raw-non-string-id"),
        pytest.param(
            b' {"id":"e4","specversion":"1.0"}', RAW, None, id="raw-not-starting-with-brace"
        ),
        pytest.param(b"{oops", RAW, None, id="raw-bad-json"),
        pytest.param([{"specversion": "1.0", "id": "e"}], RAW, None, id="raw-list"),
        pytest.param({"id": "e5"}, {"contentType": CE_TYPE}, "e5", id="cloudevent-content-type"),
        pytest.param({"id": 5}, {"contentType": CE_TYPE}, None, id="cloudevent-non-string-id"),
    ],
)
def test_msg_id(data: Data, metadata: dict[str, str], msg_id: str | None) -> None:
    assert wrap(data, topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata).msg_id == msg_id


def test_msg_id_is_the_envelope_id() -> None:
    out = wrap(b"x", topic=TOPIC, pubsub_name=PUBSUB)
    assert out.msg_id == orjson.loads(out.payload)["id"]


# -- subscribe: unwrap ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x01\xff", id="binary"),
        pytest.param(b"hello", id="text"),
        pytest.param(b'{"a":1}', id="json-object-not-cloudevent"),
        pytest.param(b'{"id":"e1","data":1}', id="no-specversion"),
        pytest.param(b'{"specversion":"1.0","data":1}', id="no-id"),
        pytest.param(b'[{"specversion":"1.0","id":"e1"}]', id="json-array"),
        pytest.param(b'"specversion"', id="json-string"),
        pytest.param(b'{"specversion":"1.0","id":"e1"', id="truncated"),
        pytest.param(b'{"specversion":"1.0","id":"e1"}\xff', id="trailing-garbage"),
        pytest.param(ce(data_base64="not base64!"), id="invalid-base64"),
        pytest.param(ce(data_base64="AP8"), id="unpadded-base64"),
        pytest.param(ce(data_base64=["AP8="]), id="base64-not-a-string"),
    ],
)
def test_unwrap_delivers_non_cloudevents_as_is(payload: bytes) -> None:
    assert unwrap(payload) == Incoming(payload)


@pytest.mark.parametrize(
    ("payload", "data"),
    [
        pytest.param(DAPR_EVENT, b'{"a":1}', id="dapr-json"),
        pytest.param(
            b'{"data":"hi","datacontenttype":"text/plain","id":"e","specversion":"1.0"}',
            b"hi",
            id="dapr-text",
        ),
        pytest.param(
            b'{"data_base64":"AP8=","datacontenttype":"application/octet-stream",'
            b'"id":"e","specversion":"1.0"}',
            b"\x00\xff",
            id="dapr-binary",
        ),
        pytest.param(
            b'\n {"data":{"b" : [1, 2]},"id":"e","specversion":"1.0"}',
            b'{"b":[1,2]}',
            id="whitespace-no-content-type",
        ),
        pytest.param(ce(data="hi", datacontenttype="application/json"), b'"hi"', id="json-string"),
        pytest.param(ce(data="hi"), b"hi", id="string-no-content-type"),
        pytest.param(ce(data=None, datacontenttype="application/json"), b"null", id="json-null"),
        pytest.param(ce(data=[1], datacontenttype="text/plain"), b"[1]", id="non-string-as-text"),
        pytest.param(ce(), b"", id="no-data"),
        pytest.param(ce(data_base64=""), b"", id="empty-base64"),
    ],
)
def test_unwrap_cloudevent(payload: bytes, data: bytes) -> None:
    incoming = unwrap(payload)
    assert incoming.data == data
    assert incoming.cloud_event == orjson.loads(payload)
    assert incoming.expired is False


def test_unwrap_dapr_event_keeps_its_fields() -> None:
    event = unwrap(DAPR_EVENT).cloud_event
    assert event is not None
    assert (event["source"], event["traceparent"], event["tracestate"]) == ("app", TRACEPARENT, "")


def test_unwrap_raw_passes_everything_through() -> None:
    assert unwrap(DAPR_EVENT, raw=True) == Incoming(DAPR_EVENT)


# -- round trips ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.example+json",
        "text/plain",
        "text/html; charset=utf-8",
        "application/octet-stream",
        "image/png",
    ]
)
payloads = st.one_of(
    st.binary(),
    st.text(),
    json_values,
    st.builds(orjson.dumps, json_values),
    # Valid JSON that orjson would spell differently: must come back unchanged.
    st.builds(lambda v: json.dumps(v, indent=1).encode(), json_values),
)


@given(data=payloads, content_type=content_types)
def test_round_trip(data: Data, content_type: str | None) -> None:
    metadata = {"contentType": content_type} if content_type else None
    out = wrap(data, topic=TOPIC, pubsub_name=PUBSUB, metadata=metadata)
    incoming = unwrap(out.payload)
    assert incoming.data == expected_bytes(data)
    assert incoming.cloud_event is not None
    assert incoming.cloud_event["id"] == out.msg_id


@given(data=payloads)
def test_raw_round_trip(data: Data) -> None:
    out = wrap(data, topic=TOPIC, pubsub_name=PUBSUB, metadata={"rawPayload": "true"})
    assert out.payload == expected_bytes(data)
    assert unwrap(out.payload, raw=True).data == out.payload


@given(payload=st.binary())
def test_unwrap_never_raises_on_bytes(payload: bytes) -> None:
    assert isinstance(unwrap(payload).data, bytes)


@given(
    event=st.dictionaries(
        st.sampled_from(
            ["specversion", "id", "data", "data_base64", "datacontenttype", "expiration"]
        ),
        json_values | st.text(alphabet="0123456789:+-TZ.=/AP8"),
    )
)
def test_unwrap_never_raises_on_cloudevent_like_objects(event: dict[str, Any]) -> None:
    assert isinstance(unwrap(orjson.dumps(event)).data, bytes)


def test_base64_field_decodes_exactly() -> None:
    blob = bytes(range(256))
    payload = ce(data_base64=base64.b64encode(blob).decode())
    assert unwrap(payload).data == blob
