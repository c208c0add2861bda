"""Live views of a consumer's and a stream's server-side state, polled on an interval.

>>> _ = await ps.publish("orders", {"id": 1})
>>> _ = await ps.jetstream.add_consumer("ORDERS", durable_name="billing")
>>> state = ConsumerState(ps, "ORDERS", "billing")  # or ConsumerState.for_subscription(sub)
>>> record = await state.refresh()   # displaying it polls once a second; this polls now
>>> record["num_pending"], len(state.history)    # the latest snapshot, the counters over time
(1, 1)

The server's answer is what the counters mean: ``num_ack_pending`` is what
was delivered and not yet acknowledged, the ack floor is the highest sequence
below which everything is acknowledged. Any consumer can be watched, not only
one jsnb created. A failed poll is shown in the status line, never raised,
so a notebook keeps running while the server restarts.

The view is a line of counters, each with a sparkline of its recent history,
over the rest of the record (the configuration) in a collapsed section. The
two are separate widgets, so a poll that only moves the counters sends the
page the counters only.
"""

from __future__ import annotations

import asyncio
import html
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import ipywidgets as widgets
from nats.js import api

from jsnb.consumer import FieldDrift, compare
from jsnb.display import ERROR_COLOUR, MUTED_COLOUR, WARNING_COLOUR
from jsnb.errors import InvalidArgumentError, LoopNotRunningError
from jsnb.metadata import Metadata
from jsnb.state import COUNTER_HELP, consumer_record, stream_record, to_frame
from jsnb.widgets.consumer_actions import ConsumerActions

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from jsnb.subscription import Subscription

__all__ = [
    "CONSUMER_COUNTERS",
    "CONSUMER_TILES",
    "STREAM_COUNTERS",
    "STREAM_TILES",
    "ConsumerState",
    "StreamState",
]

CONSUMER_COUNTERS = (
    "delivered_stream_seq",
    "delivered_consumer_seq",
    "ack_floor_stream_seq",
    "ack_floor_consumer_seq",
    "num_pending",
    "num_ack_pending",
    "num_redelivered",
    "num_waiting",
)
STREAM_COUNTERS = ("messages", "bytes", "first_seq", "last_seq", "consumers")


@dataclass(frozen=True)
class _Tile:
    """One counter of the header: its label, its record key, and one shown under it."""

    label: str
    key: str
    also: str | None = None  # a second key, shown small: the consumer seq beside the stream seq


CONSUMER_TILES = (
    _Tile("delivered", "delivered_stream_seq", "delivered_consumer_seq"),
    _Tile("ack floor", "ack_floor_stream_seq", "ack_floor_consumer_seq"),
    _Tile("ack pending", "num_ack_pending"),
    _Tile("redelivered", "num_redelivered"),
    _Tile("unprocessed", "num_pending"),
)
STREAM_TILES = (
    _Tile("messages", "messages"),
    _Tile("bytes", "bytes"),
    _Tile("first seq", "first_seq"),
    _Tile("last seq", "last_seq"),
    _Tile("consumers", "consumers"),
)
_FLAGS = frozenset({"stalled", "paused"})  # shown as badges over the counters
_SPARK_POINTS = 40  # polls a sparkline spans
_SPARK_W, _SPARK_H = 120, 22
_TILE_STYLE = (
    "display:inline-block;min-width:120px;margin:0 18px 4px 0;vertical-align:top;"
    "font-variant-numeric:tabular-nums"
)


class _InfoSource(Protocol):
    """A :class:`jsnb.JetStreamPubSub` or a nats-py ``JetStreamContext``: both answer these."""

    async def consumer_info(self, stream: str, consumer: str) -> api.ConsumerInfo: ...

    async def stream_info(self, stream: str) -> api.StreamInfo: ...


