"""Helpers for the reliability tests: numbered publishing, loss checks, a results log.

```
tally = Tally()
await ps.subscribe("orders", tally.handler)
await publish_numbered(ps, "orders", range(1, 1001), prefix="run")  # retries reuse the id
check = tally.check(range(1, 1001))                  # missing / duplicates
record("server-kill", fault="SIGKILL + restart", check=check, seconds=12.5)  # if asked
```

Every fault test publishes messages whose payload is their number, then
compares the set it sent with the set the handlers saw: a message is lost if
no handler ever finished it, duplicated if handlers finished it more than
once (at-least-once delivery allows that; the tests report how often).
With ``JSNB_RELIABILITY_OUT=path`` each fault test appends one JSON line
there; docs/reliability.md is written from those lines.

Run as a module this file is the subscriber *process* that
``test_faults.py`` kills before it acks:
``python -m tests.reliability worker --url ... --log FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors

import jsnb

# Failures a publisher should retry with the same id: the server is away, slow,
# or electing a leader (jsnb reports a leaderless stream as StreamUnavailableError, a
# ConnectionError; see test_cluster_faults.py). Anything else is a bug, and a stream
# that is really missing (StreamNotFoundError) must fail the test, not be retried.
RETRIABLE = (nats.errors.Error, TimeoutError, ConnectionError)
RETRY_PAUSE = 0.1


def payload_number(msg: jsnb.Message) -> int:
    """The number a numbered message carries."""
    return int(msg.data)


@dataclass
class PublishStats:
    """What a numbered publisher did: stored messages, retries, and the errors it retried."""

    stored: int = 0
    duplicates_acked: int = 0  # a retry the stream recognised as already stored
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def publish_one(
    ps: jsnb.JetStreamPubSub,
    topic: str,
    number: int,
    *,
    prefix: str,
    stats: PublishStats,
    deadline: float,
) -> None:
    """Publish one numbered message until the stream acks it, reusing its CloudEvent id."""
    meta = {"cloudevent.id": f"{prefix}-{number}"}
    while True:
        try:
            result = await ps.publish(topic, str(number), metadata=meta)
        except RETRIABLE as exc:
            stats.retries += 1
            stats.errors[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"message {number} was not stored before the deadline; last error: {exc!r}"
                ) from exc
            await asyncio.sleep(RETRY_PAUSE)
            continue
        stats.stored += 1
        stats.duplicates_acked += result.duplicate
        return


async def publish_numbered(
    ps: jsnb.JetStreamPubSub,
    topic: str,
    numbers: Iterable[int],
    *,
    prefix: str,
    concurrency: int = 8,
    rate: float | None = None,
    timeout: float = 90.0,
    stats: PublishStats | None = None,
) -> PublishStats:
    """Publish every number (payload ``str(n)``) with *concurrency* publishers in flight.

    *rate* (messages per second) paces the start of each publish, so a fault
    injected meanwhile lands mid-stream.

    A failed publish is retried with the same ``cloudevent.id``, so the
    stream's duplicate window stores each number once however often it is
    retried. ``stats`` may be passed in to watch progress from another task.
    """
    stats = stats if stats is not None else PublishStats()
    start = time.monotonic()
    deadline = start + timeout
    todo = enumerate(numbers)

    async def worker() -> None:
        for index, number in todo:  # the workers share one iterator: each number goes out once
            if rate:
                await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
            await publish_one(ps, topic, number, prefix=prefix, stats=stats, deadline=deadline)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


@dataclass(frozen=True)
class Check:
    """Sent versus handled, by set comparison."""

    sent: int
    handled: int  # distinct numbers some handler finished
    missing: tuple[int, ...]
    duplicates: int  # handler completions beyond the first, summed over messages
    unexpected: tuple[int, ...] = ()

    @property
    def lost(self) -> int:
        return len(self.missing)

    def __str__(self) -> str:
        shown = ", ".join(map(str, self.missing[:20])) + (" ..." if self.lost > 20 else "")
        return (
            f"sent {self.sent}, handled {self.handled}, lost {self.lost}"
            + (f" ({shown})" if self.missing else "")
            + f", duplicates {self.duplicates}"
            + (f", unexpected {list(self.unexpected[:20])}" if self.unexpected else "")
        )


def compare(expected: Iterable[int], counts: Counter[int]) -> Check:
    """Which expected numbers were never handled, and how many extra completions there were."""
    want = set(expected)
    return Check(
        sent=len(want),
        handled=len(want & counts.keys()),
        missing=tuple(sorted(want - counts.keys())),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        unexpected=tuple(sorted(counts.keys() - want)),
    )


class Tally:
    """Counts handler completions per message number; use ``tally.handler`` as the handler.

    *before* runs first and may raise (a failing handler) or wait (a slow one);
    a completion is counted only when the handler returns.
    """

    def __init__(self, before: Callable[[jsnb.Message], Any] | None = None) -> None:
        self.counts: Counter[int] = Counter()
        self.attempts = 0
        self._before = before

    async def handler(self, msg: jsnb.Message) -> None:
        self.attempts += 1
        if self._before is not None:
            result = self._before(msg)
            if asyncio.iscoroutine(result):
                await result
        self.counts[payload_number(msg)] += 1

    @property
    def distinct(self) -> int:
        return len(self.counts)

    def check(self, expected: Iterable[int]) -> Check:
        return compare(expected, self.counts)


def record(name: str, *, fault: str, check: Check, seconds: float, **extra: Any) -> None:
    """Append one JSON line about a fault test to ``$JSNB_RELIABILITY_OUT``, if it is set."""
    path = os.environ.get("JSNB_RELIABILITY_OUT")
    if not path:
        return
    row = {
        "test": name,
        "fault": fault,
        "sent": check.sent,
        "handled": check.handled,
        "lost": check.lost,
        "duplicates": check.duplicates,
        "seconds": round(seconds, 2),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        **extra,
    }
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(json.dumps(row, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, PublishStats):
        # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs.
        return {**vars(value), "errors": dict(value.errors)}
    raise TypeError(f"not JSON: {type(value).__name__}")


def rss_bytes() -> int:
    """This process's resident set size, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- the subscriber process that dies before it acks ------------------------------------


