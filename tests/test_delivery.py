"""Delivery defects of issue 10, one test each, against a real nats-server.

The combinations live in tests/test_delivery_matrix.py; these pin the single
behaviours (refusals, warnings, ids, recovery, close) that a matrix cell only
implies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

import jsnb
from jsnb import JetStreamPubSub, Message, MetadataError, Outcome, StreamNotFoundError
from jsnb.retry import RetryRule
from jsnb.server import NatsServer
from tests.support import Recorder, all_acked, eventually, make

pytestmark = pytest.mark.streams(ORDERS=["orders", "orders.>"], DLQ=["dlq"])


@pytest.fixture(params=["push", "pull"])
def consumer_mode(request: pytest.FixtureRequest) -> str:
    """Push and pull consumers must pass the same delivery tests (issue 13)."""
    return str(request.param)


async def _fail(msg: Message) -> None:
    raise RuntimeError(f"poison {msg.data!r}")


# -- refused up front (defects 1, 2, 3, 17, 20) ------------------------------------------


@pytest.mark.parametrize(
    ("props", "keys"),
    [
        pytest.param({"backOff": "0s, 500ms"}, ["backOff", "0s"], id="leading-zero-backoff"),
        pytest.param({"backOff": "1s, 0s", "maxDeliver": 4}, ["backOff"], id="zero-backoff"),
        pytest.param(
            {"ackPolicy": "all", "queueGroupName": "q", "durableName": "d"},
            ["ackPolicy", "queueGroupName"],
            id="cumulative-acks-in-a-queue-group",
        ),
        pytest.param(
            {"ackPolicy": "none", "maxAckPending": 10},
            ["maxAckPending", "ackPolicy", "10082"],
            id="no-acks-with-max-ack-pending",
        ),
        pytest.param(
            {"inProgress": "5s", "ackWait": "5s"}, ["inProgress", "5s", "ackWait"], id="wpi-slow"
        ),
        pytest.param(
            {"inProgress": "2s", "backOff": "1s, 4s", "maxDeliver": 3},
            ["inProgress", "2s", "backOff", "1s"],
            id="wpi-slower-than-backoff",
        ),
        pytest.param(
            {"maxHandlerTime": "10s"}, ["maxHandlerTime", "inProgress"], id="bound-without-wpi"
        ),
        pytest.param(
            {"inProgress": "auto", "ackPolicy": "none"},
            ["inProgress", "ackPolicy"],
            id="wpi-no-acks",
        ),
        pytest.param(
            {"consumerMode": "pull", "flowControl": True, "heartbeat": "5s"},
            ["flowControl", "heartbeat", "push-only", "consumerMode"],
            id="pull-with-push-fields",
        ),
        pytest.param(
            {"consumerMode": "pull", "rateLimit": 1000}, ["rateLimit", "pull"], id="pull-rate"
        ),
        pytest.param(
            {"maxWaiting": 4, "maxRequestBatch": 8, "maxRequestExpires": "1s"},
            ["maxWaiting", "maxRequestBatch", "maxRequestExpires", "consumerMode"],
            id="pull-fields-in-push-mode",
        ),
    ],
)
def test_unsafe_combinations_are_refused_naming_the_keys(
    props: dict[str, Any], keys: list[str]
) -> None:
    with pytest.raises(MetadataError) as info:
        jsnb.Metadata.from_properties({"natsURL": "embedded", **props})
    for key in keys:
        assert key in str(info.value)


@pytest.mark.parametrize(
    ("topic", "error", "words"),
    [
        pytest.param(
            "nowhere", StreamNotFoundError, ["deadLetterTopic", "'nowhere'"], id="no-stream"
        ),
        pytest.param("bad topic", MetadataError, ["deadLetterTopic", "not a valid"], id="invalid"),
        pytest.param("orders.x", MetadataError, ["deadLetterTopic", "overlaps"], id="own-topic"),
    ],
)
async def test_dead_letter_topic_is_checked_at_subscribe(
    ps: JetStreamPubSub, topic: str, error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        await ps.subscribe("orders.>", _fail, metadata={"deadLetterTopic": topic})
    for word in words:
        assert word in str(info.value)
    assert not ps.subscriptions


async def test_stream_name_that_does_not_capture_the_topic_is_refused(
    nats_server: NatsServer,
) -> None:
    async with JetStreamPubSub({"natsURL": nats_server.url, "streamName": "ORDERS"}) as ps:
        await jsnb.ensure_stream(ps, "ORDERS", ["orders.>"])
        with pytest.raises(StreamNotFoundError, match=r"captures orders\.>, not topic 'billing'"):
            await ps.subscribe("billing", print)
        await ps.subscribe("orders.eu", print)  # a subject it does capture is fine


async def test_unknown_stream_name_is_named(nats_server: NatsServer) -> None:
    async with JetStreamPubSub({"natsURL": nats_server.url, "streamName": "MISSING"}) as ps:
        with pytest.raises(StreamNotFoundError, match="streamName 'MISSING' does not exist"):
            await ps.subscribe("orders", print)


async def test_cumulative_acks_on_an_interest_stream_are_refused(nats_server: NatsServer) -> None:
    async with JetStreamPubSub({"natsURL": nats_server.url, "ackPolicy": "all"}) as ps:
        await jsnb.ensure_stream(ps, "INTEREST", ["interest"], retention="interest")
        with pytest.raises(MetadataError, match="interest retention"):
            await ps.subscribe("interest", print)


# -- warnings where nothing is lost but something surprises (12, 13, 14) -----------------


def test_ack_wait_replaced_by_backoff_is_warned() -> None:
    # The seed page's own pair: the real first ack deadline is 50 ms, not 10 s.
    with pytest.warns(UserWarning, match=r"ackWait 10s is not used.*backOff\[0\] \(50ms\)"):
        jsnb.Metadata.from_properties(
            {"natsURL": "embedded", "ackWait": "10s", "backOff": "50ms, 1s", "maxDeliver": 3}
        )


def test_queue_group_without_durable_is_warned() -> None:
    with pytest.warns(UserWarning, match="every member gets every message"):
        jsnb.Metadata.from_properties({"natsURL": "embedded", "queueGroupName": "workers"})


async def test_dead_letter_topic_without_max_deliver_is_warned(ps: JetStreamPubSub) -> None:
    with pytest.warns(UserWarning, match="deadLetterTopic 'dlq' is never used"):
        await ps.subscribe("orders", _fail, metadata={"deadLetterTopic": "dlq"})


async def test_poison_message_without_ack_wait_does_not_spin(
    nats_server: NatsServer, consumer_mode: str
) -> None:
    """Upstream NAKs at once without ackWait (thousands of redeliveries a second)."""
    async with await make(nats_server, consumerMode=consumer_mode, ackWait="1s") as ps:
        await jsnb.ensure_stream(ps, "ORDERS", ["orders"])
        rec = Recorder(fail_times=1000)
        sub = await ps.subscribe("orders", rec)
        assert sub.rule.nak_delay(1) == 1.0
        await ps.publish("orders", "poison")
        await eventually(lambda: len(rec.attempts.get(1, [])) >= 2, timeout=10)
        gaps = [b - a for a, b in zip(rec.attempts[1], rec.attempts[1][1:], strict=False)]
        assert min(gaps) >= 0.9, gaps
    # No ackWait: the server's 30 s.
    async with await make(nats_server, consumerMode=consumer_mode) as ps:
        sub = await ps.subscribe("orders", print)
        assert sub.rule == RetryRule(ack_wait=30.0, backoff=(), max_deliver=-1)


# -- dead letters (1, 5, 6) --------------------------------------------------------------


async def test_failed_dead_letter_on_last_delivery_is_exhausted_not_nak(
    ps: JetStreamPubSub,
    nats_server: NatsServer,
    caplog: pytest.LogCaptureFixture,
    consumer_mode: str,
) -> None:
    events: list[jsnb.DeliveryEvent] = []
    ps.add_listener(events.append)
    async with await make(
        nats_server, consumerMode=consumer_mode, maxDeliver=2, backOff="50ms"
    ) as consumer:
        consumer.add_listener(events.append)
        await consumer.subscribe("orders", _fail, metadata={"deadLetterTopic": "dlq"})
        await ps.jetstream.delete_stream("DLQ")  # the dead-letter stream goes away later
        await ps.publish("orders", "poison")
        await eventually(lambda: any(e.outcome is Outcome.EXHAUSTED for e in events))
    assert [e.outcome for e in events] == [Outcome.NAK, Outcome.EXHAUSTED]
    assert "dead-letter publish to 'dlq' failed" in (events[-1].error or "")
    assert "stays in stream ORDERS" in caplog.text
    assert (await ps.jetstream.get_msg("ORDERS", 1)).data  # still stored


async def test_no_acks_dead_letters_a_failure(ps: JetStreamPubSub, nats_server: NatsServer) -> None:
    async with await make(nats_server, ackPolicy="none") as consumer:
        events: list[jsnb.DeliveryEvent] = []
        consumer.add_listener(events.append)
        await consumer.subscribe("orders", _fail, metadata={"deadLetterTopic": "dlq"})
        await ps.publish("orders", "poison")
        await eventually(lambda: events)
    assert events[0].outcome is Outcome.DEAD_LETTER
    assert (await ps.jetstream.stream_info("DLQ")).state.messages == 1


async def test_dead_letters_of_two_consumers_are_not_duplicates(
    ps: JetStreamPubSub, nats_server: NatsServer
) -> None:
    """Both consumers fail stream seq 1; the old id dlq-ORDERS-1 kept only one copy."""
    a, b = (
        await make(nats_server, durableName="a", maxDeliver=1),
        await make(nats_server, durableName="b", maxDeliver=1),
    )
    try:
        for c in (a, b):
            await c.subscribe("orders", _fail, metadata={"deadLetterTopic": "dlq"})
        await ps.publish("orders", "poison")
        await eventually(_dlq_count(ps, 2))
    finally:
        await a.close()
        await b.close()


async def test_dead_letters_after_the_stream_is_recreated_are_kept(
    ps: JetStreamPubSub, nats_server: NatsServer
) -> None:
    for round_ in (1, 2):
        async with await make(nats_server, durableName="d", maxDeliver=1) as c:
            await c.subscribe("orders", _fail, metadata={"deadLetterTopic": "dlq"})
            await ps.publish("orders", f"poison {round_}")
            await eventually(_dlq_count(ps, round_))
        await ps.jetstream.delete_stream("ORDERS")  # same name, same seq 1 next round
        await jsnb.ensure_stream(ps, "ORDERS", ["orders"])


def _dlq_count(ps: JetStreamPubSub, n: int) -> Any:
    async def check() -> bool:
        return (await ps.jetstream.stream_info("DLQ")).state.messages == n

    return check


# -- bulk statuses in Dapr's words (11) ----------------------------------------------------


async def test_bulk_handler_may_answer_in_daprs_words(
    ps: JetStreamPubSub, nats_server: NatsServer, consumer_mode: str
) -> None:
    words = {b"ok": "SUCCESS", b"again": "retry", b"drop": "DROP", b"dead": "Drop"}
    # backOff is also the ack deadline: 1 s, so a busy machine does not redeliver a
    # message while its batch is still being gathered (that would supersede it).
    async with await make(
        nats_server, consumerMode=consumer_mode, backOff="1s", maxDeliver=3
    ) as consumer:
        events: list[jsnb.DeliveryEvent] = []
        consumer.add_listener(events.append)

        def handler(batch: list[Message]) -> dict[str, str]:
            out = {}
            for m in batch:
                word = words[m.data]
                out[m.entry_id] = "SUCCESS" if m.delivery.num_delivered > 1 else word
            return out

        await consumer.bulk_subscribe("orders", handler, max_messages=10, max_await_ms=50)
        await consumer.bulk_subscribe(
            "orders.dead", handler, max_await_ms=50, metadata={"deadLetterTopic": "dlq"}
        )
        for data in (b"ok", b"again", b"drop"):
            await ps.publish("orders", data, metadata={"rawPayload": "true"})
        await ps.publish("orders.dead", b"dead", metadata={"rawPayload": "true"})
        await eventually(lambda: len(events) >= 5)
    by = {(e.preview, e.num_delivered): e.outcome for e in events}
    assert by[(b"ok", 1)] is Outcome.ACK
    assert by[(b"again", 1)] is Outcome.NAK and by[(b"again", 2)] is Outcome.ACK
    assert by[(b"drop", 1)] is Outcome.TERM
    assert by[(b"dead", 1)] is Outcome.DEAD_LETTER


# -- consumers: retune (9), ephemeral recovery (7) -------------------------------------------


async def test_retune_keeps_what_the_metadata_leaves_unset(
    ps: JetStreamPubSub, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    props = {"durableName": "tuned", "backOff": "100ms, 1s", "maxDeliver": 5, "rateLimit": 8000}
    async with await make(nats_server, **props) as first:
        await first.subscribe("orders", print)
    caplog.set_level(logging.WARNING, logger="jsnb")
    async with await make(nats_server, durableName="tuned", maxAckPending=10) as second:
        sub = await second.subscribe("orders", print)
        cfg = (await sub.consumer_info()).config
    assert cfg.max_ack_pending == 10
    assert cfg.backoff == [0.1, 1.0] and cfg.max_deliver == 5 and cfg.rate_limit_bps == 8000
    assert sub.rule == RetryRule(ack_wait=0.1, backoff=(0.1, 1.0), max_deliver=5)
    assert "retuning consumer tuned: maxAckPending" in caplog.text
    caplog.clear()
    async with await make(
        nats_server, durableName="tuned", maxDeliver=7, backOff="200ms, 1s"
    ) as third:
        await third.subscribe("orders", print)
    line = next(r.message for r in caplog.records if "retuning" in r.message)
    assert "maxDeliver 5 -> 7" in line and "backOff [0.1, 1.0] -> [0.2, 1.0]" in line


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_recreated_ephemeral_consumer_starts_below_unsettled_messages(
    nats_server: NatsServer, mode: str
) -> None:
    """Seq 1 is waiting for its NAK delay when the consumer is lost; it must come back."""
    async with await make(nats_server, backOff="1s", maxDeliver=5, consumerMode=mode) as ps:
        await jsnb.ensure_stream(ps, "ORDERS", ["orders"])
        rec = Recorder()
        attempts: list[tuple[int, int]] = []

        async def handler(msg: Message) -> None:
            attempts.append((msg.delivery.stream_seq, msg.delivery.num_delivered))
            if msg.delivery.stream_seq == 1 and msg.delivery.num_delivered == 1:
                raise RuntimeError("later, please")
            await rec(msg)

        sub = await ps.subscribe("orders", handler)
        for i in range(1, 4):
            await ps.publish("orders", f"m{i}")
        await eventually(lambda: len(rec.messages) == 2)  # 2 and 3 acked, 1 NAKed for 1 s
        await ps.jetstream.delete_consumer("ORDERS", sub.consumer)
        nats_server.restart()  # the reconnect makes the subscription recreate its consumer
        await eventually(lambda: {m.data for m in rec.messages} >= {b"m1"}, timeout=30)


# -- close (10, 16) --------------------------------------------------------------------------


async def test_close_with_the_server_down_is_quiet_and_leaves_no_task(
    nats_server: NatsServer,
) -> None:
    before = set(asyncio.all_tasks())
    ps = await make(nats_server)
    await jsnb.ensure_stream(ps, "ORDERS", ["orders"])
    await ps.subscribe("orders", print)
    nats_server.kill()
    await ps.close()  # used to raise ConnectionResetError
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    left.discard(asyncio.current_task())
    await eventually(lambda: all(t.done() for t in left), timeout=5)


async def test_close_waits_for_all_subscriptions_at_once(nats_server: NatsServer) -> None:
    release = asyncio.Event()

    async def stuck(msg: Message) -> None:
        await release.wait()

    ps = await make(nats_server)
    await jsnb.ensure_stream(ps, "ORDERS", ["orders.>"])
    for i in range(3):
        await ps.subscribe(f"orders.{i}", stuck)
        await ps.publish(f"orders.{i}", "x")
    await eventually(lambda: all(s.delivered for s in ps.subscriptions))
    started = time.monotonic()
    await ps.close(timeout=1.0)
    # One after another this took 3 x 1 s; together it is one timeout (and some slack).
    assert time.monotonic() - started < 2.5
    release.set()


# -- messages (21) ---------------------------------------------------------------------------


async def test_a_topic_header_does_not_hide_the_subject(ps: JetStreamPubSub) -> None:
    got: list[Message] = []
    await ps.subscribe("orders.>", got.append)
    await ps.publish("orders.eu", "x", metadata={"Topic": "spoofed"})
    await eventually(lambda: got)
    assert got[0].metadata["Topic"] == "orders.eu"


async def test_subscribe_metadata_values_as_dapr_writes_them(ps: JetStreamPubSub) -> None:
    got: list[Message] = []
    await ps.subscribe("orders", got.append, metadata={"rawPayload": True})
    await ps.publish("orders", b"raw", metadata={"rawPayload": True})
    await eventually(lambda: got)
    assert got[0].data == b"raw" and got[0].cloud_event is None
    with pytest.raises(MetadataError, match="subscribe metadata 'deadLetterTopic' is a NoneType"):
        await ps.subscribe("orders.x", print, metadata={"deadLetterTopic": None})


# -- found by review: restarts, advisories, retention ---------------------------------------


@pytest.mark.parametrize(
    ("retention", "props", "key"),
    [
        pytest.param("workqueue", {"ackPolicy": "all"}, "ackPolicy", id="workqueue-all"),
        pytest.param("workqueue", {"ackPolicy": "none"}, "ackPolicy", id="workqueue-none"),
        pytest.param("interest", {}, "durableName", id="interest-ephemeral"),
    ],
)
async def test_retention_that_would_delete_unsettled_messages_is_refused(
    nats_server: NatsServer, retention: str, props: dict[str, Any], key: str
) -> None:
    async with await make(nats_server, **props) as ps:
        await jsnb.ensure_stream(ps, "R", ["r"], retention=retention)
        with pytest.raises(MetadataError) as info:
            await ps.subscribe("r", print)
        assert info.value.key == key and f"{retention} retention" in str(info.value)


async def test_dead_letter_stream_with_interest_retention_is_refused(
    ps: JetStreamPubSub,
) -> None:
    await jsnb.ensure_stream(ps, "DLQI", ["dlqi"], retention="interest")
    with pytest.raises(MetadataError, match="interest retention: a dead letter would be deleted"):
        await ps.subscribe("orders", _fail, metadata={"deadLetterTopic": "dlqi"})


async def test_late_failure_of_an_old_attempt_is_superseded_not_nak(
    ps: JetStreamPubSub, nats_server: NatsServer, consumer_mode: str
) -> None:
    """Delivery 1 fails after delivery 2 already ended the message: no NAK may follow."""
    props = {"concurrencyMode": "parallel", "maxDeliver": 2, "ackWait": "500ms"}
    async with await make(nats_server, consumerMode=consumer_mode, **props) as consumer:
        events: list[jsnb.DeliveryEvent] = []
        consumer.add_listener(events.append)

        async def handler(msg: Message) -> None:
            if msg.delivery.num_delivered == 1:
                await asyncio.sleep(1.0)
            raise RuntimeError("no")

        await consumer.subscribe("orders", handler)
        await ps.publish("orders", "x")
        await eventually(lambda: len(events) >= 2)
    assert [(e.num_delivered, e.outcome) for e in events] == [
        (2, Outcome.EXHAUSTED),
        (1, Outcome.SUPERSEDED),
    ]


async def test_server_giving_up_on_a_queued_message_is_reported_once(
    ps: JetStreamPubSub, nats_server: NatsServer, consumer_mode: str
) -> None:
    """maxDeliver 1: the second message waits behind a slow handler past its deadline."""
    async with await make(
        nats_server, consumerMode=consumer_mode, maxDeliver=1, ackWait="500ms"
    ) as consumer:
        events: list[jsnb.DeliveryEvent] = []
        consumer.add_listener(events.append)

        async def handler(msg: Message) -> None:
            if msg.data == b"slow":
                await asyncio.sleep(1.5)
                raise RuntimeError("slow and failing")

        await consumer.subscribe("orders", handler, metadata={"rawPayload": "true"})
        await ps.publish("orders", b"slow", metadata={"rawPayload": "true"})
        await ps.publish("orders", b"fast", metadata={"rawPayload": "true"})
        await eventually(lambda: len(events) >= 3)
    by_seq: dict[int, list[Outcome]] = {}
    for e in events:
        by_seq.setdefault(e.stream_seq, []).append(e.outcome)
    # The slow one: its own last failure, once (the advisory that follows is not repeated).
    assert by_seq[1] == [Outcome.EXHAUSTED]
    # The fast one: the server gave up while it queued, then its handler ran and succeeded;
    # the server ignores that late ack (the lab's accounts show it), and the event says so.
    assert by_seq[2] == [Outcome.EXHAUSTED, Outcome.ACK]
    late = next(e for e in events if e.stream_seq == 2 and e.outcome is Outcome.ACK)
    assert late.error is not None and "ignores this ack" in late.error


async def test_restart_barrier_counts_each_previous_message_once(
    ps: JetStreamPubSub, nats_server: NatsServer, consumer_mode: str
) -> None:
    """A redelivered twice must not lift the barrier while B is still due back."""
    props = {
        "durableName": "barrier",
        "ackPolicy": "all",
        "concurrencyMode": "parallel",
        "maxDeliver": 6,
        "backOff": "2s, 150ms",
    }
    handled: list[tuple[bytes, int]] = []

    async def first_life(msg: Message) -> None:
        if msg.data == b"A":
            await asyncio.sleep(30)  # still running when the subscriber stops
        raise RuntimeError("B fails in the first subscriber")

    async def second_life(msg: Message) -> None:
        handled.append((msg.data, msg.delivery.num_delivered))

    raw = {"rawPayload": "true"}
    old = await make(nats_server, consumerMode=consumer_mode, **props)
    await old.subscribe("orders", first_life, metadata=raw)
    await ps.publish("orders", b"A", metadata=raw)
    await asyncio.sleep(1.0)  # the scenario's shape: B is due back 1 s after A
    await ps.publish("orders", b"B", metadata=raw)
    await eventually(lambda: old.subscriptions[0].failed >= 1)  # B NAKed, due back in 2 s
    await old.close(timeout=0.1)
    async with await make(nats_server, consumerMode=consumer_mode, **props) as new:
        await new.subscribe("orders", second_life, metadata=raw)
        await eventually(lambda: sum(d == b"A" for d, _ in handled) >= 2)  # A came back twice
        await ps.publish("orders", b"C", metadata=raw)
        await eventually(lambda: {d for d, _ in handled} == {b"A", b"B", b"C"}, timeout=30)


@pytest.mark.parametrize("dead_letter", [False, True], ids=["term", "dead-letter"])
async def test_cumulative_term_waits_for_a_lower_retry(
    ps: JetStreamPubSub, nats_server: NatsServer, dead_letter: bool, consumer_mode: str
) -> None:
    """Under ``ackPolicy: all`` the server reads a TERM as an ack of every lower sequence.

    So a dropped (or dead-lettered) message must not be terminated while a lower
    one is NAKed and due back: that would end the lower one unhandled.
    """
    raw = {"rawPayload": "true"}
    meta = {**raw, "deadLetterTopic": "dlq"} if dead_letter else raw
    events: list[jsnb.DeliveryEvent] = []
    async with await make(
        nats_server, consumerMode=consumer_mode, ackPolicy="all", backOff="300ms", maxDeliver=3
    ) as sub:
        sub.add_listener(events.append)

        def handler(batch: list[Message]) -> dict[str, str]:
            # Both in one batch: A is retried, B (higher) is dropped in the same pass.
            return {
                m.entry_id: "SUCCESS"
                if m.delivery.num_delivered > 1
                else ("RETRY" if m.data == b"A" else "DROP")
                for m in batch
            }

        await sub.bulk_subscribe("orders", handler, max_messages=2, max_await_ms=500, metadata=meta)
        await ps.publish("orders", b"A", metadata=raw)
        await ps.publish("orders", b"B", metadata=raw)
        await eventually(
            lambda: any(e.preview == b"A" and e.outcome is Outcome.ACK for e in events)
        )
    by = {(e.preview, e.num_delivered): e.outcome for e in events}
    assert by[(b"A", 1)] is Outcome.NAK
    assert by[(b"B", 1)] is (Outcome.DEAD_LETTER if dead_letter else Outcome.TERM)


# -- keep-alive and pull mode (issue 13) ------------------------------------------------------


class _Slow:
    """Takes *seconds* on the first delivery of seq 1; records every delivery."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deliveries: list[tuple[int, int]] = []
        self.finished = 0

    async def __call__(self, msg: Message) -> None:
        d = msg.delivery
        self.deliveries.append((d.stream_seq, d.num_delivered))
        if d.stream_seq == 1 and d.num_delivered == 1:
            await asyncio.sleep(self.seconds)
        self.finished += 1


