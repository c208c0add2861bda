"""Dapr ``Component`` manifests of type ``pubsub.jetstream``: reading and writing.

>>> md = read_component('''
... apiVersion: dapr.io/v1alpha1
... kind: Component
... metadata: {name: orders-pubsub, namespace: shop}
... spec:
...   type: pubsub.jetstream
...   version: v1
...   metadata:
...   - {name: natsURL, value: "nats://localhost:4222"}
...   - {name: maxDeliver, value: 5}
... scopes: [checkout]
... ''')
>>> md.max_deliver, md.manifest.name, md.manifest.scopes
(5, 'orders-pubsub', ('checkout',))

A manifest is read the way the Dapr runtime reads it: ``envRef`` from the
environment, ``secretKeyRef`` from the *secrets* given (jsnb has no secret
store), every problem collected into one ``MetadataError``. The values are
then parsed by :meth:`jsnb.Metadata.from_properties`, and each place where
current Dapr would read the manifest differently from jsnb is warned about
(see ``_dapr_differences``; docs/behaviour.md lists them in one table).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from jsnb.durations import parse_duration
from jsnb.errors import MetadataError
from jsnb.metadata import (
    MASK,
    DeliverPolicy,
    FieldInfo,
    Kind,
    Metadata,
    _warn,
    hide_userinfo,
    parse_timestamp,
)

__all__ = [
    "COMPONENT_TYPE",
    "DEFAULT_NAME",
    "Manifest",
    "Ref",
    "component_names",
    "read_component",
    "render_component",
]

COMPONENT_TYPE = "pubsub.jetstream"
DEFAULT_NAME = "jetstream-pubsub"
# What a secretKeyRef is resolved from: {secret: {key: value}} or (secret, key) -> value.
Secrets = Mapping[str, Mapping[str, Any]] | Callable[[str, str], Any]
_TEXT = "component YAML"  # how messages name a source given as text
# A Helm template action as charts write them: "{{", an optional "-", then a field, a
# variable, a pipeline, a comment or one of the functions charts use; "a{{ b }}" is not.
_TEMPLATE = re.compile(
    r"\{\{-?\s*(?:[.$(]|/\*|(?:include|template|if|else|end|range|with|define|block|tpl|"
    r"toYaml|toJson|printf|print|default|required|quote|squote|lookup|trim|upper|lower|"
    r"indent|nindent|b64enc|not|and|or|eq|ne)\b)"
)
_YAML_COMMENT = re.compile(r"(?:^|\s)#.*$", re.M)
_MASKED_URL = re.compile(r"(?:^|[/,\s])\*\*\*@")
# The versions Dapr's registry treats as the first one (components.IsInitialVersion).
_DAPR_VERSIONS = {"", "v0", "v1"}


class Ref(NamedTuple):
    """A metadata entry that pointed elsewhere (``envRef`` or ``secretKeyRef``)."""

    entry: Mapping[str, Any]
    # A digest of the value it gave, not the value: enough to see on export whether
    # the value is still the same, and this record never holds a secret.
    digest: str


@dataclass(frozen=True)
class Manifest:
    """What a manifest says besides its properties; ``to_component_yaml`` writes it back."""

    name: str = DEFAULT_NAME
    namespace: str = ""
    scopes: tuple[str, ...] = ()
    secret_store: str = ""
    refs: Mapping[str, Ref] = field(default_factory=dict)
    # Keys the manifest spelled out (Dapr's spelling): written back even at their default.
    spelled: frozenset[str] = frozenset()


# Keyed per process, so a digest shown in a repr says nothing about a short secret.
_DIGEST_KEY = os.urandom(16)


def _digest(value: str) -> str:
    return hmac.new(_DIGEST_KEY, value.encode(), hashlib.sha256).hexdigest()


# -- reading ----------------------------------------------------------------------------

# How Dapr's manifest loader (sigs.k8s.io/yaml over go-yaml v2) types a plain scalar;
# PyYAML follows YAML 1.1 elsewhere (1:30 is 90, y is a string, 0o10 and 1e3 strings).
_GO_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_GO_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_GO_NULL = {"", "~", "null", "Null", "NULL"}
_GO_SPECIAL_FLOAT = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
# Go's strconv base 0 (0x, 0o, 0b, a leading 0 for octal), after go-yaml drops "_".
_GO_INT = re.compile(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# go-yaml v2 hands a timestamp to an untyped target as its text, so does this loader.
_GO_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?")
_GO_TAG = "tag:jsnb,2026:go-plain-scalar"


def _go_scalar(text: str) -> Any:
    """A plain (unquoted) YAML scalar as go-yaml v2 types it for Dapr."""
    if text in _GO_TRUE or text in _GO_FALSE:
        return text in _GO_TRUE
    if text in _GO_NULL:
        return None
    if text in _GO_SPECIAL_FLOAT:
        return _GO_SPECIAL_FLOAT[text]
    if not text or text[0] not in "-+0123456789." or _GO_TIMESTAMP.fullmatch(text):
        return text
    plain = text.replace("_", "")
    match = _GO_INT.fullmatch(plain)
    if match:
        digits = match.group(1)
        if digits[:2].lower() in ("0x", "0o", "0b"):
            number = int(digits[2:], {"x": 16, "o": 8, "b": 2}[digits[1].lower()])
        else:
            number = int(digits, 8 if digits.startswith("0") else 10)
        number = -number if plain.startswith("-") else number
        if -(2**63) <= number < 2**64:
            return number
        if _GO_FLOAT.fullmatch(plain):  # beyond Go's integers: go-yaml reads a float
            return float(plain)
        return text
    if _GO_FLOAT.fullmatch(plain):
        return float(plain)
    return text


def _go_text(value: Any) -> str:
    """A typed scalar in a Go string field of the manifest, as Dapr's loader writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
    return str(value)


