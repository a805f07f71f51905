"""fleet routing, accounts, evaluations, combined parents, generations

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('team', sa.String(length=100), server_default='', nullable=False),
    sa.Column('disabled', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('split', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_evaluations_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_evaluations_job_id_jobs')),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_evaluations_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations')),
    sa.UniqueConstraint('version_id', 'dataset_id', name='uq_evaluations_version_dataset')
    )
    op.create_table('generations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cache_key', sa.String(length=64), nullable=False),
    sa.Column('base_model_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=True),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('output', sa.Text(), nullable=False),
    sa.Column('new_tokens', sa.Integer(), nullable=False),
    sa.Column('ms_per_token', sa.Double(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['base_model_id'], ['base_models.id'], name=op.f('fk_generations_base_model_id_base_models')),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_generations_owner_id_users')),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_generations_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_generations')),
    sa.UniqueConstraint('cache_key', name=op.f('uq_generations_cache_key'))
    )
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_generations_version_id'), ['version_id'], unique=False)

    op.create_table('version_parents',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=False),
    sa.Column('weight', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['model_versions.id'], name=op.f('fk_version_parents_parent_id_model_versions')),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_version_parents_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'parent_id', name=op.f('pk_version_parents'))
    )
    with op.batch_alter_table('version_parents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_version_parents_parent_id'), ['parent_id'], unique=False)

    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('shared', sa.Boolean(), server_default='1', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_base_models_owner_id_users'), 'users', ['owner_id'], ['id'])

    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('shared', sa.Boolean(), server_default='0', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_datasets_owner_id_users'), 'users', ['owner_id'], ['id'])

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('shared', sa.Boolean(), server_default='0', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_jobs_owner_id_users'), 'users', ['owner_id'], ['id'])

    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('shared', sa.Boolean(), server_default='0', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_model_versions_owner_id_users'), 'users', ['owner_id'], ['id'])

    # 0001 declared jobs.parent_version_id -> model_versions with use_alter, which created it on SQLite
    # but never on Postgres: add it where it is missing.
    fks = {fk['name'] for fk in sa.inspect(op.get_bind()).get_foreign_keys('jobs')}
    if 'fk_jobs_parent_version_id_model_versions' not in fks:
        with op.batch_alter_table('jobs', schema=None) as batch_op:
            batch_op.create_foreign_key(batch_op.f('fk_jobs_parent_version_id_model_versions'), 'model_versions',
                                        ['parent_version_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_model_versions_owner_id_users'), type_='foreignkey')
        batch_op.drop_column('shared')
        batch_op.drop_column('owner_id')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_jobs_owner_id_users'), type_='foreignkey')
        batch_op.drop_column('shared')
        batch_op.drop_column('owner_id')
        batch_op.drop_column('queue')

    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_datasets_owner_id_users'), type_='foreignkey')
        batch_op.drop_column('shared')
        batch_op.drop_column('owner_id')

    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_base_models_owner_id_users'), type_='foreignkey')
        batch_op.drop_column('shared')
        batch_op.drop_column('owner_id')

    with op.batch_alter_table('version_parents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_version_parents_parent_id'))

    op.drop_table('version_parents')
    with op.batch_alter_table('generations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_generations_version_id'))

    op.drop_table('generations')
    op.drop_table('evaluations')
    op.drop_table('users')
