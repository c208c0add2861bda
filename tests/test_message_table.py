"""MessageTable, headless: recording, the ring buffer, throttled drawing, pause, clear, filters.

What the page is sent is read off a recording comm: the rows a draw adds, and
the full set a newly drawn view asks for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import comm
import ipywidgets as widgets
import pytest
from comm.base_comm import BaseComm

from jsnb import DeliveryEvent, JetStreamPubSub, Outcome, ensure_stream
from jsnb.widgets.message_table import RATE_WINDOW, MessageTable
from tests.support import Recorder, eventually


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSource:
    """Anything with add_listener / remove_listener, like a Subscription."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[DeliveryEvent], None]] = []

    def add_listener(self, listener: Callable[[DeliveryEvent], None]) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Callable[[DeliveryEvent], None]) -> None:
        self.listeners.remove(listener)

    def emit(self, event: DeliveryEvent) -> None:
        for listener in self.listeners:
            listener(event)


def event(seq: int, outcome: Outcome = Outcome.ACK, **fields: Any) -> DeliveryEvent:
    return DeliveryEvent(
        **{
            "time": 1_700_000_000.0 + seq,
            "topic": "orders",
            "subject": "orders",
            "stream_seq": seq,
            "consumer_seq": seq,
            "num_delivered": 1,
            "outcome": outcome,
            "duration": 0.002,
            "preview": f"payload-{seq}".encode(),
            **fields,
        }
    )


class RecordingComm(BaseComm):
    """A comm that keeps what the kernel would send the page, and can play a page's message."""

    def __init__(self, **kwargs: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        super().__init__(**kwargs)

    def publish_msg(self, msg_type: str, data: Any = None, **keys: Any) -> None:
        self.sent.append(data or {})

    def from_page(self, content: dict[str, Any]) -> None:
        self.handle_msg(
            {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
        )

    def custom(self) -> list[dict[str, Any]]:
        """The custom messages sent (the rows), oldest first; forgets them."""
        found = [d["content"] for d in self.sent if d.get("method") == "custom"]
        self.sent.clear()
        return found


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[MessageTable], RecordingComm]]:
    """Widgets made in the test talk to recording comms; page(table) is its rows' comm."""
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield lambda table: table._view.comm


def column(table: MessageTable, header: str) -> list[str]:
    return [row[header] for row in table.shown]


def button(table: MessageTable, description: str) -> widgets.Button:
    controls = table.children[0]
    return next(w for w in controls.children if w.description == description)


def test_records_rows_counts_and_dataframe() -> None:
    table = MessageTable()
    table.record(event(1))
    table.record(event(2, Outcome.NAK, num_delivered=1, delay=1.5, error="RuntimeError: x"))
    table.record(event(2, Outcome.ACK, num_delivered=2))

    assert [(r["stream_seq"], r["outcome"], r["num_delivered"]) for r in table.rows] == [
        (1, "ack", 1),
        (2, "nak", 1),
        (2, "ack", 2),
    ]
    assert table.counts == {Outcome.ACK: 2, Outcome.NAK: 1}
    assert table.counts["ack"] == 2  # Outcome is a StrEnum: plain words work as keys
    frame = table.to_dataframe()
    assert len(frame) == 3
    assert list(frame.columns) == list(event(0).as_row())
    assert frame["handler_ms"].tolist() == [2.0, 2.0, 2.0]
    assert frame["preview"].tolist() == ["payload-1", "payload-2", "payload-2"]


def test_empty_table_has_columns_and_shows_nothing() -> None:
    table = MessageTable()
    assert table.rows == [] and table.shown == []
    assert list(table.to_dataframe().columns) == list(event(0).as_row())
    assert "idle" in table.summary


def test_ring_buffer_keeps_the_newest_max_rows() -> None:
    table = MessageTable(max_rows=10)
    for seq in range(1, 26):
        table.record(event(seq, Outcome.NAK if seq % 5 == 0 else Outcome.ACK))
    table.flush()

    assert [r["stream_seq"] for r in table.rows] == list(range(16, 26))
    assert len(table.to_dataframe()) == 10
    assert table.seen == 25
    assert table.counts == {Outcome.ACK: 20, Outcome.NAK: 5}  # counts cover all seen
    assert "seen 25" in table.summary
    assert "retained 10 of 10" in table.summary


