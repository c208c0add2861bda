"""Command line: ``python -m jsnb --version``."""

from __future__ import annotations

import argparse
import sys

import jsnb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jsnb", description=jsnb.__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"jsnb {jsnb.__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
