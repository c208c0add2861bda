"""The redelivery lab: tune ackWait, backOff and maxDeliver, run a scenario, see the effect.

>>> from jsnb.lab import Scenario
>>> lab = RedeliveryLab(ps.nc.connected_url.geturl())  # display it, or drive it from code:
>>> result = await lab.arun(Scenario(messages=2, fail_times=1), {"backOff": "100ms, 1s"})
>>> len(result.attempts)             # observed vs predicted delay per attempt
4

A form for the retry and delivery fields, scenario controls and a Run button;
each run goes through :func:`jsnb.lab.run_scenario` on a fresh stream, and the
last two runs are drawn side by side so a changed backOff shows its difference.
"""

from __future__ import annotations

import asyncio
import html
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from jsnb import sync
from jsnb.display import ERROR_COLOUR
from jsnb.lab import LabResult, Scenario, run_scenario, timeline_figure
from jsnb.metadata import EMBEDDED, Metadata
from jsnb.widgets.config_form import ConfigForm

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BEHAVIOURS",
    "DEFAULTS",
    "LAB_KEYS",
    "SHOWN_ATTEMPTS",
    "SHOWN_COLUMNS",
    "RedeliveryLab",
]

LAB_KEYS = (
    "ackWait",
    "backOff",
    "maxDeliver",
    "maxAckPending",
    "ackPolicy",
    "concurrencyMode",
    "consumerMode",
    "inProgress",
    "maxHandlerTime",
)
# No ackWait: with backOff set, nats-server replaces it by backOff[0] (jsnb warns).
DEFAULTS = {"natsURL": EMBEDDED, "backOff": "200ms, 1s", "maxDeliver": 4}
BEHAVIOURS = {
    "fail the first k attempts": "fail_times",
    "fail with probability p": "fail_probability",
    "hang longer than ackWait": "hang_seconds",
}
SHOWN_ATTEMPTS = 40
# The attempts table on the page: what a row compares, under short headings, so it fits
# beside JupyterLab's file browser; the DataFrame (``result.attempts``) keeps every column.
SHOWN_COLUMNS = {
    "message": "msg",
    "attempt": "attempt",
    "arrived_s": "arrived",
    "waited_s": "waited",
    "outcome": "outcome",
    "server_event": "server",
    "server_s": "server at",
    "next": "next",
    "next_delay_observed_s": "after",
    "next_delay_predicted_s": "predicted",
}


async def _server_url(nats_url: str) -> str:
    if nats_url != EMBEDDED:
        return nats_url
    from jsnb.server import shared_server

    return (await asyncio.to_thread(shared_server)).url