def test_shows_the_newest_shown_rows_newest_first() -> None:
    table = MessageTable(shown_rows=5)
    for seq in range(1, 21):
        table.record(event(seq, subject=f"orders.{seq}"))
    table.flush()

    assert column(table, "subject") == [f"orders.{seq}" for seq in range(20, 15, -1)]
    assert column(table, "stream seq") == ["20", "19", "18", "17", "16"]


def test_cells_are_text_with_the_nak_delay_and_a_bounded_error() -> None:
    table = MessageTable()
    table.record(
        event(1, Outcome.NAK, delay=2.5, error="ValueError: <script>x</script>", preview=b"<b>&")
    )
    table.record(event(2, Outcome.TERM, error="RuntimeError: " + "x" * 1000))
    table.flush()

    # The page sets these as text, never as markup: what a handler raised is shown as is.
    term, nak = table.shown
    assert (nak["outcome"], nak["error"], nak["payload"]) == (
        "nak +2.5s",
        "ValueError: <script>x</script>",
        "<b>&",
    )
    assert nak["handler ms"] == "2.0" and nak["delivery"] == "1"
    assert term["error"].startswith("RuntimeError: xxx") and term["error"].endswith("\u2026")
    assert len(term["error"]) == 240  # to_dataframe() keeps all of it
    assert len(table.to_dataframe().loc[1, "error"]) == 1014


def test_draws_at_most_once_per_interval_without_a_loop() -> None:
    clock = FakeClock()
    table = MessageTable(refresh_hz=4.0, clock=clock)  # one draw per 0.25 s
    assert table.renders == 1  # the empty view

    clock.now = 0.1
    for seq in range(1, 1001):
        table.record(event(seq))
    assert table.renders == 1
    assert table.shown == []

    clock.now = 0.25
    table.record(event(1001))
    assert table.renders == 2
    assert column(table, "payload")[0] == "payload-1001"

    clock.now = 0.3
    table.record(event(1002))
    assert table.renders == 2
    table.flush()
    assert table.renders == 3
    assert column(table, "payload")[0] == "payload-1002"


async def test_burst_draws_once_then_a_trailing_draw_fires() -> None:
    clock = FakeClock()
    table = MessageTable(refresh_hz=10.0, clock=clock)
    assert table.renders == 1

    clock.now = 0.05
    for seq in range(1, 501):
        table.record(event(seq))
    assert table.renders == 1  # no drawing inside the listener: a timer is armed instead

    await eventually(lambda: table.renders == 2)
    assert column(table, "payload")[0] == "payload-500"
    assert "seen 500" in table.summary

    # The events stopped after the burst: the timer drew them all, and nothing is left armed.
    clock.now = 1.0
    table.record(event(501))
    await eventually(lambda: column(table, "payload")[0] == "payload-501")
    assert table.renders == 3


def test_the_rate_is_averaged_over_the_window_then_reads_idle() -> None:
    clock = FakeClock()
    table = MessageTable(clock=clock)
    assert table.rate == 0 and "idle" in table.summary

    for now, first in ((0.5, 1), (1.0, 101), (1.5, 201), (2.0, 301)):
        clock.now = now
        for seq in range(first, first + 100):
            table.record(event(seq))
        table.flush()
        assert table.rate == pytest.approx(200.0)  # 100 events every half second
    assert "200 events/s" in table.summary

    clock.now = 3.0  # the window (1.0, 3.0] holds the draws at 1.5 and 2.0: 200 events
    table.flush()
    assert table.rate == pytest.approx(100.0)
    clock.now = 2.0 + RATE_WINDOW  # nothing since the draw at 2.0
    table.flush()
    assert table.rate == 0 and "idle" in table.summary


