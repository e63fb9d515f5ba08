"""trace_results: the engine JSON moves out of traces (reading a trace no longer walks its overflow pages)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trace_results",
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["trace_id"], ["traces.id"], name=op.f("fk_trace_results_trace_id_traces"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trace_id", name=op.f("pk_trace_results")),
    )
    # Results stored before 0002 have no sha256: an empty one keeps the row valid; the API treats a
    # missing traces.result_sha256 as "no result", so such rows are re-stored by a retry.
    op.execute(
        "INSERT INTO trace_results (trace_id, sha256, body) "
        "SELECT id, COALESCE(result_sha256, ''), result_json FROM traces WHERE result_json IS NOT NULL"
    )
    with op.batch_alter_table("traces", schema=None) as batch_op:
        batch_op.drop_column("result_json")


def downgrade() -> None:
    with op.batch_alter_table("traces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_json", sa.Text(), nullable=True))
    op.execute(
        "UPDATE traces SET result_json = (SELECT body FROM trace_results WHERE trace_results.trace_id = traces.id)"
    )
    op.drop_table("trace_results")
