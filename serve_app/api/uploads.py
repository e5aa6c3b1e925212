"""Essays from uploaded files: `POST /essays/import` (multipart) reads a .docx, .pdf or .txt
file (serve_app/uploads.py says what is refused and why) into a new essay, as `POST /essays`
with `text` would."""

from __future__ import annotations

import uuid
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from serve_app.api.essays import new_essay
from serve_app.deps import ContextDep, CurrentUser, SessionDep
from serve_app.errors import RateLimited
from serve_app.ratelimit import RateLimit, hourly
from serve_app.schemas import EssayOut, Title
from serve_app.uploads import UploadLimits, extract_text

router = APIRouter(tags=["essays"])


def import_limit(ctx: ContextDep) -> RateLimit | None:
    """`IMPORTS_PER_USER_PER_HOUR`, a bucket per user (Redis or the store, as the export limit)."""
    if ctx.buckets is None:
        return None
    return hourly(ctx.buckets, prefix="import:user:", per_hour=ctx.settings.imports_per_user_per_hour)


@router.post("/essays/import", status_code=201, response_model=EssayOut)
async def import_essay(
    ctx: ContextDep, session: SessionDep, user: CurrentUser,
    file: Annotated[UploadFile, File(description=".docx, .pdf or .txt (UTF-8); at most MAX_UPLOAD_BYTES")],
    title: Annotated[Title | None, Form(description="default: the file's name without extension")] = None,
    assignment_id: Annotated[uuid.UUID | None, Form()] = None,
) -> dict[str, Any]:
    """A new essay holding the file's text, one paragraph per line. 413 for a file, page count or
    text over the limits; 415 for a file that is not what it claims or not a supported kind; 422
    for an encrypted file or one without text; 429 beyond `IMPORTS_PER_USER_PER_HOUR` (each
    import is a parse of up to 200 pages on the replica's CPU-work lane, so one user's files
    must not fill it)."""
    limit = import_limit(ctx)
    wait = await limit.spend(str(user.id)) if limit is not None else 0
    if wait:
        raise RateLimited("too many file imports; try again later", retry_after=wait)
    settings = ctx.settings
    data = await file.read()
    limits = UploadLimits(max_chars=settings.max_essay_chars, max_pages=settings.max_upload_pages)
    # Parsing a document is CPU work: off the event loop that serves every socket, below its
    # priority (serve_app.cpu_work).
    extracted = await ctx.cpu.run(extract_text, data, filename=file.filename,
                                  content_type=file.content_type, limits=limits)
    name = title or (PurePath(file.filename or "").stem[:300] or "Imported essay")
    return await new_essay(ctx, session, user, title=name, assignment_id=assignment_id, text=extracted.text)
