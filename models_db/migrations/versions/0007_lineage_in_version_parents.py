"""the lineage in one place: every version's parents are version_parents rows (with their order);
model_versions.parent_id is folded into them and dropped

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('version_parents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('position', sa.Integer(), server_default='0', nullable=False))
    # a version continued before version_parents existed has only its parent_id: give it its row
    op.execute("INSERT INTO version_parents (version_id, parent_id, weight, position) "
               "SELECT mv.id, mv.parent_id, 1.0, 0 FROM model_versions mv WHERE mv.parent_id IS NOT NULL "
               "AND NOT EXISTS (SELECT 1 FROM version_parents vp "
               "WHERE vp.version_id = mv.id AND vp.parent_id = mv.parent_id)")
    # the first parent keeps position 0; the others of a combined version follow it
    op.execute("UPDATE version_parents SET position = 1 WHERE parent_id <> "
               "(SELECT mv.parent_id FROM model_versions mv WHERE mv.id = version_parents.version_id)")
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_versions_parent_id'))
        batch_op.drop_constraint(batch_op.f('fk_model_versions_parent_id_model_versions'), type_='foreignkey')
        batch_op.drop_column('parent_id')


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_model_versions_parent_id_model_versions'), 'model_versions',
                                    ['parent_id'], ['id'])
        batch_op.create_index(batch_op.f('ix_model_versions_parent_id'), ['parent_id'], unique=False)
    op.execute("UPDATE model_versions SET parent_id = (SELECT vp.parent_id FROM version_parents vp "
               "WHERE vp.version_id = model_versions.id ORDER BY vp.position, vp.parent_id LIMIT 1)")
    with op.batch_alter_table('version_parents', schema=None) as batch_op:
        batch_op.drop_column('position')
