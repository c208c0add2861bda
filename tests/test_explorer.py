"""The explorer against real servers: consumer report, stream browser, message reads."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from nats.js import JetStreamContext, api

import jsnb
from jsnb import JetStreamPubSub, ensure_stream
from jsnb.consumer import compare, retune
from jsnb.explorer import MAX_PAGE, REPORT_COLUMNS
from jsnb.widgets import ConsumerState, StreamBrowser
from tests.support import eventually

pytestmark = pytest.mark.streams(S=["s.>"])


# -- consumer report ---------------------------------------------------------------------


async def test_report_covers_consumers_made_by_anyone(
    ps: JetStreamPubSub, js: JetStreamContext
) -> None:
    await ensure_stream(ps, "T", ["t"])
    sub = await ps.subscribe("s.a", lambda m: None)
    await js.add_consumer(
        "S",
        api.ConsumerConfig(
            durable_name="raw-pull", ack_policy=api.AckPolicy.EXPLICIT, backoff=[2.0, 8.0]
        ),
    )
    await js.add_consumer("T", api.ConsumerConfig(durable_name="other", ack_wait=7.0))

    report = await jsnb.consumer_report(ps)
    assert list(report.columns) == list(REPORT_COLUMNS)
    rows = report.set_index("consumer")
    assert set(rows.index) == {sub.consumer, "raw-pull", "other"}
    assert rows.loc[sub.consumer, "mode"] == "push"
    pull = rows.loc["raw-pull"]
    assert (pull["mode"], pull["ack_policy"]) == ("pull", "explicit")
    # With backOff the server replaces ackWait by backOff[0]: the report says what it uses.
    assert pull["ack_wait_s"] == 2.0 and pull["backoff_s"] == (2.0, 8.0)
    assert rows.loc["other", "ack_wait_s"] == 7.0 and rows.loc["other", "stream"] == "T"

    only_t = await jsnb.consumer_report(ps, "T")
    assert list(only_t["consumer"]) == ["other"]


async def test_report_counts_and_the_stall_flag(ps: JetStreamPubSub, js: JetStreamContext) -> None:
    for i in range(5):
        await js.publish("s.x", str(i).encode())
    await js.add_consumer(
        "S", api.ConsumerConfig(durable_name="slow", max_ack_pending=2, ack_wait=30.0)
    )
    puller = await js.pull_subscribe_bind("slow", "S")
    got = await puller.fetch(2, timeout=5)
    assert len(got) == 2

    row = (await jsnb.consumer_report(ps, "S")).set_index("consumer").loc["slow"]
    assert (row["ack_pending"], row["unprocessed"], row["delivered"], row["ack_floor"]) == (
        2,
        3,
        2,
        0,
    )
    assert row["stalled"] and row["max_ack_pending"] == 2
    assert isinstance(row["last_delivery"], dt.datetime)

    await got[0].ack_sync()
    row = (await jsnb.consumer_report(ps, "S")).set_index("consumer").loc["slow"]
    assert not row["stalled"] and row["ack_floor"] == 1


async def test_report_of_an_unknown_stream_names_the_known_ones(ps: JetStreamPubSub) -> None:
    with pytest.raises(jsnb.StreamNotFoundError, match=r"'NOPE' does not exist.*streams: S"):
        await jsnb.consumer_report(ps, "NOPE")


# -- browsing ----------------------------------------------------------------------------


async def test_a_page_reads_envelopes_headers_and_payloads(ps: JetStreamPubSub) -> None:
    await ps.publish("s.orders", {"id": 1}, metadata={"traceparent": "00-abc"})
    await ps.publish("s.raw", b"plain text", metadata={"rawPayload": "true"})
    await ps.publish("s.raw", b"\x00\xff\x10", metadata={"rawPayload": "true"})

    page = await jsnb.browse_stream(ps, "S")
    assert list(page["seq"]) == [1, 2, 3]
    first = page.iloc[0]
    assert first["subject"] == "s.orders" and first["ce_type"] == "com.dapr.event.sent"
    assert first["ce_id"] == first["headers"]["Nats-Msg-Id"]
    assert first["headers"]["traceparent"] == "00-abc"
    assert first["preview"] == '{"id":1}'
    assert list(page["preview"][1:]) == ["plain text", "hex 00 ff 10"]
    assert page.iloc[1]["ce_id"] == "" and page.iloc[1]["size"] == len(b"plain text")
    assert isinstance(first["time"], dt.datetime) and first["time"].tzinfo is not None
    assert page.attrs == {"stream": "S", "first_seq": 1, "last_seq": 3, "next_seq": None}


async def test_pages_follow_each_other_and_filter_by_subject(ps: JetStreamPubSub) -> None:
    for i in range(10):
        await ps.publish(f"s.{'even' if i % 2 == 0 else 'odd'}", {"i": i})

    page = await jsnb.browse_stream(ps, "S", limit=4)
    assert list(page["seq"]) == [1, 2, 3, 4] and page.attrs["next_seq"] == 5
    page = await jsnb.browse_stream(ps, "S", start_seq=page.attrs["next_seq"], limit=4)
    assert list(page["seq"]) == [5, 6, 7, 8]

    odd = await jsnb.browse_stream(ps, "S", subject="s.odd", limit=3)
    assert list(odd["seq"]) == [2, 4, 6] and odd.attrs["next_seq"] == 7
    rest = await jsnb.browse_stream(ps, "S", subject="s.odd", start_seq=7)
    assert list(rest["seq"]) == [8, 10] and rest.attrs["next_seq"] is None
    assert list((await jsnb.browse_stream(ps, "S", subject="s.*", start_seq=9))["seq"]) == [9, 10]


async def test_since_starts_at_the_first_message_stored_then(ps: JetStreamPubSub) -> None:
    for i in range(5):
        await ps.publish("s.t", {"i": i})
    times = list((await jsnb.browse_stream(ps, "S"))["time"])

    page = await jsnb.browse_stream(ps, "S", since=times[2])
    assert list(page["seq"]) == [3, 4, 5]
    assert list((await jsnb.browse_stream(ps, "S", since="1h"))["seq"]) == [1, 2, 3, 4, 5]
    assert (await jsnb.browse_stream(ps, "S", since=dt.timedelta(hours=1)))["seq"].iloc[0] == 1


async def test_a_work_queue_stream_is_browsed_without_disturbing_it(
    ps: JetStreamPubSub, js: JetStreamContext
) -> None:
    await ensure_stream(ps, "WQ", ["wq"], retention="workqueue")
    await js.add_consumer("WQ", api.ConsumerConfig(durable_name="worker"))
    for i in range(3):
        await ps.publish("wq", {"job": i})

    page = await jsnb.browse_stream(ps, "WQ")
    one = await jsnb.read_message(ps, "WQ", 2)

    assert list(page["seq"]) == [1, 2, 3] and one.payload == b'{"job":1}'
    info = await js.stream_info("WQ")
    assert info.state.messages == 3
    worker = await js.consumer_info("WQ", "worker")
    assert (worker.num_pending, worker.delivered.stream_seq) == (3, 0)


async def test_direct_get_streams_show_only_the_messages_own_headers(
    ps: JetStreamPubSub,
) -> None:
    await ensure_stream(ps, "D", ["d.>"], allow_direct=True)
    await ps.publish("d.one", b"x", metadata={"rawPayload": "true", "k": "v"})
    await ps.publish("d.two", b"y", metadata={"rawPayload": "true"})

    page = await jsnb.browse_stream(ps, "D", subject="d.two")
    assert list(page["seq"]) == [2] and page.iloc[0]["headers"] == {}
    msg = await jsnb.read_message(ps, "D", 1)
    assert (msg.subject, msg.headers, msg.data) == ("d.one", {"k": "v"}, b"x")
    assert list((await jsnb.browse_stream(ps, "D", since="1m"))["seq"]) == [1, 2]


@pytest.mark.parametrize(
    ("stream", "kwargs", "error", "match"),
    [
        pytest.param("NOPE", {}, jsnb.StreamNotFoundError, "'NOPE' does not exist", id="stream"),
        pytest.param("S", {"start_seq": 9}, ValueError, r"start_seq 9 .* 1 to 3", id="beyond"),
        pytest.param("S", {"start_seq": 0}, ValueError, "start_seq 0", id="zero"),
        pytest.param(
            "S",
            {"since": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)},
            ValueError,
            "in the future",
            id="future",
        ),
        pytest.param("S", {"since": "soon"}, ValueError, "'soon' is not a duration", id="since"),
        pytest.param(
            "S", {"since": "1h", "start_seq": 1}, ValueError, "not both", id="start-and-since"
        ),
        pytest.param("S", {"limit": MAX_PAGE + 1}, ValueError, "between 1 and", id="limit"),
    ],
)
async def test_bad_browse_requests_say_what_is_allowed(
    ps: JetStreamPubSub, stream: str, kwargs: dict[str, Any], error: type, match: str
) -> None:
    for i in range(3):
        await ps.publish("s.x", {"i": i})
    with pytest.raises(error, match=match):
        await jsnb.browse_stream(ps, stream, **kwargs)


async def test_read_message_and_who_acked_it(ps: JetStreamPubSub, js: JetStreamContext) -> None:
    for i in range(3):
        await ps.publish("s.a", {"i": i})
    await ps.publish("s.b", {"i": 3})
    sub = await ps.subscribe("s.a", lambda m: None)
    await js.add_consumer("S", api.ConsumerConfig(durable_name="idle", filter_subject="s.>"))
    await js.add_consumer("S", api.ConsumerConfig(durable_name="b-only", filter_subject="s.b"))
    await eventually(lambda: sub.acked == 3)

    msg = await jsnb.read_message(ps, "S", 2)
    assert msg.cloud_event is not None and msg.payload == b'{"i":1}'
    assert "CloudEvent" in msg._repr_html_()

    async def settled() -> Any:
        who = (await jsnb.acked_by(ps, "S", 2)).set_index("consumer")["state"]
        return who.to_dict() if who[sub.consumer] == "acked" else None

    who = await eventually(settled)
    assert who["idle"] == "not delivered yet" and who["b-only"] == "not its subject"
    with pytest.raises(LookupError, match="no message 99"):
        await jsnb.read_message(ps, "S", 99)


# -- the stream browser widget -----------------------------------------------------------


async def test_stream_browser_pages_jumps_filters_and_opens(ps: JetStreamPubSub) -> None:
    for i in range(7):
        await ps.publish(f"s.{'a' if i < 5 else 'b'}", {"i": i})
    browser = StreamBrowser(ps, "S", limit=3)
    assert browser.page is None and "not read yet" in status(browser)

    assert list((await browser.show())["seq"]) == [1, 2, 3]
    assert list((await browser.next_page())["seq"]) == [4, 5, 6]
    assert list((await browser.next_page())["seq"]) == [7]
    assert "end of stream" in status(browser) and browser._next.disabled
    assert list((await browser.previous_page())["seq"]) == [4, 5, 6]
    assert list((await browser.previous_page())["seq"]) == [1, 2, 3]
    assert browser._back.disabled

    assert list((await browser.show(start_seq=6))["seq"]) == [6, 7]
    browser.subject.value = "s.b"
    assert list((await browser.show())["seq"]) == [6, 7]
    assert "<td" in browser._table.value and "s.b" in browser._table.value
    assert [v for _, v in browser._choice.options] == [6, 7]

    msg = await browser.open_message(6)
    assert msg.payload == b'{"i":5}' and browser.acks is not None
    assert "CloudEvent" in browser._detail.value and "com.dapr.event.sent" in browser._detail.value


async def test_stream_browser_controls_show_errors_instead_of_raising(
    ps: JetStreamPubSub,
) -> None:
    await ps.publish("s.a", {"i": 0})
    browser = StreamBrowser(ps, "S")
    await browser.show()
    browser.seq.value = 50
    browser.children[1].children[2].click()  # Go to seq 50: beyond the last
    await eventually(lambda: browser.error)
    assert "start_seq 50 is outside" in status(browser)

    browser.since.value = "2999-01-01T00:00"
    browser.children[1].children[4].click()
    await eventually(lambda: "in the future" in status(browser))
    browser._choice.value = 1
    await eventually(lambda: browser.message is not None)


def status(browser: StreamBrowser) -> str:
    return browser._status.value


# -- drift and the consumer state's explanations -----------------------------------------


async def test_drift_of_a_durable_changed_behind_the_subscription(
    ps: JetStreamPubSub, js: JetStreamContext, nats_server: Any
) -> None:
    props = {"natsURL": nats_server.url, "durableName": "d", "maxAckPending": 10}
    async with JetStreamPubSub(props) as manifest:
        sub = await manifest.subscribe("s.d", lambda m: None)
        drift = (await sub.drift()).set_index("field")
        assert not drift["differs"].any()
        assert drift.loc["maxAckPending", ["metadata", "server"]].tolist() == [10, 10]
        assert drift.loc["consumerMode", ["metadata", "server"]].tolist() == ["push", "push"]
        assert "unset" in drift.loc["maxDeliver", "note"]

        # Someone edits the live consumer (a redeploy with another manifest, say).
        cfg = (await js.consumer_info("S", "d")).config
        cfg.max_ack_pending = 3
        await js.add_consumer("S", cfg)  # an existing durable: the server updates it
        drift = (await sub.drift()).set_index("field")
        row = drift.loc["maxAckPending"]
        assert (row["metadata"], row["server"], row["differs"], row["change"]) == (
            10,
            3,
            True,
            "in place",
        )
        assert drift["differs"].sum() == 1


async def test_consumer_state_shows_drift_from_a_manifest_before_anyone_subscribes(
    ps: JetStreamPubSub, js: JetStreamContext
) -> None:
    await js.add_consumer(
        "S",
        api.ConsumerConfig(
            durable_name="old",
            filter_subject="s.o",
            deliver_policy=api.DeliverPolicy.NEW,
            max_deliver=3,
        ),
    )
    manifest = {"natsURL": "embedded", "durableName": "old", "maxDeliver": 5}
    state = ConsumerState(js, "S", "old", metadata={**manifest, "deliverPolicy": "all"})
    await state.refresh()
    drift = state.drift.set_index("field")
    assert drift.loc["maxDeliver", "change"] == "in place"
    assert drift.loc["deliverPolicy", "change"] == "new consumer"
    # Made without a deliver subject, it is a pull consumer; the manifest (Dapr's default) push.
    assert drift.loc["consumerMode", ["metadata", "server", "change"]].tolist() == [
        "push",
        "pull",
        "new consumer",
    ]
    assert "drift: consumerMode, deliverPolicy, maxDeliver" in state.children[1].value
    assert "drift from the metadata" in str(state.children[3].titles)


@pytest.mark.parametrize(("made", "manifest"), [("push", "pull"), ("pull", "push")])
async def test_drift_flags_a_consumer_of_the_other_kind(
    ps: JetStreamPubSub, js: JetStreamContext, nats_server: Any, made: str, manifest: str
) -> None:
    """consumerMode is a drift row: a kind change needs a new consumer, never a retune."""
    props = {"natsURL": nats_server.url, "durableName": "kind", "maxDeliver": 3}
    async with JetStreamPubSub({**props, "consumerMode": made}) as owner:
        await owner.subscribe("s.k", lambda m: None)
    wanted = jsnb.Metadata.from_properties({**props, "consumerMode": manifest, "maxDeliver": 4})
    have = (await js.consumer_info("S", "kind")).config

    rows = {row.key: row for row in compare(wanted, have)}
    kind = rows["consumerMode"]
    assert (kind.wanted, kind.held, kind.differs, kind.updatable) == (manifest, made, True, False)
    change = retune(wanted, have)
    assert change.fixed["consumerMode"] == (made, manifest)
    assert change.updatable == {"maxDeliver": (3, 4)}  # what can change in place still shows
    assert not hasattr(change.config, "")  # the kind row is never set on the config

    state = ConsumerState(js, "S", "kind", metadata=wanted)
    await state.refresh()
    assert state.drift.set_index("field").loc["consumerMode", "change"] == "new consumer"
    assert "drift: consumerMode, maxDeliver" in state.children[1].value
    async with JetStreamPubSub(wanted) as joiner:
        with pytest.raises(
            jsnb.ConsumerConflictError, match=rf"is a {made} consumer, but consumerMode is"
        ):
            await joiner.subscribe("s.k", lambda m: None)
    assert (await js.consumer_info("S", "kind")).config.max_deliver == 3  # left as it was


async def test_consumer_state_explains_its_counters_and_flags_a_stall(
    ps: JetStreamPubSub, js: JetStreamContext
) -> None:
    for i in range(4):
        await js.publish("s.x", str(i).encode())
    await js.add_consumer("S", api.ConsumerConfig(durable_name="slow", max_ack_pending=1))
    await (await js.pull_subscribe_bind("slow", "S")).fetch(1)
    state = ConsumerState(js, "S", "slow")
    for _ in range(2):
        await state.refresh()

    header = state.children[1].value
    assert "stalled: 1 ack pending = maxAckPending, 3 waiting" in header
    assert "title='delivered and not yet acknowledged" in header
    explained = state.explain().set_index("counter")
    assert explained.loc["num_ack_pending", "value"] == 1
    assert explained.loc["stalled", "value"] == True  # noqa: E712 (numpy bool)
    assert "maxAckPending" in explained.loc["stalled", "meaning"]
    fig = state.plot()
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][2] == "ack pending"
    # The x axis counts seconds from the first poll (timestamps as ticks ran together).
    assert fig.axes[0].get_xlabel().startswith("seconds since ")
    assert fig.axes[0].lines[0].get_xdata()[0] == 0.0


# -- consumer actions --------------------------------------------------------------------


async def test_pause_resume_and_reset_a_consumer(ps: JetStreamPubSub, js: JetStreamContext) -> None:
    for i in range(4):
        await js.publish("s.x", str(i).encode())
    await js.add_consumer("S", api.ConsumerConfig(durable_name="c", ack_wait=30.0))
    puller = await js.pull_subscribe_bind("c", "S")
    for msg in await puller.fetch(4):
        await msg.ack_sync()

    async with ps.advisories("S", "c", kinds=["consumer_paused"]) as feed:
        info = await jsnb.pause_consumer(ps, "S", "c", "10m")
        assert info.paused
        row = (await jsnb.consumer_report(ps, "S")).set_index("consumer").loc["c"]
        assert row["paused"]
        assert not (await jsnb.resume_consumer(ps, "S", "c")).paused
        paused, resumed = [await anext(feed) for _ in range(2)]
    assert paused.reason.startswith("paused until") and resumed.reason == "resumed"

    info = await jsnb.reset_consumer(ps, "S", "c", seq=3)
    assert info.ack_floor.stream_seq == 2 and info.num_pending == 2
    again = await puller.fetch(2)
    assert [m.metadata.sequence.stream for m in again] == [3, 4]


@pytest.mark.parametrize(
    ("action", "match"),
    [
        pytest.param(
            lambda ps: jsnb.pause_consumer(ps, "S", "nope", "1m"),
            "'nope' does not exist on stream 'S'; its consumers: c",
            id="unknown-consumer",
        ),
        pytest.param(
            lambda ps: jsnb.pause_consumer(ps, "S", "c", dt.timedelta(seconds=-1)),
            "not in the future",
            id="pause-in-the-past",
        ),
        pytest.param(
            lambda ps: jsnb.reset_consumer(ps, "S", "c", seq=99), "reset seq 99", id="reset-beyond"
        ),
    ],
)
async def test_bad_consumer_actions_say_why(
    ps: JetStreamPubSub, js: JetStreamContext, action: Any, match: str
) -> None:
    await js.add_consumer("S", api.ConsumerConfig(durable_name="c"))
    with pytest.raises((jsnb.ConsumerNotFoundError, ValueError), match=match):
        await action(ps)
