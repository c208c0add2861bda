"""JupyterLab driven by a real browser: the helpers behind ``test_browser.py``.

```
with JupyterLab(notebooks_dir, tmp_home) as lab, chromium() as browser:
    page = browser.new_page()
    run = run_notebook(page, lab, "01_quickstart.ipynb", deadline=150)
    assert not run.errors
```

The server runs this environment's ``python -m jupyterlab`` with every Jupyter
directory in a temporary folder, so neither the developer's settings nor their
workspaces leak in; kernels still come from this environment, whose ``python3``
kernelspec lives under ``sys.prefix``. The browser is Debian's Chromium
(Playwright's own browser download does not work on machines without internet).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Without the networking switches Chromium keeps trying to reach Google's
# services, which a machine without internet refuses many times a second.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# User settings for the isolated lab: no news/update toast over the notebook,
# and every cell kept in the DOM (the default windowing drops off-screen cells,
# which would hide them from the checks and the screenshot).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker": {
        "windowingMode": "none",
        "scrollPastEnd": False,
        "autoStartDefaultKernel": True,  # never a "Select Kernel" dialog
    },
}


def missing_requirement() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (Debian: apt-get install chromium; .ci/run does)"
    for package in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install -e '.[dev]')"
    return None


def copy_notebooks(source: Path, directory: Path) -> None:
    """Copy the notebooks folder (data files included), outputs and widget state stripped.

    What the page shows afterwards is then this run's output only.
    """
    shutil.copytree(source, directory, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in directory.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        nb.get("metadata", {}).pop("widgets", None)
        path.write_text(json.dumps(nb, indent=1))


class JupyterLab:
    """A JupyterLab server on a free loopback port, serving *root*, with isolated Jupyter dirs."""

    def __init__(self, root: Path, home: Path, *, startup_timeout: float = 60.0) -> None:
        self.root = root
        self.home = home
        self.token = secrets.token_hex(16)
        self.startup_timeout = startup_timeout
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._log = home / "jupyterlab.log"

    def env(self) -> dict[str, str]:
        dirs = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "IPYTHONDIR": "ipython",
            "JUPYTERLAB_SETTINGS_DIR": "settings",
            "JUPYTERLAB_WORKSPACES_DIR": "workspaces",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JSNB_"))}
        for name, sub in dirs.items():
            path = self.home / sub
            path.mkdir(parents=True, exist_ok=True)
            env[name] = str(path)
        return env

    def start(self) -> None:
        env = self.env()
        for plugin, values in LAB_SETTINGS.items():
            path = Path(env["JUPYTERLAB_SETTINGS_DIR"], plugin + ".jupyterlab-settings")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",  # CI containers run as root; the server only listens on loopback
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",  # the OS picks; the runtime file tells us which
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
        ]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root
            )
        runtime = Path(env["JUPYTER_RUNTIME_DIR"]) / f"jpserver-{self._process.pid}.json"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{self.log()}")
            # The runtime file can appear before the server accepts connections
            # (seen under load): not ready until the status call answers.
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, OSError):
                self.url = json.loads(runtime.read_text())["url"].rstrip("/")
                self.api("status")
                return
            time.sleep(0.2)
        raise RuntimeError(f"JupyterLab did not start in {self.startup_timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            self._process.terminate()  # the server shuts its kernels down on SIGTERM
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        finally:
            self._process = None

    def __enter__(self) -> JupyterLab:
        try:
            self.start()
        except BaseException:
            self.stop()  # a server that never answered is not left running
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-4000:]

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def page_url(self, notebook: str) -> str:
        # ?reset starts from an empty workspace: only this notebook open.
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """Stop every kernel (each notebook's embedded nats-server goes with it)."""
        for kernel in self.api("kernels"):
            self.api(f"kernels/{kernel['id']}", method="DELETE")

    def saved(self, notebook: str) -> dict[str, Any]:
        return json.loads((self.root / notebook).read_text())


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


# One look at the notebook in the page: prompts, outputs and widgets, as plain data.
_INSPECT = """() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  if (!nb) return null;
  const all = (sel, root = nb) => Array.from(root.querySelectorAll(sel));
  const text = e => (e.textContent || '').trim();
  const right = e => e.getBoundingClientRect().right;
  const outputs = all('.jp-OutputArea-output');
  const code = all('.jp-CodeCell').map(c => ({
    prompt: text(c.querySelector('.jp-InputPrompt') || c),
    empty: text(c.querySelector('.jp-InputArea-editor') || c) === '',
  }));
  const stderr = outputs.filter(o => o.dataset.mimeType === 'application/vnd.jupyter.stderr');
  const widgetOutputs = outputs.filter(o => o.querySelector('.jupyter-widgets'));
  // Widget parts that stick out of their output area: clipped or scrolled off for the reader.
  // Each report is the outermost element past the edge, with the widget it belongs to.
  const overflow = [];
  widgetOutputs.forEach(o => {
    const edge = right(o) + 2;
    const cell = all('.jp-Cell').indexOf(o.closest('.jp-Cell'));
    o.querySelectorAll('*').forEach(e => {
      if (right(e) <= edge || right(e.parentElement) > edge) return;
      const classes = Array.from(e.closest('.jupyter-widgets').classList);
      overflow.push({
        cell,
        widget: classes.filter(c => c.startsWith('widget-')).join(' '),
        element: e.tagName.toLowerCase(),
        px: Math.round(right(e) - edge + 2),
        text: text(e).slice(0, 50),
      });
    });
  });
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return {
    code,
    kernel: indicator ? indicator.dataset.status : null,
    tracebacks: stderr.map(text).filter(t => t.includes('Traceback')),
    widgetErrors: outputs.map(text).filter(t => t.includes('Error displaying widget')),
    widgets: all('.jupyter-widgets').length,
    widgetOutputs: widgetOutputs.length,
    // ipywidgets hides the output of a widget that was closed (``widget.close()``).
    closedWidgets: outputs.filter(o => o.matches('.lm-mod-hidden:not([data-mime-type])')).length,
    overflow,
    accordions: all('.jupyter-widgets.widget-accordion').length,
    messageRows: all('table.jsnb-messages tbody tr:not(:has(td[colspan]))').length,
    stateRows: all('table.jsnb-state tr').length,
    browserRows: all('.jsnb-browser tbody tr:not(:has(td[colspan]))').length,
    dataframeRows: all('table.dataframe tbody tr').length,
    widgetImages: all('img.widget-image')
      .filter(i => i.naturalWidth > 0 && i.offsetHeight > 0)
      .map(i => [i.naturalWidth, i.naturalHeight]),
    outputImages: all('.jp-RenderedImage img').filter(i => i.naturalWidth > 0).length,
    contentHeight: (nb.querySelector('.jp-WindowedPanel-viewport') || nb).scrollHeight,
    scrollerHeight: (nb.querySelector('.jp-WindowedPanel-outer') || nb).clientHeight,
  };
}"""


# Run All has taken effect: some prompt shows queued ``[*]`` or a count ``[n]``.
_STARTED = """() => Array.from(document.querySelectorAll('.jp-InputPrompt'))
  .some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"""


@dataclass
class NotebookRun:
    """What the page showed once Run All Cells finished (or the deadline passed)."""

    name: str
    finished: bool
    dom: dict[str, Any]
    seconds: dict[str, float]  # open, run, save, screenshot
    saved: dict[str, Any] = field(default_factory=dict)

    @property
    def prompts(self) -> list[str]:
        return [c["prompt"] for c in self.dom["code"]]

    @property
    def errors(self) -> list[str]:
        """Error outputs: tracebacks on the page and error outputs in the saved file."""
        found = list(self.dom["tracebacks"]) + list(self.dom["widgetErrors"])
        for cell in self.saved.get("cells", []):
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    found.append(f"{out['ename']}: {out['evalue']}")
        return found

    def saved_outputs(self, mime: str) -> int:
        return sum(
            mime in out.get("data", {})
            for cell in self.saved.get("cells", [])
            for out in cell.get("outputs", [])
        )


def _settled(dom: dict[str, Any] | None) -> bool:
    """Kernel idle, nothing queued, and every non-empty code cell has run (or one failed)."""
    if not dom or dom["kernel"] != "idle":
        return False
    prompts = [c["prompt"] for c in dom["code"] if not c["empty"]]
    if any("*" in p for p in prompts):
        return False
    # Run All stops at the first error, leaving the cells after it unrun.
    return bool(dom["tracebacks"]) or all(p[1:-2].strip().isdigit() for p in prompts)


def run_notebook(page: Any, lab: JupyterLab, notebook: str, *, deadline: float) -> NotebookRun:
    """Open *notebook*, run all its cells from the Run menu, wait, save, and report."""
    opened = time.monotonic()
    page.goto(lab.page_url(notebook))
    # Run All before the page has its kernel does nothing (or asks which kernel to start),
    # and the page's indicator says "idle" before the session even exists: wait for the
    # server to report the notebook's kernel idle, then for the page to agree.
    _wait_for_kernel(lab, notebook, timeout=60)
    page.wait_for_selector(
        ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=deadline * 1000
    )
    started = time.monotonic()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(_STARTED, timeout=30_000)
    dom: dict[str, Any] | None = None
    settled = False
    while time.monotonic() - started < deadline:
        dom = page.evaluate(_INSPECT)
        if _settled(dom):
            # Widgets render asynchronously after the last reply: look again once they had time.
            page.wait_for_timeout(1000)
            dom = page.evaluate(_INSPECT)
            settled = _settled(dom)
            if settled:
                break
        page.wait_for_timeout(500)
    ran = time.monotonic()
    assert dom is not None, f"{notebook}: the notebook never appeared"
    seconds = {"open": started - opened, "run": ran - started}
    run = NotebookRun(notebook, settled, dom, seconds)
    if settled:
        run.saved = _save(page, lab, notebook)
        seconds["save"] = time.monotonic() - ran
    return run


def _wait_for_kernel(lab: JupyterLab, notebook: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for session in lab.api("sessions"):
            if session["path"] == notebook and session["kernel"]["execution_state"] == "idle":
                return
        time.sleep(0.2)
    raise AssertionError(f"{notebook}: no idle kernel within {timeout}s:\n{lab.log()}")


def _save(page: Any, lab: JupyterLab, notebook: str) -> dict[str, Any]:
    """Save the (temporary) notebook through the lab and read back what it wrote."""
    before = (lab.root / notebook).stat().st_mtime_ns
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click(
        position={"x": 5, "y": 5}
    )
    page.keyboard.press("Escape")  # command mode
    page.keyboard.press("Control+s")
    for _ in range(100):
        if (lab.root / notebook).stat().st_mtime_ns != before:
            page.wait_for_timeout(200)
            return lab.saved(notebook)
        page.wait_for_timeout(100)
    raise AssertionError(f"{notebook}: saving through the lab did not change the file")


def full_page_screenshot(page: Any, run: NotebookRun, directory: Path) -> Path:
    """The whole notebook in one image (grow the viewport to its height), plus the run's report.

    ``<notebook>.json`` beside the picture holds the timings and the page report,
    overflowing widgets included, to read without opening the image.
    """
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (Path(run.name).stem + ".png")
    chrome = page.viewport_size["height"] - run.dom["scrollerHeight"]
    height = min(run.dom["contentHeight"] + chrome + 40, 30_000)
    page.set_viewport_size({"width": page.viewport_size["width"], "height": height})
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=True)
    run.seconds["screenshot"] = time.monotonic() - started
    report = {"seconds": run.seconds, "finished": run.finished, "errors": run.errors}
    report |= {k: v for k, v in run.dom.items() if k != "code"}
    path.with_suffix(".json").write_text(json.dumps(report, indent=1))
    return path


# -- live views under a flood ------------------------------------------------------------

FLOOD_RATE = 10_000  # messages per second, as in issue 17's target
FLOOD_SECONDS = 4.0
FLOOD_TOTAL = int(FLOOD_RATE * FLOOD_SECONDS)
# One code cell per view, so each view's height is its cell's output height.
FLOOD_VIEWS = {"MessageTable": 1, "ConsumerState": 2}
_FLOOD_CELLS = [
    """import asyncio
import json
import time

import jsnb
from jsnb.widgets import ConsumerState, MessageTable

ps = await jsnb.JetStreamPubSub({"natsURL": "embedded", "durableName": "flood"}).init()
await jsnb.ensure_stream(ps, "FLOOD", ["flood"])


def handle(msg):
    # A few failures, so the views show a NAK, an error and a redelivery among the acks.
    order = msg.json()["order"]
    if order % 5000 == 4999 and msg.delivery.num_delivered == 1:
        raise RuntimeError(f"order {order}: the payment service answered 503, retry later")


sub = await ps.subscribe("flood", handle)""",
    "table = MessageTable(sub)\ntable",
    "state = ConsumerState.for_subscription(sub)\nstate",
    """def model_ids(widget):
    # A view's bytes are its own model's and those of every widget inside it.
    return [widget.model_id, *(i for c in getattr(widget, "children", ()) for i in model_ids(c))]


ids = {"MessageTable": model_ids(table), "ConsumerState": model_ids(state)}
print("FLOOD-IDS", json.dumps(ids))""",
    f"""async def flood(rate={FLOOD_RATE}, total={FLOOD_TOTAL}, chunk=500):
    # Paced bulk publishes: `rate` messages a second, as one steady stream.
    started, sent = time.monotonic(), 0
    while sent < total:
        batch = [jsnb.BulkMessageEntry(str(sent + i), {{"order": sent + i}}) for i in range(chunk)]
        assert (await ps.bulk_publish("flood", batch)).ok
        sent += chunk
        await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))""",
]
# Typed into a new last cell once Run All is over and the page is being watched.
_FLOOD_START = "flooding = asyncio.create_task(flood())"


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook of *cells* (code), with this environment's kernel."""
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": s,
                "outputs": [],
                "execution_count": None,
            }
            for s in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