@pytest.mark.parametrize("mode", ["push", "pull"])
@pytest.mark.parametrize("in_progress", ["off", "auto"])
async def test_handler_three_times_the_ack_deadline(
    nats_server: NatsServer, mode: str, in_progress: str
) -> None:
    """+WPI keeps a slow delivery alive; without it the server redelivers it meanwhile."""
    props = {"ackWait": "1s", "consumerMode": mode, "inProgress": in_progress}
    async with await make(nats_server, concurrencyMode="parallel", **props) as ps:
        await jsnb.ensure_stream(ps, "SLOW", ["slow"], storage="memory")
        slow = _Slow(3.0)
        sub = await ps.subscribe("slow", slow)
        await ps.publish("slow", "job")
        await eventually(lambda: slow.finished >= 1, timeout=15)
        if in_progress == "off":
            assert (1, 2) in slow.deliveries  # redelivered while the first ran
        else:
            await eventually(lambda: sub.acked >= 1)
            assert slow.deliveries == [(1, 1)]
            assert sub.keep_alive is not None and sub.keep_alive.sent >= 6  # 3 s / (1 s / 3)
            await eventually(lambda: all_acked(sub, 1), timeout=5)  # the server agrees
            assert (await sub.consumer_info()).num_redelivered == 0


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_max_handler_time_lets_a_hung_handler_be_redelivered(
    nats_server: NatsServer, mode: str
) -> None:
    props = {"ackWait": "1s", "inProgress": "auto", "maxHandlerTime": "1s", "consumerMode": mode}
    async with await make(nats_server, concurrencyMode="parallel", **props) as ps:
        await jsnb.ensure_stream(ps, "HUNG", ["hung"], storage="memory")
        slow = _Slow(30.0)  # hung, as far as the test cares
        await ps.subscribe("hung", slow)
        started = time.monotonic()
        await ps.publish("hung", "job")
        await eventually(lambda: (1, 2) in slow.deliveries, timeout=10)
        # Not before maxHandlerTime plus one ack deadline after the last keep-alive.
        assert time.monotonic() - started >= 1.5