class _DaprYAML(yaml.SafeLoader):
    """PyYAML's safe loader, typing plain scalars as Dapr's loader does (see _go_scalar)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _GO_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


def _construct_go_scalar(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    return _go_scalar(loader.construct_scalar(node))


_DaprYAML.add_constructor(_GO_TAG, _construct_go_scalar)


class _DaprDumper(yaml.SafeDumper):
    """Quotes every string Dapr's loader would read as something else (``1e3``, ``y``)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = None if _go_scalar(text) == text and text == text.strip() else "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_DaprDumper.add_representer(str, _represent_str)


def read_component(
    source: str | Path,
    *,
    name: str | None = None,
    secrets: Secrets | None = None,
    allow_embedded: bool = False,
    unmask: Mapping[str, Any] | None = None,
) -> Metadata:
    """The ``Metadata`` of one ``pubsub.jetstream`` component in *source*.

    Args:
        source: YAML text, or the path of a file holding it.
        name: Which component, when the file holds several.
        secrets: Values for ``secretKeyRef`` entries.
        allow_embedded: A missing ``natsURL`` means an embedded server.
        unmask: Current values a masked export stands for (the config form's
            own): a masked value whose key is here is replaced instead of refused.

    Raises:
        MetadataError: listing every problem, one line each.
    """
    text, label = _read(source)
    component = _pick_component(_load_yaml(text, label), label, name)
    problems: list[tuple[str | None, str]] = []
    props, refs = _entries(component, secrets, unmask or {}, problems)
    failed = {str(key).strip().lower() for key, _ in problems}
    try:
        md = Metadata.from_properties(
            {k: v for k, v in props.items() if k.strip().lower() not in failed},
            allow_embedded=allow_embedded,
        )
    except MetadataError as exc:  # never empty after filtering: failed keys are problems
        problems += [p for p in exc.problems if str(p[0]).lower() not in failed]
    if problems:
        raise MetadataError.collect(problems, where="" if label == _TEXT else label)
    for message in _dapr_differences(component, props, md):
        _warn(f"jsnb: {message}", UserWarning)
    return md._from_manifest(_manifest(component, md, refs, props))


