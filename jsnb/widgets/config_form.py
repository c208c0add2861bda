"""A form for the component metadata, built from the field table, checked as you type.

>>> from jsnb.widgets.config_form import ConfigForm
>>> form = ConfigForm({"natsURL": "embedded"})
>>> form.controls["ackWait"].value = "2s"
>>> form.metadata.ack_wait
datetime.timedelta(seconds=2)
>>> form.controls["ackWait"].value = "soon"  # shown in red next to the field
>>> sorted(form.errors), form.metadata.ack_wait  # .metadata keeps the last valid one
(['ackWait'], datetime.timedelta(seconds=2))

Every control comes from ``Metadata.fields_table()``: a field's kind picks the
widget, its group the section, its help text the tooltip. Each change is
parsed by ``Metadata.from_properties``, so the form accepts exactly what the
component does and shows the component's own messages. Secrets live only in
the password boxes; summaries, exports (unless asked) and ``repr`` mask them.
``value`` is a plain traitlet, not synced to the browser, for the same reason.
"""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets

from jsnb.component_yaml import Secrets, component_names, read_component
from jsnb.display import ERROR_COLOUR, MUTED_COLOUR, OK_COLOUR
from jsnb.durations import format_duration, parse_duration
from jsnb.errors import InvalidArgumentError, MetadataError
from jsnb.metadata import (
    FieldInfo,
    Kind,
    Metadata,
    format_value,
    hide_userinfo,
    iter_groups,
    restore_userinfo,
)

__all__ = ["ConfigForm"]

_ERROR_STYLE = f"color:{ERROR_COLOUR}"
_VALID_STYLE = f"color:{OK_COLOUR}"
_MUTED_STYLE = f"color:{MUTED_COLOUR}"
_CONTROL_LAYOUT = {"width": "34em"}
_DESCRIPTION_STYLE = {"description_width": "10em"}
# A browser's Number holds integers exactly only up to 2**53 - 1.
_INT_MAX = 2**53 - 1
_PLACEHOLDERS = {
    Kind.DURATION: "e.g. 10s, 1m30s, 500ms",
    Kind.DURATIONS: "e.g. 50ms, 1s, 10s",
    Kind.UNIX_TIME: "Unix seconds; empty = unset",
    Kind.PATH: "path to a PEM file",
    Kind.KEEP_ALIVE: "off, auto, or e.g. 5s",
}
_DEFAULTS = {info.key: format_value(info, info.default) for info in Metadata.fields_table()}


def _make_control(info: FieldInfo) -> widgets.ValueWidget:
    """The widget for one field, chosen by its kind."""
    common: dict[str, Any] = {
        "description": info.key,
        "tooltip": info.help,
        "style": _DESCRIPTION_STYLE,
        "layout": widgets.Layout(**_CONTROL_LAYOUT),
    }
    if info.kind is Kind.ENUM:
        return widgets.Dropdown(options=info.choices, **common)
    if info.kind is Kind.BOOL:
        return widgets.Checkbox(**common)
    if info.kind is Kind.INT and info.minimum is None:
        return widgets.IntText(**common)
    if info.kind is Kind.INT:
        return widgets.BoundedIntText(min=info.minimum, max=_INT_MAX, **common)
    if info.kind is Kind.SECRET:
        return widgets.Password(**common)
    # natsURL updates when typing ends (Enter, or leaving the box), so credentials typed
    # into it are masked whole, not one keystroke at a time.
    return widgets.Text(
        placeholder=_PLACEHOLDERS.get(info.kind, ""),
        continuous_update=info.key != "natsURL",
        **common,
    )


def _control_value(info: FieldInfo, value: Any) -> Any:
    """A field value as its control holds it; ``from_properties`` reads these back."""
    if info.kind is Kind.BOOL:
        return bool(value)
    if info.kind is Kind.INT:
        return int(value)
    return format_value(info, value)


