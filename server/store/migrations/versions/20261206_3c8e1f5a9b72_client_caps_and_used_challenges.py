"""client caps and used proof-of-work challenges

Revision ID: 3c8e1f5a9b72
Revises: 6d866f224201
Create Date: 2026-12-06 08:00:00.000000

Queue places and appointments keep the keyed hash of the client's address key (never the
address) so that live places and bookings per client are capped across server nodes;
appointments get an index on the phone for the per-phone cap. ``used_challenges`` holds the
proof-of-work challenges already spent, until they expire.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from server.store.models import UTCDateTime

revision: str = "3c8e1f5a9b72"
down_revision: str | None = "6d866f224201"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queue_entries") as batch:
        batch.add_column(sa.Column("client_key_hash", sa.String(length=64), nullable=True))
        batch.create_index("ix_queue_entries_client_key_hash", ["client_key_hash"])
    with op.batch_alter_table("appointments") as batch:
        batch.add_column(sa.Column("client_key_hash", sa.String(length=64), nullable=True))
        batch.create_index("ix_appointments_client_key_hash", ["client_key_hash"])
        batch.create_index("ix_appointments_phone", ["phone"])
    op.create_table(
        "used_challenges",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_used_challenges")),
    )
    op.create_index(
        op.f("ix_used_challenges_expires_at"), "used_challenges", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_used_challenges_expires_at"), table_name="used_challenges")
    op.drop_table("used_challenges")
    with op.batch_alter_table("appointments") as batch:
        batch.drop_index("ix_appointments_phone")
        batch.drop_index("ix_appointments_client_key_hash")
        batch.drop_column("client_key_hash")
    with op.batch_alter_table("queue_entries") as batch:
        batch.drop_index("ix_queue_entries_client_key_hash")
        batch.drop_column("client_key_hash")
