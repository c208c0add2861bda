"""How jsnb's cost grows with the work: subscriptions, stream depth, live views, import.

    python -m bench.scale                         # about 5 minutes on 2 cores
    python -m bench.scale --quick                 # a smoke run, seconds
    python -m bench.scale --only subs,stream      # some tables: subs, stream, views, import

One embedded nats-server (file storage, a temporary store) serves the run.
Each table answers one question a user sizing a notebook or a service asks:

- ``subs``: 1, 10, 100 and 1,000 subscriptions on one component (single
  mode, raw payload, each on its own subject of one stream): time to
  subscribe and to close, memory per subscription, and the total consume
  throughput of one prefilled batch spread evenly across them.
- ``stream``: a 1,000,000-message stream: consume throughput and a
  ``jsnb.browse_stream`` page (``bench.browse``'s cases) at its start and at
  its end. The run fails if the far figure is worse than the near one by
  more than ``bench.browse.FAR_FACTOR``.
- ``views``: a MessageTable and an AdvisoryFeed through 1,000,000 events
  each: memory every 100,000 events, and throughput with the view vs the
  same work without it. The run fails if memory grows by more than
  ``MEMORY_MARGIN`` after the ring filled, or if the view never redrew.
- ``import``: ``import jsnb`` in a fresh process (``bench.run``'s measure).

Results go to ``bench/results/`` as ``scale-<stamp>.json`` and ``.md``, and
``scale-latest.*`` for a full run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson

import jsnb
from bench import browse
from bench.common import Progress, Stats, json_payload
from bench.run import RESULTS, _machine, _measure_import
from jsnb.server import NatsServer
from jsnb.widgets.advisory_feed import AdvisoryFeed
from jsnb.widgets.message_table import MessageTable

TABLES = ("subs", "stream", "views", "import")
RAW = {"rawPayload": "true"}
# A view's memory may grow by this much from the first sample after its ring filled
# to the last (900,000 events later in a full run): 4 bytes an event would exceed it.
MEMORY_MARGIN = 4 * 1024 * 1024
# Per-subscription costs within this factor of one subscription's count as flat
# (and a total throughput no lower than its inverse).
FLAT = 1.5
# Both views redraw at most this often (their default refresh_hz).
REFRESH_HZ = 4.0
# Advisories are published in chunks, never more than this many ahead of the reader:
# below the 10,000 that jsnb.Advisories buffers, so none is dropped.
ADV_CHUNK, ADV_AHEAD = 2000, 6000
ADV_SUBJECT = "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.BIG.bench"


@dataclass(frozen=True)
class Sizes:
    sub_counts: tuple[int, ...]
    sub_messages: int  # one batch, spread evenly across the subscriptions
    sub_runs: int
    stream_messages: int
    depth_messages: int  # read from the start and from the end of the stream
    depth_runs: int
    page_runs: int
    view_events: int
    view_sample: int  # memory is sampled every this many events
    view_rounds: int  # each a run without the view and one with it
    imports: int


FULL = Sizes(
    sub_counts=(1, 10, 100, 1000),
    sub_messages=20_000,
    sub_runs=3,
    stream_messages=1_000_000,
    depth_messages=20_000,
    depth_runs=5,
    page_runs=browse.RUNS,
    view_events=1_000_000,
    view_sample=100_000,
    view_rounds=3,
    imports=5,
)
QUICK = Sizes(
    sub_counts=(1, 10, 100),
    sub_messages=2000,
    sub_runs=1,
    stream_messages=20_000,
    depth_messages=2000,
    depth_runs=1,
    page_runs=2,
    view_events=20_000,
    view_sample=5000,
    view_rounds=1,
    imports=2,
)


def _stats(values: list[float]) -> dict[str, Any]:
    return Stats(values).as_dict()


def _rss() -> int:
    """This process's resident memory, bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _component(url: str, **props: str) -> jsnb.JetStreamPubSub:
    return jsnb.JetStreamPubSub({"natsURL": url, **props})


# -- table 1: subscriptions on one component ----------------------------------------------


async def _noop(msg: jsnb.Message) -> None:
    pass


