"""The ``pubsub.jetstream`` component metadata: fields, parsing, validation, YAML.

>>> md = Metadata.from_properties({"natsURL": "nats://localhost:4222", "ackWait": "10s"})
>>> md.ack_wait
datetime.timedelta(seconds=10)
>>> md.as_properties()["ackWait"]
'10s'

One dataclass holds every property of the Dapr component page and of current
upstream. Each field carries its Dapr key, kind, group and help text in
``field(metadata=...)``; that table drives parsing, validation, the YAML round
trip, the config form and the HTML table, so there is one list of fields.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import html
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jsnb.durations import format_duration, from_seconds, parse_duration
from jsnb.errors import MetadataError

if TYPE_CHECKING:
    from jsnb.component_yaml import Manifest, Secrets

__all__ = [
    "DEFAULT_NAME",
    "DEPRECATED_KEYS",
    "EMBEDDED",
    "GROUPS",
    "IGNORED_KEYS",
    "MASK",
    "AckPolicy",
    "ConcurrencyMode",
    "DeliverPolicy",
    "FieldInfo",
    "Kind",
    "Metadata",
    "format_value",
    "hide_userinfo",
    "iter_groups",
    "parse_timestamp",
    "restore_userinfo",
]

EMBEDDED = "embedded"
DEFAULT_NAME = "dapr.io - pubsub.jetstream"
MASK = "******"
GROUPS = ("connection", "auth", "consumer", "delivery", "retry")


class DeliverPolicy(enum.StrEnum):
    """Where a new consumer starts in the stream (Dapr's words)."""

    ALL = "all"
    LAST = "last"
    NEW = "new"
    SEQUENCE = "sequence"
    TIME = "time"


class AckPolicy(enum.StrEnum):
    """How deliveries are acknowledged."""

    EXPLICIT = "explicit"
    ALL = "all"
    NONE = "none"


class ConcurrencyMode(enum.StrEnum):
    """Whether a subscription runs one handler at a time or many."""

    SINGLE = "single"
    PARALLEL = "parallel"


class ConsumerMode(enum.StrEnum):
    """Whether the server pushes deliveries (Dapr's way) or jsnb pulls them in batches."""

    PUSH = "push"
    PULL = "pull"


class Kind(enum.Enum):
    """How a property's string form is parsed and shown."""

    STR = "string"
    KEEP_ALIVE = "off, auto or a duration"
    SECRET = "secret"
    PATH = "path"
    NAME = "name"
    INT = "int"
    BOOL = "bool"
    DURATION = "duration"
    DURATIONS = "duration list"
    UNIX_TIME = "unix seconds"
    ENUM = "enum"


@dataclass(frozen=True)
class FieldInfo:
    """One row of the field table: what a property is called and means."""

    attr: str
    key: str
    kind: Kind
    group: str
    help: str
    default: Any
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    upstream: bool = True
    consumer: str = ""  # the nats-py ConsumerConfig attribute it sets, if any
    updatable: bool = False  # nats-server changes it on a live consumer (measured, 2.15)
    unsigned: bool = False  # Dapr decodes it as a Go uint64 (no sign), else int64

    @property
    def int_range(self) -> tuple[int, int]:
        """The whole numbers Dapr's decoder can hold for this field."""
        return (0, 2**64 - 1) if self.unsigned else (-(2**63), 2**63 - 1)

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET


def _f(
    key: str,
    kind: Kind,
    group: str,
    help: str,
    default: Any = None,
    *,
    choices: type[enum.Enum] | None = None,
    minimum: int | None = None,
    upstream: bool = True,
    consumer: str = "",
    updatable: bool = False,
    unsigned: bool = False,
) -> Any:
    """A dataclass field that carries its row of the field table."""
    info = {
        "key": key,
        "kind": kind,
        "group": group,
        "help": help,
        "choices": tuple(c.value for c in choices) if choices else (),
        "minimum": minimum,
        "upstream": upstream,
        "consumer": consumer,
        "updatable": updatable,
        "unsigned": unsigned,
    }
    if isinstance(default, tuple | list):
        return field(default_factory=lambda: tuple(default), metadata=info)
    return field(default=default, metadata=info)


# Keys from older component versions, still read so old manifests keep working.
DEPRECATED_KEYS = {
    "hearbeat": "heartbeat",  # the seed page's typo, renamed upstream in 2023 (#2430)
    "deliverall": "deliverPolicy",  # replaced by deliverPolicy upstream in 2022 (#2315)
}
# Keys the Dapr runtime or upstream's dead retry decoder use, which this component
# ignores exactly as upstream does; they are accepted without a warning.
IGNORED_KEYS = {"consumerid", "backoffpolicy", "backoffduration", "backoffmaxretries"}
_TRUE = {"y", "yes", "true", "t", "on", "1"}
_FALSE = {"n", "no", "false", "f", "off", "0", ""}
# nats-server rejects these in stream, durable and queue names: they become
# parts of API subjects (upstream #1655).
_BAD_NAME = re.compile(r"[\s.*>/\\]")
_LAST_UNIX_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last second datetime can hold
_BAD_QUEUE = re.compile(r"\s")
_URL_SCHEMES = {"nats", "tls", "ws", "wss"}


@dataclass(frozen=True, repr=False)
class Metadata:
    """Validated configuration of one ``pubsub.jetstream`` component.

    Build it with :meth:`from_properties` (Dapr's string map or native values)
    or :meth:`from_component_yaml`; construct directly with Python values.
    """

    # connection
    nats_url: str = _f(
        "natsURL",
        Kind.STR,
        "connection",
        "NATS server URL(s), comma-separated; 'embedded' starts a local server",
    )
    name: str = _f(
        "name", Kind.STR, "connection", "Connection name shown by the server", DEFAULT_NAME
    )
    domain: str = _f(
        "domain", Kind.STR, "connection", "JetStream domain (API prefix $JS.<domain>.API)", ""
    )
    api_prefix: str = _f(
        "apiPrefix", Kind.STR, "connection", "JetStream API prefix; wins over domain", ""
    )
    # auth
    jwt: str = _f("jwt", Kind.SECRET, "auth", "User JWT for decentralized auth (needs seedKey)", "")
    seed_key: str = _f(
        "seedKey", Kind.SECRET, "auth", "NKey user seed that signs the server nonce", ""
    )
    tls_client_cert: str = _f(
        "tls_client_cert", Kind.PATH, "auth", "Path of the TLS client certificate (PEM)", ""
    )
    tls_client_key: str = _f(
        "tls_client_key", Kind.PATH, "auth", "Path of the TLS client key (PEM)", ""
    )
    tls_ca_cert: str = _f(
        "tls_ca_cert",
        Kind.PATH,
        "auth",
        "Path of a CA bundle to verify the server (jsnb extension; default: system CAs)",
        "",
        upstream=False,
    )
    token: str = _f("token", Kind.SECRET, "auth", "Token for token-based auth", "")
    # consumer
    stream_name: str = _f(
        "streamName", Kind.NAME, "consumer", "Stream to bind to; found by subject when empty", ""
    )
    durable_name: str = _f(
        "durableName",
        Kind.NAME,
        "consumer",
        "Durable consumer name; survives restarts",
        "",
        consumer="durable_name",
    )
    queue_group_name: str = _f(
        "queueGroupName",
        Kind.NAME,
        "consumer",
        "Deliver group: subscribers sharing it split the messages (use with durableName)",
        "",
        consumer="deliver_group",
    )
    replicas: int = _f(
        "replicas",
        Kind.INT,
        "consumer",
        "Consumer replicas (0 = stream's)",
        0,
        minimum=0,
        consumer="num_replicas",
        updatable=True,
    )
    memory_storage: bool = _f(
        "memoryStorage",
        Kind.BOOL,
        "consumer",
        "Keep consumer state in memory",
        False,
        consumer="mem_storage",
    )
    concurrency_mode: ConcurrencyMode = _f(
        "concurrencyMode",
        Kind.ENUM,
        "consumer",
        "single: one handler at a time, in order; parallel: many at once",
        ConcurrencyMode.SINGLE,
        choices=ConcurrencyMode,
    )
    consumer_mode: ConsumerMode = _f(
        "consumerMode",
        Kind.ENUM,
        "consumer",
        "push: the server sends (Dapr's); pull: jsnb fetches batches (jsnb extension)",
        ConsumerMode.PUSH,
        choices=ConsumerMode,
        upstream=False,
    )
    flow_control: bool = _f(
        "flowControl",
        Kind.BOOL,
        "consumer",
        "Server-side flow control (needs heartbeat)",
        False,
        consumer="flow_control",
    )
    heartbeat: timedelta = _f(
        "heartbeat",
        Kind.DURATION,
        "consumer",
        "Idle heartbeat interval (0 = off)",
        timedelta(0),
        consumer="idle_heartbeat",
    )
    rate_limit: int = _f(
        "rateLimit",
        Kind.INT,
        "consumer",
        "Delivery rate limit in bits per second (0 = none)",
        0,
        minimum=0,
        unsigned=True,
        consumer="rate_limit_bps",
        updatable=True,
    )
    max_ack_pending: int = _f(
        "maxAckPending",
        Kind.INT,
        "consumer",
        "Unacked deliveries allowed in flight (0 = server default, -1 = unlimited)",
        0,
        minimum=-1,
        consumer="max_ack_pending",
        updatable=True,
    )
    max_waiting: int = _f(
        "maxWaiting",
        Kind.INT,
        "consumer",
        "Pull requests the server queues at once (pull mode; 0 = server default 512)",
        0,
        minimum=0,
        upstream=False,
        consumer="max_waiting",
    )
    max_request_batch: int = _f(
        "maxRequestBatch",
        Kind.INT,
        "consumer",
        "Most messages one pull request may ask for (pull mode; 0 = no limit)",
        0,
        minimum=0,
        upstream=False,
        consumer="max_batch",
        updatable=True,
    )
    max_request_expires: timedelta = _f(
        "maxRequestExpires",
        Kind.DURATION,
        "consumer",
        "Longest a pull request may wait (pull mode; 0 = no limit)",
        timedelta(0),
        upstream=False,
        consumer="max_expires",
        updatable=True,
    )
    # delivery
    deliver_policy: DeliverPolicy = _f(
        "deliverPolicy",
        Kind.ENUM,
        "delivery",
        "Where a new consumer starts in the stream",
        DeliverPolicy.ALL,
        choices=DeliverPolicy,
        consumer="deliver_policy",
    )
    start_sequence: int = _f(
        "startSequence",
        Kind.INT,
        "delivery",
        "First stream sequence (deliverPolicy sequence)",
        0,
        minimum=0,
        unsigned=True,
        consumer="opt_start_seq",
    )
    start_time: int | None = _f(
        "startTime",
        Kind.UNIX_TIME,
        "delivery",
        "Start time in Unix seconds (deliverPolicy time)",
        None,
        unsigned=True,
        consumer="opt_start_time",
    )
    ack_policy: AckPolicy = _f(
        "ackPolicy",
        Kind.ENUM,
        "delivery",
        "explicit: ack each; all: ack up to; none: no acks",
        AckPolicy.EXPLICIT,
        choices=AckPolicy,
        consumer="ack_policy",
    )
    # retry
    ack_wait: timedelta = _f(
        "ackWait",
        Kind.DURATION,
        "retry",
        "How long the server waits for an ack before redelivering (0 = server default 30s)",
        timedelta(0),
        consumer="ack_wait",
        updatable=True,
    )
    max_deliver: int = _f(
        "maxDeliver",
        Kind.INT,
        "retry",
        "Delivery attempts per message (0 or -1 = unlimited)",
        0,
        minimum=-1,
        consumer="max_deliver",
        updatable=True,
    )
    back_off: tuple[timedelta, ...] = _f(
        "backOff",
        Kind.DURATIONS,
        "retry",
        "Redelivery delays per attempt, e.g. '50ms, 1s, 10s' (last repeats)",
        (),
        consumer="backoff",
        updatable=True,
    )
    in_progress: str = _f(
        "inProgress",
        Kind.KEEP_ALIVE,
        "retry",
        "While a handler runs, tell the server every so often (+WPI) so it does not "
        "redeliver: off, auto (a third of the ack deadline) or a duration (jsnb extension)",
        "off",
        upstream=False,
    )
    max_handler_time: timedelta = _f(
        "maxHandlerTime",
        Kind.DURATION,
        "retry",
        "Stop the inProgress keep-alive after this long, so a hung handler is redelivered "
        "(0 = unlimited; jsnb extension)",
        timedelta(0),
        upstream=False,
    )
    # Not a property: the manifest this was read from, so that to_component_yaml()
    # writes its name, namespace, scopes, secret store and references back.
    manifest: Manifest | None = field(default=None, compare=False, repr=False)

    # -- the field table -------------------------------------------------------

    @classmethod
    def fields_table(cls) -> tuple[FieldInfo, ...]:
        """Every property, in display order: the single source for forms and docs."""
        return _FIELDS

    @classmethod
    def field_info(cls, key: str) -> FieldInfo:
        """The row for a Dapr key (case-insensitive) or attribute name."""
        info = _BY_KEY.get(key.lower()) or _BY_ATTR.get(key)
        if info is None:
            raise KeyError(key)
        return info

    # -- building ---------------------------------------------------------------

    def __post_init__(self) -> None:
        problems = _Problems()
        for info in _FIELDS:
            value = getattr(self, info.attr)
            checked = info.default  # if the value is bad, the checks below see the default
            with problems.catch():
                checked = _coerce(info, value)
            if checked is not value:
                object.__setattr__(self, info.attr, checked)
        problems.add(_validate(self))
        problems.raise_any()

    @classmethod
    def from_properties(
        cls, properties: Mapping[str, Any] | Metadata, *, allow_embedded: bool = False
    ) -> Metadata:
        """Parse Dapr's property map (strings, as YAML gives them, or native values).

        Keys match case-insensitively as upstream. Seed-era keys (``hearbeat``,
        ``deliverAll``) still work with a ``DeprecationWarning``. With
        *allow_embedded*, a missing ``natsURL`` means "start an embedded server".
        """
        if isinstance(properties, Metadata):
            return properties
        if not isinstance(properties, Mapping):
            raise MetadataError(
                f"jsnb: component metadata must be a mapping of property names to values, "
                f"not {type(properties).__name__}"
            )
        problems = _Problems()
        raw = _fold_keys(properties, problems)
        values: dict[str, Any] = {}
        for lower, (key, value) in raw.items():
            info = _BY_KEY.get(lower)
            if info is not None:
                with problems.catch():
                    values[info.attr] = _parse(info, key, value)
            elif lower in DEPRECATED_KEYS or lower in IGNORED_KEYS or lower == "concurrency":
                continue
            else:
                _warn_unknown(key)
        with problems.catch():
            _apply_aliases(raw, values)
        if "natsurl" not in raw and allow_embedded:
            values["nats_url"] = EMBEDDED
        deliver_all = None
        with problems.catch():
            deliver_all = _read_deliver_all(raw, "deliver_policy" in values)
        if "deliver_policy" not in values:
            values["deliver_policy"] = _infer_deliver_policy(values, deliver_all)
        if problems.found:  # the fields that did parse may break cross-field rules too
            with problems.catch():
                cls(**values)
            problems.raise_any()
        return cls(**values)

    def replace(self, **changes: Any) -> Metadata:
        """A copy with attributes changed, validated again.

        It warns only about what the changes brought: this metadata's own warnings
        were given when it was made, and a notebook would show them again.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            copy = dataclasses.replace(self, **changes)
        if caught:
            with warnings.catch_warnings(record=True) as own:
                warnings.simplefilter("always")
                dataclasses.replace(self)
            given = {(w.category, str(w.message)) for w in own}
            for w in caught:
                if (w.category, str(w.message)) not in given:
                    _warn(str(w.message), w.category)
        return copy

    # -- exporting --------------------------------------------------------------

    @property
    def keep_alive(self) -> timedelta | str | None:
        """inProgress read: None when off, ``"auto"``, or the interval."""
        if self.in_progress in ("off", "auto"):
            return None if self.in_progress == "off" else "auto"
        return parse_duration(self.in_progress)

    @property
    def embedded(self) -> bool:
        """True when the component should start its own nats-server."""
        return self.nats_url == EMBEDDED

    def as_properties(
        self, *, reveal_secrets: bool = True, defaults: bool = False
    ) -> dict[str, str]:
        """Dapr's string map, non-default properties only unless *defaults*."""
        out: dict[str, str] = {}
        for info in _FIELDS:
            value = getattr(self, info.attr)
            if not defaults and value == info.default and info.key != "natsURL":
                continue
            if info.secret and value and not reveal_secrets:
                out[info.key] = MASK
            elif info.key == "natsURL" and not reveal_secrets:
                out[info.key] = hide_userinfo(value)
            else:
                out[info.key] = format_value(info, value)
        return out

    def to_component_yaml(self, name: str | None = None, *, reveal_secrets: bool = False) -> str:
        """A Dapr Component manifest; secrets are masked unless *reveal_secrets*.

        A Metadata read from a manifest keeps its name (unless *name* is given),
        namespace, scopes, ``auth.secretStore`` and its ``envRef`` /
        ``secretKeyRef`` entries whose values are unchanged.
        """
        from jsnb.component_yaml import render_component

        return render_component(self, name, reveal_secrets=reveal_secrets)

    @classmethod
    def from_component_yaml(
        cls,
        source: str | Path,
        *,
        name: str | None = None,
        secrets: Secrets | None = None,
        allow_embedded: bool = False,
    ) -> Metadata:
        """Read a Dapr ``Component`` manifest of type ``pubsub.jetstream``.

        *source* is YAML text or a path to a file holding it; *name* picks one
        component from a file holding several. ``secretKeyRef`` entries are
        resolved from *secrets*: ``{secret: {key: value}}`` or a function
        ``(secret, key) -> value``. Every problem is reported in one
        ``MetadataError``; where Dapr would read the manifest differently, a
        warning says so.
        """
        from jsnb.component_yaml import read_component

        return read_component(source, name=name, secrets=secrets, allow_embedded=allow_embedded)

    def _from_manifest(self, manifest: Manifest) -> Metadata:
        """This metadata, remembering *manifest*; not validated again (nor warned twice)."""
        found = copy.copy(self)
        object.__setattr__(found, "manifest", manifest)
        return found

    # -- display ----------------------------------------------------------------

    def __repr__(self) -> str:
        bare = (Kind.INT, Kind.BOOL, Kind.UNIX_TIME)
        shown = ", ".join(
            f"{k}={v}" if _BY_KEY[k.lower()].kind in bare else f"{k}={v!r}"
            for k, v in self.as_properties(reveal_secrets=False).items()
        )
        return f"Metadata({shown})"

    def _repr_html_(self) -> str:
        rows = []
        for group in GROUPS:
            rows.append(f'<tr><th colspan="3" style="text-align:left">{group}</th></tr>')
            for info in _FIELDS:
                if info.group != group:
                    continue
                value = getattr(self, info.attr)
                shown = MASK if info.secret and value else format_value(info, value)
                if info.key == "natsURL":
                    shown = hide_userinfo(shown)
                style = "" if value == info.default else ' style="font-weight:bold"'
                rows.append(
                    f"<tr><td><code>{info.key}</code></td><td{style}>{html.escape(shown)}</td>"
                    f"<td style='text-align:left'>{html.escape(info.help)}</td></tr>"
                )
        return (
            '<table class="jsnb-metadata"><thead><tr><th>key</th><th>value</th>'
            f"<th>meaning</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )


_FIELDS = tuple(
    FieldInfo(
        attr=f.name, default=f.default if f.default is not dataclasses.MISSING else (), **f.metadata
    )
    for f in dataclasses.fields(Metadata)
    if f.metadata  # the properties; not ``manifest``
)
_BY_KEY = {info.key.lower(): info for info in _FIELDS}
_BY_ATTR = {info.attr: info for info in _FIELDS}


# -- parsing helpers ------------------------------------------------------------


class _Problems:
    """Every problem of one parse, so that one ``MetadataError`` lists them all.

    A problem about a key that already failed is dropped: a cross-field rule
    checked against that field's default would only repeat or mislead.
    """

    def __init__(self) -> None:
        self.found: list[tuple[str | None, str]] = []
        self._failed: set[str | None] = set()

    def add(self, problems: Iterable[tuple[str | None, str]]) -> None:
        new = [p for p in problems if p[0] is None or p[0] not in self._failed]
        self.found += new
        self._failed.update(key for key, _ in new)

    @contextmanager
    def catch(self) -> Iterator[None]:
        try:
            yield
        except MetadataError as exc:
            self.add(exc.problems)

    def raise_any(self) -> None:
        if self.found:
            raise MetadataError.collect(self.found)


def format_value(info: FieldInfo, value: Any) -> str:
    """A value in the string form Dapr metadata uses."""
    if info.kind is Kind.DURATION:
        return format_duration(value)
    if info.kind is Kind.DURATIONS:
        return ", ".join(format_duration(v) for v in value)
    if info.kind is Kind.BOOL:
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value.value if isinstance(value, enum.Enum) else value)


def _fold_keys(properties: Mapping[str, Any], problems: _Problems) -> dict[str, tuple[str, Any]]:
    """Keys lowercased, as Dapr matches them; a collision is a problem (Dapr's Init fails too)."""
    folded: dict[str, tuple[str, Any]] = {}
    for key, value in properties.items():
        if not isinstance(key, str):
            raise MetadataError(f"jsnb: property names must be strings, got {key!r}")
        lower = key.strip().lower()
        if lower in folded:
            problems.add(
                [
                    (
                        key.strip(),
                        f"jsnb: property {key!r} is given twice (as {folded[lower][0]!r} too); "
                        "keys are case-insensitive",
                    )
                ]
            )
            continue
        folded[lower] = (key.strip(), value)
    return folded


def _warn(message: str, category: type[Warning]) -> None:
    """Warn at the caller's code, not ours, so Jupyter shows it (it hides library warnings)."""
    frame = sys._getframe(1)
    level = 2
    # Past jsnb's frames and the dataclasses machinery that validates a Metadata.
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        ("jsnb.", "dataclasses")
    ):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


