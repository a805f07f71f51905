"""benchmarks: a base model's own evaluations (evaluations.base_model_id, version_id nullable), a benchmark's
per-question results (evaluations.examples), and the data sets pinned as benchmarks for a base (benchmark_pins)

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('base_model_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('examples', sa.JSON(), server_default='[]', nullable=False))
        batch_op.alter_column('version_id', existing_type=sa.Integer(), nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_evaluations_base_model_id_base_models'), 'base_models',
                                    ['base_model_id'], ['id'], ondelete='CASCADE')
        batch_op.create_unique_constraint('uq_evaluations_base_dataset', ['base_model_id', 'dataset_id'])
    op.create_table('benchmark_pins',
    sa.Column('base_model_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['base_model_id'], ['base_models.id'],
                            name=op.f('fk_benchmark_pins_base_model_id_base_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'],
                            name=op.f('fk_benchmark_pins_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('base_model_id', 'dataset_id', name=op.f('pk_benchmark_pins'))
    )


def downgrade() -> None:
    op.drop_table('benchmark_pins')
    op.execute("DELETE FROM evaluations WHERE version_id IS NULL")
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_constraint('uq_evaluations_base_dataset', type_='unique')
        batch_op.drop_constraint(batch_op.f('fk_evaluations_base_model_id_base_models'), type_='foreignkey')
        batch_op.alter_column('version_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('examples')
        batch_op.drop_column('base_model_id')
