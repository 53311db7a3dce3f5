"""``difymaint schedule render --output DIR`` into a folder that may already hold an earlier rendering.

The folder keeps a record, ``.difymaint-render`` (JSON: per format, the jobs rendered there and the sha256 of
each file as written). With it ``--only JOB`` merges: the shared files (kustomization, crontab, READMEs, the
every-minute CronJob) keep the jobs rendered before, and no other job's own files are rewritten. A file whose
content no longer matches the record (edited by hand, or not written by difymaint) is never overwritten
without ``--force``: nothing is written then, and the one error line names the files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from difymaint.ops.manifests import RenderError

STATE_FILE = ".difymaint-render"  # no .json/.yaml suffix: `kubectl apply -f DIR` skips it


@dataclass
class FolderState:
    jobs: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path in the folder -> sha256 of what was written


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load(folder: Path) -> dict[str, dict[str, object]]:
    try:
        loaded = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no record (or an unreadable one): every existing file that differs counts as changed
    return loaded if isinstance(loaded, dict) else {}


def read_state(folder: Path, fmt: str) -> FolderState | None:
    """What difymaint rendered into ``folder`` in this format before, or None."""
    entry = _load(folder).get(fmt)
    if not isinstance(entry, dict):
        return None
    jobs = entry.get("jobs")
    files = entry.get("files")
    if not isinstance(jobs, list) or not isinstance(files, dict):
        return None
    return FolderState([str(job) for job in jobs], {str(k): str(v) for k, v in files.items()})


def write_rendered(
    folder: Path, fmt: str, files: Mapping[str, str], jobs: Iterable[str], *, force: bool = False
) -> list[str]:
    """Write ``files`` (paths relative to ``folder``) unless one on disk changed since it was rendered; record
    what was written. Returns the paths written (an unchanged file is not rewritten)."""
    state = read_state(folder, fmt) or FolderState()
    written: list[str] = []
    conflicts: list[str] = []
    for relative, text in files.items():
        path = folder / relative
        if not path.is_file():
            written.append(relative)
            continue
        current = path.read_bytes()
        if current == text.encode("utf-8"):
            continue
        if force or state.files.get(relative) == digest(current):
            written.append(relative)
        else:
            conflicts.append(relative)
    if conflicts:
        raise RenderError(
            f"{', '.join(conflicts)} in {folder} changed since difymaint rendered it (or was not rendered by "
            "difymaint); keep local changes in a kustomize overlay, or pass --force to overwrite"
        )
    for relative in written:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[relative], encoding="utf-8")
    state.files.update({relative: digest(text.encode("utf-8")) for relative, text in files.items()})
    state.jobs = list(jobs)
    folder.mkdir(parents=True, exist_ok=True)
    everything = _load(folder)
    everything[fmt] = {"jobs": state.jobs, "files": dict(sorted(state.files.items()))}
    (folder / STATE_FILE).write_text(json.dumps(everything, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return written
