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
events before a quiet spell are always drawn.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import ipywidgets as widgets

from jsnb.messages import DeliveryEvent, Outcome

if TYPE_CHECKING:
    import pandas as pd

_HEADERS = (
    "time",
    "subject",
    "stream seq",
    "consumer seq",
    "delivery",
    "outcome",
    "handler ms",
    "payload",
    "error",
)
# DeliveryEvent.as_row() decides the DataFrame columns; an empty table keeps them too.
_COLUMNS = tuple(DeliveryEvent(0.0, "", "", 0, 0, 0, Outcome.ACK).as_row())
_COLORS = {Outcome.ACK: "#2e7d32", Outcome.NAK: "#ef6c00", Outcome.EXPIRED: "#6d4c41"}
_FAILED_COLOR = "#c62828"


class _Observable(Protocol):
    """A :class:`jsnb.Subscription` or :class:`jsnb.JetStreamPubSub`."""

    def add_listener(self, listener: Callable[[DeliveryEvent], None]) -> None: ...

    def remove_listener(self, listener: Callable[[DeliveryEvent], None]) -> None: ...


class MessageTable(widgets.VBox):
    """The newest delivery attempts of a subscription (or of every one of a component).

    Keeps the last *max_rows* events, shows the newest *shown_rows* that pass
    the outcome filters, and redraws at most *refresh_hz* times a second.
    *clock* (seconds, monotonic) is what the throttle reads; tests pass a fake.
    ``counts`` (by outcome) and ``seen`` cover every event since the last clear,
    ``filters`` maps each outcome to its toggle, ``renders`` counts the draws.
    """

    def __init__(
        self,
        source: _Observable | None = None,
        *,
        max_rows: int = 5000,
        shown_rows: int = 50,
        refresh_hz: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rows < 1 or shown_rows < 1 or refresh_hz <= 0:
            raise ValueError(
                f"jsnb: max_rows {max_rows} and shown_rows {shown_rows} must be 1 or more, "
                f"refresh_hz {refresh_hz} above 0"
            )
        self.max_rows = max_rows
        self.shown_rows = shown_rows
        self.refresh_hz = refresh_hz
        self.counts: Counter[Outcome] = Counter()
        self.seen = 0
        self.renders = 0
        self.source: _Observable | None = None
        self._events: deque[DeliveryEvent] = deque(maxlen=max_rows)
        self._clock = clock
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._next_render = float("-inf")
        self._rate_mark = (clock(), 0)

        self._counts_line = widgets.HTML()
        self._table = widgets.HTML()
        self._pause_button = widgets.Button(description="Pause", icon="pause")
        self._pause_button.on_click(lambda _: self.resume() if self._paused else self.pause())
        clear_button = widgets.Button(description="Clear", icon="trash")
        clear_button.on_click(lambda _: self.clear())
        self.filters = {
            outcome: widgets.ToggleButton(
                value=True, description=outcome.value, layout=widgets.Layout(width="auto")
            )
            for outcome in Outcome
        }
        for toggle in self.filters.values():
            toggle.observe(lambda _: self.flush(), names="value")
        controls = widgets.HBox([self._pause_button, clear_button, *self.filters.values()])
        super().__init__(children=[controls, self._counts_line, self._table])
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
        self._cancel_timer()
        self._pause_button.description, self._pause_button.icon = "Resume", "play"
        self._render()

    def resume(self) -> None:
        """Show everything recorded, including what arrived while paused."""
        self._paused = False
        self._pause_button.description, self._pause_button.icon = "Pause", "pause"
        self.flush()

    def clear(self) -> None:
        """Forget every recorded event and count."""
        self._events.clear()
        self.counts.clear()
        self.seen = 0
        self._rate_mark = (self._clock(), 0)
        self.flush()

    def flush(self) -> None:
        """Draw now, whatever the throttle says (and even while paused)."""
        self._cancel_timer()
        self._render()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- data --------------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every retained event as a flat dict, oldest first."""
        return [event.as_row() for event in self._events]

    def to_dataframe(self) -> pd.DataFrame:
        """Every retained event, oldest first, one row each."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(_COLUMNS))

    # -- drawing -----------------------------------------------------------------------

    def _render(self) -> None:
        self._timer = None
        now = self._clock()
        self._next_render = now + 1.0 / self.refresh_hz
        self.renders += 1
        self._counts_line.value = self._counts_html(now)
        self._table.value = self._table_html()

    def _counts_html(self, now: float) -> str:
        then, seen_then = self._rate_mark
        self._rate_mark = (now, self.seen)
        rate = (self.seen - seen_then) / (now - then) if now > then else 0.0
        parts = [f"seen {self.seen:,}", f"retained {len(self._events):,} of {self.max_rows:,}"]
        parts += [f"{o.value} {self.counts[o]:,}" for o in Outcome if self.counts[o]]
        parts.append(f"{rate:,.0f} events/s")
        state = " <b>(paused: new events are recorded, not shown)</b>" if self._paused else ""
        return "<span class='jsnb-counts'>" + " &middot; ".join(parts) + state + "</span>"

    def _table_html(self) -> str:
        shown = {o for o, toggle in self.filters.items() if toggle.value}
        rows: list[str] = []
        for event in reversed(self._events):
            if event.outcome in shown:
                rows.append(_row_html(event))
                if len(rows) == self.shown_rows:
                    break
        head = "".join(f"<th style='text-align:left;white-space:nowrap'>{h}</th>" for h in _HEADERS)
        body = "".join(rows) or f"<tr><td colspan='{len(_HEADERS)}'><i>no events</i></td></tr>"
        return (
            "<table class='jsnb-messages' style='font-family:monospace;font-size:12px'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


def _row_html(event: DeliveryEvent) -> str:
    outcome = event.outcome.value
    if event.delay:
        outcome += f" +{event.delay:g}s"
    color = _COLORS.get(event.outcome, _FAILED_COLOR)
    before = (
        datetime.fromtimestamp(event.time).strftime("%H:%M:%S.%f")[:-3],
        event.subject,
        event.stream_seq,
        event.consumer_seq,
        event.num_delivered,
    )
    error = html.escape(event.error or "")
    return (
        "<tr>"
        + "".join(_td(c) for c in before)
        + f"<td style='color:{color};{_NOWRAP}'>{html.escape(outcome)}</td>"
        + _td(f"{event.duration * 1000:.1f}")
        + _td(event.preview.decode("utf-8", "replace"), clip="16em")
        # long errors are clipped; the whole text is in the cell's tooltip
        + f"<td title='{error}' style='{_NOWRAP};{_clip('28em')}'>{error}</td>"
        + "</tr>"
    )


_NOWRAP = "white-space:nowrap"


def _clip(width: str) -> str:
    return f"max-width:{width};overflow:hidden;text-overflow:ellipsis"


def _td(value: object, *, clip: str | None = None) -> str:
    style = _NOWRAP + (";" + _clip(clip) if clip else "")
    return f"<td style='{style}'>{html.escape(str(value))}</td>"
