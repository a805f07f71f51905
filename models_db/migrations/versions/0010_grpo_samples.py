"""sampled completions of GRPO jobs: a few per logging step, with their reference and rewards (grpo_samples)

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('grpo_samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('completion', sa.Text(), nullable=False),
    sa.Column('reference', sa.Text(), nullable=False),
    sa.Column('rewards', sa.JSON(), nullable=False),
    sa.Column('reward', sa.Double(), nullable=True),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_grpo_samples_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_grpo_samples'))
    )
    with op.batch_alter_table('grpo_samples', schema=None) as batch_op:
        batch_op.create_index('ix_grpo_samples_job_id_id', ['job_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('grpo_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_grpo_samples_job_id_id')
    op.drop_table('grpo_samples')
