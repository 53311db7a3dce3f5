"""Benchmark: clean-embeddings against Dify's clean_embedding_cache_task algorithm, side by side.

Baseline = Dify's loop (spec §5.1): select 100 expired ids newest-first, one ``DELETE … WHERE id = :id`` per
row, commit per 100, until nothing is left. Candidate = difymaint's keyset sweep (one set-based DELETE per
batch, adaptive batch size from 1000). Both run on identical copies of one seeded PostgreSQL database with
3 KB embedding values, half of the rows expired. Round trips are real (client-side loops over TCP).

    python benchmarks/clean_embeddings.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres --rows 100000
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from difymaint.core.context import Context
from difymaint.core.reporter import RecordingReporter
from difymaint.core.run import RunOptions
from difymaint.core.settings import load_settings
from difymaint.core.window import TimeWindow
from difymaint.dify.tables import metadata
from difymaint.jobs import clean_embeddings


def seed(url: str, rows: int, now: datetime) -> None:
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"'))
        conn.execute(
            sa.text(
                "INSERT INTO embeddings (id, hash, embedding, model_name, provider_name, created_at) "
                "SELECT uuid_generate_v4(), md5(g::text) || md5((g + 1)::text), "
                "decode(repeat(md5(g::text), 192), 'hex'), 'text-embedding-3-small', 'openai', "
                ":now - ((g::bigint * 5184000) / :n) * interval '1 second' FROM generate_series(1, :n) g"
            ),
            {"n": rows, "now": now.replace(tzinfo=None)},
        )
        conn.execute(sa.text("ANALYZE embeddings"))
    engine.dispose()


def dify_baseline(url: str, cutoff: datetime) -> tuple[float, int]:
    """Dify's loop, faithfully: 100 ids newest-first, then one DELETE per id, commit per group."""
    engine = sa.create_engine(url)
    deleted = 0
    started = time.perf_counter()
    while True:
        with engine.begin() as conn:
            ids = (
                conn.execute(
                    sa.text("SELECT id FROM embeddings WHERE created_at < :c ORDER BY created_at DESC LIMIT 100"),
                    {"c": cutoff},
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            for embedding_id in ids:
                conn.execute(sa.text("DELETE FROM embeddings WHERE id = :id"), {"id": embedding_id})
            deleted += len(ids)
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds, deleted


def difymaint_run(url: str, cutoff: datetime) -> tuple[float, int, int]:
    settings = load_settings(None, {"DIFYMAINT_DATABASE_URL": url, "DIFYMAINT_USE_REDIS": False})
    ctx = Context(settings, reporter=RecordingReporter())
    params = clean_embeddings.CleanEmbeddingsParams(
        window=TimeWindow(end_before=cutoff), run=RunOptions(batch_size=1000)
    )
    started = time.perf_counter()
    summary = clean_embeddings.run(ctx, params)
    seconds = time.perf_counter() - started
    ctx.close()
    return seconds, summary.tables["embeddings"], summary.batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    now = datetime.now(UTC)
    cutoff = (now - timedelta(days=30)).replace(tzinfo=None)
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    base = make_url(args.pg_url)
    template = "difymaint_bench_emb_tpl"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {template}"))
        conn.execute(sa.text(f"CREATE DATABASE {template}"))
    t0 = time.perf_counter()
    seed(base.set(database=template).render_as_string(hide_password=False), args.rows, now)
    print(f"seeded {args.rows:,} embeddings (3 KB values, half expired) in {time.perf_counter() - t0:.1f}s")
    results = {}
    for name in ("dify", "difymaint"):
        db = f"difymaint_bench_emb_{name}"
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))
            conn.execute(sa.text(f"CREATE DATABASE {db} TEMPLATE {template}"))
        url = base.set(database=db).render_as_string(hide_password=False)
        if name == "dify":
            seconds, deleted = dify_baseline(url, cutoff)
            results[name] = (seconds, deleted, (deleted + 99) // 100)
        else:
            results[name] = difymaint_run(url, cutoff)
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {template} WITH (FORCE)"))
    print(f"{'run':<12}{'seconds':>10}{'deleted':>10}{'batches':>10}{'rows/s':>12}")
    for name, (seconds, deleted, batches) in results.items():
        print(f"{name:<12}{seconds:>10.2f}{deleted:>10,}{batches:>10,}{deleted / seconds:>12,.0f}")
    (base_s, base_n, _), (cand_s, cand_n, _) = results["dify"], results["difymaint"]
    assert base_n == cand_n, "both runs must delete the same rows"
    print(f"ratio (Dify's per-row loop / difymaint keyset sweep): {base_s / cand_s:.1f}x faster")


if __name__ == "__main__":
    main()
