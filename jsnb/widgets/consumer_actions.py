"""Pause, resume and reset a consumer from a notebook, each after a confirmation.

>>> _ = await ps.jetstream.add_consumer("ORDERS", durable_name="billing")
>>> actions = ConsumerActions(ps, "ORDERS", "billing")  # Pause for [10m] | Resume | Reset
>>> actions.pause_button.click()                         # asks first: nothing happens yet
>>> bool((await ps.consumer_info("ORDERS", "billing")).paused)
False
>>> actions.confirm_button.click()
>>> await actions.last
>>> (await ps.consumer_info("ORDERS", "billing")).paused
True

These change a consumer other processes may depend on (a reset redelivers
everything from a sequence on, acked or not), so no click acts at once: the
first names what will happen, a second click on *Confirm* does it. The
server announces a pause and a resume as a ``consumer_paused`` advisory, so
an :class:`~jsnb.widgets.AdvisoryFeed` of the stream shows them; a reset has
no advisory of its own (nats-server 2.15 publishes none), so the status line
says what it did.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from typing import Any

import ipywidgets as widgets

from jsnb.display import ERROR_COLOUR
from jsnb.durations import parse_duration
from jsnb.explorer import pause_consumer, reset_consumer, resume_consumer

__all__ = ["ConsumerActions"]

_ERROR = f"color:{ERROR_COLOUR}"
_AUTO = widgets.Layout(width="auto")


class ConsumerActions(widgets.VBox):
    """Buttons that pause, resume or reset *consumer* of *stream*, each confirmed first.

    *ps* is a :class:`jsnb.JetStreamPubSub`; *on_done* (a coroutine function)
    runs after each action, e.g. a :class:`ConsumerState` refresh. ``last``
    is the task of the last confirmed action, to await in code.
    """

    def __init__(
        self,
        ps: Any,
        stream: str,
        consumer: str,
        *,
        on_done: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._ps = ps
        self.stream = stream
        self.consumer = consumer
        self._on_done = on_done
        self._pending: Callable[[], Awaitable[str]] | None = None
        self.last: asyncio.Task[None] | None = None

        self.pause_for = widgets.Text(value="10m", layout=widgets.Layout(width="6em"))
        self.reset_seq = widgets.Text(
            placeholder="ack floor + 1", layout=widgets.Layout(width="8em")
        )
        self.pause_button = widgets.Button(description="Pause for", icon="pause", layout=_AUTO)
        self.resume_button = widgets.Button(description="Resume", icon="play", layout=_AUTO)
        self.reset_button = widgets.Button(description="Reset to seq", icon="undo", layout=_AUTO)
        self.confirm_button = widgets.Button(
            description="Confirm", button_style="danger", layout=_AUTO
        )
        self.cancel_button = widgets.Button(description="Cancel", layout=_AUTO)
        self.question = widgets.HTML()
        self.status = widgets.HTML()
        self.pause_button.on_click(lambda _: self._ask_pause())
        self.resume_button.on_click(lambda _: self._ask_resume())
        self.reset_button.on_click(lambda _: self._ask_reset())
        self.confirm_button.on_click(lambda _: self._confirm())
        self.cancel_button.on_click(lambda _: self._clear("cancelled"))
        self._confirm_row = widgets.HBox(
            [self.question, self.confirm_button, self.cancel_button],
            layout=widgets.Layout(display="none", flex_flow="row wrap", align_items="center"),
        )
        row = widgets.HBox(
            [
                self.pause_button,
                self.pause_for,
                self.resume_button,
                self.reset_button,
                self.reset_seq,
            ],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        super().__init__(children=[row, self._confirm_row, self.status])

    # -- asking --------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return f"consumer <b>{html.escape(self.consumer)}</b> of <b>{html.escape(self.stream)}</b>"

    def _ask(self, question: str, action: Callable[[], Awaitable[str]]) -> None:
        self._pending = action
        self.question.value = question
        self.status.value = ""
        self._confirm_row.layout.display = "flex"

    def _refuse(self, problem: str) -> None:
        self._clear(f"<span style='{_ERROR}'>{html.escape(problem)}</span>")

    def _ask_pause(self) -> None:
        text = self.pause_for.value.strip()
        try:
            parse_duration(text)
        except ValueError as exc:
            self._refuse(f"pause for: {exc} (e.g. '10m', '1h')")
            return

        async def act() -> str:
            info = await pause_consumer(self._ps, self.stream, self.consumer, text)
            return f"paused until {info.config.pause_until}"

        self._ask(
            f"Pause {self._name} for {html.escape(text)}? The server keeps every message "
            "and delivers none until then.",
            act,
        )

    def _ask_resume(self) -> None:
        async def act() -> str:
            await resume_consumer(self._ps, self.stream, self.consumer)
            return "resumed"

        self._ask(f"Resume {self._name} now?", act)

    def _ask_reset(self) -> None:
        text = self.reset_seq.value.strip()
        if text and not (text.isdigit() and int(text) >= 1):
            self._refuse(f"reset to seq: {text!r} is not a stream sequence (1 or more)")
            return
        seq = int(text) if text else None
        where = f"sequence {seq}" if seq is not None else "its ack floor"

        async def act() -> str:
            info = await reset_consumer(self._ps, self.stream, self.consumer, seq)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            done = f"reset: ack floor now {floor}, next delivery from {floor + 1}"
            if info.paused:  # measured on nats-server 2.15.1
                done += "; the consumer is paused: after Resume the replay waits for a new message"
            return done

        self._ask(
            f"Reset {self._name} to {where}? Everything pending is forgotten and every "
            "message from there on is delivered again, acked or not.",
            act,
        )

    # -- acting --------------------------------------------------------------------------

    def _confirm(self) -> None:
        action, self._pending = self._pending, None
        if action is None:
            return
        self._confirm_row.layout.display = "none"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._refuse("needs a running event loop (a notebook cell)")
            return
        self.status.value = "working..."
        self.last = loop.create_task(self._run(action))

    async def _run(self, action: Callable[[], Awaitable[str]]) -> None:
        try:
            done = await action()
        except Exception as exc:  # shown, not raised: a button has no caller to raise to
            self.status.value = (
                f"<span style='{_ERROR}'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"
            )
            return
        self.status.value = html.escape(done)
        if self._on_done is not None:
            await self._on_done()

    def _clear(self, status: str) -> None:
        self._pending = None
        self.question.value = ""
        self._confirm_row.layout.display = "none"
        self.status.value = status
