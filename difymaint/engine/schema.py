"""Live-schema checks: Dify's schema changes every few months, so jobs ask the database, not assume.

A job lists the tables and columns it needs; a missing one becomes one clear error naming it (or, for an
optional table, a warning and a skipped step). Missing indexes on cascade columns are reported, because
they are the first cause of "cleanup takes forever" (docs/batching.md#missing-indexes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from difymaint.core.errors import SchemaMismatch


@dataclass(frozen=True)
class Need:
    table: str
    columns: tuple[str, ...]
    optional: bool = False  # absent table → skip that step with a warning


@dataclass
class SchemaReport:
    alembic_version: str | None
    missing_optional: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)

    def has(self, table: str) -> bool:
        return table not in self.missing_optional


def check_schema(engine: Engine, needs: Iterable[Need], *, job: str) -> SchemaReport:
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    version = _alembic_version(engine) if "alembic_version" in tables else None
    report = SchemaReport(alembic_version=version)
    problems: list[str] = []
    for need in needs:
        if need.table not in tables:
            if need.optional:
                report.missing_optional.add(need.table)
                report.warnings.append(f"table {need.table} does not exist in this Dify version; skipped")
                continue
            problems.append(f"table {need.table} is missing")
            continue
        present = {column["name"] for column in inspector.get_columns(need.table)}
        missing = [column for column in need.columns if column not in present]
        if missing:
            problems.append(f"{need.table} lacks column(s) {', '.join(missing)}")
    if problems:
        where = f" (alembic_version {version})" if version else " (no alembic_version table)"
        raise SchemaMismatch(
            f"{job} cannot run on this database{where}: " + "; ".join(problems),
            hint="is DB_DATABASE / --database-url pointing at Dify's API database, and is it migrated "
            "(flask db upgrade)?",
        )
    return report


def missing_leading_indexes(engine: Engine, edges: Iterable[tuple[str, str]]) -> list[str]:
    """``table.column`` pairs that no index leads with (each such delete scans the whole table)."""
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    missing = []
    for table, column in edges:
        if table not in tables:
            continue
        leading = {index["column_names"][0] for index in inspector.get_indexes(table) if index["column_names"]}
        pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
        if pk:
            leading.add(pk[0])
        if column not in leading:
            missing.append(f"{table}.{column}")
    return missing


def _alembic_version(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT version_num FROM alembic_version LIMIT 1")).scalar()
