"""MessageTable, headless: recording, the ring buffer, throttled drawing, pause, clear, filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pytest

from jsnb import DeliveryEvent, JetStreamPubSub, Outcome, ensure_stream
from jsnb.widgets.message_table import MessageTable
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


def table_html(table: MessageTable) -> str:
    return table.children[2].value


def counts_html(table: MessageTable) -> str:
    return table.children[1].value


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


def test_empty_table_has_columns_and_says_so() -> None:
    table = MessageTable()
    assert table.rows == []
    assert list(table.to_dataframe().columns) == list(event(0).as_row())
    assert "no events" in table_html(table)


def test_ring_buffer_keeps_the_newest_max_rows() -> None:
    table = MessageTable(max_rows=10)
    for seq in range(1, 26):
        table.record(event(seq, Outcome.NAK if seq % 5 == 0 else Outcome.ACK))
    table.flush()

    assert [r["stream_seq"] for r in table.rows] == list(range(16, 26))
    assert len(table.to_dataframe()) == 10
    assert table.seen == 25
    assert table.counts == {Outcome.ACK: 20, Outcome.NAK: 5}  # counts cover all seen
    assert "seen 25" in counts_html(table)
    assert "retained 10 of 10" in counts_html(table)


def test_shows_the_newest_shown_rows_newest_first() -> None:
    table = MessageTable(shown_rows=5)
    for seq in range(1, 21):
        table.record(event(seq, subject=f"orders.{seq}"))
    table.flush()

    html = table_html(table)
    assert html.count("<tr>") == 1 + 5  # header + rows
    shown = [f"orders.{seq}" for seq in range(20, 15, -1)]
    positions = [html.index(f">{subject}<") for subject in shown]
    assert positions == sorted(positions)
    assert ">orders.15<" not in html


def test_cells_are_escaped_and_show_nak_delay() -> None:
    table = MessageTable()
    table.record(
        event(1, Outcome.NAK, delay=2.5, error="ValueError: <script>x</script>", preview=b"<b>&")
    )
    table.flush()

    html = table_html(table)
    assert "nak +2.5s" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html
    assert "&lt;b&gt;&amp;" in html


def test_draws_at_most_once_per_interval_without_a_loop() -> None:
    clock = FakeClock()
    table = MessageTable(refresh_hz=4.0, clock=clock)  # one draw per 0.25 s
    assert table.renders == 1  # the empty view

    clock.now = 0.1
    for seq in range(1, 1001):
        table.record(event(seq))
    assert table.renders == 1
    assert "payload-1000" not in table_html(table)

    clock.now = 0.25
    table.record(event(1001))
    assert table.renders == 2
    assert "payload-1001" in table_html(table)

    clock.now = 0.3
    table.record(event(1002))
    assert table.renders == 2
    table.flush()
    assert table.renders == 3
    assert "payload-1002" in table_html(table)


async def test_burst_draws_once_then_a_trailing_draw_fires() -> None:
    clock = FakeClock()
    table = MessageTable(refresh_hz=10.0, clock=clock)
    assert table.renders == 1

    clock.now = 0.05
    for seq in range(1, 501):
        table.record(event(seq))
    assert table.renders == 1  # no drawing inside the listener: a timer is armed instead

    await eventually(lambda: table.renders == 2)
    assert "payload-500" in table_html(table)
    assert "seen 500" in counts_html(table)

    # The events stopped after the burst: the timer drew them all, and nothing is left armed.
    clock.now = 1.0
    table.record(event(501))
    await eventually(lambda: "payload-501" in table_html(table))
    assert table.renders == 3


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
    assert "payload-5" not in table_html(table)
    assert "paused" in counts_html(table)

    button(table, "Resume").click()
    assert not table.paused
    assert "payload-5" in table_html(table)
    assert "paused" not in counts_html(table)


def test_clear_forgets_events_and_counts() -> None:
    table = MessageTable()
    for seq in range(1, 4):
        table.record(event(seq))
    button(table, "Clear").click()

    assert table.rows == [] and table.seen == 0 and not table.counts
    assert "no events" in table_html(table)
    assert "seen 0" in counts_html(table)


def test_outcome_filters_change_the_view_not_the_data() -> None:
    table = MessageTable()
    table.record(event(1, Outcome.ACK))
    table.record(event(2, Outcome.NAK, delay=1.0))
    table.record(event(3, Outcome.DEAD_LETTER, error="boom"))
    table.flush()
    assert all(f"payload-{seq}" in table_html(table) for seq in (1, 2, 3))

    table.filters[Outcome.NAK].value = False
    html = table_html(table)
    assert "payload-1" in html and "payload-3" in html
    assert "payload-2" not in html

    table.filters[Outcome.ACK].value = False
    table.filters[Outcome.DEAD_LETTER].value = False
    assert "no events" in table_html(table)
    assert len(table.rows) == 3

    table.filters[Outcome.NAK].value = True
    assert "payload-2" in table_html(table)


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
        await eventually(lambda: table_html(table).count("<tr>") == 1 + 6)
        assert everything.seen == 6

        table.detach()
        await ps.publish("s", {"n": 3})
        await eventually(lambda: len(handler.messages) == 4)
        await eventually(lambda: everything.counts[Outcome.ACK] == 4)
        assert table.seen == 6
