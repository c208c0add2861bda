"""The declared public surface: what the package exports, what its modules declare,
and that the tutorials and the README use only declared names; the one error tree."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest

import jsnb
from jsnb import errors

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(jsnb.__path__, "jsnb.")
    if not info.name.rsplit(".", 1)[-1].startswith("_") or info.name.endswith("__main__")
)


def test_the_package_exports_only_what_exists_sorted() -> None:
    assert jsnb.__all__ == sorted(jsnb.__all__, key=lambda n: (not n.isupper(), n))
    for name in jsnb.__all__:
        assert hasattr(jsnb, name), name


@pytest.mark.parametrize("module", MODULES)
def test_every_module_declares_its_surface(module: str) -> None:
    mod = importlib.import_module(module)
    declared = getattr(mod, "__all__", None)
    assert declared is not None, f"{module} declares no __all__"
    for name in declared:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it does not define"


def _code_of_docs() -> list[tuple[str, str]]:
    """(where, code) for every notebook code cell and every README python block."""
    found = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found.append((f"{nb.name} cell {i}", "".join(cell["source"])))
    readme = (ROOT / "README.md").read_text()
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme, re.S)):
        found.append((f"README block {i}", block))
    return found


def test_tutorials_and_readme_import_only_declared_names() -> None:
    wrong = []
    for where, code in _code_of_docs():
        code = "\n".join(
            line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        try:
            tree = ast.parse(code)
        except SyntaxError:  # top-level await: still parseable as the body of a coroutine
            tree = ast.parse("async def _():\n" + "\n".join("    " + ln for ln in code.split("\n")))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jsnb"):
                declared = getattr(importlib.import_module(node.module or ""), "__all__", ())
                wrong += [f"{where}: {node.module}.{a.name}" for a in node.names
                          if a.name not in declared and a.name != "*"]  # fmt: skip
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                base = node.value
                if isinstance(base.value, ast.Name) and base.value.id == "jsnb":
                    module = f"jsnb.{base.attr}"
                    if module in MODULES:
                        names = getattr(importlib.import_module(module), "__all__", ())
                        if node.attr not in names:
                            wrong.append(f"{where}: {module}.{node.attr}")
    assert not wrong, "undeclared names used by the docs:\n" + "\n".join(wrong)


def _jsnb_exceptions() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for module in MODULES:
        for _, obj in inspect.getmembers(importlib.import_module(module), inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("jsnb"):
                found.add(obj)
    return found


def test_every_error_lives_in_the_error_tree_and_derives_from_jsnb_error() -> None:
    for cls in _jsnb_exceptions():
        assert cls.__module__ == "jsnb.errors", f"{cls.__qualname__} is defined in {cls.__module__}"
        assert issubclass(cls, errors.JsnbError), cls
        assert cls.__name__ in jsnb.__all__, f"{cls.__name__} is not exported by jsnb"
        tree = (errors.__doc__ or "").split("```")[1]
        assert re.search(rf"\b{cls.__name__}\b", tree), f"{cls.__name__} is not in the drawn tree"


def test_no_two_modules_share_a_name() -> None:
    """``jsnb.lab`` and ``jsnb.widgets.lab`` were two modules a reader could confuse."""
    leaves = [m.rsplit(".", 1)[-1] for m in MODULES if not m.endswith("__main__")]
    assert len(leaves) == len(set(leaves)), sorted(n for n in leaves if leaves.count(n) > 1)


def test_no_import_circle_among_the_modules() -> None:
    """Module-level imports only (a function's own import is how a circle is broken)."""
    edges: dict[str, set[str]] = {}
    for module in MODULES:
        source = inspect.getsource(importlib.import_module(module))
        tree = ast.parse(source)
        edges[module] = {
            node.module
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("jsnb.")
            and node.module in MODULES
            and node.module != module
        }

    def reach(start: str, seen: set[str]) -> None:
        for nxt in edges.get(start, ()):
            assert nxt != module, f"{module} imports itself back through {start}"
            if nxt not in seen:
                seen.add(nxt)
                reach(nxt, seen)

    for module in MODULES:
        if module not in ("jsnb.server", "jsnb.widgets"):  # packages re-export their parts
            reach(module, set())
