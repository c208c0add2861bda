"""The redelivery experiment engine against a real server: observed delays match the config,
and the lab's totals are the server's."""

from __future__ import annotations

from typing import Any

import pytest

from jsnb.lab import Scenario, run_scenario, timeline_figure
from jsnb.metadata import Metadata
from jsnb.retry import RetryRule


def assert_delays_match(result: Any) -> None:
    """Every gap the rule predicts is observed within 10% + 50 ms (issue 19's criterion)."""
    df = result.attempts
    followed = df[df["next_delay_predicted_s"].notna()]
    assert not followed.empty
    for row in followed.itertuples():
        want = row.next_delay_predicted_s
        assert abs(row.next_delay_observed_s - want) <= want * 0.1 + 0.05, row


def legend(result: Any) -> set[str]:
    """What the run's timeline says it draws."""
    return {t.get_text() for t in result.plot().axes[0].get_legend().get_texts()}


def assert_accounts_agree(result: Any) -> None:
    assert result.discrepancies.empty, result.discrepancies.to_string()
    assert result.totals == result.client_totals


@pytest.mark.parametrize("mode", ["push", "pull"])
async def test_backoff_run_matches_prediction(nats_server: Any, mode: str) -> None:
    props = {"backOff": "100ms, 1s", "maxDeliver": 5, "consumerMode": mode}
    result = await run_scenario(nats_server.url, props, Scenario(messages=4, fail_times=2))
    assert result.finished
    assert result.totals["lost"] == 0 and result.totals["acked"] == 4
    assert result.totals["attempts"] == 12 and result.totals["redelivered"] == 8
    df = result.attempts
    assert list(df.groupby("message")["attempt"].max()) == [3, 3, 3, 3]
    assert sorted(df["next_delay_predicted_s"].dropna().unique()) == [0.1, 1.0]
    naked = df[df["outcome"] == "nak"]
    assert list(naked["nak_delay_s"]) == list(naked["next_delay_predicted_s"])  # one row, one gap
    # What goes on the wire is backOff[0]: the server adds backOff[n-1] - backOff[0].
    assert set(naked["nak_sent_s"]) == {0.1}
    assert df.loc[df["outcome"] != "nak", "nak_sent_s"].isna().all()
    assert_delays_match(result)
    assert_accounts_agree(result)


async def test_exhausted_messages_are_dead_lettered(nats_server: Any) -> None:
    props = {"backOff": "50ms", "maxDeliver": 3}
    result = await run_scenario(nats_server.url, props, Scenario(messages=3, fail_times=10))
    assert result.totals["dead_lettered"] == 3 and result.totals["lost"] == 0
    finals = result.attempts.groupby("message")["outcome"].last()
    assert set(finals) == {"dead-letter"}


async def test_hung_handler_is_redelivered_after_ack_wait(nats_server: Any) -> None:
    props = {"ackWait": "500ms", "concurrencyMode": "parallel"}
    result = await run_scenario(nats_server.url, props, Scenario(messages=2, hang_seconds=1.5))
    assert result.totals["lost"] == 0
    attempts = result.attempts
    assert len(attempts[attempts["attempt"] == 2]) == 2
    assert all(attempts.loc[attempts["attempt"] == 1, "next_delay_predicted_s"] == 0.5)
    assert_delays_match(result)


async def test_random_failures_lose_nothing(nats_server: Any) -> None:
    props = {"backOff": "20ms", "maxDeliver": -1}
    scenario = Scenario(messages=30, fail_probability=0.5, seed=7)
    result = await run_scenario(nats_server.url, props, scenario)
    assert result.finished and result.totals["acked"] == 30 and result.totals["lost"] == 0
    assert result.totals["redelivered"] > 0


def test_retry_rule_ack_deadlines() -> None:
    md = Metadata.from_properties({"natsURL": "embedded", "backOff": "1s, 5s", "maxDeliver": 4})
    assert [RetryRule.from_metadata(md).ack_deadline(n) for n in (1, 2, 3)] == [1.0, 5.0, 5.0]
    assert RetryRule.from_metadata(Metadata(nats_url="embedded")).ack_deadline(1) == 30.0
    assert (
        RetryRule.from_metadata(Metadata(nats_url="embedded", ack_wait="2s")).ack_deadline(1) == 2.0
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"messages": 0}, id="no-messages"),
        pytest.param({"fail_probability": 1.5}, id="probability-over-1"),
        pytest.param({"hang_seconds": -1}, id="negative-hang"),
    ],
)
def test_scenario_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Scenario"):
        Scenario(**kwargs)


