"""Command line: ``python -m jsnb --version`` and ``python -m jsnb demo``."""

from __future__ import annotations

import argparse
import asyncio
import sys

import jsnb

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jsnb", description=jsnb.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"jsnb {jsnb.__version__}")
    commands = parser.add_subparsers(dest="command")
    demo = commands.add_parser("demo", help="run the quickstart flow against an embedded server")
    demo.add_argument("-n", "--count", type=int, default=5, help="messages to publish")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from jsnb.demo import run_demo

        handled = asyncio.run(run_demo(args.count))
        return 0 if handled == args.count else 1
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