def _delays(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_delay(text: str) -> str:
    """*text* with one more backOff delay, twice the last one (``1s`` to start)."""
    parts = _delays(text)
    try:
        last = parse_duration(parts[-1]) if parts else None
    except ValueError:
        return text  # the field's error label already says what is wrong
    return ", ".join([*parts, format_duration(last * 2) if last else "1s"])


def _drop_delay(text: str) -> str:
    return ", ".join(_delays(text)[:-1])


def _shown_fields(keys: Sequence[str] | None) -> tuple[FieldInfo, ...]:
    table = Metadata.fields_table()
    if keys is None:
        return table
    wanted = set()
    for key in keys:
        try:
            wanted.add(Metadata.field_info(key).key)
        except KeyError:
            known = ", ".join(info.key for info in table)
            raise InvalidArgumentError(
                f"jsnb: {key!r} is not a component property; known: {known}"
            ) from None
    return tuple(info for info in table if info.key in wanted)


def _error_html(message: str) -> str:
    return f'<span style="{_ERROR_STYLE}">{html.escape(message.removeprefix("jsnb: "))}</span>'


class ConfigForm(widgets.VBox):
    """Edit ``pubsub.jetstream`` metadata: one control per field, validated as you type.

    Args:
        metadata: Initial values (a ``Metadata`` or Dapr's property map);
            without it every field starts at its default and ``natsURL`` is
            ``embedded``: the metadata ``JetStreamPubSub({})`` runs with.
        keys: Show only these fields (a sub-form, e.g. retry settings);
            the others keep their values from *base*.
        base: Values of the fields not shown; defaults to *metadata*.
        yaml: Show the YAML export / import box; a form embedded in a tool
            that owns the rest of the metadata (the redelivery lab) leaves it out.
        secrets: What *Import YAML* resolves ``secretKeyRef`` entries from, as
            in ``Metadata.from_component_yaml`` (also settable as ``.secrets``).

    ``controls`` maps each shown Dapr key to its widget, ``error_labels`` to
    its red message line. ``metadata`` is the last valid ``Metadata``,
    ``errors`` the current problems by key, and ``value`` the last valid
    property map; its observers fire only on valid changes.
    """

    value = traitlets.Dict(
        read_only=True, help="The last valid properties, secrets included (not synced)"
    )

    def __init__(
        self,
        metadata: Metadata | Mapping[str, Any] | None = None,
        *,
        keys: Sequence[str] | None = None,
        base: Metadata | Mapping[str, Any] | None = None,
        yaml: bool = True,
        secrets: Secrets | None = None,
    ) -> None:
        self.secrets = secrets
        base_md = Metadata.from_properties(base, allow_embedded=True) if base is not None else None
        if metadata is not None:
            start = Metadata.from_properties(metadata, allow_embedded=True)
        else:  # as JetStreamPubSub({}) reads nothing: every default, the embedded server
            start = base_md or Metadata.from_properties({}, allow_embedded=True)
        self._base = base_md or start
        self._metadata: Metadata | None = None
        self._errors: dict[str, str] = {}
        self._loading = False
        self._exported = ""
        self._url = ""  # the natsURL behind a masked control, credentials included

        shown = _shown_fields(keys)
        self.controls: dict[str, widgets.ValueWidget] = {
            info.key: _make_control(info) for info in shown
        }
        self.error_labels = {info.key: widgets.HTML() for info in shown}
        self.backoff_buttons: dict[str, widgets.Button] = {}
        self.sections = self._sections()
        self.summary = widgets.HTML()
        self.notes = widgets.HTML()

        self.yaml_text = widgets.Textarea(
            placeholder="Dapr Component YAML: Export fills this in; paste one here to Import",
            layout=widgets.Layout(width="100%", height="14em"),
        )
        self.reveal_secrets = widgets.Checkbox(description="reveal secrets", indent=False)
        self.export_button = widgets.Button(description="Export YAML", icon="download")
        self.import_button = widgets.Button(description="Import YAML", icon="upload")
        self.export_button.on_click(lambda _: self._export())
        self.import_button.on_click(lambda _: self._import())
        self.reveal_secrets.observe(self._on_reveal, names="value")
        # Shown when the text holds several components (a rendered Helm chart): which one.
        self.component_picker = widgets.Dropdown(
            description="component", layout=widgets.Layout(display="none", width="auto")
        )
        yaml_box = widgets.VBox(
            [
                widgets.HBox(
                    [
                        self.export_button,
                        self.import_button,
                        self.component_picker,
                        self.reveal_secrets,
                    ]
                ),
                self.yaml_text,
            ]
        )
        children = [self.sections, self.summary, self.notes]
        super().__init__(children=[*children, yaml_box] if yaml else children)
        self._load(start)
        for control in self.controls.values():
            control.observe(self._on_change, names="value")

    @classmethod
    def from_yaml(
        cls, source: str | Path, *, name: str | None = None, secrets: Secrets | None = None
    ) -> ConfigForm:
        """A form loaded from a Dapr Component manifest (YAML text or a file path).

        *name* and *secrets* are those of ``Metadata.from_component_yaml``.
        """
        return cls(
            Metadata.from_component_yaml(source, name=name, secrets=secrets, allow_embedded=True),
            secrets=secrets,
        )

    # -- layout ------------------------------------------------------------------------

    def _sections(self) -> widgets.Accordion:
        titles, pages = [], []
        for group, infos in iter_groups():
            rows = [self._row(info) for info in infos if info.key in self.controls]
            if rows:
                titles.append(group)
                pages.append(widgets.VBox(rows))
        self._groups = titles
        return widgets.Accordion(children=pages, titles=tuple(titles), selected_index=0)

    def open_section(self, group: str) -> None:
        """Expand one section (connection, auth, consumer, delivery or retry) if shown."""
        if group in self._groups:
            self.sections.selected_index = self._groups.index(group)

    def _row(self, info: FieldInfo) -> widgets.HBox:
        control, label = self.controls[info.key], self.error_labels[info.key]
        if info.kind is not Kind.DURATIONS:
            return widgets.HBox([control, label])
        small = widgets.Layout(width="2.5em")
        drop = widgets.Button(description="-", tooltip="drop the last delay", layout=small)
        add = widgets.Button(description="+", tooltip="add a delay, twice the last", layout=small)
        drop.on_click(lambda _: setattr(control, "value", _drop_delay(control.value)))
        add.on_click(lambda _: setattr(control, "value", _add_delay(control.value)))
        self.backoff_buttons = {"-": drop, "+": add}
        return widgets.HBox([control, drop, add, label])

    # -- state -------------------------------------------------------------------------

    @property
    def metadata(self) -> Metadata:
        """The last valid metadata; ``MetadataError`` if the form never was valid."""
        if self._metadata is None:
            raise MetadataError.collect((key or None, m) for key, m in self._errors.items())
        return self._metadata

    @property
    def errors(self) -> dict[str, str]:
        """Current problems, by Dapr key ("" for one no field owns); empty when valid."""
        return dict(self._errors)

    def set_metadata(self, metadata: Metadata | Mapping[str, Any]) -> None:
        """Show *metadata* in every control (and keep it for the fields not shown)."""
        md = Metadata.from_properties(metadata, allow_embedded=True)
        self._base = md
        self._load(md)

    def _load(self, md: Metadata | None, notes: Sequence[str] = ()) -> None:
        self._loading = True
        try:
            for key, control in self.controls.items():
                info = Metadata.field_info(key)
                value = _control_value(
                    info, getattr(md, info.attr) if md is not None else info.default
                )
                if key == "natsURL":
                    # Credentials in the URL show masked, kept while the text is unedited.
                    self._url = value if hide_userinfo(value) != value else ""
                    value = hide_userinfo(value)
                control.value = value
        finally:
            self._loading = False
        self._validate(notes=notes)

    def _properties(self) -> dict[str, Any]:
        """The property map the controls describe, with the hidden fields from the base."""
        if self._base is not None:
            hidden = self._base.as_properties(reveal_secrets=True, defaults=True)
        else:
            hidden = _DEFAULTS
        # Defaults stay explicit (no deliverPolicy guessed from start options) but an
        # empty natsURL is dropped, so a sub-form without it means 'embedded'.
        props: dict[str, Any] = {
            k: v for k, v in hidden.items() if k not in self.controls and v != ""
        }
        props.update({key: control.value for key, control in self.controls.items()})
        if self._url and "***" in str(props.get("natsURL", "")):
            props["natsURL"] = restore_userinfo(str(props["natsURL"]), self._url)
        return props

    # -- validation --------------------------------------------------------------------

    def _on_change(self, change: Mapping[str, Any]) -> None:
        url = self.controls.get("natsURL")
        if change.get("owner") is url and url is not None and hide_userinfo(url.value) != url.value:
            # Typed credentials are kept behind the mask at once: the widget's state is
            # what a saved notebook stores.
            self._url = url.value
            url.value = hide_userinfo(self._url)  # observed again: validates then
            return
        if not self._loading:
            self._validate()

    def _check(self, props: dict[str, Any]) -> tuple[Metadata | None, dict[str, str], list[str]]:
        """Parse *props*: the metadata and its warnings, or every problem by key."""
        errors: dict[str, str] = {}
        if re.search(r"\*\*\*(@|$|,)", str(props.get("natsURL", ""))):
            errors["natsURL"] = (
                "natsURL shows masked credentials (***) the form has nothing to put back "
                "for: type them"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                md = Metadata.from_properties(props, allow_embedded=True)
            except MetadataError as exc:
                for key, problem in exc.problems:
                    errors.setdefault(key or "", problem)
                return None, errors, []
        if errors:
            return None, errors, []
        return md, {}, [str(w.message) for w in caught]

    def _validate(self, *, notes: Sequence[str] = (), messages: Sequence[str] = ()) -> None:
        md, self._errors, found = self._check(self._properties())
        if md is not None:
            if self._base.manifest is not None:  # export as the manifest it came from
                md = md._from_manifest(self._base.manifest)
            self._metadata = md
            self.set_trait("value", md.as_properties(reveal_secrets=True))
        self._render([*notes, *found], messages)

    def _render(self, notes: Sequence[str], messages: Sequence[str] = ()) -> None:
        for key, label in self.error_labels.items():
            label.value = _error_html(self._errors[key]) if key in self._errors else ""
        shown_errors = [k for k in self._errors if k in self.controls]
        if shown_errors:  # open the section holding the first error, so it is seen
            self.open_section(Metadata.field_info(shown_errors[0]).group)
        if self._errors:
            lines = [_error_html(m) for m in self._errors.values()]
        else:
            assert self._metadata is not None
            shown = ", ".join(
                f"{k}={v}" for k, v in self._metadata.as_properties(reveal_secrets=False).items()
            )
            lines = [f'<span style="{_VALID_STYLE}">valid</span>: {html.escape(shown)}']
        lines += [_error_html(m) for m in messages]
        self.summary.value = "<br>".join(lines)
        self.notes.value = "<br>".join(
            f'<span style="{_MUTED_STYLE}">{html.escape(n.removeprefix("jsnb: "))}</span>'
            for n in notes
        )

    # -- YAML --------------------------------------------------------------------------

    def _export(self) -> None:
        if self._errors:
            self._validate(messages=["jsnb: fix the problems above before exporting"])
            return
        self._exported = self.metadata.to_component_yaml(reveal_secrets=self.reveal_secrets.value)
        self.yaml_text.value = self._exported

    def _on_reveal(self, _change: Mapping[str, Any]) -> None:
        """Re-export on a toggle, so unticking never leaves secrets in the text box."""
        if self._exported and self.yaml_text.value == self._exported:
            self.yaml_text.value = self._exported = ""
            self._export()

    def _import(self) -> None:
        """Load the text box; on problems, list every one and change nothing.

        An export without revealed secrets imports with the form's current ones.
        Text holding several components shows a picker first; Import again reads
        the one picked.
        """
        names = component_names(self.yaml_text.value)
        picker = self.component_picker
        # Several distinct names: which one (shared names are refused by the reader).
        several = len(names) > 1 and len(set(names)) == len(names)
        offered = [value for _, value in picker.options]
        stale = offered != names or picker.layout.display == "none"
        if several and (stale or picker.value is None):
            if stale:
                picker.options = [(n or "(no name)", n) for n in names]
                picker.value = None
            picker.layout.display = ""
            shown = ", ".join(n or "(no name)" for n in names)
            self._validate(
                messages=[
                    f"the text holds {len(names)} components ({shown}): pick one next to "
                    "Import YAML, then press it again"
                ]
            )
            return
        if not several:
            picker.layout.display = "none"
        name = picker.value if several else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                md = read_component(
                    self.yaml_text.value,
                    name=name,
                    secrets=self.secrets,
                    allow_embedded=True,
                    unmask=self._properties(),
                )
            except MetadataError as exc:
                problems = [m.removeprefix("jsnb: ") for _, m in exc.problems]
                if len(problems) == 1:
                    messages = [f"import failed: {str(exc).removeprefix('jsnb: ')}"]
                else:
                    messages = [f"import failed ({len(problems)} problems):", *problems]
                self._validate(messages=messages)
                return
        self._base = md
        self._load(md, notes=[str(w.message) for w in caught])

    # -- display -----------------------------------------------------------------------

    def __repr__(self) -> str:
        if self._errors:
            return f"<ConfigForm invalid: {', '.join(self._errors)}>"
        return f"<ConfigForm {self._metadata!r}>"
