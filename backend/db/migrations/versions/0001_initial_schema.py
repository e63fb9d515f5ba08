"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-29 05:47:09.417708
"""
from alembic import op
import sqlalchemy as sa
import backend.db.types


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('resource_kind', sa.String(length=32), nullable=True),
    sa.Column('resource_id', sa.String(length=64), nullable=True),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('progress', sa.JSON(), nullable=True),
    sa.Column('log', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_jobs_idempotency_key'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_resource', ['resource_kind', 'resource_id'], unique=False)
        batch_op.create_index('ix_jobs_status_lease', ['status', 'lease_expires_at'], unique=False)

    op.create_table('shares',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shares'))
    )
    with op.batch_alter_table('shares', schema=None) as batch_op:
        batch_op.create_index('ix_shares_resource', ['kind', 'resource_id'], unique=False)

    op.create_table('task_sets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('builtin', sa.Boolean(), nullable=False),
    sa.Column('language', sa.String(length=32), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('tasks', sa.JSON(), nullable=False),
    sa.Column('num_items', sa.Integer(), nullable=False),
    sa.Column('items', sa.JSON(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_sets')),
    sa.UniqueConstraint('name', name=op.f('uq_task_sets_name'))
    )
    op.create_table('models',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=1000), nullable=False),
    sa.Column('source_kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('trust_remote_code', sa.Boolean(), nullable=False),
    sa.Column('fingerprint', sa.String(length=128), nullable=True),
    sa.Column('info', sa.JSON(), nullable=True),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_models_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('source', name=op.f('uq_models_source'))
    )
    op.create_table('experiments',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('model_id', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('partial', sa.JSON(), nullable=True),
    sa.Column('provenance', sa.JSON(), nullable=True),
    sa.Column('created_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_experiments_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_experiments_model_id_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments'))
    )
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_experiments_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_experiments_model_id'), ['model_id'], unique=False)

    op.create_table('traces',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('model_id', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('position_view', sa.JSON(), nullable=True),
    sa.Column('result_json', sa.Text(), nullable=True),
    sa.Column('result_bytes', sa.Integer(), nullable=True),
    sa.Column('provenance', sa.JSON(), nullable=True),
    sa.Column('partial', sa.JSON(), nullable=True),
    sa.Column('created_at', backend.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', backend.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_traces_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_traces_model_id_models'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_traces'))
    )
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_traces_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_traces_model_id'), ['model_id'], unique=False)

    op.create_table('trace_layer_metrics',
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('task', sa.String(length=200), nullable=False),
    sa.Column('layer', sa.Integer(), nullable=False),
    sa.Column('mean_prob', sa.Float(), nullable=True),
    sa.Column('mean_rank', sa.Float(), nullable=True),
    sa.Column('mean_entropy', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_trace_layer_metrics_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trace_id', 'task', 'layer', name=op.f('pk_trace_layer_metrics'))
    )
    op.create_table('trace_sensitivity',
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('perturbation', sa.String(length=200), nullable=False),
    sa.Column('layer', sa.Integer(), nullable=False),
    sa.Column('mean_js', sa.Float(), nullable=True),
    sa.Column('ci_low', sa.Float(), nullable=True),
    sa.Column('ci_high', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_trace_sensitivity_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trace_id', 'perturbation', 'layer', name=op.f('pk_trace_sensitivity'))
    )
    op.create_table('trace_task_data',
    sa.Column('trace_id', sa.String(length=32), nullable=False),
    sa.Column('task', sa.String(length=200), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['trace_id'], ['traces.id'], name=op.f('fk_trace_task_data_trace_id_traces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('trace_id', 'task', name=op.f('pk_trace_task_data'))
    )
    op.create_table('train_metrics',
    sa.Column('experiment_id', sa.String(length=32), nullable=False),
    sa.Column('trial', sa.String(length=200), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('loss', sa.Float(), nullable=True),
    sa.Column('lr', sa.Float(), nullable=True),
    sa.Column('tokens_per_s', sa.Float(), nullable=True),
    sa.Column('grad_norm', sa.Float(), nullable=True),
    sa.Column('eval_loss', sa.Float(), nullable=True),
    sa.Column('elapsed_s', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_train_metrics_experiment_id_experiments'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('experiment_id', 'trial', 'step', name=op.f('pk_train_metrics'))
    )


def downgrade() -> None:
    op.drop_table('train_metrics')
    op.drop_table('trace_task_data')
    op.drop_table('trace_sensitivity')
    op.drop_table('trace_layer_metrics')
    with op.batch_alter_table('traces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_traces_model_id'))
        batch_op.drop_index(batch_op.f('ix_traces_job_id'))

    op.drop_table('traces')
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_experiments_model_id'))
        batch_op.drop_index(batch_op.f('ix_experiments_job_id'))

    op.drop_table('experiments')
    op.drop_table('models')
    op.drop_table('task_sets')
    with op.batch_alter_table('shares', schema=None) as batch_op:
        batch_op.drop_index('ix_shares_resource')

    op.drop_table('shares')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status_lease')
        batch_op.drop_index('ix_jobs_resource')

    op.drop_table('jobs')
    op.drop_table('api_tokens')
