"""ConsumerState and StreamState against a real server: counters, history, polling, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import ipywidgets as widgets
import nats
import pytest
from nats.js import api

from jsnb import JetStreamPubSub, Message, consumer_report, ensure_stream
from jsnb.widgets.consumer_state import (
    CONSUMER_COUNTERS,
    STREAM_COUNTERS,
    ConsumerState,
    StreamState,
)
from tests.support import eventually

pytestmark = pytest.mark.streams(S=["s"])


def status(state: ConsumerState | StreamState) -> str:
    return state.children[2].children[1].value


def toggle(state: ConsumerState | StreamState) -> widgets.Button:
    return state.children[2].children[0]


def header(state: ConsumerState | StreamState) -> str:
    return state.children[1].value


def config(state: ConsumerState | StreamState) -> widgets.HTML:
    return state.children[3].children[0]


async def test_counters_follow_deliveries_and_acks(ps: JetStreamPubSub) -> None:
    release = asyncio.Event()
    seen: list[Message] = []

    async def handler(msg: Message) -> None:
        seen.append(msg)
        await release.wait()

    sub = await ps.subscribe("s", handler)
    state = ConsumerState.for_subscription(sub)
    for i in range(3):
        await ps.publish("s", {"n": i})

    async def all_delivered_none_acked() -> bool:
        rec = await state.refresh()
        return rec is not None and rec["num_ack_pending"] == 3

    await eventually(all_delivered_none_acked)
    rec = state.latest
    assert rec is not None
    assert rec["delivered_stream_seq"] == 3 and rec["ack_floor_stream_seq"] == 0
    assert rec["num_pending"] == 0
    assert (rec["stream"], rec["consumer"]) == ("S", sub.consumer)

    release.set()

    async def all_acked() -> bool:
        rec = await state.refresh()
        return rec is not None and rec["num_ack_pending"] == 0

    await eventually(all_acked)
    rec = state.latest
    assert rec is not None
    assert rec["ack_floor_stream_seq"] == 3 and rec["ack_floor_consumer_seq"] == 3
    assert rec["num_redelivered"] == 0

    frame = state.dataframe
    assert len(frame) == 1
    assert {"ackWait_s", "backOff_s", "maxDeliver", "deliverPolicy", *CONSUMER_COUNTERS} <= set(
        frame.columns
    )
    assert frame.loc[0, "deliverPolicy"] == "all"
    assert "last refresh" in status(state)


async def test_counters_head_the_view_and_the_config_is_collapsed(ps: JetStreamPubSub) -> None:
    sub = await ps.subscribe("s", lambda msg: None)
    state = ConsumerState.for_subscription(sub)
    await ps.publish("s", b"one")
    await eventually(lambda: state.refresh())
    first_config = config(state).value

    for i in range(3):
        await ps.publish("s", {"n": i})

    async def acked_all() -> bool:
        rec = await state.refresh()
        return rec is not None and rec["ack_floor_stream_seq"] == 4

    await eventually(acked_all)
    for label in ("delivered", "ack floor", "ack pending", "redelivered", "unprocessed"):
        assert f">{label}<" in header(state)
    assert "<b style='font-size:15px'>4</b> <small>consumer 4</small>" in header(state)
    assert header(state).count("<polyline") == 5  # a sparkline per counter, once it has history
    # The config section holds everything else, and stays closed until opened.
    assert state.children[3].selected_index is None
    assert "ackWait_s" in config(state).value and "maxDeliver" in config(state).value
    assert "num_ack_pending" not in config(state).value
    # Only the counters moved: the config's text is unchanged, so it is not sent again.
    assert config(state).value == first_config


async def test_history_grows_per_refresh_and_is_bounded(ps: JetStreamPubSub) -> None:
    sub = await ps.subscribe("s", lambda msg: None)
    state = ConsumerState.for_subscription(sub, history=3)
    assert state.history.empty and list(state.history.columns) == ["time", *CONSUMER_COUNTERS]

    await ps.publish("s", b"one")
    for expected in (1, 2, 3, 3, 3):
        assert await state.refresh() is not None
        assert len(state.records()) == expected

    frame = state.history
    assert list(frame.columns) == ["time", *CONSUMER_COUNTERS]
    assert len(frame) == 3
    assert frame["time"].is_monotonic_increasing


async def test_watches_a_consumer_made_with_raw_nats_py(
    ps: JetStreamPubSub, nats_server: Any
) -> None:
    for i in range(3):
        await ps.publish("s", {"n": i}, metadata={"rawPayload": "true"})
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_consumer(
            "S", api.ConsumerConfig(durable_name="raw", ack_policy=api.AckPolicy.EXPLICIT)
        )
        puller = await js.pull_subscribe_bind("raw", "S")
        first, _second = await puller.fetch(2, timeout=5)
        await first.ack_sync()

        state = ConsumerState(js, "S", "raw")
        rec = await state.refresh()
        assert rec is not None, state.error
        assert rec["consumer"] == "raw" and rec["durable"]
        assert rec["delivered_stream_seq"] == 2
        assert rec["ack_floor_stream_seq"] == 1
        assert rec["num_ack_pending"] == 1
        assert rec["num_pending"] == 1
    finally:
        await nc.close()


async def test_a_missing_consumer_shows_in_the_status_line(ps: JetStreamPubSub) -> None:
    state = ConsumerState(ps, "S", "nobody")
    assert await state.refresh() is None
    assert state.error is not None and "NotFoundError" in state.error
    assert "refresh failed" in status(state) and "consumer not found" in status(state)
    assert state.dataframe.empty and state.records() == []


async def test_a_closed_component_shows_in_the_status_line(nats_server: Any) -> None:
    async with JetStreamPubSub({"natsURL": nats_server.url}) as closing:
        await ensure_stream(closing, "S", ["s"])
        state = StreamState(closing, "S")
        assert await state.refresh() is not None
    assert await state.refresh() is None
    assert "ComponentClosedError" in status(state)
    assert state.latest is not None and len(state.records()) == 1  # the last good poll stays


async def test_stream_state(ps: JetStreamPubSub) -> None:
    await ps.subscribe("s", lambda msg: None)
    for i in range(3):
        await ps.publish("s", {"n": i})
    state = StreamState(ps.jetstream, "S", history=10)
    rec = await state.refresh()
    assert rec is not None
    assert (rec["stream"], rec["messages"], rec["first_seq"], rec["last_seq"]) == ("S", 3, 1, 3)
    assert rec["consumers"] == 1 and rec["bytes"] > 0
    assert len(state.dataframe) == 1
    assert list(state.history.columns) == ["time", *STREAM_COUNTERS]
    assert ">messages<" in header(state) and "<b style='font-size:15px'>3</b>" in header(state)
    assert "subjects" in config(state).value

    missing = StreamState(ps, "NOPE")
    assert await missing.refresh() is None
    assert "stream not found" in status(missing)


async def test_start_polls_on_the_interval_until_stopped(ps: JetStreamPubSub) -> None:
    state = StreamState(ps, "S", interval=0.02)
    toggle(state).click()
    assert state.running and "polling every 0.02s" in status(state)
    await eventually(lambda: len(state.records()) >= 3)

    toggle(state).click()
    assert not state.running and "not polling" in status(state)


async def test_displaying_starts_polling_and_closing_stops_it(ps: JetStreamPubSub) -> None:
    state = StreamState(ps, "S", interval=0.02)
    bundle = state._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert state.running
    await eventually(lambda: state.records())
    state.close()
    assert not state.running


async def test_polls_never_overlap(ps: JetStreamPubSub) -> None:
    gate = asyncio.Event()

    class Gated:
        """Holds every poll at the gate: a second call before the gate opens is an overlap."""

        calls = 0

        async def stream_info(self, stream: str) -> api.StreamInfo:
            self.calls += 1
            await gate.wait()
            return await ps.stream_info(stream)

    source = Gated()
    state = StreamState(source, "S")  # type: ignore[arg-type]
    polls = [asyncio.create_task(state.refresh()) for _ in range(3)]
    await eventually(lambda: source.calls == 1)
    for _ in range(5):
        await asyncio.sleep(0)  # give the other two every chance to start
    assert source.calls == 1
    gate.set()
    assert all(rec is not None for rec in await asyncio.gather(*polls))
    assert source.calls == 3 and len(state.records()) == 3


def test_start_without_a_loop_says_how_to_poll() -> None:
    state = StreamState(object(), "S")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="running event loop"):
        state.start()
    toggle(state).click()
    assert "running event loop" in status(state)
    assert not state.running


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"interval": 0}, id="no-interval"),
        pytest.param({"history": 0}, id="no-history"),
    ],
)
def test_rejects_settings_that_cannot_work(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="jsnb: interval"):
        ConsumerState(object(), "S", "c", **options)  # type: ignore[arg-type]


async def test_polling_stops_when_the_component_closes(nats_server: Any) -> None:
    ps = await JetStreamPubSub({"natsURL": nats_server.url}).init()
    await ensure_stream(ps, "CLOSING", ["closing"])
    sub = await ps.subscribe("closing", lambda m: None)
    state = ConsumerState.for_subscription(sub, interval=0.05)
    state.start()
    await eventually(lambda: state.latest is not None)
    await ps.close()
    await eventually(lambda: not state.running)
    assert "ComponentClosedError" in (state.error or "")


async def test_actions_act_only_after_confirmation(ps: JetStreamPubSub) -> None:
    await ps.jetstream.add_consumer("S", api.ConsumerConfig(durable_name="acts"))
    for i in range(3):
        await ps.publish("s", {"n": i})
    state = ConsumerState(ps, "S", "acts")
    actions = state.actions
    assert actions is not None
    assert state.children[3].get_title(1).startswith("actions")

    actions.pause_button.click()  # asks; nothing happens yet
    assert "Pause consumer <b>acts</b>" in actions.question.value
    assert not (await ps.jetstream.consumer_info("S", "acts")).paused
    actions.cancel_button.click()
    assert actions.status.value == "cancelled" and actions.last is None

    actions.pause_button.click()
    actions.confirm_button.click()
    await actions.last
    assert (await ps.jetstream.consumer_info("S", "acts")).paused
    assert actions.status.value.startswith("paused until ")
    assert state.latest is not None and state.latest["paused"]  # the view refreshed

    actions.resume_button.click()
    actions.confirm_button.click()
    await actions.last
    assert not (await ps.jetstream.consumer_info("S", "acts")).paused

    actions.reset_seq.value = "2"
    actions.reset_button.click()
    assert "sequence 2" in actions.question.value
    actions.confirm_button.click()
    await actions.last
    assert actions.status.value.startswith("reset: ack floor now 1")
    assert (await ps.jetstream.consumer_info("S", "acts")).num_pending == 2


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("pause_for", "soon", "pause for"),
        ("reset_seq", "0", "not a stream sequence"),
    ],
)
async def test_actions_refuse_bad_input_before_asking(
    ps: JetStreamPubSub, field: str, value: str, words: str
) -> None:
    await ps.jetstream.add_consumer("S", api.ConsumerConfig(durable_name="bad"))
    actions = ConsumerState(ps, "S", "bad").actions
    assert actions is not None
    getattr(actions, field).value = value
    (actions.pause_button if field == "pause_for" else actions.reset_button).click()
    assert words in actions.status.value and actions.question.value == ""
    actions.confirm_button.click()  # nothing was asked: nothing to confirm
    assert actions.last is None


async def test_an_action_the_server_refuses_is_shown(ps: JetStreamPubSub) -> None:
    await ps.jetstream.add_consumer("S", api.ConsumerConfig(durable_name="far"))
    actions = ConsumerState(ps, "S", "far").actions
    assert actions is not None
    actions.reset_seq.value = "99"
    actions.reset_button.click()
    actions.confirm_button.click()
    await actions.last
    assert "outside stream" in actions.status.value


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_the_consumer_kind_is_shown(nats_server: Any, mode: str) -> None:
    """consumerMode reaches the record, the header badge and the consumer report."""
    props = {"natsURL": nats_server.url, "consumerMode": mode, "durableName": f"kind-{mode}"}
    async with JetStreamPubSub(props) as component:
        await ensure_stream(component, "KIND", ["kind"], storage="memory")
        sub = await component.subscribe("kind", print)
        state = ConsumerState.for_subscription(sub)
        rec = await state.refresh()
        assert rec is not None and rec["consumerMode"] == mode
        assert f"{mode} consumer" in header(state)
        report = await consumer_report(component, "KIND")
        assert report.set_index("consumer").loc[f"kind-{mode}", "mode"] == mode
