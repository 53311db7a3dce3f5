"""docs/reference.md, the command reference: rendered from --help as a whole generated file, and a stale file
is caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from difymaint.devtools import reference

pytestmark = pytest.mark.slow  # subprocesses and builds: not in the fast tier


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def section() -> str:
    return reference.render_section()


@pytest.fixture
def reference_file(tmp_path: Path) -> Path:
    copy = tmp_path / "reference.md"
    shutil.copyfile(ROOT / "docs" / "reference.md", copy)
    return copy


def _after_header(text: str) -> str:
    assert text.startswith(reference.HEADER + "\n")
    return text[len(reference.HEADER) + 1 :]


def test_section_covers_every_registered_command(section: str) -> None:
    names = reference.command_names()
    assert names and "clean-messages" in names
    assert "### difymaint\n\n```text\nUsage: difymaint [OPTIONS] COMMAND [ARGS]..." in section
    paths = reference.command_paths()
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
        assert len(line) <= reference.WIDTH, line


def test_section_does_not_depend_on_the_callers_terminal(section: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert reference.render_section() == section


def test_stale_file_rewritten(reference_file: Path, section: str) -> None:
    stale = reference.HEADER + "\nold text\n"
    reference_file.write_text(stale, encoding="utf-8")

    assert reference.update_reference(reference_file, check=False) is True
    after = reference_file.read_text(encoding="utf-8")
    assert _after_header(after) == section
    assert after.startswith(reference.GENERATED_MARKER + "\n")  # the header saying it is generated comes first
    assert "old text" not in after

    assert reference.update_reference(reference_file, check=False) is False  # idempotent
    assert reference_file.read_text(encoding="utf-8") == after


def test_check_detects_a_stale_file(reference_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main(["--output", str(reference_file)]) == 0
    assert reference.main(["--output", str(reference_file), "--check"]) == 0

    fresh = reference_file.read_text(encoding="utf-8")
    reference_file.write_text(fresh.replace("Show this message and exit.", "Show help.", 1), encoding="utf-8")
    capsys.readouterr()
    assert reference.main(["--output", str(reference_file), "--check"]) == 1
    assert capsys.readouterr().err == reference.STALE_MESSAGE + "\n"
    assert "Show help." in reference_file.read_text(encoding="utf-8")  # --check writes nothing


def test_a_missing_file_is_stale_and_then_written(tmp_path: Path, section: str) -> None:
    path = tmp_path / "docs" / "reference.md"
    assert reference.main(["--output", str(path), "--check"]) == 1
    assert not path.exists()  # --check writes nothing
    assert reference.main(["--output", str(path)]) == 0
    assert _after_header(path.read_text(encoding="utf-8")) == section


def test_a_file_not_generated_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "reference.md"
    path.write_text("# difymaint\n\nNo command reference here.\n", encoding="utf-8")
    for argv in (["--check"], []):
        assert reference.main(["--output", str(path), *argv]) == 1
        err = capsys.readouterr().err
        assert reference.GENERATED_MARKER in err
    assert path.read_text(encoding="utf-8") == "# difymaint\n\nNo command reference here.\n"


def test_a_marker_below_the_first_line_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "reference.md"
    path.write_text(f"# hand-written\n{reference.HEADER}", encoding="utf-8")
    with pytest.raises(reference.NotGeneratedError):
        reference.update_reference(path, check=False)
    assert path.read_text(encoding="utf-8").startswith("# hand-written\n")
