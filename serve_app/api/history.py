"""Revisions (snapshots with text and a diff to the previous one) and replay (the update log)."""

from __future__ import annotations

import base64
import difflib
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from actors.doc import EssayDoc
from db.models import Revision
from db.repositories import documents
from serve_app.api.access import essay_for_reader
from serve_app.deps import ContextDep, CurrentUser, SessionDep
from serve_app.errors import NotFound

router = APIRouter(tags=["history"])

MAX_INT = 2**31 - 1  # revision numbers are 32-bit columns
MAX_SEQ = 2**62


def text_diff(before: str, after: str) -> str:
    """A unified diff by line (paragraph), the form teachers and diff viewers read."""
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        "previous", "this", n=1))


def revision_out(rev: Revision, previous_text: str) -> dict[str, Any]:
    return {"n": rev.n, "seq": rev.seq, "reason": rev.reason, "created_at": rev.created_at.isoformat(),
            "word_count": rev.word_count, "text": rev.text, "diff": text_diff(previous_text, rev.text)}


@router.get("/essays/{essay_id}/revisions")
async def list_revisions(
    essay_id: uuid.UUID, session: SessionDep, user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20, cursor: Annotated[str | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    essay = await essay_for_reader(session, user, essay_id)
    after = min(int(cursor), MAX_INT) if cursor and cursor.isdigit() else 0
    revs = await documents.list_revisions(session, essay_id=essay.id, after_n=after, limit=limit + 1)
    more = len(revs) > limit
    revs = revs[:limit]
    previous = ""
    if revs and revs[0].n > 1:
        prev = await documents.get_revision(session, essay_id=essay.id, n=revs[0].n - 1)
        previous = prev.text if prev else ""
    items = []
    for rev in revs:
        items.append(revision_out(rev, previous))
        previous = rev.text
    return {"items": items, "next_cursor": str(revs[-1].n) if more else None}


@router.get("/essays/{essay_id}/revisions/{n}")
async def get_revision(
    essay_id: uuid.UUID, n: Annotated[int, Path(ge=1, le=MAX_INT)], session: SessionDep, user: CurrentUser
) -> dict[str, Any]:
    essay = await essay_for_reader(session, user, essay_id)
    rev = await documents.get_revision(session, essay_id=essay.id, n=n)
    if rev is None:
        raise NotFound("no such revision")
    prev = await documents.get_revision(session, essay_id=essay.id, n=n - 1) if n > 1 else None
    return revision_out(rev, prev.text if prev else "")


@router.get("/essays/{essay_id}/replay")
async def replay(
    essay_id: uuid.UUID, ctx: ContextDep, session: SessionDep, user: CurrentUser,
    after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    include_text: Annotated[bool, Query(description="also the whole text after each step")] = False,
) -> dict[str, Any]:
    """Timestamped updates in seq order. A Yjs client applies `update` (base64) in order to play the
    writing back; `include_text` adds the text after each step for clients without Yjs.

    A page holds at most `limit` steps and about `REPLAY_MAX_BYTES` of updates and texts (at
    least one step): with `include_text` on a long essay it ends early, and `next_cursor`
    continues after its last step."""
    essay = await essay_for_reader(session, user, essay_id)
    rows = await documents.replay(session, essay_id=essay.id, after_seq=after_seq, limit=limit)
    budget = ctx.settings.replay_max_bytes
    texts: list[str] | None = None
    if include_text and rows:
        # Start from the nearest revision's document, not from seq 1, and rebuild off the event loop.
        base = await documents.revision_at_or_before(session, essay_id=essay.id, seq=after_seq)
        catch_up = await documents.updates_between(session, essay_id=essay.id,
                                                   after_seq=base.seq if base else 0, upto_seq=after_seq)
        texts = await ctx.cpu.run(_texts_after_each, base.doc_state if base else None, catch_up,
                                  [r.data for r in rows], budget)
    kept = len(texts) if texts is not None else _updates_within(rows, budget)
    cut = kept < len(rows)
    rows = rows[:kept]
    steps = []
    for i, row in enumerate(rows):
        step = {"seq": row.seq, "at": row.created_at.isoformat(), "author_id": row.author_id,
                "inserted_chars": row.inserted_chars, "deleted_chars": row.deleted_chars,
                "update": base64.b64encode(row.data).decode()}
        if texts is not None:
            step["text"] = texts[i]
        steps.append(step)
    return {"essay_id": str(essay.id), "items": steps,
            "next_cursor": str(rows[-1].seq) if cut or len(rows) == limit else None}


def _step_bytes(update: bytes, text: str | None) -> int:
    """About what one step adds to the response: its base64 update and its text."""
    return (len(update) + 2) // 3 * 4 + (len(text.encode()) if text is not None else 0)


def _updates_within(rows: list[Any], budget: int) -> int:
    """How many of `rows` fit in `budget` bytes of base64 updates; at least one, so a page
    always moves the cursor."""
    used = 0
    for i, row in enumerate(rows):
        used += _step_bytes(row.data, None)
        if used > budget and i > 0:
            return i
    return len(rows)


def _texts_after_each(state: bytes | None, catch_up: list[bytes], steps: list[bytes], budget: int) -> list[str]:
    """The text after each step, until the steps' texts and updates pass `budget` bytes (at
    least one): a page of 1,000 steps of a long essay would otherwise hold 1,000 full texts."""
    doc = EssayDoc.from_state(state, catch_up)
    out: list[str] = []
    used = 0
    for update in steps:
        doc.apply_stored(update)  # the log as written (rows from before today's checks included)
        text = doc.text
        used += _step_bytes(update, text)
        if used > budget and out:
            break
        out.append(text)
    return out
