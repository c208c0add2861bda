"""Reading Dapr ``Component`` manifests of type ``pubsub.jetstream``.

>>> load_component_properties('''
... apiVersion: dapr.io/v1alpha1
... kind: Component
... metadata: {name: js}
... spec:
...   type: pubsub.jetstream
...   version: v1
...   metadata:
...   - {name: natsURL, value: "nats://localhost:4222"}
... ''')
{'natsURL': 'nats://localhost:4222'}

Only the manifest's shape is checked here; the values are parsed by
:meth:`jsnb.Metadata.from_properties`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from jsnb.errors import MetadataError

COMPONENT_TYPE = "pubsub.jetstream"


def _read(source: str | Path) -> tuple[str, str]:
    """The YAML text and a label for messages: a path is read, other text is YAML."""
    if isinstance(source, Path) or ("\n" not in source and source.endswith((".yaml", ".yml"))):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            raise MetadataError(f"jsnb: cannot read component file {str(path)!r}: {exc}") from None
    return source, "component YAML"


def _pick_component(docs: list[Any], label: str) -> dict[str, Any]:
    components = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Component"]
    if not components:
        kinds = ", ".join(repr(d.get("kind")) for d in docs if isinstance(d, dict)) or "none"
        raise MetadataError(f"jsnb: {label} has no 'kind: Component' document (found kind {kinds})")
    for component in components:
        if "spec" in component and not isinstance(component["spec"], dict):
            raise MetadataError(
                f"jsnb: {label}: the Component's 'spec' must be a mapping, "
                f"not {type(component['spec']).__name__}"
            )
    ours = [c for c in components if (c.get("spec") or {}).get("type") == COMPONENT_TYPE]
    if len(ours) > 1:
        raise MetadataError(
            f"jsnb: {label} holds {len(ours)} {COMPONENT_TYPE} components; keep one"
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


def load_component_properties(source: str | Path) -> dict[str, Any]:
    """The ``spec.metadata`` name/value list of a manifest as a mapping.

    Errors say what is wrong and where: malformed YAML with its line, a
    component of another type, a missing ``spec``, ``secretKeyRef`` entries
    (a Dapr secret store resolves those; jsnb has none, so pass the value).
    """
    text, label = _read(source)
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MetadataError(f"jsnb: {label} is not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise MetadataError(f"jsnb: {label} is not valid YAML: {exc}") from None
    except RecursionError:
        raise MetadataError(f"jsnb: {label} is not valid YAML: nested too deeply") from None
    component = _pick_component(docs, label)
    entries = component["spec"].get("metadata") or []
    if not isinstance(entries, list):
        raise MetadataError(f"jsnb: {label}: spec.metadata must be a list of name/value entries")
    props: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            raise MetadataError(
                f"jsnb: {label}: spec.metadata entry {i + 1} needs a 'name' (got {entry!r})"
            )
        name = str(entry["name"])
        if "secretKeyRef" in entry:
            raise MetadataError(
                f"jsnb: {label}: {name} uses secretKeyRef, which a Dapr secret store resolves; "
                "jsnb has no secret store, so give the value directly (for example from an "
                "environment variable) instead",
                key=name,
            )
        if "value" not in entry:
            raise MetadataError(f"jsnb: {label}: {name} has no 'value'", key=name)
        props[name] = entry["value"]
    return props
