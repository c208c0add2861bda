"""Page through a stream's stored messages in a notebook, and open any one of them whole.

>>> for i in range(3):
...     _ = await ps.publish("orders", {"id": i})
>>> browser = StreamBrowser(ps, "ORDERS", limit=2)  # displaying it loads the first page
>>> page = await browser.show()                     # or drive it from code, as its controls do
>>> list(page.seq)
[1, 2]
>>> list((await browser.next_page()).seq)
[3]
>>> (await browser.open_message(2)).seq             # the whole message, and who acked it
2

The view over :func:`jsnb.browse_stream`: pages back and forth, a jump to a
sequence or a time, a subject filter, and one message opened with its
headers, envelope, payload and which consumers are past it
(:func:`jsnb.acked_by`). Nothing is read through a consumer, so browsing a
work-queue stream leaves it as it was. A failed read is shown in the status
line when it came from a control, and raised when it came from code.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from jsnb import sync
from jsnb.display import ERROR_COLOUR
from jsnb.errors import InvalidArgumentError
from jsnb.explorer import StoredMessage, acked_by, browse_stream, read_message

if TYPE_CHECKING:
    import datetime as dt

    import pandas as pd

    from jsnb.explorer import _Server

__all__ = ["StreamBrowser"]

_ROW_PX = 21
_CELL = "white-space:nowrap;overflow:hidden;text-overflow:ellipsis;padding:1px 4px"
_COLUMNS = (  # (column, header, CSS width; none shares what is left)
    ("seq", "seq", "9ch"),
    ("time", "time (UTC)", "26ch"),
    ("subject", "subject", "16%"),
    ("size", "bytes", "7ch"),
    ("ce_type", "CloudEvent type", "16%"),
    ("preview", "payload", ""),
)


class StreamBrowser(widgets.VBox):
    """Pages of *stream*'s stored messages, newest sequence last, *limit* a page.

    *ps* is a connected :class:`jsnb.JetStreamPubSub`; the stream can be any,
    jsnb's or not. ``page`` is the page shown (a DataFrame, as
    :func:`jsnb.browse_stream` returns it), ``message`` the opened message and
    ``acks`` its per-consumer ack state.
    """

    def __init__(
        self, ps: _Server, stream: str, *, limit: int = 20, visible_rows: int = 12
    ) -> None:
        if limit < 1 or visible_rows < 1:
            raise InvalidArgumentError(
                f"jsnb: limit {limit} and visible_rows {visible_rows} must be 1 or more"
            )
        self.ps = ps
        self.stream = stream
        self.limit = limit
        self.page: pd.DataFrame | None = None
        self.message: StoredMessage | None = None
        self.acks: pd.DataFrame | None = None
        self.error: str | None = None
        self._starts: list[int] = []  # where the pages before this one started, for "back"
        self._visible_rows = visible_rows

        auto = widgets.Layout(width="auto")
        self.subject = widgets.Text(
            placeholder="all subjects (wildcards allowed)",
            description="subject",
            continuous_update=False,  # filter when the reader is done typing (Enter, or leaving)
            layout=widgets.Layout(width="22em"),
        )
        self.seq = widgets.BoundedIntText(
            1, min=1, max=2**63 - 1, description="seq", layout=widgets.Layout(width="13em")
        )
        self.since = widgets.Text(
            placeholder="10m, or 2026-01-31T12:00",
            description="since",
            layout=widgets.Layout(width="17em"),
        )
        go_seq = widgets.Button(description="Go", icon="arrow-right", layout=auto)
        go_since = widgets.Button(description="Go", icon="clock", layout=auto)
        self._first = widgets.Button(description="First", icon="fast-backward", layout=auto)
        self._back = widgets.Button(description="Back", icon="step-backward", layout=auto)
        self._next = widgets.Button(description="Next", icon="step-forward", layout=auto)
        self._choice = widgets.Dropdown(
            description="open", options=[], layout=widgets.Layout(width="26em")
        )
        go_seq.on_click(lambda _: self._from_control(self.show(start_seq=self.seq.value)))
        go_since.on_click(lambda _: self._from_control(self.show(since=self._since_value())))
        self.subject.observe(lambda _: self._from_control(self.show()), names="value")
        self._first.on_click(lambda _: self._from_control(self.show()))
        self._back.on_click(lambda _: self._from_control(self.previous_page()))
        self._next.on_click(lambda _: self._from_control(self.next_page()))
        self._choice.observe(self._on_choice, names="value")

        self._status = widgets.HTML()
        self._table = widgets.HTML(layout=widgets.Layout(width="100%"))
        self._detail = widgets.HTML(layout=widgets.Layout(width="100%"))
        wrap = widgets.Layout(flex_flow="row wrap", align_items="center")
        super().__init__(
            children=[
                widgets.HTML(f"<b>stream {html.escape(stream)}</b>"),
                widgets.HBox([self.subject, self.seq, go_seq, self.since, go_since], layout=wrap),
                widgets.HBox(
                    [self._first, self._back, self._next, self._choice, self._status], layout=wrap
                ),
                self._table,
                self._detail,
            ],
            layout=widgets.Layout(max_width="100%"),
        )
        self._draw()

    # -- reading -----------------------------------------------------------------------

    async def show(
        self,
        *,
        start_seq: int | None = None,
        since: dt.datetime | dt.timedelta | str | None = None,
    ) -> pd.DataFrame:
        """Load the page at *start_seq*, or since *since*, else the stream's first page."""
        self._starts.clear()
        return await self._load(start_seq=start_seq, since=since)

    async def next_page(self) -> pd.DataFrame:
        """The page after this one (the same page again at the end of the stream)."""
        if self.page is None:
            return await self.show()
        following = self.page.attrs["next_seq"]
        if following is None:
            return await self._load(start_seq=self._start_of_page())
        self._starts.append(self._start_of_page())
        return await self._load(start_seq=following)

    async def previous_page(self) -> pd.DataFrame:
        """The page before this one, as it was reached (the first page stays put)."""
        start = self._starts.pop() if self._starts else None
        return await self._load(start_seq=start)

    async def open_message(self, seq: int) -> StoredMessage:
        """Show message *seq* whole, with which consumers are past it."""
        self.message = await read_message(self.ps, self.stream, seq)
        self.acks = await acked_by(self.ps, self.stream, seq)
        self._draw()
        return self.message

    async def _load(
        self,
        *,
        start_seq: int | None = None,
        since: dt.datetime | dt.timedelta | str | None = None,
    ) -> pd.DataFrame:
        page = await browse_stream(
            self.ps,
            self.stream,
            start_seq=start_seq,
            since=since,
            subject=self.subject.value.strip() or None,
            limit=self.limit,
        )
        self.page, self.error = page, None
        self._draw()
        return page

    def _start_of_page(self) -> int:
        assert self.page is not None
        if len(self.page):
            return int(self.page["seq"].iloc[0])
        return int(self.page.attrs["first_seq"])

    def _since_value(self) -> dt.datetime | str:
        import datetime as dt

        text: str = self.since.value.strip()
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            return text  # a duration; browse_stream says what it accepts

    # -- controls ----------------------------------------------------------------------

    def _from_control(self, coro: Coroutine[Any, Any, Any]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:  # shown, not raised: a callback has nobody to raise to
                self.error = f"{type(exc).__name__}: {exc}"
                self._draw()

        sync.spawn(guarded())

    def _on_choice(self, change: dict[str, Any]) -> None:
        seq = change["new"]
        if seq is not None and (self.message is None or self.message.seq != seq):
            self._from_control(self.open_message(seq))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Displayed in a notebook before anything was read: read the first page.
        if self.page is None and self.error is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                self._from_control(self.show())
        return super()._repr_mimebundle_(**kwargs)

    # -- drawing -----------------------------------------------------------------------

    def _draw(self) -> None:
        page = self.page
        if self.error is not None:
            self._status.value = (
                f"<span style='color:{ERROR_COLOUR}'>{html.escape(self.error)}</span>"
            )
        elif page is None:
            self._status.value = "not read yet"
        else:
            first, last = page.attrs["first_seq"], page.attrs["last_seq"]
            shown = (
                f"seq {page['seq'].iloc[0]:,} to {page['seq'].iloc[-1]:,}"
                if len(page)
                else "no messages here"
            )
            self._status.value = f"{shown} &middot; the stream holds {first:,} to {last:,}" + (
                "" if page.attrs["next_seq"] else " &middot; end of stream"
            )
        self._back.disabled = not self._starts
        self._next.disabled = page is None or page.attrs["next_seq"] is None
        options = [] if page is None else [(_option(r), int(r["seq"])) for _, r in page.iterrows()]
        if options != list(self._choice.options):
            self._choice.options = options
        opened = self.message.seq if self.message is not None and self._in_page() else None
        if self._choice.value != opened:
            self._choice.value = opened
        self._table.value = self._table_html()
        self._detail.value = self._detail_html()

    def _in_page(self) -> bool:
        return (
            self.page is not None
            and self.message is not None
            and self.message.seq in set(self.page["seq"])
        )

    def _table_html(self) -> str:
        cols = "".join(f"<col style='width:{w}'>" if w else "<col>" for _, _, w in _COLUMNS)
        head = "".join(
            f"<th style='{_CELL};text-align:left;position:sticky;top:0;"
            f"background:var(--jp-layout-color2,#eee)'>{label}</th>"
            for _, label, _ in _COLUMNS
        )
        rows = []
        for _, r in self.page.iterrows() if self.page is not None else iter(()):
            cells = {
                "seq": f"{r['seq']:,}",
                "time": r["time"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                "subject": r["subject"],
                "size": f"{r['size']:,}",
                "ce_type": r["ce_type"],
                "preview": r["preview"],
            }
            tds = "".join(
                f"<td style='{_CELL}' title='{html.escape(cells[key], quote=True)}'>"
                f"{html.escape(cells[key])}</td>"
                for key, _, _ in _COLUMNS
            )
            rows.append(f"<tr>{tds}</tr>")
        if not rows:
            rows.append(f"<tr><td colspan='{len(_COLUMNS)}' style='{_CELL}'><i>none</i></td></tr>")
        height = self._visible_rows * _ROW_PX + 26
        return (
            f"<div class='jsnb-browser' style='max-height:{height}px;overflow:hidden auto;"
            "border:1px solid var(--jp-border-color2,#e0e0e0)'>"
            "<table style='width:100%;table-layout:fixed;border-collapse:collapse;"
            "font-family:var(--jp-code-font-family,monospace);font-size:12px'>"
            f"<colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )

    def _detail_html(self) -> str:
        if self.message is None:
            return "<i style='font-size:12px'>choose a message under “open” to see it whole</i>"
        acks = ""
        if self.acks is not None and len(self.acks):
            acks = "<b>consumers</b>" + self.acks.to_html(index=False, border=0)
        return (
            "<div class='jsnb-message' style='overflow-x:auto;font-size:12px;"
            "border-top:1px solid var(--jp-border-color2,#e0e0e0);margin-top:4px'>"
            f"{self.message._repr_html_()}{acks}</div>"
        )


def _option(row: Any) -> str:
    label = f"{row['seq']} · {row['subject']}"
    return label if len(label) <= 40 else label[:39] + "\u2026"
