"""Scale tier: does difymaint's cost per row stay flat at ten times the data? (bench/README.md)

Builds bench/run.py's Dify-shaped database server-side at 1× and at 10× (default 500 k messages and 200 k
workflow runs, then 5 M and 2 M, with their children and node executions), spread over ``--history-days``
(33 by default: the 30-day cut-off takes one night's share, 9 %), and on each, for clean-messages and
clean-workflow-runs:

* one ``count(*)`` per table with the job's predicates against the exact ``--dry-run`` (median of 3 each);
* one real run at full speed with one connection (``--sleep-ms 0``: the cost, without pauses): rows/s, the
  first batch's latency (from the job's start and from the process's), batch p50/p95/max, peak RSS.

It prints both tiers side by side and the 10×/1× ratios. The databases are dropped at the end (``--keep``
keeps them). Each tier is measured on its own database once (no copies: the 10× one is ~25 GB).

    bench/scale --pg-url postgresql://postgres@127.0.0.1:5432/postgres [--base-messages 500000] [--json]
    bench/scale --own-server …   # a throwaway production-like cluster of its own (tests/own_servers.py)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.own_servers, for --own-server

from run import DAYS, ENDED, MESSAGE_CHILDREN, PRODUCTION_SETTINGS, build_template, cli

# job → one count(*) per table with the job's own predicates (:cut = the cut-off)
_RUNS = f"SELECT id FROM workflow_runs WHERE created_at < :cut AND status IN {ENDED}"
COUNTS = {
    "clean-messages": [
        *(
            f"SELECT count(*) FROM {child} WHERE message_id IN (SELECT id FROM messages WHERE created_at < :cut)"
            for child in MESSAGE_CHILDREN
        ),
        "SELECT count(*) FROM messages WHERE created_at < :cut",
    ],
    "clean-workflow-runs": [
        "SELECT count(*) FROM workflow_node_execution_offload WHERE node_execution_id IN "
        f"(SELECT id FROM workflow_node_executions WHERE workflow_run_id IN ({_RUNS}))",
        f"SELECT count(*) FROM workflow_node_executions WHERE workflow_run_id IN ({_RUNS})",
        f"SELECT count(*) FROM workflow_app_logs WHERE workflow_run_id IN ({_RUNS})",
        "SELECT count(*) FROM workflow_pause_reasons WHERE pause_id IN "
        f"(SELECT id FROM workflow_pauses WHERE workflow_run_id IN ({_RUNS}))",
        f"SELECT count(*) FROM workflow_pauses WHERE workflow_run_id IN ({_RUNS})",
        f"SELECT count(*) FROM workflow_trigger_logs WHERE workflow_run_id IN ({_RUNS})",
        f"SELECT count(*) FROM workflow_runs WHERE created_at < :cut AND status IN {ENDED}",
    ],
}
PRODUCTION = {**PRODUCTION_SETTINGS, "maintenance_work_mem": "512MB"}


def measure_tier(admin: Engine, base_url: sa.URL, name: str, messages: int, runs: int, args: Any) -> dict[str, Any]:
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = base_url.set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    cutoff = (now - timedelta(days=DAYS)).replace(hour=0, minute=0, second=0)
    started = time.perf_counter()
    build_template(engine, messages=messages, runs=runs, embeddings=10, now=now, history_days=args.history_days)
    tier: dict[str, Any] = {"messages": messages, "runs": runs, "build_s": round(time.perf_counter() - started, 1)}
    with engine.connect() as conn:
        tier["database_gb"] = round(
            int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()) / 2**30, 2
        )
    if not args.json:
        print(f"{name}: built in {tier['build_s']} s, {tier['database_gb']} GB", flush=True)
    for job in args.jobs:
        result: dict[str, Any] = {}
        count_times, dry_times = [], []
        counted = 0
        for _ in range(args.repeat):
            with engine.connect() as conn:
                began = time.perf_counter()
                counted = sum(int(conn.execute(sa.text(q), {"cut": cutoff}).scalar_one()) for q in COUNTS[job])
                count_times.append(time.perf_counter() - began)
            dry, _, _ = cli(job, url, cutoff, ["--dry-run"])
            dry_times.append(float(dry["duration_s"]))
        result["count_rows"] = counted
        result["count_s"] = round(statistics.median(count_times), 3)
        result["dry_run_rows"] = dry["rows_total"]
        result["dry_run_s"] = round(statistics.median(dry_times), 3)
        result["dry_vs_count"] = round(result["dry_run_s"] / result["count_s"], 2) if result["count_s"] else None
        process_started = time.time()
        summary, wall, rss = cli(job, url, cutoff, ["--sleep-ms", "0"])
        job_started = datetime.fromisoformat(summary["started_at"]).timestamp()
        details = summary["details"]
        result.update(
            rows=summary["rows_total"],
            duration_s=summary["duration_s"],
            rows_per_s=round(summary["rows_total"] / summary["duration_s"]) if summary["duration_s"] else 0,
            us_per_row=round(summary["duration_s"] / max(1, summary["rows_total"]) * 1e6, 2),
            batches=summary["batches"],
            batch_ms=details.get("batch_ms", {}),
            first_batch_s=details.get("first_batch_s"),
            first_batch_from_process_s=round(job_started - process_started + float(details.get("first_batch_s", 0)), 2),
            peak_rss_mb=round(rss, 1),
            cli_wall_s=round(wall, 2),
            same_rows=summary["rows_total"] == counted,
        )
        tier[job] = result
        if not args.json:
            print(f"  {job}: {result}", flush=True)
    engine.dispose()
    if not args.keep:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    return tier


def print_table(report: dict[str, Any]) -> None:
    """The first tier against the last (1x and 10x by default)."""
    names = list(report["tiers"])
    low, high = names[0], names[-1]
    one, ten = report["tiers"][low], report["tiers"][high]
    for job in report["jobs"]:
        a, b = one[job], ten[job]
        sizes = f"{low} = {one['messages']:,} messages / {one['runs']:,} runs"
        print(f"\n{job}: {sizes}, {high} = {ten['messages']:,} / {ten['runs']:,}")
        print(f"{'':<28}{low:>14}{high:>14}{f'{high} / {low}':>10}")
        rows = [
            ("rows deleted", a["rows"], b["rows"]),
            ("rows/s (--sleep-ms 0)", a["rows_per_s"], b["rows_per_s"]),
            ("µs per row", a["us_per_row"], b["us_per_row"]),
            ("first batch s (job)", a["first_batch_s"], b["first_batch_s"]),
            ("first batch s (process)", a["first_batch_from_process_s"], b["first_batch_from_process_s"]),
            ("batch p50 ms", a["batch_ms"].get("p50"), b["batch_ms"].get("p50")),
            ("batch p95 ms", a["batch_ms"].get("p95"), b["batch_ms"].get("p95")),
            ("batch max ms", a["batch_ms"].get("max"), b["batch_ms"].get("max")),
            ("peak RSS MB", a["peak_rss_mb"], b["peak_rss_mb"]),
            ("count(*) s", a["count_s"], b["count_s"]),
            ("--dry-run s", a["dry_run_s"], b["dry_run_s"]),
            ("dry run ÷ count(*)", a["dry_vs_count"], b["dry_vs_count"]),
        ]
        for label, x, y in rows:
            ratio = (
                f"{y / x:>10.2f}" if isinstance(x, int | float) and isinstance(y, int | float) and x else f"{'':>10}"
            )
            print(f"{label:<28}{x!s:>14}{y!s:>14}{ratio}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pg-url", help="a PostgreSQL you may create databases on")
    where.add_argument("--own-server", action="store_true", help="start a throwaway production-like cluster")
    parser.add_argument("--base-messages", type=int, default=500_000, help="messages at 1x (10x has ten times)")
    parser.add_argument("--base-runs", type=int, default=200_000, help="workflow runs at 1x")
    parser.add_argument("--history-days", type=int, default=33)
    parser.add_argument("--tiers", default="1x,10x")
    parser.add_argument("--jobs", default="clean-messages,clean-workflow-runs")
    parser.add_argument("--repeat", type=int, default=3, help="count(*) and dry runs per tier (median)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args(argv)
    if args.history_days <= DAYS:
        parser.error(f"--history-days must be more than the {DAYS}-day cut-off")
    args.jobs = [job.strip() for job in args.jobs.split(",") if job.strip()]
    own = None
    if args.own_server:
        from tests.own_servers import OwnPostgres

        own = OwnPostgres(PRODUCTION)
        own.start()
        pg_url = own.url
    else:
        pg_url = args.pg_url
    base = make_url(pg_url)
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg2")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()}, "jobs": args.jobs}
    try:
        with admin.connect() as conn:
            report["postgres"] = conn.execute(sa.text("SHOW server_version")).scalar_one()
            report["shared_buffers"] = conn.execute(sa.text("SHOW shared_buffers")).scalar_one()
        report["tiers"] = {}
        for tier in [t.strip() for t in args.tiers.split(",") if t.strip()]:
            factor = int(tier.rstrip("x"))
            report["tiers"][tier] = measure_tier(
                admin, base, f"dmscale_{factor}x", args.base_messages * factor, args.base_runs * factor, args
            )
        report["machine"]["load_after"] = os.getloadavg()
        if args.json:
            print(json.dumps(report, default=str))
        elif len(report["tiers"]) > 1:
            print_table(report)
        return 0
    finally:
        admin.dispose()
        if own is not None:
            own.stop()


if __name__ == "__main__":
    raise SystemExit(main())
