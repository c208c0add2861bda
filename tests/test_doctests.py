"""Every module's examples run, against a real server, and print what they say they print.

The examples are written as a notebook cell is: top-level ``await`` works. As
with doctest, a module's examples share one namespace, its own names; added to
them are ``jsnb`` and ``ps``, a component connected to a fresh server with the
stream ``ORDERS`` (``orders``, ``orders.>``).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import doctest
import importlib
import inspect
import io
import pkgutil
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest

import jsnb
from jsnb.server import NatsServer

MODULES = sorted(info.name for info in pkgutil.walk_packages(jsnb.__path__, "jsnb."))
_PARSER = doctest.DocTestParser()
_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(module: str) -> list[doctest.Example]:
    doc = importlib.import_module(module).__doc__ or ""
    return _PARSER.get_examples(doc, module)


@pytest.fixture
async def component(nats_server: NatsServer) -> AsyncIterator[jsnb.JetStreamPubSub]:
    async with jsnb.JetStreamPubSub({"natsURL": nats_server.url}) as ps:
        await jsnb.ensure_stream(ps, "ORDERS", ["orders", "orders.>"])
        yield ps


async def _run(example: doctest.Example, globs: dict[str, Any]) -> tuple[str, str | None]:
    """Run one example as a notebook cell would: what it printed, and its error as doctest
    shows one (``module.Class: message``), if it raised."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    code = compile(example.source, "<example>", "single", flags=flags, dont_inherit=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            result = eval(code, globs)
            if inspect.iscoroutine(result):
                await result
        except Exception as exc:
            return out.getvalue(), traceback.format_exception_only(type(exc), exc)[-1]
    return out.getvalue(), None


def _run_in_a_script(examples: list[doctest.Example], globs: dict[str, Any]) -> list[Any]:
    """Run the sync facade's examples as a plain script would: no event loop in the thread.

    Inside a running loop the facade patches that loop to re-enter it (as a
    notebook kernel's must be); the test's own loop must not be the one it patches.
    """
    outcomes = []
    for example in examples:
        code = compile(example.source, "<example>", "single", dont_inherit=True)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(code, globs)
            except Exception as exc:
                outcomes.append(
                    (out.getvalue(), traceback.format_exception_only(type(exc), exc)[-1])
                )
                continue
        outcomes.append((out.getvalue(), None))
    return outcomes


# Modules whose examples are scripts: they use the sync facade, made for code without a loop.
SCRIPT_MODULES = frozenset({"jsnb.sync"})


def test_every_module_with_examples_is_checked() -> None:
    commented = [m for m in MODULES if any(e.source.startswith("#") for e in _examples(m))]
    assert not commented, f"examples commented out instead of run: {commented}"


@pytest.mark.parametrize("module", [m for m in MODULES if _examples(m)])
async def test_module_examples(module: str, component: jsnb.JetStreamPubSub) -> None:
    # As doctest does: the module's own names, plus the shared ones.
    namespace = {**vars(importlib.import_module(module)), "jsnb": jsnb, "ps": component}
    examples = _examples(module)
    if module in SCRIPT_MODULES:
        outcomes = await asyncio.to_thread(_run_in_a_script, examples, namespace)
    else:
        outcomes = [await _run(example, namespace) for example in examples]
    for example, (printed, error) in zip(examples, outcomes, strict=True):
        if example.exc_msg is None:
            assert error is None, f"{module}: {example.source!r} raised {error}"
            assert _CHECKER.check_output(example.want, printed, _FLAGS), (
                f"{module}: {example.source!r}\nwanted {example.want!r}\n   got {printed!r}"
            )
        else:
            assert error is not None, f"{module}: {example.source!r} raised nothing"
            assert _CHECKER.check_output(example.exc_msg, error, _FLAGS), (
                f"{module}: {example.source!r}\nwanted {example.exc_msg!r}\n   got {error!r}"
            )
