"""Real Dapr manifests: what Dapr accepts loads, where Dapr differs a warning says so,
and every problem of a manifest comes in one ``MetadataError``.

The manifests are written for these tests, after the shapes found in Dapr's docs,
sample apps, Helm charts and issue threads.
"""

from __future__ import annotations

import re
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from jsnb import AckPolicy, ConcurrencyMode, DeliverPolicy, Metadata, MetadataError
from jsnb.metadata import MASK

URL = "nats://localhost:4222"


def manifest(
    *entries: str, name: str = "orders-pubsub", version: str = "v1", tail: str = ""
) -> str:
    """A Component manifest whose spec.metadata holds *entries* (flow-style YAML)."""
    lines = "".join(f"  - {e}\n" for e in entries)
    return (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata:\n  name: {name}\n"
        f"spec:\n  type: pubsub.jetstream\n  version: {version}\n  metadata:\n{lines}{tail}"
    )


def load(text: str | Path, **kwargs: Any) -> Metadata:
    """Load and fail on any warning (pytest's filterwarnings = error does that too)."""
    return Metadata.from_component_yaml(text, **kwargs)


def warned(text: str, **kwargs: Any) -> tuple[Metadata, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md = Metadata.from_component_yaml(text, **kwargs)
    return md, [str(w.message) for w in caught]


# -- 1. numbers and booleans in string fields, as Dapr stringifies them --------------


@pytest.mark.parametrize(
    ("entry", "attr", "expected"),
    [
        pytest.param("{name: durableName, value: 123}", "durable_name", "123", id="durable-int"),
        pytest.param(
            "{name: queueGroupName, value: 2024}", "queue_group_name", "2024", id="queue-year"
        ),
        pytest.param("{name: token, value: 123456}", "token", "123456", id="token-int"),
        pytest.param("{name: name, value: true}", "name", "true", id="name-bool"),
        pytest.param("{name: streamName, value: 1.0}", "stream_name", "1", id="stream-float"),
        pytest.param("{name: domain, value: 1.5}", "domain", "1.5", id="domain-fraction"),
        # YAML reads an unquoted date as a date; Dapr's decoder passes its text on.
        pytest.param(
            "{name: durableName, value: 2024-01-01}", "durable_name", "2024-01-01", id="date"
        ),
        # Unquoted values are typed as Dapr's loader (go-yaml v2) types them.
        pytest.param("{name: durableName, value: 12:30}", "durable_name", "12:30", id="no-base-60"),
        pytest.param("{name: durableName, value: y}", "durable_name", "true", id="y-is-true"),
        pytest.param("{name: durableName, value: n}", "durable_name", "false", id="n-is-false"),
        pytest.param("{name: durableName, value: 0o10}", "durable_name", "8", id="0o-octal"),
        pytest.param("{name: durableName, value: 1e3}", "durable_name", "1000", id="exponent"),
        pytest.param(
            "{name: name, value: 2024-01-01 10:00:00}", "name", "2024-01-01 10:00:00", id="time"
        ),
        pytest.param("{name: maxDeliver, value: 5.0}", "max_deliver", 5, id="float-int"),
        pytest.param("{name: maxDeliver, value: 1e3}", "max_deliver", 1000, id="exponent-int"),
        pytest.param("{name: maxAckPending, value: 0100}", "max_ack_pending", 64, id="octal"),
        pytest.param(
            "{name: maxAckPending, value: 1_000}", "max_ack_pending", 1000, id="underscore"
        ),
        pytest.param("{name: ackWait, value: 1e3}", "ack_wait", timedelta(seconds=1000), id="e3-s"),
    ],
)
def test_values_are_read_as_dapr_reads_them(entry: str, attr: str, expected: Any) -> None:
    # A queue group needs a durable (jsnb warns otherwise).
    extra = ["{name: durableName, value: d}"] if attr == "queue_group_name" else []
    md = load(manifest(f"{{name: natsURL, value: '{URL}'}}", *extra, entry))
    assert getattr(md, attr) == expected


@pytest.mark.parametrize(
    ("entry", "attr", "expected"),
    [
        pytest.param("{name: deliverPolicy, value: ''}", "deliver_policy", DeliverPolicy.ALL),
        pytest.param("{name: ackPolicy, value: ''}", "ack_policy", AckPolicy.EXPLICIT),
        pytest.param(
            "{name: concurrencyMode, value: ''}", "concurrency_mode", ConcurrencyMode.SINGLE
        ),
        pytest.param("{name: maxDeliver, value: null}", "max_deliver", 0),
        pytest.param("{name: flowControl, value: }", "flow_control", False),
        pytest.param("{name: ackWait, value: ''}", "ack_wait", timedelta(0)),
        pytest.param("{name: backOff, value: ''}", "back_off", ()),
    ],
)
def test_an_empty_value_is_the_default_as_in_dapr(entry: str, attr: str, expected: Any) -> None:
    md = load(manifest(BASE, entry))
    default = Metadata.from_properties({"natsURL": URL})
    assert getattr(md, attr) == getattr(default, attr)
    assert getattr(md, attr) == expected


def test_an_entry_without_a_value_is_empty_with_a_warning() -> None:
    md, messages = warned(manifest(BASE, "{name: maxDeliver}"))
    assert md.max_deliver == Metadata.from_properties({"natsURL": URL}).max_deliver
    assert any(
        "maxDeliver has no 'value'" in m and "reads it as an empty value" in m for m in messages
    )


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        pytest.param(
            "{name: maxDeliver, value: '99999999999999999999'}",
            r"maxDeliver 99999999999999999999 is not valid: expected a whole number from "
            r"-9223372036854775808 to 9223372036854775807",
            id="int64",
        ),
        pytest.param(
            "{name: startSequence, value: '18446744073709551616'}",
            "startSequence 18446744073709551616 is not valid: .* 0 to 18446744073709551615",
            id="uint64",
        ),
        pytest.param("{name: ackWait, value: 1:30}", "ackWait: '1:30' is not a duration", id="b60"),
        pytest.param(
            "{name: maxDeliver, value: '\uff15'}", "maxDeliver '\uff15' is not valid", id="digit"
        ),
        pytest.param(
            "{name: ackWait, value: '\u0665s'}", "ackWait: '\u0665s' is not a duration", id="dur"
        ),
        pytest.param("{name: maxDeliver, value: 5.5}", "maxDeliver 5.5 is not valid", id="frac"),
    ],
)
def test_what_dapr_cannot_read_is_refused(entry: str, match: str) -> None:
    with pytest.raises(MetadataError, match=match):
        load(manifest(BASE, "{name: deliverPolicy, value: sequence}", entry))