async def _subscribe_idle(url: str, n: int) -> dict[str, float]:
    """Subscribe *n* times to subjects with nothing stored, then close them all.

    Seconds for each, client CPU seconds of the subscribing and, from 100 on,
    how the last tenth of the subscribe calls compares with the first tenth
    (medians): within one run, so load on the machine hits both alike.
    """
    ps = await _component(url).init()
    calls = []
    cpu = time.process_time()
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await ps.subscribe(f"subs.idle.{n}.{i}", _noop, metadata=RAW)
        calls.append(time.perf_counter() - t)
    took = time.perf_counter() - start
    cpu = time.process_time() - cpu
    start = time.perf_counter()
    await ps.close()
    out = {"subscribe_s": took, "subscribe_cpu_s": cpu, "close_s": time.perf_counter() - start}
    if n >= 100:
        tenth = n // 10
        out["last_vs_first"] = statistics.median(calls[-tenth:]) / statistics.median(calls[:tenth])
    return out


async def _traced(url: str, n: int) -> float:
    """Bytes of Python memory *n* idle subscriptions hold (tracemalloc), per subscription."""
    ps = await _component(url).init()
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            await ps.subscribe(f"subs.idle.{n}.{i}", _noop, metadata=RAW)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        await ps.close()
    return held / n


async def _consume_spread(url: str, n: int, total: int) -> tuple[float, float]:
    """Msgs/s and client CPU µs/msg of *total* prefilled messages over *n* subscriptions.

    Every handler waits at a gate until the last subscription exists, so the
    time to subscribe is not counted as time to consume; the count runs from
    the first delivery after the gate to the last.
    """
    gate = asyncio.Event()
    progress = Progress(total)

    async def handle(msg: jsnb.Message) -> None:
        if not gate.is_set():
            await gate.wait()
        progress.hit()

    async with _component(url) as ps:
        for i in range(n):
            await ps.subscribe(f"subs.{n}.{i}", handle, metadata=RAW)
        cpu = time.process_time()
        gate.set()
        rate = await progress.wait(timeout=max(60.0, total / 1000))
        cpu = time.process_time() - cpu
    return rate, cpu / total * 1e6


