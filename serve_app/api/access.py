"""Object-level authorization: load a resource only if the caller may see it, else 404.

A resource the caller may not see answers 404, never 403, so ids do not leak; 403 is kept for
callers who can see a resource but not do this to it (a teacher editing a student's essay).
"""

from __future__ import annotations

import uuid

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Assignment, Class, Enrollment, Essay, Rubric, User
from db.repositories import assignments, classes, essays, rubrics
from serve_app.errors import Forbidden, NotFound


async def is_class_teacher(session: AsyncSession, user: User, cls: Class) -> bool:
    """The one answer to "may this user act as the class's teacher": its owner, a co-teacher, an admin."""
    return user.role == "admin" or await classes.teaches(session, cls=cls, user_id=user.id)


async def teaches_class_id(session: AsyncSession, user: User, class_id: uuid.UUID | None) -> bool:
    """`is_class_teacher` for a class known by id (an essay's or submission's `class_id`); an admin
    always, no class never otherwise."""
    if user.role == "admin":
        return True
    cls = await classes.get(session, class_id=class_id) if class_id is not None else None
    return cls is not None and await is_class_teacher(session, user, cls)


async def class_for_member(session: AsyncSession, user: User, class_id: uuid.UUID) -> Class:
    cls = await classes.get(session, class_id=class_id)
    if cls is None or not (await is_class_teacher(session, user, cls)
                           or await classes.is_enrolled(session, class_id=class_id, student_id=user.id)):
        raise NotFound("no such class")
    return cls


async def class_for_teacher(session: AsyncSession, user: User, class_id: uuid.UUID) -> Class:
    cls = await class_for_member(session, user, class_id)
    if not await is_class_teacher(session, user, cls):
        raise Forbidden("only the class's teacher may do this")
    return cls


async def class_for_owner(session: AsyncSession, user: User, class_id: uuid.UUID) -> Class:
    """Only the class's owner (or an admin) manages its co-teachers."""
    cls = await class_for_teacher(session, user, class_id)
    if cls.teacher_id != user.id and user.role != "admin":
        raise Forbidden("only the class's owner may change its teachers")
    return cls


async def assignment_for_member(session: AsyncSession, user: User, assignment_id: uuid.UUID) -> Assignment:
    assignment = await assignments.get(session, assignment_id=assignment_id)
    if assignment is None:
        raise NotFound("no such assignment")
    try:
        await class_for_member(session, user, assignment.class_id)
    except NotFound:
        raise NotFound("no such assignment") from None
    return assignment


async def rubric_for_reader(session: AsyncSession, user: User, rubric_id: uuid.UUID) -> Rubric:
    """The rubric's owner, or a member of a class with an assignment graded by it."""
    rubric = await rubrics.get(session, rubric_id=rubric_id)
    if rubric is None:
        raise NotFound("no such rubric")
    if rubric.owner_id == user.id or user.role == "admin":
        return rubric
    used_in_my_class = select(
        exists().where(
            Assignment.rubric_id == rubric_id,
            Assignment.class_id == Class.id,
            classes.teaches_clause(user.id)
            | exists().where(Enrollment.class_id == Class.id, Enrollment.student_id == user.id),
        )
    )
    if not await session.scalar(used_in_my_class):
        raise NotFound("no such rubric")
    return rubric


async def rubric_for_owner(session: AsyncSession, user: User, rubric_id: uuid.UUID) -> Rubric:
    rubric = await rubric_for_reader(session, user, rubric_id)
    if rubric.owner_id != user.id and user.role != "admin":
        raise Forbidden("only the rubric's author may change it")
    return rubric


async def essay_for_reader(session: AsyncSession, user: User, essay_id: uuid.UUID) -> Essay:
    essay = await essays.get_visible(session, essay_id=essay_id, user_id=user.id)
    if essay is None:
        raise NotFound("no such essay")
    return essay


async def essay_for_owner(session: AsyncSession, user: User, essay_id: uuid.UUID) -> Essay:
    essay = await essay_for_reader(session, user, essay_id)
    if essay.owner_id != user.id:
        raise Forbidden("only the essay's author may change it")
    return essay
