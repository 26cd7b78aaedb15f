"""Durable runs: run owners and heartbeats, the jobs table, status index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Runs record the process that drives them (host, pid, pid start stamp, heartbeat) so a
reader can tell a run whose process is gone; ``jobs`` holds each unit of work's result,
committed when the job is done, so a killed run resumes from the store. Runs written
before this revision have no owner: they read as interrupted once 60 s old if still
``running``.

Written by hand, and frozen: it must not import store.schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pid_start", sa.String(64), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", _ts(), nullable=True))
    op.create_index("ix_runs_status", "runs", ["status"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_jobs_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "key", name="uq_jobs_run_id_key"),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_index("ix_runs_status", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("pid_start")
        batch.drop_column("pid")
        batch.drop_column("host")
