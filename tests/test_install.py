"""The install path: a wheel that carries everything (templates, entry point, Python floor), `python -m
difymaint`, a .venv that recovers from another interpreter, and the Dockerfile's lint and contract."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from difymaint import MIN_PYTHON
from difymaint.ops import manifests as schedules

pytestmark = pytest.mark.slow  # subprocesses and builds: not in the fast tier


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[test]' installs it"
    return found


def test_python_floor_is_declared_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">={}.{}".format(*MIN_PYTHON)
    assert sys.version_info >= MIN_PYTHON


def test_wheel_carries_templates_entry_point_and_python_floor(tmp_path: Path) -> None:
    # Built from a copy of what the Dockerfile copies, so that no build/ directory is left in the checkout.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "difymaint", source / "difymaint", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("difymaint-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(name).decode() for name in names if name.endswith(".dist-info/METADATA"))
        entry_points = next(archive.read(name).decode() for name in names if name.endswith("entry_points.txt"))
    templates = {path.name for path in (ROOT / "difymaint" / "templates").iterdir()}
    assert {f"difymaint/templates/{name}" for name in templates} <= names
    assert "difymaint/py.typed" in names and "difymaint/__main__.py" in names
    assert "Requires-Python: >=3.11" in metadata
    assert "difymaint = difymaint._entry:main" in entry_points
    assert not any(name.startswith(("tests/", "deploy/")) for name in names)

    # The real install path: a fresh virtualenv, the wheel and its dependencies from the package index.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "difymaint", "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and version.stdout.strip() == "difymaint 0.1.0"
    crontab = subprocess.run(  # the templates load from the installed package, outside any checkout
        [str(venv / "bin" / "difymaint"), "schedule", "render", "--format", "crontab"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
    )
    assert crontab.returncode == 0, crontab.stderr
    assert crontab.stdout == (ROOT / schedules.CRONTAB_DIR / schedules.CRONTAB_FILE).read_text(encoding="utf-8")


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "difymaint", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("difymaint ")


def _ensure_venv(venv: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", '. scripts/venv.sh && ensure_venv "$1"', "ensure_venv", str(venv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
    )


def test_a_venv_from_another_python_is_recreated(tmp_path: Path) -> None:
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    stale = venv / "bin" / "python"  # what a venv of a removed or too old interpreter looks like: a dead link
    stale.symlink_to(tmp_path / "python3.10-gone")
    result = _ensure_venv(venv)
    assert result.returncode == 0, result.stderr
    assert "stale or broken" in result.stderr
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == str(tuple(sys.version_info[:2]))
    again = _ensure_venv(venv)  # a good venv is kept
    assert again.returncode == 0 and "stale" not in again.stderr


def test_too_old_python_is_refused_with_one_clear_line(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    old.write_text('#!/bin/sh\nexec "' + sys.executable + '" -c "import sys; sys.exit(1)"\n', encoding="utf-8")
    old.chmod(0o755)
    result = _ensure_venv(tmp_path / ".venv", env={"PYTHON": str(old)})
    assert result.returncode != 0 and not (tmp_path / ".venv").exists()
    assert "needs Python 3.11 or newer" in result.stderr and "python3.11" in result.stderr


# --- the image -------------------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_and_hadolint_catches_mistakes(tmp_path: Path) -> None:
    hadolint = _tool("hadolint")
    good = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y gcc\nENTRYPOINT difymaint\n", encoding="utf-8")
    caught = subprocess.run([hadolint, str(bad)], capture_output=True, text=True, check=False)
    assert caught.returncode != 0
    assert {"DL3007", "DL3008", "DL3025"} <= set(re.findall(r"DL\d{4}", caught.stdout))


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert len(bases) == 1 and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", bases[0])  # pinned, slim
    stages = re.findall(r"^FROM .*$", text, re.MULTILINE)
    assert len(stages) == 2 and "AS build" in stages[0]  # multi-stage
    final = text[text.rindex("\nFROM ") :]
    assert "pip install" not in final and "apt-get" not in final  # no build tooling in the final stage
    assert f"USER {schedules.UID}:{schedules.UID}" in final
    assert 'ENTRYPOINT ["difymaint"]' in final  # exec form: PID 1 gets SIGTERM
    assert "PYTHONDONTWRITEBYTECODE=1" in final and "HOME=/tmp" in final  # read-only root filesystem
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[1:4] == ["*", "!pyproject.toml", "!README.md"] and "!difymaint/" in ignore


def test_compose_overlay_contract() -> None:
    overlay = yaml.safe_load((ROOT / schedules.COMPOSE_DIR / schedules.COMPOSE_FILE).read_text(encoding="utf-8"))
    (name,) = overlay["services"]
    service = overlay["services"][name]
    assert name == "difymaint" and service["profiles"] == ["difymaint"] and service["restart"] == "no"
    assert service["env_file"] == [{"path": "./.env", "required": True}]
    assert service["environment"] == {"DIFYMAINT_ON_PARTIAL": "ok", "DIFYMAINT_ON_LOCKED": "ok"}
    assert service["user"] == f"{schedules.UID}:{schedules.UID}" and service["read_only"] is True
    assert "ports" not in service and "command" not in service  # no daemon, nothing published
    crontab = (ROOT / schedules.COMPOSE_DIR / schedules.CRONTAB_FILE).read_text(encoding="utf-8")
    for job in schedules.scheduled_jobs().values():
        assert f"-f /opt/dify/docker/{schedules.COMPOSE_FILE} run --rm -T difymaint {job.name} --scheduled" in crontab


# --- README ----------------------------------------------------------------------------------------------------------


def test_readme_switch_table_names_every_switch_and_no_stale_claim() -> None:
    from difymaint.jobs import JOBS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("**Every Dify beat switch") :]
    table = table[: table.index("\n\n", table.index("| Dify switch"))]
    stock = (ROOT / "tests" / "fixtures" / "dify-stock-switches.env").read_text(encoding="utf-8")
    stock_switches = set(re.findall(r"^((?:ENABLE_\w+)|(?:\w+_ENABLED))=", stock, re.MULTILINE))
    registry_switches = {switch.name for job in JOBS.values() for switch in job.switches}
    beat_switches = stock_switches - {"MARKETPLACE_ENABLED", "CREATE_TIDB_SERVICE_JOB_ENABLED", "BILLING_ENABLED"}
    for name in registry_switches | beat_switches:
        assert f"`{name}`" in table, name
    for job in JOBS.values():
        for switch in job.switches:
            row = next(line for line in table.splitlines() if line.startswith(f"| `{switch.name}`"))
            assert f"`{job.name}`" in row and ("on" if switch.dify_default else "off") in row.split("|")[2]
    # the two locks the README says are shared are Dify's own names
    assert JOBS["clean-messages"].lock_key == "retention:clean_messages"
    assert JOBS["clean-workflow-runs"].lock_key == "retention:clean_workflow_runs_task"
    assert "run it at 01:00" not in readme and "at 23:00, before `clean-workflow-runs`" in readme
