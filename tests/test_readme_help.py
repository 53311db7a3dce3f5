"""README.md's command reference: rendered from --help between the markers, and stale sections are caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from difymaint.devtools import readme_help

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def section() -> str:
    return readme_help.render_section()


@pytest.fixture
def readme(tmp_path: Path) -> Path:
    copy = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", copy)
    return copy


def _between_markers(text: str) -> str:
    start = text.index(readme_help.START_MARKER + "\n") + len(readme_help.START_MARKER) + 1
    return text[start : text.index(readme_help.END_MARKER)]


def test_section_covers_every_registered_command(section: str) -> None:
    names = readme_help.command_names()
    assert names and "clean-messages" in names
    assert "### difymaint\n\n```text\nUsage: difymaint [OPTIONS] COMMAND [ARGS]..." in section
    paths = readme_help.command_paths()
    assert ["schedule", "render"] in paths  # a command group's subcommands are listed too
    assert [path[0] for path in paths if len(path) == 1] == names
    for path in paths:
        shown = " ".join(path)
        assert f"### difymaint {shown}\n\n```text\nUsage: difymaint {shown} [OPTIONS]" in section
    assert section.count("```text\n") == len(paths) + 1
    assert section.count("\n```\n") == len(paths) + 1


def test_section_is_plain_and_fits_the_width(section: str) -> None:
    assert "\x1b[" not in section
    for line in section.splitlines():
        assert line == line.rstrip()
        assert len(line) <= readme_help.WIDTH, line


def test_section_does_not_depend_on_the_callers_terminal(section: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert readme_help.render_section() == section


def test_markers_present_section_replaced(readme: Path, section: str) -> None:
    before = readme.read_text(encoding="utf-8")
    stale = readme_help.replace_section(before, "old text\n")
    readme.write_text(stale, encoding="utf-8")

    assert readme_help.update_readme(readme, check=False) is True
    after = readme.read_text(encoding="utf-8")
    assert _between_markers(after) == section
    head, tail = stale.split(readme_help.START_MARKER)[0], stale.split(readme_help.END_MARKER)[1]
    assert after.startswith(head + readme_help.START_MARKER + "\n")  # text around the markers is kept
    assert after.endswith(readme_help.END_MARKER + tail)
    assert "old text" not in after

    assert readme_help.update_readme(readme, check=False) is False  # idempotent
    assert readme.read_text(encoding="utf-8") == after


def test_check_detects_a_stale_section(readme: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert readme_help.main(["--readme", str(readme)]) == 0
    assert readme_help.main(["--readme", str(readme), "--check"]) == 0

    fresh = readme.read_text(encoding="utf-8")
    readme.write_text(fresh.replace("Show this message and exit.", "Show help.", 1), encoding="utf-8")
    capsys.readouterr()
    assert readme_help.main(["--readme", str(readme), "--check"]) == 1
    assert capsys.readouterr().err == readme_help.STALE_MESSAGE + "\n"
    assert "Show help." in readme.read_text(encoding="utf-8")  # --check writes nothing


def test_missing_markers_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# difymaint\n\nNo command reference here.\n", encoding="utf-8")
    for argv in (["--check"], []):
        assert readme_help.main(["--readme", str(readme), *argv]) == 1
        err = capsys.readouterr().err
        assert readme_help.START_MARKER in err and readme_help.END_MARKER in err
    assert readme.read_text(encoding="utf-8") == "# difymaint\n\nNo command reference here.\n"


def test_markers_in_the_wrong_order_are_rejected() -> None:
    text = f"{readme_help.END_MARKER}\n{readme_help.START_MARKER}\n"
    with pytest.raises(readme_help.MarkersNotFoundError):
        readme_help.replace_section(text, "x\n")