# The views' state as the page shows it: each view cell's output size, the table's summary.
_LIVE = """(views) => {
  const cells = Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell'));
  const size = {};
  for (const [name, i] of Object.entries(views)) {
    const out = cells[i] && cells[i].querySelector('.jp-OutputArea-output');
    size[name] = out ? {height: Math.round(out.getBoundingClientRect().height),
                        width: out.clientWidth, scrollWidth: out.scrollWidth} : null;
  }
  const counts = document.querySelector('.jsnb-counts');
  const ids = cells.map(c => c.textContent).find(t => t.includes('FLOOD-IDS {'));
  return {size, summary: counts ? counts.textContent : '',
          ids: ids ? ids.slice(ids.indexOf('FLOOD-IDS {') + 10) : null};
}"""
_COMM_ID = re.compile(rb'"comm_id":\s*"([^"]+)"')
_SEEN = re.compile(r"seen ([\d,]+)")
_RATE = re.compile(r"\bidle\b|([\d,]+) events/s")


@dataclass
class ViewReport:
    """One view under the flood: its height, its traffic to the page, what it said after."""

    height: int
    overflow_px: int
    bytes: int
    bytes_per_s: float


@dataclass
class FloodReport:
    """A flood of FLOOD_TOTAL messages through a live MessageTable and ConsumerState."""

    views: dict[str, ViewReport]
    flood_s: float  # first event shown to last event shown
    rates: list[tuple[float, str]]  # (seconds since the flood started, the rate shown)
    stopped_rate: str  # the rate shown once the summary stopped changing after the flood
    settled_after_s: float  # seconds after the last event until the rate read 0 / idle
    overflow: list[dict[str, Any]]
    run: NotebookRun  # its page report taken after the flood, for the screenshot

    @property
    def rate_returned_to_zero(self) -> bool:
        return _shown_rate(self.stopped_rate) == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "views": {k: v.__dict__ for k, v in self.views.items()},
            "flood_s": round(self.flood_s, 2),
            "messages_per_s": round(FLOOD_TOTAL / self.flood_s) if self.flood_s else None,
            "stopped_rate": self.stopped_rate,
            "rate_returned_to_zero": self.rate_returned_to_zero,
            "settled_after_s": round(self.settled_after_s, 2),
            "rates": self.rates,
            "overflow": self.overflow,
        }


