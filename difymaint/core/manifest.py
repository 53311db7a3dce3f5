"""The orphan manifest: storage objects whose ``upload_files`` rows a run left unreferenced.

difymaint never deletes objects in storage (it has no storage drivers); it writes one JSON line per file
so a storage sweeper (or Dify's ``remove-orphaned-files-on-storage``) can act on them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from difymaint.core.errors import ConfigError


class OrphanManifest:
    def __init__(self, path: Path | None, *, job: str, dry_run: bool) -> None:
        self.path = path
        self.job = job
        self.dry_run = dry_run
        self.count = 0
        self.by_source: dict[str, int] = {}
        self._handle: IO[str] | None = None
        if path is not None:
            try:
                self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise ConfigError(f"cannot write the orphan manifest {path}: {exc.strerror}") from None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def details(self) -> dict[str, Any]:
        """What the run summary says about the manifest."""
        return {"path": str(self.path), "files": self.count, "by_source": dict(self.by_source)}

    def write(self, rows: list[dict[str, Any]], *, source: str) -> None:
        if self._handle is None:
            return
        for row in rows:
            record = {
                **{k: (str(v) if k.endswith("id") else v) for k, v in row.items()},
                "source": source,
                "job": self.job,
                "dry_run": self.dry_run,
            }
            self._handle.write(json.dumps(record, default=str) + "\n")
            self.count += 1
            self.by_source[source] = self.by_source.get(source, 0) + 1
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
