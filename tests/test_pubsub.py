"""The component against a real nats-server: publish, subscribe, ack, redelivery, close."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

import nats
import pytest

import jsnb
from jsnb import (
    BulkMessageEntry,
    ComponentClosedError,
    JetStreamPubSub,
    Message,
    Outcome,
    StreamNotFoundError,
    ensure_stream,
)
from jsnb.consumer import ConsumerConflictError
from jsnb.pubsub import NO_RESPONDERS_RETRIES, NO_RESPONDERS_WAIT
from tests.support import Recorder, eventually, make

pytestmark = pytest.mark.streams(ORDERS=["orders", "orders.>", "dlq"])


# -- round trips --------------------------------------------------------------------

PAYLOADS = [
    pytest.param(b"\x00\xffbinary\x80", b"\x00\xffbinary\x80", id="binary"),
    pytest.param("h\u00e9llo", "h\u00e9llo".encode(), id="text"),
    pytest.param(
        {"id": 7, "items": ["a", "\u00fc"]}, b'{"id":7,"items":["a","\xc3\xbc"]}', id="json-object"
    ),
    pytest.param([1, 2.5, None], b"[1,2.5,null]", id="json-list"),
    pytest.param(b'{"spaced": 1}', b'{"spaced": 1}', id="json-looking-bytes"),
]


@pytest.mark.parametrize(("payload", "expected"), PAYLOADS)
@pytest.mark.parametrize("raw", [False, True], ids=["cloudevents", "raw"])
async def test_round_trip(ps: JetStreamPubSub, payload: Any, expected: bytes, raw: bool) -> None:
    meta = {"rawPayload": "true"} if raw else None
    got: list[Message] = []
    await ps.subscribe("orders", got.append, metadata=meta)
    result = await ps.publish("orders", payload, metadata=meta)
    assert result.stream == "ORDERS" and result.seq == 1 and not result.duplicate
    await eventually(lambda: got)
    assert got[0].data == expected
    assert got[0].metadata["Topic"] == "orders"
    if raw:
        assert got[0].cloud_event is None
    else:
        ce = got[0].cloud_event
        assert ce is not None
        assert ce["type"] == "com.dapr.event.sent" and ce["specversion"] == "1.0"
        assert ce["topic"] == "orders" and ce["id"] == result.msg_id


async def test_non_cloudevent_payload_delivered_as_is(ps: JetStreamPubSub) -> None:
    got: list[Message] = []
    await ps.subscribe("orders", got.append)
    await ps.nc.publish("orders", b'{"not": "a cloud event"}')
    await ps.nc.publish("orders", b"\xff\xfe not json")
    await eventually(lambda: len(got) == 2)
    assert [m.data for m in got] == [b'{"not": "a cloud event"}', b"\xff\xfe not json"]
    assert all(m.cloud_event is None for m in got)


async def test_wildcard_topic_reports_actual_subject(ps: JetStreamPubSub) -> None:
    got: list[Message] = []
    await ps.subscribe("orders.*", got.append)
    await ps.publish("orders.eu", "x")
    await eventually(lambda: got)
    assert got[0].topic == "orders.*"
    assert got[0].metadata["Topic"] == "orders.eu"


async def test_publish_metadata_becomes_headers(ps: JetStreamPubSub) -> None:
    got: list[Message] = []
    await ps.subscribe("orders", got.append)
    await ps.publish("orders", "x", metadata={"tenant": "acme", "cloudevent.source": "shop"})
    await eventually(lambda: got)
    assert got[0].metadata["tenant"] == "acme"
    assert got[0].cloud_event is not None and got[0].cloud_event["source"] == "shop"


async def test_republished_cloudevent_id_is_deduplicated(ps: JetStreamPubSub) -> None:
    first = await ps.publish("orders", {"n": 1}, metadata={"cloudevent.id": "order-1"})
    again = await ps.publish("orders", {"n": 1}, metadata={"cloudevent.id": "order-1"})
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    info = await ps.stream_info("ORDERS")
    assert info.state.messages == 1


@pytest.mark.parametrize(
    ("payload", "content_type", "field", "value"),
    [
        pytest.param(
            b'{"spaced": [1, 2]}\n', "application/json", "data", {"spaced": [1, 2]}, id="bytes"
        ),
        pytest.param('{"n": 1.50}', "application/json", "data", {"n": 1.5}, id="str"),
        pytest.param(b"[1, 2]", "application/problem+json", "data", [1, 2], id="plus-json"),
        pytest.param(b"not json", "application/json", "data_base64", "bm90IGpzb24=", id="not-json"),
    ],
)
async def test_json_content_type_round_trip(
    ps: JetStreamPubSub, payload: str | bytes, content_type: str, field: str, value: Any
) -> None:
    got: list[Message] = []
    await ps.subscribe("orders", got.append)
    await ps.publish("orders", payload, metadata={"contentType": content_type})
    await eventually(lambda: got)
    # What a Dapr subscriber reads: the JSON itself in `data`, as Dapr's runtime publishes it.
    ce = got[0].cloud_event
    assert ce is not None and ce[field] == value and ce["datacontenttype"] == content_type
    assert got[0].data == (payload.encode() if isinstance(payload, str) else payload)


async def test_non_string_publish_metadata_is_sent_as_text(ps: JetStreamPubSub) -> None:
    got: list[Message] = []
    await ps.subscribe("orders", got.append)
    meta = {"cloudevent.id": 7, "ttlInSeconds": 60, "x-retries": 3, "x-urgent": True}
    first = await ps.publish("orders", "x", metadata=meta)
    again = await ps.publish("orders", "x", metadata=meta)
    assert first.msg_id == "7" and again.duplicate and again.seq == first.seq
    await ps.publish("orders", b"raw", metadata={"rawPayload": True})
    await eventually(lambda: len(got) == 2)
    assert (got[0].metadata["x-retries"], got[0].metadata["x-urgent"]) == ("3", "true")
    assert got[0].cloud_event is not None and "expiration" in got[0].cloud_event
    assert got[1].data == b"raw" and got[1].cloud_event is None
    with pytest.raises(jsnb.MetadataError, match="publish metadata 'x-retries' is a NoneType"):
        await ps.publish("orders", "x", metadata={"x-retries": None})


async def test_publish_without_stream_says_how_to_fix(ps: JetStreamPubSub) -> None:
    with pytest.raises(
        StreamNotFoundError, match=r"ensure_stream\(ps, 'MYSTREAM', \['nowhere'\]\)"
    ):
        await ps.publish("nowhere", "x")


async def test_no_responders_is_tried_again_first_as_nats_go_does(ps: JetStreamPubSub) -> None:
    # A new stream's interest reaches other nodes a moment later, so "no responders" is
    # retried before jsnb says why (a lower bound: a slow machine only adds to it).
    started = time.monotonic()
    with pytest.raises(StreamNotFoundError):
        await ps.publish("nowhere", "x")
    assert time.monotonic() - started >= NO_RESPONDERS_RETRIES * NO_RESPONDERS_WAIT


async def test_subscribe_without_stream_says_how_to_fix(ps: JetStreamPubSub) -> None:
    with pytest.raises(StreamNotFoundError, match="no JetStream stream captures subject"):
        await ps.subscribe("nowhere", print)


@pytest.mark.parametrize("topic", ["", "a b", "orders.*", "a..b", ".a"])
async def test_bad_publish_topics(ps: JetStreamPubSub, topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        await ps.publish(topic, "x")


# -- deliver policies and durables -----------------------------------------------------


async def _publish_n(ps: JetStreamPubSub, n: int, topic: str = "orders") -> list[int]:
    return [(await ps.publish(topic, f"m{i}")).seq for i in range(1, n + 1)]


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        pytest.param({}, [b"m1", b"m2", b"m3", b"m4"], id="all-default"),
        pytest.param({"deliverPolicy": "last"}, [b"m3", b"m4"], id="last"),
        pytest.param({"deliverPolicy": "new"}, [b"m4"], id="new"),
        pytest.param(
            {"deliverPolicy": "sequence", "startSequence": 2}, [b"m2", b"m3", b"m4"], id="sequence"
        ),
    ],
)
async def test_deliver_policies(
    ps: JetStreamPubSub, nats_server: Any, props: dict[str, Any], expected: list[bytes]
) -> None:
    await _publish_n(ps, 3)
    other = await make(nats_server, **props)
    try:
        got = Recorder()
        await other.subscribe("orders", got)
        await ps.publish("orders", "m4")
        await eventually(lambda: len(got.data) >= len(expected))
        assert got.data == expected
    finally:
        await other.close()


async def test_deliver_policy_time(ps: JetStreamPubSub, nats_server: Any) -> None:
    await _publish_n(ps, 2)
    # Stream timestamps have nanosecond precision; startTime is whole seconds.
    start = int(time.time()) + 1
    await eventually(lambda: time.time() >= start)
    await ps.publish("orders", "late")
    other = await make(nats_server, startTime=start)
    try:
        got = Recorder()
        await other.subscribe("orders", got)
        await eventually(lambda: got.data)
        assert got.data == [b"late"]
    finally:
        await other.close()


async def test_durable_survives_close_and_resumes(nats_server: Any) -> None:
    a = await make(nats_server, durableName="billing")
    await ensure_stream(a, "ORDERS", ["orders"])
    got = Recorder()
    await a.subscribe("orders", got)
    await _publish_n(a, 3)
    await eventually(lambda: len(got.data) == 3)
    await a.close()
    b = await make(nats_server, durableName="billing")
    try:
        info = await b.consumer_info("ORDERS", "billing")
        assert info.ack_floor.stream_seq == 3
        await b.publish("orders", "m4")
        await b.publish("orders", "m5")
        got2 = Recorder()
        await b.subscribe("orders", got2)
        await eventually(lambda: len(got2.data) == 2)
        assert got2.data == [b"m4", b"m5"]
    finally:
        await b.close()


async def test_a_stream_full_of_consumers_says_so(nats_server: Any) -> None:
    """nats-server's limit (1,000 per stream by default) comes back as a clear error."""
    async with await make(nats_server) as ps:
        await ps.jetstream.add_stream(name="FEW", subjects=["few.>"], max_consumers=2)
        await ps.subscribe("few.a", print)
        await ps.subscribe("few.b", print)
        with pytest.raises(jsnb.ConsumerLimitError, match=r"stream FEW refused .*'few\.c'"):
            await ps.subscribe("few.c", print)
        assert len(ps.subscriptions) == 2


