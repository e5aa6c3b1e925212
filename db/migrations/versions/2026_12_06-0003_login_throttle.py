"""login throttle: rate_buckets, decaying counters shared by every replica

Revision ID: 0003_login_throttle
Revises: 0002
Create Date: 2026-12-06 02:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003_login_throttle'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rate_buckets',
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('level', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_buckets')),
    )
    op.create_index(op.f('ix_rate_buckets_expires_at'), 'rate_buckets', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_rate_buckets_expires_at'), table_name='rate_buckets')
    op.drop_table('rate_buckets')
