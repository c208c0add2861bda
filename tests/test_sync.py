"""The sync facade: in this process, in a plain script, and inside a real Jupyter kernel."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest
from jupyter_client.manager import start_new_kernel

from jsnb import BulkMessageEntry, ComponentClosedError, Feature, Message, Outcome, until
from jsnb.sync import SyncPubSub, SyncSubscription, ensure_stream, run, spawn
from tests.support import eventually

# -- in this process: no running loop, so jsnb's background loop ---------------------


async def _where() -> tuple[asyncio.AbstractEventLoop, str]:
    return asyncio.get_running_loop(), threading.current_thread().name


def test_run_uses_one_long_lived_background_loop() -> None:
    first = run(_where())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        from_thread = pool.submit(run, _where()).result()
    assert first == run(_where()) == from_thread
    assert first[1] == "jsnb-loop"


def test_sync_pubsub_covers_the_async_api(nats_server: Any) -> None:
    got: list[Message] = []
    batches: list[int] = []
    events: list[Outcome] = []

    async def async_handler(msg: Message) -> None:
        got.append(msg)

    def bulk_handler(batch: list[Message]) -> None:
        batches.append(len(batch))

    with SyncPubSub({"natsURL": nats_server.url, "durableName": "d"}) as ps:
        assert ps.metadata is not None and ps.metadata.durable_name == "d"
        info = ensure_stream(ps, "ORDERS", ["orders", "bulk"], storage="memory")
        assert info.config.name == "ORDERS"
        ps.ping()
        assert Feature.BULK_PUBLISH in ps.features()
        assert "ackWait" in [f.key for f in ps.component_metadata()]
        ps.add_listener(lambda ev: events.append(ev.outcome))

        sub = ps.subscribe("orders", async_handler)
        assert isinstance(sub, SyncSubscription)
        assert (sub.topic, sub.stream, sub.consumer) == ("orders", "ORDERS", "d")
        result = ps.publish("orders", {"id": 1})
        assert (result.stream, result.seq) == ("ORDERS", 1)
        run(until(lambda: got))
        assert got[0].json() == {"id": 1}

        async def settled() -> bool:
            # The async info: a sync call from jsnb's loop thread would run nested there.
            return (await sub.aio.consumer_info()).num_ack_pending == 0 and sub.acked == 1

        assert run(until(settled))
        assert ps.consumer_info("ORDERS", "d").name == "d"
        assert sub.stream_info().state.messages == 1 == ps.stream_info("ORDERS").state.messages
        assert "<SyncSubscription topic='orders'" in repr(sub)
        sub.unsubscribe()
        assert not sub.active
        assert ps.delete_consumer("ORDERS", "d")

        entries = [BulkMessageEntry(str(i), {"n": i}) for i in range(5)]
        ps.bulk_subscribe("bulk", bulk_handler, max_messages=5, max_await_ms=200)
        assert ps.bulk_publish("bulk", entries).ok
        run(until(lambda: sum(batches) == 5))
        assert events.count(Outcome.ACK) == 6

    assert "<SyncPubSub closed" in repr(ps)
    assert not hasattr(ps.loop, "_nest_patched"), "calls from other threads must not nest"
    with pytest.raises(ComponentClosedError):
        ps.publish("orders", b"late")


def test_objects_of_a_finished_loop_say_so() -> None:
    async def make() -> SyncPubSub:
        return SyncPubSub({"natsURL": "embedded"})

    ps = asyncio.run(make())
    with pytest.raises(RuntimeError, match="no longer running"):
        ps.ping()


def test_spawn_without_a_loop_runs_on_the_background_loop() -> None:
    future = spawn(_where())
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=5)[1] == "jsnb-loop"


async def test_spawn_in_a_running_loop_returns_a_task_on_it() -> None:
    task = spawn(_where())
    assert isinstance(task, asyncio.Task)
    assert (await task)[0] is asyncio.get_running_loop()


async def test_spawn_logs_failures_instead_of_losing_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise RuntimeError("button handler broke")

    caplog.set_level(logging.ERROR, logger="jsnb")
    task = spawn(fail())
    await asyncio.wait({task})
    await eventually(lambda: caplog.records)
    assert "button handler broke" in caplog.records[0].getMessage()


# -- a plain script: the loop runs in a daemon thread, so deliveries never stop ------

SCRIPT = """
import threading, time
from jsnb import ComponentClosedError
from jsnb import until
from jsnb.sync import SyncPubSub, ensure_stream, run

async def thread_name():
    return threading.current_thread().name

got, echoes = [], []
with SyncPubSub({"natsURL": "embedded"}) as ps:
    ensure_stream(ps, "ORDERS", ["orders.>"])
    sub = ps.subscribe("orders.new", lambda m: got.append(m.json()["id"]))
    ps.subscribe("orders.echo", lambda m: echoes.append(m.text()))
    # A sync handler calling the sync API runs nested on jsnb's loop.
    ps.subscribe("orders.ping", lambda m: ps.publish("orders.echo", "pong " + m.text()))
    print("published", ps.publish("orders.new", {"id": 1}).seq)
    # Plain sleeping: the handler runs on jsnb's thread meanwhile.
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    print("while sleeping", got)
    worker = threading.Thread(target=ps.publish, args=("orders.new", {"id": 2}))
    worker.start()
    worker.join()
    ps.publish("orders.ping", "a")
    run(until(lambda: len(got) == 2 and echoes))
    print("got", got, echoes, sub.consumer_info().num_pending)
    print("loop thread", run(thread_name()), ps.loop.is_running())
try:
    ps.publish("orders.new", {"id": 3})
except ComponentClosedError:
    print("closed")
"""


def test_plain_script_with_embedded_server(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "published 1",
        "while sleeping [1]",
        "got [1, 2] ['pong a'] 0",
        "loop thread jsnb-loop True",
        "closed",
    ]
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr


# -- a real kernel: the kernel's loop, made re-entrant on the first sync call --------

KERNEL_CELLS = [
    """
    import asyncio, sys
    import ipywidgets
    from jsnb import until
    from jsnb.sync import SyncPubSub, ensure_stream, run, spawn
    loop = asyncio.get_running_loop()
    print("patched at import:", hasattr(loop, "_nest_patched"))
    """,
    """
    got = []
    ps = SyncPubSub({"natsURL": SERVER_URL}).init()
    ensure_stream(ps, "K", ["k.>"])
    sub = ps.subscribe("k.a", lambda m: got.append(m.text()))
    print("seq", ps.publish("k.a", "sync").seq)
    run(until(lambda: got))
    print(got, "kernel loop:", ps.loop is loop, "patched:", hasattr(loop, "_nest_patched"))
    print("nest_asyncio2:", "nest_asyncio2" in sys.modules)
    """,
    """
    print("seq", (await ps.aio.publish("k.a", "awaited")).seq)
    while len(got) < 2:
        await asyncio.sleep(0.01)
    print(got)
    """,
    """
    clicks = []
    button = ipywidgets.Button(description="publish")
    button.on_click(lambda _: clicks.append(spawn(ps.aio.publish("k.a", "clicked"))))
    button.click()
    print(type(clicks[0]).__name__)
    """,
    """
    print("seq", (await clicks[0]).seq)
    ps.subscribe("k.in", lambda m: ps.publish("k.a", "echo " + m.text()))
    ps.publish("k.in", "x")
    run(until(lambda: "echo x" in got))
    print(got, sub.consumer_info().num_pending)
    ps.close()
    print(ps.aio._state())
    """,
]


def _outputs(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_notebook_kernel_sync_await_and_spawn(nats_server: Any, tmp_path: Path) -> None:
    cells = [textwrap.dedent(c).replace("SERVER_URL", repr(nats_server.url)) for c in KERNEL_CELLS]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(
        nb, timeout=30, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    assert [_outputs(c) for c in nb.cells] == [
        "patched at import: False\n",
        "seq 1\n['sync'] kernel loop: True patched: True\nnest_asyncio2: True\n",
        "seq 2\n['sync', 'awaited']\n",
        "Task\n",
        "seq 3\n['sync', 'awaited', 'clicked', 'echo x'] 0\nclosed\n",
    ]


def test_run_all_keeps_cells_queued_behind_a_sync_call(nats_server: Any) -> None:
    """Cells sent at once, as Run All does, all run after a blocking sync call."""
    cells = [
        f"""
from jsnb import until
from jsnb.sync import SyncPubSub, ensure_stream, run
import time
ps = SyncPubSub({{"natsURL": {nats_server.url!r}}}).init()
ensure_stream(ps, "Q", ["q"])
start = time.monotonic()
run(until(lambda: time.monotonic() - start > 0.3))
print("a")""",
        "print('b')",
        "print('c', ps.publish('q', 'x').seq)",
        "ps.close(); print('d')",
    ]
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        ids = [client.execute(code) for code in cells]
        idle: set[str] = set()
        out: list[str] = []
        deadline = time.monotonic() + 30
        while idle != set(ids) and time.monotonic() < deadline:
            msg = client.get_iopub_msg(timeout=30)
            parent = msg["parent_header"].get("msg_id")
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(parent)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert "".join(out) == "a\nb\nc 1\nd\n"
