"""``jsnb.until``: the one way the notebooks and the sync facade wait for a condition."""

from __future__ import annotations

import asyncio
import time

import pytest

import jsnb


async def test_returns_the_first_truthy_value() -> None:
    values = iter([0, [], None, "done"])
    assert await jsnb.until(lambda: next(values), interval=0) == "done"


async def test_awaits_a_coroutine_condition() -> None:
    calls = 0

    async def ask_the_server() -> int:
        nonlocal calls
        calls += 1
        return calls if calls >= 3 else 0

    assert await jsnb.until(ask_the_server, interval=0) == 3


async def test_times_out_naming_what_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"jsnb: 3 acks not met within 0.05s \(last value: 0\)"):
        await jsnb.until(lambda: 0, timeout=0.05, what="3 acks")
    assert time.monotonic() - started < 2


async def test_keeps_the_loop_turning_while_it_waits() -> None:
    # The reason it exists: a task on the same loop (a handler, an ack) runs meanwhile.
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)
    assert await jsnb.until(done.is_set, timeout=5)


def test_sync_code_runs_it_with_jsnb_sync_run() -> None:
    from jsnb.sync import run

    assert run(jsnb.until(lambda: 7)) == 7
