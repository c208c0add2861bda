"""Binder's environment, rebuilt here: ``binder/`` alone must give a working lab.

repo2docker reads only ``binder/`` when it exists (not ``pyproject.toml``), runs
``pip install -r binder/requirements.txt`` from the repository root, and takes the
Python version from ``binder/runtime.txt``. The slow test does the same in a fresh
venv and runs the quickstart there; it cannot pull the runtime's Python, so it
uses this interpreter, which ``requires-python`` also admits.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
# As repo2docker runs it: from the repository root, where "." is the project.
REQUIREMENTS = ["-r", "binder/requirements.txt"]


def test_runtime_is_a_python_the_project_supports() -> None:
    runtime = (BINDER / "runtime.txt").read_text().strip()
    # repo2docker accepts "python-X.Y" (it ignores anything after the minor version).
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"binder/runtime.txt: {runtime!r} is not python-X.Y"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert match.group(1) in SpecifierSet(requires), (runtime, requires)


def test_requirements_install_the_project_with_the_lab() -> None:
    lines = [
        line.split("#", 1)[0].strip()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
    ]
    # "." is the repository root: repo2docker runs pip from there, after copying the repo.
    assert ".[lab]" in lines


@pytest.mark.slow
@pytest.mark.timeout(420)  # a cold pip cache downloads JupyterLab; warm, it takes ~1 min
def test_quickstart_runs_in_the_binder_environment(tmp_path: Path) -> None:
    assert QUICKSTART.exists()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # Nothing of this environment may leak in: no active venv, no Jupyter dirs, no NATS URL.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "IPYTHONDIR"}
        and not k.startswith(("JUPYTER", "JSNB_"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        env[name] = str(tmp_path / name.lower())

    _run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
        cwd=ROOT,
        env=env,
        timeout=360,
    )
    where = _run([python, "-c", "import jsnb; print(jsnb.__file__)"], cwd=tmp_path, env=env)
    assert str(venv) in where, f"jsnb imported from {where.strip()}, not the Binder venv"

    out = tmp_path / "out"
    options = [f"--output-dir={out}", "--ExecutePreprocessor.timeout=120"]
    _run(
        [python, "-m", "jupyter", "nbconvert", "--execute", "--to=notebook", QUICKSTART, *options],
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    executed = nbformat.read(out / QUICKSTART.name, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    widget_views = [
        o
        for c in executed.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widget_views, "the quickstart displayed no widget in the Binder environment"


def _run(cmd: list[object], *, cwd: Path, env: dict[str, str], timeout: float = 60) -> str:
    done = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{cmd[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout
