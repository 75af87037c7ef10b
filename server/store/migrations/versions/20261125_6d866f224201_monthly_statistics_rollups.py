"""monthly statistics rollups

Revision ID: 6d866f224201
Revises: 17cc55e25965
Create Date: 2026-11-25 15:08:22.456660

Adds ``stat_rollups_monthly`` (the daily rollups summed by month), drops the daily rows no
query reads any more (the ``reason`` dimension; sheet facets of other kinds; départements of
kinds the map does not show), then fills the monthly table from the daily one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6d866f224201"
down_revision: str | None = "17cc55e25965"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DEP_KINDS = "('sheet_filed', 'unmet', 'appointment_booked', 'queue_joined', 'callback_requested')"


def upgrade() -> None:
    op.create_table(
        "stat_rollups_monthly",
        sa.Column("association_id", sa.Integer(), nullable=False),
        sa.Column("dim", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("theme", sa.String(length=30), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=40), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("duration_sum", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "association_id",
            "dim",
            "channel",
            "theme",
            "day",
            "kind",
            "value",
            name=op.f("pk_stat_rollups_monthly"),
        ),
        sqlite_with_rowid=False,
    )
    op.execute(
        "DELETE FROM stat_rollups WHERE dim = 'reason'"  # noqa: S608
        " OR (dim IN ('org', 'outcome', 'autonomy', 'vol', 'dur') AND kind != 'sheet_filed')"
        f" OR (dim = 'dep' AND kind NOT IN {_DEP_KINDS})"
    )
    if op.get_context().dialect.name == "postgresql":
        month = "CAST(date_trunc('month', day) AS DATE)"
    else:
        month = "date(day, 'start of month')"
    op.execute(
        "INSERT INTO stat_rollups_monthly"  # noqa: S608
        " (association_id, dim, channel, theme, day, kind, value, count, duration_sum)"
        f" SELECT association_id, dim, channel, theme, {month}, kind, value,"
        " SUM(count), SUM(duration_sum) FROM stat_rollups"
        f" GROUP BY association_id, dim, channel, theme, {month}, kind, value"
    )


def downgrade() -> None:
    # The dropped daily rows come back with `statistics.rebuild_rollups`.
    op.drop_table("stat_rollups_monthly")
