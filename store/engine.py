"""Database URLs, engines and migrations of the trace store.

SQLite (one file, WAL) is the default; PostgreSQL through psycopg 3 serves many
writers. Every error that leaves this package is a :class:`StoreError` with a one-line
message and an ``exit_code`` the CLI uses as its exit status.
"""

from __future__ import annotations

import os
import re
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

__all__ = [
    "DEFAULT_DB_URL",
    "MIGRATIONS_DIR",
    "BadDatabaseURL",
    "StoreError",
    "describe_location",
    "make_engine",
    "migrate",
    "parse_db_url",
    "resolve_db_url",
    "translate_errors",
    "write_transaction",
]

DEFAULT_DB_URL = "sqlite:///ttc.db"
MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
SUPPORTED_BACKENDS = ("sqlite", "postgresql")
_EXAMPLES = "sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
# Any fixed 63-bit key; only ttc processes migrating the same database contend for it.
_MIGRATION_LOCK_KEY = zlib.crc32(b"ttc.store.migrate")


class StoreError(Exception):
    """A trace store failure at run time (unreachable database, failed write)."""

    exit_code = 1


class BadDatabaseURL(StoreError, ValueError):
    """A database URL that is malformed or names an unsupported database or driver."""

    exit_code = 2


def _one_line(obj: object) -> str:
    lines = [line.strip() for line in str(obj).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(obj).__name__


def _hide_password(url: str) -> str:
    # For URLs SQLAlchemy cannot parse, so cannot render without their password.
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def parse_db_url(url: str) -> URL:
    """Validate a database URL and return it parsed.

    A plain ``postgresql://`` URL is given the psycopg (3) driver, the one ttc depends
    on, instead of SQLAlchemy's default psycopg2.

    Args:
        url: A SQLAlchemy database URL.

    Returns:
        The parsed URL.

    Raises:
        BadDatabaseURL: The URL has no ``://``, cannot be parsed, names a database
            other than SQLite or PostgreSQL, or a driver that is not installed or async.
    """
    if "://" not in url:
        hint = f"sqlite:///{url}" if url.strip() else "sqlite:///PATH"
        raise BadDatabaseURL(
            f"bad database URL {url!r}: expected a SQLAlchemy URL such as {hint}"
        )
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise BadDatabaseURL(
            f"bad database URL {_hide_password(url)!r}: cannot parse it; expected {_EXAMPLES}"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise BadDatabaseURL(
            f"unsupported database {backend!r} in {shown!r}: use {_EXAMPLES}"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except (NoSuchModuleError, ImportError):
        raise BadDatabaseURL(
            f"unknown database driver {parsed.drivername!r} in {shown!r}: use {_EXAMPLES}"
        ) from None
    if getattr(dialect, "is_async", False):
        raise BadDatabaseURL(
            f"async driver {parsed.drivername!r} in {shown!r} is not supported: use {_EXAMPLES}"
        )
    return parsed


def resolve_db_url(url: str | None = None) -> str:
    """Choose and validate the database URL.

    Args:
        url: An explicit URL (e.g. from ``--db``); None or empty falls back to the
            ``TTC_DB`` environment variable, then to :data:`DEFAULT_DB_URL`.

    Returns:
        The URL, unchanged.

    Raises:
        BadDatabaseURL: The chosen URL is not valid (see :func:`parse_db_url`).
    """
    chosen = url or os.environ.get("TTC_DB") or DEFAULT_DB_URL
    parse_db_url(chosen)
    return chosen


def describe_location(url: URL | Engine) -> str:
    """Return where a database lives, for error messages, without its password."""
    if isinstance(url, Engine):
        url = url.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite file {url.database}" if url.database else "in-memory sqlite"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


@contextmanager
def translate_errors(where: URL | Engine) -> Iterator[None]:
    """Turn SQLAlchemy and driver errors into a one-line :class:`StoreError`.

    Args:
        where: The URL or engine, named in the message.
    """
    try:
        yield
    except StoreError:
        raise
    except DBAPIError as exc:
        raise StoreError(f"database at {describe_location(where)}: {_one_line(exc.orig)}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database at {describe_location(where)}: {_one_line(exc)}") from exc


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _switch_to_wal(cursor: sqlite3.Cursor, busy_timeout_s: float) -> None:
    # SQLite answers SQLITE_BUSY here without calling the busy handler while another
    # connection switches the file to WAL or, closing last, cleans the WAL up
    # (sqlite.org/wal.html, "Sometimes queries return SQLITE_BUSY"): retry instead.
    retrying = Retrying(
        retry=retry_if_exception(_is_locked),
        wait=wait_random_exponential(multiplier=0.005, max=0.25),
        stop=stop_after_delay(busy_timeout_s),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if url.database in (None, "", ":memory:"):
        # Each new connection to :memory: is a new empty database: share one.
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module's own transaction handling defers BEGIN and cannot do
        # BEGIN IMMEDIATE; switch it off and begin in _on_begin (SQLAlchemy's recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # busy_timeout first: switching to WAL itself needs a lock.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        _switch_to_wal(cursor, busy_timeout_s)
        # In WAL mode NORMAL skips the fsync per commit yet survives any crash of the
        # process (SIGKILL included): only an OS crash or power loss can lose the last
        # commits. Two commits per solve made FULL's fsyncs a visible share of a run.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that read first
        # fails at once with SQLITE_BUSY under WAL instead of waiting busy_timeout.
        immediate = conn.get_execution_options().get("ttc_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engine(
    url: str, *, busy_timeout_s: float = 30.0, connect_timeout_s: float = 10.0
) -> Engine:
    """Create an engine for a validated database URL.

    Args:
        url: A SQLAlchemy URL (validated with :func:`parse_db_url`).
        busy_timeout_s: SQLite only: how long a writer waits for another one.
        connect_timeout_s: PostgreSQL only: connection timeout, unless the URL sets
            ``connect_timeout`` itself.

    Returns:
        The engine; nothing is connected yet.

    Raises:
        BadDatabaseURL: The URL is not valid.
    """
    parsed = parse_db_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_s)
    connect_args: dict[str, Any] = {"application_name": "ttc"}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = max(1, round(connect_timeout_s))
    return create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """Open a connection in a write transaction, committed on success.

    On SQLite the transaction starts with BEGIN IMMEDIATE, so concurrent writers queue
    on busy_timeout instead of failing.

    Raises:
        StoreError: The database cannot be reached or the transaction failed.
    """
    with translate_errors(engine), engine.connect() as conn:
        conn = conn.execution_options(ttc_write=True)
        with conn.begin():
            yield conn


def migrate(engine: Engine) -> None:
    """Upgrade the database schema to the latest revision (``alembic upgrade head``).

    Safe when several processes start at once: the upgrade runs in one transaction that
    holds SQLite's write lock or a PostgreSQL advisory lock, so a second process waits
    and then finds the schema already at head.

    Args:
        engine: An engine from :func:`make_engine`.

    Raises:
        StoreError: The database is unreachable, or its schema is newer than this code.
    """
    config = Config()
    # Config values go through ConfigParser interpolation, where '%' is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        except CommandError as exc:
            raise StoreError(
                f"cannot migrate database at {describe_location(engine)}: {_one_line(exc)}"
                " (is it from a newer ttc?)"
            ) from exc