_STREAM_SETTING = (
    "a stream setting: streams are configured outside the component "
    "(jsnb.ensure_stream, or `nats stream add`)"
)
# Keys of NATS Streaming (pubsub.natsstreaming, JetStream's predecessor) and of
# streams, which users carry over; each with what this component uses instead.
_UNKNOWN_HINTS = {
    "delivernew": "NATS Streaming's; use deliverPolicy: new",
    "startwithlastreceived": "NATS Streaming's; use deliverPolicy: last",
    "startatsequence": "NATS Streaming's; use startSequence with deliverPolicy: sequence",
    "startattime": "NATS Streaming's; use startTime (Unix seconds) with deliverPolicy: time",
    "startattimedelta": "NATS Streaming's; use startTime (Unix seconds) with deliverPolicy: time",
    "maxinflight": "NATS Streaming's; use maxAckPending",
    "ackwaittime": "NATS Streaming's; use ackWait",
    "durablesubscriptionname": "NATS Streaming's; use durableName",
    "subscriptiontype": "NATS Streaming's; set queueGroupName (with durableName) for a queue",
    "natsstreamingclusterid": "NATS Streaming's; JetStream needs no cluster ID",
    **dict.fromkeys(
        (
            "maxage",
            "retentionpolicy",
            "retention",
            "maxmsgs",
            "maxbytes",
            "maxmsgsize",
            "subjects",
            "storage",
            "discard",
            "duplicatewindow",
            "numreplicas",
        ),
        _STREAM_SETTING,
    ),
}


