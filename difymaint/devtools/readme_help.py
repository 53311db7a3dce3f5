"""Keep README.md's command reference in sync with ``difymaint --help``.

``python -m difymaint.devtools.readme_help`` renders ``difymaint --help`` and ``difymaint <cmd> --help`` for every
command registered on :data:`difymaint.cli.app.app` and writes them between the ``<!-- help:start -->`` and
``<!-- help:end -->`` lines of README.md. ``--check`` changes nothing and exits 1 when the section is stale (CI).

The help is rendered in-process with Typer's CliRunner at a fixed width, without colour, so the output does not
depend on the terminal it runs in.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

START_MARKER = "<!-- help:start -->"
END_MARKER = "<!-- help:end -->"
PROG_NAME = "difymaint"
WIDTH = 100
HELP_ENV = {"COLUMNS": str(WIDTH), "NO_COLOR": "1", "TERM": "dumb"}
STALE_MESSAGE = "README.md --help section is stale; run python -m difymaint.devtools.readme_help"


class MarkersNotFoundError(ValueError):
    """README.md lacks one start and one end marker line, in that order."""


def _app() -> typer.Typer:
    from difymaint.cli.app import app

    return app


def command_names(app: typer.Typer | None = None) -> list[str]:
    """The visible subcommands registered on ``app``, in registration (``--help``) order."""
    group = typer.main.get_command(app or _app())
    if not isinstance(group, TyperGroup):
        return []
    return [name for name, command in group.commands.items() if not command.hidden]


def command_paths(app: typer.Typer | None = None) -> list[list[str]]:
    """Every visible command as its argument path; a command group (``schedule``) is followed by its subcommands."""
    group = typer.main.get_command(app or _app())
    if not isinstance(group, TyperGroup):
        return []
    paths: list[list[str]] = []
    for name, command in group.commands.items():
        if command.hidden:
            continue
        paths.append([name])
        if isinstance(command, TyperGroup):
            paths += [[name, sub] for sub, child in command.commands.items() if not child.hidden]
    return paths


def render_help(args: Sequence[str], app: typer.Typer | None = None) -> str:
    """``difymaint <args> --help`` as plain text, trailing whitespace stripped from every line."""
    result = CliRunner().invoke(
        app or _app(),
        [*args, "--help"],
        env=HELP_ENV,
        color=False,
        terminal_width=WIDTH,
        prog_name=PROG_NAME,
    )
    if result.exit_code != 0:
        shown = " ".join([PROG_NAME, *args, "--help"])
        raise RuntimeError(f"{shown} exited {result.exit_code}: {result.output.strip()}")
    lines = [line.rstrip() for line in result.output.strip("\n").splitlines()]
    return "\n".join(lines)


def render_section(app: typer.Typer | None = None) -> str:
    """The Markdown that goes between the markers (without the marker lines), ending with a newline."""
    blocks: list[str] = []
    for args in [[], *command_paths(app)]:
        heading = " ".join([PROG_NAME, *args])
        blocks.append(f"### {heading}\n\n```text\n{render_help(args, app)}\n```\n")
    return "\n".join(blocks)


def replace_section(readme: str, section: str) -> str:
    """``readme`` with everything between the marker lines replaced by ``section``."""
    lines = readme.splitlines(keepends=True)
    stripped = [line.strip() for line in lines]
    if stripped.count(START_MARKER) != 1 or stripped.count(END_MARKER) != 1:
        raise MarkersNotFoundError(
            f"no help section: expected exactly one '{START_MARKER}' line and one '{END_MARKER}' line"
        )
    start, end = stripped.index(START_MARKER), stripped.index(END_MARKER)
    if end < start:
        raise MarkersNotFoundError(f"'{END_MARKER}' comes before '{START_MARKER}'")
    body = section if section.endswith("\n") or not section else section + "\n"
    return "".join([*lines[: start + 1], body, *lines[end:]])


def update_readme(path: Path, *, check: bool, app: typer.Typer | None = None) -> bool:
    """Render the section into ``path``; return True when it was (``check``: would be) changed.

    Raises MarkersNotFoundError when the file has no markers.
    """
    current = path.read_text(encoding="utf-8")
    updated = replace_section(current, render_section(app))
    if updated == current:
        return False
    if not check:
        path.write_text(updated, encoding="utf-8")
    return True


def _default_readme() -> Path:
    """README.md of the source checkout this module lives in, else the one in the working directory."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "README.md").is_file():
        return checkout / "README.md"
    return Path("README.md")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m difymaint.devtools.readme_help",
        description="Write `difymaint --help` for every command into README.md between the help markers.",
    )
    parser.add_argument("--check", action="store_true", help="Change nothing; exit 1 if the section is stale.")
    parser.add_argument("--readme", type=Path, default=None, help="The README to update (default: README.md).")
    options = parser.parse_args(argv)
    path: Path = options.readme or _default_readme()
    try:
        changed = update_readme(path, check=options.check)
    except MarkersNotFoundError as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"{path}: cannot read or write: {exc.strerror or exc}\n")
        return 1
    if options.check:
        if changed:
            sys.stderr.write(STALE_MESSAGE + "\n")
            return 1
        return 0
    print(f"{path}: --help section {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
