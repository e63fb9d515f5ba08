"""Names, tags and notes on every run, and lineage: traces.tags / notes, experiments.tags / notes /
source_trace_id (the trace whose freeze plan a trial or experiment trains)

Revision ID: 0007
Revises: 0006

Runs stored before this revision have no tags (an empty list), no notes and no recorded source trace.
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=True))
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=True))
        batch.add_column(sa.Column("source_trace_id", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_experiments_source_trace_id"), ["source_trace_id"])
        batch.create_foreign_key(batch.f("fk_experiments_source_trace_id_traces"), "traces", ["source_trace_id"], ["id"],
                                 ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_constraint(batch.f("fk_experiments_source_trace_id_traces"), type_="foreignkey")
        batch.drop_index(batch.f("ix_experiments_source_trace_id"))
        batch.drop_column("source_trace_id")
        batch.drop_column("notes")
        batch.drop_column("tags")
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("notes")
        batch.drop_column("tags")