async def test_keep_alive_covers_acks_held_back_by_ack_policy_all(nats_server: NatsServer) -> None:
    """Successes above a slow seq 1 wait for it under ackPolicy all; +WPI keeps them alive."""
    props = {"ackWait": "1s", "ackPolicy": "all", "inProgress": "auto"}
    async with await make(nats_server, concurrencyMode="parallel", **props) as ps:
        await jsnb.ensure_stream(ps, "HELD", ["held"], storage="memory")
        slow = _Slow(3.0)
        sub = await ps.subscribe("held", slow)
        for i in range(5):
            await ps.publish("held", f"m{i}")
        await eventually(lambda: slow.finished >= 5, timeout=15)
        await eventually(lambda: all_acked(sub, 5), timeout=5)
        assert sorted(slow.deliveries) == [(seq, 1) for seq in range(1, 6)]


async def test_pull_instances_share_one_durable(nats_server: NatsServer) -> None:
    """queueGroupName + durableName: two pull instances split the work, each message once."""
    props = {"consumerMode": "pull", "durableName": "workers", "queueGroupName": "workers"}
    props["maxRequestBatch"] = 2
    a, b = Recorder(), Recorder()
    async with await make(nats_server, **props) as one, await make(nats_server, **props) as two:
        await jsnb.ensure_stream(one, "WORK", ["work"], storage="memory")
        await one.subscribe("work", a)
        await two.subscribe("work", b)
        for i in range(40):
            await one.publish("work", f"m{i}")
        await eventually(lambda: len(a.messages) + len(b.messages) >= 40)
        seqs = [m.delivery.stream_seq for m in a.messages + b.messages]
        assert sorted(seqs) == list(range(1, 41)) and a.messages and b.messages


