"""ConfigForm, headless: built from the field table, driven through its controls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest
import yaml

from jsnb import DeliverPolicy, Metadata, MetadataError
from jsnb.metadata import GROUPS, MASK
from jsnb.widgets import ConfigForm

SECRETS = {"token": "tok-3f9a", "jwt": "eyJ-jwt-77", "seedKey": "SUA-seed-42"}


def edit(form: ConfigForm, *changes: tuple[str, Any]) -> None:
    for key, value in changes:
        form.controls[key].value = value


def watch(form: ConfigForm) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    form.observe(lambda change: seen.append(change["new"]), names="value")
    return seen


def descendants(widget: widgets.Widget) -> Iterator[widgets.Widget]:
    yield widget
    for child in getattr(widget, "children", ()):
        yield from descendants(child)


@pytest.fixture
def form() -> ConfigForm:
    return ConfigForm({"natsURL": "nats://localhost:4222"})


# -- built from the field table -------------------------------------------------------


def test_one_control_per_field_with_its_help_as_tooltip(form: ConfigForm) -> None:
    table = Metadata.fields_table()
    assert list(form.controls) == [info.key for info in table]
    for info in table:
        control = form.controls[info.key]
        assert control.description == info.key and control.tooltip == info.help
    assert form.sections.titles == GROUPS
    for page, group in zip(form.sections.children, GROUPS, strict=True):
        in_page = {w.description for w in descendants(page) if w in form.controls.values()}
        assert in_page == {info.key for info in table if info.group == group}


@pytest.mark.parametrize(
    ("key", "widget_type"),
    [
        pytest.param("deliverPolicy", widgets.Dropdown, id="enum-dropdown"),
        pytest.param("memoryStorage", widgets.Checkbox, id="bool-checkbox"),
        pytest.param("maxDeliver", widgets.BoundedIntText, id="int-bounded"),
        pytest.param("ackWait", widgets.Text, id="duration-text"),
        pytest.param("backOff", widgets.Text, id="duration-list-text"),
        pytest.param("startTime", widgets.Text, id="unix-time-text"),
        pytest.param("tls_client_cert", widgets.Text, id="path-text"),
        pytest.param("token", widgets.Password, id="token-password"),
        pytest.param("jwt", widgets.Password, id="jwt-password"),
        pytest.param("seedKey", widgets.Password, id="seed-password"),
    ],
)
def test_control_kind_follows_field_kind(form: ConfigForm, key: str, widget_type: type) -> None:
    assert type(form.controls[key]) is widget_type


def test_choices_and_minimums_come_from_the_table(form: ConfigForm) -> None:
    assert form.controls["ackPolicy"].options == ("explicit", "all", "none")
    assert form.controls["maxDeliver"].min == -1
    assert form.controls["replicas"].min == 0
    form.controls["replicas"].value = -3  # clamped to the minimum, as in the browser
    assert form.controls["replicas"].value == 0


# -- valid edits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param([("ackWait", "2s")], {"ack_wait": timedelta(seconds=2)}, id="duration"),
        pytest.param(
            [("backOff", "50ms, 1s, 10s")],
            {"back_off": (timedelta(milliseconds=50), timedelta(seconds=1), timedelta(seconds=10))},
            id="backoff-list",
        ),
        pytest.param([("maxDeliver", 5)], {"max_deliver": 5}, id="int"),
        pytest.param([("memoryStorage", True)], {"memory_storage": True}, id="bool"),
        pytest.param(
            [("deliverPolicy", "sequence"), ("startSequence", 7)],
            {"deliver_policy": DeliverPolicy.SEQUENCE, "start_sequence": 7},
            id="policy-then-start",
        ),
        pytest.param(
            [("deliverPolicy", "time"), ("startTime", "1700000000")],
            {"deliver_policy": DeliverPolicy.TIME, "start_time": 1_700_000_000},
            id="unix-time",
        ),
        pytest.param(
            [("heartbeat", "5s"), ("flowControl", True)],
            {"flow_control": True, "heartbeat": timedelta(seconds=5)},
            id="heartbeat-then-flow-control",
        ),
    ],
)
def test_valid_edits_update_metadata_and_value(
    form: ConfigForm, changes: list[tuple[str, Any]], expected: dict[str, Any]
) -> None:
    seen = watch(form)
    edit(form, *changes)
    assert {attr: getattr(form.metadata, attr) for attr in expected} == expected
    assert form.errors == {} and form.value == form.metadata.as_properties()
    assert seen and seen[-1] == form.value
    assert "valid" in form.summary.value
    assert all(label.value == "" for label in form.error_labels.values())


# -- invalid input: the message next to its field, nothing else changes ----------------


@pytest.mark.parametrize(
    ("changes", "key", "fragment"),
    [
        pytest.param([("ackWait", "soon")], "ackWait", "is not a duration", id="bad-duration"),
        pytest.param([("backOff", "1s, later")], "backOff", "is not a duration", id="bad-backoff"),
        pytest.param(
            [("backOff", "1s, 2s, 3s"), ("maxDeliver", 2)],
            "maxDeliver",
            "less than the number of backOff values (3)",
            id="max-deliver-below-backoff",
        ),
        pytest.param(
            [("flowControl", True)], "heartbeat", "flowControl true needs a heartbeat", id="fc"
        ),
        pytest.param(
            [("startSequence", 5)],
            "startSequence",
            "deliverPolicy is 'all'",
            id="start-sequence-without-policy",
        ),
        pytest.param(
            [("deliverPolicy", "time")], "startTime", "needs startTime", id="time-without-start"
        ),
        pytest.param([("natsURL", "")], "natsURL", "natsURL is missing", id="empty-url"),
        pytest.param([("natsURL", "http://x")], "natsURL", "not a NATS URL", id="http-url"),
        pytest.param([("streamName", "a.b")], "streamName", "not a valid NATS name", id="name"),
        pytest.param([("jwt", SECRETS["jwt"])], "seedKey", "seedKey is missing", id="jwt-alone"),
        pytest.param(
            [("ackWait", "1s"), ("inProgress", "2s")],
            "inProgress",
            "not shorter than the ack deadline (ackWait 1s)",
            id="keep-alive-too-slow",
        ),
        pytest.param(
            [("consumerMode", "pull"), ("rateLimit", 100)], "rateLimit", "push-only", id="pull"
        ),
    ],
)
def test_invalid_input_is_shown_next_to_its_field(
    form: ConfigForm, changes: list[tuple[str, Any]], key: str, fragment: str
) -> None:
    edit(form, *changes[:-1])
    before, seen = form.metadata, watch(form)
    edit(form, changes[-1])
    assert list(form.errors) == [key] and fragment in form.errors[key]
    label = form.error_labels[key].value
    assert fragment in label.replace("&#x27;", "'") and "color:#c62828" in label
    assert fragment in form.summary.value.replace("&#x27;", "'")
    assert form.metadata is before and seen == []
    assert repr(form) == f"<ConfigForm invalid: {key}>"


def test_independent_errors_show_together_and_clear_one_by_one(form: ConfigForm) -> None:
    seen = watch(form)
    edit(form, ("ackWait", "soon"), ("streamName", "a b"))
    assert set(form.errors) == {"ackWait", "streamName"}
    assert form.error_labels["ackWait"].value and form.error_labels["streamName"].value
    edit(form, ("ackWait", "3s"))
    assert set(form.errors) == {"streamName"} and form.error_labels["ackWait"].value == ""
    edit(form, ("streamName", "ORDERS"))
    assert form.errors == {} and len(seen) == 1
    assert (form.metadata.ack_wait, form.metadata.stream_name) == (timedelta(seconds=3), "ORDERS")


def test_warnings_show_in_the_muted_line_and_never_raise(form: ConfigForm) -> None:
    edit(
        form, ("backOff", "1s, 2s"), ("maxDeliver", 2)
    )  # pytest turns a leaked warning into an error
    assert "last backOff value is never used" in form.notes.value
    assert form.metadata.max_deliver == 2 and form.errors == {}
    edit(form, ("maxDeliver", 3))
    assert form.notes.value == ""


def test_an_empty_form_is_what_an_empty_component_runs() -> None:
    form = ConfigForm()
    assert form.errors == {} and form.controls["natsURL"].value == "embedded"
    assert form.metadata == Metadata.from_properties({}, allow_embedded=True)
    assert form.value == {"natsURL": "embedded"}
    edit(form, ("natsURL", ""))  # now invalid: the last valid metadata stays
    assert list(form.errors) == ["natsURL"] and form.metadata.embedded


def test_backoff_buttons_add_and_drop_delays(form: ConfigForm) -> None:
    add, drop = form.backoff_buttons["+"], form.backoff_buttons["-"]
    add.click()
    add.click()
    add.click()
    assert form.controls["backOff"].value == "1s, 2s, 4s"
    drop.click()
    assert form.metadata.back_off == (timedelta(seconds=1), timedelta(seconds=2))
    edit(form, ("backOff", "1s, oops"))
    add.click()  # a broken list is left for the user to fix
    assert form.controls["backOff"].value == "1s, oops"


# -- sub-forms and loading ----------------------------------------------------------------


def test_keys_subset_keeps_the_other_fields_from_base() -> None:
    base = {"natsURL": "nats://h:4222", "durableName": "lab", "token": SECRETS["token"]}
    form = ConfigForm(keys=["ackWait", "maxdeliver", "backOff"], base=base)
    assert list(form.controls) == ["ackWait", "maxDeliver", "backOff"]
    assert form.sections.titles == ("retry",)
    edit(form, ("backOff", "1s, 5s"), ("maxDeliver", 4))
    md = form.metadata
    assert (md.nats_url, md.durable_name, md.token) == ("nats://h:4222", "lab", SECRETS["token"])
    assert md.max_deliver == 4 and len(md.back_off) == 2


def test_keys_subset_without_base_means_embedded() -> None:
    form = ConfigForm(keys=["ackWait"])
    assert form.metadata.embedded


def test_error_on_a_field_not_shown_appears_in_the_summary() -> None:
    form = ConfigForm(keys=["deliverPolicy"], base={"natsURL": "embedded"})
    edit(form, ("deliverPolicy", "sequence"))
    assert list(form.errors) == ["startSequence"]
    assert "needs startSequence" in form.summary.value


def test_unknown_key_in_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="'ackwiat' is not a component property"):
        ConfigForm(keys=["ackwiat"])


def test_set_metadata_loads_every_control(form: ConfigForm) -> None:
    seen = watch(form)
    form.set_metadata({"natsURL": "embedded", "ackWait": "1m30s", "startSequence": "3"})
    controls = form.controls
    assert controls["ackWait"].value == "1m30s"
    assert controls["deliverPolicy"].value == "sequence"  # inferred, as the component does
    assert controls["startSequence"].value == 3 and controls["startTime"].value == ""
    assert len(seen) == 1 and seen[0]["ackWait"] == "1m30s"


# -- YAML export and import ----------------------------------------------------------------


@pytest.fixture
def secret_form() -> ConfigForm:
    return ConfigForm({"natsURL": "embedded", "ackWait": "10s", **SECRETS})


def test_export_masks_secrets_unless_revealed(secret_form: ConfigForm) -> None:
    secret_form.export_button.click()
    text = secret_form.yaml_text.value
    props = {e["name"]: e["value"] for e in yaml.safe_load(text)["spec"]["metadata"]}
    assert props["ackWait"] == "10s" and props["token"] == MASK
    assert not any(secret in text for secret in SECRETS.values())
    secret_form.reveal_secrets.value = True
    assert SECRETS["token"] in secret_form.yaml_text.value
    secret_form.reveal_secrets.value = False
    assert SECRETS["token"] not in secret_form.yaml_text.value


def test_import_loads_yaml_and_keeps_masked_secrets(secret_form: ConfigForm) -> None:
    secret_form.export_button.click()
    secret_form.yaml_text.value = secret_form.yaml_text.value.replace("10s", "45s")
    secret_form.import_button.click()
    assert secret_form.controls["ackWait"].value == "45s"
    assert secret_form.metadata.token == SECRETS["token"]  # the mask did not overwrite it


def test_import_error_is_shown_and_changes_nothing(secret_form: ConfigForm) -> None:
    before = secret_form.metadata
    secret_form.yaml_text.value = "kind: Component\nspec:\n  type: bindings.kafka\n"
    secret_form.import_button.click()
    assert "import failed" in secret_form.summary.value
    assert "bindings.kafka" in secret_form.summary.value
    assert secret_form.metadata == before


def test_import_warnings_show_in_the_muted_line(form: ConfigForm) -> None:
    form.yaml_text.value = Metadata.from_properties({"natsURL": "embedded"}).to_component_yaml()
    form.yaml_text.value += "  - {name: ackWiat, value: 5s}\n"
    form.import_button.click()
    assert "unknown property" in form.notes.value and "ackWait" in form.notes.value
    assert form.metadata.embedded


def test_export_of_an_invalid_form_is_refused(form: ConfigForm) -> None:
    edit(form, ("ackWait", "soon"))
    form.export_button.click()
    assert form.yaml_text.value == ""
    assert "fix the problems above before exporting" in form.summary.value


@pytest.mark.parametrize("as_path", [False, True], ids=["text", "path"])
def test_from_yaml(tmp_path: Path, as_path: bool) -> None:
    text = Metadata.from_properties({"natsURL": "nats://h:4222", "maxDeliver": "4"})
    source: str | Path = text.to_component_yaml()
    if as_path:
        path = tmp_path / "pubsub.yaml"
        path.write_text(str(source))
        source = path
    form = ConfigForm.from_yaml(source)
    assert form.controls["maxDeliver"].value == 4 and form.metadata.nats_url == "nats://h:4222"


# -- secrets stay in the password boxes ----------------------------------------------------


def test_secrets_appear_only_in_password_boxes(secret_form: ConfigForm) -> None:
    secret_form.export_button.click()
    edit(secret_form, ("ackWait", "soon"))  # an error summary too
    for widget in descendants(secret_form):
        if isinstance(widget, widgets.Password):
            continue
        state = json.dumps(widget.get_state(), default=str)
        assert not any(secret in state for secret in SECRETS.values()), widget
    assert "value" not in secret_form.keys  # the traitlet holding them is not synced
    edit(secret_form, ("ackWait", "1s"))
    assert "token=******" in secret_form.summary.value
    assert not any(secret in repr(secret_form) for secret in SECRETS.values())


def test_the_section_holding_an_error_opens() -> None:
    form = ConfigForm({"natsURL": "nats://127.0.0.1:4222"})
    assert form.sections.titles[form.sections.selected_index] == "connection"
    form.controls["ackWait"].value = "soon"
    assert form.sections.titles[form.sections.selected_index] == "retry"


def test_import_lists_every_problem_and_changes_nothing(secret_form: ConfigForm) -> None:
    before = secret_form.metadata
    secret_form.yaml_text.value = (
        "kind: Component\nmetadata: {name: x}\nspec:\n  type: pubsub.jetstream\n  metadata:\n"
        "  - {name: natsURL, value: 'nats://h:4222'}\n  - {name: ackWait, value: soon}\n"
        "  - {name: deliverPolicy, value: all}\n  - {name: startSequence, value: 3}\n"
        "  - {name: token, secretKeyRef: {name: nats, key: token}}\n"
    )
    secret_form.import_button.click()
    summary = secret_form.summary.value.replace("&#x27;", "'")
    assert "import failed (3 problems):" in summary
    for fragment in ("secretKeyRef (secret 'nats', key 'token')", "'soon' is not a duration"):
        assert fragment in summary
    assert "startSequence 3 is set but deliverPolicy is 'all'" in summary
    assert secret_form.metadata == before


def test_import_refuses_a_masked_secret_it_cannot_restore(form: ConfigForm) -> None:
    exported = Metadata.from_properties({"natsURL": "embedded", "token": "t-1"})
    form.yaml_text.value = exported.to_component_yaml()
    form.import_button.click()  # this form has no token of its own to put back
    assert "masked on export" in form.summary.value and form.metadata.token == ""


def test_from_yaml_picks_a_component_and_resolves_its_secrets() -> None:
    one = (
        "kind: Component\nmetadata: {name: NAME}\nspec:\n  type: pubsub.jetstream\n"
        "  metadata:\n  - {name: natsURL, value: 'nats://h:4222'}\n"
        "  - {name: token, secretKeyRef: {name: nats, key: NAME}}\n"
    )
    text = "---\n".join(one.replace("NAME", n) for n in ("a", "b"))
    form = ConfigForm.from_yaml(text, name="b", secrets={"nats": {"a": "tok-a", "b": "tok-b"}})
    assert form.metadata.token == "tok-b"


def test_import_of_several_components_offers_a_picker_then_reads_the_one_picked() -> None:
    one = (
        "kind: Component\nmetadata: {name: NAME}\nspec:\n  type: pubsub.jetstream\n"
        "  metadata:\n  - {name: natsURL, value: 'nats://h:4222'}\n"
        "  - {name: token, secretKeyRef: {name: nats, key: NAME}}\n"
    )
    form = ConfigForm(secrets={"nats": {"a": "tok-a", "b": "tok-b"}})
    before = form.metadata
    form.yaml_text.value = "---\n".join(one.replace("NAME", n) for n in ("a", "b"))
    form.import_button.click()
    assert "holds 2 components (a, b): pick one" in form.summary.value
    assert form.component_picker.layout.display == "" and form.metadata == before
    form.component_picker.value = "b"
    form.import_button.click()
    assert form.metadata.token == "tok-b" and form.metadata.nats_url == "nats://h:4222"
    form.yaml_text.value = one.replace("NAME", "a")
    form.import_button.click()  # one component again: no picker
    assert form.component_picker.layout.display == "none" and form.metadata.token == "tok-a"


def test_an_edited_import_exports_as_the_manifest_it_came_from() -> None:
    form = ConfigForm.from_yaml(
        "kind: Component\nmetadata: {name: bloodbank-pubsub, namespace: blood}\n"
        "spec:\n  type: pubsub.jetstream\n  version: v1\n  metadata:\n"
        "  - {name: natsURL, value: 'nats://h:4222'}\n  - {name: deliverPolicy, value: all}\n"
        "scopes: [donor-api]\n"
    )
    form.controls["maxDeliver"].value = 4
    doc = yaml.safe_load(form.metadata.to_component_yaml())
    assert doc["metadata"] == {"name": "bloodbank-pubsub", "namespace": "blood"}
    assert doc["scopes"] == ["donor-api"]
    entries = {e["name"]: e["value"] for e in doc["spec"]["metadata"]}
    assert entries == {"natsURL": "nats://h:4222", "deliverPolicy": "all", "maxDeliver": "4"}


def _two(names: tuple[str, str] = ("a", "b")) -> str:
    one = (
        "kind: Component\nmetadata: {name: NAME}\nspec:\n  type: pubsub.jetstream\n"
        "  metadata:\n  - {name: natsURL, value: 'nats://h:4222'}\n"
        "  - {name: maxDeliver, value: MD}\n"
    )
    return "---\n".join(
        one.replace("NAME", n).replace("MD", str(i)) for i, n in enumerate(names, start=2)
    )


def test_the_picker_asks_again_rather_than_import_a_stale_choice() -> None:
    form = ConfigForm()
    form.yaml_text.value = _two()
    form.import_button.click()
    form.component_picker.value = "b"
    form.import_button.click()
    assert form.metadata.max_deliver == 3
    form.yaml_text.value = _two().split("---\n")[0]
    form.import_button.click()  # one component: the picker hides
    form.yaml_text.value = _two()
    form.import_button.click()  # the same names again: asked again, nothing imported
    assert "pick one" in form.summary.value and form.metadata.max_deliver == 2
    assert form.component_picker.value is None
    form.import_button.click()  # nothing picked yet: asked again, in the form's words
    assert "pick one next to Import YAML" in form.summary.value
    assert "name=" not in form.summary.value


def test_the_picker_is_not_offered_for_components_sharing_a_name() -> None:
    form = ConfigForm()
    form.yaml_text.value = _two(("a", "a"))
    form.import_button.click()
    assert "share a name" in form.summary.value
    assert form.component_picker.layout.display == "none"


def test_the_picker_reads_a_file_named_in_the_box(tmp_path: Path) -> None:
    path = tmp_path / "chart.yaml"
    path.write_text(_two())
    form = ConfigForm()
    form.yaml_text.value = str(path)
    form.import_button.click()
    form.component_picker.value = "a"
    form.import_button.click()
    assert form.metadata.max_deliver == 2


def test_credentials_in_the_url_are_masked_in_the_form_and_kept() -> None:
    url = "nats://alice:pw-secret-3@h:4222"
    form = ConfigForm({"natsURL": url})
    assert form.controls["natsURL"].value == "nats://***@h:4222"
    edit(form, ("maxDeliver", 4))
    assert form.metadata.nats_url == url and form.metadata.max_deliver == 4
    form.export_button.click()
    for widget in descendants(form):
        assert "pw-secret-3" not in json.dumps(widget.get_state(), default=str), widget
    edit(form, ("natsURL", "nats://bob:other-4@h2:4222"))  # typed: masked at once, kept
    assert form.metadata.nats_url == "nats://bob:other-4@h2:4222"
    assert form.controls["natsURL"].value == "nats://***@h2:4222"
    edit(form, ("natsURL", "nats://h3:4222"))
    assert form.metadata.nats_url == "nats://h3:4222"


def test_credentials_in_an_imported_url_stay_behind_the_mask() -> None:
    form = ConfigForm()
    form.yaml_text.value = (
        "kind: Component\nmetadata: {name: x}\nspec:\n  type: pubsub.jetstream\n  metadata:\n"
        "  - {name: natsURL, value: 'nats://alice:pw-secret-5@h:4222'}\n"
    )
    form.import_button.click()
    assert form.controls["natsURL"].value == "nats://***@h:4222"
    assert form.metadata.nats_url == "nats://alice:pw-secret-5@h:4222"
    form.yaml_text.value = ""
    for widget in descendants(form):
        assert "pw-secret-5" not in json.dumps(widget.get_state(), default=str), widget


def test_a_host_edited_in_a_masked_url_keeps_its_credentials() -> None:
    form = ConfigForm({"natsURL": "nats://a:pw-6@h1:4222,nats://h2:4222"})
    assert form.controls["natsURL"].value == "nats://***@h1:4222,nats://h2:4222"
    edit(form, ("natsURL", "nats://***@h9:4222,nats://h3:4222"))
    assert form.metadata.nats_url == "nats://a:pw-6@h9:4222,nats://h3:4222"
    edit(form, ("natsURL", "nats://h3:4222,nats://***@h9:4222"))  # nothing behind that mask
    assert "masked credentials" in form.errors["natsURL"]
    assert form.metadata.nats_url == "nats://a:pw-6@h9:4222,nats://h3:4222"  # the last valid


def test_the_url_box_updates_when_typing_ends() -> None:
    # Each keystroke would be masked on its own, so the box syncs on Enter or blur.
    assert form_url_box(ConfigForm()).continuous_update is False


def form_url_box(form: ConfigForm) -> widgets.Text:
    box = form.controls["natsURL"]
    assert isinstance(box, widgets.Text)
    return box


@pytest.mark.parametrize(
    "value", [["nats://a:pw-7@h1:4222", "nats://h2:4222"], {"url": "nats://a:pw-7@h1"}]
)
def test_a_url_of_the_wrong_type_is_refused_without_its_credentials(value: object) -> None:
    with pytest.raises(MetadataError) as info:
        Metadata.from_properties({"natsURL": value})
    assert "pw-7" not in str(info.value) and "natsURL" in str(info.value)