class _Poller(widgets.VBox):
    """Polls *fetch* without overlap, keeps the latest record and a bounded history."""

    def __init__(
        self,
        title: str,
        fetch: Callable[[], Awaitable[Any]],
        to_record: Callable[[Any], dict[str, Any]],
        counters: tuple[str, ...],
        tiles: tuple[_Tile, ...],
        *,
        interval: float,
        history: int,
    ) -> None:
        # First: Widget.__del__ calls close(), and so stop(), even when __init__ raised.
        self._task: asyncio.Task[None] | None = None
        if interval <= 0 or history < 1:
            raise InvalidArgumentError(
                f"jsnb: interval {interval} must be above 0 and history {history} 1 or more"
            )
        self.interval = interval
        self.latest: dict[str, Any] | None = None
        self.error: str | None = None
        self.polled_at: datetime | None = None
        self._fetch = fetch
        self._to_record = to_record
        self._help: dict[str, str] = {}
        self._counters = counters
        self._tiles = tiles
        self._history: deque[dict[str, Any]] = deque(maxlen=history)
        self._lock = asyncio.Lock()

        self._header = widgets.HTML()
        self._config = widgets.HTML()
        self._status = widgets.HTML()
        self._button = widgets.Button(
            description="Start", icon="play", layout=widgets.Layout(width="auto")
        )
        self._button.on_click(lambda _: self._toggle())
        details = widgets.Accordion(children=[self._config], titles=("configuration",))
        super().__init__(
            children=[
                widgets.HTML(f"<b>{html.escape(title)}</b>"),
                self._header,
                widgets.HBox([self._button, self._status]),
                details,
            ]
        )
        self._draw()

    # -- polling -----------------------------------------------------------------------

    async def refresh(self) -> dict[str, Any] | None:
        """Poll once now (after any poll in flight); the new record, or None if it failed."""
        async with self._lock:
            self.polled_at = datetime.now().astimezone()
            try:
                info = await self._fetch()
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self._draw()
                return None
            self.error = None
            self.latest = record = self._to_record(info)
            self._history.append({"time": self.polled_at, **{k: record[k] for k in self._counters}})
            self._draw()
            return record

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        """Poll every *interval* seconds on the running event loop until :meth:`stop`."""
        if self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise LoopNotRunningError(
                "jsnb: polling needs a running event loop: call start() from a notebook cell "
                "or a coroutine, or poll once with `await state.refresh()`"
            ) from None
        self._task = loop.create_task(self._poll())
        self._button.description, self._button.icon = "Stop", "stop"
        self._draw()

    def stop(self) -> None:
        """Stop polling; the latest record and the history stay."""
        if self._task is None:
            return
        self._task.cancel()
        self._task = None
        self._button.description, self._button.icon = "Start", "play"
        self._draw()

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            if self.error is not None and self.error.startswith("ComponentClosedError"):
                self.stop()  # the component was closed: nothing left to poll
                return
            await asyncio.sleep(self.interval)

    def _toggle(self) -> None:
        if self.running:
            self.stop()
            return
        try:
            self.start()
        except RuntimeError as exc:
            self.error = str(exc)
            self._draw()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Displaying the widget in a notebook starts polling; elsewhere it stays a plain view.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self.start()
        return super()._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        self.stop()
        super().close()

    # -- data --------------------------------------------------------------------------

    @property
    def dataframe(self) -> pd.DataFrame:
        """The latest record as a one-row DataFrame (no rows before the first poll)."""
        return to_frame([self.latest] if self.latest is not None else [])

    @property
    def history(self) -> pd.DataFrame:
        """The counters, one row per successful poll, oldest first."""
        import pandas as pd

        return pd.DataFrame(self.records(), columns=["time", *self._counters])

    def records(self) -> list[dict[str, Any]]:
        """The history as dicts: ``time`` plus the counters."""
        return list(self._history)

    # -- drawing -----------------------------------------------------------------------

    def _draw(self) -> None:
        if self.latest is not None:
            self._header.value = self._header_html(self.latest)
            shown = {k for t in self._tiles for k in (t.key, t.also) if k} | _FLAGS
            self._config.value = _field_table(
                {k: v for k, v in self.latest.items() if k not in shown}
            )
        when = self.polled_at.strftime("%H:%M:%S") if self.polled_at else "never"
        if self.error is None:
            text = f"last refresh {when}"
        else:
            error = html.escape(self.error)
            text = f"<span style='color:{ERROR_COLOUR}'>refresh failed at {when}: {error}</span>"
        polling = f"polling every {self.interval:g}s" if self.running else "not polling"
        self._status.value = f"{text} &middot; {polling}"

    def _header_html(self, record: dict[str, Any]) -> str:
        recent = list(self._history)[-_SPARK_POINTS:]
        tiles = []
        for tile in self._tiles:
            also = f" <small>consumer {record[tile.also]:,}</small>" if tile.also else ""
            tip = html.escape(self._help.get(tile.key, ""), quote=True)
            tiles.append(
                f"<div style='{_TILE_STYLE}' title='{tip}'>"
                f"<div style='font-size:11px;opacity:.7'>{tile.label}</div>"
                f"<div><b style='font-size:15px'>{record[tile.key]:,}</b>{also}</div>"
                f"{_sparkline([r[tile.key] for r in recent])}</div>"
            )
        return f"<div class='jsnb-state-counters'>{''.join(tiles)}</div>{self._flags(record)}"

    def _flags(self, record: dict[str, Any]) -> str:
        """Badges for states a counter alone does not show (none for a stream)."""
        return ""


