"""A live table of delivery attempts: what was delivered, how often, and what became of it.

>>> from jsnb import DeliveryEvent, Outcome
>>> from jsnb.widgets.message_table import MessageTable
>>> table = MessageTable()  # MessageTable(sub) or MessageTable(ps) attaches at once
>>> table.record(DeliveryEvent(time=0.0, topic="orders", subject="orders", stream_seq=1,
...                            consumer_seq=1, num_delivered=1, outcome=Outcome.ACK))
>>> table.counts["ack"], len(table.rows)
(1, 1)

Recording an event is an append to a bounded deque and two counter bumps, so
a busy subscription pays microseconds per delivery. Drawing happens apart
from that, at most ``refresh_hz`` times a second, on a timer of the running
event loop; the timer is armed by the first event after a draw, so the last
events before a quiet spell are always drawn, and one more draw
``RATE_WINDOW`` seconds later lets the rate fall to "idle".

A draw sends the page one message with only what changed: the summary line,
and the rows that are new since the last draw, as lists of strings (``message_table.js`` turns
them into table rows). Under a flood that is ``shown_rows`` short rows per
draw, a few kB, where re-sending the table as HTML cost about 27 kB.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anywidget
import ipywidgets as widgets
import traitlets

from jsnb.display import outcome_css
from jsnb.errors import InvalidArgumentError
from jsnb.messages import DeliveryEvent, Outcome

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RATE_WINDOW", "MessageTable"]


def _column(label: str, tip: str, width: str = "", *, number: bool = False) -> dict[str, Any]:
    """One column of the view: header, header tooltip, CSS width (none: shares what is left).

    Numbers align right; other text is clipped to the column, whole in the cell's tooltip.
    """
    return {"label": label, "help": tip, "width": width, "number": number}


_VIEW_COLUMNS = (
    _column("time", "when the outcome was decided", "13ch"),
    _column("subject", "the message's subject", "12%"),
    _column("stream seq", "sequence in the stream", "8ch", number=True),
    _column("consumer seq", "sequence of this delivery for the consumer", "9ch", number=True),
    _column("delivery", "delivery attempt: 1 is the first", "7.5ch", number=True),
    _column("outcome", "what became of the attempt, with the NAK delay", "12.5ch"),
    _column("handler ms", "handler run time, milliseconds", "7ch", number=True),
    _column("payload", "the first bytes of the payload"),
    _column("error", "what the handler raised"),
)
_HEADERS = tuple(c["label"] for c in _VIEW_COLUMNS)
# What a row may send of an error: the page clips it anyway, to_dataframe() has all of it.
_ERROR_CHARS = 240
# DeliveryEvent.as_row() decides the DataFrame columns; an empty table keeps them too.
_COLUMNS = tuple(DeliveryEvent(0.0, "", "", 0, 0, 0, Outcome.ACK).as_row())
# Seconds the rate is averaged over, and so how long after the last event it reads idle.
RATE_WINDOW = 2.0
_HERE = Path(__file__).parent


class _Observable(Protocol):
    """A :class:`jsnb.Subscription` or :class:`jsnb.JetStreamPubSub`."""

    def add_listener(self, listener: Callable[[DeliveryEvent], None]) -> None: ...

    def remove_listener(self, listener: Callable[[DeliveryEvent], None]) -> None: ...


class _RowsView(anywidget.AnyWidget):
    """The scroll box of rows; rows reach it as messages (see ``message_table.js``)."""

    _esm = _HERE / "message_table.js"
    _css = (_HERE / "message_table.css").read_text() + outcome_css(".jsnb-messages .jsnb-")
    columns: traitlets.List[str] = traitlets.List().tag(sync=True)
    shown_rows = traitlets.Int().tag(sync=True)
    visible_rows = traitlets.Int().tag(sync=True)


class MessageTable(widgets.VBox):
    """The newest delivery attempts of a subscription (or of every one of a component).

    Keeps the last *max_rows* events, shows the newest *shown_rows* that pass
    the outcome filters in a box *visible_rows* high (scroll for the rest),
    and redraws at most *refresh_hz* times a second. *clock* (seconds,
    monotonic) is what the throttle and the rate read; tests pass a fake.
    ``counts`` (by outcome) and ``seen`` cover every event since the last clear,
    ``filters`` maps each outcome to its toggle, ``renders`` counts the draws,
    ``summary`` and ``shown`` are the line and the rows the view shows.
    """

    def __init__(
        self,
        source: _Observable | None = None,
        *,
        max_rows: int = 5000,
        shown_rows: int = 50,
        visible_rows: int = 12,
        refresh_hz: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_rows, shown_rows, visible_rows) < 1 or refresh_hz <= 0:
            raise InvalidArgumentError(
                f"jsnb: max_rows {max_rows}, shown_rows {shown_rows} and visible_rows "
                f"{visible_rows} must be 1 or more, refresh_hz {refresh_hz} above 0"
            )
        self.max_rows = max_rows
        self.shown_rows = shown_rows
        self.refresh_hz = refresh_hz
        self.counts: Counter[Outcome] = Counter()
        self.seen = 0
        self.renders = 0
        self.source: _Observable | None = None
        self._events: deque[DeliveryEvent] = deque(maxlen=max_rows)
        self._shown: deque[list[str]] = deque(maxlen=shown_rows)  # newest first, as sent
        self._drawn = 0  # ``seen`` at the last draw: the events after it are the new rows
        self._stale = True  # the shown rows must be rebuilt (filters changed, cleared)
        self._clock = clock
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._next_render = float("-inf")
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])  # (time, seen)

        self.summary = ""
        self._view = _RowsView(
            columns=list(_VIEW_COLUMNS), shown_rows=shown_rows, visible_rows=visible_rows
        )
        self._view.on_msg(self._on_view_msg)
        self._pause_button = _button("Pause", "pause")
        self._pause_button.on_click(lambda _: self.resume() if self._paused else self.pause())
        clear_button = _button("Clear", "trash")
        clear_button.on_click(lambda _: self.clear())
        self.filters = {
            outcome: widgets.ToggleButton(
                value=True, description=outcome.value, layout=widgets.Layout(width="auto")
            )
            for outcome in Outcome
        }
        for toggle in self.filters.values():
            toggle.observe(self._refilter, names="value")
        controls = widgets.HBox(
            [self._pause_button, clear_button, *self.filters.values()],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        super().__init__(children=[controls, self._view])
        self._render()
        if source is not None:
            self.attach(source)

    # -- recording -------------------------------------------------------------------

    def attach(self, source: _Observable) -> None:
        """Record every delivery attempt of *source* (detaching from any previous one)."""
        self.detach()
        source.add_listener(self.record)
        self.source = source

    def detach(self) -> None:
        """Stop recording; what was recorded stays."""
        if self.source is not None:
            self.source.remove_listener(self.record)
            self.source = None

    def record(self, event: DeliveryEvent) -> None:
        """The listener: keep *event* and, at most once per draw, arm the redraw timer."""
        self._events.append(event)
        self.seen += 1
        self.counts[event.outcome] += 1
        if self._timer is None and not self._paused:
            self._schedule()

    def _schedule(self) -> None:
        delay = self._next_render - self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No event loop (a plain script): draw inline, still at most refresh_hz a second.
            if delay <= 0:
                self._render()
            return
        self._timer = loop.call_later(max(delay, 0.0), self._render)

    # -- controls ----------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Freeze the view; events are still recorded."""
        self._paused = True
        self._cancel_timers()
        self._pause_button.description, self._pause_button.icon = "Resume", "play"
        self._render()

    def resume(self) -> None:
        """Show everything recorded, including what arrived while paused."""
        self._paused = False
        self._pause_button.description, self._pause_button.icon = "Pause", "pause"
        # Draws stopped while paused: the rate counts again from now.
        self._samples = deque([(self._clock(), self.seen)])
        self.flush()

    def clear(self) -> None:
        """Forget every recorded event and count."""
        self._events.clear()
        self.counts.clear()
        self.seen = self._drawn = 0
        self._samples = deque([(self._clock(), 0)])
        self._stale = True
        self.flush()

    def flush(self) -> None:
        """Draw now, whatever the throttle says (and even while paused)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._render()

    def _refilter(self, _: Any) -> None:
        self._stale = True
        self.flush()

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._idle):
            if timer is not None:
                timer.cancel()
        self._timer = self._idle = None

    # -- data --------------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every retained event as a flat dict, oldest first."""
        return [event.as_row() for event in self._events]

    def to_dataframe(self) -> pd.DataFrame:
        """Every retained event, oldest first, one row each."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(_COLUMNS))

    @property
    def shown(self) -> list[dict[str, str]]:
        """What the view shows, newest first: each row's cells as text, by column header."""
        return [dict(zip(_HEADERS, cells, strict=True)) for cells in self._shown]

    @property
    def rate(self) -> float:
        """Events per second over the last ``RATE_WINDOW`` seconds, as of the last draw."""
        (then, seen_then), (now, seen_now) = self._samples[0], self._samples[-1]
        span = now - then  # the draw before the window is up to one refresh older than it
        if span > RATE_WINDOW + 1.0 / self.refresh_hz:
            # A quiet spell since that draw: the events came at its end, not spread over it.
            span = RATE_WINDOW
        return (seen_now - seen_then) / span if span > 0 else 0.0

    # -- drawing -----------------------------------------------------------------------

    def _render(self) -> None:
        self._timer = None
        now = self._clock()
        self._next_render = now + 1.0 / self.refresh_hz
        self.renders += 1
        # The draws of the last RATE_WINDOW seconds, and the last one before them.
        self._samples.append((now, self.seen))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW:
            self._samples.popleft()
        self.summary = self._summary_text()
        self._send()
        if self.rate:
            self._arm_idle()

    def _arm_idle(self) -> None:
        # Once traffic stops nothing else draws: one more draw when this one's events
        # have left the window lets the rate fall to idle instead of freezing.
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._idle = loop.call_later(RATE_WINDOW, self._idle_render)

    def _idle_render(self) -> None:
        self._idle = None
        if not self._paused:
            self._render()

    def _summary_text(self) -> str:
        rate = self.rate
        parts = [f"seen {self.seen:,}", f"retained {len(self._events):,} of {self.max_rows:,}"]
        parts += [f"{o.value} {self.counts[o]:,}" for o in Outcome if self.counts[o]]
        parts.append(f"{rate:,.0f} events/s" if rate else "idle")
        state = " (paused: new events are recorded, not shown)" if self._paused else ""
        return " \u00b7 ".join(parts) + state

    def _send(self) -> None:
        """One message a draw: the summary, and the rows new since the last draw (or all)."""
        new, self._drawn = self.seen - self._drawn, self.seen
        if self._stale:
            self._stale = False
            self._shown.clear()
            self._shown.extend(self._newest(len(self._events)))
            self._view.send({"summary": self.summary, "reset": list(self._shown)})
            return
        added = self._newest(min(new, len(self._events)))
        self._shown.extendleft(reversed(added))
        self._view.send({"summary": self.summary, "add": added})

    def _newest(self, count: int) -> list[list[str]]:
        """Cells of the newest *count* events that pass the filters, newest first."""
        shown = {o for o, toggle in self.filters.items() if toggle.value}
        rows: list[list[str]] = []
        for i in range(count):
            event = self._events[-1 - i]
            if event.outcome in shown:
                rows.append(_cells(event))
                if len(rows) == self.shown_rows:
                    break
        return rows

    def _on_view_msg(self, _: Any, content: dict[str, Any], buffers: Any) -> None:
        if content.get("want") == "rows":  # a view was drawn: it has no rows yet
            self._view.send({"summary": self.summary, "reset": list(self._shown)})


def _button(description: str, icon: str) -> widgets.Button:
    return widgets.Button(description=description, icon=icon, layout=widgets.Layout(width="auto"))


def _cells(event: DeliveryEvent) -> list[str]:
    """One row as the view shows it; the DataFrame keeps the values themselves."""
    outcome = event.outcome.value
    if event.delay:
        outcome += f" +{event.delay:g}s"
    error = event.error or ""
    if len(error) > _ERROR_CHARS:
        error = error[: _ERROR_CHARS - 1] + "\u2026"
    return [
        datetime.fromtimestamp(event.time).strftime("%H:%M:%S.%f")[:-3],
        event.subject,
        str(event.stream_seq),
        str(event.consumer_seq),
        str(event.num_delivered),
        outcome,
        f"{event.duration * 1000:.1f}",
        event.preview.decode("utf-8", "replace"),
        error,
    ]
