"""take-next without sorting the queue: the queue order index ends with the id (the claim's
ORDER BY queued_at, id reads one row of it), people reserved for a volunteer are found by
index, and the code slots still held are found by expiry instead of scanning every session.

Revision ID: c4a7e2f19b3d
Revises: 8e4b7c2d1a90
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c4a7e2f19b3d"
down_revision: str | None = "8e4b7c2d1a90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE_CODE = sa.text("code_hash IS NOT NULL")
RESERVED = sa.text("reserved_for_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_queue_entries_association_status_queued", table_name="queue_entries")
    op.create_index(
        "ix_queue_entries_association_status_queued_id",
        "queue_entries",
        ["association_id", "status", "queued_at", "id"],
    )
    op.create_index(
        "ix_queue_entries_reserved_for",
        "queue_entries",
        ["reserved_for_id", "status", "queued_at", "id"],
        sqlite_where=RESERVED,
        postgresql_where=RESERVED,
    )
    op.create_index(
        "ix_assistance_sessions_code_expires_at",
        "assistance_sessions",
        ["code_expires_at"],
        sqlite_where=LIVE_CODE,
        postgresql_where=LIVE_CODE,
    )


def downgrade() -> None:
    op.drop_index("ix_assistance_sessions_code_expires_at", table_name="assistance_sessions")
    op.drop_index("ix_queue_entries_reserved_for", table_name="queue_entries")
    op.drop_index("ix_queue_entries_association_status_queued_id", table_name="queue_entries")
    op.create_index(
        "ix_queue_entries_association_status_queued",
        "queue_entries",
        ["association_id", "status", "queued_at"],
    )
