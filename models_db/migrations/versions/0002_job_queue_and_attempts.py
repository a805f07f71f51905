"""jobs: start-after ordering, resume point and attempt history

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('after_job_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resume_step', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('history', sa.JSON(), server_default='[]', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_jobs_after_job_id_jobs'), 'jobs', ['after_job_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_after_job_id_jobs'), type_='foreignkey')
        batch_op.drop_column('history')
        batch_op.drop_column('resume_step')
        batch_op.drop_column('after_job_id')
