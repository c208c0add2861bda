"""The RedeliveryLab widget, headless: controls drive a real run, views show the result."""

from __future__ import annotations

from typing import Any

import pytest

from jsnb.lab import Scenario
from jsnb.widgets import RedeliveryLab


def test_the_lab_form_has_no_yaml_box() -> None:
    lab = RedeliveryLab()
    assert lab.form.yaml_text not in lab.form.children  # the lab owns the rest of the metadata
    assert lab.form.sections in lab.form.children


async def test_a_disagreement_is_shown_in_red(nats_server: Any) -> None:
    lab = RedeliveryLab(nats_server.url)
    await lab.arun(Scenario(messages=1, hang_seconds=2.5), {"ackWait": "1s", "maxDeliver": 2})
    assert "disagree" in lab.discrepancies_view.value
    assert "max_deliveries" in lab.discrepancies_view.value
    assert "lost: <b>1</b>" in lab.status.value


def test_controls_describe_the_scenario() -> None:
    lab = RedeliveryLab()
    lab.messages.value = 7
    lab.behaviour.value = "fail with probability p"
    lab.fail_probability.value = 0.25
    lab.fail_times.value = 3  # hidden behaviour: must not leak into the scenario
    scenario = lab.scenario()
    assert scenario == Scenario(messages=7, fail_probability=0.25, payload_size=16, timeout=30.0)
    assert lab.fail_times.layout.display == "none"
    assert lab.fail_probability.layout.display is None


async def test_run_from_code_uses_the_form(nats_server: Any) -> None:
    lab = RedeliveryLab(nats_server.url)
    lab.form.controls["backOff"].value = "100ms, 300ms"
    lab.form.controls["maxDeliver"].value = 5
    first = await lab.arun(Scenario(messages=3, fail_times=2))
    assert first.totals["acked"] == 3 and first.totals["lost"] == 0
    assert sorted(first.attempts["next_delay_predicted_s"].dropna().unique()) == [0.1, 0.3]
    assert lab.progress.value == 3 == lab.progress.max
    assert bytes(lab.plot.value).startswith(b"\x89PNG")
    assert (
        "<th>predicted</th>" in lab.attempts_view.value
        and "<th>waited</th>" in lab.attempts_view.value
    )
    assert lab.discrepancies_view.value == ""  # both accounts agree
    lab.form.controls["backOff"].value = "50ms"
    second = await lab.arun(Scenario(messages=3, fail_times=2))
    table = lab.comparison()
    assert list(table["backOff"]) == ["0.1s, 0.3s", "0.05s"]
    assert list(table["lost"]) == [0, 0]
    assert (
        second.attempts["next_delay_observed_s"].max()
        < first.attempts["next_delay_observed_s"].max()
    )


async def test_explicit_properties_override_the_form(nats_server: Any) -> None:
    lab = RedeliveryLab(nats_server.url)
    result = await lab.arun(
        Scenario(messages=2, fail_times=10), {"backOff": "20ms", "maxDeliver": 2}
    )
    assert result.totals["dead_lettered"] == 2
    assert "lost: <b>0</b>" in lab.status.value
    assert lab.form.controls["backOff"].value == "20ms", "the form shows what the run used"
    assert lab.form.controls["maxDeliver"].value == 2


async def test_button_refuses_an_invalid_form(nats_server: Any) -> None:
    lab = RedeliveryLab(nats_server.url)
    lab.form.controls["ackWait"].value = "soon"
    await lab._run_from_button()
    assert "fix the form first: ackWait" in lab.status.value
    assert lab.results == []


async def test_button_runs_and_reenables(nats_server: Any) -> None:
    lab = RedeliveryLab(nats_server.url)
    lab.messages.value = 2
    lab.fail_times.value = 1
    lab.form.controls["backOff"].value = "20ms"
    await lab._run_from_button()
    assert len(lab.results) == 1 and lab.results[0].totals["acked"] == 2
    assert not lab.run_button.disabled


@pytest.mark.parametrize("behaviour", ["fail the first k attempts", "hang longer than ackWait"])
def test_only_the_chosen_behaviour_is_visible(behaviour: str) -> None:
    lab = RedeliveryLab()
    lab.behaviour.value = behaviour
    visible = [
        n
        for n in ("fail_times", "fail_probability", "hang_seconds")
        if getattr(lab, n).layout.display is None
    ]
    assert len(visible) == 1
