"""Write the default rendering of the schedule artefacts into deploy/ (Kubernetes kustomize base, /etc/cron.d
file, systemd units and their READMEs); the rendering itself is :mod:`difymaint.ops.manifests`.

``python -m difymaint.devtools.deploy`` writes them; ``--check`` changes nothing and exits 1 when any file on
disk differs from what would be rendered (CI). Operators render their own set with ``difymaint schedule render``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from difymaint.devtools import checkout_root, generator_parser
from difymaint.ops.manifests import (
    CRONTAB_DIR,
    CRONTAB_FILE,
    GENERATED_DIRS,
    GENERATED_MARKERS,
    K8S_DIR,
    K8S_MANUAL_DIR,
    NAMES_CONFIG_MAP,
    STALE_HINT,
    SYSTEMD_DIR,
    crontab_command,
    crontab_line,
    dst_safe,
    is_frequent,
    job_args,
    render_all,
    render_cronjob,
    scheduled_jobs,
    timing_for,
)
from difymaint.ops.schedule import ScheduleError
from difymaint.ops.schedule import period_seconds as schedule_period_seconds

__all__ = [
    "CRONTAB_DIR",
    "CRONTAB_FILE",
    "K8S_DIR",
    "K8S_MANUAL_DIR",
    "NAMES_CONFIG_MAP",
    "SYSTEMD_DIR",
    "ScheduleError",
    "crontab_command",
    "crontab_line",
    "dst_safe",
    "is_frequent",
    "job_args",
    "main",
    "render_all",
    "render_cronjob",
    "schedule_period_seconds",
    "scheduled_jobs",
    "stale_files",
    "timing_for",
    "write_all",
]


def _generated(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    return any(marker in text for marker in GENERATED_MARKERS)


def _leftovers(root: Path, rendered: Mapping[str, str]) -> list[str]:
    """Generated files on disk that the rendering no longer has (a removed job's manifest or units)."""
    found = []
    for directory in GENERATED_DIRS:
        if not (root / directory).is_dir():
            continue
        for path in sorted((root / directory).iterdir()):
            relative = f"{directory}/{path.name}"
            if path.is_file() and relative not in rendered and _generated(path):
                found.append(relative)
    return found


def stale_files(root: Path, rendered: Mapping[str, str] | None = None) -> list[str]:
    """Files (relative paths) that are missing, differ from the rendering, or belong to removed jobs."""
    files = render_all() if rendered is None else rendered
    stale = []
    for relative, text in files.items():
        path = root / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(relative)
    return stale + _leftovers(root, files)


def write_all(root: Path, rendered: Mapping[str, str] | None = None) -> list[str]:
    """Write every changed file, delete generated files of removed jobs; return the paths touched."""
    files = render_all() if rendered is None else rendered
    touched = stale_files(root, files)
    for relative in touched:
        path = root / relative
        if relative in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[relative], encoding="utf-8")
        else:
            path.unlink()
    return touched


def main(argv: Sequence[str] | None = None) -> int:
    parser = generator_parser(
        "deploy",
        "Render deploy/k8s-cronjobs, deploy/crontab and deploy/systemd from the difymaint job registry.",
        "Change nothing; exit 1 if any file is stale.",
    )
    parser.add_argument("--root", type=Path, default=None, help="Repository root (default: this checkout).")
    options = parser.parse_args(argv)
    root: Path = options.root or checkout_root()
    try:
        rendered = render_all()
    except ValueError as exc:  # a bad schedule or a too-long name in the registry
        sys.stderr.write(f"cannot render deploy files: {exc}\n")
        return 1
    if options.check:
        stale = stale_files(root, rendered)
        if stale:
            sys.stderr.write(f"deploy files are stale ({', '.join(stale)}); {STALE_HINT}\n")
            return 1
        return 0
    touched = write_all(root, rendered)
    print(f"{len(touched)} deploy file(s) written or removed" + (f": {', '.join(touched)}" if touched else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
