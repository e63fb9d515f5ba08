"""registered_paths: corpora and benchmarks registered by name, as models are, for the forms

Revision ID: 0010
Revises: 0009

A new table; nothing stored before this revision changes.
"""
from alembic import op
import sqlalchemy as sa

import backend.db.types

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_paths",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("created_at", backend.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_paths")),
        sa.UniqueConstraint("kind", "path", name=op.f("uq_registered_paths_kind")),
    )


def downgrade() -> None:
    op.drop_table("registered_paths")
