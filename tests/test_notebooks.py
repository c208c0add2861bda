"""The tutorials as a path: committed without outputs, each linking to the next, one way to wait.

The notebooks' claims about their own outputs are guarded inside them (nbval
runs every cell, and a cell asserts what its text says); this module guards
what holds across them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path: Path, kind: str) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == kind]


def test_there_is_a_path() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{n:02d}" for n in range(1, len(NOTEBOOKS) + 1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)


@pytest.mark.parametrize("index", range(len(NOTEBOOKS)), ids=lambda i: NOTEBOOKS[i].stem)
def test_each_notebook_ends_with_a_link_to_the_next(index: int) -> None:
    last = _cells(NOTEBOOKS[index], "markdown")[-1]
    following = NOTEBOOKS[(index + 1) % len(NOTEBOOKS)].name  # the last one leads back to 01
    assert f"]({following})" in last, last
    assert "](../README.md#tutorials)" in last, last


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_wait_with_jsnb_until_only(path: Path) -> None:
    code = "\n".join(_cells(path, "code"))
    assert not re.search(r"\bdef \w*wait\w*\(|wait_until|\bdeadline\s*=", code), (
        "a notebook polls with its own helper; use `await jsnb.until(...)`"
    )


def test_readme_lists_the_path_in_order() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Tutorials", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"\]\(notebooks/(\d\d_\w+\.ipynb)\)", section)
    assert linked == [p.name for p in NOTEBOOKS]
