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