async def test_side_by_side_figure(nats_server: Any) -> None:
    a = await run_scenario(nats_server.url, {"backOff": "50ms"}, Scenario(messages=2, fail_times=1))
    b = await run_scenario(
        nats_server.url, {"backOff": "150ms"}, Scenario(messages=2, fail_times=1)
    )
    fig = timeline_figure([a, b])
    assert len(fig.axes) == 2
    assert "backOff [0.05s]" in fig.axes[0].get_title()
    assert "backOff [0.15s]" in fig.axes[1].get_title()
    assert "<table>" in a._repr_html_()


async def test_the_server_reports_each_nak_the_client_sent(nats_server: Any) -> None:
    props = {"backOff": "50ms", "maxDeliver": 3}
    result = await run_scenario(nats_server.url, props, Scenario(messages=2, fail_times=1))
    attempts = result.attempts
    client_naks = attempts[attempts["outcome"] == "nak"]
    server = result.server_events
    assert list(server.columns) == ["server_s", "kind", "stream_seq", "deliveries", "reason"]
    server_naks = server[server["kind"] == "nak"]
    # One server NAK advisory per client NAK, same message and delivery, at nearly the same time.
    assert sorted(zip(server_naks["stream_seq"], server_naks["deliveries"], strict=True)) == sorted(
        zip(client_naks["stream_seq"], client_naks["attempt"], strict=True)
    )
    for seq in client_naks["stream_seq"]:
        client_s = client_naks.loc[client_naks["stream_seq"] == seq, "settled_s"].iloc[0]
        server_s = server_naks.loc[server_naks["stream_seq"] == seq, "server_s"].iloc[0]
        assert abs(server_s - client_s) < 1.0


async def test_the_server_says_when_it_gives_up(nats_server: Any) -> None:
    props = {"backOff": "50ms", "maxDeliver": 2, "ackPolicy": "explicit"}
    result = await run_scenario(nats_server.url, props, Scenario(messages=1, fail_times=10))
    kinds = list(result.server_events["kind"])
    assert kinds[0] == "nak" and kinds[-1] in {"terminated", "max_deliveries"}


async def test_a_hang_in_single_mode_is_explained_by_the_queue(nats_server: Any) -> None:
    # Two messages whose first delivery hangs 1.3 s against a 1 s ack wait, one handler at a
    # time: redeliveries arrive on the server's schedule and wait behind the hung handler.
    props = {"ackWait": "1s", "maxDeliver": 5}
    result = await run_scenario(nats_server.url, props, Scenario(messages=2, hang_seconds=1.3))
    assert result.finished
    assert_delays_match(result)  # from when the server sent each delivery, not when it ran
    assert_accounts_agree(result)
    df = result.attempts
    redelivered = df[df["attempt"] > 1]
    assert set(redelivered["next_from"].dropna()) <= {"sent"}
    # Each redelivery waited in the client: it started only when the handler before it was done.
    assert (redelivered["waited_s"] > 0.3).all(), redelivered
    started = redelivered["started_s"]
    assert (abs(started - (redelivered["arrived_s"] + redelivered["waited_s"])) < 0.01).all()
    second = df[(df["message"] == 2) & (df["attempt"] == 1)].iloc[0]
    assert second["waited_s"] == pytest.approx(1.3, abs=0.2)  # queued behind message 1
    assert {"waiting in the client", "handler running", "ack"} <= legend(result)