async def subs_table(url: str, sizes: Sizes, say: Callable[..., None]) -> dict[str, Any]:
    counts = sizes.sub_counts
    payload = orjson.dumps(json_payload(128))
    async with _component(url) as admin:
        await jsnb.ensure_stream(admin, "SUBS", ["subs.>"])
        for n in counts:
            subjects = [f"subs.{n}.{i}" for i in range(n)]
            await browse.publish(admin, url, "SUBS", subjects, sizes.sub_messages, payload)
    await _subscribe_idle(url, 1)  # warm-up: first-use imports and caches
    traced = {}
    for n in counts:
        traced[n] = await _traced(url, n)
        say(f"  subs {n}: {traced[n] / 1024:.1f} KiB traced per subscription")
    runs: dict[int, dict[str, list[float]]] = {
        n: {"subscribe_s": [], "subscribe_cpu_s": [], "close_s": [], "rate": [], "cpu_us": []}
        for n in counts
    }
    for run in range(sizes.sub_runs):
        # Alternate the order, so drift over the run does not favour small or large counts.
        for n in counts if run % 2 == 0 else counts[::-1]:
            idle = await _subscribe_idle(url, n)
            for key, value in idle.items():
                runs[n].setdefault(key, []).append(value)
            rate, cpu_us = await _consume_spread(url, n, n * (sizes.sub_messages // n))
            runs[n]["rate"].append(rate)
            runs[n]["cpu_us"].append(cpu_us)
            say(
                f"  subs {n} run {run + 1}: subscribe {idle['subscribe_s']:.2f}s, "
                f"close {idle['close_s']:.2f}s, {rate:,.0f} msgs/s"
            )
    return {
        "messages": sizes.sub_messages,
        "by_count": {
            str(n): {
                "traced_bytes_per_sub": traced[n],
                **{key: _stats(values) for key, values in runs[n].items()},
            }
            for n in counts
        },
    }


def _subs_flatness(data: dict[str, Any]) -> dict[str, Any]:
    """The largest count against one subscription: per-subscription costs and throughput."""
    by = data["by_count"]
    lo, hi = min(by, key=int), max(by, key=int)
    a, b, n = by[lo], by[hi], int(hi) / int(lo)
    memory = b["traced_bytes_per_sub"] / a["traced_bytes_per_sub"]
    subscribe = b["subscribe_s"]["median"] / n / a["subscribe_s"]["median"]
    cpu = b["subscribe_cpu_s"]["median"] / n / a["subscribe_cpu_s"]["median"]
    drift = b["last_vs_first"]["median"]
    close = b["close_s"]["median"] / n / a["close_s"]["median"]
    rate = b["rate"]["median"] / a["rate"]["median"]
    return {
        "lo": int(lo),
        "hi": int(hi),
        "rows": [
            # (what, ratio, flat): per-subscription costs must not grow, throughput not fall.
            ("memory per subscription", memory, memory <= FLAT),
            ("time to subscribe, per subscription", subscribe, subscribe <= FLAT),
            ("client CPU to subscribe, per subscription", cpu, cpu <= FLAT),
            (f"the last tenth of the {hi} subscribe calls against the first", drift, drift <= FLAT),
            ("time to close, per subscription", close, close <= FLAT),
            ("total consume throughput", rate, rate >= 1 / FLAT),
        ],
    }


# -- table 2: a big stream, near and far ------------------------------------------------


async def _ensure_big(
    url: str, sizes: Sizes, state: dict[str, Any], say: Callable[..., None]
) -> None:
    """Fill ``BIG`` once for the tables that read it."""
    if state.get("filled"):
        return
    async with _component(url) as admin:
        say(f"filling {sizes.stream_messages:,} messages ...")
        state["fill_s"] = await browse.fill(admin, url, sizes.stream_messages)
    state["filled"] = True
    say(f"  filled in {state['fill_s']:.0f}s")


async def _consume_from(url: str, n: int, start_seq: int) -> tuple[float, float]:
    """Msgs/s over *n* messages of ``big.>`` from *start_seq*, and ms to the first delivery."""
    props = {"deliverPolicy": "sequence", "startSequence": str(start_seq)}
    progress = Progress(n)

    async def handle(msg: jsnb.Message) -> None:
        progress.hit()

    async with _component(url, **props) as ps:
        start = time.perf_counter()
        sub = await ps.subscribe("big.>", handle, metadata=RAW)
        rate = await progress.wait(timeout=max(60.0, n / 1000))
        first_ms = (progress.first - start) * 1000
        await sub.unsubscribe()
    return rate, first_ms


async def stream_table(
    url: str, sizes: Sizes, state: dict[str, Any], say: Callable[..., None]
) -> dict[str, Any]:
    await _ensure_big(url, sizes, state, say)
    last, n = sizes.stream_messages, sizes.depth_messages
    pages = {}
    async with _component(url) as ps:
        # First, while "since 1s ago" still finds the newest messages of the fill.
        for name, read in browse.cases(ps, last).items():
            m = await browse.measure(read, sizes.page_runs)
            pages[name] = {"ms": _stats(m["ms"]), "peak_kib": m["peak_kib"], "rows": m["rows"]}
    starts = {"near": 1, "far": last - n + 1}
    runs: dict[str, dict[str, list[float]]] = {k: {"rate": [], "first_ms": []} for k in starts}
    for run in range(sizes.depth_runs):
        for where in ("near", "far") if run % 2 == 0 else ("far", "near"):
            rate, first_ms = await _consume_from(url, n, starts[where])
            runs[where]["rate"].append(rate)
            runs[where]["first_ms"].append(first_ms)
            say(f"  {where} run {run + 1}: {rate:,.0f} msgs/s, first after {first_ms:.0f} ms")
    near_rate = statistics.median(runs["near"]["rate"])
    far_rate = statistics.median(runs["far"]["rate"])
    near_page = pages[browse.NEAR]["ms"]["median"]
    far_page = pages[browse.FAR]["ms"]["median"]
    return {
        "messages": last,
        "read": n,
        "fill_s": state["fill_s"],
        "start_seq": starts,
        "consume": {k: {key: _stats(v) for key, v in r.items()} for k, r in runs.items()},
        "pages": pages,
        "checks": [
            {
                "what": "consume at the end, cost against the start",
                "ratio": near_rate / far_rate,
                "met": far_rate * browse.FAR_FACTOR >= near_rate,
            },
            {
                "what": "a page at the end, cost against seq 1",
                "ratio": far_page / near_page,
                "met": far_page <= browse.FAR_FACTOR * near_page,
            },
        ],
    }


# -- table 3: live views ----------------------------------------------------------------


def _sample(events: int) -> dict[str, float]:
    return {
        "events": events,
        "t": time.perf_counter(),
        "cpu": time.process_time(),
        "rss": _rss(),
        "blocks": sys.getallocatedblocks(),  # pymalloc blocks in use: Python-level growth
    }


def _summarise(samples: list[dict[str, float]], ring: int, renders: int | None) -> dict[str, Any]:
    """Throughput per segment between samples, and memory from the ring filling to the end."""
    first, last = samples[0], samples[-1]
    rates = [
        (b["events"] - a["events"]) / (b["t"] - a["t"]) for a, b in itertools.pairwise(samples)
    ]
    ref = next(s for s in samples[1:] if s["events"] >= ring)  # the first sample, ring full
    events = last["events"] - first["events"]
    return {
        "rate": events / (last["t"] - first["t"]),
        "segment_rates": _stats(rates),
        "cpu_us": (last["cpu"] - first["cpu"]) / events * 1e6,
        "ring": ring,
        "ref_events": ref["events"],
        "duration": last["t"] - first["t"],
        "rss_growth": last["rss"] - ref["rss"],
        "blocks_growth": last["blocks"] - ref["blocks"],
        "renders": renders,
        "samples": samples,
    }


async def _table_run(url: str, sizes: Sizes, view: MessageTable | None) -> dict[str, Any]:
    """Consume ``view_events`` of ``big.>`` from seq 1, with *view* attached or without."""
    n, every = sizes.view_events, sizes.view_sample
    progress = Progress(n)
    samples: list[dict[str, float]] = []

    async def handle(msg: jsnb.Message) -> None:
        progress.hit()
        if progress.count % every == 0 or progress.count == 1:
            samples.append(_sample(progress.count))

    async with _component(url) as ps:
        gc.collect()
        sub = await ps.subscribe("big.>", handle, metadata=RAW)
        renders = 0
        if view is not None:
            view.attach(sub)
            renders = view.renders
        await progress.wait(timeout=max(120.0, n / 1000))
        if view is not None:
            renders = view.renders - renders
            view.detach()
            view.pause()  # cancels a pending redraw
        await sub.unsubscribe()
    ring = view.max_rows if view is not None else 0
    return _summarise(samples, ring, renders if view is not None else None)


def _advisory_body() -> bytes:
    """A NAK advisory as nats-server 2.x sends it (io.nats.jetstream.advisory.v1.nak)."""
    return orjson.dumps(
        {
            "type": "io.nats.jetstream.advisory.v1.nak",
            "id": "4VZ4nVhaS6YvDgKzgOgIcq",
            "timestamp": "2025-01-01T12:00:00.123456789Z",
            "stream": "BIG",
            "consumer": "bench",
            "consumer_seq": 7,
            "stream_seq": 7,
            "deliveries": 1,
            "domain": "",
        }
    )


async def _advisory_run(url: str, sizes: Sizes, widget: bool) -> dict[str, Any]:
    """``view_events`` advisories through an AdvisoryFeed, or a bare ``ps.advisories`` reader.

    A raw nats-py client in this process publishes them on the subject
    nats-server uses, a chunk at a time, never more than ``ADV_AHEAD`` ahead
    of what was read. Both sides pay for the publishing alike.
    """
    n, every = sizes.view_events, sizes.view_sample
    body = _advisory_body()
    samples: list[dict[str, float]] = []
    seen = 0

    async with _component(url) as ps:
        view = AdvisoryFeed(ps, "BIG", kinds=["nak"]) if widget else None
        reader: asyncio.Task[None] | None = None
        if view is not None:
            await view.start()  # its own ps.advisories() feed and listener task
            assert view._feed is not None
            feed = view._feed

            def received() -> int:
                return view.counts[jsnb.AdvisoryKind.NAK]
        else:
            feed = await ps.advisories("BIG", kinds=["nak"]).start()

            async def read() -> None:
                nonlocal seen
                async for _ in feed:
                    seen += 1

            reader = asyncio.create_task(read())

            def received() -> int:
                return seen

        renders = view.renders if view is not None else 0
        pub = await nats.connect(url)
        try:
            gc.collect()
            deadline = time.monotonic() + max(120.0, n / 1000)
            samples.append(_sample(0))
            mark = every
            sent = 0
            while sent < n:
                for _ in range(min(ADV_CHUNK, n - sent)):
                    await pub.publish(ADV_SUBJECT, body)
                sent += min(ADV_CHUNK, n - sent)
                await pub.flush()
                behind = 0 if sent == n else ADV_AHEAD
                while received() < sent - behind:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"advisories: {received():,} of {n:,} read")
                    await asyncio.sleep(0.001)
                while received() >= mark:
                    samples.append(_sample(mark))
                    mark += every
        finally:
            await pub.close()
            if view is not None:
                renders = view.renders - renders
                await view.stop()
                view.pause()
            else:
                await feed.aclose()
            if reader is not None:
                reader.cancel()
    out = _summarise(samples, view._rows.maxlen or 0 if view else 0, renders if view else None)
    out["dropped"] = feed.dropped
    return out


async def views_table(
    url: str, sizes: Sizes, state: dict[str, Any], say: Callable[..., None]
) -> dict[str, Any]:
    await _ensure_big(url, sizes, state, say)
    out: dict[str, Any] = {"events": sizes.view_events, "sample_every": sizes.view_sample}
    runs: dict[str, Callable[[bool], Awaitable[dict[str, Any]]]] = {
        "MessageTable": lambda on: _table_run(url, sizes, MessageTable() if on else None),
        "AdvisoryFeed": lambda on: _advisory_run(url, sizes, widget=on),
    }
    checks = []
    for name, one in runs.items():
        by: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for r in range(sizes.view_rounds):
            # Alternate who goes first, so drift over the rounds hits both sides alike.
            for on in (False, True) if r % 2 == 0 else (True, False):
                got = await one(on)
                by["with" if on else "without"].append(got)
                say(
                    f"  {name} {'with' if on else 'without'} round {r + 1}: "
                    f"{got['rate']:,.0f} events/s, RSS {_mib(got['rss_growth'])} after the ring"
                )
        w, wo = by["with"], by["without"]
        rate_w, rate_wo = _stats([x["rate"] for x in w]), _stats([x["rate"] for x in wo])
        cpu_w, cpu_wo = _stats([x["cpu_us"] for x in w]), _stats([x["cpu_us"] for x in wo])
        growth = max(x["rss_growth"] for x in w)
        # A draw every 1/refresh_hz seconds while events flow; half of that is plenty of proof.
        short = [x for x in w if x["renders"] < max(1, x["duration"] * REFRESH_HZ / 2)]
        out[name] = {
            "runs": by,
            "rate": {"without": rate_wo, "with": rate_w},
            "cpu_us": {"without": cpu_wo, "with": cpu_w},
            "ratio": rate_w["median"] / rate_wo["median"],
            "cpu_ratio": cpu_w["median"] / cpu_wo["median"],
            "rss_growth": growth,
            "renders": [x["renders"] for x in w],
        }
        checks += [
            {
                "what": f"{name}: memory after the ring filled",
                "value": growth,
                "met": growth <= MEMORY_MARGIN,
            },
            {
                "what": f"{name}: redrawn during the run",
                "value": out[name]["renders"],
                "met": not short,
            },
        ]
    out["checks"] = checks
    return out


# -- the run ----------------------------------------------------------------------------


async def suite(sizes: Sizes, only: set[str], say: Callable[..., None]) -> dict[str, Any]:
    began = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    data: dict[str, Any] = {"sizes": asdict(sizes), "tables": {}}
    tables = data["tables"]
    state: dict[str, Any] = {}
    if "import" in only:
        times, heavy = _measure_import(sizes.imports)
        tables["import"] = {"s": _stats(times), "heavy": heavy}
    with tempfile.TemporaryDirectory(prefix="jsnb-scale-") as store:
        async with NatsServer(store_dir=Path(store)) as server:
            if "subs" in only:
                say("subscriptions ...")
                tables["subs"] = await subs_table(server.url, sizes, say)
                tables["subs"]["flatness"] = _subs_flatness(tables["subs"])
            if "stream" in only:
                say("a big stream ...")
                tables["stream"] = await stream_table(server.url, sizes, state, say)
            if "views" in only:
                say("live views ...")
                tables["views"] = await views_table(server.url, sizes, state, say)
    data["machine"] = {
        **_machine(False),
        "load_start": load_start,
        "load_end": round(os.getloadavg()[0], 2),
    }
    data["elapsed_s"] = time.perf_counter() - began
    return data


def failures(data: dict[str, Any]) -> list[str]:
    """What failed: a far figure, a growing view, a view that never drew, a heavy import."""
    tables = data["tables"]
    out = [
        c["what"]
        for key in ("stream", "views")
        for c in tables.get(key, {}).get("checks", [])
        if not c["met"]
    ]
    if tables.get("import", {}).get("heavy"):
        out.append(f"import jsnb imported {', '.join(tables['import']['heavy'])}")
    return out


# -- report ------------------------------------------------------------------------------


def _range(s: dict[str, Any], fmt: str = ",.0f", scale: float = 1.0) -> str:
    """Median (min-max) of *s*, each times *scale*; just the value for a single run."""

    def f(v: float) -> str:
        return format(v * scale, fmt)

    if len(s["runs"]) == 1:
        return f(s["median"])
    return f"{f(s['median'])} ({f(s['min'])}-{f(s['max'])})"


def _mib(b: float) -> str:
    return f"{b / 2**20:+.1f} MiB"


def markdown(data: dict[str, Any]) -> str:
    m, t = data["machine"], data["tables"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}; "
        f"nats-py {m['nats-py']}, nats-server {m['nats-server']}; "
        f"load average {m['load_start']} at start, {m['load_end']} at end.",
        "",
    ]
    if "subs" in t:
        lines += _subs_md(t["subs"])
    if "stream" in t:
        lines += _stream_md(t["stream"])
    if "views" in t:
        lines += _views_md(t["views"])
    if "import" in t:
        i = t["import"]
        lines += [
            f"`import jsnb` in a fresh process: {_range(i['s'], '.0f', 1000)} ms; "
            f"pandas, ipywidgets, matplotlib imported: {', '.join(i['heavy']) or 'none'}.",
            "",
        ]
    fails = failures(data)
    verdict = "FAILED: " + "; ".join(fails) if fails else "Every check held."
    lines.append(f"Whole run: {data['elapsed_s']:.0f} s. {verdict}")
    return "\n".join(lines)


