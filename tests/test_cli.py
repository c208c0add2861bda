"""The command line and import hygiene, run as a user would, in subprocesses."""

from __future__ import annotations

import subprocess
import sys

import jsnb


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_version() -> None:
    out = run("-m", "jsnb", "--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"jsnb {jsnb.__version__}"


def test_demo_runs_the_quickstart_flow() -> None:
    out = run("-m", "jsnb", "demo", "--count", "3")
    assert out.returncode == 0, out.stderr
    assert "embedded nats-server at nats://127.0.0.1:" in out.stdout
    assert out.stdout.count(": nak retry in 0.1s") == 3
    assert out.stdout.count(": ack") == 3
    assert "ack_floor_stream_seq    3" in out.stdout


def test_core_import_stays_light() -> None:
    code = (
        "import sys, jsnb, jsnb.pubsub, jsnb.server;"
        "heavy = {'pandas', 'ipywidgets', 'matplotlib', 'cryptography'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = run("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
