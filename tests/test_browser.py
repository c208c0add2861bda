"""Every tutorial runs in JupyterLab in a real browser, and its widgets render.

nbval proves the cells run; this proves what a reader sees: JupyterLab in
Debian's Chromium, each notebook opened fresh, Run All Cells from the Run
menu, then the page is checked for rendered widgets and for errors, and a
full-page screenshot goes to ``screenshots/<notebook>.png``.

The notebooks are copied, outputs stripped, into a temporary folder: the
repository's files are never opened by the lab, so never saved with outputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import (
    JupyterLab,
    NotebookRun,
    chromium,
    copy_notebooks,
    full_page_screenshot,
    missing_requirement,
    run_flood,
    run_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
SCREENSHOTS = ROOT / "screenshots"
DEADLINE = 150.0  # seconds for one notebook's Run All; they take a few to tens

if reason := missing_requirement():
    pytest.skip(reason, allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# What each jsnb widget puts on the page: a key of the page report (``browser._INSPECT``).
WIDGET_MARKS = {
    "ConfigForm": ("accordions", "a ConfigForm's sections (an Accordion)"),
    "RedeliveryLab": ("accordions", "the redelivery lab's retry form (an Accordion)"),
    "MessageTable": ("messageRows", "a MessageTable with delivered messages"),
    "ConsumerState": ("stateRows", "a ConsumerState table"),
    "StreamState": ("stateRows", "a StreamState table"),
    "StreamBrowser": ("browserRows", "a StreamBrowser page of stored messages"),
    "AdvisoryFeed": ("messageRows", "an AdvisoryFeed with advisories (MessageTable's view)"),
}


def expected(notebook: Path) -> dict[str, str]:
    """What the page must show, read off the widgets the notebook's code builds and keeps.

    ``name = Widget(...)`` (or ``Widget.for_...(...)``) expects that widget's mark,
    unless the notebook later calls ``name.close()``, which removes the view; a
    RedeliveryLab that is run (``name.arun(...)``) must also show its timeline image.
    """
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    wants = {}
    for name, cls in re.findall(r"^(\w+)\s*=\s*(\w+)(?:\.for_\w+)?\(", code, re.M):
        if cls not in WIDGET_MARKS or f"{name}.close()" in code:
            continue
        key, what = WIDGET_MARKS[cls]
        wants[key] = what
        if cls == "RedeliveryLab" and re.search(rf"\b{name}\.a?run\(", code):
            wants["widgetImages"] = "the redelivery lab's timeline image"
    return wants


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    tmp = tmp_path_factory.mktemp("jupyterlab")
    copy_notebooks(ROOT / "notebooks", tmp / "notebooks")
    with JupyterLab(tmp / "notebooks", tmp / "home") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_and_renders(lab: JupyterLab, browser: Any, notebook: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    try:
        run = run_notebook(page, lab, notebook, deadline=DEADLINE)
        full_page_screenshot(page, run, SCREENSHOTS)
    except Exception:
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{Path(notebook).stem}-failed.png"))
        raise
    finally:
        page.close()
        lab.shutdown_kernels()
    seconds = {phase: round(t, 1) for phase, t in run.seconds.items()}
    context = f"{notebook} (seconds {seconds}; browser console errors: {console[:5]})"

    assert run.finished, f"{context}: not finished in {DEADLINE}s, prompts {run.prompts}"
    assert not run.errors, f"{context}: errors on the page:\n" + "\n".join(run.errors)
    # Every widget fits its output area: nothing clipped or scrolled off sideways.
    assert not run.dom["overflow"], f"{context}: widgets stick out: {run.dom['overflow'][:5]}"
    _assert_widgets(run, ROOT / "notebooks" / notebook, context)


def _assert_widgets(run: NotebookRun, source: Path, context: str) -> None:
    displayed = run.saved_outputs(WIDGET_VIEW)
    if displayed:
        # Every widget the kernel displayed is on the page: a live view, or hidden once closed.
        shown = run.dom["widgetOutputs"] + run.dom["closedWidgets"]
        assert shown == displayed, f"{context}: {displayed} widget outputs, {shown} on the page"
    for key, what in expected(source).items():
        assert run.dom[key], f"{context}: no {what} on the page ({key}=0)"


# Issue 17: at most 20 kB/s to the page per view during a 10k msgs/s flood; fail past twice that.
BYTES_PER_S_TARGET = 20_000


def test_live_views_under_a_flood(lab: JupyterLab, browser: Any) -> None:
    """A flood through a displayed MessageTable and ConsumerState, measured from the page.

    Per view: its height, the bytes per second the kernel sent it during the
    flood, and whether the table's rate falls back to 0 once traffic stops.
    The numbers go to ``screenshots/flood.json`` beside the picture.
    """
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        report = run_flood(page, lab, "flood.ipynb")
        full_page_screenshot(page, report.run, SCREENSHOTS)
    finally:
        page.close()
        lab.shutdown_kernels()
    measured = report.as_dict()
    (SCREENSHOTS / "flood.json").write_text(json.dumps(measured, indent=1))
    context = json.dumps({k: v for k, v in measured.items() if k != "rates"})

    assert not report.overflow, f"views stick out of the page: {context}"
    assert all(v.overflow_px <= 0 for v in report.views.values()), context
    assert report.rate_returned_to_zero, f"the rate is stuck after the flood: {context}"
    for name, view in report.views.items():
        assert view.bytes_per_s <= 2 * BYTES_PER_S_TARGET, f"{name} sends too much: {context}"