def test_an_infinite_number_in_a_string_field_is_refused() -> None:
    with pytest.raises(MetadataError, match=r"durableName .* infinite or NaN"):
        load(manifest(f"{{name: natsURL, value: '{URL}'}}", "{name: durableName, value: .inf}"))


# -- 2. envRef and secretKeyRef --------------------------------------------------------


def test_env_ref_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSNB_T16_URL", "nats://from-env:4222")
    monkeypatch.setenv("JSNB_T16_TOKEN", "env-tok-91")
    md = load(
        manifest("{name: natsURL, envRef: JSNB_T16_URL}", "{name: token, envRef: JSNB_T16_TOKEN}")
    )
    assert (md.nats_url, md.token) == ("nats://from-env:4222", "env-tok-91")


def test_a_value_wins_over_env_ref_as_in_dapr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JSNB_T16_URL", "nats://from-env:4222")
    md = load(manifest(f"{{name: natsURL, value: '{URL}', envRef: JSNB_T16_URL}}"))
    assert md.nats_url == URL


def test_an_unset_env_ref_is_empty_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JSNB_T16_UNSET", raising=False)
    with pytest.warns(UserWarning, match="'JSNB_T16_UNSET', which is not set"):
        md = load(
            manifest(f"{{name: natsURL, value: '{URL}'}}", "{name: token, envRef: JSNB_T16_UNSET}")
        )
    assert md.token == ""


SECRET_REF = manifest(
    f"{{name: natsURL, value: '{URL}'}}",
    "{name: jwt, secretKeyRef: {name: nats-creds, key: jwt}}",
    "{name: seedKey, secretKeyRef: {name: nats-seed}}",  # no key: the key named like it
    tail="auth:\n  secretStore: vault\n",
)
CREDS = {"nats-creds": {"jwt": "eyJ-secret-jwt-5"}, "nats-seed": {"nats-seed": "SU-secret-seed-6"}}


