"""Worker heartbeats: when each node's notification worker last went round its loop, for /readyz.

Revision ID: 8e4b7c2d1a90
Revises: 5b90979a6fcc
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from server.store.models import UTCDateTime

revision: str = "8e4b7c2d1a90"
down_revision: str | None = "5b90979a6fcc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("node", sa.String(length=100), nullable=False),
        sa.Column("beat_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("node", name=op.f("pk_worker_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
