"""The README's quickstart runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    block = re.search(r"<!-- readme-example:.*?-->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its marked example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 20
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "orders.eu {'id': 1, 'total': 9.5} attempt 1" in out.stdout
    assert "stored as ORDERS 1" in out.stdout


def test_notebook_cells_run_in_a_kernel() -> None:
    import nbformat
    from nbclient import NotebookClient

    section = README.read_text().split("<!-- readme-notebook -->", 1)[1]
    section = section.split("<!-- /readme-notebook -->", 1)[0]
    cells = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(cells) == 6
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = [c.outputs for c in nb.cells]
    for cell_outputs in outputs:
        assert not [o for o in cell_outputs if o.output_type == "error"]
    widget_mime = "application/vnd.jupyter.widget-view+json"
    for index in (0, 1, 2, 3, 4):  # form, table, state, lab, browser each display a widget
        assert any(widget_mime in o.get("data", {}) for o in outputs[index]), index