@pytest.mark.parametrize(
    "secrets",
    [
        pytest.param(CREDS, id="mapping"),
        pytest.param(lambda secret, key: CREDS[secret][key], id="callable"),
    ],
)
def test_secret_key_ref_is_resolved_from_the_secrets_given(secrets: Any) -> None:
    md = load(SECRET_REF, secrets=secrets)
    assert (md.jwt, md.seed_key) == ("eyJ-secret-jwt-5", "SU-secret-seed-6")
    shown = repr(md) + repr(md.manifest) + md._repr_html_()
    shown += md.to_component_yaml(reveal_secrets=True)  # the references, not the values
    assert "secret-jwt" not in shown and "secret-seed" not in shown


@pytest.mark.parametrize(
    ("secrets", "match"),
    [
        pytest.param(
            None,
            r"jwt uses secretKeyRef \(secret 'nats-creds', key 'jwt'\).*from vault.*secrets=",
            id="no-secrets-given",
        ),
        pytest.param(
            {"nats-creds": {"other": "x"}},
            r"jwt: secretKeyRef \(secret 'nats-creds', key 'jwt'\) is not in the secrets given",
            id="key-missing",
        ),
        pytest.param(
            lambda secret, key: {}[key],
            r"seedKey: secretKeyRef \(secret 'nats-seed', key 'nats-seed'\) is not in",
            id="callable-raises-key-error",
        ),
    ],
)
def test_unresolved_secret_key_ref_names_secret_and_key(secrets: Any, match: str) -> None:
    with pytest.raises(MetadataError, match=match) as info:
        load(SECRET_REF, secrets=secrets)
    assert "secret-jwt" not in str(info.value)


# -- 3. several components in one file -------------------------------------------------

RENDERED_CHART = "---\n".join(
    [
        manifest(
            f"{{name: natsURL, value: '{URL}'}}", f"{{name: durableName, value: {name}}}", name=name
        )
        for name in ("orders-pubsub", "billing-pubsub")
    ]
    + ["apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata: {name: s}\n"]
    + [
        manifest("{name: redisHost, value: r:6379}", name="cache").replace(
            "pubsub.jetstream", "state.redis"
        )
    ]
)


def test_name_picks_one_component_of_several() -> None:
    assert load(RENDERED_CHART, name="billing-pubsub").durable_name == "billing-pubsub"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        pytest.param(
            None,
            r"holds 2 pubsub.jetstream components \('orders-pubsub', 'billing-pubsub'\); "
            r"pick one with name=",
            id="several-without-name",
        ),
        pytest.param(
            "cache",
            r"no pubsub.jetstream named 'cache'; it holds 'orders-pubsub', 'billing-pubsub'",
            id="name-of-another-type",
        ),
    ],
)
def test_several_components_list_their_names(name: str | None, match: str) -> None:
    with pytest.raises(MetadataError, match=match):
        load(RENDERED_CHART, name=name)


# -- 4. every problem at once ---------------------------------------------------------

# The shape of today's docs example: explicit deliverPolicy all, and both start options.
DOCS_EXAMPLE = manifest(
    f"{{name: natsURL, value: '{URL}'}}",
    "{name: startSequence, value: 1}",
    "{name: startTime, value: 1630349391}",
    "{name: ackWait, value: 10s}",
    "{name: heartbeat, value: 15s}",
    "{name: deliverPolicy, value: all}",
)


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        pytest.param(DOCS_EXAMPLE, ["startSequence", "startTime"], id="docs-example"),
        pytest.param(
            DOCS_EXAMPLE.replace("10s", "soon").replace("15s", "15 seconds"),
            ["ackWait", "heartbeat", "startSequence", "startTime"],
            id="parse-and-cross-field",
        ),
        pytest.param(
            manifest(
                f"{{name: natsURL, value: '{URL}'}}",
                "{name: token, secretKeyRef: {name: s, key: k}}",
                "{name: flowControl, value: true}",
                "{name: maxDeliver, value: lots}",
                "{name: maxAckPending, value: many}",
            ),
            ["token", "maxDeliver", "maxAckPending", "heartbeat"],
            id="entries-and-values",
        ),
        pytest.param(
            manifest("{name: flowControl, value: true}", "{name: heartbeat, value: never}"),
            ["heartbeat", "natsURL"],
            id="no-repeat-for-a-failed-field",
        ),
    ],
)
def test_every_problem_in_one_error_one_line_each(text: str, keys: list[str]) -> None:
    with pytest.raises(MetadataError) as info:
        load(text)
    error = info.value
    assert [key for key, _ in error.problems] == keys
    assert error.key == keys[0]
    lines = str(error).splitlines()
    assert lines[0] == f"jsnb: {len(keys)} problems:" and len(lines) == len(keys) + 1


