"""The runs table's metric columns, so that a list of 10,000 runs sorts and filters in the database:
traces.plan / plan_share / vulnerable_layer and experiments.best_allocation / best_label /
delta_retention / delta_acquisition / retention_significant / acquisition_significant (defined in
layertracer/spec/run_metrics.py), with indexes, and indexes on created_at (the default sort)

Revision ID: 0008
Revises: 0007

Rows stored before this revision are backfilled from their stored summary (traces) or result
(experiments) by the same functions that fill the columns when a result is stored.
"""
import json

from alembic import op
import sqlalchemy as sa

from layertracer.spec.run_metrics import EXPERIMENT_METRICS, TRACE_METRICS, experiment_metrics, trace_metrics

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

def _backfill(table: sa.TableClause, source: str, derive, keys) -> None:
    """Fill ``keys`` of every row of ``table`` whose ``source`` JSON is set, one row at a time (an
    experiment's result can be megabytes: never all of them in memory at once)."""
    bind = op.get_bind()
    ids = bind.execute(sa.select(table.c.id).where(table.c[source].is_not(None))).scalars().all()
    for ident in ids:
        stored = bind.execute(sa.select(table.c[source]).where(table.c.id == ident)).scalar_one_or_none()
        if isinstance(stored, str):  # a driver that hands JSON back as text
            stored = json.loads(stored)
        values = derive(stored if isinstance(stored, dict) else None)
        bind.execute(table.update().where(table.c.id == ident).values({k: values[k] for k in keys}))


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("plan", sa.Text(), nullable=True))
        batch.add_column(sa.Column("plan_share", sa.Float(), nullable=True))
        batch.add_column(sa.Column("vulnerable_layer", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_traces_plan_share"), ["plan_share"])
        batch.create_index(batch.f("ix_traces_vulnerable_layer"), ["vulnerable_layer"])
        batch.create_index(batch.f("ix_traces_created_at"), ["created_at"])
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("best_allocation", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("best_label", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("delta_retention", sa.Float(), nullable=True))
        batch.add_column(sa.Column("delta_acquisition", sa.Float(), nullable=True))
        batch.add_column(sa.Column("retention_significant", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("acquisition_significant", sa.Boolean(), nullable=True))
        batch.create_index(batch.f("ix_experiments_best_label"), ["best_label"])
        batch.create_index(batch.f("ix_experiments_delta_retention"), ["delta_retention"])
        batch.create_index(batch.f("ix_experiments_delta_acquisition"), ["delta_acquisition"])
        batch.create_index(batch.f("ix_experiments_created_at"), ["created_at"])
        batch.create_index("ix_experiments_kind_created", ["kind", "created_at"])

    traces = sa.table("traces", sa.column("id", sa.String), sa.column("summary", sa.JSON),
                      *(sa.column(k) for k in TRACE_METRICS))
    experiments = sa.table("experiments", sa.column("id", sa.String), sa.column("result", sa.JSON),
                           *(sa.column(k) for k in EXPERIMENT_METRICS))
    _backfill(traces, "summary", trace_metrics, TRACE_METRICS)
    _backfill(experiments, "result", experiment_metrics, EXPERIMENT_METRICS)


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_index("ix_experiments_kind_created")
        for name in ("created_at", "delta_acquisition", "delta_retention", "best_label"):
            batch.drop_index(batch.f(f"ix_experiments_{name}"))
        for name in ("acquisition_significant", "retention_significant", "delta_acquisition", "delta_retention",
                     "best_label", "best_allocation"):
            batch.drop_column(name)
    with op.batch_alter_table("traces") as batch:
        for name in ("created_at", "vulnerable_layer", "plan_share"):
            batch.drop_index(batch.f(f"ix_traces_{name}"))
        for name in ("vulnerable_layer", "plan_share", "plan"):
            batch.drop_column(name)
