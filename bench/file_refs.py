"""Bench: the reference scan of sweep-files / storage-report on a Dify-shaped database.

Seeds (server-side, ``generate_series``) upload files, messages with ~1 KB answers of which 1 in 100 links a file
(``/files/{id}/file-preview``), node executions with ~1.5 KB JSON inputs full of unrelated uuids of which 1 in 50
holds a File mapping, and message files; then times :class:`difymaint.dify.file_refs.ReferenceScan` (loading the
file rows, then every referrer table once) and checks that it found exactly the seeded references.

    .venv/bin/python bench/file_refs.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres --messages 1000000
"""

from __future__ import annotations

import argparse
import json
import time

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from difymaint.dify.file_refs import ReferenceScan
from difymaint.dify.tables import metadata

SEED = """
INSERT INTO upload_files (id, tenant_id, storage_type, key, name, size, extension, created_by, created_by_role,
                          created_at, used)
SELECT md5('f' || g)::uuid, md5('tenant')::uuid, 'opendal', 'upload_files/t/' || g || '.png', 'f.png', 1, 'png',
       md5('acc')::uuid, 'end_user', now() - interval '10 days', false
FROM generate_series(1, :files) g;

INSERT INTO messages (id, app_id, conversation_id, inputs, query, message, answer, message_unit_price,
                      answer_unit_price, currency, from_source, created_at)
SELECT md5('m' || g)::uuid, md5('app')::uuid, md5('c' || (g % 1000))::uuid, '{}', 'q', '[]',
       repeat('Lorem ipsum dolor sit amet, consectetur adipiscing elit. ', 17)
         || CASE WHEN g % 100 = 0 THEN ' ![x](/files/' || md5('f' || (g / 100 % :files + 1))::uuid
              || '/file-preview?timestamp=1&nonce=n&sign=s)' ELSE '' END,
       0, 0, 'USD', 'api', now() - (g % 90) * interval '1 day'
FROM generate_series(1, :messages) g;

INSERT INTO message_files (id, message_id, type, transfer_method, upload_file_id, created_by_role, created_by,
                           created_at)
SELECT md5('mf' || g)::uuid, md5('m' || g)::uuid, 'image', 'local_file', md5('f' || (g % :files + 1))::uuid,
       'end_user', md5('u')::uuid, now()
FROM generate_series(1, :messages / 20) g;

INSERT INTO workflow_node_executions (id, tenant_id, app_id, workflow_id, triggered_from, workflow_run_id, index,
                                      node_id, node_type, title, inputs, status, created_by_role, created_by,
                                      created_at)
SELECT md5('n' || g)::uuid, md5('tenant')::uuid, md5('app')::uuid, md5('wf')::uuid, 'workflow-run',
       md5('r' || (g / 5))::uuid, 1, 'n', 'llm', 'n',
       json_build_object('sys.user_id', md5('u' || g)::uuid, 'sys.app_id', md5('app')::uuid,
                         'sys.conversation_id', md5('c' || g)::uuid, 'text', repeat('context ', 150),
                         'file', CASE WHEN g % 50 = 0 THEN json_build_object('dify_model_identity', '__dify__file__',
                                 'related_id', md5('f' || (g / 50 % :files + 1))::uuid) END)::text,
       'succeeded', 'account', md5('acc')::uuid, now()
FROM generate_series(1, :nodes) g;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", required=True)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--nodes", type=int, default=None, help="node executions (default: messages / 2)")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    nodes = args.nodes if args.nodes is not None else args.messages // 2
    name = f"dmbench_refs_{int(time.time())}"
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = sa.create_engine(make_url(args.pg_url).set(database=name))
    try:
        metadata.create_all(engine)
        started = time.monotonic()
        with engine.begin() as conn:
            for statement in SEED.split(";\n"):
                if statement.strip():
                    conn.execute(sa.text(statement), {"files": args.files, "messages": args.messages, "nodes": nodes})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
            sizes = dict(
                conn.execute(
                    sa.text(
                        "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                        "WHERE relname IN ('messages', 'workflow_node_executions', 'upload_files')"
                    )
                ).all()
            )
        seeded = time.monotonic() - started
        with ReferenceScan(engine) as scan:
            t0 = time.monotonic()
            scan.load_files(has_tool_files=True)
            loaded = time.monotonic() - t0
            report = scan.scan()
            unreferenced = scan.unreferenced()
        expected_message_refs = min(args.files, args.messages // 100)
        result = {
            "messages": args.messages,
            "node_executions": nodes,
            "upload_files": args.files,
            "table_bytes": {k: int(v) for k, v in sizes.items()},
            "seed_s": round(seeded, 1),
            "load_files_s": round(loaded, 2),
            "scan_s": round(report.seconds, 2),
            "per_table_s": {s.table: round(s.seconds, 2) for s in report.tables if s.seconds >= 0.01},
            "referenced": report.referenced,
            "unreferenced_upload_files": unreferenced[0],
            "expected_answer_refs_at_least": expected_message_refs,
        }
        print(json.dumps(result, indent=2))
    finally:
        engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
