"""classroom: hard close and extensions, co-teachers, archived classes, suspended users, audit log

Revision ID: 0006_classroom
Revises: 0005_ai_usage_user
Create Date: 2026-12-06 03:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = '0006_classroom'
down_revision = '0005_ai_usage_user'
branch_labels = None
depends_on = None

# The audit log is append-only: on PostgreSQL a row trigger refuses UPDATE and DELETE (TRUNCATE,
# an owner's deliberate act, is not a row operation and stays possible for backups and tests).
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""
APPEND_ONLY_TRIGGER = """
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()
"""


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suspended_at', db.types.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('classes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archived_at', db.types.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('close_at', db.types.UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        'class_teachers',
        sa.Column('class_id', sa.Uuid(), nullable=False),
        sa.Column('teacher_id', sa.Uuid(), nullable=False),
        sa.Column('added_at', db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['class_id'], ['classes.id'], name=op.f('fk_class_teachers_class_id_classes'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['teacher_id'], ['users.id'], name=op.f('fk_class_teachers_teacher_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('class_id', 'teacher_id', name=op.f('pk_class_teachers')),
    )
    op.create_index(op.f('ix_class_teachers_teacher_id'), 'class_teachers', ['teacher_id'], unique=False)
    op.create_table(
        'assignment_extensions',
        sa.Column('assignment_id', sa.Uuid(), nullable=False),
        sa.Column('student_id', sa.Uuid(), nullable=False),
        sa.Column('due_at', db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('close_at', db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('granted_by', sa.Uuid(), nullable=True),
        sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['assignment_id'], ['assignments.id'],
                                name=op.f('fk_assignment_extensions_assignment_id_assignments'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['student_id'], ['users.id'],
                                name=op.f('fk_assignment_extensions_student_id_users'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['granted_by'], ['users.id'],
                                name=op.f('fk_assignment_extensions_granted_by_users'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('assignment_id', 'student_id', name=op.f('pk_assignment_extensions')),
    )
    op.create_index(op.f('ix_assignment_extensions_student_id'), 'assignment_extensions', ['student_id'],
                    unique=False)
    op.create_table(
        'audit_events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('actor_id', sa.Uuid(), nullable=True),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('target_type', sa.String(length=32), nullable=False),
        sa.Column('target_id', sa.String(length=64), nullable=False),
        sa.Column('details', sa.JSON(), nullable=False),
        sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    )
    op.create_index(op.f('ix_audit_events_actor_id'), 'audit_events', ['actor_id'], unique=False)
    op.create_index(op.f('ix_audit_events_action'), 'audit_events', ['action'], unique=False)
    op.create_index(op.f('ix_audit_events_created_at'), 'audit_events', ['created_at'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(APPEND_ONLY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events')
        op.execute('DROP FUNCTION IF EXISTS audit_events_append_only()')
    op.drop_index(op.f('ix_audit_events_created_at'), table_name='audit_events')
    op.drop_index(op.f('ix_audit_events_action'), table_name='audit_events')
    op.drop_index(op.f('ix_audit_events_actor_id'), table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_index(op.f('ix_assignment_extensions_student_id'), table_name='assignment_extensions')
    op.drop_table('assignment_extensions')
    op.drop_index(op.f('ix_class_teachers_teacher_id'), table_name='class_teachers')
    op.drop_table('class_teachers')
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_column('close_at')
    with op.batch_alter_table('classes', schema=None) as batch_op:
        batch_op.drop_column('archived_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('suspended_at')
