"""coach chat: one row per question and answer on an essay

Revision ID: 0007_coach_chat
Revises: 0006_classroom
Create Date: 2026-12-06 05:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = '0007_coach_chat'
down_revision = '0006_classroom'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'coach_turns',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('essay_id', sa.Uuid(), nullable=False),
        sa.Column('student_id', sa.Uuid(), nullable=False),
        sa.Column('about', sa.String(length=16), nullable=False),
        sa.Column('item_id', sa.String(length=64), nullable=True),
        sa.Column('item_kind', sa.String(length=16), nullable=True),
        sa.Column('item_message', sa.Text(), nullable=True),
        sa.Column('quote', sa.Text(), nullable=True),
        sa.Column('question', sa.Text(), nullable=False),
        sa.Column('answer', sa.Text(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('flags', sa.JSON(), nullable=False),
        sa.Column('prompt_tokens', sa.Integer(), nullable=False),
        sa.Column('completion_tokens', sa.Integer(), nullable=False),
        sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['essay_id'], ['essays.id'], name=op.f('fk_coach_turns_essay_id_essays'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['student_id'], ['users.id'], name=op.f('fk_coach_turns_student_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_coach_turns')),
    )
    op.create_index('ix_coach_turns_essay_created', 'coach_turns', ['essay_id', 'created_at'], unique=False)
    op.create_index(op.f('ix_coach_turns_student_id'), 'coach_turns', ['student_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_coach_turns_student_id'), table_name='coach_turns')
    op.drop_index('ix_coach_turns_essay_created', table_name='coach_turns')
    op.drop_table('coach_turns')