class RedeliveryLab(widgets.VBox):
    """Run failure scenarios against a real server and compare how the settings behave.

    Args:
        nats_url: The server to experiment on; ``embedded`` (default) uses the
            process's shared local server. Each run makes and removes its own stream.
        metadata: Starting values for the retry and delivery fields.
    """

    def __init__(
        self, nats_url: str = EMBEDDED, *, metadata: Mapping[str, Any] | Metadata | None = None
    ) -> None:
        self.nats_url = nats_url
        self.results: list[LabResult] = []
        self.form = ConfigForm(
            metadata if metadata is not None else DEFAULTS, keys=LAB_KEYS, yaml=False
        )
        self.form.open_section("retry")
        style = {"description_width": "9em"}
        self.messages = widgets.BoundedIntText(
            5, min=1, max=500, description="messages", style=style
        )
        self.behaviour = widgets.Dropdown(
            options=list(BEHAVIOURS), description="handler", style=style
        )
        self.fail_times = widgets.BoundedIntText(2, min=0, max=100, description="k", style=style)
        self.fail_probability = widgets.BoundedFloatText(
            0.3, min=0, max=1, step=0.05, description="p", style=style
        )
        self.hang_seconds = widgets.BoundedFloatText(
            3.0, min=0, max=120, step=0.5, description="hang (s)", style=style
        )
        self.payload_size = widgets.BoundedIntText(
            16, min=0, max=1_000_000, description="payload bytes", style=style
        )
        self.timeout = widgets.BoundedFloatText(
            30.0, min=1, max=600, description="timeout (s)", style=style
        )
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: sync.spawn(self._run_from_button()))
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="progress")
        self.status = widgets.HTML()
        self.totals = widgets.HTML()
        self.plot = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.discrepancies_view = widgets.HTML()
        self.attempts_view = widgets.HTML()
        self.behaviour.observe(lambda _: self._show_behaviour(), names="value")
        self.scenario_box = widgets.VBox(
            [
                self.messages,
                self.behaviour,
                self.fail_times,
                self.fail_probability,
                self.hang_seconds,
                self.payload_size,
                self.timeout,
            ]
        )
        self._show_behaviour()
        super().__init__(
            children=[
                widgets.HBox(
                    [self.form, self.scenario_box], layout=widgets.Layout(flex_flow="row wrap")
                ),
                widgets.HBox([self.run_button, self.progress]),
                self.status,
                self.totals,
                self.plot,
                self.discrepancies_view,
                self.attempts_view,
            ]
        )

    # -- running -------------------------------------------------------------------

    def scenario(self) -> Scenario:
        """The scenario the controls describe (only the chosen behaviour is active)."""
        chosen = BEHAVIOURS[self.behaviour.value]
        values = {name: getattr(self, name).value for name in BEHAVIOURS.values()}
        active = {name: (v if name == chosen else 0) for name, v in values.items()}
        return Scenario(
            messages=self.messages.value,
            payload_size=self.payload_size.value,
            timeout=self.timeout.value,
            **active,
        )

    async def arun(
        self,
        scenario: Scenario | None = None,
        properties: Mapping[str, Any] | Metadata | None = None,
    ) -> LabResult:
        """One run; *scenario* and *properties* default to what the widgets show."""
        scenario = scenario or self.scenario()
        if properties is None:
            md = self.form.metadata
        else:
            md = Metadata.from_properties(properties, allow_embedded=True)
            self.form.set_metadata(md)  # the form shows what this run used
        self.progress.max, self.progress.value = scenario.messages, 0
        self.status.value = f"running: {html.escape(scenario.describe())} ..."
        result = await run_scenario(
            await _server_url(self.nats_url), md, scenario, progress=self._on_progress
        )
        self.results.append(result)
        self._render()
        return result

    def run(
        self,
        scenario: Scenario | None = None,
        properties: Mapping[str, Any] | Metadata | None = None,
    ) -> LabResult:
        """:meth:`arun` for scripts and cells without ``await``."""
        return sync.run(self.arun(scenario, properties))

    async def _run_from_button(self) -> None:
        if self.form.errors:
            problems = "; ".join(f"{k}: {v}" for k, v in self.form.errors.items())
            self.status.value = (
                f"<span style='color:{ERROR_COLOUR}'>fix the form first: "
                f"{html.escape(problems)}</span>"
            )
            return
        self.run_button.disabled = True
        try:
            await self.arun()
        except Exception as exc:
            self.status.value = (
                f"<span style='color:{ERROR_COLOUR}'>run failed: {html.escape(str(exc))}</span>"
            )
        finally:
            self.run_button.disabled = False

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max, self.progress.value = total, done

    # -- showing ---------------------------------------------------------------------

    def comparison(self) -> pd.DataFrame:
        """One row per run: its settings, scenario and totals."""
        import pandas as pd

        rows = []
        for r in self.results:
            md = r.metadata
            rows.append(
                {
                    "run": r.run_id,
                    "backOff": ", ".join(f"{v.total_seconds():g}s" for v in md.back_off),
                    "ackWait_s": md.ack_wait.total_seconds(),
                    "maxDeliver": md.max_deliver,
                    "concurrencyMode": md.concurrency_mode.value,
                    "consumerMode": md.consumer_mode.value,
                    "inProgress": md.in_progress,
                    "ackPolicy": md.ack_policy.value,
                    "maxAckPending": md.max_ack_pending,
                    "scenario": r.scenario.describe(),
                    "finished": r.finished,
                    **r.totals,
                }
            )
        return pd.DataFrame(rows)

    def _show_behaviour(self) -> None:
        chosen = BEHAVIOURS[self.behaviour.value]
        for name in BEHAVIOURS.values():
            getattr(self, name).layout.display = None if name == chosen else "none"

    def _render(self) -> None:
        last = self.results[-1]
        state = "finished" if last.finished else "timed out (pending messages stay on the server)"
        self.status.value = f"run {last.run_id} {state}; lost: <b>{last.totals['lost']}</b>"
        diff = last.discrepancies
        self.discrepancies_view.value = (
            ""
            if diff.empty
            else f"<p style='color:{ERROR_COLOUR}'><b>the client and the server disagree</b> "
            f"({len(diff)}; <code>lab.results[-1].discrepancies</code>):</p>"
            + _scrollable(diff.to_html(index=False, border=0))
        )
        # One column per run: the last runs' settings and totals read across, side by side,
        # and a dozen fields fit the page's width where a row per run did not.
        runs = self.comparison().tail(6).set_index("run")
        runs.index = [f"run {i}" for i in runs.index]
        self.totals.value = _scrollable(runs.T.to_html(border=0, justify="left"))
        fig = timeline_figure(self.results[-2:])
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        self.plot.value = buffer.getvalue()
        attempts = last.attempts
        shown = attempts.head(SHOWN_ATTEMPTS)[list(SHOWN_COLUMNS)].rename(columns=SHOWN_COLUMNS)
        more = len(attempts) - len(shown)
        note = (
            f"<p>… {more} more attempts in <code>lab.results[-1].attempts</code></p>"
            if more
            else ""
        )
        table = shown.to_html(index=False, float_format="{:.3f}".format, na_rep="", border=0)
        legend = (
            "<p>seconds since publish: when each delivery <b>arrived</b>, how long it "
            "<b>waited</b> in the client for its handler, the <b>server</b>'s advisory about it "
            "and when, and the gap to what the server did <b>next</b>: observed and predicted "
            "from the server's own starting point</p>"
        )
        self.attempts_view.value = legend + _scrollable(table) + note


def _scrollable(table_html: str) -> str:
    """A wide table inside an HTML widget: compact lines, its own horizontal scrollbar."""
    return f"<div style='overflow-x:auto;line-height:1.3;font-size:11px'>{table_html}</div>"
