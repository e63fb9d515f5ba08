"""One stored representation of a trace: drop trace_layer_metrics, trace_sensitivity, trace_task_data

Revision ID: 0006
Revises: 0005

They held aggregates copied out of the result (heatmap cells, stability curves, per-prompt arrays) for
endpoints nothing read. The result itself (trace_results) and its parts (trace_parts: the overview
and each task) stay, and a trace stored before the parts existed gets them derived on first read
(backend.results.ensure_trace_parts), so every older trace stays readable.
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DROPPED = ("trace_task_data", "trace_sensitivity", "trace_layer_metrics")


def upgrade() -> None:
    for table in DROPPED:
        op.drop_table(table)


def downgrade() -> None:
    # The tables come back empty: their rows were copies, re-derived only when a trace is stored again.
    op.create_table(
        "trace_layer_metrics",
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("mean_prob", sa.Float(), nullable=True),
        sa.Column("mean_rank", sa.Float(), nullable=True),
        sa.Column("mean_entropy", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["trace_id"], ["traces.id"], name=op.f("fk_trace_layer_metrics_trace_id_traces"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trace_id", "task", "layer", name=op.f("pk_trace_layer_metrics")),
    )
    op.create_table(
        "trace_sensitivity",
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("perturbation", sa.String(length=200), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("mean_js", sa.Float(), nullable=True),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["trace_id"], ["traces.id"], name=op.f("fk_trace_sensitivity_trace_id_traces"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trace_id", "perturbation", "layer", name=op.f("pk_trace_sensitivity")),
    )
    op.create_table(
        "trace_task_data",
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["trace_id"], ["traces.id"], name=op.f("fk_trace_task_data_trace_id_traces"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trace_id", "task", name=op.f("pk_trace_task_data")),
    )