async def _worker(args: argparse.Namespace) -> None:
    log = Path(args.log).open("a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives until exit
    props = {
        "natsURL": args.url,
        "durableName": args.durable,
        "ackWait": args.ack_wait,
        "maxAckPending": args.max_ack_pending,
    }
    counter = itertools.count(1)

    async def handle(msg: jsnb.Message) -> None:
        number = payload_number(msg)
        if next(counter) <= args.stop_after:
            log.write(f"{number}\n")  # the work is done; the ack follows when we return
            return
        if args.mode == "exit":
            log.write(f"{number}\n")  # the work is done, but the process dies before the ack
            os._exit(3)
        log.write(f"hang {number}\n")
        await asyncio.Event().wait()  # never returns: the test SIGKILLs us here

    ps = await jsnb.JetStreamPubSub().init(props)
    await ps.subscribe(args.topic, handle)
    log.write("ready\n")
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="a durable subscriber that dies before acking")
    worker.add_argument("--url", required=True)
    worker.add_argument("--topic", required=True)
    worker.add_argument("--durable", required=True)
    worker.add_argument("--log", required=True, help="handled numbers are appended here")
    worker.add_argument("--stop-after", type=int, required=True, help="handle this many first")
    worker.add_argument("--mode", choices=["hang", "exit"], default="hang")
    worker.add_argument("--ack-wait", default="1s")
    worker.add_argument("--max-ack-pending", type=int, default=50)
    args = parser.parse_args(argv)
    asyncio.run(_worker(args))


if __name__ == "__main__":
    main()
