"""people — each user's sponsors: who created them, last reset their password, last set their role

Revision ID: 0010
Revises: 0009

The maker-checker rule of payouts refuses an approver who sponsored the preparer, was sponsored by them,
or shares a sponsor with them (services/users.py ``dependence``). NULL is the installation's operator
(command line, demo seed). Users created before this migration get their creator from the audit log's
``user.create`` entries whose actor is a user (``user:<id>:<email>``); the rest stay roots.
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

COLUMNS = ('created_by_user_id', 'password_set_by_user_id', 'role_set_by_user_id')


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
            batch.create_foreign_key(f'fk_users_{name}_users', 'users', [name], ['id'])
    connection = op.get_bind()
    audit = sa.table('audit_log', sa.column('seq'), sa.column('actor'), sa.column('action'), sa.column('entity'),
                     sa.column('entity_id'), sa.column('firm_id'))
    users = sa.table('users', sa.column('id'), sa.column('firm_id'), *(sa.column(name) for name in COLUMNS))
    firms_of = dict(connection.execute(sa.select(users.c.id, users.c.firm_id)).all())
    created = connection.execute(sa.select(audit.c.entity_id, audit.c.actor, audit.c.firm_id).where(
        audit.c.action == 'user.create', audit.c.entity == 'user', audit.c.actor.like('user:%'))
        .order_by(audit.c.seq)).all()
    for entity_id, actor, firm_id in created:
        parts = actor.split(':', 2)
        if not (entity_id or '').isdigit() or len(parts) < 2 or not parts[1].isdigit():
            continue
        user_id, creator = int(entity_id), int(parts[1])
        if user_id == creator or firms_of.get(user_id) != firm_id or firms_of.get(creator) != firm_id:
            continue
        connection.execute(sa.update(users).where(users.c.id == user_id).values(
            created_by_user_id=creator, password_set_by_user_id=creator, role_set_by_user_id=creator))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        for name in reversed(COLUMNS):
            batch.drop_constraint(f'fk_users_{name}_users', type_='foreignkey')
            batch.drop_column(name)
