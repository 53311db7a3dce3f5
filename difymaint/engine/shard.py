"""``--shard K/N``: split a job's rows between N runs by a stable hash of the app id.

For installations where one pod per job is not enough (many workspaces, plan look-ups, client CPU): N runs
(a Kubernetes Indexed Job) each take the apps whose hash falls in their shard, and each takes its own lock, so
the N pods never touch the same rows and two pods of the same shard still exclude each other. The hash is the
first 28 bits of the id's MD5, computed by the database in the selection (so the ids never leave the server;
``CONV(SUBSTR(MD5(id), 1, 7), 16, 10)`` on MySQL/MariaDB, the same number) and reproducible in Python
(:func:`shard_of`). A database bound by its own I/O gains more from ``--workers``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from difymaint.core.errors import UsageError

MAX_SHARDS = 1024
_FORM = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*$")
_HASH_HEX_DIGITS = 7  # 28 bits: always a non-negative int4 in PostgreSQL


@dataclass(frozen=True)
class Shard:
    index: int  # 0 ≤ index < count
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def lock_suffix(self) -> str:
        return f":shard-{self.index}-of-{self.count}"


def parse_shard(raw: str) -> Shard:
    """``K/N`` with 0 ≤ K < N ≤ 1024 (Kubernetes' JOB_COMPLETION_INDEX counts from 0)."""
    found = _FORM.match(raw)
    if found is not None:
        index, count = int(found.group(1)), int(found.group(2))
        if 0 <= index < count <= MAX_SHARDS:
            return Shard(index, count)
    raise UsageError(
        f"--shard must be K/N with 0 <= K < N <= {MAX_SHARDS}, not {raw!r}",
        hint="e.g. --shard 0/4 … --shard 3/4; in an Indexed Job: --shard=$(JOB_COMPLETION_INDEX)/N",
    )


def shard_of(value: str, count: int) -> int:
    """The shard of one id, as the database computes it (for tests and tooling)."""
    return int(hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()[:_HASH_HEX_DIGITS], 16) % count


class id_hash(FunctionElement[int]):
    """The first 28 bits of MD5(column) as an integer, compiled per dialect."""

    type = sa.Integer()
    inherit_cache = True


@compiles(id_hash)
def _hash_postgresql(element: id_hash, compiler: SQLCompiler, **kw: Any) -> str:
    column = next(iter(element.clauses))
    hex_digits = sa.func.substr(sa.func.md5(sa.cast(column, sa.Text)), 1, _HASH_HEX_DIGITS)
    bits = sa.cast(sa.literal("x", sa.Text) + hex_digits, postgresql.BIT(_HASH_HEX_DIGITS * 4))
    return compiler.process(sa.cast(bits, sa.Integer), **kw)


@compiles(id_hash, "mysql")
def _hash_mysql(element: id_hash, compiler: SQLCompiler, **kw: Any) -> str:
    column = next(iter(element.clauses))
    hex_digits = sa.func.substr(sa.func.md5(column), 1, _HASH_HEX_DIGITS)
    return f"CAST(CONV({compiler.process(hex_digits, **kw)}, 16, 10) AS UNSIGNED)"


def shard_predicate(column: sa.ColumnElement[Any], shard: Shard) -> sa.ColumnElement[bool]:
    """Rows whose ``column`` (an id) hashes into ``shard`` (PostgreSQL, MySQL/MariaDB)."""
    return id_hash(column) % shard.count == shard.index


def sharded(
    selection: sa.ColumnElement[bool], column: sa.ColumnElement[Any], shard: Shard | None
) -> sa.ColumnElement[bool]:
    """``selection`` narrowed to ``shard`` (unchanged without one)."""
    return selection if shard is None else sa.and_(selection, shard_predicate(column, shard))