def test_a_file_names_itself_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "pubsub.yaml"
    path.write_text(DOCS_EXAMPLE)
    with pytest.raises(MetadataError, match=f"^jsnb: {path}: 2 problems:"):
        load(path)


# -- 5. where Dapr reads a manifest differently: a warning says so ----------------------

BASE = f"{{name: natsURL, value: '{URL}'}}"


@pytest.mark.parametrize(
    ("entries", "version", "match"),
    [
        pytest.param(
            ["{name: startSequence, value: 1}"],
            "v1",
            r"no deliverPolicy: Dapr defaults to 'all'.*add '- \{name: deliverPolicy, "
            r"value: sequence\}'",
            id="start-sequence-without-policy",
        ),
        pytest.param(
            ["{name: deliverPolicy, value: All}"],
            "v1",
            "deliverPolicy 'All': Dapr's Init fails",
            id="deliver-policy-case",
        ),
        pytest.param(
            ["{name: ackPolicy, value: None}"],
            "v1",
            "ackPolicy 'None': Dapr reads it as 'explicit'.*jsnb reads 'none'",
            id="ack-policy-none-case",
        ),
        pytest.param(
            ["{name: concurrencyMode, value: Parallel}"],
            "v1",
            "concurrencyMode 'Parallel': Dapr's Init fails",
            id="concurrency-mode-case",
        ),
        pytest.param(
            ["{name: concurrency, value: Parallel}"],
            "v1",
            "concurrency 'Parallel': Dapr selects no handler",
            id="concurrency-alias-case",
        ),
        pytest.param(
            ["{name: ackWait, value: 1.5}"],
            "v1",
            r"ackWait 1.5: Dapr refuses a number with a fraction.*write '1.5s'",
            id="ack-wait-fraction",
        ),
        pytest.param(
            ["{name: backOff, value: '[1s, 2s]'}"],
            "v1",
            "backOff '.1s, 2s.': Dapr reads one comma-separated string",
            id="back-off-brackets",
        ),
        pytest.param(
            ["{name: backOff, value: [1s, 2s]}"],
            "v1",
            "backOff .*Dapr reads one comma-separated string",
            id="back-off-yaml-list",
        ),
        pytest.param(
            [
                "{name: deliverPolicy, value: time}",
                "{name: startTime, value: 2021-08-30T18:49:51Z}",
            ],
            "v1",
            "startTime is a YAML timestamp: Dapr wants Unix seconds",
            id="start-time-timestamp",
        ),
        pytest.param(
            ["{name: startTime, value: ''}"],
            "v1",
            "startTime is empty: jsnb reads no start time, but Dapr sets one at 1970",
            id="start-time-empty",
        ),
        pytest.param(
            ["{name: maxAckPending, value: '0100'}"],
            "v1",
            "maxAckPending '0100': Dapr reads a leading zero as octal",
            id="octal-looking-int",
        ),
        pytest.param([], "v2", "spec.version 'v2': Dapr has only v1", id="version-v2"),
        pytest.param(
            ["{name: ConcurrencyMode, value: parallel}"],
            "v1",
            "'ConcurrencyMode': Dapr reads only the exact spelling 'concurrencyMode' and ignores "
            "'ConcurrencyMode', so it runs single",
            id="concurrency-mode-key-case",
        ),
        pytest.param(
            ["{name: durableName, value: ' orders '}"],
            "v1",
            "durableName ' orders ' has spaces around it: Dapr passes the spaces on, and "
            "nats-server refuses such a name; jsnb trims them",
            id="spaces-in-a-name",
        ),
        pytest.param(
            ["{name: maxDeliver, value: ' 5 '}"],
            "v1",
            r"maxDeliver ' 5 ' has spaces around it: Dapr's Init fails \(strconv",
            id="spaces-in-an-int",
        ),
        pytest.param(
            ["{name: ackWait, value: ' 10s '}"],
            "v1",
            r"ackWait ' 10s ' has spaces around it: Dapr's Init fails \(time: invalid duration",
            id="spaces-in-a-duration",
        ),
        pytest.param(
            ["{name: deliverPolicy, value: sequence}", "{name: startSequence, value: '+5'}"],
            "v1",
            "startSequence '\\+5': Dapr reads it as an unsigned number and its Init fails on "
            "the sign; jsnb reads 5: drop the '\\+'",
            id="plus-on-an-unsigned",
        ),
        pytest.param(
            ["{name: tls_ca_cert, value: /ca.pem}"],
            "v1",
            "tls_ca_cert is a jsnb extension: Dapr ignores it",
            id="jsnb-extension",
        ),
        pytest.param(
            ["{name: hearbeat, value: 15s}", "{name: flowControl, value: true}"],
            "v1",
            "current Dapr ignores it .* runs without heartbeats, so flowControl true fails there",
            id="hearbeat-with-flow-control",
        ),
        pytest.param(
            ["{name: deliverAll, value: false}"],
            "v1",
            "current Dapr ignores it .*default 'all'.*jsnb reads it as deliverPolicy last",
            id="deliver-all",
        ),
        pytest.param(
            ["{name: startTime, value: }"],
            "v1",
            "startTime is empty: .* Dapr sets one at 1970",
            id="null",
        ),
        pytest.param(["{name: startTime}"], "v1", "startTime is empty: .*1970", id="no-value"),
        pytest.param(
            ["{name: deliverPolicy, value: time}", "{name: startTime, value: '+5'}"],
            "v1",
            "startTime '\\+5': Dapr reads it as an unsigned number",
            id="start-time-plus",
        ),
        pytest.param(
            ["{name: startSequence, value: '-0'}"],
            "v1",
            "startSequence '-0': Dapr reads it as an unsigned number .* drop the '-'",
            id="minus-zero",
        ),
        pytest.param(
            ["{name: deliverPolicy, value: time}", "{name: startTime, value: '010'}"],
            "v1",
            "startTime '010': Dapr reads a leading zero as octal",
            id="start-time-octal",
        ),
        pytest.param(
            ["{name: maxDeliver, value: '0_10'}"],
            "v1",
            "maxDeliver '0_10': Dapr reads a leading zero as octal",
            id="octal-underscore",
        ),
        pytest.param(
            ["{name: maxDeliver, value: ' '}"],
            "v1",
            "maxDeliver is only spaces: Dapr's Init fails",
            id="sp",
        ),
        pytest.param(
            ["{name: ackWait, value: ' '}"],
            "v1",
            "ackWait is only spaces: Dapr's Init fails",
            id="sp-dur",
        ),
        pytest.param(
            ["{name: deliverPolicy, value: ' '}"],
            "v1",
            "deliverPolicy ' ': Dapr's Init fails .*jsnb reads 'all'",
            id="sp-enum",
        ),
        pytest.param(
            ["{name: concurrencyMode, value: ''}", "{name: concurrency, value: Parallel}"],
            "v1",
            "concurrency 'Parallel': Dapr selects no handler",
            id="empty-mode-lets-concurrency-through",
        ),
        pytest.param(
            ["{name: durableName, value: '{appID}-orders'}"],
            "v1",
            r"durableName '\{appID\}-orders': Dapr replaces \{appID\} with the app's own value",
            id="placeholder",
        ),
        pytest.param(
            ["{name: backOffPolicy, value: linear}"],
            "v1",
            "backOffPolicy 'linear': Dapr's Init fails on it .*jsnb ignores it",
            id="retry-policy",
        ),
        pytest.param(
            ["{name: backOffMaxRetries, value: ''}"],
            "v1",
            "backOffMaxRetries '': Dapr's Init fails",
            id="retry-max-empty",
        ),
        pytest.param(
            ["{name: backOffDuration, value: 1.5}"],
            "v1",
            "backOffDuration 1.5: Dapr's Init fails",
            id="retry-duration",
        ),
    ],
)
def test_dapr_differences_are_warned(entries: list[str], version: str, match: str) -> None:
    _, messages = warned(manifest(BASE, *entries, version=version))
    assert any(re.search(match, m) for m in messages), messages


