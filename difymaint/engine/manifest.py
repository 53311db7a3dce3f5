"""The orphan manifest: storage objects whose ``upload_files`` rows a run left unreferenced.

difymaint never deletes objects in storage (it has no storage drivers); it writes one JSON line per file
so a storage sweeper (or Dify's ``remove-orphaned-files-on-storage``) can act on them.

Durability (docs/batching.md#orphan-manifest): a batch's lines are written and fsynced *before* its
transaction commits, each carrying the batch id; after the commit, one line ``{"batch": id, "state":
"committed"}`` goes to the companion file ``<path>.batches`` (``"rolled_back"`` when the transaction did not
commit). A crash between the commit and that line therefore loses no key: the batch's files are listed and
read back as *uncertain* (committed or not; a sweeper re-checks that nothing references them before it deletes).
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from difymaint.core.errors import ConfigError

# Fault injection for the crash tests: kill -9 this process right after the N-th batch commit, before the
# manifest confirms it. Unset (production) it does nothing.
CRASH_AFTER_COMMIT_ENV = "DIFYMAINT_TEST_CRASH_AFTER_COMMIT"

BatchState = Literal["committed", "rolled_back", "uncertain"]


def batches_path(path: Path) -> Path:
    return path.with_name(path.name + ".batches")


class OrphanManifest:
    def __init__(self, path: Path | None, *, job: str, dry_run: bool) -> None:
        self.path = path
        self.job = job
        self.dry_run = dry_run
        self.count = 0  # files of confirmed (committed) batches
        self.by_source: dict[str, int] = {}
        self._run = uuid.uuid4().hex[:12]
        self._batch_no = 0
        self._pending: str | None = None
        self._pending_by_source: dict[str, int] = {}
        self._commits = 0
        self._handle: IO[str] | None = None
        self._batches: IO[str] | None = None
        if path is not None:
            try:
                self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
                self._batches = open(batches_path(path), "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                self.close()
                raise ConfigError(f"cannot write the orphan manifest {path}: {exc.strerror}") from None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def details(self) -> dict[str, Any]:
        """What the run summary says about the manifest."""
        return {"path": str(self.path), "files": self.count, "by_source": dict(self.by_source)}

    def stage(self, rows: list[dict[str, Any]], *, source: str) -> None:
        """Write (and fsync) the files the open batch is about to orphan. Call inside the transaction, before
        it commits; then :meth:`commit` after the commit, or :meth:`rollback`."""
        if self._handle is None:
            return
        if self._pending is None:
            self._batch_no += 1
            self._pending = f"{self._run}-{self._batch_no}"
        for row in rows:
            record = {
                **{k: (str(v) if k.endswith("id") else v) for k, v in row.items()},
                "source": source,
                "job": self.job,
                "dry_run": self.dry_run,
                "batch": self._pending,
            }
            self._handle.write(json.dumps(record, default=str) + "\n")
            self._pending_by_source[source] = self._pending_by_source.get(source, 0) + 1
        _sync(self._handle)

    def write(self, rows: list[dict[str, Any]], *, source: str) -> None:
        """Stage and confirm at once, for callers with nothing to commit (no transaction in between)."""
        self.stage(rows, source=source)
        self.commit()

    def commit(self) -> None:
        """The batch's transaction committed: confirm its files."""
        self._commits += 1
        crash_at = os.environ.get(CRASH_AFTER_COMMIT_ENV)
        if crash_at and crash_at.isdigit() and self._commits == int(crash_at):
            os.kill(os.getpid(), signal.SIGKILL)  # the worst moment: committed, not yet confirmed
        if self._pending is None:
            return
        files = sum(self._pending_by_source.values())
        self._mark("committed", files)
        self.count += files
        for source, n in self._pending_by_source.items():
            self.by_source[source] = self.by_source.get(source, 0) + n
        self._reset()

    def settle(self, *, rolled_back: bool) -> bool:
        """After a batch: confirm what it staged, or drop it when its transaction rolled back; returns whether
        the batch committed (what a batch body returns)."""
        if rolled_back:
            self.rollback()
            return False
        self.commit()
        return True

    def rollback(self) -> None:
        """The batch's transaction rolled back: its staged lines orphan nothing."""
        if self._pending is not None:
            self._mark("rolled_back", sum(self._pending_by_source.values()))
        self._reset()

    def close(self) -> None:
        # A batch still pending here ended in an exception after staging: it stays unconfirmed, which
        # readers treat as uncertain (listed, re-checked), never as "nothing happened".
        for handle in (self._handle, self._batches):
            if handle is not None:
                handle.close()
        self._handle = self._batches = None

    def _mark(self, state: str, files: int) -> None:
        if self._batches is None:
            return
        self._batches.write(
            json.dumps({"batch": self._pending, "state": state, "files": files, "job": self.job}) + "\n"
        )
        _sync(self._batches)

    def _reset(self) -> None:
        self._pending = None
        self._pending_by_source = {}


def _sync(handle: IO[str]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


@dataclass
class ManifestReport:
    """A manifest read back: files by the state of their batch."""

    committed: list[dict[str, Any]] = field(default_factory=list)
    uncertain: list[dict[str, Any]] = field(default_factory=list)  # staged, commit never confirmed (crash)
    rolled_back: list[dict[str, Any]] = field(default_factory=list)

    def orphaned(self) -> Iterator[dict[str, Any]]:
        """Every file that may be orphaned: committed ones and uncertain ones (re-check those)."""
        yield from self.committed
        yield from self.uncertain

    def by_source(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.orphaned():
            counts[record["source"]] = counts.get(record["source"], 0) + 1
        return counts


def read_manifest(path: Path) -> ManifestReport:
    """Read a manifest and its ``.batches`` companion. Lines without a batch id (older difymaint, written
    after the commit) count as committed; a torn last line (crash mid-write) is skipped."""
    states: dict[str, str] = {}
    companion = batches_path(path)
    if companion.exists():
        for record in _json_lines(companion):
            states[str(record.get("batch"))] = str(record.get("state"))
    report = ManifestReport()
    for record in _json_lines(path):
        batch = record.get("batch")
        state = "committed" if batch is None else states.get(str(batch), "uncertain")
        {"committed": report.committed, "rolled_back": report.rolled_back}.get(state, report.uncertain).append(record)
    return report


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record
