"""join codes of appointments work only from their join window

Revision ID: c0de5a11d000
Revises: 6d866f224201
Create Date: 2026-12-06 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.store.models

revision: str = "c0de5a11d000"
down_revision: str | None = "6d866f224201"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "code_valid_from",
                server.store.models.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
    # Codes of appointments already booked open at the start (new bookings: 15 minutes before,
    # like their join links); a portable UPDATE without date arithmetic.
    op.execute(
        sa.text(
            "UPDATE assistance_sessions SET code_valid_from = ("
            " SELECT appointments.starts_at FROM appointments"
            " WHERE appointments.assistance_session_id = assistance_sessions.id)"
            " WHERE id IN (SELECT assistance_session_id FROM appointments"
            " WHERE assistance_session_id IS NOT NULL)"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.drop_column("code_valid_from")