def test_spaces_around_a_secret_are_warned_without_it() -> None:
    md, messages = warned(manifest(BASE, "{name: token, value: ' tok-secret-9 '}"))
    assert md.token == "tok-secret-9"
    assert any("token (value hidden) has spaces around it" in m for m in messages), messages
    assert not any("tok-secret-9" in m for m in messages)


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param(["{name: maxDeliver, value: '+5'}"], id="plus-on-a-signed-int"),  # Go: ok
        pytest.param(["{name: flowControl, value: ' true '}"], id="spaces-in-a-bool"),
        pytest.param(["{name: backOff, value: ' 1s , 2s '}"], id="spaces-in-backOff"),
        pytest.param(["{name: concurrency, value: parallel}"], id="concurrency-any-case"),
    ],
)
def test_what_dapr_also_reads_this_way_is_not_warned(entries: list[str]) -> None:
    extra = ["{name: heartbeat, value: 5s}"] if "flowControl" in entries[0] else []
    if "backOff" in entries[0]:
        extra = ["{name: ackWait, value: 1s}"]
    load(manifest(BASE, *entries, *extra))  # filterwarnings = error


@pytest.mark.parametrize("version", ["V1", "v1", "''"])
def test_versions_dapr_loads_are_not_warned(version: str) -> None:
    load(manifest(BASE, version=version))