async def test_ephemeral_consumer_removed_on_close(nats_server: Any) -> None:
    a = await make(nats_server)
    await ensure_stream(a, "ORDERS", ["orders"])
    sub = await a.subscribe("orders", print)
    name = sub.consumer
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        assert [c.name for c in await js.consumers_info("ORDERS")] == [name]
        await a.close()
        assert await js.consumers_info("ORDERS") == []
    finally:
        await nc.close()


async def test_live_durable_is_retuned(ps: JetStreamPubSub, nats_server: Any) -> None:
    a = await make(nats_server, durableName="tune", ackWait="30s", maxAckPending=10)
    await a.subscribe("orders", print)
    await a.close()
    b = await make(nats_server, durableName="tune", ackWait="2s", maxAckPending=3)
    try:
        sub = await b.subscribe("orders", print)
        info = await sub.consumer_info()
        assert info.config.ack_wait == pytest.approx(2.0)
        assert info.config.max_ack_pending == 3
    finally:
        await b.close()


async def test_durable_fixed_setting_conflict_lists_fields(
    ps: JetStreamPubSub, nats_server: Any
) -> None:
    a = await make(nats_server, durableName="fixed")
    await a.subscribe("orders", print)
    await a.close()
    b = await make(nats_server, durableName="fixed", deliverPolicy="new", ackPolicy="all")
    try:
        with pytest.raises(ConsumerConflictError, match=r"deliverPolicy .*ackPolicy "):
            await b.subscribe("orders", print)
    finally:
        await b.close()