def test_a_steady_flow_reads_its_own_rate_whatever_the_draw_times() -> None:
    # Draws 0.3 s apart never line up with the 2 s window: the draw before it is up
    # to one refresh older, and dividing by 2 s would read up to 15% high.
    clock = FakeClock()
    table = MessageTable(refresh_hz=4.0, clock=clock)
    seq, shown = 0, []
    for tick in range(1, 30):
        clock.now = tick * 0.3
        for _ in range(300):  # 1,000 events a second
            seq += 1
            table.record(event(seq))
        table.flush()
        if clock.now > RATE_WINDOW + 0.3:
            shown.append(table.rate)
    assert shown and all(r == pytest.approx(1000.0) for r in shown), shown


def test_after_a_pause_the_rate_counts_from_the_resume() -> None:
    clock = FakeClock()
    table = MessageTable(refresh_hz=4.0, clock=clock)
    seq = 0
    for tick in range(1, 13):  # 1,000 events a second for 3 s
        clock.now = tick * 0.25
        for _ in range(250):
            seq += 1
            table.record(event(seq))
        table.flush()
    table.pause()
    for tick in range(1, 241):  # 60 s paused, still 1,000 a second
        clock.now = 3.0 + tick * 0.25
        for _ in range(250):
            seq += 1
            table.record(event(seq))
    table.resume()
    assert table.rate == 0  # nothing since the resume yet, not 60 s of events over 2 s
    for tick in range(1, 13):
        clock.now = 63.0 + tick * 0.25
        for _ in range(250):
            seq += 1
            table.record(event(seq))
        table.flush()
        assert table.rate == pytest.approx(1000.0, rel=0.05)


async def test_the_rate_falls_to_idle_by_itself_once_traffic_stops() -> None:
    table = MessageTable(refresh_hz=20.0)  # the real clock: the idle draw is a loop timer
    for seq in range(1, 101):
        table.record(event(seq))
    await eventually(lambda: table.rate > 0 and "events/s" in table.summary)
    drawn = table.renders

    await eventually(lambda: "idle" in table.summary, timeout=RATE_WINDOW + 2)
    assert table.renders == drawn + 1  # one draw, with nothing new: the idle one


def test_a_draw_sends_only_the_new_rows(page: Callable[[MessageTable], RecordingComm]) -> None:
    table = MessageTable()
    sent = page(table)
    sent.custom()

    for seq in (1, 2, 3):
        table.record(event(seq))
    table.flush()
    (added,) = sent.custom()
    assert [row[2] for row in added["add"]] == ["3", "2", "1"]
    assert [row["stream seq"] for row in table.shown] == ["3", "2", "1"]

    table.flush()
    assert [m["add"] for m in sent.custom()] == [[]]  # nothing new: the summary only

    table.record(event(4))
    table.flush()
    assert [[row[2] for row in m["add"]] for m in sent.custom()] == [["4"]]
    assert column(table, "stream seq") == ["4", "3", "2", "1"]


def test_a_flood_draw_sends_shown_rows_in_a_few_kb(
    page: Callable[[MessageTable], RecordingComm],
) -> None:
    table = MessageTable()  # 50 rows shown
    sent = page(table)
    for seq in range(1, 10_001):
        table.record(event(seq, preview=b'{"order":%d}' % seq))  # as the browser test floods
    sent.custom()
    table.flush()

    (added,) = sent.custom()
    assert len(added["add"]) == 50 and added["add"][0][2] == "10000"
    # At 4 draws a second, with the message's envelope: within the 20 kB/s
    # the page may be sent during a flood.
    assert len(json.dumps(added)) < 4_500


def test_a_new_view_is_sent_every_shown_row(
    page: Callable[[MessageTable], RecordingComm],
) -> None:
    table = MessageTable(shown_rows=3)
    sent = page(table)
    for seq in range(1, 6):
        table.record(event(seq))
    table.flush()
    sent.custom()

    sent.from_page({"want": "rows"})  # what message_table.js asks when it draws
    (snapshot,) = sent.custom()
    assert [row[2] for row in snapshot["reset"]] == ["5", "4", "3"]
    assert snapshot["summary"] == table.summary and "seen 5" in table.summary


