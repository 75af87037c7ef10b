"""SMS caps and verified contacts: the outbox is counted per recipient and day (index), and an
assistance session records the contact its beneficiary proved they read.

Revision ID: 5b90979a6fcc
Revises: 3c8e1f5a9b72
Create Date: 2026-12-06 09:00:00

The outbox status withheld needs no schema change: the status is a VARCHAR(20) without a
CHECK constraint (non-native enum).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b90979a6fcc"
down_revision: str | None = "3c8e1f5a9b72"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verified_person_key", sa.String(length=64), nullable=True))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_recipient_send_after", ["recipient", "send_after"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_recipient_send_after")
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.drop_column("verified_person_key")