async def test_one_durable_for_two_topics_is_a_clear_error(
    ps: JetStreamPubSub, nats_server: Any
) -> None:
    a = await make(nats_server, durableName="shared")
    try:
        await a.subscribe("orders.a", print)
        with pytest.raises(ConsumerConflictError, match=r"serves topic 'orders\.a'"):
            await a.subscribe("orders.b", print)
    finally:
        await a.close()


# -- queue groups and concurrency -------------------------------------------------------


async def test_queue_group_splits_work_without_duplicates(
    ps: JetStreamPubSub, nats_server: Any
) -> None:
    props = {"durableName": "workers", "queueGroupName": "workers"}
    a, b = await make(nats_server, **props), await make(nats_server, **props)
    try:
        got_a, got_b = Recorder(), Recorder()
        await a.subscribe("orders", got_a)
        await b.subscribe("orders", got_b)
        await _publish_n(ps, 200)
        await eventually(lambda: len(got_a.data) + len(got_b.data) >= 200)
        seen = Counter(got_a.data + got_b.data)
        assert len(seen) == 200 and max(seen.values()) == 1
        assert got_a.data and got_b.data, "both members should get work"
    finally:
        await a.close()
        await b.close()


async def test_single_mode_keeps_order(ps: JetStreamPubSub) -> None:
    got = Recorder()
    await ps.subscribe("orders", got)
    await _publish_n(ps, 50)
    await eventually(lambda: len(got.data) == 50)
    assert got.data == [f"m{i}".encode() for i in range(1, 51)]


