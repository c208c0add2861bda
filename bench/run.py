"""Run the benchmark suite: jsnb vs raw nats-py vs FastStream, same server, same run.

    python -m bench                # about 3 minutes on 2 cores
    python -m bench --uvloop       # the same on uvloop
    python -m bench --quick        # a smoke run with small counts

One embedded nats-server (file storage, temporary store) serves every
measurement. Implementations take turns within each run (the order rotates),
so drift in the machine hits them alike. Results go to ``bench/results/`` as
JSON and as the markdown table printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.js import api

from bench.common import PUBSUB_NAME, SOURCE, Pacer, Stats, json_payload, percentile
from jsnb.cloudevents import wrap
from jsnb.server import NatsServer, nats_server_version

RESULTS = Path(__file__).parent / "results"
SIZES = (128, 4096)
PARALLEL_WORK = 0.010  # seconds each parallel handler awaits
PARALLEL_CEILING = 256 / PARALLEL_WORK  # maxAckPending / handler time: 25,600 msgs/s
LATENCY_RATE = 500  # msgs/s
BATCH = 100
PULL_BATCH = 256  # jsnb.pull.PULL_BATCH, the batch jsnb's pull mode asks for
# Publishes go to PUB (purged after each run), consumers read the prefilled
# CONS, latency runs use LAT (purged after each run).
STREAMS = {"PUB": ["pub.>"], "CONS": ["cons.>", "par.>"], "LAT": ["lat.>"]}


@dataclass(frozen=True)
class Counts:
    publish: int
    bulk: int
    consume: int
    parallel: int
    latency_seconds: float
    startups: int


FULL = Counts(
    publish=1500,
    bulk=15_000,
    consume=15_000,
    parallel=10_240,
    latency_seconds=1.5,
    startups=5,
)
QUICK = Counts(publish=200, bulk=2000, consume=2000, parallel=2560, latency_seconds=0.4, startups=2)


@dataclass(frozen=True)
class Op:
    """One row of the table: a measurement made for several implementations."""

    key: str
    title: str
    unit: str  # "msgs/s" (higher is better) or "ms" (lower is better)
    impls: tuple[str, ...]


OPS = (
    Op("publish", "publish, await each ack", "msgs/s", ("jsnb", "nats-py", "FastStream")),
    Op("bulk_publish", "bulk publish (pipelined acks)", "msgs/s", ("jsnb", "nats-py")),
    Op("consume_raw", "consume + ack, raw payload", "msgs/s", ("jsnb", "nats-py", "FastStream")),
    Op(
        "consume_ce",
        "consume + ack, CloudEvents",
        "msgs/s",
        ("jsnb", "nats-py", "FastStream", "jsnb+MessageTable"),
    ),
    Op(
        "parallel",
        "parallel, 10 ms handler, 256 pending",
        "msgs/s",
        ("jsnb", "nats-py", "FastStream"),
    ),
    Op(
        "bulk_consume",
        f"bulk subscribe, batches of {BATCH}",
        "msgs/s",
        ("jsnb", "nats-py", "FastStream"),
    ),
    Op(
        "pull_consume",
        f"pull consume + ack, raw payload, batches of {PULL_BATCH}",
        "msgs/s",
        ("jsnb", "nats-py"),
    ),
    Op(
        "latency_p50",
        "publish-to-handler latency p50 @500/s",
        "ms",
        ("jsnb", "nats-py", "FastStream"),
    ),
    Op(
        "latency_p99",
        "publish-to-handler latency p99 @500/s",
        "ms",
        ("jsnb", "nats-py", "FastStream"),
    ),
)


def _subject(kind: str, size: int) -> str:
    return f"cons.{kind}.{size}"


async def _prefill(js: Any, counts: Counts) -> None:
    """The streams consumers read: the same messages for every implementation."""
    for size in SIZES:
        data = json_payload(size)
        await _fill(js, _subject("raw", size), counts.consume, data, cloudevents=False)
        await _fill(js, _subject("ce", size), counts.consume, data, cloudevents=True)
        await _fill(js, f"par.x.{size}", counts.parallel, data, cloudevents=True)


async def _fill(js: Any, subject: str, n: int, data: Any, *, cloudevents: bool) -> None:
    """*n* messages of *data*: as jsnb publishes them, or the bare JSON."""
    payload, headers = orjson.dumps(data), None
    for _ in range(n):
        if cloudevents:
            out = wrap(data, topic=subject, pubsub_name=PUBSUB_NAME, source=SOURCE)
            payload, headers = out.payload, {"Nats-Msg-Id": out.msg_id or ""}
        await js.publish_async(subject, payload, headers=headers)
    await js.publish_async_completed()


async def _measure_startup(n: int) -> list[float]:
    times = []
    for _ in range(n):
        with tempfile.TemporaryDirectory(prefix="jsnb-bench-start-") as store:
            server = NatsServer(store_dir=store)
            start = time.perf_counter()
            await server.astart()
            times.append(time.perf_counter() - start)
            await server.astop()
    return times


def _measure_import(n: int) -> tuple[list[float], list[str]]:
    code = (
        "import sys, time; t = time.perf_counter(); import jsnb; t = time.perf_counter() - t;"
        "heavy = sorted({'pandas', 'ipywidgets', 'matplotlib'} & set(sys.modules));"
        "print(t, ','.join(heavy))"
    )
    times, heavy = [], set()
    for _ in range(n):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
        times.append(float(out[0]))
        heavy.update(x for x in out[1:2] if x)
    return times, sorted(heavy)


def _machine(use_uvloop: bool) -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loop": f"uvloop {version('uvloop')}" if use_uvloop else "asyncio",
        "nats-py": version("nats-py"),
        "nats-server": nats_server_version(),
        "faststream": version("faststream"),
        "jsnb": version("jsnb"),
    }


async def suite(args: argparse.Namespace) -> dict[str, Any]:
    from bench.impl_faststream import FastStream
    from bench.impl_jsnb import Jsnb
    from bench.impl_raw import Raw

    counts = QUICK if args.quick else FULL
    only = set(filter(None, args.only.split(",")))
    began = time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    say = print if args.verbose else (lambda *a, **k: None)
    say("measuring embedded server start-up and import time ...")
    startup = await _measure_startup(counts.startups)
    imports, heavy = _measure_import(counts.startups)

    results: dict[str, dict[int, dict[str, Stats]]] = {
        op.key: {size: {name: Stats() for name in op.impls} for size in SIZES} for op in OPS
    }
    # Client CPU per message (this process, whole call including set-up): unlike
    # throughput, it hardly moves when other work competes for the machine.
    cpu_us: dict[str, dict[int, dict[str, Stats]]] = {
        op.key: {size: {name: Stats() for name in op.impls} for size in SIZES}
        for op in OPS
        if op.unit != "ms"
    }
    with tempfile.TemporaryDirectory(prefix="jsnb-bench-") as store:
        server = NatsServer(store_dir=store)
        await server.astart()
        admin = await nats.connect(server.url, pending_size=64 * 1024 * 1024)
        try:
            js = admin.jetstream()
            for name, subjects in STREAMS.items():
                await js.add_stream(name=name, subjects=subjects, storage=api.StorageType.FILE)
            say("filling the streams consumers read ...")
            await _prefill(js, counts)
            impls = {"jsnb": Jsnb(), "nats-py": Raw(), "FastStream": FastStream()}
            for impl in impls.values():
                await impl.open(server.url)
            try:
                for run in range(args.runs):
                    say(f"run {run + 1}/{args.runs}")
                    await _one_run(run, impls, js, counts, results, cpu_us, say, only)
            finally:
                for impl in impls.values():
                    await impl.close()
        finally:
            await admin.close()
            await server.astop()
    return {
        "machine": {
            **_machine(args.uvloop),
            # Other work on the machine skews every number: the 1-minute load average.
            "load_start": load_start,
            "load_end": round(os.getloadavg()[0], 2),
        },
        "counts": counts.__dict__,
        "runs": args.runs,
        "results": _export(results),
        "client_cpu_us_per_msg": _export(cpu_us),
        "startup_s": Stats(startup).as_dict(),
        "import_s": Stats(imports).as_dict(),
        "import_heavy_modules": heavy,
        "elapsed_s": time.perf_counter() - began,
    }


def _export(table: dict[str, dict[int, dict[str, Stats]]]) -> dict[str, Any]:
    """The measured part of *table* as JSON-ready dicts (sizes as strings)."""
    return {
        key: {
            str(size): {name: st.as_dict() for name, st in by.items() if st.values}
            for size, by in sizes.items()
        }
        for key, sizes in table.items()
        if any(st.values for by in sizes.values() for st in by.values())
    }


async def _one_run(
    run: int,
    impls: dict[str, Any],
    js: Any,
    counts: Counts,
    results: dict[str, dict[int, dict[str, Stats]]],
    cpu_us: dict[str, dict[int, dict[str, Stats]]],
    say: Callable[..., None],
    only: set[str],
) -> None:
    jsnb_impl = impls["jsnb"]

    def call(name: str, op: str) -> Callable[..., Awaitable[Any]]:
        if name == "jsnb+MessageTable":
            return lambda *a: jsnb_impl.consume(*a, table=True)
        return getattr(impls[name], op)

    for size in SIZES:
        plans = _plans(size, counts, call)
        for key, plan in plans.items():
            if only and key not in only:
                continue
            op_key = "latency_p50" if key == "latency" else key
            names = next(op.impls for op in OPS if op.key == op_key)
            # Rotate who goes first, so warm-up and drift do not favour anyone.
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                gc.collect()
                cpu = time.process_time()
                value = await plan(name)
                cpu = time.process_time() - cpu
                if key == "latency":
                    ms = [v * 1000 for v in value]
                    results["latency_p50"][size][name].values.append(percentile(ms, 50))
                    results["latency_p99"][size][name].values.append(percentile(ms, 99))
                    await js.purge_stream("LAT")
                else:
                    results[key][size][name].values.append(value)
                    cpu_us[key][size][name].values.append(cpu / _count(key, counts) * 1e6)
                if key.endswith("publish"):
                    await js.purge_stream("PUB")
            say(f"  {size:>5} B {key}: done")


def _count(key: str, counts: Counts) -> int:
    """Messages one call of operation *key* handles."""
    return {
        "publish": counts.publish,
        "bulk_publish": counts.bulk,
        "parallel": counts.parallel,
    }.get(key, counts.consume)


def _plans(
    size: int, counts: Counts, call: Callable[[str, str], Callable[..., Awaitable[Any]]]
) -> dict[str, Callable[[str], Awaitable[Any]]]:
    """Each operation at one payload size, as a call taking the implementation's name."""
    data = json_payload(size)
    pacer = Pacer(LATENCY_RATE, counts.latency_seconds)
    return {
        "publish": lambda n: call(n, "publish")(f"pub.{n}", data, counts.publish),
        "bulk_publish": lambda n: call(n, "bulk_publish")(f"pub.{n}", data, counts.bulk),
        "consume_raw": lambda n: call(n, "consume")(
            "CONS", _subject("raw", size), counts.consume, False
        ),
        "consume_ce": lambda n: call(n, "consume")(
            "CONS", _subject("ce", size), counts.consume, True
        ),
        "parallel": lambda n: call(n, "parallel")(
            "CONS", f"par.x.{size}", counts.parallel, PARALLEL_WORK
        ),
        "bulk_consume": lambda n: call(n, "bulk_consume")(
            "CONS", _subject("ce", size), counts.consume, BATCH
        ),
        "pull_consume": lambda n: call(n, "pull_consume")(
            "CONS", _subject("raw", size), counts.consume, PULL_BATCH
        ),
        "latency": lambda n: call(n, "latency")("LAT", f"lat.{n}", size, pacer),
    }


