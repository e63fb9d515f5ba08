"""jobs.result: the outcome of a job that fills no row of its own (a live logit lens's JSON)

Revision ID: 0009
Revises: 0008 (the runs table's metric columns)

Jobs stored before this revision have no result (null), as every inspect, trace or experiment job
keeps having: their outcomes live in the rows they fill.
"""
from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("result", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("result")
