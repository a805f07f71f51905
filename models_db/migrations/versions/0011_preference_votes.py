"""preference votes from the Playground and side by side: two answers to one prompt and which was better
(studio/votes.py)

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('preference_votes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('generation_a_id', sa.Integer(), nullable=True),
    sa.Column('generation_b_id', sa.Integer(), nullable=True),
    sa.Column('version_a_id', sa.Integer(), nullable=True),
    sa.Column('version_b_id', sa.Integer(), nullable=True),
    sa.Column('base_a_id', sa.Integer(), nullable=False),
    sa.Column('base_b_id', sa.Integer(), nullable=False),
    sa.Column('label_a', sa.String(length=300), nullable=False),
    sa.Column('label_b', sa.String(length=300), nullable=False),
    sa.Column('answer_a', sa.Text(), nullable=False),
    sa.Column('answer_b', sa.Text(), nullable=False),
    sa.Column('winner', sa.String(length=8), nullable=False),
    sa.Column('blind', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['base_a_id'], ['base_models.id'], name=op.f('fk_preference_votes_base_a_id_base_models')),
    sa.ForeignKeyConstraint(['base_b_id'], ['base_models.id'], name=op.f('fk_preference_votes_base_b_id_base_models')),
    sa.ForeignKeyConstraint(['generation_a_id'], ['generations.id'],
                            name=op.f('fk_preference_votes_generation_a_id_generations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['generation_b_id'], ['generations.id'],
                            name=op.f('fk_preference_votes_generation_b_id_generations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_preference_votes_owner_id_users')),
    sa.ForeignKeyConstraint(['version_a_id'], ['model_versions.id'],
                            name=op.f('fk_preference_votes_version_a_id_model_versions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['version_b_id'], ['model_versions.id'],
                            name=op.f('fk_preference_votes_version_b_id_model_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_preference_votes'))
    )
    with op.batch_alter_table('preference_votes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_preference_votes_version_a_id'), ['version_a_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_preference_votes_version_b_id'), ['version_b_id'], unique=False)


def downgrade() -> None:
    op.drop_table('preference_votes')
