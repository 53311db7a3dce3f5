"""Developer tools: generators for the command reference (docs/reference.md) and the deploy/ artefacts.

Both are ``python -m difymaint.devtools.<tool> [--check]``: they write their files into the checkout they live
in, and ``--check`` changes nothing and exits 1 when a file is stale (CI).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def checkout_root() -> Path:
    """The source checkout these tools live in (where pyproject.toml is), else the working directory."""
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def generator_parser(tool: str, description: str, check_help: str) -> argparse.ArgumentParser:
    """The command line the generators share: ``python -m difymaint.devtools.<tool> [--check]``."""
    parser = argparse.ArgumentParser(prog=f"python -m difymaint.devtools.{tool}", description=description)
    parser.add_argument("--check", action="store_true", help=check_help)
    return parser
