"""The arguments a command needs besides the database to get as far as its connections (without them it
stops at a usage error first); ``{tmp}`` is the test's own directory."""

from __future__ import annotations

RUN_ARGS: dict[str, list[str]] = {
    "archive-workflow-runs": ["--archive-dir", "{tmp}/archive"],
    "restore-workflow-runs": [
        "--archive-dir",
        "{tmp}/archive",
        "--start-from",
        "2020-01-01",
        "--end-before",
        "2021-01-01",
    ],
}