def _subs_md(s: dict[str, Any]) -> list[str]:
    by = s["by_count"]
    runs = len(next(iter(by.values()))["rate"]["runs"])
    lines = [
        f"Subscriptions on one component: single mode, raw payload, each on its own subject "
        f"of one stream; {s['messages']:,} prefilled messages spread evenly across them, "
        f"held at a gate until the last subscription exists. Median (min-max) of {runs} runs:",
        "",
        "| subscriptions | subscribe all, ms | per subscription, ms | client CPU per "
        "subscription, ms | close all, ms | per subscription, ms | KiB per subscription "
        "| total msgs/s | client CPU µs/msg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, row in by.items():
        k = int(n)
        sub, close = row["subscribe_s"], row["close_s"]
        lines.append(
            f"| {k:,} | {_range(sub, ',.1f', 1000)} | {_range(sub, '.2f', 1000 / k)} "
            f"| {_range(row['subscribe_cpu_s'], '.2f', 1000 / k)} "
            f"| {_range(close, ',.1f', 1000)} | {_range(close, '.2f', 1000 / k)} "
            f"| {row['traced_bytes_per_sub'] / 1024:.1f} "
            f"| {_range(row['rate'])} | {_range(row['cpu_us'], '.1f')} |"
        )
    f = s["flatness"]
    verdicts = [
        f"{what} {ratio:.2f}x ({'flat' if ok else '**not flat**'})" for what, ratio, ok in f["rows"]
    ]
    lines += [
        "",
        f"{f['hi']:,} subscriptions against {f['lo']}: " + "; ".join(verdicts) + ". "
        f"Flat: a per-subscription cost at most {FLAT:g}x, a throughput at least {1 / FLAT:.2f}x. "
        "Memory is what tracemalloc sees held by idle subscriptions (Python objects, nats-py's "
        "buffers included), divided by the count.",
        "",
    ]
    return lines


def _stream_md(s: dict[str, Any]) -> list[str]:
    c, runs = s["consume"], len(s["consume"]["near"]["rate"]["runs"])
    lines = [
        f"A stream of {s['messages']:,} messages of 128 B (file storage, filled by core "
        f"publishes in {s['fill_s']:.0f} s): consume + ack of {s['read']:,} (raw payload, "
        f"median (min-max) of {runs} runs) from each end, and `jsnb.browse_stream` pages "
        "(`bench.browse`'s cases):",
        "",
        "| case | msgs/s, or ms a page | first delivery, ms |",
        "| --- | --- | --- |",
        f"| consume from seq 1 | {_range(c['near']['rate'])} msgs/s "
        f"| {_range(c['near']['first_ms'])} |",
        f"| consume from seq {s['start_seq']['far']:,} (`deliverPolicy: sequence`) "
        f"| {_range(c['far']['rate'])} msgs/s | {_range(c['far']['first_ms'])} |",
    ]
    for name, p in s["pages"].items():
        lines.append(
            f"| {name}: {p['rows']} rows, peak {p['peak_kib']:.0f} KiB "
            f"| {_range(p['ms'], '.1f')} ms | - |"
        )
    checks = [
        f"{c['what']}: {c['ratio']:.2f}x ({'ok' if c['met'] else '**FAIL**'})" for c in s["checks"]
    ]
    lines += [
        "",
        "; ".join(checks) + f". The run fails past {browse.FAR_FACTOR:g}x.",
        "",
    ]
    return lines


def _views_md(v: dict[str, Any]) -> list[str]:
    rounds = len(v["MessageTable"]["runs"]["with"])
    lines = [
        f"Live views through {v['events']:,} events each, {rounds} rounds of a run without the "
        "view and one with it (the order alternates): a MessageTable attached to a subscription "
        f"reading the {v['events']:,}-message stream, an AdvisoryFeed recording NAK advisories "
        "that a raw nats-py client publishes where nats-server does (against a bare "
        "`ps.advisories()` reader). Headless: a redraw builds its rows and sends them to no "
        "frontend.",
        "",
        "| view | events/s without | events/s with | with / without | client CPU µs/event "
        "without / with | redraws | RSS growth after the ring filled |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("MessageTable", "AdvisoryFeed"):
        r = v[name]
        ring = r["runs"]["with"][0]["ring"]
        below = "" if r["ratio"] >= 0.9 else ", **below 0.9x**"
        lines.append(
            f"| {name} (ring of {ring:,}) | {_range(r['rate']['without'])} "
            f"| {_range(r['rate']['with'])} | {r['ratio']:.2f}x{below} "
            f"| {r['cpu_us']['without']['median']:.1f} / {r['cpu_us']['with']['median']:.1f} "
            f"| {', '.join(map(str, r['renders']))} | at most {_mib(r['rss_growth'])} |"
        )
    first = v["MessageTable"]["runs"]["with"][0]["samples"][1:]
    lines += [
        "",
        "RSS of the process, MiB, by events seen (first round):",
        "",
        "| run | " + " | ".join(f"{s['events']:,}" for s in first) + " |",
        "| --- |" + " --- |" * len(first),
    ]
    for name in ("MessageTable", "AdvisoryFeed"):
        for side in ("without", "with"):
            samples = v[name]["runs"][side][0]["samples"][1:]
            cells = " | ".join(f"{s['rss'] / 2**20:.1f}" for s in samples)
            lines.append(f"| {name} {side} | {cells} |")
    dropped = sum(x["dropped"] for side in v["AdvisoryFeed"]["runs"].values() for x in side)
    lines += [
        "",
        f"The run fails if RSS grows more than {MEMORY_MARGIN / 2**20:g} MiB from the first "
        "sample after the ring filled to the last, or if a view drew fewer than half the "
        f"redraws its {REFRESH_HZ:g} Hz allow; the throughput ratio (target >= 0.9x) is "
        f"reported, not enforced. Advisories dropped by the reader's buffer: {dropped}.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    parser.add_argument("--only", default="", help=f"comma-separated tables: {','.join(TABLES)}")
    parser.add_argument("-q", "--quiet", dest="verbose", action="store_false")
    args = parser.parse_args(argv)
    only = set(filter(None, args.only.split(","))) or set(TABLES)
    if only - set(TABLES):
        parser.error(
            f"unknown table {', '.join(sorted(only - set(TABLES)))}; pick from {', '.join(TABLES)}"
        )
    say = print if args.verbose else (lambda *a, **k: None)
    data = asyncio.run(suite(QUICK if args.quick else FULL, only, say))
    table = markdown(data)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    names = ["scale-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")]
    if not (args.quick or args.only):  # only a full run becomes "latest"
        names.append("scale-latest")
    for name in names:
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(table + "\n")
    return 1 if failures(data) else 0


if __name__ == "__main__":
    sys.exit(main())