def test_embedded_url_is_warned_as_jsnb_only() -> None:
    _, messages = warned(manifest("{name: ackWait, value: 1s}"), allow_embedded=True)
    assert any("Dapr cannot" in m for m in messages)


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        pytest.param("deliverNew", "use deliverPolicy: new", id="deliverNew"),
        pytest.param("maxInFlight", "use maxAckPending", id="maxInFlight"),
        pytest.param("startWithLastReceived", "use deliverPolicy: last", id="last-received"),
        pytest.param("maxAge", "streams are configured outside the component", id="maxAge"),
        pytest.param("retentionPolicy", r"jsnb.ensure_stream", id="retentionPolicy"),
    ],
)
def test_nats_streaming_and_stream_keys_get_hints(key: str, hint: str) -> None:
    with pytest.warns(UserWarning, match=f"unknown property '{key}' is ignored: .*{hint}"):
        load(manifest(BASE, f"{{name: {key}, value: 'true'}}"))


def test_a_manifest_dapr_loads_as_is_gives_no_warning() -> None:
    md = load(  # filterwarnings = error: any warning fails this test
        manifest(
            BASE,
            "{name: durableName, value: orders}",
            "{name: queueGroupName, value: workers}",
            "{name: deliverPolicy, value: sequence}",
            "{name: startSequence, value: 4}",
            "{name: ackPolicy, value: Explicit}",  # Dapr's fallback is explicit too
            "{name: ackWait, value: 10}",  # = backOff[0], else jsnb warns it is unused
            "{name: maxDeliver, value: 5}",
            "{name: backOff, value: '10s, 20s, 30s'}",
            "{name: heartbeat, value: 5s}",
            "{name: flowControl, value: true}",
            "{name: concurrencyMode, value: parallel}",
        )
    )
    assert md.deliver_policy is DeliverPolicy.SEQUENCE and md.back_off[-1].total_seconds() == 30


# -- 6. the round trip keeps the manifest's identity -------------------------------------

IDENTIFIED = (
    manifest(
        "{name: natsURL, envRef: JSNB_T16_URL}",
        "{name: token, secretKeyRef: {name: nats, key: token}}",
        "{name: ackWait, value: 5s}",
        name="bloodbank-pubsub",
    ).replace("  name: bloodbank-pubsub\n", "  name: bloodbank-pubsub\n  namespace: blood\n")
    + "auth:\n  secretStore: vault\nscopes:\n- donor-api\n- triage\n"
)


@pytest.fixture
def identified(monkeypatch: pytest.MonkeyPatch) -> Metadata:
    monkeypatch.setenv("JSNB_T16_URL", URL)
    return load(IDENTIFIED, secrets={"nats": {"token": "tok-secret-7"}})


def test_round_trip_keeps_name_namespace_scopes_store_and_refs(identified: Metadata) -> None:
    doc = yaml.safe_load(identified.to_component_yaml(reveal_secrets=True))
    assert doc["metadata"] == {"name": "bloodbank-pubsub", "namespace": "blood"}
    assert doc["auth"] == {"secretStore": "vault"} and doc["scopes"] == ["donor-api", "triage"]
    entries = {e["name"]: e for e in doc["spec"]["metadata"]}
    assert entries["natsURL"] == {"name": "natsURL", "envRef": "JSNB_T16_URL"}
    assert entries["token"] == {"name": "token", "secretKeyRef": {"name": "nats", "key": "token"}}
    assert "tok-secret-7" not in yaml.safe_dump(doc)
    assert load(yaml.safe_dump(doc), secrets={"nats": {"token": "tok-secret-7"}}) == identified


def test_a_changed_reference_is_written_as_its_value(identified: Metadata) -> None:
    entries = yaml.safe_load(identified.replace(token="new-tok").to_component_yaml())["spec"]
    token = next(e for e in entries["metadata"] if e["name"] == "token")
    assert token == {"name": "token", "value": MASK}


def test_an_explicit_name_wins(identified: Metadata) -> None:
    assert yaml.safe_load(identified.to_component_yaml("copy"))["metadata"]["name"] == "copy"