def _sparkline(values: list[int]) -> str:
    """An inline SVG of *values* scaled to their own range (flat when they do not move).

    The newest value is at the right edge, so a short history grows from the right.
    """
    if len(values) < 2:
        return f"<svg width='{_SPARK_W}' height='{_SPARK_H}'></svg>"
    low, high = min(values), max(values)
    step = _SPARK_W / (_SPARK_POINTS - 1)
    start = _SPARK_POINTS - len(values)
    points = " ".join(
        f"{(start + i) * step:.0f},"
        f"{_SPARK_H - 1 - (v - low) * (_SPARK_H - 2) / (high - low or 1):.0f}"
        for i, v in enumerate(values)
    )
    return (
        f"<svg width='{_SPARK_W}' height='{_SPARK_H}'><polyline points='{points}' "
        "fill='none' stroke='#1976d2' stroke-width='1.5'/></svg>"
    )


def _field_table(record: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left;padding:1px 12px 1px 0'>{html.escape(key)}</th>"
        f"<td style='text-align:left;padding:1px 0'>{html.escape(_show(value))}</td></tr>"
        for key, value in record.items()
    )
    return f"<table class='jsnb-state' style='font-size:12px'><tbody>{rows}</tbody></table>"


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ConsumerState(_Poller):
    """A consumer's delivery counters, with their history, and its config, polled from the server.

    *ps_or_js* is a :class:`jsnb.JetStreamPubSub` or a nats-py ``JetStreamContext``;
    the consumer can be any on *stream*, durable or ephemeral, jsnb's or not.
    Each counter explains itself on hover (and in :meth:`explain`); a badge
    says when the consumer is stalled at maxAckPending or paused. Given the
    *metadata* that should describe the consumer (a manifest, or the
    subscription's), the view also shows where the server's config differs
    from it (``drift``, as ``sub.drift()`` returns it).
    """

    def __init__(
        self,
        ps_or_js: _InfoSource,
        stream: str,
        consumer: str,
        *,
        metadata: Mapping[str, Any] | Metadata | None = None,
        interval: float = 1.0,
        history: int = 3600,
    ) -> None:
        self.stream = stream
        self.consumer = consumer
        self.metadata = (
            None if metadata is None else Metadata.from_properties(metadata, allow_embedded=True)
        )
        self._drift: list[FieldDrift] = []
        self._drift_view = widgets.HTML()
        super().__init__(
            f"consumer {consumer} on stream {stream}",
            lambda: ps_or_js.consumer_info(stream, consumer),
            self._record,
            CONSUMER_COUNTERS,
            CONSUMER_TILES,
            interval=interval,
            history=history,
        )
        self._help = COUNTER_HELP
        details = self.children[3]
        if self.metadata is not None:
            details.children = (*details.children, self._drift_view)
            details.set_title(len(details.children) - 1, "drift from the metadata")
        # Actions need a component (a bare JetStreamContext has no explorer calls).
        self.actions: ConsumerActions | None = None
        if hasattr(ps_or_js, "jetstream"):
            self.actions = ConsumerActions(ps_or_js, stream, consumer, on_done=self.refresh)
            details.children = (*details.children, self.actions)
            details.set_title(len(details.children) - 1, "actions: pause, resume, reset")

    @classmethod
    def for_subscription(
        cls, sub: Subscription, *, interval: float = 1.0, history: int = 3600
    ) -> ConsumerState:
        """The consumer behind *sub* (it must have started: ``await ps.subscribe(...)``)."""
        return cls(
            sub.pubsub,
            sub.stream,
            sub.consumer,
            metadata=sub.md,
            interval=interval,
            history=history,
        )

    def _record(self, info: api.ConsumerInfo) -> dict[str, Any]:
        if self.metadata is not None:
            self._drift = compare(self.metadata, info.config)
        return consumer_record(info)

    @property
    def drift(self) -> pd.DataFrame:
        """The last poll's config next to the metadata's, one row per field (as ``sub.drift()``)."""
        return to_frame(row.as_row() for row in self._drift)

    def explain(self) -> pd.DataFrame:
        """Each counter of the last poll, its value and what it means."""
        import pandas as pd

        record = self.latest or {}
        rows = [
            {"counter": key, "value": record.get(key), "meaning": meaning}
            for key, meaning in COUNTER_HELP.items()
        ]
        return pd.DataFrame(rows, columns=["counter", "value", "meaning"])

    def plot(self, ax: Any = None) -> Figure:
        """The history of delivered, ack floor, ack pending and redelivered over time."""
        from matplotlib.figure import Figure

        fig: Figure
        if ax is None:
            fig = Figure(figsize=(7, 2.6), layout="constrained")
            ax = fig.subplots()
        else:
            fig = ax.figure
        frame = self.history
        # Seconds from the first poll: timestamps as ticks run together over a few seconds.
        start = frame["time"].iloc[0] if len(frame) else None
        seconds = (frame["time"] - start).dt.total_seconds() if start is not None else []
        for key, label in _PLOTTED.items():
            ax.plot(seconds, frame[key], label=label, linewidth=1.5)
        ax.set_title(f"consumer {self.consumer} on stream {self.stream}", fontsize=9)
        ax.set_ylabel("messages / sequence")
        if start is not None:
            ax.set_xlabel(f"seconds since {start:%H:%M:%S} UTC", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return fig

    def _flags(self, record: dict[str, Any]) -> str:
        mode = record["consumerMode"]
        tips = {
            "push": "the server sends deliveries, up to maxAckPending (Dapr's kind)",
            "pull": "subscribers ask for batches; num_waiting counts their open requests",
        }
        badges = [_badge("#455a64", f"{mode} consumer", tips[mode])]
        if record["stalled"]:
            badges.append(
                _badge(
                    ERROR_COLOUR,
                    f"stalled: {record['num_ack_pending']:,} ack pending = maxAckPending, "
                    f"{record['num_pending']:,} waiting",
                    COUNTER_HELP["stalled"],
                )
            )
        if record["paused"]:
            badges.append(
                _badge(MUTED_COLOUR, "paused", "the server delivers nothing until resumed")
            )
        drifted = [row.key for row in self._drift if row.differs]
        if drifted:
            badges.append(
                _badge(
                    WARNING_COLOUR,
                    f"drift: {', '.join(drifted)}",
                    "the server's config differs from the metadata; see the drift section",
                )
            )
        return f"<div class='jsnb-state-flags'>{''.join(badges)}</div>"

    def _draw(self) -> None:
        super()._draw()
        if self.metadata is not None:
            self._drift_view.value = _drift_table(self._drift)


_PLOTTED = {
    "delivered_stream_seq": "delivered (stream seq)",
    "ack_floor_stream_seq": "ack floor (stream seq)",
    "num_ack_pending": "ack pending",
    "num_redelivered": "redelivered",
}


def _badge(colour: str, text: str, tip: str) -> str:
    return (
        f"<span title='{html.escape(tip, quote=True)}' style='display:inline-block;"
        f"margin:0 6px 4px 0;padding:1px 6px;border-radius:3px;color:#fff;"
        f"background:{colour};font-size:12px'>{html.escape(text)}</span>"
    )


def _drift_table(rows: list[FieldDrift]) -> str:
    if not rows:
        return "<i>not polled yet</i>"
    body = []
    for row in rows:
        cells = row.as_row()
        style = f"color:{ERROR_COLOUR};font-weight:600" if row.differs else ""
        body.append(
            f"<tr style='{style}'>"
            + "".join(
                f"<td style='text-align:left;padding:1px 10px 1px 0'>{html.escape(_show(v))}</td>"
                for v in cells.values()
            )
            + "</tr>"
        )
    head = "".join(
        f"<th style='text-align:left;padding:1px 10px 1px 0'>{k}</th>" for k in rows[0].as_row()
    )
    return (
        "<div style='overflow-x:auto'><table class='jsnb-drift' style='font-size:12px'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


class StreamState(_Poller):
    """A stream's size, sequence range and consumer count, polled from the server."""

    def __init__(
        self,
        ps_or_js: _InfoSource,
        stream: str,
        *,
        interval: float = 1.0,
        history: int = 3600,
    ) -> None:
        self.stream = stream
        super().__init__(
            f"stream {stream}",
            lambda: ps_or_js.stream_info(stream),
            stream_record,
            STREAM_COUNTERS,
            STREAM_TILES,
            interval=interval,
            history=history,
        )
