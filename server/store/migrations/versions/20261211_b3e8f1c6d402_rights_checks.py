"""Rights checks (issue 16): the answers and OpenFisca-France results of a check made in a
session or from a handoff sheet (server/rights/checks.py).

Revision ID: b3e8f1c6d402
Revises: a7c31e9d5b20
Create Date: 2026-12-11 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from server.store.models import UTCDateTime

revision: str = "b3e8f1c6d402"
down_revision: str | None = "a7c31e9d5b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rights_checks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("association_id", sa.Integer(), nullable=False),
        sa.Column("volunteer_id", sa.Integer(), nullable=False),
        sa.Column("assistance_session_id", sa.String(36), nullable=True),
        sa.Column("handoff_sheet_id", sa.String(36), nullable=True),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("model_version", sa.String(20), nullable=False),
        sa.Column("departement", sa.String(3), nullable=False),
        sa.Column("answers", sa.JSON(), nullable=True),
        sa.Column("keep_answers", sa.Boolean(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=False),
        sa.Column("on_sheet", sa.Boolean(), nullable=False),
        sa.Column("show_amounts", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["association_id"],
            ["associations.id"],
            name=op.f("fk_rights_checks_association_id_associations"),
        ),
        sa.ForeignKeyConstraint(
            ["volunteer_id"], ["users.id"], name=op.f("fk_rights_checks_volunteer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["assistance_session_id"],
            ["assistance_sessions.id"],
            name=op.f("fk_rights_checks_assistance_session_id_assistance_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["handoff_sheet_id"],
            ["handoff_sheets.id"],
            name=op.f("fk_rights_checks_handoff_sheet_id_handoff_sheets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rights_checks")),
        sa.UniqueConstraint(
            "assistance_session_id", name=op.f("uq_rights_checks_assistance_session_id")
        ),
        sa.UniqueConstraint("handoff_sheet_id", name=op.f("uq_rights_checks_handoff_sheet_id")),
    )
    for column in ("association_id", "volunteer_id", "updated_at"):
        op.create_index(op.f(f"ix_rights_checks_{column}"), "rights_checks", [column])


def downgrade() -> None:
    op.drop_table("rights_checks")
