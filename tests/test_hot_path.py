"""What the consume hot path relies on (issue 15), each guarded here.

- A plain success is settled inline (``Dispatcher._deliver``), everything else
  through the general route (``_settle``); a listener adds the report. Both
  routes must end every delivery alike: checked with and without a listener,
  on the server's own counts, for each handler kind, mode and ack policy.
- ``Message`` parses its ack subject, metadata and CloudEvent ``data`` bytes
  on first access; what it returns must equal what eager parsing gave.
- A recreated ephemeral consumer resumes just past the newest *first*
  delivery, told by its ack subject's prefix without parsing every reply.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from nats.aio.msg import Msg

import jsnb
from jsnb.cloudevents import wrap
from jsnb.messages import Delivery, DeliveryEvent, Message, first_delivery_prefix
from jsnb.server import NatsServer
from tests.support import all_acked, eventually, make

COUNT = 6


def _handler(kind: str, calls: list[tuple[int, int]], fail_seq: int | None) -> Any:
    """A handler of *kind* that records (seq, delivery) and fails *fail_seq*'s first delivery."""

    def attempt(msg: Message) -> None:
        d = msg.delivery
        calls.append((d.stream_seq, d.num_delivered))
        if d.stream_seq == fail_seq and d.num_delivered == 1:
            raise RuntimeError("planned")

    if kind == "async":

        async def handle(msg: Message) -> None:
            attempt(msg)

        return handle
    if kind == "sync":
        return attempt

    async def later(msg: Message) -> None:
        attempt(msg)

    return lambda msg: later(msg)  # a sync callable handing back a coroutine


@pytest.mark.parametrize("listened", [False, True], ids=["plain", "listened"])
@pytest.mark.parametrize("kind", ["async", "sync", "returns-coroutine"])
@pytest.mark.parametrize("mode", ["single", "parallel"])
# (ackPolicy all redelivers what follows a NAK too: its failure case is the matrix's.)
@pytest.mark.parametrize(
    ("ack_policy", "fail_seq"),
    [("explicit", None), ("explicit", 3), ("all", None)],
    ids=["explicit-ok", "explicit-fail-once", "all-ok"],
)
async def test_both_routes_settle_alike(
    nats_server: NatsServer,
    listened: bool,
    kind: str,
    mode: str,
    ack_policy: str,
    fail_seq: int | None,
) -> None:
    # No backOff: the NAK asks for ackWait's delay; a held cumulative ack (ackPolicy
    # all, no failure here) waits well inside it, so nothing else is redelivered.
    props = {"ackPolicy": ack_policy, "ackWait": "1s", "maxDeliver": 3, "durableName": "hot"}
    props["concurrencyMode"] = mode
    async with await make(nats_server, **props) as ps:
        await jsnb.ensure_stream(ps, "HOT", ["hot"])
        events: list[DeliveryEvent] = []
        calls: list[tuple[int, int]] = []
        sub = await ps.subscribe("hot", _handler(kind, calls, fail_seq))
        if listened:
            sub.add_listener(events.append)
        for i in range(COUNT):
            await ps.publish("hot", {"i": i})
        await eventually(lambda: all_acked(sub, COUNT))
        expected = [(seq, 1) for seq in range(1, COUNT + 1)]
        if fail_seq is not None:
            expected.append((fail_seq, 2))
        assert sorted(calls) == sorted(expected)
        assert (sub.delivered, sub.acked, sub.failed) == (
            len(expected),
            COUNT,
            len(expected) - COUNT,
        )
        if listened:
            outcomes = sorted((e.stream_seq, e.num_delivered, e.outcome.value) for e in events)
            want = sorted((s, n, "nak" if (s, n) == (fail_seq, 1) else "ack") for s, n in expected)
            assert outcomes == want
        else:
            assert not events


