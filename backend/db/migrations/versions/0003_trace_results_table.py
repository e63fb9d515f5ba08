"""trace_results: the engine JSON moves out of traces (reading a trace no longer walks its overflow pages)

Revision ID: 0003
Revises: 0002
"""
import hashlib

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
    op.execute(
        "INSERT INTO trace_results (trace_id, sha256, body) "
        "SELECT id, COALESCE(result_sha256, ''), result_json FROM traces WHERE result_json IS NOT NULL"
    )
    # Results stored before 0002 have no sha256 (the API would call them "no result yet"): hash them
    # here, as backend.results does (sha256 of the UTF-8 body).
    bind = op.get_bind()
    missing = bind.execute(sa.text("SELECT trace_id, body FROM trace_results WHERE sha256 = ''")).fetchall()
    for trace_id, body in missing:
        sha = hashlib.sha256(body.encode("utf-8")).hexdigest()
        bind.execute(sa.text("UPDATE trace_results SET sha256 = :sha WHERE trace_id = :id"), {"sha": sha, "id": trace_id})
        bind.execute(sa.text("UPDATE traces SET result_sha256 = :sha WHERE id = :id"), {"sha": sha, "id": trace_id})
    with op.batch_alter_table("traces", schema=None) as batch_op:
        batch_op.drop_column("result_json")


def downgrade() -> None:
    with op.batch_alter_table("traces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_json", sa.Text(), nullable=True))
    op.execute(
        "UPDATE traces SET result_json = (SELECT body FROM trace_results WHERE trace_results.trace_id = traces.id)"
    )
    op.drop_table("trace_results")