@pytest.mark.parametrize(
    ("props", "match"),
    [
        pytest.param(
            {"token": "tok-1"}, "token is '\\*\\*\\*\\*\\*\\*': the value was masked", id="token"
        ),
        pytest.param(
            {"jwt": "eyJ-1", "seedKey": "SU-1"}, "jwt is .*masked on export", id="jwt-and-seed"
        ),
        pytest.param(
            {"natsURL": "nats://alice:pa55@h:4222"},
            "natsURL 'nats://\\*\\*\\*@h:4222' has its credentials masked on export",
            id="url-credentials",
        ),
        pytest.param(
            {"natsURL": "alice:pa55@h:4222"},
            "natsURL '\\*\\*\\*@h:4222' has its credentials masked on export",
            id="url-without-scheme",
        ),
        pytest.param(
            {"natsURL": "nats://h1:4222, alice:pa55@h2:4222"},
            "natsURL 'nats://h1:4222, \\*\\*\\*@h2:4222' has its credentials masked",
            id="second-url-without-scheme",
        ),
    ],
)
def test_a_masked_export_loaded_back_is_refused(props: dict[str, str], match: str) -> None:
    exported = Metadata.from_properties({"natsURL": URL, **props}).to_component_yaml()
    with pytest.raises(MetadataError, match=match) as info:
        load(exported)
    assert not any(secret in str(info.value) for secret in props.values())


# -- 7. things that are not manifests yet -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param(
            manifest("{name: natsURL, value: '{{ .Values.nats.url }}'}"),
            r"Helm template \(\{\{ .Values.nats.url ... at line 9\): render it first "
            r"\(helm template",
            id="helm-template",
        ),
        pytest.param(
            "spec:\n  type: pubsub.jetstream\n  metadata:\n  - {name: natsURL, value: x}\n",
            "is a 'spec:' snippet, not a whole manifest: add the header",
            id="bare-spec",
        ),
        pytest.param(
            "- name: natsURL\n  value: nats://h:4222\n",
            "bare list of name/value entries: put it under spec.metadata",
            id="bare-entries",
        ),
        pytest.param(
            manifest(
                "name: natsURL\n    value: '{{ .Values.global.nats.connection.url | default "
                '"nats://nats.default.svc.cluster.local:4222" }}\''
            ),
            r"Helm template \(\{\{ .Values.global.nats.connection.url .* at line 10\)",
            id="long-helm-template",
        ),
        pytest.param(
            manifest("name: natsURL\n    value: {{\n      .Values.nats.url }}"),
            r"Helm template \(\{\{ ... at line 10\): render it first",
            id="helm-template-over-two-lines",
        ),
        pytest.param(
            "components/pubsub-jetstream", "cannot read component file .*: no such file", id="path"
        ),
        pytest.param("pubsub", "cannot read component file 'pubsub': no such file", id="word"),
        pytest.param(
            "/nonexistent/pubsub.yaml",
            "cannot read component file .*: no such file",
            id="yaml-path",
        ),
    ],
)
def test_not_yet_a_manifest_says_what_to_do(text: str, match: str) -> None:
    with pytest.raises(MetadataError, match=match):
        load(text)


def test_a_token_with_braces_is_not_taken_for_a_template() -> None:
    md = load(manifest(BASE, "{name: token, value: 'a{{b}}c'}"))
    assert md.token == "a{{b}}c"


@pytest.mark.parametrize("name", [None, "orders-pubsub"])
def test_two_components_with_one_name_are_refused(name: str | None) -> None:
    text = manifest(BASE) + "---\n" + manifest(BASE, "{name: maxDeliver, value: 3}")
    with pytest.raises(MetadataError, match=r"share a name|named 'orders-pubsub'"):
        load(text, name=name)


def test_keys_given_twice_in_other_case_are_one_problem_among_all() -> None:
    text = manifest(
        BASE,
        "{name: ackWait, value: 1s}",
        "{name: AckWait, value: 2s}",
        "{name: maxDeliver, value: lots}",
        "{name: heartbeat, value: never}",
    )
    with pytest.raises(MetadataError) as info:
        load(text)
    assert [key for key, _ in info.value.problems] == ["AckWait", "maxDeliver", "heartbeat"]


def test_an_unresolved_lowercase_url_is_one_problem() -> None:
    text = manifest("{name: natsurl, secretKeyRef: {name: s, key: url}}")
    with pytest.raises(MetadataError) as info:
        load(text, secrets={})
    assert [key for key, _ in info.value.problems] == ["natsurl"]


