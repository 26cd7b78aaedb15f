"""Shared pytest fixtures.

Database fixtures: ``sqlite_url`` (a fresh file per test), ``pg_url`` (one fresh
PostgreSQL database per session), ``new_pg_database`` (a factory of fresh PostgreSQL
databases) and ``db_url`` (a fresh database per test, parametrized over both).
PostgreSQL tests skip when the server is unreachable, and fail instead when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

DEFAULT_TEST_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """URL of a fresh SQLite file in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'ttc.db'}"


@pytest.fixture(scope="session")
def new_pg_database() -> Iterator[Callable[[], str]]:
    """Factory of fresh, uniquely named PostgreSQL databases, dropped at session end.

    The server is ``TTC_TEST_PG_URL`` (default: postgres@127.0.0.1:5432/test).
    """
    admin_url = sa.make_url(os.environ.get("TTC_TEST_PG_URL", DEFAULT_TEST_PG_URL))
    admin = sa.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL at {admin_url.host}:{admin_url.port} unreachable: {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)

    created: list[str] = []

    def create() -> str:
        name = f"ttc_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        created.append(name)
        return admin_url.set(database=name).render_as_string(hide_password=False)

    yield create
    with admin.connect() as conn:
        for name in created:
            # FORCE: a test that failed may have left connections open.
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def pg_url(new_pg_database: Callable[[], str]) -> str:
    """URL of a fresh PostgreSQL database shared by the whole session."""
    return new_pg_database()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh, empty database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("new_pg_database")()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A real (random-weight) Llama-style checkpoint with a character tokenizer."""
    from _tiny import make_checkpoint

    return str(make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama"))
