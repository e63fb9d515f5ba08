"""trace_parts: documents derived from a trace's result (its overview, each task) served without the whole result

Revision ID: 0004
Revises: 0003

Traces stored before this revision get their parts on first request (backend.results.ensure_trace_parts),
so the migration itself only creates the table.
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trace_parts",
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("part", sa.String(length=220), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["trace_id"], ["traces.id"], name=op.f("fk_trace_parts_trace_id_traces"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trace_id", "part", name=op.f("pk_trace_parts")),
    )


def downgrade() -> None:
    op.drop_table("trace_parts")