async def test_parallel_mode_runs_handlers_concurrently(nats_server: Any) -> None:
    ps = await make(nats_server, concurrencyMode="parallel", maxAckPending=8)
    try:
        await ensure_stream(ps, "ORDERS", ["orders"])
        running = 0
        peak = 0
        done: list[bytes] = []
        release = asyncio.Event()

        async def handler(msg: Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
            done.append(msg.data)

        await ps.subscribe("orders", handler)
        await _publish_n(ps, 20)
        await eventually(lambda: peak >= 8)
        info = await ps.subscriptions[0].consumer_info()
        assert info.num_ack_pending == 8, "nothing is acked before its handler finished"
        assert peak == 8, "maxAckPending bounds the concurrency"
        release.set()
        await eventually(lambda: len(done) == 20)
        await eventually(lambda: _acked_all(ps, 20))
    finally:
        await ps.close()


async def _acked_all(ps: JetStreamPubSub, n: int) -> bool:
    info = await ps.subscriptions[0].consumer_info()
    return info.ack_floor.stream_seq == n and info.num_ack_pending == 0


async def test_parallel_mode_naks_failures(nats_server: Any) -> None:
    ps = await make(nats_server, concurrencyMode="parallel", backOff="50ms", maxDeliver=5)
    try:
        await ensure_stream(ps, "ORDERS", ["orders"])
        got = Recorder(fail_times=2)
        await ps.subscribe("orders", got)
        await _publish_n(ps, 10)
        await eventually(lambda: len(got.data) == 10)
        assert all(len(a) == 3 for a in got.attempts.values())
    finally:
        await ps.close()


async def test_ack_all_never_acks_past_an_unfinished_message(nats_server: Any) -> None:
    ps = await make(nats_server, concurrencyMode="parallel", ackPolicy="all", ackWait="30s")
    try:
        await ensure_stream(ps, "ORDERS", ["orders"])
        gate = asyncio.Event()
        handled: list[int] = []

        async def handler(msg: Message) -> None:
            if msg.delivery.stream_seq == 2:
                await gate.wait()
            handled.append(msg.delivery.stream_seq)

        sub = await ps.subscribe("orders", handler)
        await _publish_n(ps, 5)
        await eventually(lambda: len(handled) == 4)
        info = await sub.consumer_info()
        assert info.ack_floor.stream_seq == 1, "seq 2 is still running, so no ack covers it"
        gate.set()
        await eventually(lambda: _acked_all(ps, 5))
    finally:
        await ps.close()


# -- failure, redelivery, dead letters -------------------------------------------------


async def test_redelivery_follows_backoff(nats_server: Any) -> None:
    ps = await make(nats_server, backOff="200ms, 1s", maxDeliver=4)
    try:
        await ensure_stream(ps, "ORDERS", ["orders"])
        events: list[jsnb.DeliveryEvent] = []
        ps.add_listener(events.append)
        got = Recorder(fail_times=3)
        await ps.subscribe("orders", got)
        await ps.publish("orders", "x")
        await eventually(lambda: got.data)
        times = got.attempts[1]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # NAK delays come from backOff per attempt, the last value repeating.
        for gap, want in zip(gaps, [0.2, 1.0, 1.0], strict=True):
            # Half a second of slack for a busy machine still catches the server adding
            # backOff[n-1] - backOff[0] (0.8 s here) to the later delays.
            assert want * 0.8 <= gap <= want + 0.5, gaps
        outcomes = [e.outcome for e in events]
        assert outcomes == [Outcome.NAK, Outcome.NAK, Outcome.NAK, Outcome.ACK]
        assert [e.delay for e in events[:3]] == [0.2, 1.0, 1.0]
        assert [e.num_delivered for e in events] == [1, 2, 3, 4]
    finally:
        await ps.close()


async def test_ack_wait_expiry_redelivers_a_hung_handler(nats_server: Any) -> None:
    ps = await make(nats_server, ackWait="1s", concurrencyMode="parallel")
    try:
        await ensure_stream(ps, "ORDERS", ["orders"])
        starts: list[float] = []
        release = asyncio.Event()

        async def handler(msg: Message) -> None:
            starts.append(time.monotonic())
            if len(starts) == 1:
                await release.wait()  # hangs past ackWait

        await ps.subscribe("orders", handler)
        await ps.publish("orders", "x")
        await eventually(lambda: len(starts) == 2)
        assert 0.8 <= starts[1] - starts[0] <= 5.0
        release.set()
    finally:
        await ps.close()


async def test_max_deliver_then_dead_letter(ps: JetStreamPubSub, nats_server: Any) -> None:
    failing = await make(nats_server, maxDeliver=3, backOff="50ms")
    try:
        events: list[jsnb.DeliveryEvent] = []
        failing.add_listener(events.append)

        def always_fails(msg: Message) -> None:
            raise ValueError("boom")

        await failing.subscribe("orders", always_fails, metadata={"deadLetterTopic": "dlq"})
        dead: list[Message] = []
        await ps.subscribe("dlq", dead.append, metadata={"rawPayload": "true"})
        sent = await ps.publish("orders", {"order": 9})
        await eventually(lambda: dead)
        copy = dead[0]
        assert copy.metadata["Jsnb-Original-Subject"] == "orders"
        assert copy.metadata["Jsnb-Original-Sequence"] == str(sent.seq)
        assert copy.metadata["Jsnb-Delivery-Count"] == "3"
        assert "ValueError: boom" in copy.metadata["Jsnb-Last-Error"]
        assert jsnb.cloudevents.unwrap(copy.data).data == b'{"order":9}'
        await eventually(lambda: len(events) == 3)
        assert [e.outcome for e in events] == [Outcome.NAK, Outcome.NAK, Outcome.DEAD_LETTER]
    finally:
        await failing.close()


# -- bulk ----------------------------------------------------------------------------------


async def test_bulk_publish_reports_each_failure(ps: JetStreamPubSub) -> None:
    entries = [BulkMessageEntry(str(i), {"n": i}) for i in range(500)]
    entries.append(BulkMessageEntry("bad", "x", metadata={"rawPayload": "perhaps"}))
    resp = await ps.bulk_publish("orders", entries)
    assert [f.entry_id for f in resp.failed_entries] == ["bad"]
    assert "rawPayload" in str(resp.failed_entries[0].error)
    assert len(resp.results) == 500
    info = await ps.stream_info("ORDERS")
    assert info.state.messages == 500


async def test_bulk_publish_without_stream(ps: JetStreamPubSub) -> None:
    resp = await ps.bulk_publish("nowhere", [BulkMessageEntry("a", "x")])
    assert isinstance(resp.failed_entries[0].error, StreamNotFoundError)


async def test_bulk_subscribe_batches_and_settles_each_entry(nats_server: Any) -> None:
    # Without backOff a failed entry comes back after the consumer's ack wait.
    async with JetStreamPubSub({"natsURL": nats_server.url, "ackWait": "1s"}) as ps:
        await ensure_stream(ps, "ORDERS", ["orders"])
        await _bulk_batches_and_settles(ps)


async def _bulk_batches_and_settles(ps: JetStreamPubSub) -> None:
    batches: list[int] = []
    seen: Counter[bytes] = Counter()

    def handler(batch: list[Message]) -> dict[str, Exception | None]:
        batches.append(len(batch))
        out: dict[str, Exception | None] = {}
        for m in batch:
            seen[m.data] += 1
            # odd payloads fail on their first delivery only
            first = m.delivery.num_delivered == 1
            out[m.entry_id] = ValueError("odd") if first and int(m.data[1:]) % 2 else None
        return out

    await ps.bulk_subscribe("orders", handler, max_messages=10, max_await_ms=200)
    await ps.bulk_publish("orders", [BulkMessageEntry(str(i), f"m{i}") for i in range(1, 41)])
    await eventually(lambda: len(seen) == 40 and sum(seen.values()) == 60)
    assert max(batches) == 10 and len(batches) < 40
    await eventually(lambda: _acked_all(ps, 40))


# -- lifecycle ------------------------------------------------------------------------------


async def test_use_after_close_raises(nats_server: Any) -> None:
    ps = await make(nats_server)
    await ps.close()
    await ps.close()  # idempotent
    with pytest.raises(ComponentClosedError):
        await ps.publish("orders", "x")
    with pytest.raises(ComponentClosedError):
        await ps.subscribe("orders", print)


async def test_close_waits_for_running_handler(ps: JetStreamPubSub, nats_server: Any) -> None:
    other = await make(nats_server, durableName="slow")
    finished: list[bytes] = []

    async def slow(msg: Message) -> None:
        await asyncio.sleep(0.5)
        finished.append(msg.data)

    sub = await other.subscribe("orders", slow)
    await ps.publish("orders", "x")
    await eventually(lambda: sub.delivered == 1)
    await other.close()
    assert finished == [b"x"]
    info = await ps.consumer_info("ORDERS", "slow")
    assert info.ack_floor.stream_seq == 1


async def test_features_ping_and_metadata(ps: JetStreamPubSub) -> None:
    await ps.ping()
    assert jsnb.Feature.BULK_PUBLISH in ps.features()
    keys = {f.key for f in ps.component_metadata()}
    assert {"natsURL", "backOff", "deliverPolicy"} <= keys
    assert "connected" in repr(ps) and "<table" in ps._repr_html_()


async def test_embedded_server_is_shared_within_the_process() -> None:
    from jsnb.server import shared_server, stop_shared_server

    try:
        async with JetStreamPubSub({}) as a, JetStreamPubSub({"natsURL": "embedded"}) as b:
            assert a.server is b.server is shared_server()
            await ensure_stream(a, "E", ["e"])
            got = Recorder()
            await a.subscribe("e", got)
            await b.publish("e", "hi")
            await eventually(lambda: got.data == [b"hi"])
        assert shared_server().running, "closing a component leaves the shared server up"
    finally:
        stop_shared_server()
    assert a.server is not None and not a.server.running


async def test_unreachable_server_is_a_clear_error(unused_tcp_port: int) -> None:
    with pytest.raises(
        jsnb.ConnectError, match=f"cannot connect to nats://127.0.0.1:{unused_tcp_port}"
    ):
        await JetStreamPubSub().init({"natsURL": f"nats://127.0.0.1:{unused_tcp_port}"})


# -- outages --------------------------------------------------------------------------


async def _publish_retrying(ps: JetStreamPubSub, topic: str, data: str, msg_id: str) -> None:
    """A publisher that retries with the same CloudEvent id, so a retry is never stored twice."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await ps.publish(topic, data, metadata={"cloudevent.id": msg_id})
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "ephemeral"])
async def test_subscription_resumes_after_server_restart(nats_server: Any, durable: bool) -> None:
    props = {"durableName": "survivor"} if durable else {}
    ps = await make(nats_server, **props)
    try:
        await ensure_stream(ps, "ORDERS", ["orders"])
        got = Recorder()
        await ps.subscribe("orders", got)
        for i in range(1, 21):
            await _publish_retrying(ps, "orders", f"m{i}", f"id-{i}")
        await eventually(lambda: len(set(got.data)) == 20)
        nats_server.kill()
        nats_server.restart()
        for i in range(21, 41):
            await _publish_retrying(ps, "orders", f"m{i}", f"id-{i}")
        await eventually(lambda: len(set(got.data)) == 40, timeout=30)
        assert set(got.data) == {f"m{i}".encode() for i in range(1, 41)}
        info = await ps.stream_info("ORDERS")
        assert info.state.messages == 40, "retries reused their ids: nothing stored twice"
    finally:
        await ps.close()


async def test_second_plain_subscriber_on_active_durable_is_refused(
    ps: JetStreamPubSub, nats_server: Any
) -> None:
    a, b = await make(nats_server, durableName="solo"), await make(nats_server, durableName="solo")
    try:
        await a.subscribe("orders", print)
        # The old advice ("set the same queueGroupName") could never work: a live
        # consumer's queue group is fixed, so the error says what does.
        with pytest.raises(ConsumerConflictError, match="no queue group, which a live consumer"):
            await b.subscribe("orders", print)
        c = await make(nats_server, durableName="solo", queueGroupName="workers")
        try:
            with pytest.raises(ConsumerConflictError, match="queueGroupName"):
                await c.subscribe("orders", print)
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


async def test_expired_events_are_acked_not_handled(ps: JetStreamPubSub) -> None:
    events: list[jsnb.DeliveryEvent] = []
    ps.add_listener(events.append)
    got = Recorder()
    await ps.subscribe("orders", got)
    meta = {"ttlInSeconds": "1"}
    expired = jsnb.cloudevents.wrap("old", topic="orders", pubsub_name="p", metadata=meta)
    # an event whose expiration already passed: rewrite its expiration into the past
    body = jsnb.cloudevents.unwrap(expired.payload).cloud_event
    assert body is not None
    body["expiration"] = "2000-01-01T00:00:00Z"
    await ps.publish("orders", body, metadata={"contentType": "application/cloudevents+json"})
    await ps.publish("orders", "fresh", metadata=meta)
    await eventually(lambda: len(events) == 2)
    assert [e.outcome for e in events] == [Outcome.EXPIRED, Outcome.ACK]
    assert got.data == [b"fresh"]


async def test_server_without_jetstream_is_reported_at_init(tmp_path: Any) -> None:
    from jsnb.server import NatsServer

    server = NatsServer(store_dir=tmp_path / "s", extra_config="jetstream: disabled")
    with server, pytest.raises(jsnb.ConnectError, match="JetStream does not answer"):
        await JetStreamPubSub().init({"natsURL": server.url})


async def test_close_before_init_is_safe() -> None:
    ps = JetStreamPubSub()
    await ps.close()
    with pytest.raises(ComponentClosedError):
        await ps.init({"natsURL": "nats://127.0.0.1:1"})


async def test_subscription_state_is_a_displayable_record(ps: JetStreamPubSub) -> None:
    got = Recorder()
    sub = await ps.subscribe("orders", got)
    await _publish_n(ps, 3)
    await eventually(lambda: len(got.data) == 3)
    state = await eventually(lambda: _state_when_acked(sub, 3))
    assert state["deliverPolicy"] == "all" and state["ackPolicy"] == "explicit"
    assert "<th style='text-align:left'>num_ack_pending</th>" in state._repr_html_()


async def _state_when_acked(sub: Any, n: int) -> Any:
    state = await sub.state()
    return state if state["ack_floor_stream_seq"] == n else None


async def test_subscribe_raw_payload_flag_is_read_like_publish(ps: JetStreamPubSub) -> None:
    with pytest.raises(jsnb.MetadataError, match="rawPayload 'perhaps'"):
        await ps.subscribe("orders", print, metadata={"rawPayload": "perhaps"})


async def test_lifecycle_moves_one_way_and_a_failed_init_may_be_retried(
    nats_server: Any, tmp_path: Any
) -> None:
    from jsnb.server import NatsServer

    ps = JetStreamPubSub()
    assert ps.lifecycle is jsnb.Lifecycle.NEW
    plain = NatsServer(store_dir=tmp_path / "s", extra_config="jetstream: disabled")
    with plain, pytest.raises(jsnb.ConnectError):
        await ps.init({"natsURL": plain.url})
    assert ps.lifecycle is jsnb.Lifecycle.NEW  # nothing to undo: init may be called again
    await ps.init({"natsURL": nats_server.url})
    assert ps.lifecycle is jsnb.Lifecycle.OPEN and "connected" in repr(ps)
    with pytest.raises(jsnb.JsnbError, match="already called"):
        await ps.init()
    await ps.close()
    assert ps.lifecycle is jsnb.Lifecycle.CLOSED and "closed" in repr(ps)
    with pytest.raises(jsnb.ComponentClosedError):
        await ps.init()
