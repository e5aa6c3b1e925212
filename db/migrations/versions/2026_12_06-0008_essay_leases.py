"""essay leases: which essay host may write an essay, with a fencing token

Revision ID: 0008_essay_leases
Revises: 0007_coach_chat
Create Date: 2026-12-06 19:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = '0008_essay_leases'
down_revision = '0007_coach_chat'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'essay_leases',
        sa.Column('essay_id', sa.Uuid(), nullable=False),
        sa.Column('holder', sa.String(length=200), nullable=False),
        sa.Column('instance', sa.String(length=64), nullable=False),
        sa.Column('token', sa.BigInteger(), nullable=False),
        sa.Column('expires_at', db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['essay_id'], ['essays.id'], name=op.f('fk_essay_leases_essay_id_essays'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('essay_id', name=op.f('pk_essay_leases')),
    )


def downgrade() -> None:
    op.drop_table('essay_leases')
