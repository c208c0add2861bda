"""A live table of the server's advisories: NAKs, terminations, exhausted messages, actions.

>>> feed = AdvisoryFeed(ps, "ORDERS")  # listens once displayed or started
>>> await feed.start()
>>> _ = await ps.jetstream.add_consumer("ORDERS", durable_name="audit")
>>> _ = await jsnb.until(lambda: feed.rows)
>>> feed.flush()
>>> feed.to_dataframe()[["kind", "consumer"]].values.tolist()
[['consumer_created', 'audit']]
>>> await feed.stop()

Rows are drawn the way :class:`~jsnb.widgets.MessageTable` draws them (the
same page-side view, ``message_table.js``): recording is an append to a
bounded deque, and the view is redrawn at most ``refresh_hz`` times a second,
on a timer armed by the first advisory after a draw.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from jsnb import sync
from jsnb.advisories import Advisories, Advisory, AdvisoryKind, parse_kinds
from jsnb.errors import InvalidArgumentError
from jsnb.widgets.message_table import _column, _RowsView

if TYPE_CHECKING:
    import pandas as pd

    from jsnb.pubsub import JetStreamPubSub

__all__ = ["AdvisoryFeed"]

_VIEW_COLUMNS = (
    _column("time", "server time of the event (UTC)", "13ch"),
    _column("kind", "what the server reports", "17ch"),
    _column("stream", "the stream", "12%"),
    _column("consumer", "the consumer", "14%"),
    _column("stream seq", "the message's sequence in the stream", "9ch", number=True),
    _column("deliveries", "deliveries of the message so far", "9.5ch", number=True),
    _column("reason", "the rest, in words"),
)
_DATA_COLUMNS = tuple(Advisory(AdvisoryKind.NAK, dt.datetime.min, "").as_row())


class AdvisoryFeed(widgets.VBox):
    """The newest advisories of *ps* for *stream* / *consumer* / *kinds*, live.

    Keeps the last *max_rows*, shows the newest *shown_rows* that pass the
    kind toggles (``filters``), redrawn at most *refresh_hz* times a second.
    Without *ps* it only shows what :meth:`record` is given.
    """

    def __init__(
        self,
        ps: JetStreamPubSub | None = None,
        stream: str | None = None,
        consumer: str | None = None,
        *,
        kinds: Iterable[AdvisoryKind | str] | None = None,
        max_rows: int = 2000,
        shown_rows: int = 50,
        visible_rows: int = 10,
        refresh_hz: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(max_rows, shown_rows, visible_rows) < 1 or refresh_hz <= 0:
            raise InvalidArgumentError(
                f"jsnb: max_rows {max_rows}, shown_rows {shown_rows} and visible_rows "
                f"{visible_rows} must be 1 or more, refresh_hz {refresh_hz} above 0"
            )
        self.ps, self.stream, self.consumer = ps, stream, consumer
        self.kinds = parse_kinds(kinds)
        self.shown_rows, self.refresh_hz = shown_rows, refresh_hz
        self.counts: Counter[AdvisoryKind] = Counter()
        self.renders = 0
        self.summary = ""
        self._rows: deque[Advisory] = deque(maxlen=max_rows)
        self._shown: list[list[str]] = []
        self._clock = clock
        self._next_render = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._feed: Advisories | None = None
        self._task: asyncio.Task[None] | None = None

        self._view = _RowsView(
            columns=list(_VIEW_COLUMNS), shown_rows=shown_rows, visible_rows=visible_rows
        )
        self._view.on_msg(self._on_view_msg)
        auto = widgets.Layout(width="auto")
        self._pause_button = widgets.Button(description="Pause", icon="pause", layout=auto)
        self._pause_button.on_click(lambda _: self.resume() if self._paused else self.pause())
        clear = widgets.Button(description="Clear", icon="trash", layout=auto)
        clear.on_click(lambda _: self.clear())
        self.filters = {
            kind: widgets.ToggleButton(value=True, description=kind.value, layout=auto)
            for kind in self.kinds
        }
        for toggle in self.filters.values():
            toggle.observe(lambda _: self.flush(), names="value")
        controls = widgets.HBox(
            [self._pause_button, clear, *self.filters.values()],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        super().__init__(children=[controls, self._view])
        self._render()

    # -- listening ---------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the advisories (once) and record them until :meth:`stop`."""
        if self._feed is not None or self.ps is None:
            return
        self._feed = self.ps.advisories(self.stream, self.consumer, self.kinds)
        await self._feed.start()
        self._task = asyncio.get_running_loop().create_task(self._listen(self._feed))
        self.flush()

    async def _listen(self, feed: Advisories) -> None:
        async for adv in feed:
            self.record(adv)

    async def stop(self) -> None:
        """Unsubscribe; what was recorded stays."""
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.aclose()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.flush()

    def record(self, adv: Advisory) -> None:
        """Keep *adv* and, at most once per draw, arm the redraw timer."""
        self._rows.append(adv)
        self.counts[adv.kind] += 1
        if self._timer is None and not self._paused:
            delay = self._next_render - self._clock()
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                if delay <= 0:  # no loop (a script): draw inline, still throttled
                    self._render()
                return
            self._timer = loop.call_later(max(delay, 0.0), self._render)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Displaying the feed in a notebook starts listening, as ConsumerState starts polling.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            if self._feed is None and self.ps is not None:
                sync.spawn(self.start())
        return super()._repr_mimebundle_(**kwargs)

    # -- controls ----------------------------------------------------------------------

    def pause(self) -> None:
        """Freeze the view; advisories are still recorded."""
        self._paused = True
        self._pause_button.description, self._pause_button.icon = "Resume", "play"
        self.flush()

    def resume(self) -> None:
        self._paused = False
        self._pause_button.description, self._pause_button.icon = "Pause", "pause"
        self.flush()

    def clear(self) -> None:
        """Forget every recorded advisory."""
        self._rows.clear()
        self.counts.clear()
        self.flush()

    def flush(self) -> None:
        """Draw now, whatever the throttle says."""
        if self._timer is not None:
            self._timer.cancel()
        self._render()

    # -- data --------------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every retained advisory as a flat dict, oldest first."""
        return [adv.as_row() for adv in self._rows]

    def to_dataframe(self) -> pd.DataFrame:
        """Every retained advisory, oldest first (with ``raw``, the server's JSON)."""
        import pandas as pd

        rows = [{**adv.as_row(), "raw": adv.raw} for adv in self._rows]
        return pd.DataFrame(rows, columns=[*_DATA_COLUMNS, "raw"])

    @property
    def shown(self) -> list[dict[str, str]]:
        """What the view shows, newest first, by column header."""
        labels = [c["label"] for c in _VIEW_COLUMNS]
        return [dict(zip(labels, cells, strict=True)) for cells in self._shown]

    # -- drawing -----------------------------------------------------------------------

    def _render(self) -> None:
        self._timer = None
        self._next_render = self._clock() + 1.0 / self.refresh_hz
        self.renders += 1
        wanted = {k for k, toggle in self.filters.items() if toggle.value}
        shown: list[list[str]] = []
        for adv in reversed(self._rows):
            if adv.kind in wanted:
                shown.append(_cells(adv))
                if len(shown) == self.shown_rows:
                    break
        self._shown = shown
        parts = [f"{len(self._rows):,} advisories"]
        parts += [f"{k.value} {self.counts[k]:,}" for k in self.kinds if self.counts[k]]
        listening = "listening" if self._feed is not None else "not listening"
        paused = " (paused: still recorded, not shown)" if self._paused else ""
        self.summary = " \u00b7 ".join([*parts, listening]) + paused
        self._view.send({"summary": self.summary, "reset": shown})

    def _on_view_msg(self, _: Any, content: dict[str, Any], buffers: Any) -> None:
        if content.get("want") == "rows":
            self._view.send({"summary": self.summary, "reset": self._shown})


def _cells(adv: Advisory) -> list[str]:
    return [
        adv.time.strftime("%H:%M:%S.%f")[:-3],
        adv.kind.value,
        adv.stream,
        adv.consumer,
        "" if adv.stream_seq is None else str(adv.stream_seq),
        "" if adv.deliveries is None else str(adv.deliveries),
        adv.reason,
    ]
