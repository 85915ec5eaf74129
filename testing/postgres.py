"""The PostgreSQL the tests and reliability runs use (CI runs one): is it there, a
scratch schema per test, and statements run as its admin."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from voxtrace.logs import redact_url

__all__ = ["POSTGRES_URL", "admin", "in_schema", "postgres_missing", "scratch_schema"]

POSTGRES_URL = os.environ.get(
    "VOXTRACE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        return (
            f"PostgreSQL at {redact_url(POSTGRES_URL)} is unreachable ({type(exc).__name__});"
            " set VOXTRACE_TEST_POSTGRES_URL to run the PostgreSQL store tests"
        )
    return None


def in_schema(schema: str, *options: str) -> str:
    """POSTGRES_URL with its search_path (and `-c` options) set; named after the schema,
    so a test can find its own sessions in pg_stat_activity."""
    settings = " ".join(f"-c{option}" for option in (f"search_path={schema}", *options))
    joiner = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{joiner}options={quote(settings)}&application_name={schema}"


def admin(statement: sql.Composable, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


@contextmanager
def scratch_schema(prefix: str = "vt_test") -> Iterator[str]:
    """A fresh schema for the block, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        admin(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
