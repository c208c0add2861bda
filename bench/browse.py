"""What a page of ``jsnb.browse_stream`` costs, at the start and at the end of a big stream.

    python -m bench.browse                   # 1,000,000 messages, about a minute on 2 cores
    python -m bench.browse --messages 100000

One embedded nats-server (file storage, a temporary store) holds a stream of
*messages* 128-byte messages on two subjects. Each case reads a page of 50
(the default) several times and reports the median wall time and the peak
Python memory of one read (tracemalloc). The issue asks that a page cost the
same at seq 1 and seq 999,999: the table shows it, and the run fails if the
far page takes more than three times the near one.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats

import jsnb
from jsnb.server import NatsServer

RUNS = 7


async def _fill(url: str, count: int) -> None:
    nc = await nats.connect(url)
    try:
        payload = b"x" * 128
        for i in range(count):
            # Core publishes: the stream stores them; waiting for each ack would take minutes.
            await nc.publish("big.even" if i % 2 == 0 else "big.odd", payload)
            if i % 10_000 == 0:
                await nc.flush()
        await nc.flush()
    finally:
        await nc.close()


async def _measure(read: Callable[[], Awaitable[Any]]) -> tuple[float, float, int]:
    """Median milliseconds, peak KiB of one read, and the rows it returned."""
    times = []
    rows = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        rows = len(await read())
        times.append((time.perf_counter() - start) * 1000)
    tracemalloc.start()
    await read()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 1024, rows


async def run(messages: int) -> int:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp)) as server:
        async with jsnb.JetStreamPubSub({"natsURL": server.url}) as ps:
            await jsnb.ensure_stream(ps, "BIG", ["big.>"])
            started = time.perf_counter()
            await _fill(server.url, messages)
            while (await ps.stream_info("BIG")).state.messages < messages:
                await asyncio.sleep(0.1)
            print(f"filled {messages:,} messages in {time.perf_counter() - started:.1f}s")
            last = messages
            cases = {
                "page at seq 1": lambda: jsnb.browse_stream(ps, "BIG", start_seq=1),
                f"page at seq {last // 2:,}": lambda: jsnb.browse_stream(
                    ps, "BIG", start_seq=last // 2
                ),
                f"page at seq {last - 50:,}": lambda: jsnb.browse_stream(
                    ps, "BIG", start_seq=last - 50
                ),
                "subject big.odd near the end": lambda: jsnb.browse_stream(
                    ps, "BIG", start_seq=last - 100, subject="big.odd"
                ),
                "since 1s ago (the newest)": lambda: jsnb.browse_stream(ps, "BIG", since="1s"),
                "page of 1000 at the end": lambda: jsnb.browse_stream(
                    ps, "BIG", start_seq=last - 1000, limit=1000
                ),
            }
            print("| case | rows | median ms | peak KiB |\n| --- | --- | --- | --- |")
            results = {}
            for name, read in cases.items():
                ms, kib, rows = await _measure(read)
                results[name] = ms
                print(f"| {name} | {rows} | {ms:.1f} | {kib:.0f} |")
    near, far = results["page at seq 1"], results[f"page at seq {last - 50:,}"]
    if far > 3 * near:
        print(f"FAIL: the far page took {far:.1f} ms, the near one {near:.1f} ms")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    return asyncio.run(run(args.messages))


if __name__ == "__main__":
    sys.exit(main())