async def test_parallel_slots_make_deliveries_wait_and_the_server_holds_the_rest(
    nats_server: Any,
) -> None:
    props = {"ackWait": "1s", "maxAckPending": 1, "concurrencyMode": "parallel"}
    result = await run_scenario(nats_server.url, props, Scenario(messages=2, hang_seconds=1.3))
    assert_delays_match(result)
    assert_accounts_agree(result)
    df = result.attempts
    first_of_2 = df[(df["message"] == 2) & (df["attempt"] == 1)].iloc[0]
    # maxAckPending 1: the server sent message 2 only once message 1 was acked.
    assert first_of_2["held_s"] == pytest.approx(1.3, abs=0.2)
    retry_of_1 = df[(df["message"] == 1) & (df["attempt"] == 2)].iloc[0]
    assert retry_of_1["waited_s"] == pytest.approx(0.3, abs=0.15)  # for the only handler slot
    assert {"held by the server", "waiting in the client"} <= legend(result)


async def test_attempts_carry_the_servers_events(nats_server: Any) -> None:
    props = {"backOff": "50ms", "maxDeliver": 2}
    result = await run_scenario(nats_server.url, props, Scenario(messages=2, fail_times=5))
    df = result.attempts
    naked = df[df["outcome"] == "nak"]
    assert list(naked["server_event"]) == ["nak", "nak"]
    # The server's time next to the client's: the NAK was recorded as it was sent.
    assert ((naked["server_s"] - naked["settled_s"]).abs() < 0.5).all()
    assert list(naked["next_from"]) == ["server NAK", "server NAK"]
    dead = df[df["outcome"] == "dead-letter"]
    assert list(dead["server_event"]) == ["terminated", "terminated"]
    assert result.totals["dead_lettered"] == 2 and result.copies == {1: 1, 2: 1}
    assert {"server: MSG_NAKED", "server: MSG_TERMINATED"} <= legend(result)
    assert_accounts_agree(result)


async def test_the_server_giving_up_on_a_queued_message_is_a_loud_discrepancy(
    nats_server: Any,
) -> None:
    # Single mode, maxDeliver 2: message 1 hangs past both deadlines, so the server gives up
    # (MAX_DELIVERIES at 2 s) before the handler's ack at 2.5 s, and ignores that ack.
    props = {"ackWait": "1s", "maxDeliver": 2}
    result = await run_scenario(nats_server.url, props, Scenario(messages=1, hang_seconds=2.5))
    df = result.attempts
    last = df[df["attempt"] == 2].iloc[0]
    assert last["server_event"] == "max_deliveries" and last["next"] == "gave up"
    assert_delays_match(result)  # the give-up came on the ack deadline of delivery 2
    assert result.client_totals["acked"] == 1
    assert result.totals["acked"] == 0 and result.totals["exhausted"] == 1
    assert result.totals["lost"] == 1
    diff = result.discrepancies
    assert list(diff[["client", "server"]].itertuples(index=False, name=None)) == [
        ("acked", "exhausted")
    ]
    assert "max_deliveries" in diff["why"].iloc[0]
    assert "disagree" in result._repr_html_()
    assert "server: MAX_DELIVERIES" in legend(result)


async def test_ack_policy_none_drops_a_failure_and_counts_it(nats_server: Any) -> None:
    props = {"ackPolicy": "none", "maxDeliver": -1}
    result = await run_scenario(nats_server.url, props, Scenario(messages=3, fail_times=1))
    assert set(result.attempts["outcome"]) == {"dropped"}
    assert result.totals["dropped"] == 3 and result.totals["lost"] == 3
    assert_accounts_agree(result)


async def test_ack_policy_all_totals_are_the_servers(nats_server: Any) -> None:
    props = {"ackPolicy": "all", "backOff": "50ms, 200ms", "maxDeliver": 3}
    result = await run_scenario(nats_server.url, props, Scenario(messages=4, fail_times=2))
    assert result.totals["acked"] == 4 and result.totals["lost"] == 0
    assert_accounts_agree(result)


async def test_rows_are_the_same_run_after_run(nats_server: Any) -> None:
    props = {"ackWait": "1s", "maxDeliver": 3}
    scenario = Scenario(messages=2, hang_seconds=1.3)
    first, second = [await run_scenario(nats_server.url, props, scenario) for _ in range(2)]
    keys = ["message", "attempt", "outcome", "server_event"]
    assert first.attempts[keys].equals(second.attempts[keys])
