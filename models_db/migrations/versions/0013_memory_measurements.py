"""measured memory per part: the estimator's estimate beside what each training job and pre-flight used

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('memory_measurements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('method', sa.String(length=32), nullable=False),
    sa.Column('objective', sa.String(length=32), nullable=True),
    sa.Column('device', sa.String(length=8), nullable=False),
    sa.Column('measured_kind', sa.String(length=32), nullable=False),
    sa.Column('measured_gb', sa.Double(), nullable=False),
    sa.Column('estimate_gb', sa.Double(), nullable=True),
    sa.Column('measured_parts', sa.JSON(), nullable=False),
    sa.Column('estimate_parts', sa.JSON(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_memory_measurements_job_id_jobs'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_memory_measurements'))
    )
    with op.batch_alter_table('memory_measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_memory_measurements_job_id'), ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_table('memory_measurements')
