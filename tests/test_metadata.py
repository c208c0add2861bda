"""Component metadata: every key parses, validates, round-trips and masks secrets."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nkeys
import pytest

from jsnb import AckPolicy, ConcurrencyMode, DeliverPolicy, Metadata, MetadataError
from jsnb.durations import format_duration, parse_duration
from jsnb.metadata import DEFAULT_NAME, MASK, iter_groups

URL = "nats://127.0.0.1:4222"
SEED_YAML = Path(__file__).resolve().parent / "data" / "seed-component.yaml"


def user_seed() -> str:
    return nkeys.from_seed(_new_seed(nkeys.PREFIX_BYTE_USER)).seed.decode()


def _new_seed(prefix: int) -> bytes:
    import os

    return nkeys.encode_seed(os.urandom(32), prefix)


def parse(**props: object) -> Metadata:
    return Metadata.from_properties({"natsURL": URL, **props})


# -- every key parses -------------------------------------------------------------

SEED = user_seed()


@pytest.mark.parametrize(
    ("props", "attr", "expected"),
    [
        pytest.param(
            {"natsURL": "nats://a:1,nats://b:2"},
            "nats_url",
            "nats://a:1,nats://b:2",
            id="natsURL-list",
        ),
        pytest.param({"jwt": "eyJ.x.y", "seedKey": SEED}, "jwt", "eyJ.x.y", id="jwt"),
        pytest.param({"jwt": "eyJ.x.y", "seedKey": SEED}, "seed_key", SEED, id="seedKey"),
        pytest.param(
            {"tls_client_cert": "/c.crt", "tls_client_key": "/c.key"},
            "tls_client_cert",
            "/c.crt",
            id="tls_client_cert",
        ),
        pytest.param(
            {"tls_client_cert": "/c.crt", "tls_client_key": "/c.key"},
            "tls_client_key",
            "/c.key",
            id="tls_client_key",
        ),
        pytest.param({"tls_ca_cert": "/ca.pem"}, "tls_ca_cert", "/ca.pem", id="tls_ca_cert"),
        pytest.param({"token": "s3cret"}, "token", "s3cret", id="token"),
        pytest.param({"name": "my-conn-name"}, "name", "my-conn-name", id="name"),
        pytest.param({"streamName": "my-stream"}, "stream_name", "my-stream", id="streamName"),
        pytest.param({"durableName": "my-durable"}, "durable_name", "my-durable", id="durableName"),
        pytest.param(
            {"queueGroupName": "my.queue", "durableName": "d"},
            "queue_group_name",
            "my.queue",
            id="queueGroupName-with-dot",
        ),
        pytest.param(
            {"startSequence": "1", "deliverPolicy": "sequence"},
            "start_sequence",
            1,
            id="startSequence",
        ),
        pytest.param(
            {"startTime": "1630349391", "deliverPolicy": "time"},
            "start_time",
            1630349391,
            id="startTime",
        ),
        pytest.param(
            {"startTime": datetime(2021, 8, 30, 18, 49, 51, tzinfo=UTC)},
            "start_time",
            1630349391,
            id="startTime-datetime",
        ),
        pytest.param(
            {"flowControl": "true", "heartbeat": "1s"}, "flow_control", True, id="flowControl"
        ),
        pytest.param({"ackWait": "10s"}, "ack_wait", timedelta(seconds=10), id="ackWait"),
        pytest.param(
            {"ackWait": "10"}, "ack_wait", timedelta(seconds=10), id="ackWait-bare-seconds"
        ),
        pytest.param({"ackWait": 2.5}, "ack_wait", timedelta(seconds=2.5), id="ackWait-float"),
        pytest.param({"maxDeliver": "5"}, "max_deliver", 5, id="maxDeliver"),
        pytest.param({"maxDeliver": "-1"}, "max_deliver", -1, id="maxDeliver-unlimited"),
        pytest.param(
            {"backOff": "50ms, 1s, 10s"},
            "back_off",
            (timedelta(milliseconds=50), timedelta(seconds=1), timedelta(seconds=10)),
            id="backOff",
        ),
        pytest.param(
            {"backOff": "[1s, 2s, 4s]"},
            "back_off",
            (timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=4)),
            id="backOff-brackets",
        ),
        pytest.param(
            {"backOff": ["1s", 2]},
            "back_off",
            (timedelta(seconds=1), timedelta(seconds=2)),
            id="backOff-list",
        ),
        pytest.param(
            {"backOff": "1s,,2s,"},
            "back_off",
            (timedelta(seconds=1), timedelta(seconds=2)),
            id="backOff-empty-parts",
        ),
        pytest.param({"maxAckPending": "5000"}, "max_ack_pending", 5000, id="maxAckPending"),
        pytest.param({"maxAckPending": "0x10"}, "max_ack_pending", 16, id="maxAckPending-hex"),
        pytest.param({"replicas": "3"}, "replicas", 3, id="replicas"),
        pytest.param({"memoryStorage": "yes"}, "memory_storage", True, id="memoryStorage"),
        pytest.param({"rateLimit": 1024}, "rate_limit", 1024, id="rateLimit"),
        pytest.param({"heartbeat": "15s"}, "heartbeat", timedelta(seconds=15), id="heartbeat"),
        pytest.param(
            {"deliverPolicy": "last"}, "deliver_policy", DeliverPolicy.LAST, id="deliverPolicy"
        ),
        pytest.param(
            {"deliverPolicy": "NEW"}, "deliver_policy", DeliverPolicy.NEW, id="deliverPolicy-case"
        ),
        pytest.param({"ackPolicy": "all"}, "ack_policy", AckPolicy.ALL, id="ackPolicy"),
        pytest.param({"domain": "hub"}, "domain", "hub", id="domain"),
        pytest.param({"apiPrefix": "$JS.hub.API"}, "api_prefix", "$JS.hub.API", id="apiPrefix"),
        pytest.param(
            {"concurrencyMode": "parallel"},
            "concurrency_mode",
            ConcurrencyMode.PARALLEL,
            id="concurrencyMode",
        ),
        pytest.param(
            {"concurrency": "parallel"},
            "concurrency_mode",
            ConcurrencyMode.PARALLEL,
            id="concurrency-alias",
        ),
        pytest.param(
            {"concurrency": "parallel", "concurrencyMode": "single"},
            "concurrency_mode",
            ConcurrencyMode.SINGLE,
            id="concurrencyMode-wins",
        ),
        pytest.param(
            {"ACKWAIT": "1m30s"}, "ack_wait", timedelta(seconds=90), id="key-case-insensitive"
        ),
        pytest.param(
            {"consumerID": "app-1"}, "name", DEFAULT_NAME, id="consumerID-ignored-like-upstream"
        ),
    ],
)
def test_each_key_parses(props: dict[str, object], attr: str, expected: object) -> None:
    md = Metadata.from_properties({"natsURL": URL, **props})
    assert getattr(md, attr) == expected


def test_defaults_match_upstream() -> None:
    md = parse()
    assert md.name == DEFAULT_NAME
    assert md.deliver_policy is DeliverPolicy.ALL
    assert md.ack_policy is AckPolicy.EXPLICIT
    assert md.concurrency_mode is ConcurrencyMode.SINGLE
    assert md.back_off == ()
    assert md.start_time is None


def test_every_field_has_key_group_and_help() -> None:
    table = Metadata.fields_table()
    keys = {info.key for info in table}
    seed_keys = {
        "natsURL",
        "jwt",
        "seedKey",
        "tls_client_cert",
        "tls_client_key",
        "token",
        "name",
        "streamName",
        "durableName",
        "queueGroupName",
        "startSequence",
        "startTime",
        "flowControl",
        "ackWait",
        "maxDeliver",
        "backOff",
        "maxAckPending",
        "replicas",
        "memoryStorage",
        "rateLimit",
        "ackPolicy",
    }
    upstream_keys = {"heartbeat", "deliverPolicy", "domain", "apiPrefix", "concurrencyMode"}
    assert seed_keys | upstream_keys <= keys
    assert {g for g, _ in iter_groups()} == {"connection", "auth", "consumer", "delivery", "retry"}
    for info in table:
        assert info.help and info.group and info.key


# -- deprecated seed-era keys ---------------------------------------------------


def test_hearbeat_typo_reads_as_heartbeat_with_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'heartbeat'"):
        md = parse(hearbeat="15s")
    assert md.heartbeat == timedelta(seconds=15)


def test_hearbeat_and_heartbeat_prefers_new_key() -> None:
    with pytest.warns(DeprecationWarning, match="both are set"):
        md = parse(hearbeat="15s", heartbeat="2s")
    assert md.heartbeat == timedelta(seconds=2)


@pytest.mark.parametrize(
    ("props", "policy"),
    [
        pytest.param({"deliverAll": "true"}, DeliverPolicy.ALL, id="deliverAll-true"),
        pytest.param({"deliverAll": "false"}, DeliverPolicy.LAST, id="deliverAll-false-is-last"),
        pytest.param(
            {"deliverAll": "false", "startSequence": 4},
            DeliverPolicy.SEQUENCE,
            id="start-sequence-beats-deliverAll",
        ),
        pytest.param(
            {"deliverAll": "true", "deliverPolicy": "new"},
            DeliverPolicy.NEW,
            id="deliverPolicy-beats-deliverAll",
        ),
    ],
)
def test_deliver_all_maps_to_policy(props: dict[str, object], policy: DeliverPolicy) -> None:
    with pytest.warns(DeprecationWarning, match="deliverPolicy"):
        md = parse(**props)
    assert md.deliver_policy is policy


@pytest.mark.parametrize(
    ("props", "policy"),
    [
        pytest.param({"startTime": 1630349391}, DeliverPolicy.TIME, id="startTime-infers-time"),
        pytest.param({"startSequence": 7}, DeliverPolicy.SEQUENCE, id="startSequence-infers"),
        pytest.param({"startSequence": 0}, DeliverPolicy.ALL, id="zero-sequence-is-unset"),
    ],
)
def test_deliver_policy_inferred_from_start_options(
    props: dict[str, object], policy: DeliverPolicy
) -> None:
    assert parse(**props).deliver_policy is policy


def test_start_time_beats_start_sequence_with_warning() -> None:
    with pytest.warns(UserWarning, match="startTime wins"):
        md = parse(startTime=1630349391, startSequence=1)
    assert md.deliver_policy is DeliverPolicy.TIME
    assert md.start_sequence == 0


def test_seed_page_example_loads() -> None:
    """The YAML on the component page we were created from is a valid configuration."""
    manifest = SEED_YAML.read_text()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md = Metadata.from_component_yaml(manifest)
    messages = [str(w.message) for w in caught]
    assert any("hearbeat" in m for m in messages)
    assert any("deliverAll" in m for m in messages)
    assert md.deliver_policy is DeliverPolicy.TIME
    assert md.start_time == 1630349391
    assert md.heartbeat == timedelta(seconds=15)
    assert md.back_off[-1] == timedelta(seconds=10)
    assert md.max_deliver == 5
    assert md.token == "my-token"


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "match"),
    [
        pytest.param({"natsURL": ""}, "natsURL is missing", id="missing-url"),
        pytest.param({"natsURL": "http://x:1"}, "not a NATS URL", id="bad-url-scheme"),
        pytest.param({"natsURL": "nats://x:notaport"}, "not a NATS URL", id="bad-url-port"),
        pytest.param({"jwt": "eyJ"}, "seedKey is missing", id="missing-seed-key"),
        pytest.param({"seedKey": SEED}, "jwt is missing", id="missing-jwt"),
        pytest.param({"tls_client_cert": "/c"}, "tls_client_key is missing", id="missing-tls-key"),
        pytest.param({"tls_client_key": "/k"}, "tls_client_cert is missing", id="missing-tls-cert"),
        pytest.param({"token": {"a": 5}}, "token .* expected a string", id="token-not-string"),
        pytest.param({"streamName": "my stream"}, "not a valid NATS name", id="stream-space"),
        pytest.param({"durableName": "a.b"}, "not a valid NATS name", id="durable-dot"),
        pytest.param({"durableName": "a*"}, "not a valid NATS name", id="durable-wildcard"),
        pytest.param(
            {"queueGroupName": "a b", "durableName": "d"}, "no whitespace", id="queue-space"
        ),
        pytest.param(
            {"startSequence": "-1"}, "startSequence -1.*0 or more", id="negative-start-sequence"
        ),
        pytest.param(
            {"startSequence": "one"},
            "startSequence 'one'.*whole number",
            id="startSequence-not-int",
        ),
        pytest.param({"startTime": "yesterday"}, "startTime 'yesterday'", id="bad-start-time"),
        pytest.param(
            {"deliverPolicy": "sequence"}, "needs startSequence", id="sequence-without-start"
        ),
        pytest.param({"deliverPolicy": "time"}, "needs startTime", id="time-without-start"),
        pytest.param(
            {"deliverPolicy": "all", "startTime": 5}, "server rejects", id="start-time-with-all"
        ),
        pytest.param(
            {"deliverPolicy": "new", "startSequence": 5},
            "server rejects",
            id="start-sequence-with-new",
        ),
        pytest.param(
            {"deliverPolicy": "first"},
            "deliverPolicy 'first' is not one of all",
            id="unknown-deliver-policy",
        ),
        pytest.param(
            {"ackPolicy": "sometimes"},
            "ackPolicy 'sometimes' is not one of explicit, all, none",
            id="unknown-ack-policy",
        ),
        pytest.param(
            {"concurrencyMode": "Many"}, "concurrencyMode 'Many'", id="unknown-concurrency"
        ),
        pytest.param({"flowControl": "maybe"}, "flowControl 'maybe'.*true or false", id="bad-bool"),
        pytest.param({"flowControl": "true"}, "needs a heartbeat", id="flow-control-no-heartbeat"),
        pytest.param({"heartbeat": "50ms"}, "100ms or more", id="heartbeat-too-short"),
        pytest.param({"ackWait": "10x"}, "ackWait: '10x' is not a duration", id="bad-duration"),
        pytest.param({"ackWait": "-1s"}, "ackWait '-1s' is negative", id="negative-ack-wait"),
        pytest.param({"ackWait": True}, "ackWait True", id="ackWait-bool"),
        pytest.param(
            {"backOff": "1s, 2d"}, "backOff: '2d' is not a duration", id="bad-backoff-item"
        ),
        pytest.param({"backOff": "-1s"}, "not above 0", id="negative-backoff"),
        pytest.param(
            {"backOff": "1s, 2s, 3s", "maxDeliver": 2},
            "maxDeliver 2 is less than",
            id="maxDeliver-below-backoff",
        ),
        pytest.param({"maxDeliver": "-2"}, "maxDeliver -2.*-1", id="maxDeliver-negative"),
        pytest.param({"maxAckPending": "-5"}, "maxAckPending", id="maxAckPending-negative"),
        pytest.param({"replicas": "-1"}, "replicas", id="negative-replicas"),
        pytest.param({"rateLimit": "fast"}, "rateLimit 'fast'", id="bad-rate-limit"),
        pytest.param({"memoryStorage": "2"}, "memoryStorage", id="bad-memory-storage"),
        pytest.param({"name": ["x"]}, "name", id="name-not-string"),
        pytest.param({"domain": [3]}, "domain", id="domain-not-string"),
        pytest.param({"apiPrefix": {"a": 3}}, "apiPrefix", id="apiPrefix-not-string"),
        pytest.param({"tls_ca_cert": [3]}, "tls_ca_cert", id="ca-not-string"),
        pytest.param(
            {"tls_client_cert": "/c", "tls_client_key": "-----BEGIN EC PRIVATE KEY-----\nMHc"},
            r"tls_client_key looks like PEM text \(value hidden\).*'/path/to/tls.key'",
            id="pem-text-instead-of-path",
        ),
        pytest.param(
            {"tls_client_cert": "-----BEGIN CERTIFICATE-----\nMII", "tls_client_key": "/k"},
            r"tls_client_cert looks like PEM text \(value hidden\).*'/path/to/tls.crt'",
            id="pem-cert-names-a-cert-file",
        ),
        pytest.param(
            {"tls_ca_cert": "-----BEGIN CERTIFICATE-----\nMII"},
            r"tls_ca_cert looks like PEM text.*'/path/to/ca.crt'",
            id="pem-ca-names-a-ca-file",
        ),
        pytest.param({"natsurl": "nats://b:1"}, "given twice", id="duplicate-key-case"),
        pytest.param({"deliverAll": "sometimes"}, "deliverAll 'sometimes'", id="bad-deliverAll"),
        pytest.param({"hearbeat": "15 seconds"}, "heartbeat: '15 seconds'", id="bad-hearbeat"),
        pytest.param({"concurrency": "Many"}, "concurrencyMode 'Many'", id="bad-concurrency-alias"),
    ],
)
def test_bad_input_names_the_field(props: dict[str, object], match: str) -> None:
    with pytest.raises(MetadataError, match=match) as info:
        parse(**props)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "props",
    [
        pytest.param({"jwt": "eyJ.very.secret"}, id="jwt-without-seed"),
        pytest.param({"seedKey": "SUvery.secret"}, id="seed-without-jwt"),
        pytest.param({"token": ["very.secret"]}, id="token-wrong-type"),
    ],
)
def test_error_never_shows_a_secret(props: dict[str, object]) -> None:
    with pytest.raises(MetadataError) as info:
        parse(**props)
    assert "very.secret" not in str(info.value)


def test_url_credentials_hidden_in_errors() -> None:
    with pytest.raises(MetadataError) as info:
        Metadata.from_properties({"natsURL": "http://user:pa55@host:1"})
    assert "pa55" not in str(info.value)


def test_maxdeliver_equal_to_backoff_warns_last_value_unused() -> None:
    with pytest.warns(UserWarning, match="never used"):
        md = parse(backOff="1s, 2s", maxDeliver=2)
    assert md.max_deliver == 2


def test_unknown_key_warns_with_suggestion() -> None:
    with pytest.warns(UserWarning, match="did you mean 'ackWait'"):
        parse(ackwiat="1s")


def test_missing_url_means_embedded_only_when_asked() -> None:
    with pytest.raises(MetadataError, match="natsURL is missing"):
        Metadata.from_properties({})
    assert Metadata.from_properties({}, allow_embedded=True).embedded


def test_direct_construction_validates_and_coerces() -> None:
    md = Metadata(nats_url=URL, ack_wait="5s", deliver_policy="new")
    assert md.ack_wait == timedelta(seconds=5)
    assert md.deliver_policy is DeliverPolicy.NEW
    with pytest.raises(MetadataError, match="maxDeliver"):
        md.replace(back_off=("5s", "2s"), max_deliver=1)


def test_not_a_mapping() -> None:
    with pytest.raises(MetadataError, match="mapping"):
        Metadata.from_properties(["natsURL"])  # type: ignore[arg-type]


# -- YAML round trip and masking ---------------------------------------------------

FULL = {
    "natsURL": URL,
    "jwt": "eyJhbGciOiJ.secret.jwt",
    "seedKey": SEED,
    "tls_client_cert": "/path/to/tls.crt",
    "tls_client_key": "/path/to/tls.key",
    "tls_ca_cert": "/path/to/ca.pem",
    "token": "my-token",
    "name": "my-conn-name",
    "streamName": "my-stream",
    "durableName": "my-durable",
    "queueGroupName": "my-queue",
    "startSequence": 3,
    "deliverPolicy": "sequence",
    "flowControl": True,
    "ackWait": "50ms",  # backOff[0]: any other value is replaced by it (and warned about)
    "maxDeliver": 5,
    "backOff": "50ms, 1.5s, 10s",
    "maxAckPending": 5000,
    "replicas": 3,
    "memoryStorage": True,
    "rateLimit": 1024,
    "heartbeat": "15s",
    # Every other ackPolicy is refused with queueGroupName or maxAckPending.
    "ackPolicy": "explicit",
    "domain": "hub",
    "apiPrefix": "$JS.hub.API",
    "concurrencyMode": "parallel",
}


def test_yaml_round_trip_every_key() -> None:
    md = Metadata.from_properties(FULL)
    text = md.to_component_yaml(reveal_secrets=True)
    assert "kind: Component" in text and "pubsub.jetstream" in text
    with pytest.warns(UserWarning, match="tls_ca_cert is a jsnb extension: Dapr ignores it"):
        assert Metadata.from_component_yaml(text) == md
    assert set(md.as_properties()) == set(FULL) - {"ackPolicy"}  # explicit is the default


def test_yaml_round_trip_time_policy() -> None:
    md = parse(startTime=1630349391)
    assert Metadata.from_component_yaml(md.to_component_yaml()) == md


def test_yaml_export_masks_secrets() -> None:
    md = Metadata.from_properties(FULL)
    text = md.to_component_yaml()
    for secret in ("my-token", SEED, "eyJhbGciOiJ.secret.jwt"):
        assert secret not in text
    assert MASK in text


def test_repr_and_html_mask_secrets() -> None:
    md = Metadata.from_properties(FULL)
    for shown in (repr(md), md._repr_html_()):
        for secret in ("my-token", SEED, "eyJhbGciOiJ.secret.jwt"):
            assert secret not in shown
        assert "ackWait" in shown
    html = md._repr_html_()
    assert html.count("<th colspan") == 5


def test_yaml_file_path(tmp_path: Path) -> None:
    path = tmp_path / "pubsub.yaml"
    path.write_text(parse(ackWait="3s").to_component_yaml())
    assert Metadata.from_component_yaml(path).ack_wait == timedelta(seconds=3)
    assert Metadata.from_component_yaml(str(path)).ack_wait == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("kind: Component\nspec: [\n", r"not valid YAML at line \d", id="malformed"),
        pytest.param(
            "kind: Component\nspec:\n  type: pubsub.redis\n",
            "expected 'pubsub.jetstream'",
            id="wrong-type",
        ),
        pytest.param("kind: Component\nmetadata: {name: x}\n", "no 'spec'", id="missing-spec"),
        pytest.param("kind: Deployment\n", "no 'kind: Component'", id="not-a-component"),
        pytest.param(
            "kind: Component\nspec:\n  type: pubsub.jetstream\n  metadata:\n"
            "  - name: token\n    secretKeyRef: {name: s, key: k}\n",
            "secretKeyRef",
            id="secret-key-ref",
        ),
        pytest.param(
            "kind: Component\nspec:\n  type: pubsub.jetstream\n  metadata: {a: b}\n",
            "must be a list",
            id="metadata-not-list",
        ),
    ],
)
def test_component_yaml_errors(text: str, match: str) -> None:
    with pytest.raises(MetadataError, match=match):
        Metadata.from_component_yaml(text)


def test_missing_yaml_file() -> None:
    with pytest.raises(MetadataError, match="cannot read component file"):
        Metadata.from_component_yaml("/nonexistent/pubsub.yaml")


# -- durations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1m30s", 90),
        ("1h", 3600),
        ("1.5s", 1.5),
        ("10", 10),
        ("0", 0),
        ("250us", 0.00025),
        ("2µs", 0.000002),
        ("-2s", -2),
        ("1h2m3s", 3723),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("seconds", [0, 0.05, 0.5, 1, 1.5, 90, 3600, 3723.25, 0.000250])
def test_format_duration_round_trips(seconds: float) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["1d", "s", "1.2.3s", "ten", "1 s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_credentials_in_nats_url_are_masked_for_display() -> None:
    md = Metadata.from_properties({"natsURL": "nats://alice:pa55@host:4222"})
    assert "pa55" not in repr(md) + md._repr_html_() + md.to_component_yaml()
    assert md.as_properties()["natsURL"] == "nats://alice:pa55@host:4222"


def test_warnings_point_at_the_callers_code() -> None:
    """Jupyter hides library warnings; ours are attributed to the user's line."""
    with pytest.warns(DeprecationWarning) as direct:
        parse(hearbeat="1s")
    with pytest.warns(DeprecationWarning) as via_yaml:
        Metadata.from_component_yaml(
            "kind: Component\nspec:\n  type: pubsub.jetstream\n  metadata:\n"
            f"  - {{name: natsURL, value: '{URL}'}}\n  - {{name: hearbeat, value: 1s}}\n"
        )
    assert {w.filename for w in direct} == {__file__}
    assert {w.filename for w in via_yaml} == {__file__}


def test_replace_warns_only_about_what_the_changes_brought() -> None:
    with pytest.warns(UserWarning, match="ackWait 10s is not used"):
        md = Metadata.from_properties({"natsURL": "nats://h:1", "ackWait": "10s", "backOff": "1s"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        md.replace(max_deliver=5)
        md.replace(queue_group_name="workers")  # new: a queue group without a durable
    assert [str(w.message).split(" without")[0] for w in caught] == [
        "jsnb: queueGroupName 'workers'"
    ]
    assert caught[0].filename == __file__  # shown at the caller, not in dataclasses.py
