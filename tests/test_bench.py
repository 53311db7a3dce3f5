"""bench/run at its smallest scale, so it cannot rot: every contender runs and all delete the same rows.

Timings are never asserted here (the machine is shared); bench/README.md records a real run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.postgres

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


def _report(script: Path, args: list[str], *, timeout: int) -> dict[str, Any]:
    """Run a bench script that must succeed; its JSON report (the last line of its output)."""
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_bench_runs_every_contender_and_they_delete_the_same_rows(pg_admin_url: str) -> None:
    report = _report(
        BENCH,
        ["--pg-url", pg_admin_url, "--messages", "400", "--history-days", "60", "--busy", "--json"],
        timeout=600,
    )
    assert report["same_rows"] is True and report["scale"]["history_days"] == 60
    cascade = ["floor", "dify", "dify-no-sleep", "difymaint", "difymaint-sleep0", "difymaint-workers2"]
    busy = ["difymaint-busy"]  # --busy: the defaults at the batch length they aim at beside Dify's traffic
    expected = {
        "clean-messages": cascade + busy,
        "clean-workflow-runs": cascade + busy,
        "clean-embeddings": ["floor", "dify", "difymaint", "difymaint-workers2", *busy],
        "clean-dataset-queries": ["floor", "dify", "difymaint", "difymaint-workers2", *busy],
    }
    assert {job: [r["contender"] for r in results] for job, results in report["jobs"].items()} == expected
    for job, results in report["jobs"].items():
        deleted = [r["deleted"] for r in results]
        assert all(d == deleted[0] for d in deleted), job
        assert sum(deleted[0].values()) > 0, job  # the cut-off really removes rows
        assert all("vs_floor" in r["ratios"] for r in results), job
    # running and paused runs are never deleted by any contender
    assert report["jobs"]["clean-workflow-runs"][0]["deleted"]["workflow_runs"] < report["scale"]["runs"] * 0.8
    dry = report["dry_run"]
    assert dry["dry_run_rows"] == dry["count_rows"] == sum(report["jobs"]["clean-messages"][0]["deleted"].values())


@pytest.mark.mysql
def test_bench_on_mariadb_runs_the_cascades_and_they_delete_the_same_rows(mysql_admin_url: str) -> None:
    """The MySQL side (docs/mysql.md#performance): messages and workflow runs, the multi-table DELETE floor."""
    report = _report(
        BENCH,
        ["--mysql-url", mysql_admin_url, "--messages", "200", "--history-days", "60"]
        + ["--jobs", "clean-messages,clean-workflow-runs", "--json"],
        timeout=600,
    )
    assert report["same_rows"] is True and report["machine"]["mysql"]
    cascade = ["floor", "dify", "dify-no-sleep", "difymaint", "difymaint-sleep0", "difymaint-workers2"]
    assert {job: [r["contender"] for r in results] for job, results in report["jobs"].items()} == {
        "clean-messages": cascade,
        "clean-workflow-runs": cascade,
    }
    for job, results in report["jobs"].items():
        assert sum(results[0]["deleted"].values()) > 0, job
        # rows/s counts the purge each contender left behind (InnoDB removes delete-marked rows after commit)
        for result in results:
            total = result["wall_s"] + result["purge_s"]
            assert result["rows_per_s"] == round(sum(result["deleted"].values()) / total), (job, result)
    assert isinstance(report["purge_floor"], int)
    dry = report["dry_run"]
    assert dry["dry_run_rows"] == dry["count_rows"] == sum(report["jobs"]["clean-messages"][0]["deleted"].values())


def test_a_history_shorter_than_the_cut_off_is_refused_before_connecting() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--pg-url", "postgresql://nobody@127.0.0.1:1/x", "--history-days", "30"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--history-days must be more than" in done.stderr


LIVE = BENCH.with_name("live.py")
SCALE = BENCH.with_name("scale.py")


@pytest.mark.servers  # its own primary and streaming replica (tests/own_servers.py): not the fast tier
def test_live_bench_smoke_runs_the_workload_the_contenders_and_the_lag_scenario() -> None:
    """bench/live at a toy scale (its own primary and streaming replica): every part runs and reports; the
    figures themselves are bench/README.md's."""
    report = _report(
        LIVE,
        ["--messages", "600", "--quiet-s", "0.3", "--warmup-s", "0.3"]
        + ["--contenders", "difymaint,dify", "--lag-scenario", "--lag-messages", "600", "--lag-bound", "0.5"]
        + ["--lag-pause", "1", "--lag-pause-after-s", "0", "--json"],
        timeout=300,
    )
    assert [c["contender"] for c in report["contenders"]] == ["difymaint", "dify"]
    rows = {c["contender"]: c["rows"] for c in report["contenders"]}
    assert rows["difymaint"] == rows["dify"] > 0  # the same cut-off, the same rows
    assert report["baseline"]["ops"] > 0 and report["baseline"]["latency_ms"]["p99"] > 0
    for contender in report["contenders"]:
        assert contender["ops"] > 0 and contender["vs_baseline"]["p99"] > 0
        assert contender["errors"] == {}
    lag = report["lag_scenario"]
    assert lag["exit_code"] == 0 and lag["outcome"] == "done" and lag["rows"] == rows["dify"]


def test_scale_bench_smoke_compares_two_tiers(pg_admin_url: str) -> None:
    """bench/scale's code path at a toy scale (1x and 2x of 300 messages; CI never builds the real 10x tier)."""
    report = _report(
        SCALE,
        ["--pg-url", pg_admin_url, "--base-messages", "300", "--base-runs", "100"]
        + ["--tiers", "1x,2x", "--repeat", "1", "--json"],
        timeout=300,
    )
    assert list(report["tiers"]) == ["1x", "2x"]
    for tier in report["tiers"].values():
        for job in ("clean-messages", "clean-workflow-runs"):
            result = tier[job]
            assert result["same_rows"] and result["dry_run_rows"] == result["count_rows"] > 0
            assert result["peak_rss_mb"] > 0 and result["first_batch_s"] is not None
