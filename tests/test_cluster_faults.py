"""A real 3-node cluster: nodes die during publish and consume, nothing is lost.

The stream and the durable consumer are replicated three times. First a
follower is SIGKILLed, then the stream leader; each comes back on its own
store. Publishes that time out while a new leader is elected are retried with
the same CloudEvent id, so the stream still stores each message once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest

from jsnb import JetStreamPubSub, JsnbError, ensure_stream
from jsnb.server import LocalCluster
from tests.reliability import PublishStats, Tally, publish_numbered, record
from tests.support import all_acked, eventually


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    # Ready when astart() returns: JetStream answers through every node.
    async with LocalCluster(3, name="rel", store_root=tmp_path / "cluster") as nodes:
        yield nodes


def node_index(cluster: LocalCluster, name: str) -> int:
    return next(i for i, node in enumerate(cluster.nodes) if node.options.server_name == name)


def connected_index(cluster: LocalCluster, ps: JetStreamPubSub) -> int | None:
    """The node *ps* is connected to; None while it reconnects."""
    url = ps.nc.connected_url if ps.nc.is_connected else None
    return next((i for i, node in enumerate(cluster.nodes) if url and node.port == url.port), None)


async def stream_leader(ps: JetStreamPubSub, stream: str) -> str | None:
    try:
        info = await ps.stream_info(stream)
    except Exception:  # no leader to answer while one is elected
        return None
    return info.cluster.leader if info.cluster else None


async def replicas_current(ps: JetStreamPubSub, stream: str) -> bool:
    info = await ps.stream_info(stream)
    peers = info.cluster.replicas if info.cluster else None
    return bool(peers) and len(peers) == 2 and all(p.current and not p.offline for p in peers)


@pytest.mark.slow
async def test_replicated_stream_survives_follower_and_leader_kills(
    cluster: LocalCluster,
) -> None:
    n = 3000
    numbers = range(1, n + 1)
    urls = cluster.urls
    publisher = await JetStreamPubSub().init({"natsURL": urls})
    consumer = await JetStreamPubSub().init(
        {"natsURL": urls, "durableName": "rel-worker", "replicas": 3, "ackWait": "2s"}
    )
    try:
        await ensure_stream(publisher, "REL", ["rel"], num_replicas=3)
        tally = Tally()
        sub = await consumer.subscribe("rel", tally.handler)
        assert (await sub.consumer_info()).config.num_replicas == 3
        stats = PublishStats()
        started = time.monotonic()
        # Paced, so both kills land while messages are still being published and handled.
        publishing = asyncio.create_task(
            publish_numbered(publisher, "rel", numbers, prefix="rel", stats=stats, rate=250)
        )
        kills: list[dict[str, Any]] = []

        # 1. A follower dies: the one the consumer is connected to, if that is a follower.
        await eventually(lambda: stats.stored >= n // 5 and tally.distinct > 0, timeout=60)
        leader = await eventually(lambda: stream_leader(publisher, "REL"))
        candidates = [connected_index(cluster, consumer), connected_index(cluster, publisher)]
        follower = next(
            i
            for i in [*candidates, 0, 1, 2]
            if i is not None and cluster.nodes[i].options.server_name != leader
        )
        kills.append(
            await _kill(cluster, follower, "follower", stats, tally, [publisher, consumer])
        )
        await _resumed(kills[-1], stats, tally, n)
        await asyncio.to_thread(cluster.restart_node, follower, 30)
        await eventually(lambda: replicas_current(publisher, "REL"), timeout=30)

        # 2. The stream leader dies; publishes time out until a new one is elected.
        leader = await eventually(lambda: stream_leader(publisher, "REL"))
        old = node_index(cluster, leader)
        kills.append(
            await _kill(cluster, old, "stream leader", stats, tally, [publisher, consumer])
        )
        new_leader = await eventually(
            lambda: _other_leader(publisher, "REL", leader), timeout=30, interval=0.2
        )
        await _resumed(kills[-1], stats, tally, n)
        await asyncio.to_thread(cluster.restart_node, old, 30)

        await publishing
        assert stats.stored == n
        await eventually(lambda: tally.distinct == n, timeout=60)
        check = tally.check(numbers)
        assert check.lost == 0, str(check)
        info = await publisher.stream_info("REL")
        assert info.state.messages == n, "retries reused their CloudEvent id: stored once each"
        # The killed nodes rejoined and caught up: every node holds every message.
        await eventually(lambda: replicas_current(publisher, "REL"), timeout=30)
        await eventually(
            lambda: [node.monitor("jsz")["messages"] for node in cluster.nodes] == [n] * 3,
            timeout=30,
        )
        await eventually(lambda: all_acked(sub, n), timeout=30)
        record(
            "cluster-node-kills",
            fault="3-node cluster, R3 stream and consumer: SIGKILL a follower, restart it, "
            "then SIGKILL the stream leader, restart it",
            check=check,
            seconds=time.monotonic() - started,
            kills=kills,
            new_leader=new_leader,
            stream_messages=info.state.messages,
            publish=stats,
        )
    finally:
        await consumer.close()
        await publisher.close()


async def _kill(
    cluster: LocalCluster,
    index: int,
    role: str,
    stats: PublishStats,
    tally: Tally,
    clients: list[JetStreamPubSub],
) -> dict[str, Any]:
    """SIGKILL one node and say what was going on at that moment."""
    hit = [i for i, ps in enumerate(clients) if connected_index(cluster, ps) == index]
    at = time.monotonic()
    await asyncio.to_thread(cluster.kill_node, index)
    return {
        "at": at,
        "node": cluster.nodes[index].options.server_name,
        "role": role,
        "published_before": stats.stored,
        "handled_before": tally.distinct,
        "clients_connected_to_it": len(hit),
    }


async def _resumed(
    kill: dict[str, Any], stats: PublishStats, tally: Tally, n: int, more: int = 100
) -> None:
    """Note how long after the kill *more* messages (or all that were left) were stored,
    and handled."""
    at = kill.pop("at")
    stored = min(kill["published_before"] + more, n)
    handled = min(kill["handled_before"] + more, n)
    await eventually(lambda: stats.stored >= stored, timeout=60, interval=0.05)
    kill["publishing_resumed_after_s"] = round(time.monotonic() - at, 2)
    await eventually(lambda: tally.distinct >= handled, timeout=60, interval=0.05)
    kill["handling_resumed_after_s"] = round(time.monotonic() - at, 2)


async def _other_leader(ps: JetStreamPubSub, stream: str, old: str) -> str | None:
    leader = await stream_leader(ps, stream)
    return leader if leader not in (None, old) else None


@pytest.mark.slow
async def test_publish_to_a_stream_whose_node_is_down_does_not_claim_it_is_missing(
    cluster: LocalCluster,
) -> None:
    async with JetStreamPubSub({"natsURL": cluster.urls}) as admin:
        info = await ensure_stream(admin, "ONE", ["one"], num_replicas=1)
        assert info.cluster is not None and info.cluster.leader is not None
        home = node_index(cluster, info.cluster.leader)
        await admin.publish("one", "stored")
    others = ",".join(node.url for i, node in enumerate(cluster.nodes) if i != home)
    async with JetStreamPubSub({"natsURL": others}) as ps:
        await asyncio.to_thread(cluster.kill_node, home)
        await cluster.await_meta_leader()
        with pytest.raises((JsnbError, nats.errors.Error, TimeoutError)) as raised:
            await ps.publish("one", "while the stream's only node is down")
        text = str(raised.value)
        assert "no JetStream stream captures" not in text and "ONE" in text, text
