"""Faults on one server, counted: every numbered message is handled at least once, none lost.

Each test publishes numbered messages, injects one fault, and compares the set
sent with the set handled (tests/reliability.py). Duplicates are allowed by
at-least-once delivery and reported, never hidden.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from jsnb import (
    BulkMessageEntry,
    DeliveryEvent,
    JetStreamPubSub,
    Message,
    Outcome,
    ensure_stream,
)
from jsnb.server import NatsServer
from tests.reliability import (
    PublishStats,
    Tally,
    compare,
    payload_number,
    publish_numbered,
    record,
)
from tests.support import consumer_acked, eventually, make

ROOT = Path(__file__).resolve().parents[1]


# -- the server dies -------------------------------------------------------------------


@pytest.mark.slow
async def test_server_sigkilled_mid_stream_then_restarted_loses_nothing(
    nats_server: NatsServer,
) -> None:
    n = 2000
    numbers = range(1, n + 1)
    publisher = await make(nats_server)
    consumer = await make(nats_server, durableName="survivor", ackWait="2s")
    try:
        await ensure_stream(publisher, "FAULTS", ["faults"])
        tally = Tally()
        await consumer.subscribe("faults", tally.handler)
        stats = PublishStats()
        started = time.monotonic()
        publishing = asyncio.create_task(
            publish_numbered(publisher, "faults", numbers, prefix="kill", stats=stats)
        )
        await eventually(lambda: stats.stored >= n // 3 and tally.distinct > 0)
        stored_at_kill, handled_at_kill = stats.stored, tally.distinct

        await asyncio.to_thread(nats_server.kill)
        # Both clients saw the crash before the server comes back on the same store and port.
        await eventually(lambda: not publisher.nc.is_connected and not consumer.nc.is_connected)
        await asyncio.to_thread(nats_server.restart)

        await publishing
        await eventually(lambda: tally.distinct == n, timeout=60)
        check = tally.check(numbers)
        assert check.lost == 0, str(check)
        info = await publisher.stream_info("FAULTS")
        assert info.state.messages == n, "retries reused their CloudEvent id: stored once each"
        await eventually(lambda: consumer_acked(publisher, "FAULTS", "survivor", n), timeout=30)
        assert stored_at_kill < n, "the kill happened mid-stream"
        record(
            "server-sigkill",
            fault="nats-server SIGKILLed mid-stream, restarted on the same store and port",
            check=check,
            seconds=time.monotonic() - started,
            stored_at_kill=stored_at_kill,
            handled_at_kill=handled_at_kill,
            stream_messages=info.state.messages,
            publish=stats,
        )
    finally:
        await consumer.close()
        await publisher.close()


# -- a subscriber process dies before it acks ------------------------------------------


WORKER_PROPS = {"durableName": "worker", "ackWait": "1s", "maxAckPending": 50}


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("hang", id="sigkill-while-handler-hangs"),
        pytest.param("exit", id="exit-after-work-before-ack"),
    ],
)
async def test_subscriber_process_killed_before_ack_hands_over_its_messages(
    nats_server: NatsServer, tmp_path: Path, mode: str
) -> None:
    n, handled_by_worker = 400, 150
    numbers = range(1, n + 1)
    ps = await make(nats_server, **WORKER_PROPS)
    log, output = tmp_path / "worker.log", tmp_path / "worker.out"
    try:
        await ensure_stream(ps, "WORK", ["work"])
        started = time.monotonic()
        command = [
            sys.executable,
            "-m",
            "tests.reliability",
            "worker",
            f"--url={nats_server.url}",
            "--topic=work",
            f"--durable={WORKER_PROPS['durableName']}",
            f"--ack-wait={WORKER_PROPS['ackWait']}",
            f"--max-ack-pending={WORKER_PROPS['maxAckPending']}",
            f"--log={log}",
            f"--stop-after={handled_by_worker}",
            f"--mode={mode}",
        ]
        with output.open("wb") as out:
            worker = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            await eventually(lambda: "ready" in read_lines(log) or worker.poll(), timeout=30)
            assert worker.poll() is None, output.read_text()
            await publish_numbered(ps, "work", numbers, prefix=f"work-{mode}")
            if mode == "hang":
                await eventually(lambda: any(s.startswith("hang") for s in read_lines(log)))
                worker.kill()  # SIGKILL: no cleanup, no acks, no unsubscribe
            code = await asyncio.to_thread(worker.wait, 30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert code == (-9 if mode == "hang" else 3), output.read_text()
        lines = read_lines(log)
        by_worker = Counter(int(s) for s in lines if s.isdigit())
        assert len(by_worker) == handled_by_worker + (mode == "exit")
        info = await ps.consumer_info("WORK", "worker")
        assert info.num_ack_pending >= 1, "the worker died holding unacked deliveries"

        # The server notices the dead connection; then this process takes the durable over.
        await eventually(lambda: _unbound(ps))
        tally = Tally()
        await ps.subscribe("work", tally.handler)
        await eventually(lambda: tally.distinct + len(by_worker) >= n, timeout=30)
        await eventually(lambda: consumer_acked(ps, "WORK", "worker", n), timeout=30)

        check = compare(numbers, by_worker + tally.counts)
        assert check.lost == 0, str(check)
        if mode == "exit":
            # Its work was done but never acked: at-least-once means it is handled again.
            last = int(lines[-1])
            assert by_worker[last] == 1 and tally.counts[last] >= 1
        else:
            hung = int(next(s for s in lines if s.startswith("hang")).split()[1])
            assert hung not in by_worker and tally.counts[hung] >= 1
        record(
            f"subscriber-process-{mode}",
            fault=(
                "subscriber process SIGKILLed while its handler hangs (ackWait 1s)"
                if mode == "hang"
                else "subscriber process exits after the work, before the ack (ackWait 1s)"
            ),
            check=check,
            seconds=time.monotonic() - started,
            handled_by_killed_process=len(by_worker),
            handled_by_successor=tally.distinct,
        )
    finally:
        await ps.close()


async def _unbound(ps: JetStreamPubSub) -> bool:
    return not (await ps.consumer_info("WORK", "worker")).push_bound


# -- handlers fail at random -----------------------------------------------------------


def fails(number: int, attempt: int) -> bool:
    """A reproducible coin flip per message and attempt: half of all attempts fail."""
    return random.Random(f"{number}/{attempt}").random() < 0.5


@pytest.mark.slow
async def test_failure_storm_ends_every_message_acked_or_dead_lettered(
    nats_server: NatsServer,
) -> None:
    n, max_deliver = 1000, 4
    numbers = range(1, n + 1)
    ps = await make(
        nats_server,
        durableName="storm",
        backOff="200ms",
        maxDeliver=max_deliver,
        concurrencyMode="parallel",
        maxAckPending=200,
    )
    dlq_reader = await make(nats_server)
    try:
        await ensure_stream(ps, "STORM", ["storm", "storm.dlq"])
        outcomes: Counter[Outcome] = Counter()
        ps.add_listener(lambda e: _count(outcomes, e))

        def maybe_fail(msg: Message) -> None:
            if fails(payload_number(msg), msg.delivery.num_delivered):
                raise RuntimeError(f"planned failure, attempt {msg.delivery.num_delivered}")

        acked = Tally(maybe_fail)
        dead = Tally()
        dead_counts: list[str] = []

        async def on_dead(msg: Message) -> None:
            dead_counts.append(msg.metadata["Jsnb-Delivery-Count"])
            await dead.handler(msg)

        await ps.subscribe("storm", acked.handler, metadata={"deadLetterTopic": "storm.dlq"})
        await dlq_reader.subscribe("storm.dlq", on_dead)
        started = time.monotonic()
        resp = await ps.bulk_publish("storm", [BulkMessageEntry(str(i), str(i)) for i in numbers])
        assert resp.ok, resp.failed_entries[:3]

        await eventually(lambda: acked.distinct + dead.distinct >= n, timeout=60)
        await eventually(lambda: consumer_acked(ps, "STORM", "storm", n), timeout=30)
        assert not set(acked.counts) & set(dead.counts), "a message was both acked and dead"
        check = compare(numbers, acked.counts + dead.counts)
        assert check.lost == 0 and check.unexpected == (), str(check)
        assert acked.distinct + dead.distinct == n
        assert set(dead_counts) == {str(max_deliver)}, "dead letters come after the last try"
        assert outcomes[Outcome.DEAD_LETTER] == dead.distinct
        assert outcomes[Outcome.EXHAUSTED] == 0
        expected_dead = sum(all(fails(i, a) for a in range(1, max_deliver + 1)) for i in numbers)
        record(
            "handler-failure-storm",
            fault="half of all handler attempts raise; backOff 200ms, maxDeliver 4, "
            "deadLetterTopic, parallel",
            check=check,
            seconds=time.monotonic() - started,
            acked=acked.distinct,
            dead_lettered=dead.distinct,
            dead_lettered_if_no_extra_redelivery=expected_dead,
            handler_attempts=acked.attempts,
            naks=outcomes[Outcome.NAK],
        )
    finally:
        await ps.close()
        await dlq_reader.close()


def _count(outcomes: Counter[Outcome], event: DeliveryEvent) -> None:
    outcomes[event.outcome] += 1


# -- a consumer slower than its producer ---------------------------------------------------


@pytest.mark.slow
async def test_slow_consumer_is_held_back_by_max_ack_pending(nats_server: NatsServer) -> None:
    n, limit = 1000, 20
    numbers = range(1, n + 1)
    ps = await make(nats_server, durableName="slow", maxAckPending=limit, ackWait="30s")
    try:
        await ensure_stream(ps, "SLOW", ["slow"])

        async def slow(msg: Message) -> None:
            await asyncio.sleep(0.002)

        tally = Tally(slow)
        sub = await ps.subscribe("slow", tally.handler)
        peak = Counter[str]()
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                info = await sub.consumer_info()
                # nats-py's per-subscription queue: what this process holds unhandled.
                psub = sub._psub
                peak["ack_pending"] = max(peak["ack_pending"], info.num_ack_pending)
                peak["client_queue"] = max(peak["client_queue"], psub.pending_msgs)
                peak["client_queue_bytes"] = max(peak["client_queue_bytes"], psub.pending_bytes)
                peak["backlog"] = max(peak["backlog"], info.num_pending)
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        resp = await ps.bulk_publish("slow", [BulkMessageEntry(str(i), str(i)) for i in numbers])
        assert resp.ok
        handled_when_published = tally.distinct
        await eventually(lambda: tally.distinct == n, timeout=60)
        done.set()
        await sampler

        assert handled_when_published < n // 2, "the producer really was faster"
        assert peak["backlog"] > 10 * limit, "the stream, not the subscriber, held the backlog"
        assert 0 < peak["ack_pending"] <= limit
        assert peak["client_queue"] <= limit
        check = tally.check(numbers)
        assert check.lost == 0 and check.duplicates == 0, str(check)
        record(
            "slow-consumer",
            fault=f"handler ~2 ms per message, producer publishes in bulk; maxAckPending {limit}",
            check=check,
            seconds=time.monotonic() - started,
            handled_when_published=handled_when_published,
            peak_ack_pending=peak["ack_pending"],
            peak_client_queue=peak["client_queue"],
            peak_client_queue_bytes=peak["client_queue_bytes"],
            peak_stream_backlog=peak["backlog"],
        )
    finally:
        await ps.close()