def test_the_export_keeps_what_the_manifest_spelled_out() -> None:
    md = load(
        manifest(
            BASE,
            "{name: deliverPolicy, value: all}",
            "{name: ackPolicy, value: explicit}",
            "{name: maxDeliver, value: 5}",
        )
    )
    entries = yaml.safe_load(md.to_component_yaml())["spec"]["metadata"]
    assert [e["name"] for e in entries] == ["natsURL", "deliverPolicy", "ackPolicy", "maxDeliver"]
    assert load(md.to_component_yaml()) == md
    # A default the manifest did not spell out stays out.
    assert "ackPolicy" not in load(manifest(BASE)).to_component_yaml()


def test_a_directory_is_not_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="it is a directory"):
        load(tmp_path)


def test_an_entry_without_a_name_never_shows_its_value() -> None:
    with pytest.raises(
        MetadataError, match=r"entry 2 needs a 'name' \(it has keys value\)"
    ) as info:
        load(manifest(BASE, "{value: hush-secret-8}"))
    assert "hush-secret-8" not in str(info.value)


def test_an_empty_concurrency_mode_leaves_concurrency_in_charge() -> None:
    md = load(
        manifest(BASE, "{name: concurrencyMode, value: ''}", "{name: concurrency, value: parallel}")
    )
    assert md.concurrency_mode is ConcurrencyMode.PARALLEL


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param(["{name: backOffPolicy, value: exponential}"], id="retry-policy"),
        pytest.param(["{name: backOffDuration, value: 500}"], id="retry-ms"),
        pytest.param(["{name: backOffMaxRetries, value: 3}"], id="retry-max"),
        pytest.param(["{name: deliverAll, value: }"], id="null-deliverAll"),
    ],
)
def test_retry_keys_and_empty_old_keys_dapr_reads_are_quiet(entries: list[str]) -> None:
    load(manifest(BASE, *entries))


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        pytest.param("nats://***@h1:4222,nats://alice:s3cret-1@h2:4222", "s3cret-1", id="second"),
        pytest.param("nats://alice:se,cret-2@h1:4222", "se", id="comma-in-password"),
    ],
)
def test_url_errors_never_show_credentials(url: str, secret: str) -> None:
    with pytest.raises(MetadataError) as info:
        load(manifest(f"{{name: natsURL, value: '{url}'}}"))
    assert "alice" not in str(info.value) and f":{secret}" not in str(info.value)


@pytest.mark.parametrize(
    ("line", "start"),
    [
        pytest.param("{{- if .Values.nats.enabled }}", "{{- if", id="if-line"),
        pytest.param("{{/* the pubsub */}}", "{{/*", id="comment-line"),
        pytest.param('{{include "nats.url" .}}', "{{include", id="include"),
    ],
)
def test_helm_actions_on_their_own_line_are_told(line: str, start: str) -> None:
    text = manifest(BASE).replace("  metadata:\n", f"  metadata:\n{line}\n", 1)
    with pytest.raises(MetadataError, match=re.escape(f"Helm template ({start}")):
        load(text)


def test_a_template_in_a_yaml_comment_is_not_a_template() -> None:
    load(manifest(BASE) + "# rendered from {{ .Values.nats.url }}\n")


def test_a_secret_with_braces_is_never_quoted() -> None:
    md = load(manifest(BASE, "{name: token, value: 'ab{{ cdSECRETxyz}}'}"))
    assert md.token == "ab{{ cdSECRETxyz}}"


def test_a_path_with_spaces_around_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "pubsub.yaml"
    path.write_text(manifest(BASE))
    assert load(f"  {path}\n").nats_url == URL


def test_names_namespace_and_scopes_are_text_as_dapr_reads_them() -> None:
    text = (
        manifest(BASE, name="y").replace("  name: y\n", "  name: y\n  namespace: no\n")
        + "scopes: [on, 1.0, ~]\n"
    )
    md = load(text)
    assert md.manifest is not None
    assert (md.manifest.name, md.manifest.namespace) == ("true", "false")
    assert md.manifest.scopes == ("true", "1", "")
    assert load(md.to_component_yaml()).manifest == md.manifest


def test_a_secret_named_no_is_the_secret_false() -> None:
    text = manifest(BASE, "{name: token, secretKeyRef: {name: no, key: 1e3}}")
    assert load(text, secrets={"false": {"1000": "tok-8"}}).token == "tok-8"
