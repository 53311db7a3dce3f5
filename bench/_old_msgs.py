"""Benchmark: clean-messages strategies side by side on a real PostgreSQL, printed as a ratio.

Baseline = Dify's algorithm (MessagesCleanService at the 2026-06 baseline): one global keyset scan over every
message older than the cut-off, with the plan filter applied per batch (`--scan-strategy global`).
Candidate = difymaint's default with billing on (`eligible-apps`): eligible tenants first, then their apps'
messages through message_app_id_idx. Both run on identical copies of one seeded database.

Usage (needs a PostgreSQL you may create databases on; scripts/test's cluster works):
    python benchmarks/clean_messages.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres \
        --messages 200000 --eligible-share 0.05
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from difymaint.core.context import Context
from difymaint.core.reporter import RecordingReporter
from difymaint.core.run import RunOptions
from difymaint.core.settings import load_settings
from difymaint.core.window import TimeWindow
from difymaint.dify.tables import metadata
from difymaint.jobs import clean_messages

CHILDREN = (
    "message_feedbacks",
    "message_chains",
    "message_agent_thoughts",
    "message_files",
    "saved_messages",
    "dataset_retriever_resources",
    "message_annotations",
    "app_annotation_hit_histories",
)


def seed(url: str, *, messages: int, tenants: int, eligible_share: float, now: datetime) -> dict[str, object]:
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    eligible_tenants = max(1, int(tenants * eligible_share))
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"'))
        conn.execute(
            sa.text("INSERT INTO tenants (id, name) SELECT uuid_generate_v4(), 't' || g FROM generate_series(1, :n) g"),
            {"n": tenants},
        )
        conn.execute(
            sa.text(
                "INSERT INTO apps (id, tenant_id, name, mode, enable_site, enable_api) "
                "SELECT uuid_generate_v4(), t.id, 'app', 'chat', true, true FROM tenants t, generate_series(1, 2)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO conversations (id, app_id, mode, name, inputs, status, from_source) "
                "SELECT uuid_generate_v4(), a.id, 'chat', 'c', '{}', 'normal', 'api' FROM apps a"
            )
        )
        # messages spread evenly over 90 days and over all apps
        conn.execute(
            sa.text(
                "INSERT INTO messages (id, app_id, conversation_id, inputs, query, message, answer, message_unit_price,"
                " answer_unit_price, currency, from_source, created_at, updated_at) "
                "SELECT uuid_generate_v4(), c.app_id, c.id, '{}', 'q', '[]', 'a', 0, 0, 'USD', 'api', ts, ts "
                "FROM (SELECT g, :now - ((g::bigint * 7776000) / :n) * interval '1 second' AS ts"
                " FROM generate_series(1, :n) g) s "
                "JOIN LATERAL (SELECT id, app_id FROM conversations ORDER BY id OFFSET (s.g % (SELECT count(*) FROM "
                "conversations)) LIMIT 1) c ON true"
            ),
            {"n": messages, "now": now.replace(tzinfo=None)},
        )
        someone = "00000000-0000-0000-0000-000000000001"
        child_sql = {
            "message_feedbacks": "INSERT INTO message_feedbacks (id, app_id, conversation_id, message_id, rating,"
            " from_source) SELECT uuid_generate_v4(), app_id, conversation_id, id, 'like', 'user' FROM messages",
            "message_chains": "INSERT INTO message_chains (id, message_id, type) SELECT uuid_generate_v4(), id, 's'"
            " FROM messages",
            "message_agent_thoughts": "INSERT INTO message_agent_thoughts (id, message_id, position, created_by_role,"
            f" created_by) SELECT uuid_generate_v4(), id, 1, 'account', '{someone}' FROM messages",
            "message_files": "INSERT INTO message_files (id, message_id, type, transfer_method, created_by_role,"
            f" created_by) SELECT uuid_generate_v4(), id, 'image', 'remote_url', 'end_user', '{someone}' FROM messages"
            " WHERE random() < 0.2",
            "saved_messages": "INSERT INTO saved_messages (id, app_id, message_id, created_by) SELECT"
            f" uuid_generate_v4(), app_id, id, '{someone}' FROM messages WHERE random() < 0.05",
            "dataset_retriever_resources": "INSERT INTO dataset_retriever_resources (id, message_id, position,"
            " dataset_id, dataset_name, document_name, content, retriever_from, created_by) SELECT"
            f" uuid_generate_v4(), id, 1, '{someone}', 'd', 'doc', 'chunk', 'api', '{someone}' FROM messages"
            " WHERE random() < 0.5",
        }
        for sql in child_sql.values():
            conn.execute(sa.text(sql))
        conn.execute(sa.text("ANALYZE"))
        tenant_ids = [str(r[0]) for r in conn.execute(sa.text("SELECT id FROM tenants ORDER BY id"))]
    engine.dispose()
    eligible = set(tenant_ids[:eligible_tenants])
    plans = {tid: {"plan": "sandbox" if tid in eligible else "team", "expiration_date": -1} for tid in tenant_ids}
    return {"plans": plans, "eligible_tenants": len(eligible), "tenants": tenants}


def run_once(url: str, plan_file: Path, strategy: str, now: datetime, batch_size: int) -> dict[str, object]:
    settings = load_settings(
        None,
        {
            "DIFYMAINT_DATABASE_URL": url,
            "DIFYMAINT_USE_REDIS": False,
            "DIFYMAINT_PLAN_FILE": str(plan_file),
        },
    )
    ctx = Context(settings, reporter=RecordingReporter())
    params = clean_messages.CleanMessagesParams(
        window=TimeWindow(end_before=(now - timedelta(days=30)).replace(tzinfo=None)),
        run=RunOptions(batch_size=batch_size),
        scan_strategy=strategy,
    )
    started = time.perf_counter()
    summary = clean_messages.run(ctx, params)
    seconds = time.perf_counter() - started
    ctx.close()
    return {
        "strategy": strategy,
        "seconds": seconds,
        "scanned": summary.scanned,
        "batches": summary.batches,
        "deleted_messages": summary.tables["messages"],
        "rows": summary.total_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", required=True)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=400)
    parser.add_argument("--eligible-share", type=float, default=0.05, help="share of tenants that are sandbox")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    now = datetime.now(UTC)
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    base = make_url(args.pg_url)
    template = "difymaint_bench_tpl"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {template}"))
        conn.execute(sa.text(f"CREATE DATABASE {template}"))
    t0 = time.perf_counter()
    info = seed(
        base.set(database=template).render_as_string(hide_password=False),
        messages=args.messages,
        tenants=args.tenants,
        eligible_share=args.eligible_share,
        now=now,
    )
    print(
        f"seeded {args.messages:,} messages, {info['tenants']} tenants ({info['eligible_tenants']} sandbox) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp) / "plans.json"
        plan_file.write_text(json.dumps({"tenants": info["plans"]}))
        for strategy in ("global", "eligible-apps"):
            name = f"difymaint_bench_{strategy.replace('-', '_')}"
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
                conn.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE {template}"))
            url = base.set(database=name).render_as_string(hide_password=False)
            results.append(run_once(url, plan_file, strategy, now, args.batch_size))
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)"))
    print(f"{'strategy':<15}{'seconds':>10}{'scanned':>12}{'batches':>10}{'deleted msgs':>14}{'rows':>10}")
    for r in results:
        print(
            f"{r['strategy']:<15}{r['seconds']:>10.2f}{r['scanned']:>12,}{r['batches']:>10}"
            f"{r['deleted_messages']:>14,}{r['rows']:>10,}"
        )
    baseline, candidate = results
    assert baseline["rows"] == candidate["rows"], "both strategies must delete the same rows"
    print(
        f"ratio (baseline Dify-style global scan / difymaint eligible-apps): "
        f"{baseline['seconds'] / candidate['seconds']:.1f}x faster, "
        f"{baseline['scanned'] / max(1, candidate['scanned']):.1f}x fewer messages read"
    )


if __name__ == "__main__":
    main()