def _warn_unknown(key: str) -> None:
    known = [info.key for info in _FIELDS] + ["deliverAll", "hearbeat"]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:
        close = [k for k in known if k.lower() == key.lower().replace("-", "_")]
    if key.lower() in _UNKNOWN_HINTS:
        hint = f": {_UNKNOWN_HINTS[key.lower()]}"
    else:
        hint = f"; did you mean {close[0]!r}?" if close else ""
    _warn(f"jsnb: unknown property {key!r} is ignored{hint}", UserWarning)


def _shown(info: FieldInfo, value: Any) -> str:
    if info.secret:
        return "(hidden)"
    if info.key == "natsURL":  # a URL may carry credentials, whatever its type
        return repr(_hide_in(value))
    return repr(value)


def _hide_in(value: Any) -> Any:
    """*value* with the credentials of every URL in it hidden (a list given as natsURL)."""
    if isinstance(value, str):
        return hide_userinfo(value)
    if isinstance(value, list | tuple):
        return type(value)(_hide_in(v) for v in value)
    return "(hidden)" if isinstance(value, Mapping) else value


def _bad(info: FieldInfo, value: Any, expected: str) -> MetadataError:
    return MetadataError(
        f"jsnb: {info.key} {_shown(info, value)} is not valid: expected {expected}", key=info.key
    )


