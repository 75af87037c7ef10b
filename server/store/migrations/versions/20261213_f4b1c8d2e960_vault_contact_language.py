"""The language of a vault's contact (issue 17): the retention notices are written in the
language of the page the person gave their phone or e-mail on.

Revision ID: f4b1c8d2e960
Revises: d9f2a6c3e817
Create Date: 2026-12-13 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f4b1c8d2e960"
down_revision: str | None = "d9f2a6c3e817"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vaults", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contact_language", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vaults", schema=None) as batch_op:
        batch_op.drop_column("contact_language")