async def test_push_durable_is_not_joined_in_pull_mode(
    ps: JetStreamPubSub, nats_server: NatsServer
) -> None:
    async with await make(nats_server, durableName="kind") as push:
        await push.subscribe("orders", print)
    async with await make(nats_server, durableName="kind", consumerMode="pull") as pull:
        with pytest.raises(jsnb.ConsumerConflictError, match=r"push consumer.*consumerMode"):
            await pull.subscribe("orders", print)


async def _stream_back(ps: JetStreamPubSub, stream: str) -> bool:
    """True once the restarted server serves *stream* again."""
    try:
        await ps.jetstream.stream_info(stream)
    except Exception:
        return False
    return True


async def test_pull_survives_a_server_restart(nats_server: NatsServer) -> None:
    """Pull requests die with the server (nats.py #504); the feed asks again after it."""
    props = {"consumerMode": "pull", "durableName": "survivor"}
    async with await make(nats_server, **props) as ps:
        await jsnb.ensure_stream(ps, "LIVE", ["live"])
        rec = Recorder()
        sub = await ps.subscribe("live", rec)
        await ps.publish("live", "before")
        await eventually(lambda: len(rec.messages) == 1)
        nats_server.restart()
        await eventually(lambda: _stream_back(ps, "LIVE"))
        await ps.publish("live", "after")
        await eventually(lambda: rec.data == [b"before", b"after"], timeout=30)
        assert (await sub.state())["consumerMode"] == "pull"


async def test_pull_request_limits_do_not_retune_a_durable_each_time(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py cannot read maxRequestBatch back: drift notes it instead of retuning."""
    props = {"consumerMode": "pull", "durableName": "limits", "maxRequestBatch": 8}
    props["maxWaiting"] = 16
    for _ in range(2):
        async with await make(nats_server, **props) as ps:
            await jsnb.ensure_stream(ps, "LIMITS", ["limits"], storage="memory")
            with caplog.at_level(logging.WARNING, logger="jsnb"):
                sub = await ps.subscribe("limits", print)
            drift = (await sub.drift()).set_index("field")
    assert "retuning" not in caplog.text
    assert "does not read it back" in drift.loc["maxRequestBatch", "note"]
    assert drift.loc["maxWaiting", "server"] == 16 and not drift.differs.any()