# -- report ------------------------------------------------------------------------------


def _fmt(stats: dict[str, Any], unit: str) -> str:
    if unit == "ms":
        return f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})"
    return f"{stats['median']:,.0f} ({stats['min']:,.0f}-{stats['max']:,.0f})"


def checks(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target (issues 6 and 15), with the measured ratio and whether it holds at every size."""
    res = data["results"]
    out: list[dict[str, Any]] = []

    def med(op: str, size: int, name: str) -> float:
        return res[op][str(size)][name]["median"]

    def add(
        what: str, values: Callable[[], dict[int, float]], target: str, ok: Callable[[float], bool]
    ) -> None:
        try:
            measured = values()
        except KeyError:  # not measured in this run (--only)
            return
        out.append(
            {
                "check": what,
                "target": target,
                "values": {str(k): v for k, v in measured.items()},
                "met": all(ok(v) for v in measured.values()),
            }
        )

    def ratio(op: str, a: str, b: str) -> Callable[[], dict[int, float]]:
        return lambda: {s: med(op, s, a) / med(op, s, b) for s in SIZES}

    add("publish vs nats-py", ratio("publish", "jsnb", "nats-py"), ">= 0.9x", lambda v: v >= 0.9)
    add(
        "bulk publish vs nats-py publish_async",
        ratio("bulk_publish", "jsnb", "nats-py"),
        ">= 0.9x",
        lambda v: v >= 0.9,
    )
    # Issue 15: client CPU per message against raw nats-py doing the same work.
    cpu = data["client_cpu_us_per_msg"]

    def cpu_ratio(op: str) -> Callable[[], dict[int, float]]:
        return lambda: {
            s: cpu[op][str(s)]["jsnb"]["median"] / cpu[op][str(s)]["nats-py"]["median"]
            for s in SIZES
        }

    add(
        "consume raw, client CPU per message vs nats-py",
        cpu_ratio("consume_raw"),
        "<= 1.15x",
        lambda v: v <= 1.15,
    )
    add(
        "consume CloudEvents, client CPU per message vs nats-py unwrapping by hand",
        cpu_ratio("consume_ce"),
        "<= 1.35x",
        lambda v: v <= 1.35,
    )
    add(
        "pull consume vs nats-py fetch",
        ratio("pull_consume", "jsnb", "nats-py"),
        ">= 0.9x",
        lambda v: v >= 0.9,
    )
    add(
        "parallel vs nats-py (a task per message)",
        ratio("parallel", "jsnb", "nats-py"),
        ">= 0.9x",
        lambda v: v >= 0.9,
    )
    add(
        "parallel vs 25,600 msgs/s ceiling",
        lambda: {s: med("parallel", s, "jsnb") / PARALLEL_CEILING for s in SIZES},
        ">= 0.85x",
        lambda v: v >= 0.85,
    )
    add(
        "latency p99 vs nats-py",
        ratio("latency_p99", "jsnb", "nats-py"),
        "<= 1.5x",
        lambda v: v <= 1.5,
    )
    for op in OPS:
        if "FastStream" not in op.impls:
            continue
        if op.unit == "ms":
            values = ratio(op.key, "FastStream", "jsnb")  # FastStream's time over ours
        else:
            values = ratio(op.key, "jsnb", "FastStream")
        add(f"{op.title} vs FastStream", values, ">= 1.0x", lambda v: v >= 1.0)
    add(
        "MessageTable attached (throughput kept)",
        ratio("consume_ce", "jsnb+MessageTable", "jsnb"),
        ">= 0.85x",
        lambda v: v >= 0.85,
    )
    out.append(
        {
            "check": "embedded server ready",
            "target": "< 1 s",
            "values": {"median s": data["startup_s"]["median"], "max s": data["startup_s"]["max"]},
            "met": data["startup_s"]["max"] < 1.0,
        }
    )
    out.append(
        {
            "check": "import jsnb (fresh process)",
            "target": "< 0.3 s, no pandas/ipywidgets",
            "values": {"median s": data["import_s"]["median"], "max s": data["import_s"]["max"]},
            "met": data["import_s"]["max"] < 0.3 and not data["import_heavy_modules"],
        }
    )
    return out


def _counts_text(c: dict[str, Any]) -> str:
    return (
        f"publish {c['publish']:,}, bulk publish {c['bulk']:,}, consume {c['consume']:,}, "
        f"parallel {c['parallel']:,}, latency {c['latency_seconds']:g} s at {LATENCY_RATE}/s; "
        f"{c['startups']} server starts and imports"
    )


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']} ({m['loop']}); "
        f"nats-py {m['nats-py']}, nats-server {m['nats-server']}, FastStream {m['faststream']}; "
        f"load average {m['load_start']} at start, {m['load_end']} at end.",
        f"{data['runs']} runs each: median (min-max). "
        f"Messages per run: {_counts_text(data['counts'])}.",
        "",
        "| operation | size | jsnb | nats-py | FastStream | jsnb / nats-py | jsnb / FastStream |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    res = data["results"]
    for op in OPS:
        if op.key not in res:
            continue
        for size in SIZES:
            by = res[op.key][str(size)]
            cells = [
                _fmt(by[n], op.unit) if n in by else "-" for n in ("jsnb", "nats-py", "FastStream")
            ]
            ratios = []
            for other in ("nats-py", "FastStream"):
                if other in by:
                    r = by["jsnb"]["median"] / by[other]["median"]
                    ratios.append(f"{r:.2f}x")
                else:
                    ratios.append("-")
            unit = " ms" if op.unit == "ms" else ""
            lines.append(f"| {op.title}{unit} | {size} B | " + " | ".join(cells + ratios) + " |")
            if "jsnb+MessageTable" in by:
                t = by["jsnb+MessageTable"]
                r = t["median"] / by["jsnb"]["median"]
                lines.append(
                    f"| … with a MessageTable attached | {size} B | {_fmt(t, op.unit)} | - | - | "
                    f"{r:.2f}x of jsnb without | - |"
                )
    cpu = data["client_cpu_us_per_msg"]
    lines += [
        "",
        "Client CPU per message, µs (this process, whole call with its set-up; "
        "little moved by other load):",
        "",
        "| operation | size | jsnb | nats-py | FastStream | jsnb / nats-py |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for op in OPS:
        for size in SIZES:
            by = cpu.get(op.key, {}).get(str(size))
            if not by:
                continue
            cells = [
                f"{by[n]['median']:.1f}" if n in by else "-"
                for n in ("jsnb", "nats-py", "FastStream")
            ]
            ratio = (
                f"{by['jsnb']['median'] / by['nats-py']['median']:.2f}x" if "nats-py" in by else "-"
            )
            lines.append(f"| {op.title} | {size} B | " + " | ".join([*cells, ratio]) + " |")
            if "jsnb+MessageTable" in by:
                lines.append(
                    f"| … with a MessageTable attached | {size} B | "
                    f"{by['jsnb+MessageTable']['median']:.1f} | - | - | - |"
                )
    s, i = data["startup_s"], data["import_s"]
    lines += [
        "",
        f"Embedded server ready: {s['median'] * 1000:.0f} ms "
        f"({s['min'] * 1000:.0f}-{s['max'] * 1000:.0f}). "
        f"`import jsnb` in a fresh process: {i['median'] * 1000:.0f} ms "
        f"({i['min'] * 1000:.0f}-{i['max'] * 1000:.0f}); heavy modules imported: "
        f"{', '.join(data['import_heavy_modules']) or 'none'}.",
        "",
        "| target | measured (128 B / 4 KiB) | met |",
        "| --- | --- | --- |",
    ]
    for c in data["checks"]:
        values = " / ".join(
            f"{v:.2f}" if not k.endswith(" s") else f"{k[:-2]} {v * 1000:.0f} ms"
            for k, v in c["values"].items()
        )
        lines.append(
            f"| {c['check']} {c['target']} | {values} | {'yes' if c['met'] else '**no**'} |"
        )
    lines.append("")
    lines.append(f"Whole run: {data['elapsed_s']:.0f} s.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test")
    parser.add_argument(
        "--only", default="", help="comma-separated operations to run, e.g. publish,consume_ce"
    )
    parser.add_argument("-q", "--quiet", dest="verbose", action="store_false")
    args = parser.parse_args(argv)
    try:
        import faststream  # noqa: F401
    except ImportError as exc:
        parser.exit(2, f"{exc.name} is missing: pip install -r bench/requirements.txt\n")
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        data = runner.run(suite(args))
    data["checks"] = checks(data)
    table = markdown(data)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = "-uvloop" if args.uvloop else ""
    names = [f"{stamp}{suffix}"]
    if not (args.quick or args.only):  # only a full run becomes "latest"
        names.append(f"latest{suffix}")
    for name in names:
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(table + "\n")
    return 0
