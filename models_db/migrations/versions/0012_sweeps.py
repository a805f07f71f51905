"""hyper-parameter sweeps: one row per sweep (studio/sweeps.py); its trials are training jobs, and the search
itself lives in Optuna's own tables, which Optuna creates beside these on first use

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_name', sa.String(length=200), nullable=False),
    sa.Column('base_model_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('objective', sa.String(length=32), nullable=True),
    sa.Column('space', sa.JSON(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('sampler', sa.String(length=16), nullable=False),
    sa.Column('pruner', sa.String(length=16), nullable=False),
    sa.Column('trials', sa.Integer(), nullable=False),
    sa.Column('parallel', sa.Integer(), nullable=False),
    sa.Column('seed', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('lock_until', sa.DateTime(), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('shared', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['base_model_id'], ['base_models.id'], name=op.f('fk_sweeps_base_model_id_base_models')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_sweeps_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_sweeps_owner_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sweeps')),
    sa.UniqueConstraint('study_name', name=op.f('uq_sweeps_study_name'))
    )


def downgrade() -> None:
    op.drop_table('sweeps')
