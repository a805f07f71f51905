"""dataset versions: parent, kept source, stored train/eval split

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('source_digest', sa.String(length=64), server_default='', nullable=False))
        batch_op.add_column(sa.Column('source_path', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('split', sa.JSON(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('eval_rows', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index(batch_op.f('ix_datasets_source_digest'), ['source_digest'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_datasets_parent_id_datasets'), 'datasets', ['parent_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_datasets_parent_id_datasets'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_datasets_source_digest'))
        batch_op.drop_column('eval_rows')
        batch_op.drop_column('split')
        batch_op.drop_column('source_path')
        batch_op.drop_column('source_digest')
        batch_op.drop_column('parent_id')