def _read(source: str | Path) -> tuple[str, str]:
    """The YAML text and a label for messages: the path, or _TEXT."""
    if isinstance(source, str) and not _looks_like_path(source):
        return source, _TEXT
    path = Path(source.strip() if isinstance(source, str) else source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "it is a directory; give the path of one manifest file"
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = str(exc)
    raise MetadataError(f"jsnb: cannot read component file {str(path)!r}: {reason}")


def _looks_like_path(text: str) -> bool:
    """One line naming a file, rather than YAML text (``key: value`` lines, flow style).

    A single line of anything else cannot be a manifest either, so it is read as
    the file name it most likely is (``pubsub``), for a "no such file" error.
    """
    line = text.strip()
    if not line or "\n" in line:
        return False
    return ": " not in line and not line.endswith(":") and line[0] not in "{[\"'"


def _load_yaml(text: str, label: str) -> list[Any]:
    # Comments blanked (keeping offsets, for line numbers): a chart's notes may show {{ }}.
    template = _TEMPLATE.search(_YAML_COMMENT.sub(lambda m: " " * len(m.group()), text))
    if template:
        line = text.count("\n", 0, template.start()) + 1
        # The action's first word only (".Values.nats.url", "include"), never a whole value.
        word = re.match(r"\{\{-?[ \t]*[^\s}]{0,60}", text[template.start() :])
        raise MetadataError(
            f"jsnb: {label} is a Helm template ({word.group() if word else '{{'} ... at line "
            f"{line}): render it first (helm template <release> <chart>) and load the output"
        )
    try:
        return [d for d in yaml.load_all(text, Loader=_DaprYAML) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MetadataError(f"jsnb: {label} is not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise MetadataError(f"jsnb: {label} is not valid YAML: {exc}") from None
    except RecursionError:
        raise MetadataError(f"jsnb: {label} is not valid YAML: nested too deeply") from None


def component_names(source: str | Path) -> list[str]:
    """The names of the ``pubsub.jetstream`` components in *source* ([] if none can be read).

    *source* is YAML text or a path, as for ``read_component(source, name=...)``: what a
    picker offers before that is asked for one.
    """
    try:
        docs = _load_yaml(*_read(source))
    except MetadataError:
        return []
    return [
        _component_name(d)
        for d in docs
        if isinstance(d, dict)
        and d.get("kind") == "Component"
        and isinstance(d.get("spec"), dict)
        and d["spec"].get("type") == COMPONENT_TYPE
    ]


def _component_name(component: Mapping[str, Any]) -> str:
    meta = component.get("metadata")
    return _go_text(meta.get("name")) if isinstance(meta, Mapping) else ""


def _pick_component(docs: list[Any], label: str, name: str | None) -> dict[str, Any]:
    components = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Component"]
    if not components:
        raise MetadataError(f"jsnb: {label} {_not_a_manifest(docs)}")
    for component in components:
        if "spec" in component and not isinstance(component["spec"], dict):
            raise MetadataError(
                f"jsnb: {label}: the Component's 'spec' must be a mapping, "
                f"not {type(component['spec']).__name__}"
            )
    ours = [c for c in components if (c.get("spec") or {}).get("type") == COMPONENT_TYPE]
    names = ", ".join(repr(_component_name(c)) for c in ours)
    if name is not None:
        chosen = [c for c in ours if _component_name(c) == name]
        if not chosen:
            held = f"it holds {names}" if ours else f"it holds no {COMPONENT_TYPE} component"
            raise MetadataError(f"jsnb: {label} has no {COMPONENT_TYPE} named {name!r}; {held}")
        if len(chosen) > 1:
            raise MetadataError(
                f"jsnb: {label} holds {len(chosen)} {COMPONENT_TYPE} components named "
                f"{name!r}, which Dapr refuses too: give each its own metadata.name"
            )
        ours = chosen
    if len(ours) > 1 and name is None and len(set(map(_component_name, ours))) < len(ours):
        raise MetadataError(
            f"jsnb: {label} holds {len(ours)} {COMPONENT_TYPE} components ({names}) and some "
            "share a name, which Dapr refuses too: give each its own metadata.name"
        )
    if len(ours) > 1:
        raise MetadataError(
            f"jsnb: {label} holds {len(ours)} {COMPONENT_TYPE} components ({names}); "
            "pick one with name=..."
        )
    if ours:
        return ours[0]
    component = components[0]
    if "spec" not in component or not isinstance(component["spec"], dict):
        raise MetadataError(f"jsnb: {label}: the Component has no 'spec' section")
    raise MetadataError(
        f"jsnb: {label}: spec.type is {component['spec'].get('type')!r}, "
        f"expected {COMPONENT_TYPE!r}"
    )


def _not_a_manifest(docs: list[Any]) -> str:
    """Why *docs* hold no Component, and what would make them one."""
    header = "apiVersion: dapr.io/v1alpha1, kind: Component, metadata: {name: ...}"
    first = docs[0] if docs else None
    if isinstance(first, dict) and "kind" not in first and ("spec" in first or "type" in first):
        part = "a 'spec:' snippet" if "spec" in first else "the inside of a 'spec:' section"
        return f"is {part}, not a whole manifest: add the header ({header})"
    if isinstance(first, list) and all(isinstance(e, dict) and "name" in e for e in first):
        return (
            "is a bare list of name/value entries: put it under spec.metadata of a "
            f"Component ({header}, spec: {{type: {COMPONENT_TYPE}, version: v1}})"
        )
    kinds = ", ".join(repr(d.get("kind")) for d in docs if isinstance(d, dict)) or "none"
    return f"has no 'kind: Component' document (found kind {kinds})"


def _entries(
    component: Mapping[str, Any],
    secrets: Secrets | None,
    unmask: Mapping[str, Any],
    problems: list[tuple[str | None, str]],
) -> tuple[dict[str, Any], dict[str, Mapping[str, Any]]]:
    """``spec.metadata`` as a property map, references resolved as the Dapr runtime does.

    Problems are appended to *problems*; the second result holds the reference
    entries by name.
    """
    entries = component["spec"].get("metadata") or []
    if not isinstance(entries, list):
        problems.append((None, "spec.metadata must be a list of name/value entries"))
        return {}, {}
    props: dict[str, Any] = {}
    refs: dict[str, Mapping[str, Any]] = {}
    store = _secret_store(component) or "its secret store"
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "name" not in entry:
            # Never show the entry itself: its value may be a secret.
            has = f"keys {', '.join(map(str, entry))}" if isinstance(entry, dict) else "no keys"
            problems.append((None, f"spec.metadata entry {i} needs a 'name' (it has {has})"))
            continue
        key = _go_text(entry["name"])
        if key in props:
            _warn(f"jsnb: {key} is given twice; the last one is used, as in Dapr", UserWarning)
        try:
            props[key], ref = _value(key, entry, secrets, store, unmask)
        except MetadataError as exc:
            problems.append((key, str(exc)))
            continue
        if ref is not None:
            refs[key] = {ref: entry[ref]}
    return props, refs


def _value(
    key: str,
    entry: Mapping[str, Any],
    secrets: Secrets | None,
    store: str,
    unmask: Mapping[str, Any],
) -> tuple[Any, str | None]:
    """An entry's value, and which reference gave it (``secretKeyRef``, ``envRef``, none)."""
    if "secretKeyRef" in entry:  # Dapr replaces any value with the secret
        return _secret(key, entry["secretKeyRef"], secrets, store), "secretKeyRef"
    value = entry.get("value")
    if value is None and "envRef" in entry:  # Dapr reads envRef only without a value
        return _env(key, entry["envRef"]), "envRef"
    if "value" not in entry:
        _warn(
            f"jsnb: {key} has no 'value' (nor envRef or secretKeyRef); Dapr reads it as an "
            "empty value, and so does jsnb",
            UserWarning,
        )
    return _unmasked(key, value, unmask), None


def _secret(key: str, ref: Any, secrets: Secrets | None, store: str) -> Any:
    if not isinstance(ref, Mapping) or not _go_text(ref.get("name")):
        raise MetadataError(f"{key}: secretKeyRef needs a 'name' (and usually a 'key')")
    secret = _go_text(ref["name"])
    item = _go_text(ref.get("key")) or secret  # Dapr: no key means the key named like the secret
    where = f"secret {secret!r}, key {item!r}"
    if secrets is None:
        raise MetadataError(
            f"{key} uses secretKeyRef ({where}), which Dapr resolves from {store}; jsnb has "
            f"no secret store: pass secrets={{{secret!r}: {{{item!r}: ...}}}} (or a function "
            "(secret, key) -> value), or give the value directly"
        )
    try:
        value = secrets(secret, item) if callable(secrets) else secrets[secret][item]
    except LookupError:
        value = None
    if value is None:
        raise MetadataError(f"{key}: secretKeyRef ({where}) is not in the secrets given")
    return value


def _env(key: str, name: Any) -> str:
    name = _go_text(name)
    value = os.environ.get(name)
    if value is None:
        _warn(
            f"jsnb: {key} reads the environment variable {name!r}, which is not set; "
            "the value is empty, as in Dapr",
            UserWarning,
        )
    return value or ""


def _unmasked(key: str, value: Any, unmask: Mapping[str, Any]) -> Any:
    """*value*, unless it is what an export without ``reveal_secrets`` wrote."""
    try:
        info = Metadata.field_info(key)
    except KeyError:
        return value
    if info.secret and value == MASK:
        if unmask.get(info.key):
            return unmask[info.key]
        raise MetadataError(
            f"{info.key} is {MASK!r}: the value was masked on export; give the real value, or "
            "export with reveal_secrets=True"
        )
    if info.key == "natsURL" and isinstance(value, str) and _MASKED_URL.search(value):
        current = str(unmask.get(info.key, ""))
        if current and hide_userinfo(current) == value:
            return current
        raise MetadataError(
            f"natsURL {hide_userinfo(value)!r} has its credentials masked on export (***); give "
            "the real URL, or export with reveal_secrets=True"
        )
    return value


def _secret_store(component: Mapping[str, Any]) -> str:
    auth = component.get("auth")
    return str(auth.get("secretStore") or "") if isinstance(auth, Mapping) else ""


def _manifest(
    component: Mapping[str, Any],
    md: Metadata,
    refs: Mapping[str, Mapping[str, Any]],
    props: Mapping[str, Any],
) -> Manifest:
    found = component.get("metadata")
    meta: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    scopes = component.get("scopes")
    values = md.as_properties(defaults=True)
    return Manifest(
        name=_component_name(component) or DEFAULT_NAME,
        namespace=_go_text(meta.get("namespace")),
        scopes=tuple(map(_go_text, scopes)) if isinstance(scopes, list) else (),
        secret_store=_secret_store(component),
        refs={
            info.key: Ref(entry, _digest(values[info.key]))
            for key, entry in refs.items()
            if (info := _field(key)) is not None
        },
        spelled=frozenset(info.key for key in props if (info := _field(key.strip())) is not None),
    )


def _field(key: str) -> Any:
    try:
        return Metadata.field_info(key)
    except KeyError:
        return None


# -- where Dapr reads a manifest differently ---------------------------------------------


def _dapr_differences(
    component: Mapping[str, Any], props: Mapping[str, Any], md: Metadata
) -> Iterator[str]:
    """What current Dapr would refuse, or read differently, in a manifest jsnb accepted.

    Seed-era keys and unknown keys are warned about by ``from_properties``.
    """
    version = component["spec"].get("version")
    if str(version or "").lower() not in _DAPR_VERSIONS:  # Dapr's registry lowercases it
        yield (
            f"spec.version {version!r}: Dapr has only v1 of {COMPONENT_TYPE} and fails to "
            "load this component; jsnb reads it as v1: write version: v1"
        )
    lowered = {key.strip().lower(): (key, value) for key, value in props.items()}
    for key in props:
        if key != key.strip():
            yield f"{key!r}: Dapr does not match a key with spaces around it and ignores it"
        elif key.lower() == "concurrencymode" and key != "concurrencyMode":
            # Dapr looks this one key up by its exact spelling, unlike all the others.
            yield (
                f"{key!r}: Dapr reads only the exact spelling 'concurrencyMode' and ignores "
                f"{key!r}, so it runs single; jsnb reads it: write 'concurrencyMode'"
            )
    yield from _enum_differences(lowered)
    yield from _retry_key_differences(props)
    if "deliverpolicy" not in lowered and md.deliver_policy in (
        DeliverPolicy.SEQUENCE,
        DeliverPolicy.TIME,
    ):
        start = "startSequence" if md.deliver_policy is DeliverPolicy.SEQUENCE else "startTime"
        yield (
            f"no deliverPolicy: Dapr defaults to 'all' and nats-server then refuses the "
            f"subscription because {start} is set; jsnb reads deliverPolicy "
            f"{md.deliver_policy.value!r}: add '- {{name: deliverPolicy, value: "
            f"{md.deliver_policy.value}}}'"
        )
    for lower, (key, value) in lowered.items():
        info = _field(lower)
        if info is not None:
            yield from _value_differences(info, value)
            if not info.upstream and value not in (None, ""):
                yield f"{key} is a jsnb extension: Dapr ignores it"
    if md.embedded:
        yield (
            "natsURL 'embedded' (or none) starts jsnb's own server; Dapr cannot: it needs "
            "a server URL such as nats://localhost:4222"
        )


def _retry_key_differences(props: Mapping[str, Any]) -> Iterator[str]:
    """Upstream's unused retry decoder still fails Init on a bad ``backOff*`` value."""
    for key, value in props.items():
        if not key.startswith("backOff") or key == "backOff":  # its prefix is case-sensitive
            continue
        text = "" if value is None else str(value).strip()
        if key == "backOffPolicy":
            valid = text.lower() in ("constant", "exponential")
        elif key in ("backOffMaxRetries",):
            valid = bool(re.fullmatch(r"[+-]?[0-9]+", text))
        elif key in ("backOffMultiplier", "backOffRandomizationFactor"):
            valid = bool(re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", text))
        else:  # backOffDuration, ...Interval, backOffMaxElapsedTime: a duration or ms
            try:
                parse_duration(text)
            except ValueError:
                valid = False
            else:
                valid = bool(text)  # "" is an error there, unlike in the component's own keys
        if not valid:
            yield (
                f"{key} {value!r}: Dapr's Init fails on it (its retry decoder reads every "
                "backOff* key, though the component never uses them); jsnb ignores it: fix or "
                "drop it"
            )


# The enum keys Dapr compares as written, and what each reads as when empty.
_ENUM_DEFAULTS = {
    "deliverpolicy": "all",
    "ackpolicy": "explicit",
    "concurrencymode": "single",
    "concurrency": "single",
}


def _enum_differences(lowered: Mapping[str, tuple[str, Any]]) -> Iterator[str]:
    """Enum values Dapr compares case-sensitively, where jsnb ignores case and spaces."""
    mode = lowered.get("concurrencymode", ("", None))
    for lower in _ENUM_DEFAULTS:
        if lower not in lowered:
            continue
        key, value = lowered[lower]
        if not isinstance(value, str) or value == value.strip().lower():
            continue
        # What jsnb reads: the word, or for spaces alone the default (Dapr: not empty).
        word = value.strip().lower() or _ENUM_DEFAULTS[lower]
        if lower == "concurrencymode" and key != "concurrencyMode":
            continue  # Dapr ignores the key (said above), so not its value
        if lower == "deliverpolicy":
            effect = f"Dapr's Init fails (deliver policy {value} is not one of: all, ...)"
        elif lower == "ackpolicy":
            if word == "explicit":
                continue  # Dapr falls back to explicit for any spelling it does not know
            effect = "Dapr reads it as 'explicit' (it falls back to explicit for any other word)"
        elif lower == "concurrencymode":
            effect = "Dapr's Init fails (invalid concurrencyMode)"
        elif mode[0] == "concurrencyMode" and mode[1] not in (None, ""):
            continue  # a concurrencyMode overrides it in Dapr too, unless empty
        else:
            effect = "Dapr selects no handler and its Subscribe fails"
        yield f"{key} {value!r}: {effect}; jsnb reads {word!r}: write {word!r}"


# What Dapr does with spaces around a value, by kind: its decoder trims only booleans
# and backOff's parts (enums are compared as written: _enum_differences says so).
_SPACES_KEPT = {
    Kind.STR: "Dapr passes the spaces on",
    Kind.NAME: "Dapr passes the spaces on, and nats-server refuses such a name",
    Kind.PATH: "Dapr looks for a file with the spaces in its name",
    Kind.SECRET: "Dapr sends the spaces with it, so the server would not accept it",
    Kind.INT: "Dapr's Init fails (strconv: invalid syntax)",
    Kind.UNIX_TIME: "Dapr's Init fails (strconv: invalid syntax)",
    Kind.DURATION: "Dapr's Init fails (time: invalid duration)",
}


def _value_differences(info: FieldInfo, value: Any) -> Iterator[str]:
    """Values jsnb reads that Dapr's decoder refuses or reads otherwise."""
    key, kind = info.key, info.kind
    text = value.strip() if isinstance(value, str) else None
    numeric = kind in (Kind.INT, Kind.UNIX_TIME)
    if text and value != text and kind in _SPACES_KEPT:
        shown = "(value hidden)" if info.secret else repr(hide_userinfo(value))
        yield (
            f"{key} {shown} has spaces around it: {_SPACES_KEPT[kind]}; jsnb trims them: "
            "remove them"
        )
    elif text == "" and value != "" and kind in (Kind.INT, Kind.DURATION, Kind.UNIX_TIME):
        yield f"{key} is only spaces: Dapr's Init fails on it; jsnb reads it as unset: drop it"
    if info.unsigned and text and text[0] in "+-" and text[1:].isdigit():
        yield (
            f"{key} {value!r}: Dapr reads it as an unsigned number and its Init fails on the "
            f"sign; jsnb reads {int(text)}: drop the {text[0]!r}"
        )
    if numeric and text and re.fullmatch(r"[+-]?0[0-9_]*[1-9][0-9_]*", text):
        yield (
            f"{key} {value!r}: Dapr reads a leading zero as octal; jsnb reads decimal: drop "
            "the leading zero"
        )
    if kind is Kind.DURATION and isinstance(value, float) and not value.is_integer():
        yield (
            f"{key} {value!r}: Dapr refuses a number with a fraction (time: missing unit); "
            f"jsnb reads {value!r} seconds: write '{value}s'"
        )
    elif kind is Kind.DURATIONS and (
        isinstance(value, list | tuple | float)
        or (isinstance(value, str) and re.search(r"[\[\]'\"]", value))
    ):
        yield (
            f"{key} {value!r}: Dapr reads one comma-separated string of durations and fails "
            "on brackets, quotes and bare fractions; write it like '50ms, 1s, 10s'"
        )
    elif kind is Kind.UNIX_TIME and (isinstance(value, date) or (text and parse_timestamp(text))):
        yield (
            f"{key} is a YAML timestamp: Dapr wants Unix seconds and its Init fails; write "
            "the Unix seconds instead"
        )
    elif kind is Kind.UNIX_TIME and (value is None or value == ""):
        yield (
            f"{key} is empty: jsnb reads no start time, but Dapr sets one at 1970 for any "
            "value, which nats-server refuses unless deliverPolicy is time: drop the entry"
        )
    placeholder = _PLACEHOLDER.search(value) if isinstance(value, str) else None
    if placeholder and kind in (Kind.STR, Kind.NAME):
        yield (
            f"{key} {hide_userinfo(value)!r}: Dapr replaces {placeholder.group()} with the "
            "app's own value; jsnb reads it as written: write the value itself"
        )


# Dapr's runtime substitutes these in metadata values (runtime/meta/meta.go).
_PLACEHOLDER = re.compile(r"\{(?:uuid|podName|namespace|appID)\}")


# -- writing ----------------------------------------------------------------------------


def render_component(md: Metadata, name: str | None = None, *, reveal_secrets: bool = False) -> str:
    """*md* as a Component manifest, with the identity and references it was read with."""
    manifest = md.manifest or Manifest()
    props = md.as_properties(reveal_secrets=reveal_secrets)
    values = md.as_properties(defaults=True)
    shown = md.as_properties(reveal_secrets=reveal_secrets, defaults=True)
    entries: list[dict[str, Any]] = []
    for key in values:  # the field table's order
        ref = manifest.refs.get(key)
        if ref is not None and ref.digest == _digest(values[key]):
            entries.append({"name": key, **ref.entry})
        elif key in props or (key in manifest.spelled and ref is None):
            entries.append({"name": key, "value": shown[key]})
    meta: dict[str, Any] = {"name": name or manifest.name}
    if manifest.namespace:
        meta["namespace"] = manifest.namespace
    doc: dict[str, Any] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": meta,
        "spec": {"type": COMPONENT_TYPE, "version": "v1", "metadata": entries},
    }
    if manifest.secret_store:
        doc["auth"] = {"secretStore": manifest.secret_store}
    if manifest.scopes:
        doc["scopes"] = list(manifest.scopes)
    return yaml.dump(doc, Dumper=_DaprDumper, sort_keys=False, allow_unicode=True)
