"""What a page of ``jsnb.browse_stream`` costs, at the start and at the end of a big stream.

    python -m bench.browse                   # 1,000,000 messages, about a minute on 2 cores
    python -m bench.browse --messages 100000

One embedded nats-server (file storage, a temporary store) holds a stream of
*messages* 128-byte messages on two subjects. Each case reads a page of 50
(the default) several times and reports the median wall time and the peak
Python memory of one read (tracemalloc). The issue asks that a page cost the
same at seq 1 and seq 999,999: the table shows it, and the run fails if the
far page takes more than ``FAR_FACTOR`` times the near one. ``bench.scale``
reuses the fill and the cases for its stream table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import nats

import jsnb
from jsnb.server import NatsServer

RUNS = 7
STREAM = "BIG"
FAR_FACTOR = 3.0  # the far page may cost at most this many times the near one
NEAR, FAR = "page at seq 1", "page at the end"
FILL_AHEAD = 2000  # core publishes in flight while filling, well below the server's ingest queue
STALL = 5.0  # seconds without a message stored before a fill gives up


async def fill(ps: jsnb.JetStreamPubSub, url: str, count: int) -> float:
    """Fill stream ``BIG`` (``big.even``, ``big.odd``) with *count* 128-byte messages; seconds."""
    await jsnb.ensure_stream(ps, STREAM, ["big.>"])
    return await publish(ps, url, STREAM, ["big.even", "big.odd"], count, b"x" * 128)


async def publish(
    ps: jsnb.JetStreamPubSub,
    url: str,
    stream: str,
    subjects: Sequence[str],
    count: int,
    payload: bytes,
    *,
    timeout: float = 600.0,
) -> float:
    """*count* core publishes of *payload*, round the *subjects*, all stored in *stream*.

    Returns the seconds until the server had stored them all. Waiting for
    each ack would take minutes; but nats-server drops what a stream cannot
    ingest fast enough ("IPQ len limit reached"), so the publisher stays at
    most ``FILL_AHEAD`` messages ahead of what is stored.
    """
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    held = (await ps.stream_info(stream)).state.messages
    nc = await nats.connect(url)
    try:
        for i in range(count):
            await nc.publish(subjects[i % len(subjects)], payload)
            if (i + 1) % FILL_AHEAD == 0:
                await stored(ps, stream, held + i + 1 - FILL_AHEAD, deadline - time.monotonic())
    finally:
        await nc.close()
    await stored(ps, stream, held + count, deadline - time.monotonic())
    return time.perf_counter() - started


async def stored(ps: jsnb.JetStreamPubSub, stream: str, count: int, timeout: float) -> None:
    """Wait until *stream* holds *count* messages: core publishes are stored a little later.

    Raises if the count stops growing for ``STALL`` seconds (the server dropped
    some) or after *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while (held := (await ps.stream_info(stream)).state.messages) < count:
        now = time.monotonic()
        if held != last:
            last, since = held, now
        if now > deadline or now - since > STALL:
            raise TimeoutError(
                f"{stream} holds {held:,} of {count:,} messages, no more for "
                f"{now - since:.1f}s: the server dropped some"
            )
        await asyncio.sleep(0.005)


def cases(ps: jsnb.JetStreamPubSub, last: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The pages read, by name, in a stream whose last sequence is *last*."""
    return {
        # First: only right after the fill are the messages of the last second the newest.
        "since 1s ago (the newest)": lambda: jsnb.browse_stream(ps, STREAM, since="1s"),
        NEAR: lambda: jsnb.browse_stream(ps, STREAM, start_seq=1),
        f"page at seq {last // 2:,}": lambda: jsnb.browse_stream(ps, STREAM, start_seq=last // 2),
        FAR: lambda: jsnb.browse_stream(ps, STREAM, start_seq=last - 49),
        "subject big.odd near the end": lambda: jsnb.browse_stream(
            ps, STREAM, start_seq=last - 100, subject="big.odd"
        ),
        "page of 1000 at the end": lambda: jsnb.browse_stream(
            ps, STREAM, start_seq=last - 999, limit=1000
        ),
    }


async def measure(read: Callable[[], Awaitable[Any]], runs: int = RUNS) -> dict[str, Any]:
    """Milliseconds of each of *runs* reads, the peak KiB of one more, and its rows."""
    await read()  # untimed: the first page of a process also pays for importing pandas
    times = []
    rows = 0
    for _ in range(runs):
        start = time.perf_counter()
        rows = len(await read())
        times.append((time.perf_counter() - start) * 1000)
    tracemalloc.start()
    await read()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"ms": times, "peak_kib": peak / 1024, "rows": rows}


async def run(messages: int) -> int:
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp)) as server:
        async with jsnb.JetStreamPubSub({"natsURL": server.url}) as ps:
            took = await fill(ps, server.url, messages)
            print(f"filled {messages:,} messages in {took:.1f}s")
            print("| case | rows | median ms | peak KiB |\n| --- | --- | --- | --- |")
            results = {}
            for name, read in cases(ps, messages).items():
                m = await measure(read)
                results[name] = statistics.median(m["ms"])
                print(f"| {name} | {m['rows']} | {results[name]:.1f} | {m['peak_kib']:.0f} |")
    near, far = results[NEAR], results[FAR]
    if far > FAR_FACTOR * near:
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
