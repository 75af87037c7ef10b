"""Languages (issue 17): the language a booking, a waiting-list entry, a queue place and a
call-back were made in (their messages are written in it), whether the person asked for a
volunteer who speaks it, the languages volunteers speak, the language of a session's
beneficiary, and the language on statistics events.

Revision ID: d9f2a6c3e817
Revises: b3e8f1c6d402
Create Date: 2026-12-12 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d9f2a6c3e817"
down_revision: str | None = "b3e8f1c6d402"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WANTED = ("appointments", "queue_entries")
_LANGUAGE = ("appointments", "waitlist", "queue_entries", "callback_requests")


def upgrade() -> None:
    op.create_table(
        "user_languages",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_languages_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "language", name=op.f("pk_user_languages")),
    )
    op.create_index(
        "ix_user_languages_language_user", "user_languages", ["language", "user_id"]
    )
    for table in _LANGUAGE:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("language", sa.String(length=8), server_default="fr", nullable=False)
            )
            if table in _WANTED:
                batch_op.add_column(
                    sa.Column(
                        "language_wanted",
                        sa.Boolean(),
                        server_default=sa.false(),
                        nullable=False,
                    )
                )
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))
    with op.batch_alter_table("stat_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("language_wanted", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stat_events", schema=None) as batch_op:
        batch_op.drop_column("language_wanted")
        batch_op.drop_column("language")
    with op.batch_alter_table("assistance_sessions", schema=None) as batch_op:
        batch_op.drop_column("language")
    for table in reversed(_LANGUAGE):
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table in _WANTED:
                batch_op.drop_column("language_wanted")
            batch_op.drop_column("language")
    op.drop_index("ix_user_languages_language_user", table_name="user_languages")
    op.drop_table("user_languages")
