"""Data used by the beneficiary's device during a session (issue 14): a nullable byte count on
the session row, reported by the beneficiary's page and shown to the volunteer afterwards.

Revision ID: e2d5b8a4c601
Revises: c4a7e2f19b3d
Create Date: 2026-12-09 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e2d5b8a4c601"
down_revision: str | None = "c4a7e2f19b3d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.drop_column("data_bytes")