def _shown_rate(text: str) -> float | None:
    match = _RATE.search(text)
    if match is None:
        return None
    return 0.0 if match.group(1) is None else float(match.group(1).replace(",", ""))


def _shown_seen(text: str) -> int:
    match = _SEEN.search(text)
    return int(match.group(1).replace(",", "")) if match else 0


def run_flood(page: Any, lab: JupyterLab, notebook: str, *, settle: float = 3.0) -> FloodReport:
    """Write and Run All the flood notebook, sampling the page every 100 ms.

    Every kernel-to-page websocket frame is kept as (time, size, comm ids); a
    view's traffic is the frames that name its models, between the first and
    the last event its summary shows. After the last event the page is watched
    for *settle* more seconds, or until the rate reads 0, whichever is first.
    """
    write_notebook(lab.root / notebook, _FLOOD_CELLS)
    frames: list[tuple[float, int, set[bytes]]] = []

    def on_socket(ws: Any) -> None:
        def on_frame(payload: str | bytes) -> None:
            data = payload.encode() if isinstance(payload, str) else payload
            frames.append((time.monotonic(), len(data), set(_COMM_ID.findall(data))))

        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    run = run_notebook(page, lab, notebook, deadline=120)
    assert run.finished and not run.errors, f"{notebook}: {run.errors or run.prompts}"

    # A new cell below the last one, typed and run from the keyboard.
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").last.locator(
        ".jp-InputArea-editor"
    ).click()
    for key in ("Escape", "b", "Enter"):
        page.keyboard.press(key)
    page.keyboard.type(_FLOOD_START)
    page.keyboard.press("Shift+Enter")
    samples: list[tuple[float, dict[str, Any]]] = []
    first = last = None  # when the summary first showed an event, and the last one
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now, live = time.monotonic(), page.evaluate(_LIVE, FLOOD_VIEWS)
        samples.append((now, live))
        seen = _shown_seen(live["summary"])
        if first is None and seen:
            first = now
        if last is None and seen >= FLOOD_TOTAL:
            last = now
        if last is not None and (now - last > settle or _shown_rate(live["summary"]) == 0):
            break
        page.wait_for_timeout(100)
    assert first is not None and last is not None, f"flood never finished: {samples[-1][1]}"

    ids = json.loads(samples[-1][1]["ids"])
    final = samples[-1][1]
    views = {}
    for name, models in ids.items():
        wanted = {m.encode() for m in models}
        sent = sum(n for t, n, comms in frames if first <= t <= last and comms & wanted)
        size = final["size"][name]
        views[name] = ViewReport(
            height=size["height"],
            overflow_px=size["scrollWidth"] - size["width"],
            bytes=sent,
            bytes_per_s=round(sent / (last - first)),
        )
    run.dom = page.evaluate(_INSPECT)
    shown = [(t, _RATE.search(s["summary"])) for t, s in samples]
    return FloodReport(
        views=views,
        flood_s=last - first,
        rates=[(round(t - first, 1), m.group(0)) for t, m in shown if m],
        stopped_rate=shown[-1][1].group(0) if shown[-1][1] else "",
        settled_after_s=samples[-1][0] - last,
        overflow=run.dom["overflow"],
        run=run,
    )