def _parse_bool(info: FieldInfo, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _bad(info, value, "true or false (also yes/no, on/off, 1/0)")


def _parse_int(info: FieldInfo, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad(info, value, "a whole number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # YAML's 5.0 or 1e3: Dapr receives its JSON text, "5" or "1000"
    elif isinstance(value, float):
        raise _bad(info, value, "a whole number")
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0
        if not text.isascii():  # Python's int() reads other scripts' digits; Go does not
            raise _bad(info, text, "a whole number")
        try:
            # Go's base-0 parsing reads 0x/0o/0b prefixes, as upstream does.
            value = int(text, 0)
        except ValueError:
            try:
                value = int(text, 10)  # "010" is ten here, not Go's octal eight
            except ValueError:
                raise _bad(info, text, "a whole number") from None
    low, high = info.int_range
    if not -(2**63) <= value <= high:  # below an unsigned field's 0: its minimum says so
        raise _bad(info, value, f"a whole number from {low} to {high} (what Dapr can read)")
    return int(value)


def _parse_duration(info: FieldInfo, value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise _bad(info, value, "a duration such as '10s'")
    try:
        if isinstance(value, int | float):
            return from_seconds(value)
        if isinstance(value, str):
            return parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise MetadataError(f"jsnb: {info.key}: {exc}", key=info.key) from None
    raise _bad(info, value, "a duration such as '10s'")


def _parse_durations(info: FieldInfo, value: Any) -> tuple[timedelta, ...]:
    if isinstance(value, str):
        text = value.strip()
        # Brackets as in upstream's metadata.yaml example, which upstream itself rejects.
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        parts: list[Any] = [p.strip().strip("'\"") for p in text.split(",")]
        parts = [p for p in parts if p]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = [value]
    return tuple(_parse_duration(info, p) for p in parts)


def _parse_unix_time(info: FieldInfo, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(when.timestamp())
    if isinstance(value, str) and value.strip() == "":
        return None
    if isinstance(value, str) and (instant := parse_timestamp(value)) is not None:
        return int(instant.timestamp())  # jsnb reads more than Dapr here; a manifest is warned
    seconds = _parse_int(info, value)
    if not 0 <= seconds <= _LAST_UNIX_SECOND:
        raise _bad(info, value, "Unix seconds between 0 and 253402300799 (year 9999)")
    return seconds


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 / ISO 8601 instant (UTC unless it says otherwise), or None."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _parse_enum(info: FieldInfo, value: Any) -> str:
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, str) or value.strip().lower() not in info.choices:
        raise MetadataError(
            f"jsnb: {info.key} {value!r} is not one of {', '.join(info.choices)}", key=info.key
        )
    return value.strip().lower()


def _parse_str(info: FieldInfo, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool | int | float):
        return _dapr_string(info, value)
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()  # YAML reads 2024-01-01 as a date; Dapr passes the text on
    if not isinstance(value, str):
        raise _bad(info, value, "a string")
    return value.strip()


def _dapr_string(info: FieldInfo, value: bool | float) -> str:
    """A YAML number or boolean as Dapr passes it on: its JSON text (``token: 123``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise _bad(info, value, "a string (Dapr cannot pass on an infinite or NaN number)")
    return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)


def _parse_path(info: FieldInfo, value: Any) -> str:
    text = _parse_str(info, value)
    if "-----BEGIN" in text or "\n" in text:
        # Upstream's metadata.yaml shows PEM examples, but the component reads files;
        # never echo the text: it may be a private key.
        example = {"tls_client_key": "tls.key", "tls_ca_cert": "ca.crt"}.get(info.key, "tls.crt")
        raise MetadataError(
            f"jsnb: {info.key} looks like PEM text (value hidden); it must be the path of a "
            f"PEM file, e.g. '/path/to/{example}'",
            key=info.key,
        )
    return text


def _parse_keep_alive(info: FieldInfo, value: Any) -> str:
    """``off``, ``auto`` or a duration above 0, in its normal written form."""
    if isinstance(value, str) and value.strip().lower() in ("", "off", "auto"):
        return value.strip().lower() or "off"
    if value is False or value is None:
        return "off"
    try:
        interval = _parse_duration(info, value)
    except MetadataError:
        raise _bad(info, value, "off, auto, or a duration such as '5s'") from None
    if interval <= timedelta(0):
        raise _bad(info, value, "off, auto, or a duration above 0 such as '5s'")
    return format_duration(interval)


# Each parser returns its kind's type; the table is read where the kind is not known.
_PARSERS: dict[Kind, Callable[[FieldInfo, Any], Any]] = {
    Kind.STR: _parse_str,
    Kind.KEEP_ALIVE: _parse_keep_alive,
    Kind.SECRET: _parse_str,
    Kind.PATH: _parse_path,
    Kind.NAME: _parse_str,
    Kind.INT: _parse_int,
    Kind.BOOL: _parse_bool,
    Kind.DURATION: _parse_duration,
    Kind.DURATIONS: _parse_durations,
    Kind.UNIX_TIME: _parse_unix_time,
    Kind.ENUM: _parse_enum,
}
_ENUMS = {
    "deliver_policy": DeliverPolicy,
    "ack_policy": AckPolicy,
    "concurrency_mode": ConcurrencyMode,
    "consumer_mode": ConsumerMode,
}


# Kinds whose empty value (``key:`` or ``''``) Dapr's decoder reads as unset: the default.
_EMPTY_IS_DEFAULT = {Kind.INT, Kind.BOOL, Kind.DURATION, Kind.DURATIONS, Kind.ENUM}


def _parse(info: FieldInfo, key: str, value: Any) -> Any:
    """A property map's value (a manifest's): an empty one means the default, as in Dapr."""
    if info.kind in _EMPTY_IS_DEFAULT and (
        value is None or (isinstance(value, str) and not value.strip())
    ):
        return info.default
    return _PARSERS[info.kind](info, value)


def _coerce(info: FieldInfo, value: Any) -> Any:
    """Bring a directly constructed value to the field's type (parsing strings)."""
    parsed = _PARSERS[info.kind](info, value)
    if info.kind is Kind.ENUM:
        parsed = _ENUMS[info.attr](parsed)
    if info.minimum is not None and parsed is not None and parsed < info.minimum:
        raise _bad(info, value, "0 or more" if info.minimum == 0 else "-1 (unlimited) or more")
    if parsed == value and type(parsed) is type(value):
        return value
    return parsed


def _empty(value: Any) -> bool:
    """What Dapr's decoder receives as "" (a null or an empty string; spaces are not)."""
    return value is None or value == ""


def _apply_aliases(raw: dict[str, tuple[str, Any]], values: dict[str, Any]) -> None:
    if "hearbeat" in raw and not _empty(raw["hearbeat"][1]):
        key, value = raw["hearbeat"]
        if "heartbeat" in values:
            _warn(
                f"jsnb: {key!r} is the old misspelling of 'heartbeat'; both are set, "
                "'heartbeat' is used",
                DeprecationWarning,
            )
        else:
            values["heartbeat"] = _parse_duration(_BY_KEY["heartbeat"], value)
            fails = ", so flowControl true fails there" if values.get("flow_control") else ""
            _warn(
                f"jsnb: {key!r} is the old misspelling of 'heartbeat': current Dapr ignores it "
                f"(renamed in 2023) and runs without heartbeats{fails}; jsnb reads it as "
                "heartbeat: rename it to 'heartbeat'",
                DeprecationWarning,
            )
    if "concurrency" in raw and _empty(raw.get("concurrencymode", ("", ""))[1]):
        # upstream's metadata.yaml documents 'concurrency'; a 'concurrencyMode' wins unless
        # it is empty (upstream skips an empty one).
        values["concurrency_mode"] = _parse(_BY_KEY["concurrencymode"], *raw["concurrency"])


def _read_deliver_all(raw: dict[str, tuple[str, Any]], has_policy: bool) -> bool | None:
    if "deliverall" not in raw or _empty(raw["deliverall"][1]):
        return None
    key, value = raw["deliverall"]
    deliver_all = _parse_bool(FieldInfo("", key, Kind.BOOL, "", "", False), value)
    if has_policy:
        effect = "jsnb ignores it too because deliverPolicy is set"
    else:
        effect = (
            f"jsnb reads it as deliverPolicy {'all' if deliver_all else 'last'} "
            "(its original meaning) unless a start option is set"
        )
    _warn(
        f"jsnb: {key!r} is deprecated: current Dapr ignores it (replaced by deliverPolicy in "
        f"2022, default 'all'); {effect}: use deliverPolicy",
        DeprecationWarning,
    )
    return deliver_all


def _infer_deliver_policy(values: dict[str, Any], deliver_all: bool | None) -> str:
    """The original component's precedence: startTime > startSequence > deliverAll."""
    if values.get("start_time") is not None:
        if values.get("start_sequence"):
            _warn(
                "jsnb: startTime and startSequence are both set without deliverPolicy; "
                "startTime wins (deliverPolicy time) and startSequence is ignored",
                UserWarning,
            )
            values["start_sequence"] = 0
        return DeliverPolicy.TIME
    if values.get("start_sequence"):
        return DeliverPolicy.SEQUENCE
    if deliver_all is False:
        return DeliverPolicy.LAST
    return DeliverPolicy.ALL


# -- validation -----------------------------------------------------------------


def _validate(md: Metadata) -> list[tuple[str | None, str]]:
    """Cross-field rules, each one nats-server or the client would enforce later.

    Every check runs, each stopping at its own first problem, so that one
    ``MetadataError`` can list all of them.
    """
    problems = _Problems()
    for check in _CHECKS:
        with problems.catch():
            check(md)
    return problems.found


def _validate_auth(md: Metadata) -> None:
    pairs = (
        ("jwt", "seedKey"),
        ("seedKey", "jwt"),
        ("tls_client_cert", "tls_client_key"),
        ("tls_client_key", "tls_client_cert"),
    )
    for have, need in pairs:
        if getattr(md, _BY_KEY[have.lower()].attr) and not getattr(md, _BY_KEY[need.lower()].attr):
            raise MetadataError(f"jsnb: {have} is set but {need} is missing; set both", key=need)


def _validate_names(md: Metadata) -> None:
    for key in ("streamName", "durableName", "queueGroupName"):
        name = getattr(md, _BY_KEY[key.lower()].attr)
        # Queue groups may hold dots; whitespace would break the SUB protocol line.
        bad = _BAD_QUEUE if key == "queueGroupName" else _BAD_NAME
        if name and bad.search(name):
            raise MetadataError(
                f"jsnb: {key} {name!r} is not a valid NATS name: "
                + (
                    "no whitespace"
                    if key == "queueGroupName"
                    else "no spaces, dots, '*', '>', '/' or '\\'"
                ),
                key=key,
            )


def _validate_durations(md: Metadata) -> None:
    for key in ("ackWait", "heartbeat"):
        value = getattr(md, _BY_KEY[key.lower()].attr)
        if value < timedelta(0):
            raise MetadataError(
                f"jsnb: {key} {format_duration(value)!r} is negative; expected 0 or more", key=key
            )
    if timedelta(0) < md.heartbeat < timedelta(milliseconds=100):
        raise MetadataError(
            f"jsnb: heartbeat {format_duration(md.heartbeat)!r} is too short: nats-server "
            "needs 100ms or more (or 0 for none)",
            key="heartbeat",
        )


def _validate_back_off(md: Metadata) -> None:
    for value in md.back_off:
        if value <= timedelta(0):
            # backOff[n-1] is delivery n's ack deadline; at 0 nats-server ignores the
            # delayed NAK jsnb sends, so a failed message would never come back.
            raise MetadataError(
                f"jsnb: backOff value {format_duration(value)!r} is not above 0; each delay "
                "is also that delivery's ack deadline and must be above 0 (e.g. '50ms')",
                key="backOff",
            )
    if md.back_off and md.max_deliver > 0:
        if md.max_deliver < len(md.back_off):
            raise MetadataError(
                f"jsnb: maxDeliver {md.max_deliver} is less than the number of backOff values "
                f"({len(md.back_off)}); nats-server rejects that: raise maxDeliver or use -1",
                key="maxDeliver",
            )
        if md.max_deliver == len(md.back_off):
            _warn(
                f"jsnb: maxDeliver {md.max_deliver} equals the number of backOff values, so "
                "the last backOff value is never used",
                UserWarning,
            )


def _validate_flow_control(md: Metadata) -> None:
    if md.flow_control and md.heartbeat <= timedelta(0):
        raise MetadataError(
            "jsnb: flowControl true needs a heartbeat (for example heartbeat '5s')",
            key="heartbeat",
        )


# Push-only fields, each with why a pull consumer has no use for it.
_PUSH_ONLY = {
    "flowControl": "it paces what the server pushes; in pull mode jsnb asks for each batch",
    "heartbeat": "it is the push consumer's idle heartbeat; jsnb's pull requests carry their own",
    "rateLimit": "it paces a push consumer's deliveries; nats-server refuses it on pull consumers",
}
_PULL_ONLY = ("maxWaiting", "maxRequestBatch", "maxRequestExpires")


def _validate_consumer_mode(md: Metadata) -> None:
    """Fields of one consumer kind are refused on the other, saying why."""
    problems = _Problems()
    for key in _PUSH_ONLY if md.consumer_mode is ConsumerMode.PULL else _PULL_ONLY:
        info = _BY_KEY[key.lower()]
        value = getattr(md, info.attr)
        if value == info.default:
            continue
        shown = format_value(info, value)
        if md.consumer_mode is ConsumerMode.PULL:
            why = f"{_PUSH_ONLY[key]}; drop {key} or use consumerMode 'push'"
            text = f"jsnb: {key} {shown!r} is push-only and consumerMode is 'pull': {why}"
        else:
            text = (
                f"jsnb: {key} {shown!r} limits pull requests, but consumerMode is 'push'; set "
                f"consumerMode 'pull' or drop {key}"
            )
        problems.add([(key, text)])
    problems.raise_any()


def _validate_keep_alive(md: Metadata) -> None:
    """The keep-alive must come more often than the ack deadline it holds off."""
    from jsnb.retry import RetryRule

    if md.max_handler_time < timedelta(0):
        raise MetadataError(
            f"jsnb: maxHandlerTime {format_duration(md.max_handler_time)!r} is negative; "
            "expected 0 (unlimited) or more",
            key="maxHandlerTime",
        )
    interval = md.keep_alive
    if interval is not None and md.ack_policy is AckPolicy.NONE:
        raise MetadataError(
            f"jsnb: inProgress {md.in_progress!r} needs acks, but ackPolicy is 'none' (the "
            "server never redelivers); drop inProgress or use ackPolicy 'explicit'",
            key="inProgress",
        )
    if interval is None:
        if md.max_handler_time:
            raise MetadataError(
                f"jsnb: maxHandlerTime {format_duration(md.max_handler_time)!r} bounds the "
                "inProgress keep-alive, but inProgress is 'off'; set inProgress (e.g. 'auto') "
                "or drop maxHandlerTime",
                key="maxHandlerTime",
            )
        return
    if interval == "auto":
        return
    assert isinstance(interval, timedelta)
    rule = RetryRule.from_metadata(md)
    deadline = min(rule.backoff or (rule.ack_wait,))
    if interval.total_seconds() >= deadline:
        source = "backOff" if rule.backoff else "ackWait"
        raise MetadataError(
            f"jsnb: inProgress {md.in_progress!r} is not shorter than the ack deadline "
            f"({source} {format_duration(from_seconds(deadline))}): the server would redeliver "
            "before the first keep-alive; use a shorter interval or 'auto'",
            key="inProgress",
        )


def _validate_delivery(md: Metadata) -> None:
    """Combinations that would lose messages are refused; surprising ones warned about."""
    if md.ack_policy is AckPolicy.ALL and md.queue_group_name:
        # A member's cumulative ack covers sequences another member is still handling.
        raise MetadataError(
            f"jsnb: ackPolicy 'all' with queueGroupName {md.queue_group_name!r} would let one "
            "member's ack cover another member's failed message; use ackPolicy 'explicit' "
            "with queue groups",
            key="ackPolicy",
        )
    if md.ack_policy is AckPolicy.NONE and md.max_ack_pending:
        raise MetadataError(
            f"jsnb: maxAckPending {md.max_ack_pending} needs acks, but ackPolicy is 'none' "
            "(nats-server refuses it, error 10082); drop maxAckPending or use ackPolicy "
            "'explicit'",
            key="maxAckPending",
        )
    if md.back_off and md.ack_wait and md.ack_wait != md.back_off[0]:
        _warn(
            f"jsnb: ackWait {format_duration(md.ack_wait)} is not used: with backOff, "
            f"nats-server makes backOff[0] ({format_duration(md.back_off[0])}) the first "
            "delivery's ack deadline, and backOff[n-1] the n-th's; a handler slower than "
            "that runs twice",
            UserWarning,
        )
    if md.queue_group_name and not md.durable_name:
        _warn(
            f"jsnb: queueGroupName {md.queue_group_name!r} without durableName gives each "
            "subscriber its own ephemeral consumer, so every member gets every message; "
            "set durableName too to share the work",
            UserWarning,
        )


def _validate_url(url: str) -> None:
    if not url:
        raise MetadataError(
            "jsnb: natsURL is missing: set it to a server such as 'nats://localhost:4222', "
            "or to 'embedded' to start a local server",
            key="natsURL",
        )
    if url == EMBEDDED:
        return
    for part in url.split(","):
        part = part.strip()
        target = part if "://" in part else f"nats://{part}"
        try:
            parsed = urlsplit(target)
            port = parsed.port
        except ValueError:
            parsed, port = None, None
        if parsed is None or parsed.scheme not in _URL_SCHEMES or not parsed.hostname:
            shown = hide_userinfo(part)
            raise MetadataError(
                f"jsnb: natsURL {shown!r} is not a NATS URL: expected "
                "nats://host:port (also tls://, ws://, wss://), comma-separated for several",
                key="natsURL",
            )
        del port


# An optional scheme, then everything up to the last "@" (greedy): the userinfo.
_USERINFO = re.compile(r"^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?).*@", re.DOTALL)


def hide_userinfo(url: str) -> str:
    """Hide the credentials in a URL, or a comma-separated list of them, before showing it.

    Each server's text is masked up to its *last* ``@``: a password may hold an
    unencoded ``@``, ``/`` or ``:``, and a URL may come without a scheme.
    """
    return ",".join(_hide_part(part) for part in url.split(","))


# A server as a URL list names it: [scheme://]host[:port][/], with no credentials.
_PLAIN_SERVER = re.compile(
    r"\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:\[[0-9A-Fa-f:.]*\]|[^:@/\s]*)(?::[0-9]*)?/?\s*"
)
_SCHEME = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?")


def restore_userinfo(shown: str, real: str) -> str:
    """*shown* with each server's ``***@`` replaced by the credentials *real* gave that server.

    The inverse of :func:`hide_userinfo` for a masked URL someone edited: servers are
    matched by position, so an edited host or port keeps its credentials; a mask with
    nothing behind it stays.
    """
    reals = real.split(",")
    parts = []
    for i, part in enumerate(shown.split(",")):
        mask = part.find("***@")
        if mask >= 0 and i < len(reals) and "@" in reals[i]:
            scheme = _SCHEME.match(reals[i])
            userinfo = reals[i][scheme.end() if scheme else 0 : reals[i].rindex("@")]
            part = part[:mask] + userinfo + part[mask + 3 :]
        parts.append(part)
    return ",".join(parts)


def _hide_part(part: str) -> str:
    if "@" in part:
        return _USERINFO.sub(r"\1***@", part, count=1)
    if _PLAIN_SERVER.fullmatch(part):
        return part
    # Not a server: likely credentials cut at a comma they hold ("alice:se,cret@h").
    scheme = _SCHEME.match(part)
    return (scheme.group() if scheme else "") + "***"


def _validate_start_sequence(md: Metadata) -> None:
    policy = md.deliver_policy
    if policy is DeliverPolicy.SEQUENCE and md.start_sequence < 1:
        raise MetadataError(
            "jsnb: deliverPolicy 'sequence' needs startSequence 1 or more", key="startSequence"
        )
    if md.start_sequence and policy is not DeliverPolicy.SEQUENCE:
        raise MetadataError(
            f"jsnb: startSequence {md.start_sequence} is set but deliverPolicy is "
            f"{policy.value!r}; the server rejects that: use deliverPolicy 'sequence' "
            "or drop startSequence",
            key="startSequence",
        )


def _validate_start_time(md: Metadata) -> None:
    policy = md.deliver_policy
    if policy is DeliverPolicy.TIME and md.start_time is None:
        raise MetadataError(
            "jsnb: deliverPolicy 'time' needs startTime (Unix seconds)", key="startTime"
        )
    if md.start_time is not None and policy is not DeliverPolicy.TIME:
        raise MetadataError(
            f"jsnb: startTime {md.start_time} is set but deliverPolicy is {policy.value!r}; "
            "the server rejects that: use deliverPolicy 'time' or drop startTime",
            key="startTime",
        )


# Independent rule groups: one bad field does not hide a problem in another.
_CHECKS: tuple[Callable[[Metadata], None], ...] = (
    lambda md: _validate_url(md.nats_url),
    _validate_auth,
    _validate_names,
    _validate_start_sequence,
    _validate_start_time,
    _validate_durations,
    _validate_back_off,
    _validate_flow_control,
    _validate_delivery,
    _validate_consumer_mode,
    _validate_keep_alive,
)


def iter_groups() -> Iterator[tuple[str, list[FieldInfo]]]:
    """The field table by group, in display order (for forms and docs)."""
    for group in GROUPS:
        yield group, [info for info in _FIELDS if info.group == group]
