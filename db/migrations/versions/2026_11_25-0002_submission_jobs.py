"""submission jobs: lease, worker, class, late flag, AI scores, callback attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('class_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('late', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('ai_scores', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('lease_until', db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('worker_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('callback_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_submissions_class_id_classes'), 'classes', ['class_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_index(batch_op.f('ix_submissions_class_id'), ['class_id'], unique=False)
        batch_op.create_index('ix_submissions_requester_created', ['requester_id', 'created_at', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index('ix_submissions_requester_created')
        batch_op.drop_index(batch_op.f('ix_submissions_class_id'))
        batch_op.drop_constraint(batch_op.f('fk_submissions_class_id_classes'), type_='foreignkey')
        batch_op.drop_column('callback_attempts')
        batch_op.drop_column('worker_id')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('ai_scores')
        batch_op.drop_column('late')
        batch_op.drop_column('class_id')
