"""Load: 200,000 messages through publish -> subscribe -> ack with a live MessageTable attached.

Nothing may be lost, and the process's memory must not grow with the number
of messages: the table keeps a bounded window, maxAckPending bounds what the
subscriber holds, and bulk publishing goes out in chunks.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from jsnb import BulkMessageEntry, JetStreamPubSub, Message, Outcome, ensure_stream
from jsnb.server import NatsServer
from jsnb.widgets.message_table import MessageTable
from tests.reliability import Check, record, rss_bytes
from tests.support import all_acked, eventually

N = 200_000
WARM_UP = 5_000
CHUNK = 2_000
MAX_ROWS = 5_000
# The envelopes alone are about 70 MB; keeping even 170 bytes per message would blow this.
RSS_GROWTH_LIMIT = 32 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_200k_messages_with_a_message_table_lose_nothing_in_bounded_memory(
    nats_server: NatsServer,
) -> None:
    total = WARM_UP + N
    seen = bytearray(total + 1)  # handler completions per number, saturating at 255
    async with JetStreamPubSub({"natsURL": nats_server.url, "durableName": "load"}) as ps:
        await ensure_stream(ps, "LOAD", ["load"])

        def handler(msg: Message) -> None:
            number = int(msg.data)
            if seen[number] < 255:
                seen[number] += 1

        sub = await ps.subscribe("load", handler)
        table = MessageTable(sub, max_rows=MAX_ROWS)

        async def publish(first: int, last: int) -> None:
            for start in range(first, last + 1, CHUNK):
                stop = min(start + CHUNK, last + 1)
                entries = [BulkMessageEntry(str(i), str(i)) for i in range(start, stop)]
                resp = await ps.bulk_publish("load", entries)
                assert resp.ok, resp.failed_entries[:3]

        # Warm up, so imports, buffers and the table's window are in the baseline.
        await publish(1, WARM_UP)
        await eventually(lambda: table.seen >= WARM_UP, timeout=30)
        baseline = rss_bytes()
        peak = baseline
        done = asyncio.Event()

        async def watch_memory() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes())
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch_memory())
        started = time.monotonic()
        await publish(WARM_UP + 1, total)
        published = time.monotonic()
        await eventually(lambda: table.seen >= total, timeout=120, interval=0.1)
        finished = time.monotonic()
        done.set()
        await watcher
        await eventually(lambda: all_acked(sub, total), timeout=30)

        counts = {i: seen[i] for i in range(1, total + 1) if seen[i]}
        check = Check(
            sent=total,
            handled=len(counts),
            missing=tuple(i for i in range(1, total + 1) if not seen[i]),
            duplicates=sum(c - 1 for c in counts.values()),
        )
        assert check.lost == 0, str(check)
        assert table.counts[Outcome.ACK] == total
        assert len(table.rows) == MAX_ROWS, "the table keeps a bounded window"
        growth = peak - baseline
        seconds = finished - started
        rate = N / seconds
        print(
            f"load: {N:,} messages in {seconds:.1f}s = {rate:,.0f} msg/s end to end "
            f"(publish {N / (published - started):,.0f} msg/s); RSS {baseline / 2**20:.0f} MiB, "
            f"peak growth {growth / 2**20:.1f} MiB; table renders {table.renders}"
        )
        record(
            "load-200k",
            fault="none: 200,000 messages bulk-published, consumed, acked; MessageTable attached",
            check=check,
            seconds=seconds,
            messages_per_second=round(rate),
            publish_messages_per_second=round(N / (published - started)),
            rss_baseline_mib=round(baseline / 2**20, 1),
            rss_peak_growth_mib=round(growth / 2**20, 1),
            table_renders=table.renders,
        )
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB"
        table.detach()
