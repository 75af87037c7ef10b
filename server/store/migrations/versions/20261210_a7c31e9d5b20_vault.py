"""The vault (issue 15): encrypted documents, their blobs for the `database` storage, the
events shown to the person, trustee keys and codes, grants and recovery requests
(server/vault/DESIGN.md).

Revision ID: a7c31e9d5b20
Revises: e2d5b8a4c601
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from server.store.models import UTCDateTime

revision: str = "a7c31e9d5b20"
down_revision: str | None = "e2d5b8a4c601"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vaults",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("access_hash", sa.String(64), nullable=False),
        sa.Column("recovery_lookup_hash", sa.String(64), nullable=False),
        sa.Column("recovery_box", sa.String(100), nullable=False),
        sa.Column("share_facts", sa.Boolean(), nullable=False),
        sa.Column("association_id", sa.Integer(), nullable=True),
        sa.Column("departement", sa.String(3), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=False),
        sa.Column("contact_phone", sa.String(20), nullable=True),
        sa.Column("contact_email", sa.String(254), nullable=True),
        sa.Column("notices_sent", sa.Integer(), nullable=False),
        sa.Column("notified_at", UTCDateTime(), nullable=True),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("document_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vaults")),
        sa.UniqueConstraint("access_hash", name=op.f("uq_vaults_access_hash")),
        sa.UniqueConstraint("recovery_lookup_hash", name=op.f("uq_vaults_recovery_lookup_hash")),
    )
    op.create_index(op.f("ix_vaults_last_used_at"), "vaults", ["last_used_at"])
    op.create_table(
        "vault_documents",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("wrapped_key", sa.String(64), nullable=False),
        sa.Column("meta", sa.Text(), nullable=False),
        sa.Column("category", sa.String(20), nullable=True),
        sa.Column("storage", sa.String(10), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vault_id"],
            ["vaults.id"],
            name=op.f("fk_vault_documents_vault_id_vaults"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_documents")),
    )
    op.create_index(op.f("ix_vault_documents_vault_id"), "vault_documents", ["vault_id"])
    op.create_table(
        "vault_blobs",
        sa.Column("document_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("document_id", "seq", name=op.f("pk_vault_blobs")),
    )
    op.create_table(
        "vault_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("trustee_name", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(
            ["vault_id"],
            ["vaults.id"],
            name=op.f("fk_vault_events_vault_id_vaults"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_events")),
    )
    op.create_index(op.f("ix_vault_events_vault_id"), "vault_events", ["vault_id"])
    op.create_table(
        "trustee_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("replaced_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_trustee_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trustee_keys")),
    )
    op.create_index(op.f("ix_trustee_keys_user_id"), "trustee_keys", ["user_id"])
    op.create_table(
        "trustee_codes",
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("trustee_key_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trustee_key_id"],
            ["trustee_keys.id"],
            name=op.f("fk_trustee_codes_trustee_key_id_trustee_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_trustee_codes")),
    )
    op.create_index(op.f("ix_trustee_codes_trustee_key_id"), "trustee_codes", ["trustee_key_id"])
    op.create_index(op.f("ix_trustee_codes_expires_at"), "trustee_codes", ["expires_at"])
    op.create_table(
        "vault_grants",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("vault_id", sa.String(36), nullable=False),
        sa.Column("trustee_key_id", sa.Integer(), nullable=False),
        sa.Column("wrapped_key", sa.Text(), nullable=True),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["vault_id"],
            ["vaults.id"],
            name=op.f("fk_vault_grants_vault_id_vaults"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trustee_key_id"],
            ["trustee_keys.id"],
            name=op.f("fk_vault_grants_trustee_key_id_trustee_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_grants")),
    )
    op.create_index(op.f("ix_vault_grants_vault_id"), "vault_grants", ["vault_id"])
    op.create_index(op.f("ix_vault_grants_trustee_key_id"), "vault_grants", ["trustee_key_id"])
    op.create_table(
        "vault_recovery_requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("poll_token_hash", sa.String(64), nullable=False),
        sa.Column("pairing_code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("wrapped_key", sa.Text(), nullable=True),
        sa.Column("grant_id", sa.String(36), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["vault_grants.id"],
            name=op.f("fk_vault_recovery_requests_grant_id_vault_grants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vault_recovery_requests")),
        sa.UniqueConstraint(
            "pairing_code_hash", name=op.f("uq_vault_recovery_requests_pairing_code_hash")
        ),
    )
    op.create_index(
        op.f("ix_vault_recovery_requests_expires_at"), "vault_recovery_requests", ["expires_at"]
    )


def downgrade() -> None:
    for table in (
        "vault_recovery_requests",
        "vault_grants",
        "trustee_codes",
        "trustee_keys",
        "vault_events",
        "vault_blobs",
        "vault_documents",
        "vaults",
    ):
        op.drop_table(table)