def test_pause_keeps_recording_without_drawing() -> None:
    table = MessageTable()
    table.record(event(1))
    table.flush()

    button(table, "Pause").click()
    assert table.paused
    drawn = table.renders
    for seq in range(2, 6):
        table.record(event(seq))
    assert table.renders == drawn
    assert len(table.rows) == 5 and table.seen == 5
    assert column(table, "payload") == ["payload-1"]
    assert "paused" in table.summary

    button(table, "Resume").click()
    assert not table.paused
    assert column(table, "payload")[0] == "payload-5"
    assert "paused" not in table.summary


def test_clear_forgets_events_and_counts(page: Callable[[MessageTable], RecordingComm]) -> None:
    table = MessageTable()
    sent = page(table)
    for seq in range(1, 4):
        table.record(event(seq))
    button(table, "Clear").click()

    assert table.rows == [] and table.seen == 0 and not table.counts
    assert table.shown == [] and sent.custom()[-1]["reset"] == []
    assert "seen 0" in table.summary


def test_outcome_filters_change_the_view_not_the_data(
    page: Callable[[MessageTable], RecordingComm],
) -> None:
    table = MessageTable()
    sent = page(table)
    table.record(event(1, Outcome.ACK))
    table.record(event(2, Outcome.NAK, delay=1.0))
    table.record(event(3, Outcome.DEAD_LETTER, error="boom"))
    table.flush()
    assert column(table, "payload") == ["payload-3", "payload-2", "payload-1"]

    sent.custom()
    table.filters[Outcome.NAK].value = False
    assert column(table, "payload") == ["payload-3", "payload-1"]
    (refiltered,) = sent.custom()  # the view is redrawn whole
    assert [row[7] for row in refiltered["reset"]] == ["payload-3", "payload-1"]

    table.filters[Outcome.ACK].value = False
    table.filters[Outcome.DEAD_LETTER].value = False
    assert table.shown == []
    assert len(table.rows) == 3

    table.filters[Outcome.NAK].value = True
    assert column(table, "payload") == ["payload-2"]


def test_attach_and_detach_a_source() -> None:
    source = FakeSource()
    table = MessageTable(source)
    source.emit(event(1))
    assert len(table.rows) == 1

    other = FakeSource()
    table.attach(other)
    assert source.listeners == []
    other.emit(event(2))
    table.detach()
    assert other.listeners == [] and table.source is None
    other.emit(event(3))
    assert [r["stream_seq"] for r in table.rows] == [1, 2]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"max_rows": 0}, id="no-rows-kept"),
        pytest.param({"shown_rows": 0}, id="no-rows-shown"),
        pytest.param({"visible_rows": 0}, id="no-rows-visible"),
        pytest.param({"refresh_hz": 0}, id="never-drawn"),
    ],
)
def test_rejects_sizes_that_cannot_work(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="jsnb: max_rows"):
        MessageTable(**options)


async def test_live_subscription_end_to_end(nats_server: Any) -> None:
    # ackWait is the NAK delay without backOff.
    async with JetStreamPubSub({"natsURL": nats_server.url, "ackWait": "200ms"}) as ps:
        await ensure_stream(ps, "S", ["s"])
        handler = Recorder(fail_times=1)
        sub = await ps.subscribe("s", handler)
        table = MessageTable(sub)
        everything = MessageTable(ps)
        for i in range(3):
            await ps.publish("s", {"n": i})

        await eventually(lambda: table.counts[Outcome.ACK] == 3)
        assert table.counts[Outcome.NAK] == 3
        frame = table.to_dataframe()
        assert len(frame) == 6
        assert sorted(frame.loc[frame.outcome == "ack", "num_delivered"]) == [2, 2, 2]
        assert set(frame["consumer"]) == {sub.consumer}
        assert frame["error"].dropna().str.startswith("RuntimeError: planned failure").all()
        await eventually(lambda: len(table.shown) == 6)
        assert everything.seen == 6

        table.detach()
        await ps.publish("s", {"n": 3})
        await eventually(lambda: len(handler.messages) == 4)
        await eventually(lambda: everything.counts[Outcome.ACK] == 4)
        assert table.seen == 6
