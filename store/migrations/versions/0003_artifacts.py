"""Sleep-time artifacts: the artifacts table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

One row per context, sleep model checkpoint and sleep configuration (``key`` hashes the
three): the notes a model wrote about the context before its queries came, what they
cost, and the precompute run that wrote them (not a foreign key: artifacts outlive runs).

Written by hand, and frozen: it must not import store.schema.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("context_hash", sa.String(64), nullable=False),
        sa.Column("checkpoint_digest", sa.String(160), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_artifacts"),
    )
    op.create_index("ix_artifacts_task", "artifacts", ["task"])
    op.create_index("ix_artifacts_context_hash", "artifacts", ["context_hash"])


def downgrade() -> None:
    op.drop_index("ix_artifacts_context_hash", table_name="artifacts")
    op.drop_index("ix_artifacts_task", table_name="artifacts")
    op.drop_table("artifacts")