@pytest.mark.parametrize("listened", [False, True], ids=["plain", "listened"])
async def test_cancelled_inside_the_handler_is_a_failure_on_both_routes(
    nats_server: NatsServer, listened: bool
) -> None:
    """A handler whose awaited work was cancelled failed (it is retried); it was not stopped."""
    async with await make(nats_server, backOff="50ms", maxDeliver=3) as ps:
        await jsnb.ensure_stream(ps, "HOT", ["hot"])
        calls: list[int] = []

        async def handle(msg: Message) -> None:
            calls.append(msg.delivery.num_delivered)
            if msg.delivery.num_delivered == 1:
                inner = asyncio.ensure_future(asyncio.sleep(10))
                inner.cancel()
                await inner

        sub = await ps.subscribe("hot", handle)
        if listened:
            sub.add_listener(lambda event: None)
        await ps.publish("hot", "x")
        await eventually(lambda: all_acked(sub, 1))
        assert calls == [1, 2] and (sub.acked, sub.failed) == (1, 1)


# -- Message: read on demand ----------------------------------------------------------------


def _msg(reply: str, data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(None, "orders.eu", reply, data, headers)  # type: ignore[arg-type]


V1 = "$JS.ACK.ORDERS.worker.2.41.57.1700000000123456789.9"
V2 = "$JS.ACK.hub.ACCHASH.ORDERS.worker.2.41.57.1700000000123456789.9"
V2_TOKEN = V2 + ".r4nd0m"  # nats-server may add a random last token


@pytest.mark.parametrize("reply", [V1, V2, V2_TOKEN], ids=["v1", "v2", "v2-token"])
def test_delivery_is_read_from_every_form_of_ack_subject(reply: str) -> None:
    d = Delivery.from_reply(reply)
    assert d is not None
    assert (d.stream_seq, d.consumer_seq, d.num_delivered, d.num_pending) == (41, 57, 2, 9)
    assert (d.stream, d.consumer) == ("ORDERS", "worker")
    assert d.timestamp.timestamp() == pytest.approx(1700000000.123456789)
    assert "timestamp=2023-11-14T22:13:20.123457+00:00" in repr(d)
    # A first delivery of the same consumer starts with the prefix; this one (2) does not.
    prefix = first_delivery_prefix(reply)
    assert prefix is not None and not reply.startswith(prefix)
    first = reply.replace(".worker.2.", ".worker.1.")
    assert first.startswith(prefix)
    assert not reply.replace(".worker.2.", ".worker.12.").startswith(prefix)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.ACK.S.C.x.1.1.1.0", "$JS.ACK.a.b"])
def test_not_an_ack_subject(reply: str) -> None:
    assert Delivery.from_reply(reply) is None
    message = Message("t", _msg(reply, b"x"), b"x")
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        _ = message.delivery


def test_message_reads_its_fields_on_demand() -> None:
    headers = {"Nats-Msg-Id": "id-1", "traceparent": "00-ab", "Topic": "forged"}
    message = Message("orders", _msg(V1, b"raw bytes", headers), b"raw bytes")
    assert message.data == b"raw bytes" and message.cloud_event is None
    assert message.metadata == {"traceparent": "00-ab", "Topic": "orders.eu"}
    assert message.metadata is message.metadata  # built once
    assert message.headers == headers
    assert message.entry_id == "57"
    assert message.delivery is message.delivery
    assert "stream_seq=41" in repr(message) and "raw bytes" in repr(message)


@pytest.mark.parametrize(
    "data",
    [{"a": 1}, {"a": [1, 2.5, None, "é"]}, 7, None, True],
    ids=["object", "nested", "number", "null", "bool"],
)
def test_cloud_event_data_is_what_was_published(data: Any) -> None:
    out = wrap(data, topic="orders", pubsub_name="p", source="s")
    d, event, expired = jsnb.cloudevents.decode(out.payload)
    assert d is None and event is not None and not expired  # JSON data: made on demand
    message = Message("orders", _msg(V1, out.payload), d, event)
    assert message.json() == data
    assert message.json() is event["data"]  # parsed with the envelope, not again
    assert message.data == jsnb.cloudevents.unwrap(out.payload).data
    assert orjson.loads(message.data) == data
    assert message.json() == data  # after data was made, json() still agrees


@pytest.mark.parametrize("touch", ["json", "cloud_event"])
@pytest.mark.parametrize("go_order", [False, True], ids=["jsnb-envelope", "go-envelope"])
def test_changing_the_parsed_data_leaves_data_as_published(touch: str, go_order: bool) -> None:
    """A handler that edits msg.json() (or the envelope) in place: data stays the wire's."""
    if go_order:  # Go's encoder sorts the keys: data first
        payload = b'{"data":{"note":"hi","total":5},"id":"1","source":"s","specversion":"1.0"}'
    else:
        payload = wrap({"total": 5, "note": "hi"}, topic="t", pubsub_name="p", source="s").payload
    d, event, _ = jsnb.cloudevents.decode(payload)
    message = Message("orders", _msg(V1, payload), d, event)
    body = message.json() if touch == "json" else message.cloud_event["data"]  # type: ignore[index]
    body["total"] *= 100
    del body["note"]
    assert message.json() == {"total": 500}  # the handler's own edit, as it made it
    assert orjson.loads(message.data) == {"total": 5, "note": "hi"}


async def test_a_delivered_message_can_be_pickled(nats_server: NatsServer) -> None:
    """For a process pool, say: the copy reads the same and holds no connection."""
    import pickle

    async with await make(nats_server) as ps:
        await jsnb.ensure_stream(ps, "PKL", ["pkl"])
        got: list[Message] = []
        sub = await ps.subscribe("pkl", got.append)
        await ps.publish("pkl", {"a": 1}, metadata={"traceparent": "00-ab"})
        await eventually(lambda: got)
        await eventually(lambda: all_acked(sub, 1))
        message = got[0]
        copy = pickle.loads(pickle.dumps(message))
        assert (copy.topic, copy.data, copy.json(), copy.cloud_event) == (
            message.topic,
            message.data,
            message.json(),
            message.cloud_event,
        )
        assert copy.metadata == message.metadata and copy.delivery == message.delivery


def test_cloud_event_text_data_is_its_text() -> None:
    out = wrap("hello", topic="orders", pubsub_name="p", source="s")
    d, event, _ = jsnb.cloudevents.decode(out.payload)
    assert d == b"hello" and event is not None
    assert Message("orders", _msg(V1, out.payload), d, event).text() == "hello"


def test_cloud_event_data_keeps_its_published_spelling() -> None:
    """Go's encoder puts data first; a hand-written envelope keeps its spaces."""
    payload = b'{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"b": 2,  "a": 1}}'
    d, event, _ = jsnb.cloudevents.decode(payload)
    message = Message("orders", _msg(V1, payload), d, event)
    assert message.data == b'{"b": 2,  "a": 1}'
    assert message.json() == {"b": 2, "a": 1}


# -- a recreated ephemeral consumer: where it resumes ----------------------------------------


async def test_recreated_ephemeral_resumes_past_the_newest_first_delivery(
    nats_server: NatsServer,
) -> None:
    """The last reply before the outage is a *redelivery* of seq 1, after seq 3 came.

    Resuming from the newest reply would redeliver 2 and 3; resuming past the
    newest first delivery (3) redelivers nothing handled and skips nothing.
    """
    async with await make(nats_server, backOff="300ms", maxDeliver=5) as ps:
        await jsnb.ensure_stream(ps, "EPH", ["eph"])
        calls: list[tuple[bytes, int]] = []

        async def handle(msg: Message) -> None:
            calls.append((msg.data, msg.delivery.num_delivered))
            if msg.data == b"m1" and msg.delivery.num_delivered == 1:
                raise RuntimeError("once")

        sub = await ps.subscribe("eph", handle, metadata={"rawPayload": "true"})
        for i in (1, 2, 3):
            await ps.publish("eph", f"m{i}".encode(), metadata={"rawPayload": "true"})
        await eventually(lambda: (b"m1", 2) in calls)  # the redelivery came after m3
        assert [c for c in calls if c[1] == 1] == [(b"m1", 1), (b"m2", 1), (b"m3", 1)]
        await eventually(lambda: sub.acked == 3)
        await ps.jetstream.delete_consumer("EPH", sub.consumer)
        nats_server.restart()
        await eventually(lambda: _recreated(ps, sub), timeout=30)
        await ps.publish("eph", b"m4", metadata={"rawPayload": "true"})
        await eventually(lambda: any(c[0] == b"m4" for c in calls))
        await eventually(lambda: all_acked(sub, 4))
        assert sorted(calls) == [(b"m1", 1), (b"m1", 2), (b"m2", 1), (b"m3", 1), (b"m4", 1)]


async def _recreated(ps: Any, sub: Any) -> bool:
    try:
        info = await sub.consumer_info()
    except Exception:
        return False
    return bool(info.config.opt_start_seq == 4)


async def test_parallel_never_runs_more_than_max_ack_pending_at_once(
    nats_server: NatsServer,
) -> None:
    """Redeliveries of attempts still running wait for room; they are not run beside them."""
    props = {"concurrencyMode": "parallel", "maxAckPending": 2, "ackWait": "300ms"}
    async with await make(nats_server, **props) as ps:
        await jsnb.ensure_stream(ps, "PAR", ["par"])
        release = asyncio.Event()
        running, most, calls = 0, 0, 0

        async def handle(msg: Message) -> None:
            nonlocal running, most, calls
            running += 1
            calls += 1
            most = max(most, running)
            try:
                await release.wait()
            finally:
                running -= 1

        sub = await ps.subscribe("par", handle)
        for i in range(4):
            await ps.publish("par", i)
        await eventually(lambda: calls == 2)
        # Both ack deadlines pass: the server redelivers 1 and 2 while they still run.
        await eventually(lambda: _redelivered(sub), timeout=10)
        await eventually(lambda: sub._dispatcher._room is not None)  # a redelivery waits
        assert (calls, most) == (2, 2)
        release.set()
        await eventually(lambda: all_acked(sub, 4))
        assert most == 2


async def _redelivered(sub: Any) -> bool:
    info = await sub.consumer_info()
    return bool(info.num_redelivered >= 2)


async def test_an_answer_that_cannot_be_sent_keeps_the_message_in_the_resume_point(
    nats_server: NatsServer,
) -> None:
    """A NAK or ack that fails (connection gone) leaves the message unsettled for resume_seq."""
    import nats

    async with await make(nats_server) as ps:
        await jsnb.ensure_stream(ps, "GONE", ["gone"])

        async def handle(msg: Message) -> None:
            if msg.data == b"fail":
                raise RuntimeError("fails")

        sub = await ps.subscribe("gone", handle, metadata={"rawPayload": "true"})
        dead = await nats.connect(nats_server.url)
        await dead.close()  # publishing through it raises ConnectionClosedError
        d = sub._dispatcher
        prefix = f"$JS.ACK.GONE.{sub.consumer}"
        for seq, data in ((7, b"ok"), (5, b"fail")):
            reply = f"{prefix}.1.{seq}.{seq}.1700000000000000000.0"
            await d.on_msg(Msg(dead, "gone", reply, data, None))
        assert d.unsettled == {5, 7} and d.resume_seq() == 5


async def test_a_superseded_attempt_does_not_hold_back_the_resume_point(
    nats_server: NatsServer,
) -> None:
    """Parallel: attempt 1 fails after its redelivery (attempt 2) succeeded."""
    props = {"concurrencyMode": "parallel", "ackWait": "300ms", "maxDeliver": 5}
    async with await make(nats_server, **props) as ps:
        await jsnb.ensure_stream(ps, "SUP", ["sup"])
        second_done = asyncio.Event()
        outcomes: list[tuple[int, str]] = []

        async def handle(msg: Message) -> None:
            if msg.delivery.num_delivered == 1:
                await second_done.wait()
                raise RuntimeError("too late")
            second_done.set()

        sub = await ps.subscribe("sup", handle)
        sub.add_listener(lambda e: outcomes.append((e.num_delivered, e.outcome.value)))
        await ps.publish("sup", "x")
        await eventually(lambda: len(outcomes) == 2)
        assert sorted(outcomes) == [(1, "superseded"), (2, "ack")]
        assert not sub._dispatcher.unsettled and sub._dispatcher.resume_seq() == 2


async def test_a_listener_added_while_the_handler_runs_hears_the_outcome(
    nats_server: NatsServer,
) -> None:
    async with await make(nats_server) as ps:
        await jsnb.ensure_stream(ps, "MID", ["mid"])
        started, release = asyncio.Event(), asyncio.Event()

        async def handle(msg: Message) -> None:
            started.set()
            await release.wait()

        sub = await ps.subscribe("mid", handle)
        await ps.publish("mid", "x")
        await asyncio.wait_for(started.wait(), 10)
        events: list[DeliveryEvent] = []
        sub.add_listener(events.append)
        release.set()
        await eventually(lambda: events)
        assert [(e.stream_seq, e.outcome.value) for e in events] == [(1, "ack")]
        assert events[0].received > 0
